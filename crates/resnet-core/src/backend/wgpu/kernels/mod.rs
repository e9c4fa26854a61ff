//! Kernel families and their launchers: one Rust module per `.wgsl` family beside it. A
//! [`Family`] owns everything its shader and its launches must agree on, declared once in Rust:
//! the parameter block (a [`uniform!`] struct, its WGSL twin generated), the storage buffers (by
//! name, binding slots generated in declaration order), and the constants Rust also computes
//! with (workgroup sizes). The `.wgsl` file holds only the kernels.

pub mod batch_norm;
pub mod conv;
pub mod elementwise;
pub mod gemm;
pub mod loss;
pub mod pooling;
pub mod reduce;
pub mod sgd;
pub mod shortcut;
pub mod uniform;

#[cfg(test)]
mod check;

pub(crate) use uniform::uniform;

use super::context::GpuContext;
use super::pipelines::KernelSpec;
use super::pool::GpuStorage;
use super::queue;
use crate::error::{Error, Result};
use std::marker::PhantomData;
use std::sync::OnceLock;
use uniform::Uniform;

/// Threads a workgroup of the one-element-a-thread kernels (`WG` in their WGSL).
pub const WG: u32 = 256;
/// Values a thread adds before the workgroup tree in the chunked reductions (`ITEMS`).
pub const ITEMS: u32 = 16;
/// Values a workgroup reduces in reduce.wgsl and batch_norm.wgsl (`CHUNK`).
pub const CHUNK: u32 = WG * ITEMS;

/// Shared WGSL helpers (`element`, the workgroup sums) for the families that use `WG`.
const PRELUDE: &str = include_str!("prelude.wgsl");
/// `activate(v, code)` for the families that apply an activation.
const ACTIVATION: &str = include_str!("activation.wgsl");
/// The NCHW and window index decoding (`grid_pos`, `channel_element`) for the families that
/// address images.
const GRID: &str = include_str!("grid.wgsl");

/// How a kernel may use a storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// A storage buffer of f32 a family's kernels address by `name`.
#[derive(Clone, Copy, Debug)]
pub struct Buffer {
    pub name: &'static str,
    pub access: Access,
}

pub const fn read(name: &'static str) -> Buffer {
    Buffer {
        name,
        access: Access::Read,
    }
}

pub const fn read_write(name: &'static str) -> Buffer {
    Buffer {
        name,
        access: Access::ReadWrite,
    }
}

/// One WGSL module and the Rust declarations its launches share with it; `P` is its parameter
/// block, so a launch with another family's parameters does not compile.
pub struct Family<P> {
    pub name: &'static str,
    /// Constants Rust owns and the WGSL uses (workgroup sizes), emitted as `const NAME: u32 = V;`.
    consts: &'static [(&'static str, u32)],
    /// Binding `i + 1` is `buffers[i]` (binding 0 is the parameter block).
    buffers: &'static [Buffer],
    /// The hand-written WGSL, concatenated after the generated declarations.
    sources: &'static [&'static str],
    /// One more hand-written file after `sources`: the GEMM families' loop (tiled or cooperative).
    tail: &'static str,
    source: OnceLock<String>,
    params: PhantomData<fn(&P)>,
}

