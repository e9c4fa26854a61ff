//! Launcher of sgd.wgsl: one fused, in-place SGD step (weight decay, momentum, Nesterov).

use super::{read, read_write, to_u32, uniform, Family, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::SgdStep;
use crate::error::Result;

uniform! {
    pub struct SgdParams {
        len: u32,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: u32,
        /// The momentum buffer starts as the first gradient (PyTorch), not decayed from zero.
        first_step: u32,
        grad_scale: f32,
    }
}

pub(super) static SGD: Family<SgdParams> = Family::new(
    "sgd",
    &[("WG", WG)],
    &[read("grad"), read_write("param"), read_write("momentum_buf")],
    &[super::PRELUDE, include_str!("sgd.wgsl")],
);

/// Updates `param` and `momentum_buf` in place (the caller has made both unshared).
pub fn step(
    ctx: &GpuContext,
    param: &GpuStorage,
    grad: &GpuStorage,
    momentum_buf: &GpuStorage,
    s: &SgdStep,
) -> Result<()> {
    let len = param.len();
    let p = SgdParams {
        len: to_u32(len)?,
        lr: s.lr,
        momentum: s.momentum,
        weight_decay: s.weight_decay,
        nesterov: s.nesterov as u32,
        first_step: s.first_step as u32,
        grad_scale: s.grad_scale,
    };
    SGD.launch_each(
        ctx,
        "sgd",
        &p,
        &[("grad", grad), ("param", param), ("momentum_buf", momentum_buf)],
        len,
    )
}
