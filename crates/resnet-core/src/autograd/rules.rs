//! Every backward rule, in one place. Each takes the op, its output and the gradient of the
//! output, and returns the gradient of each input that may need one.

use super::Op;
use crate::backend::{
    Backend, BatchStats, ChannelLayout, LogitsLayout, MatmulGeometry, RowLayout, StatsSource, Storage,
};
use crate::distributed::{sync_bn, SyncedBatch};
use crate::error::Result;
use crate::tensor::Tensor;

pub(super) fn backward(op: &Op, out: &Tensor, gy: &Storage) -> Result<Vec<(Tensor, Storage)>> {
    let be = out.device().backend();
    let mut grads = Vec::new();
    match op {
        Op::Conv2d {
            x,
            w,
            bias,
            geometry: g,
        } => {
            if x.requires_grad() {
                grads.push((x.clone(), be.conv2d_backward_data(gy, &w.storage(), g)?));
            }
            if w.requires_grad() {
                grads.push((w.clone(), be.conv2d_backward_weight(&x.storage(), gy, g)?));
            }
            if let Some(b) = bias.as_ref().filter(|b| b.requires_grad()) {
                grads.push((b.clone(), be.sum_nhw(gy, &g.out_layout())?));
            }
        }
        Op::BatchNorm {
            x,
            gamma,
            beta,
            stats,
            source,
            synced,
        } => {
            batch_norm_backward(be, (x, gamma, beta), (stats, *source, synced.as_ref()), gy, &mut grads)?;
        }
        Op::BatchNormAct {
            x,
            gamma,
            beta,
            stats,
            source,
            synced,
            residual,
            act,
        } => match (residual, synced) {
            // Nothing else needs the gradient before the activation: the backend may take gy
            // back through it inside batch norm's passes instead of writing it out.
            (None, None) => {
                let layout = ChannelLayout::of_nchw("batch_norm2d", x.shape())?;
                let (dx, dgamma, dbeta) = be.batch_norm_act_backward(
                    &x.storage(),
                    &out.storage(),
                    gy,
                    &gamma.storage(),
                    stats,
                    &layout,
                    *source,
                    *act,
                )?;
                grads.push((x.clone(), dx));
                grads.push((gamma.clone(), dgamma));
                grads.push((beta.clone(), dbeta));
            }
            _ => {
                let g = be.activation_backward(&out.storage(), gy, *act)?;
                batch_norm_backward(be, (x, gamma, beta), (stats, *source, synced.as_ref()), &g, &mut grads)?;
                if let Some(r) = residual {
                    grads.push((r.clone(), g));
                }
            }
        },
        Op::Activation { x, act } => {
            grads.push((x.clone(), be.activation_backward(&out.storage(), gy, *act)?));
        }
        Op::Add { a, b } => {
            grads.push((a.clone(), gy.clone()));
            grads.push((b.clone(), gy.clone()));
        }
        Op::AddActivation { a, b, act } => {
            let g = be.activation_backward(&out.storage(), gy, *act)?;
            grads.push((a.clone(), g.clone()));
            grads.push((b.clone(), g));
        }
        Op::Scale { x, alpha } => {
            grads.push((x.clone(), be.scale(gy, *alpha)?));
        }
        Op::MaxPool2d { x, geometry } => {
            grads.push((x.clone(), be.max_pool2d_backward(&x.storage(), gy, geometry)?));
        }
        Op::GlobalAvgPool { x, layout } => {
            grads.push((x.clone(), be.global_avg_pool_backward(gy, layout)?));
        }
        Op::Linear { x, w, bias, precision } => {
            let (n, k) = (x.shape()[0], x.shape()[1]);
            let m = w.shape()[0];
            if x.requires_grad() {
                // dx[n, k] = dy[n, m] . w[m, k]
                let g = MatmulGeometry {
                    m: n,
                    k: m,
                    n: k,
                    transpose_a: false,
                    transpose_b: false,
                    precision: *precision,
                };
                grads.push((x.clone(), be.matmul(gy, &w.storage(), &g)?));
            }
            if w.requires_grad() {
                // dw[m, k] = dy^T[m, n] . x[n, k]
                let g = MatmulGeometry {
                    m,
                    k: n,
                    n: k,
                    transpose_a: true,
                    transpose_b: false,
                    precision: *precision,
                };
                grads.push((w.clone(), be.matmul(gy, &x.storage(), &g)?));
            }
            if let Some(b) = bias.as_ref().filter(|b| b.requires_grad()) {
                grads.push((b.clone(), be.sum_rows(gy, &RowLayout { rows: n, cols: m })?));
            }
        }
        Op::Reshape { x } => {
            grads.push((x.clone(), gy.clone()));
        }
        Op::CrossEntropy { logits, labels, probs } => {
            let (n, classes) = (logits.shape()[0], logits.shape()[1]);
            // The loss is the batch mean, hence the 1/n.
            grads.push((
                logits.clone(),
                be.cross_entropy_backward(probs, labels, gy, &LogitsLayout { n, classes }, 1.0 / n as f32)?,
            ));
        }
        Op::ShortcutA { x, geometry } => {
            grads.push((x.clone(), be.shortcut_a_backward(gy, geometry)?));
        }
    }
    Ok(grads)
}

/// Gradients of x, gamma and beta through batch norm, shared by the plain and the fused op.
fn batch_norm_backward(
    be: &dyn Backend,
    (x, gamma, beta): (&Tensor, &Tensor, &Tensor),
    (stats, source, synced): (&BatchStats, StatsSource, Option<&SyncedBatch>),
    gy: &Storage,
    grads: &mut Vec<(Tensor, Storage)>,
) -> Result<()> {
    let layout = ChannelLayout::of_nchw("batch_norm2d", x.shape())?;
    let (dx, dgamma, dbeta) = match synced {
        Some(synced) => sync_bn::backward(be, &x.storage(), gy, &gamma.storage(), stats, &layout, synced)?,
        None => be.batch_norm_backward(&x.storage(), gy, &gamma.storage(), stats, &layout, source)?,
    };
    grads.push((x.clone(), dx));
    grads.push((gamma.clone(), dgamma));
    grads.push((beta.clone(), dbeta));
    Ok(())
}
