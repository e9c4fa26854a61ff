//! Differentiable ops on tensors: check shapes (naming the op and the shapes), run the backend
//! kernel, record the op for backward. Layers, blocks and the TS tensor API are built from these.

use crate::autograd::Op;
use crate::backend::{
    same_device, Activation, BatchStats, ChannelLayout, ConvGeometry, LogitsLayout, MatmulGeometry, PoolGeometry,
    RunningStatsUpdate, ShortcutGeometry, StatsSource, Storage,
};
use crate::distributed::{sync_bn, Communicator, SyncedBatch};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::sync::Arc;

fn expect_rank(op: &'static str, t: &Tensor, rank: usize, what: &str) -> Result<()> {
    if t.shape().len() != rank {
        return Err(Error::shape(
            op,
            format!("expected {what} of rank {rank}, got shape {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// 2-d convolution, NCHW input, OIHW weight, square stride and padding, optional bias [O].
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let g = ConvGeometry::new(x.shape(), w.shape(), stride, padding)?.with_precision(crate::precision::current());
    if let Some(b) = bias {
        if b.shape() != [g.c_out] {
            return Err(Error::shape(
                "conv2d",
                format!("bias {:?} must be [{}] for weight {:?}", b.shape(), g.c_out, w.shape()),
            ));
        }
    }
    let (xs, ws) = (x.storage(), w.storage());
    let bs = bias.map(|b| b.storage());
    let mut all = vec![&xs, &ws];
    all.extend(bs.iter());
    let dev = same_device("conv2d", &all)?;
    let y = dev.backend().conv2d(&xs, &ws, bs.as_ref(), &g)?;
    Ok(Tensor::from_op(
        y,
        g.out_shape().to_vec(),
        Op::Conv2d {
            x: x.clone(),
            w: w.clone(),
            bias: bias.cloned(),
            geometry: g,
        },
    ))
}

/// How batch norm normalises, and whether the batch changes its running statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BnMode {
    /// The batch's statistics; the running statistics (and the layer's `num_batches_tracked`)
    /// take the batch in.
    Train,
    /// The batch's statistics, but the running statistics and the counter stay untouched:
    /// probes that must leave the model as it was.
    TrainFrozenStats,
    /// The running statistics.
    #[default]
    Eval,
}

impl BnMode {
    pub fn stats_source(self) -> StatsSource {
        match self {
            BnMode::Train | BnMode::TrainFrozenStats => StatsSource::Batch,
            BnMode::Eval => StatsSource::Running,
        }
    }

    /// Whether the running statistics and the counter take this batch in.
    pub fn updates_running_stats(self) -> bool {
        self == BnMode::Train
    }
}

/// Batch norm over the channels of an NCHW tensor, in a [`BnMode`]; running statistics are
/// updated in place with PyTorch's momentum convention.
pub struct BatchNormArgs<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub mode: BnMode,
    /// Normalise with the global batch's statistics (training modes only).
    pub sync: Option<&'a Arc<Communicator>>,
    pub momentum: f32,
    pub eps: f32,
}

/// What follows batch norm in the same kernel: an optional residual add, then an activation.
pub(crate) type BatchNormEpilogue<'a> = (Option<&'a Storage>, Activation);

/// Batch norm's output storage and saved statistics (running statistics updated in `Train`),
/// not yet recorded: `batch_norm2d` records it alone, `fused::batch_norm_act` with what follows
/// (passed as `epilogue`, which the output then has had applied).
pub(crate) fn batch_norm_forward(
    x: &Tensor,
    a: &BatchNormArgs,
    epilogue: Option<BatchNormEpilogue>,
) -> Result<(Storage, BatchStats, Option<SyncedBatch>)> {
    let layout = ChannelLayout::of_nchw("batch_norm2d", x.shape())?;
    let (s, c) = (x.shape(), layout.c);
    for (name, p) in [
        ("weight", a.gamma),
        ("bias", a.beta),
        ("running_mean", a.running_mean),
        ("running_var", a.running_var),
    ] {
        if p.shape() != [c] {
            return Err(Error::shape(
                "batch_norm2d",
                format!("{name} {:?} must be [{c}] for input {s:?}", p.shape()),
            ));
        }
    }
    let xs = x.storage();
    let dev = same_device("batch_norm2d", &[&xs, &a.gamma.storage(), &a.running_mean.storage()])?;
    let be = dev.backend();
    let (gamma, beta) = (a.gamma.storage(), a.beta.storage());
    if a.mode.stats_source() == StatsSource::Batch {
        if layout.per_channel() < 2 {
            return Err(Error::shape(
                "batch_norm2d",
                format!("training needs more than one value per channel, got input {s:?} (use eval mode for a single 1x1 sample)"),
            ));
        }
        let updates = a.mode.updates_running_stats();
        let Some(comm) = a.sync else {
            // This rank's statistics: the running ones are updated in the same call.
            let (y, stats) = if updates {
                let update = RunningStatsUpdate {
                    momentum: a.momentum,
                    count: layout.per_channel(),
                };
                a.running_mean.update_storage(|rm| {
                    a.running_var.update_storage(|rv| {
                        be.batch_norm_train_running(&xs, &gamma, &beta, &layout, a.eps, epilogue, (rm, rv), &update)
                    })
                })?
            } else {
                match epilogue {
                    Some((residual, act)) => {
                        be.batch_norm_train_act(&xs, &gamma, &beta, &layout, a.eps, residual, act)?
                    }
                    None => be.batch_norm_train(&xs, &gamma, &beta, &layout, a.eps)?,
                }
            };
            return Ok((y, stats, None));
        };
        let (y, stats, synced) = sync_bn::forward(be, &xs, (&gamma, &beta), &layout, a.eps, comm)?;
        let y = match epilogue {
            Some((residual, act)) => be.epilogue(y, residual, act)?,
            None => y,
        };
        if updates {
            let update = RunningStatsUpdate {
                momentum: a.momentum,
                count: synced.count,
            };
            a.running_mean.update_storage(|rm| {
                a.running_var
                    .update_storage(|rv| be.update_running_stats(rm, rv, &stats, &update))
            })?;
        }
        Ok((y, stats, Some(synced)))
    } else {
        let stats = be.batch_norm_frozen_stats(&a.running_mean.storage(), &a.running_var.storage(), a.eps)?;
        let y = match epilogue {
            Some((residual, act)) => be.batch_norm_apply_act(&xs, &gamma, &beta, &stats, &layout, residual, act)?,
            None => be.batch_norm_apply(&xs, &gamma, &beta, &stats, &layout)?,
        };
        Ok((y, stats, None))
    }
}

pub fn batch_norm2d(x: &Tensor, a: &BatchNormArgs) -> Result<Tensor> {
    let (y, stats, synced) = batch_norm_forward(x, a, None)?;
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        Op::BatchNorm {
            x: x.clone(),
            gamma: a.gamma.clone(),
            beta: a.beta.clone(),
            stats,
            source: a.mode.stats_source(),
            synced,
        },
    ))
}

pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    let y = x.device().backend().activation(&x.storage(), act)?;
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        Op::Activation { x: x.clone(), act },
    ))
}

pub fn relu(x: &Tensor) -> Result<Tensor> {
    activation(x, Activation::Relu)
}

pub(crate) fn check_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(
            op,
            format!(
                "operands must have the same shape, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    Ok(())
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_same_shape("add", a, b)?;
    let (sa, sb) = (a.storage(), b.storage());
    let y = same_device("add", &[&sa, &sb])?.backend().add(&sa, &sb)?;
    Ok(Tensor::from_op(
        y,
        a.shape().to_vec(),
        Op::Add {
            a: a.clone(),
            b: b.clone(),
        },
    ))
}

pub fn scale(x: &Tensor, alpha: f32) -> Result<Tensor> {
    let y = x.device().backend().scale(&x.storage(), alpha)?;
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        Op::Scale { x: x.clone(), alpha },
    ))
}

pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let g = PoolGeometry::new(x.shape(), kernel, stride, padding)?;
    let y = x.device().backend().max_pool2d(&x.storage(), &g)?;
    Ok(Tensor::from_op(
        y,
        g.out_shape().to_vec(),
        Op::MaxPool2d {
            x: x.clone(),
            geometry: g,
        },
    ))
}

/// [N, C, H, W] -> [N, C], the mean over each feature map.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let layout = ChannelLayout::of_nchw("global_avg_pool", x.shape())?;
    let y = x.device().backend().global_avg_pool(&x.storage(), &layout)?;
    Ok(Tensor::from_op(
        y,
        vec![layout.n, layout.c],
        Op::GlobalAvgPool { x: x.clone(), layout },
    ))
}

