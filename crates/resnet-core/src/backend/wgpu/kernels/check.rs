//! Checks, without a GPU, that every family's generated shader is valid WGSL and declares exactly
//! what its Rust side launches with: naga parses and validates each source and lays out its
//! `Params` the way WGSL lays out uniforms, and that layout is compared with the Rust struct's;
//! every binding is compared with the family's buffer table.

use super::uniform::Uniform;
use super::{batch_norm, conv, elementwise, gemm, loss, pooling, reduce, sgd, shortcut, Access, Buffer, Family};
use naga::{AddressSpace, StorageAccess, TypeInner};

/// What the checks need of a family, whatever its parameter type.
struct Described {
    name: &'static str,
    source: &'static str,
    written: Vec<&'static str>,
    fields: &'static [(&'static str, &'static str)],
    size: usize,
    buffers: &'static [Buffer],
}

fn describe<P: Uniform>(f: &'static Family<P>) -> Described {
    Described {
        name: f.name,
        source: f.source(),
        written: f.written().collect(),
        fields: P::FIELDS,
        size: std::mem::size_of::<P>(),
        buffers: f.buffers,
    }
}

fn families() -> Vec<Described> {
    vec![
        describe(&elementwise::ELEMENTWISE),
        describe(&reduce::REDUCE),
        describe(&batch_norm::BATCH_NORM),
        describe(&pooling::POOLING),
        describe(&loss::LOSS),
        describe(&shortcut::SHORTCUT),
        describe(&sgd::SGD),
        describe(&sgd::LOSS_SCALE),
    ]
    .into_iter()
    .chain(gemm_families())
    .collect()
}

/// Every GEMM family in both builds, register-tiled and on cooperative matrices.
fn gemm_families() -> Vec<Described> {
    let mut out = Vec::new();
    macro_rules! both {
        ($($f:expr),*) => {
            $(out.push(describe(&$f.tiled)); out.push(describe(&$f.coop));)*
        };
    }
    both!(
        gemm::MATMUL,
        conv::CONV_FORWARD,
        conv::CONV_BACKWARD_DATA,
        conv::CONV_BACKWARD_DATA_PHASE,
        conv::CONV_BACKWARD_WEIGHT
    );
    out
}

