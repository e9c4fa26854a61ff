//! Launchers of the three convolution families (conv2d_forward.wgsl, conv2d_backward_data.wgsl,
//! conv2d_backward_weight.wgsl): implicit GEMMs through the shared tile loop in gemm.rs, the
//! kernel shape, stride and padding compiled into each variant.

use super::elementwise::{self, Epilogue};
use super::gemm::{self, Gemm, GemmFamily, GemmShape, PLAIN_K};
use super::{read, read_write, to_u32, uniform, GRID};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::{Activation, ConvGeometry};
use crate::error::Result;

uniform! {
    /// One parameter block for the three directions: each reads the sizes it needs.
    pub struct ConvParams {
        m: u32,
        n: u32,
        k: u32,
        splits: u32,
        k_chunk: u32,
        c_in: u32,
        c_out: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        /// Forward only: whether `bias` holds a bias to add.
        has_bias: u32,
    }
}

pub(super) static CONV_FORWARD: GemmFamily<ConvParams> = GemmFamily::new(
    "conv2d_forward",
    "conv2d_forward (cooperative matrices)",
    &[read("x"), read("wt"), read("bias"), read("residual"), read_write("y")],
    &[
        include_str!("conv2d_forward.wgsl"),
        PLAIN_K,
        WINDOW,
        GRID,
        super::ACTIVATION,
    ],
);

uniform! {
    /// A phase of a strided data gradient (conv2d_backward_data_phase.wgsl): the input positions
    /// (py + stride * ty, px + stride * tx), ph x pw of them, reached from output position
    /// (ty + by - u, tx + bx - v) by tap (u, v) of the phase's taps (constants of its variant).
    /// `gx_len`: the floats of one split-K partial of the whole gradient.
    pub struct ConvPhaseParams {
        m: u32,
        n: u32,
        k: u32,
        splits: u32,
        k_chunk: u32,
        c_out: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        py: u32,
        px: u32,
        ph: u32,
        pw: u32,
        by: u32,
        bx: u32,
        gx_len: u32,
    }
}

pub(super) static CONV_BACKWARD_DATA: GemmFamily<ConvParams> = GemmFamily::new(
    "conv2d_backward_data",
    "conv2d_backward_data (cooperative matrices)",
    &[read("gy"), read("wt"), read_write("gx")],
    &[include_str!("conv2d_backward_data.wgsl"), PLAIN_K, WINDOW, GRID],
);

pub(super) static CONV_BACKWARD_DATA_PHASE: GemmFamily<ConvPhaseParams> = GemmFamily::new(
    "conv2d_backward_data_phase",
    "conv2d_backward_data_phase (cooperative matrices)",
    &[read("gy"), read("wt"), read_write("gx")],
    &[include_str!("conv2d_backward_data_phase.wgsl"), PLAIN_K, WINDOW, GRID],
);

pub(super) static CONV_BACKWARD_WEIGHT: GemmFamily<ConvParams> = GemmFamily::new(
    "conv2d_backward_weight",
    "conv2d_backward_weight (cooperative matrices)",
    &[read("x"), read("gy"), read_write("partial")],
    &[include_str!("conv2d_backward_weight.wgsl"), WINDOW, GRID],
);

/// The window constants and the A-row type the three families share.
const WINDOW: &str = include_str!("conv_window.wgsl");

/// The variant of a geometry: its window and stride become WGSL constants.
fn variant(g: &ConvGeometry) -> Vec<(&'static str, String)> {
    vec![
        ("KH", g.kh.to_string()),
        ("KW", g.kw.to_string()),
        ("STRIDE", g.stride.to_string()),
        ("PAD", g.padding.to_string()),
    ]
}

