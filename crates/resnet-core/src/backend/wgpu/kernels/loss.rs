//! Launchers of loss.wgsl: softmax cross-entropy (losses and the saved softmax), its backward,
//! and top-k hits; one thread a sample or an element.

use super::{output, read, read_write, to_u32, uniform, Family};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::error::Result;

/// Threads a workgroup: rows are few (a batch), so small workgroups spread them over more cores.
const LOSS_WG: u32 = 64;

uniform! {
    pub struct LossParams {
        n: u32,
        classes: u32,
        k: u32,
        /// The backward's scale (1 / n for a mean), times upstream[0] on the device.
        scale: f32,
    }
}

pub(super) static LOSS: Family<LossParams> = Family::new(
    "loss",
    &[("WG", LOSS_WG)],
    &[
        read("logits"),
        read("labels"),
        read("upstream"),
        read_write("losses"),
        read_write("probs"),
    ],
    &[super::PRELUDE, include_str!("loss.wgsl")],
);

fn params(n: usize, classes: usize) -> Result<LossParams> {
    Ok(LossParams {
        n: to_u32(n)?,
        classes: to_u32(classes)?,
        k: 0,
        scale: 0.0,
    })
}

/// Per-sample losses and the softmax (saved for backward).
pub fn cross_entropy(
    ctx: &GpuContext,
    logits: &GpuStorage,
    labels: &GpuStorage,
    n: usize,
    classes: usize,
) -> Result<(GpuStorage, GpuStorage)> {
    let losses = output(ctx, n)?;
    let probs = output(ctx, n * classes)?;
    LOSS.launch_each(
        ctx,
        "cross_entropy",
        &params(n, classes)?,
        &[
            ("logits", logits),
            ("labels", labels),
            ("losses", &losses),
            ("probs", &probs),
        ],
        n,
    )?;
    Ok((losses, probs))
}

/// The logits' gradient, `(probs - onehot) * scale * upstream[0]`.
pub fn cross_entropy_backward(
    ctx: &GpuContext,
    probs: &GpuStorage,
    labels: &GpuStorage,
    upstream: &GpuStorage,
    (n, classes): (usize, usize),
    scale: f32,
) -> Result<GpuStorage> {
    let p = LossParams {
        scale,
        ..params(n, classes)?
    };
    // The gradient goes out through `losses`, the one writable buffer this entry uses.
    LOSS.launch_into(
        ctx,
        "cross_entropy_backward",
        &p,
        &[("labels", labels), ("upstream", upstream), ("probs", probs)],
        "losses",
        n * classes,
    )
}

/// 1.0 for each sample whose label is among its `k` largest logits.
pub fn topk_correct(
    ctx: &GpuContext,
    logits: &GpuStorage,
    labels: &GpuStorage,
    (n, classes): (usize, usize),
    k: usize,
) -> Result<GpuStorage> {
    let p = LossParams {
        k: to_u32(k)?,
        ..params(n, classes)?
    };
    LOSS.launch_into(
        ctx,
        "topk_correct",
        &p,
        &[("logits", logits), ("labels", labels)],
        "losses",
        n,
    )
}