/// y[N, O] = x[N, I] . w[O, I]^T + b[O]
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    expect_rank("linear", x, 2, "an [N, in_features] input")?;
    expect_rank("linear", w, 2, "an [out_features, in_features] weight")?;
    let (n, k, m) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    if w.shape()[1] != k {
        return Err(Error::shape(
            "linear",
            format!(
                "input {:?} has {k} features but weight {:?} expects {}",
                x.shape(),
                w.shape(),
                w.shape()[1]
            ),
        ));
    }
    if let Some(b) = bias {
        if b.shape() != [m] {
            return Err(Error::shape(
                "linear",
                format!("bias {:?} must be [{m}] for weight {:?}", b.shape(), w.shape()),
            ));
        }
    }
    let (xs, ws) = (x.storage(), w.storage());
    let be = same_device("linear", &[&xs, &ws])?.backend();
    // x[n, k] . w[m, k]^T
    let product = MatmulGeometry {
        m: n,
        k,
        n: m,
        transpose_a: false,
        transpose_b: true,
        precision: crate::precision::current(),
    };
    let mut y = be.matmul(&xs, &ws, &product)?;
    if let Some(b) = bias {
        y = be.add_row_bias(&y, &b.storage())?;
    }
    Ok(Tensor::from_op(
        y,
        vec![n, m],
        Op::Linear {
            x: x.clone(),
            w: w.clone(),
            bias: bias.cloned(),
            precision: product.precision,
        },
    ))
}

pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if shape.iter().product::<usize>() != x.numel() {
        return Err(Error::shape(
            "reshape",
            format!("cannot view {:?} ({} values) as {shape:?}", x.shape(), x.numel()),
        ));
    }
    Ok(Tensor::from_op(
        x.storage(),
        shape.to_vec(),
        Op::Reshape { x: x.clone() },
    ))
}

/// [N, ...] -> [N, rest]
pub fn flatten(x: &Tensor) -> Result<Tensor> {
    let n = *x
        .shape()
        .first()
        .ok_or_else(|| Error::shape("flatten", "cannot flatten a 0-d tensor"))?;
    reshape(x, &[n, x.numel() / n.max(1)])
}

/// Class labels as a device tensor, checked against the number of classes on the host first.
pub fn labels_tensor(labels: &[i32], classes: usize, device: crate::backend::Device) -> Result<Tensor> {
    for (index, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= classes {
            return Err(Error::LabelRange {
                label: l as i64,
                index,
                classes,
            });
        }
    }
    let as_f32: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    Tensor::from_vec(&as_f32, &[labels.len()], device)
}

/// Mean softmax cross-entropy of logits [N, classes] against labels [N] (from `labels_tensor`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    expect_rank("cross_entropy", logits, 2, "[N, classes] logits")?;
    let (n, classes) = (logits.shape()[0], logits.shape()[1]);
    if labels.shape() != [n] {
        return Err(Error::shape(
            "cross_entropy",
            format!(
                "labels {:?} must be [{n}] for logits {:?}",
                labels.shape(),
                logits.shape()
            ),
        ));
    }
    let (ls, ys) = (logits.storage(), labels.storage());
    let be = same_device("cross_entropy", &[&ls, &ys])?.backend();
    let (losses, probs) = be.cross_entropy(&ls, &ys, &LogitsLayout { n, classes })?;
    let mean = be.scale(&be.sum_all(&losses)?, 1.0 / n as f32)?;
    Ok(Tensor::from_op(
        mean,
        vec![1],
        Op::CrossEntropy {
            logits: logits.clone(),
            labels: ys,
            probs,
        },
    ))
}

/// The paper's option-A shortcut: subsample by `stride`, then zero-pad channels up to `c_out`
/// (split evenly before and after, as the common CIFAR implementations do).
pub fn shortcut_a(x: &Tensor, c_out: usize, stride: usize) -> Result<Tensor> {
    let g = ShortcutGeometry::new(x.shape(), c_out, stride)?;
    let y = x.device().backend().shortcut_a(&x.storage(), &g)?;
    Ok(Tensor::from_op(
        y,
        g.out_shape().to_vec(),
        Op::ShortcutA {
            x: x.clone(),
            geometry: g,
        },
    ))
}
