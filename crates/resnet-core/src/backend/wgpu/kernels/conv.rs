//! Launchers of the three convolution families (conv2d_forward.wgsl, conv2d_backward_data.wgsl,
//! conv2d_backward_weight.wgsl): implicit GEMMs through the shared tile loop in gemm.rs, the
//! kernel shape, stride and padding compiled into each variant.

use super::gemm::{self, Gemm, PLAIN_K, TILE_LOOP};
use super::{elementwise, read, read_write, to_u32, uniform, Family, GRID};
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

pub(super) static CONV_FORWARD: Family<ConvParams> = Family::new(
    "conv2d_forward",
    &[],
    &[read("x"), read("wt"), read("bias"), read("residual"), read_write("y")],
    &[
        include_str!("conv2d_forward.wgsl"),
        PLAIN_K,
        TILE_LOOP,
        WINDOW,
        GRID,
        super::ACTIVATION,
    ],
);

pub(super) static CONV_BACKWARD_DATA: Family<ConvParams> = Family::new(
    "conv2d_backward_data",
    &[],
    &[read("gy"), read("wt"), read_write("gx")],
    &[
        include_str!("conv2d_backward_data.wgsl"),
        PLAIN_K,
        TILE_LOOP,
        WINDOW,
        GRID,
    ],
);

pub(super) static CONV_BACKWARD_WEIGHT: Family<ConvParams> = Family::new(
    "conv2d_backward_weight",
    &[],
    &[read("x"), read("gy"), read_write("partial")],
    &[include_str!("conv2d_backward_weight.wgsl"), TILE_LOOP, WINDOW, GRID],
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
    family: &Family<ConvParams>,
    g: &ConvGeometry,
    launch: Gemm,
    has_bias: bool,
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
    gemm::run(ctx, family, launch, |s| ConvParams {
        m: s.m,
        n: s.n,
        k: s.k,
        splits: s.splits,
        k_chunk: s.k_chunk,
        ..sizes
    })
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
/// epilogue ([`forward_fused`]); with split-K partials the epilogue must follow their sum.
pub fn fuses_epilogue(g: &ConvGeometry) -> bool {
    gemm::unsplit(forward_mnk(g), g.n * g.c_out * g.oh * g.ow)
}

fn forward_mnk(g: &ConvGeometry) -> (usize, usize, usize) {
    (g.c_out, g.n * g.oh * g.ow, g.c_in * g.kh * g.kw)
}

/// `act(conv(x, w) + bias + residual)` (inference), the residual and the activation applied in the
/// GEMM's store: only where [`fuses_epilogue`] (the caller checks).
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
    if let Some(act) = act {
        variant.push(("ACT", elementwise::activation_code(act).to_string()));
    }
    if residual.is_some() {
        variant.push(("RESIDUAL", "true".to_string()));
    }
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
    run(ctx, &CONV_FORWARD, g, launch, bias.is_some())
}

/// The input's gradient: M = c_in, N = batch * h * w, K = c_out * kh * kw.
pub fn backward_data(ctx: &GpuContext, gy: &GpuStorage, w: &GpuStorage, g: &ConvGeometry) -> Result<GpuStorage> {
    let launch = Gemm {
        mnk: (g.c_in, g.n * g.h * g.w, g.c_out * g.kh * g.kw),
        variant: variant(g),
        inputs: &[("gy", gy), ("wt", w)],
        output: "gx",
        output_len: g.n * g.c_in * g.h * g.w,
        precision: g.precision,
    };
    run(ctx, &CONV_BACKWARD_DATA, g, launch, false)
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
    run(ctx, &CONV_BACKWARD_WEIGHT, g, launch, false)
}