impl<P: Uniform> Family<P> {
    pub const fn new(
        name: &'static str,
        consts: &'static [(&'static str, u32)],
        buffers: &'static [Buffer],
        sources: &'static [&'static str],
    ) -> Self {
        Family {
            name,
            consts,
            buffers,
            sources,
            tail: "",
            source: OnceLock::new(),
            params: PhantomData,
        }
    }

    /// A family whose sources end with `tail` (a GEMM family's loop).
    pub const fn with_tail(
        name: &'static str,
        buffers: &'static [Buffer],
        sources: &'static [&'static str],
        tail: &'static str,
    ) -> Self {
        Family {
            name,
            consts: &[],
            buffers,
            sources,
            tail,
            source: OnceLock::new(),
            params: PhantomData,
        }
    }

    /// The hand-written WGSL of the family, its tail included.
    pub fn written(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sources.iter().copied().chain(std::iter::once(self.tail))
    }

    /// The full shader: generated constants, parameter struct and bindings, then the WGSL files.
    pub fn source(&self) -> &str {
        self.source.get_or_init(|| {
            let mut s = format!(
                "// Generated from the Rust declarations of kernel family `{}`.\n",
                self.name
            );
            for (name, value) in self.consts {
                s.push_str(&format!("const {name}: u32 = {value}u;\n"));
            }
            s.push_str(&uniform::wgsl_declaration::<P>());
            for (i, b) in self.buffers.iter().enumerate() {
                let access = match b.access {
                    Access::Read => "read",
                    Access::ReadWrite => "read_write",
                };
                s.push_str(&format!(
                    "@group(0) @binding({}) var<storage, {access}> {}: array<f32>;\n",
                    i + 1,
                    b.name
                ));
            }
            s.push('\n');
            s.extend(self.written());
            // WGSL wants `enable` directives before every declaration: a hand-written file's
            // (gemm_coop.wgsl's cooperative matrices) go to the top.
            let (enables, rest): (Vec<&str>, Vec<&str>) = s.lines().partition(|l| l.starts_with("enable "));
            let mut out = enables.join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&rest.join("\n"));
            out.push('\n');
            out
        })
    }

    /// The binding slot of buffer `name`.
    fn slot(&self, name: &str) -> Result<u32> {
        self.buffers
            .iter()
            .position(|b| b.name == name)
            .map(|i| i as u32 + 1)
            .ok_or_else(|| Error::Internal(format!("kernel family {} has no buffer named {name}", self.name)))
    }

    /// Records `entry` over `workgroups` workgroups with `params` and the named buffers.
    pub fn launch(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        params: &P,
        buffers: &[(&str, &GpuStorage)],
        workgroups: u64,
    ) -> Result<()> {
        self.launch_variant(ctx, entry, &[], params, buffers, workgroups)
    }

    /// Runs `entry` one thread a value over `len` values, `WG` threads a workgroup.
    pub fn launch_each(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        params: &P,
        buffers: &[(&str, &GpuStorage)],
        len: usize,
    ) -> Result<()> {
        self.launch(ctx, entry, params, buffers, groups(len, self.threads_per_group()?))
    }

    /// Runs `entry` one thread a value of a fresh output of `len` values, bound as `out` beside
    /// the `inputs`, and returns that output.
    pub fn launch_into(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        params: &P,
        inputs: &[(&str, &GpuStorage)],
        out: &'static str,
        len: usize,
    ) -> Result<GpuStorage> {
        let y = output(ctx, len)?;
        let mut buffers = inputs.to_vec();
        buffers.push((out, &y));
        self.launch_each(ctx, entry, params, &buffers, len)?;
        Ok(y)
    }

    /// The family's `WG` constant: the one-thread-a-value kernels' workgroup size.
    fn threads_per_group(&self) -> Result<u32> {
        self.consts
            .iter()
            .find(|(name, _)| *name == "WG")
            .map(|&(_, value)| value)
            .ok_or_else(|| Error::Internal(format!("kernel family {} declares no WG", self.name)))
    }

    /// [`Family::launch`] of a variant: `const` values of the WGSL replaced (tile shapes,
    /// convolution geometry), one pipeline compiled and cached per variant.
    pub fn launch_variant(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        variant: &[(&'static str, String)],
        params: &P,
        buffers: &[(&str, &GpuStorage)],
        workgroups: u64,
    ) -> Result<()> {
        let bindings = buffers
            .iter()
            .map(|(name, storage)| Ok((self.slot(name)?, *storage)))
            .collect::<Result<Vec<_>>>()?;
        let kernel = ctx.pipelines.get(
            ctx,
            &KernelSpec {
                family: self.name,
                source: self.source(),
                entry,
                consts: variant,
            },
        )?;
        queue::dispatch(
            ctx,
            &kernel,
            bytemuck::bytes_of(params),
            &bindings,
            grid(ctx, workgroups)?,
        )
    }
}

/// A size as a kernel parameter.
pub fn to_u32(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Device(format!("size {v} is too large for a GPU kernel (at most 2^32 - 1)")))
}

/// Workgroups for `len` threads at `per_group` threads a workgroup.
pub fn groups(len: usize, per_group: u32) -> u64 {
    (len as u64).div_ceil(per_group as u64)
}

/// A grid of `workgroups` workgroups, spread over x and y so no dimension passes the limit.
fn grid(ctx: &GpuContext, workgroups: u64) -> Result<[u32; 3]> {
    let max = ctx.limits.max_compute_workgroups_per_dimension.max(1) as u64;
    if workgroups <= max {
        return Ok([workgroups as u32, 1, 1]);
    }
    let y = workgroups.div_ceil(max);
    if y > max {
        return Err(Error::Device(format!(
            "{workgroups} workgroups do not fit in one dispatch"
        )));
    }
    Ok([workgroups.div_ceil(y) as u32, y as u32, 1])
}

/// An uninitialised kernel output of `len` floats (NaN-filled under the poison test hook, so a
/// test sees any element a kernel leaves unwritten).
pub fn output(ctx: &GpuContext, len: usize) -> Result<GpuStorage> {
    let s = GpuStorage::alloc(len)?;
    #[cfg(feature = "test-hooks")]
    if ctx.pool.lock().unwrap_or_else(|e| e.into_inner()).poison {
        elementwise::fill(ctx, &s, f32::NAN)?;
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = ctx;
    Ok(s)
}
