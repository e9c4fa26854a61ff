//! Launchers of shortcut.wgsl: the paper's option-A shortcut (stride, zero-padded channels) and
//! its adjoint, one thread an output element.

use super::{groups, output, read, read_write, to_u32, uniform, Family, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
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
    &[super::PRELUDE, include_str!("shortcut.wgsl")],
);

/// The shortcut's shape: [n, c_in, h, w] in, [n, c_out, ceil(h / stride), ceil(w / stride)] out.
#[derive(Clone, Copy, Debug)]
pub struct Shortcut {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub stride: usize,
    pub pad_before: usize,
}

impl Shortcut {
    fn out_hw(&self) -> (usize, usize) {
        (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride))
    }

    fn launch(&self, ctx: &GpuContext, entry: &'static str, src: &GpuStorage, len: usize) -> Result<GpuStorage> {
        let (oh, ow) = self.out_hw();
        let p = ShortcutParams {
            len: to_u32(len)?,
            c_in: to_u32(self.c_in)?,
            c_out: to_u32(self.c_out)?,
            h: to_u32(self.h)?,
            w: to_u32(self.w)?,
            oh: to_u32(oh)?,
            ow: to_u32(ow)?,
            stride: to_u32(self.stride)?,
            pad_before: to_u32(self.pad_before)?,
        };
        let dst = output(ctx, len)?;
        SHORTCUT.launch(ctx, entry, &p, &[("src", src), ("dst", &dst)], groups(len, WG))?;
        Ok(dst)
    }

    pub fn forward(&self, ctx: &GpuContext, x: &GpuStorage) -> Result<GpuStorage> {
        let (oh, ow) = self.out_hw();
        self.launch(ctx, "forward", x, self.n * self.c_out * oh * ow)
    }

    pub fn backward(&self, ctx: &GpuContext, gy: &GpuStorage) -> Result<GpuStorage> {
        self.launch(ctx, "backward", gy, self.n * self.c_in * self.h * self.w)
    }
}