fn validated(f: &Described) -> (naga::Module, naga::valid::ModuleInfo) {
    let module =
        naga::front::wgsl::parse_str(f.source).unwrap_or_else(|e| panic!("{}: {}", f.name, e.emit_to_string(f.source)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", f.name, e.emit_to_string(f.source)));
    (module, info)
}

fn wgsl_scalar(inner: &TypeInner) -> &'static str {
    match inner {
        TypeInner::Scalar(naga::Scalar::U32) => "u32",
        TypeInner::Scalar(naga::Scalar::F32) => "f32",
        other => panic!("unexpected parameter type {other:?}"),
    }
}

#[test]
fn every_family_compiles_and_its_params_have_the_rust_layout() {
    for f in families() {
        let (module, _) = validated(&f);
        let params = module
            .global_variables
            .iter()
            .find(|(_, g)| g.space == AddressSpace::Uniform)
            .unwrap_or_else(|| panic!("{}: no uniform", f.name))
            .1;
        let binding = params.binding.as_ref().expect("uniform binding");
        assert_eq!(
            (binding.group, binding.binding),
            (0, 0),
            "{}: the parameter block's slot",
            f.name
        );
        let TypeInner::Struct { members, span } = &module.types[params.ty].inner else {
            panic!("{}: the parameter block is not a struct", f.name);
        };
        let wgsl: Vec<(&str, &str, u32)> = members
            .iter()
            .map(|m| {
                (
                    m.name.as_deref().unwrap_or(""),
                    wgsl_scalar(&module.types[m.ty].inner),
                    m.offset,
                )
            })
            .collect();
        // Rust's repr(C) puts field i at 4 * i: only 4-byte scalars, no padding (uniform! asserts it).
        let rust: Vec<(&str, &str, u32)> = f
            .fields
            .iter()
            .enumerate()
            .map(|(i, (n, t))| (*n, *t, 4 * i as u32))
            .collect();
        assert_eq!(wgsl, rust, "{}: WGSL Params vs the Rust struct", f.name);
        assert_eq!(*span as usize, f.size, "{}: size of Params", f.name);
    }
}

#[test]
fn every_binding_is_a_named_buffer_of_the_family_and_every_buffer_is_used() {
    for f in families() {
        let (module, info) = validated(&f);
        let mut seen = vec![false; f.buffers.len()];
        for (handle, g) in module.global_variables.iter() {
            let AddressSpace::Storage { access } = g.space else {
                continue;
            };
            let name = g.name.as_deref().unwrap_or("");
            let slot = f
                .buffers
                .iter()
                .position(|b| b.name == name)
                .unwrap_or_else(|| panic!("{}: storage buffer {name} is not in the Rust table", f.name));
            let binding = g.binding.as_ref().expect("storage binding");
            assert_eq!(
                (binding.group, binding.binding),
                (0, slot as u32 + 1),
                "{}: slot of {name}",
                f.name
            );
            let writable = access.contains(StorageAccess::STORE);
            assert_eq!(
                writable,
                f.buffers[slot].access == Access::ReadWrite,
                "{}: access of {name}",
                f.name
            );
            let used = (0..module.entry_points.len()).any(|e| !info.get_entry_point(e)[handle].is_empty());
            assert!(used, "{}: no kernel uses buffer {name}", f.name);
            seen[slot] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "{}: a buffer of the Rust table is not declared",
            f.name
        );
    }
}

#[test]
fn the_hand_written_wgsl_declares_no_params_bindings_or_workgroup_sizes() {
    for f in families() {
        let written = f.written.concat();
        for generated in ["struct Params", "@binding", "const WG:", "const ITEMS:", "const CHUNK:"] {
            assert!(
                !written.contains(generated),
                "{}: declares `{generated}` by hand",
                f.name
            );
        }
    }
}

#[test]
fn a_buffer_is_bound_by_its_name_only() {
    assert_eq!(elementwise::ELEMENTWISE.slot("a").unwrap(), 1);
    assert_eq!(elementwise::ELEMENTWISE.slot("y").unwrap(), 3);
    assert!(elementwise::ELEMENTWISE.slot("x").is_err());
}

/// The variants the families are launched with beyond their defaults: f16 tiles (precision
/// 'mixed') in every GEMM family, and the inference epilogue (residual and each activation).
#[test]
fn the_mixed_precision_and_epilogue_variants_compile() {
    use crate::backend::wgpu::pipelines::specialize;
    let half = || ("Operand", "f16".to_string());
    let mut variants: Vec<(&str, Vec<(&'static str, String)>)> =
        gemm_families().iter().map(|f| (f.source, vec![half()])).collect();
    let forward = conv::CONV_FORWARD.tiled.source();
    for act in ["0", "1", "2"] {
        variants.push((
            forward,
            vec![("ACT", act.to_string()), ("RESIDUAL", "true".to_string())],
        ));
    }
    variants.push((forward, vec![("ACT", "0".to_string()), half()]));
    for (source, consts) in variants {
        let specialized = specialize(source, &consts).unwrap();
        let what = format!("{consts:?}");
        let module = naga::front::wgsl::parse_str(&specialized)
            .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&specialized)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&specialized)));
    }
}

/// The cooperative-matrix loop as gemm.rs launches it (f16 operands, the adapter's subgroup size:
/// 32 on NVIDIA, 64 on AMD's wave64), in every GEMM family, down to SPIR-V: no adapter here has
/// cooperative matrices, so this is as far as a machine without one can take it.
#[test]
fn the_cooperative_matrix_variants_compile_to_spirv() {
    use crate::backend::wgpu::pipelines::specialize;
    let coop: Vec<Described> = gemm_families()
        .into_iter()
        .filter(|f| f.name.contains("cooperative"))
        .collect();
    assert_eq!(coop.len(), 5);
    for f in &coop {
        assert!(
            f.source.starts_with("enable wgpu_cooperative_matrix;"),
            "{}: the enable is hoisted",
            f.name
        );
        for sg in ["32", "64"] {
            let consts = [
                ("Operand", "f16".to_string()),
                ("BM", "64".to_string()),
                ("BN", "128".to_string()),
                ("BK", "32".to_string()),
                ("SG", sg.to_string()),
            ];
            let specialized = specialize(f.source, &consts).unwrap();
            let what = format!("{} with subgroups of {sg}", f.name);
            let module = naga::front::wgsl::parse_str(&specialized)
                .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&specialized)));
            let info =
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&specialized)));
            let words = naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
                .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
            assert!(words.len() > 100, "{what}: SPIR-V of {} words", words.len());
        }
    }
}
