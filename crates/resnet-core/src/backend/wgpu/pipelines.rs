//! Compute pipelines, compiled once per (kernel family, entry point, constants) and cached.
//! A family's WGSL names its tiling parameters as `const NAME: TYPE = VALUE;` lines at the top;
//! a variant replaces those values (`specialize`), so every variant is plain WGSL with constant
//! loop bounds the driver can unroll.

use super::context::GpuContext;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A compiled entry point and the layout of its bind group 0.
pub struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// What to compile: a family's full WGSL source, an entry point, and constant overrides.
pub struct KernelSpec<'a> {
    /// Family name, for the cache key and messages.
    pub family: &'static str,
    pub source: &'a str,
    pub entry: &'static str,
    pub consts: &'a [(&'static str, String)],
}

#[derive(Default)]
pub struct Pipelines {
    cache: Mutex<HashMap<String, Arc<Kernel>>>,
}

/// Replaces the value of each named `const` declaration, or the type of each named `alias`. WGSL
/// allows f16 only after an `enable f16;` that precedes every declaration, so a variant that makes
/// an alias `f16` gets that directive in front (and needs an adapter with `SHADER_F16`).
pub fn specialize(source: &str, consts: &[(&'static str, String)]) -> Result<String> {
    let mut out = source.to_string();
    let mut needs_f16 = false;
    for (name, value) in consts {
        let alias = format!("alias {name} =");
        if let Some(start) = find_declaration(&out, &alias) {
            let end = start
                + out[start..]
                    .find(';')
                    .ok_or_else(|| Error::Internal(format!("WGSL alias {name} unterminated")))?;
            needs_f16 |= value == "f16";
            out.replace_range(start..=end, &format!("alias {name} = {value};"));
            continue;
        }
        let prefix = format!("const {name}:");
        let start = find_declaration(&out, &prefix)
            .ok_or_else(|| Error::Internal(format!("WGSL constant {name} not found")))?;
        let end = start
            + out[start..]
                .find(';')
                .ok_or_else(|| Error::Internal(format!("WGSL constant {name} unterminated")))?;
        let eq = start
            + out[start..end]
                .find('=')
                .ok_or_else(|| Error::Internal(format!("WGSL constant {name} has no value")))?;
        let ty = out[start + prefix.len()..eq].trim().to_string();
        let literal = match ty.as_str() {
            "u32" => format!("{value}u"),
            "i32" => format!("{value}i"),
            _ => value.clone(),
        };
        out.replace_range(start..=end, &format!("const {name}: {ty} = {literal};"));
    }
    if needs_f16 {
        out.insert_str(0, "enable f16;\n");
    }
    Ok(out)
}

/// Where a declaration beginning `prefix` starts a line.
fn find_declaration(source: &str, prefix: &str) -> Option<usize> {
    source
        .match_indices(prefix)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || source.as_bytes()[i - 1] == b'\n')
}

/// Runtime bounds checks and loop bounding in the generated code, unless asked for with
/// `RESNET_WGPU_CHECKED=1`: our kernels check their own bounds, and naga's checks and loop
/// counters keep the driver from unrolling the GEMM inner loops.
fn runtime_checks() -> wgpu::ShaderRuntimeChecks {
    if std::env::var("RESNET_WGPU_CHECKED").is_ok_and(|v| v != "0") {
        wgpu::ShaderRuntimeChecks::checked()
    } else {
        wgpu::ShaderRuntimeChecks::unchecked()
    }
}

impl Pipelines {
    pub fn get(&self, ctx: &GpuContext, spec: &KernelSpec) -> Result<Arc<Kernel>> {
        let mut key = format!("{}::{}", spec.family, spec.entry);
        for (n, v) in spec.consts {
            key.push_str(&format!(" {n}={v}"));
        }
        if let Some(k) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(k.clone());
        }
        let source = specialize(spec.source, spec.consts)?;
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // SAFETY: every kernel bounds-checks its own global memory accesses and every loop has a
        // bound; the tests run each kernel on awkward shapes against the CPU backend.
        let module = unsafe {
            ctx.device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some(spec.family),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                },
                runtime_checks(),
            )
        };
        let pipeline = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Internal(format!("compiling WGSL kernel {key}: {e}")));
        }
        let layout = pipeline.get_bind_group_layout(0);
        let kernel = Arc::new(Kernel {
            name: key.clone(),
            pipeline,
            layout,
        });
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, kernel.clone());
        Ok(kernel)
    }
}

#[cfg(test)]
mod tests {
    use super::specialize;

    #[test]
    fn specialize_replaces_named_constants_only() {
        let src = "const BM: u32 = 128u;\nconst BN: u32 = 64u;\nconst X: f32 = 1.0;\nfn f() -> u32 { return BM; }\n";
        let out = specialize(src, &[("BM", "32".into()), ("X", "2.5".into())]).unwrap();
        assert_eq!(
            out,
            "const BM: u32 = 32u;\nconst BN: u32 = 64u;\nconst X: f32 = 2.5;\nfn f() -> u32 { return BM; }\n"
        );
        assert!(specialize(src, &[("NOPE", "1".into())]).is_err());
    }

    #[test]
    fn an_f16_alias_enables_f16() {
        let src = "alias Operand = f32;\nconst BM: u32 = 128u;\nvar<workgroup> a: array<Operand, BM>;\n";
        assert_eq!(
            specialize(src, &[("BM", "64".into())]).unwrap(),
            src.replace("128u", "64u")
        );
        let out = specialize(src, &[("Operand", "f16".into())]).unwrap();
        assert_eq!(
            out,
            "enable f16;\nalias Operand = f16;\nconst BM: u32 = 128u;\nvar<workgroup> a: array<Operand, BM>;\n"
        );
    }
}