/// Runs one direction's implicit GEMM with the geometry's sizes and the variant of its window.
fn run(
    ctx: &GpuContext,
    family: &GemmFamily<ConvParams>,
    g: &ConvGeometry,
    launch: Gemm,
    has_bias: bool,
    after_split: Epilogue,
) -> Result<GpuStorage> {
    let sizes = ConvParams {
        c_in: to_u32(g.c_in)?,
        c_out: to_u32(g.c_out)?,
        h: to_u32(g.h)?,
        w: to_u32(g.w)?,
        oh: to_u32(g.oh)?,
        ow: to_u32(g.ow)?,
        has_bias: has_bias as u32,
        ..ConvParams::default()
    };
    let params = |s: GemmShape| ConvParams {
        m: s.m,
        n: s.n,
        k: s.k,
        splits: s.splits,
        k_chunk: s.k_chunk,
        ..sizes
    };
    gemm::run_then(ctx, family, launch, params, after_split)
}

/// `y = conv(x, w) (+ bias)`: M = c_out, N = batch * oh * ow, K = c_in * kh * kw.
pub fn forward(
    ctx: &GpuContext,
    x: &GpuStorage,
    w: &GpuStorage,
    bias: Option<&GpuStorage>,
    g: &ConvGeometry,
) -> Result<GpuStorage> {
    forward_fused(ctx, x, w, bias, None, None, g)
}

/// Whether the forward GEMM of `g` runs in one pass, so that its store can apply the inference
/// epilogue ([`forward_fused`]); with split-K partials the sum of the partials applies it.
fn fuses_epilogue(g: &ConvGeometry) -> bool {
    gemm::unsplit(forward_mnk(g), g.n * g.c_out * g.oh * g.ow)
}

fn forward_mnk(g: &ConvGeometry) -> (usize, usize, usize) {
    (g.c_out, g.n * g.oh * g.ow, g.c_in * g.kh * g.kw)
}

/// `act(conv(x, w) + bias + residual)` (inference): the residual and the activation applied in the
/// GEMM's store, or where the reduction is split, in the pass that sums the partials (the bias
/// comes with the first split's partial).
pub fn forward_fused(
    ctx: &GpuContext,
    x: &GpuStorage,
    w: &GpuStorage,
    bias: Option<&GpuStorage>,
    residual: Option<&GpuStorage>,
    act: Option<Activation>,
    g: &ConvGeometry,
) -> Result<GpuStorage> {
    // The kernel reads `bias` and `residual` only when it has them, but every binding it declares
    // must be bound.
    let mut variant = variant(g);
    let in_store = fuses_epilogue(g);
    if let Some(act) = act.filter(|_| in_store) {
        variant.push(("ACT", elementwise::activation_code(act).to_string()));
    }
    if residual.is_some() && in_store {
        variant.push(("RESIDUAL", "true".to_string()));
    }
    let after_split = if in_store {
        Epilogue::default()
    } else {
        Epilogue { residual, act }
    };
    let launch = Gemm {
        mnk: forward_mnk(g),
        variant,
        inputs: &[
            ("x", x),
            ("wt", w),
            ("bias", bias.unwrap_or(x)),
            ("residual", residual.unwrap_or(x)),
        ],
        output: "y",
        output_len: g.n * g.c_out * g.oh * g.ow,
        precision: g.precision,
    };
    run(ctx, &CONV_FORWARD, g, launch, bias.is_some(), after_split)
}

/// The input's gradient: M = c_in, N = batch * h * w, K = c_out * kh * kw. A strided convolution
/// runs phase by phase ([`phases`]), so no product with a zero is computed.
pub fn backward_data(ctx: &GpuContext, gy: &GpuStorage, w: &GpuStorage, g: &ConvGeometry) -> Result<GpuStorage> {
    if runs_by_phase(g) {
        return backward_data_by_phase(ctx, gy, w, g);
    }
    let launch = Gemm {
        mnk: (g.c_in, g.n * g.h * g.w, g.c_out * g.kh * g.kw),
        variant: variant(g),
        inputs: &[("gy", gy), ("wt", w)],
        output: "gx",
        output_len: g.n * g.c_in * g.h * g.w,
        precision: g.precision,
    };
    run(ctx, &CONV_BACKWARD_DATA, g, launch, false, Epilogue::default())
}

