//! Launchers of the three convolution families (conv2d_forward.wgsl, conv2d_backward_data.wgsl,
//! conv2d_backward_weight.wgsl): implicit GEMMs through the shared tile loop in gemm.rs, the
//! kernel shape, stride and padding compiled into each variant.

use super::gemm::{self, Gemm, PLAIN_K, TILE_LOOP};
use super::{read, read_write, to_u32, uniform, Family};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::ConvGeometry;
use crate::error::Result;

uniform! {
    pub struct ConvForwardParams {
        m: u32,
        n: u32,
        k: u32,
        splits: u32,
        k_chunk: u32,
        c_in: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        has_bias: u32,
    }
}

uniform! {
    pub struct ConvBackwardDataParams {
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
    }
}

uniform! {
    pub struct ConvBackwardWeightParams {
        m: u32,
        n: u32,
        k: u32,
        splits: u32,
        k_chunk: u32,
        c_in: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
    }
}

pub(super) static CONV_FORWARD: Family<ConvForwardParams> = Family::new(
    "conv2d_forward",
    &[],
    &[read("x"), read("wt"), read("bias"), read_write("y")],
    &[include_str!("conv2d_forward.wgsl"), PLAIN_K, TILE_LOOP],
);

pub(super) static CONV_BACKWARD_DATA: Family<ConvBackwardDataParams> = Family::new(
    "conv2d_backward_data",
    &[],
    &[read("gy"), read("wt"), read_write("gx")],
    &[include_str!("conv2d_backward_data.wgsl"), PLAIN_K, TILE_LOOP],
);

pub(super) static CONV_BACKWARD_WEIGHT: Family<ConvBackwardWeightParams> = Family::new(
    "conv2d_backward_weight",
    &[],
    &[read("x"), read("gy"), read_write("partial")],
    &[include_str!("conv2d_backward_weight.wgsl"), TILE_LOOP],
);

/// The variant of a geometry: its window and stride become WGSL constants.
fn variant(g: &ConvGeometry) -> Vec<(&'static str, String)> {
    vec![
        ("KH", g.kh.to_string()),
        ("KW", g.kw.to_string()),
        ("STRIDE", g.stride.to_string()),
        ("PAD", g.padding.to_string()),
    ]
}

/// The image sizes every convolution kernel reads: (h, w, oh, ow).
fn planes(g: &ConvGeometry) -> Result<(u32, u32, u32, u32)> {
    Ok((to_u32(g.h)?, to_u32(g.w)?, to_u32(g.oh)?, to_u32(g.ow)?))
}

/// `y = conv(x, w) (+ bias)`: M = c_out, N = batch * oh * ow, K = c_in * kh * kw.
pub fn forward(
    ctx: &GpuContext,
    x: &GpuStorage,
    w: &GpuStorage,
    bias: Option<&GpuStorage>,
    g: &ConvGeometry,
) -> Result<GpuStorage> {
    let (h, wd, oh, ow) = planes(g)?;
    let c_in = to_u32(g.c_in)?;
    // The kernel reads `bias` only when it has one, but every binding it declares must be bound.
    let bias_or_unused = bias.unwrap_or(x);
    let launch = Gemm {
        mnk: (g.c_out, g.n * g.oh * g.ow, g.c_in * g.kh * g.kw),
        variant: variant(g),
        inputs: &[("x", x), ("wt", w), ("bias", bias_or_unused)],
        output: "y",
        output_len: g.n * g.c_out * g.oh * g.ow,
    };
    gemm::run(ctx, &CONV_FORWARD, launch, |s| ConvForwardParams {
        m: s.m,
        n: s.n,
        k: s.k,
        splits: s.splits,
        k_chunk: s.k_chunk,
        c_in,
        h,
        w: wd,
        oh,
        ow,
        has_bias: bias.is_some() as u32,
    })
}

/// The input's gradient: M = c_in, N = batch * h * w, K = c_out * kh * kw.
pub fn backward_data(ctx: &GpuContext, gy: &GpuStorage, w: &GpuStorage, g: &ConvGeometry) -> Result<GpuStorage> {
    let (h, wd, oh, ow) = planes(g)?;
    let c_out = to_u32(g.c_out)?;
    let launch = Gemm {
        mnk: (g.c_in, g.n * g.h * g.w, g.c_out * g.kh * g.kw),
        variant: variant(g),
        inputs: &[("gy", gy), ("wt", w)],
        output: "gx",
        output_len: g.n * g.c_in * g.h * g.w,
    };
    gemm::run(ctx, &CONV_BACKWARD_DATA, launch, |s| ConvBackwardDataParams {
        m: s.m,
        n: s.n,
        k: s.k,
        splits: s.splits,
        k_chunk: s.k_chunk,
        c_out,
        h,
        w: wd,
        oh,
        ow,
    })
}

/// The weight's gradient: M = c_out, N = c_in * kh * kw, K = batch * oh * ow (split-K).
pub fn backward_weight(ctx: &GpuContext, x: &GpuStorage, gy: &GpuStorage, g: &ConvGeometry) -> Result<GpuStorage> {
    let (h, wd, oh, ow) = planes(g)?;
    let c_in = to_u32(g.c_in)?;
    let (m, n) = (g.c_out, g.c_in * g.kh * g.kw);
    let launch = Gemm {
        mnk: (m, n, g.n * g.oh * g.ow),
        variant: variant(g),
        inputs: &[("x", x), ("gy", gy)],
        output: "partial",
        output_len: m * n,
    };
    gemm::run(ctx, &CONV_BACKWARD_WEIGHT, launch, |s| ConvBackwardWeightParams {
        m: s.m,
        n: s.n,
        k: s.k,
        splits: s.splits,
        k_chunk: s.k_chunk,
        c_in,
        h,
        w: wd,
        oh,
        ow,
    })
}
