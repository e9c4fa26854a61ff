//! Launchers of sgd.wgsl (one fused, in-place SGD step: weight decay, momentum, Nesterov) and of
//! loss_scale.wgsl (dynamic loss scaling's update, on the device).

use super::{read, read_write, to_u32, uniform, Family, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::{ScaleRule, SgdStep};
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
    &[
        read("grad"),
        read_write("param"),
        read_write("momentum_buf"),
        read("check"),
        read("scaler"),
        read("lrs"),
    ],
    &[super::PRELUDE, include_str!("sgd.wgsl")],
);

uniform! {
    pub struct LossScaleParams {
        growth_interval: u32,
        min_scale: f32,
        max_scale: f32,
        /// 1 / max_scale and 1 / min_scale, the reciprocal's bounds (divided here, exactly).
        min_inv: f32,
        max_inv: f32,
    }
}

pub(super) static LOSS_SCALE: Family<LossScaleParams> = Family::new(
    "loss_scale",
    &[("WG", WG)],
    &[read("check"), read_write("scale"), read_write("scaler")],
    &[super::PRELUDE, include_str!("loss_scale.wgsl")],
);

fn params(len: usize, s: &SgdStep) -> Result<SgdParams> {
    Ok(SgdParams {
        len: to_u32(len)?,
        lr: s.lr,
        momentum: s.momentum,
        weight_decay: s.weight_decay,
        nesterov: s.nesterov as u32,
        first_step: s.first_step as u32,
        grad_scale: s.grad_scale,
    })
}

/// Updates `param` and `momentum_buf` in place (the caller has made both unshared).
pub fn step(
    ctx: &GpuContext,
    param: &GpuStorage,
    grad: &GpuStorage,
    momentum_buf: &GpuStorage,
    s: &SgdStep,
) -> Result<()> {
    SGD.launch_each(
        ctx,
        "sgd",
        &params(param.len(), s)?,
        &[("grad", grad), ("param", param), ("momentum_buf", momentum_buf)],
        param.len(),
    )
}

/// The loss scaler's buffers a gated step reads (see `Backend::sgd_update_gated`).
pub struct Gate<'a> {
    pub check: &'a GpuStorage,
    pub scaler: &'a GpuStorage,
    pub lrs: &'a GpuStorage,
}

/// [`step`], skipped on the device when `gate.check` is not finite, at the gate's rate and scale.
pub fn step_gated(
    ctx: &GpuContext,
    param: &GpuStorage,
    grad: &GpuStorage,
    momentum_buf: &GpuStorage,
    s: &SgdStep,
    gate: &Gate,
) -> Result<()> {
    SGD.launch_each(
        ctx,
        "sgd_gated",
        &params(param.len(), s)?,
        &[
            ("grad", grad),
            ("param", param),
            ("momentum_buf", momentum_buf),
            ("check", gate.check),
            ("scaler", gate.scaler),
            ("lrs", gate.lrs),
        ],
        param.len(),
    )
}

/// Halves or grows `scale` and updates `scaler` in place, from this step's `check`.
pub fn scale_update(
    ctx: &GpuContext,
    scale: &GpuStorage,
    scaler: &GpuStorage,
    check: &GpuStorage,
    rule: &ScaleRule,
) -> Result<()> {
    let p = LossScaleParams {
        growth_interval: rule.growth_interval,
        min_scale: rule.min_scale,
        max_scale: rule.max_scale,
        min_inv: 1.0 / rule.max_scale,
        max_inv: 1.0 / rule.min_scale,
    };
    LOSS_SCALE.launch(
        ctx,
        "loss_scale_update",
        &p,
        &[("check", check), ("scale", scale), ("scaler", scaler)],
        1,
    )
}
