//! Fusion: the one place that decides which kernels run for the sequences a ResNet repeats,
//! "batch norm, then activation (with an optional residual add)" and "add, then activation".
//! Layers ask for the whole sequence; this module runs batch norm's kernels followed by a single
//! elementwise kernel that adds and activates, and records one tape op that keeps neither the
//! batch-norm output nor the sum (backward needs only the input and the activated output).
//!
//! A probe that wants the batch-norm output (the paper's Figure 7) reads it from a tap on this
//! same path, so it measures the code that trains, not a separate unfused one.

use crate::autograd::Op;
use crate::backend::{same_device, Activation};
use crate::error::Result;
use crate::ops::{batch_norm_forward, check_same_shape, BatchNormArgs};
use crate::tensor::Tensor;

/// Sees the batch-norm output of a fused op before the residual add and the activation. The
/// tensor is a constant (not recorded for autograd) and lives only for the call.
pub type PreActivationTap<'a> = &'a dyn Fn(&Tensor);

/// `act(batch_norm(x) [+ residual])` as one op. The batch-norm output is handed to `tap`, if
/// any, and freed as soon as the activation has read it: a ResNet's tape would otherwise hold
/// every batch-norm output until backward (a third of its activations).
pub fn batch_norm_act(
    x: &Tensor,
    bn: &BatchNormArgs,
    residual: Option<&Tensor>,
    act: Activation,
    tap: Option<PreActivationTap>,
) -> Result<Tensor> {
    if let Some(r) = residual {
        check_same_shape("batch_norm2d_add_act", x, r)?;
    }
    let residual_storage = residual.map(|r| r.storage());
    let (out, stats, synced) = match tap {
        // Nobody needs the normalised tensor: the backend may add and activate in the same pass.
        None => batch_norm_forward(x, bn, Some((residual_storage.as_ref(), act)))?,
        Some(tap) => {
            let (y, stats, synced) = batch_norm_forward(x, bn, None)?;
            tap(&Tensor::from_storage(y.clone(), x.shape())?);
            let out = y.device().backend().epilogue(y, residual_storage.as_ref(), act)?;
            (out, stats, synced)
        }
    };
    Ok(Tensor::from_op(
        out,
        x.shape().to_vec(),
        Op::BatchNormAct {
            x: x.clone(),
            gamma: bn.gamma.clone(),
            beta: bn.beta.clone(),
            stats,
            source: bn.mode.stats_source(),
            synced,
            residual: residual.cloned(),
            act,
        },
    ))
}

/// `act(a + b)` in one kernel: the join at the end of a residual block whose branch has no
/// batch norm to fuse with.
pub fn add_activation(a: &Tensor, b: &Tensor, act: Activation) -> Result<Tensor> {
    check_same_shape("add", a, b)?;
    let (sa, sb) = (a.storage(), b.storage());
    let y = same_device("add", &[&sa, &sb])?
        .backend()
        .add_activation(&sa, &sb, act)?;
    Ok(Tensor::from_op(
        y,
        a.shape().to_vec(),
        Op::AddActivation {
            a: a.clone(),
            b: b.clone(),
            act,
        },
    ))
}
