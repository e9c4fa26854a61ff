//! Launchers of pooling.wgsl: max pooling (first maximum wins, PyTorch's tie rule) and its
//! gathering backward, global average pooling and its backward.

use super::{read, read_write, to_u32, uniform, Family, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::ChannelLayout;
use crate::backend::PoolGeometry;
use crate::error::Result;

uniform! {
    pub struct PoolParams {
        /// Threads: outputs (forward) or inputs (backward).
        len: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        kernel: u32,
        stride: u32,
        pad: u32,
        /// Values a plane (global average pooling).
        hw: u32,
    }
}

pub(super) static POOLING: Family<PoolParams> = Family::new(
    "pooling",
    &[("WG", WG)],
    &[read("x"), read("gy"), read_write("y")],
    &[super::PRELUDE, super::GRID, include_str!("pooling.wgsl")],
);

fn window(len: usize, g: &PoolGeometry) -> Result<PoolParams> {
    Ok(PoolParams {
        len: to_u32(len)?,
        h: to_u32(g.h)?,
        w: to_u32(g.w)?,
        oh: to_u32(g.oh)?,
        ow: to_u32(g.ow)?,
        kernel: to_u32(g.kernel)?,
        stride: to_u32(g.stride)?,
        pad: to_u32(g.padding)?,
        hw: 1,
    })
}

pub fn max_pool(ctx: &GpuContext, x: &GpuStorage, g: &PoolGeometry) -> Result<GpuStorage> {
    let len = g.n * g.c * g.oh * g.ow;
    POOLING.launch_into(ctx, "max_pool", &window(len, g)?, &[("x", x)], "y", len)
}

pub fn max_pool_backward(ctx: &GpuContext, x: &GpuStorage, gy: &GpuStorage, g: &PoolGeometry) -> Result<GpuStorage> {
    let len = g.n * g.c * g.h * g.w;
    POOLING.launch_into(
        ctx,
        "max_pool_backward",
        &window(len, g)?,
        &[("x", x), ("gy", gy)],
        "y",
        len,
    )
}

fn planes(len: usize, s: ChannelLayout) -> Result<PoolParams> {
    Ok(PoolParams {
        len: to_u32(len)?,
        hw: to_u32(s.hw)?,
        ..PoolParams::default()
    })
}

/// The mean of each [hw] plane.
pub fn global_avg_pool(ctx: &GpuContext, x: &GpuStorage, s: ChannelLayout) -> Result<GpuStorage> {
    let len = s.n * s.c;
    POOLING.launch_into(ctx, "global_avg_pool", &planes(len, s)?, &[("x", x)], "y", len)
}

pub fn global_avg_pool_backward(ctx: &GpuContext, gy: &GpuStorage, s: ChannelLayout) -> Result<GpuStorage> {
    let len = s.len();
    POOLING.launch_into(
        ctx,
        "global_avg_pool_backward",
        &planes(len, s)?,
        &[("gy", gy)],
        "y",
        len,
    )
}