/// The input positions of one residue class of the stride, and the taps that reach them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Phase {
    py: usize,
    px: usize,
    ph: usize,
    pw: usize,
    i0: usize,
    j0: usize,
    taps_h: usize,
    taps_w: usize,
    by: usize,
    bx: usize,
}

impl Phase {
    /// The phase's GEMM: M = c_in, N = batch * ph * pw, K = c_out * taps_h * taps_w.
    fn mnk(&self, g: &ConvGeometry) -> (usize, usize, usize) {
        (g.c_in, g.n * self.ph * self.pw, g.c_out * self.taps_h * self.taps_w)
    }
}

/// The stride x stride phases of `g` that hold input positions. Position iy = py + s*t is reached
/// by tap i exactly when iy + pad - i is a multiple of s, i.e. i = i0 + s*u with
/// i0 = (py + pad) mod s, from output row (iy + pad - i) / s = t + by - u.
pub(crate) fn phases(g: &ConvGeometry) -> Vec<Phase> {
    let s = g.stride;
    let mut out = Vec::with_capacity(s * s);
    for py in 0..s.min(g.h) {
        for px in 0..s.min(g.w) {
            let (i0, j0) = ((py + g.padding) % s, (px + g.padding) % s);
            out.push(Phase {
                py,
                px,
                ph: (g.h - py).div_ceil(s),
                pw: (g.w - px).div_ceil(s),
                i0,
                j0,
                taps_h: g.kh.saturating_sub(i0).div_ceil(s),
                taps_w: g.kw.saturating_sub(j0).div_ceil(s),
                by: (py + g.padding - i0) / s,
                bx: (px + g.padding - j0) / s,
            });
        }
    }
    out
}

/// Whether the data gradient of `g` runs phase by phase: whenever it is strided (at stride 1 the
/// one phase is the plain kernel), unless `RESNET_WGPU_PHASED_DATA_GRAD=off` asks for the plain
/// kernel everywhere (to measure one against the other).
pub(crate) fn runs_by_phase(g: &ConvGeometry) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("RESNET_WGPU_PHASED_DATA_GRAD").is_ok_and(|v| v == "off"));
    g.stride > 1 && !off
}

