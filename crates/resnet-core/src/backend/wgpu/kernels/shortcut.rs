//! Launchers of shortcut.wgsl: the paper's option-A shortcut (stride, zero-padded channels) and
//! its adjoint, one thread an output element.

use super::{read, read_write, to_u32, uniform, Family, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::ShortcutGeometry;
use crate::error::Result;

uniform! {
    pub struct ShortcutParams {
        /// Threads: n * c_out * oh * ow (forward) or n * c_in * h * w (backward).
        len: u32,
        c_in: u32,
        c_out: u32,
        h: u32,
        w: u32,
        oh: u32,
        ow: u32,
        stride: u32,
        /// Zero channels in front of the input's channels.
        pad_before: u32,
    }
}

pub(super) static SHORTCUT: Family<ShortcutParams> = Family::new(
    "shortcut",
    &[("WG", WG)],
    &[read("src"), read_write("dst")],
    &[super::PRELUDE, super::GRID, include_str!("shortcut.wgsl")],
);

/// Runs one direction of the shortcut: `forward` writes [n, c_out, oh, ow], `backward` [n, c_in, h, w].
fn launch(
    ctx: &GpuContext,
    g: &ShortcutGeometry,
    entry: &'static str,
    src: &GpuStorage,
    len: usize,
) -> Result<GpuStorage> {
    let p = ShortcutParams {
        len: to_u32(len)?,
        c_in: to_u32(g.c_in)?,
        c_out: to_u32(g.c_out)?,
        h: to_u32(g.h)?,
        w: to_u32(g.w)?,
        oh: to_u32(g.oh)?,
        ow: to_u32(g.ow)?,
        stride: to_u32(g.stride)?,
        pad_before: to_u32(g.pad_before)?,
    };
    SHORTCUT.launch_into(ctx, entry, &p, &[("src", src)], "dst", len)
}

pub fn forward(ctx: &GpuContext, x: &GpuStorage, g: &ShortcutGeometry) -> Result<GpuStorage> {
    launch(ctx, g, "forward", x, g.n * g.c_out * g.oh * g.ow)
}

pub fn backward(ctx: &GpuContext, gy: &GpuStorage, g: &ShortcutGeometry) -> Result<GpuStorage> {
    launch(ctx, g, "backward", gy, g.n * g.c_in * g.h * g.w)
}