fn backward_data_by_phase(ctx: &GpuContext, gy: &GpuStorage, w: &GpuStorage, g: &ConvGeometry) -> Result<GpuStorage> {
    let gx_len = g.n * g.c_in * g.h * g.w;
    let phases = phases(g);
    let inputs = [("gy", gy), ("wt", w)];
    // Each phase's taps are constants of its variant, so the kernel's k -> (o, u, v) decoding
    // divides by constants, as the plain kernel's does.
    let parts = phases
        .iter()
        .map(|p| {
            let mut variant = variant(g);
            variant.extend([
                ("I0", p.i0.to_string()),
                ("J0", p.j0.to_string()),
                ("TAPS_H", p.taps_h.to_string()),
                ("TAPS_W", p.taps_w.to_string()),
            ]);
            Gemm {
                mnk: p.mnk(g),
                variant,
                inputs: &inputs,
                output: "gx",
                output_len: gx_len,
                precision: g.precision,
            }
        })
        .collect();
    let sizes = ConvPhaseParams {
        c_out: to_u32(g.c_out)?,
        h: to_u32(g.h)?,
        w: to_u32(g.w)?,
        oh: to_u32(g.oh)?,
        ow: to_u32(g.ow)?,
        gx_len: to_u32(gx_len)?,
        ..ConvPhaseParams::default()
    };
    let phase_sizes = phases
        .iter()
        .map(|p| {
            Ok(ConvPhaseParams {
                py: to_u32(p.py)?,
                px: to_u32(p.px)?,
                ph: to_u32(p.ph)?,
                pw: to_u32(p.pw)?,
                by: to_u32(p.by)?,
                bx: to_u32(p.bx)?,
                ..sizes
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Every position of gx belongs to exactly one phase, which writes it (zero where no tap
    // reaches it), in every split-K partial: nothing to clear first.
    gemm::run_parts(ctx, &CONV_BACKWARD_DATA_PHASE, parts, gx_len, |i, s| ConvPhaseParams {
        m: s.m,
        n: s.n,
        k: s.k,
        splits: s.splits,
        k_chunk: s.k_chunk,
        ..phase_sizes[i]
    })
}

/// The weight's gradient: M = c_out, N = c_in * kh * kw, K = batch * oh * ow (split-K).
pub fn backward_weight(ctx: &GpuContext, x: &GpuStorage, gy: &GpuStorage, g: &ConvGeometry) -> Result<GpuStorage> {
    let (m, n) = (g.c_out, g.c_in * g.kh * g.kw);
    let launch = Gemm {
        mnk: (m, n, g.n * g.oh * g.ow),
        variant: variant(g),
        inputs: &[("x", x), ("gy", gy)],
        output: "partial",
        output_len: m * n,
        precision: g.precision,
    };
    run(ctx, &CONV_BACKWARD_WEIGHT, g, launch, false, Epilogue::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(n: usize, c: usize, hw: usize, o: usize, k: usize, s: usize, p: usize) -> ConvGeometry {
        ConvGeometry::new(&[n, c, hw, hw], &[o, c, k, k], s, p).unwrap()
    }

    /// Every (input position, tap) pair that the convolution connects is in exactly one phase,
    /// with the output position the phase computes for it.
    #[test]
    fn phases_cover_every_connected_pair_once() {
        for (hw, k, s, p) in [
            (9, 3, 2, 1),
            (8, 3, 2, 1),
            (7, 1, 2, 0),
            (11, 7, 2, 3),
            (4, 5, 3, 2),
            (1, 3, 2, 1),
        ] {
            let g = geometry(1, 1, hw, 1, k, s, p);
            let mut from_phases = Vec::new();
            let mut positions = 0;
            for ph in phases(&g) {
                positions += ph.ph * ph.pw;
                for (t, u) in (0..ph.ph).flat_map(|t| (0..ph.taps_h).map(move |u| (t, u))) {
                    let oy = (t + ph.by) as isize - u as isize;
                    if ph.px == 0 && (0..g.oh as isize).contains(&oy) {
                        from_phases.push((ph.py + s * t, ph.i0 + s * u, oy as usize));
                    }
                }
            }
            assert_eq!(positions, hw * hw, "{g:?}: every input position in one phase");
            let mut direct = Vec::new();
            for iy in 0..hw {
                for i in 0..k {
                    let t = iy as isize + p as isize - i as isize;
                    if t >= 0 && t % s as isize == 0 && ((t / s as isize) as usize) < g.oh {
                        direct.push((iy, i, (t / s as isize) as usize));
                    }
                }
            }
            from_phases.sort();
            assert_eq!(from_phases, direct, "{g:?}: rows");
        }
    }

    /// What the phases save: ResNet-50's 3x3/2 layers reduce over a quarter of the taps, its
    /// 1x1/2 projections over a quarter of the positions (the rest get no tap at all).
    #[test]
    fn resnet_50s_strided_layers_skip_three_quarters_of_the_products() {
        for g in [
            geometry(128, 256, 28, 256, 3, 2, 1),
            geometry(128, 512, 28, 1024, 1, 2, 0),
        ] {
            let plain = g.c_in * (g.n * g.h * g.w) * (g.c_out * g.kh * g.kw);
            let phased: usize = phases(&g)
                .iter()
                .map(|p| {
                    let (m, n, k) = p.mnk(&g);
                    m * n * k
                })
                .sum();
            assert_eq!(phased * 4, plain, "{g:?}");
        }
        assert!(!runs_by_phase(&geometry(128, 64, 56, 64, 3, 1, 1)), "stride 1");
    }
}
