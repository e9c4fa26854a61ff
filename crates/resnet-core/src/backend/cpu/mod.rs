//! The CPU backend: storage is a shared `Vec<f32>`; convolutions are im2col + the `gemm` crate,
//! everything else runs on rayon over ndarray-style slices, using every core.

mod buffers;
mod conv;
pub mod gemm;
mod loss;
mod norm;
mod pool;
mod shortcut;
mod simd;

use super::{
    Activation, Backend, BatchStats, ChannelLayout, ConvGeometry, Device, LogitsLayout, MatmulGeometry, PoolGeometry,
    RowLayout, RunningStatsUpdate, ScaleRule, ScalerGate, SgdStep, ShortcutGeometry, StatsSource, Storage,
};
use crate::error::{Error, Result};
use crate::ops::BatchNormEpilogue;
use crate::precision::Precision;
use gemm::{MatView, Threads};
use ndarray::{ArrayView2, Axis};
use rayon::prelude::*;
use std::sync::Arc;

pub use buffers::{cached_bytes, release_cached, CpuBuffer};

pub type CpuStorage = Arc<CpuBuffer>;

pub struct CpuBackend;

/// Below this many elements a parallel loop costs more than it saves.
const PAR_THRESHOLD: usize = 1 << 15;

fn data(s: &Storage) -> Result<&[f32]> {
    match s {
        Storage::Cpu(v) => Ok(v),
        #[allow(unreachable_patterns)]
        _ => Err(Error::DeviceMismatch {
            op: "cpu kernel",
            a: "cpu".into(),
            b: s.device().to_string(),
        }),
    }
}

fn data_mut(s: &mut Storage) -> Result<&mut [f32]> {
    match s {
        // Copy-on-write: a tensor saved for backward keeps its old values. (Arc::make_mut, with a
        // copy that can fail.)
        Storage::Cpu(v) => {
            if Arc::get_mut(v).is_none() {
                *v = Arc::new(v.try_clone()?);
            }
            Ok(&mut **Arc::get_mut(v).ok_or_else(|| Error::Internal("copy-on-write: storage still shared".into()))?)
        }
        #[allow(unreachable_patterns)]
        _ => Err(Error::DeviceMismatch {
            op: "cpu kernel",
            a: "cpu".into(),
            b: s.device().to_string(),
        }),
    }
}

/// Wraps a kernel's output (a pooled buffer or a small Vec) as storage.
fn store(v: impl Into<CpuBuffer>) -> Result<Storage> {
    Ok(Storage::Cpu(Arc::new(v.into())))
}

fn map(a: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Result<CpuBuffer> {
    let mut out = CpuBuffer::try_uninit(a.len())?;
    if a.len() >= PAR_THRESHOLD {
        out.par_iter_mut().zip(a.par_iter()).for_each(|(o, &v)| *o = f(v));
    } else {
        out.iter_mut().zip(a).for_each(|(o, &v)| *o = f(v));
    }
    Ok(out)
}

fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Result<CpuBuffer> {
    if a.len() != b.len() {
        return Err(Error::Internal(format!(
            "elementwise op on {} and {} values",
            a.len(),
            b.len()
        )));
    }
    let mut out = CpuBuffer::try_uninit(a.len())?;
    if a.len() >= PAR_THRESHOLD {
        out.par_iter_mut()
            .zip(a.par_iter().zip(b.par_iter()))
            .for_each(|(o, (&x, &y))| *o = f(x, y));
    } else {
        out.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&x, &y))| *o = f(x, y));
    }
    Ok(out)
}

#[inline]
/// Along one axis of a strided, padded window (convolution or pooling): the outputs `first..last`
/// whose tap `t` (input `o*stride + t - padding`) lies inside the input's `len`.
fn taps_inside(t: usize, stride: usize, padding: usize, len: usize, out_len: usize) -> (usize, usize) {
    let (p, s) = (padding as isize, stride as isize);
    let first = ((p - t as isize).max(0) as usize).div_ceil(stride).min(out_len);
    let last = ((len as isize + p - t as isize + s - 1) / s).clamp(first as isize, out_len as isize) as usize;
    (first, last)
}

fn activate(v: f32, act: Activation) -> f32 {
    match act {
        Activation::Relu => v.max(0.0),
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
    }
}

/// d act / d x, written in terms of the output y.
fn activate_grad(y: f32, g: f32, act: Activation) -> f32 {
    match act {
        Activation::Relu => {
            if y > 0.0 {
                g
            } else {
                0.0
            }
        }
        Activation::Tanh => g * (1.0 - y * y),
        Activation::Sigmoid => g * y * (1.0 - y),
    }
}

/// Batch norm's epilogue with the residual's storage as a slice.
fn epilogue_data(epilogue: Option<BatchNormEpilogue>) -> Result<Option<norm::Epilogue>> {
    epilogue
        .map(|(residual, act)| Ok((residual.map(data).transpose()?, act)))
        .transpose()
}

/// Batch norm with the batch's statistics, then `epilogue` (residual add, activation) in the
/// same pass when given.
fn batch_norm_train(
    x: &Storage,
    (gamma, beta): (&Storage, &Storage),
    layout: &ChannelLayout,
    eps: f32,
    epilogue: Option<BatchNormEpilogue>,
) -> Result<(Storage, BatchStats)> {
    let x = data(x)?;
    let (mean, var) = norm::channel_stats(x, layout);
    let invstd = norm::invstd(&var, eps);
    let epilogue = epilogue_data(epilogue)?;
    let y = norm::apply(x, data(gamma)?, data(beta)?, &mean, &invstd, layout, epilogue)?;
    Ok((
        store(y)?,
        BatchStats {
            mean: store(mean)?,
            var: store(var)?,
            invstd: store(invstd)?,
        },
    ))
}

/// Batch norm with given statistics, then `epilogue` in the same pass when given.
fn batch_norm_apply(
    x: &Storage,
    (gamma, beta): (&Storage, &Storage),
    stats: &BatchStats,
    layout: &ChannelLayout,
    epilogue: Option<BatchNormEpilogue>,
) -> Result<Storage> {
    let epilogue = epilogue_data(epilogue)?;
    store(norm::apply(
        data(x)?,
        data(gamma)?,
        data(beta)?,
        data(&stats.mean)?,
        data(&stats.invstd)?,
        layout,
        epilogue,
    )?)
}

/// Batch norm's backward, taking `gy` back through the activation that produced `out` first
/// when `through` is given.
fn batch_norm_backward(
    x: &Storage,
    gy: &Storage,
    gamma: &Storage,
    stats: &BatchStats,
    (layout, source): (&ChannelLayout, StatsSource),
    through: Option<(&Storage, Activation)>,
) -> Result<(Storage, Storage, Storage)> {
    let through = match through {
        Some((out, act)) => Some((data(out)?, act)),
        None => None,
    };
    let (dx, dgamma, dbeta) = norm::backward(
        data(x)?,
        data(gy)?,
        data(gamma)?,
        (data(&stats.mean)?, data(&stats.invstd)?),
        layout,
        source,
        through,
    )?;
    Ok((store(dx)?, store(dgamma)?, store(dbeta)?))
}

/// The CPU kernels compute in f32 only (`Model` refuses 'mixed' on the CPU before any op runs,
/// with this same message).
fn fp32_only(precision: Precision) -> Result<()> {
    match precision {
        Precision::Fp32 => Ok(()),
        Precision::Mixed => super::check_mixed_precision(Device::Cpu),
    }
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn upload(&self, d: &[f32]) -> Result<Storage> {
        store(CpuBuffer::try_from_slice(d)?)
    }

    fn download(&self, s: &Storage) -> Result<Vec<f32>> {
        crate::memory::try_copy(data(s)?, "a tensor's values")
    }

    fn zeros(&self, len: usize) -> Result<Storage> {
        store(CpuBuffer::try_zeroed(len)?)
    }

    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        store(zip_map(data(a)?, data(b)?, |x, y| x + y)?)
    }

    fn add_activation(&self, a: &Storage, b: &Storage, act: Activation) -> Result<Storage> {
        store(zip_map(data(a)?, data(b)?, |x, y| activate(x + y, act))?)
    }

    fn scale(&self, a: &Storage, alpha: f32) -> Result<Storage> {
        store(map(data(a)?, |v| v * alpha)?)
    }

    fn activation(&self, x: &Storage, act: Activation) -> Result<Storage> {
        store(map(data(x)?, |v| activate(v, act))?)
    }

    fn activation_backward(&self, y: &Storage, gy: &Storage, act: Activation) -> Result<Storage> {
        store(zip_map(data(y)?, data(gy)?, |y, g| activate_grad(y, g, act))?)
    }

    fn conv2d(&self, x: &Storage, w: &Storage, bias: Option<&Storage>, g: &ConvGeometry) -> Result<Storage> {
        self.conv2d_fused(x, w, bias, None, None, g)
    }

    fn conv2d_fused(
        &self,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
        residual: Option<&Storage>,
        act: Option<Activation>,
        g: &ConvGeometry,
    ) -> Result<Storage> {
        fp32_only(g.precision)?;
        let epilogue = conv::Epilogue {
            bias: bias.map(data).transpose()?,
            residual: residual.map(data).transpose()?,
            act,
        };
        g.check_epilogue(epilogue.bias.map(<[f32]>::len), epilogue.residual.map(<[f32]>::len))?;
        store(conv::forward(data(x)?, data(w)?, &epilogue, g)?)
    }

    fn conv2d_backward_data(&self, gy: &Storage, w: &Storage, g: &ConvGeometry) -> Result<Storage> {
        fp32_only(g.precision)?;
        store(conv::backward_data(data(gy)?, data(w)?, g)?)
    }

    fn conv2d_backward_weight(&self, x: &Storage, gy: &Storage, g: &ConvGeometry) -> Result<Storage> {
        fp32_only(g.precision)?;
        store(conv::backward_weight(data(x)?, data(gy)?, g)?)
    }

    fn sum_nhw(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        let &ChannelLayout { n, c, hw } = layout;
        let gy = data(gy)?;
        store(
            (0..c)
                .map(|ch| {
                    (0..n)
                        .map(|i| gy[(i * c + ch) * hw..][..hw].iter().map(|&v| v as f64).sum::<f64>())
                        .sum::<f64>() as f32
                })
                .collect::<Vec<f32>>(),
        )
    }

    fn batch_norm_train(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
    ) -> Result<(Storage, BatchStats)> {
        batch_norm_train(x, (gamma, beta), layout, eps, None)
    }

    fn batch_norm_frozen_stats(&self, running_mean: &Storage, running_var: &Storage, eps: f32) -> Result<BatchStats> {
        let var = data(running_var)?;
        Ok(BatchStats {
            mean: running_mean.clone(),
            var: running_var.clone(),
            invstd: store(norm::invstd(var, eps))?,
        })
    }

    fn batch_norm_apply(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
    ) -> Result<Storage> {
        batch_norm_apply(x, (gamma, beta), stats, layout, None)
    }

    fn batch_norm_train_act(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
        residual: Option<&Storage>,
        act: Activation,
    ) -> Result<(Storage, BatchStats)> {
        batch_norm_train(x, (gamma, beta), layout, eps, Some((residual, act)))
    }

    fn batch_norm_apply_act(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
        residual: Option<&Storage>,
        act: Activation,
    ) -> Result<Storage> {
        batch_norm_apply(x, (gamma, beta), stats, layout, Some((residual, act)))
    }

    fn batch_norm_act_backward(
        &self,
        x: &Storage,
        out: &Storage,
        gy: &Storage,
        gamma: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
        source: StatsSource,
        act: Activation,
    ) -> Result<(Storage, Storage, Storage)> {
        batch_norm_backward(x, gy, gamma, stats, (layout, source), Some((out, act)))
    }

    fn batch_norm_backward(
        &self,
        x: &Storage,
        gy: &Storage,
        gamma: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
        source: StatsSource,
    ) -> Result<(Storage, Storage, Storage)> {
        batch_norm_backward(x, gy, gamma, stats, (layout, source), None)
    }

    fn update_running_stats(
        &self,
        running_mean: &mut Storage,
        running_var: &mut Storage,
        stats: &BatchStats,
        update: &RunningStatsUpdate,
    ) -> Result<()> {
        let &RunningStatsUpdate { momentum, count } = update;
        let unbias = count as f32 / (count.max(2) - 1) as f32;
        for (r, &m) in data_mut(running_mean)?.iter_mut().zip(data(&stats.mean)?) {
            *r = (1.0 - momentum) * *r + momentum * m;
        }
        for (r, &v) in data_mut(running_var)?.iter_mut().zip(data(&stats.var)?) {
            *r = (1.0 - momentum) * *r + momentum * v * unbias;
        }
        Ok(())
    }

    fn max_pool2d(&self, x: &Storage, g: &PoolGeometry) -> Result<Storage> {
        store(pool::max_pool2d(data(x)?, g)?)
    }

    fn max_pool2d_backward(&self, x: &Storage, gy: &Storage, g: &PoolGeometry) -> Result<Storage> {
        store(pool::max_pool2d_backward(data(x)?, data(gy)?, g)?)
    }

    fn global_avg_pool(&self, x: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        store(pool::global_avg_pool(data(x)?, layout.hw)?)
    }

    fn global_avg_pool_backward(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        store(pool::global_avg_pool_backward(data(gy)?, layout.hw)?)
    }

    fn matmul(&self, a: &Storage, b: &Storage, g: &MatmulGeometry) -> Result<Storage> {
        let &MatmulGeometry {
            m,
            k,
            n,
            transpose_a,
            transpose_b,
            precision,
        } = g;
        fp32_only(precision)?;
        let (a, b) = (data(a)?, data(b)?);
        let av = if transpose_a {
            MatView::transposed(a, m, k)
        } else {
            MatView::new(a, m, k)
        };
        let bv = if transpose_b {
            MatView::transposed(b, k, n)
        } else {
            MatView::new(b, k, n)
        };
        let mut c = CpuBuffer::try_uninit(m * n)?;
        gemm::gemm(&mut c, av, bv, false, Threads::All);
        store(c)
    }

    fn add_row_bias(&self, x: &Storage, bias: &Storage) -> Result<Storage> {
        let b = data(bias)?;
        let mut y = CpuBuffer::try_from_slice(data(x)?)?;
        y.chunks_mut(b.len().max(1))
            .for_each(|row| row.iter_mut().zip(b).for_each(|(v, &bi)| *v += bi));
        store(y)
    }

    fn sum_rows(&self, x: &Storage, layout: &RowLayout) -> Result<Storage> {
        let view =
            ArrayView2::from_shape((layout.rows, layout.cols), data(x)?).map_err(|e| Error::Internal(e.to_string()))?;
        store(view.sum_axis(Axis(0)).to_vec())
    }

    fn cross_entropy(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout) -> Result<(Storage, Storage)> {
        let (losses, probs) = loss::cross_entropy(data(logits)?, data(labels)?, layout.classes)?;
        Ok((store(losses)?, store(probs)?))
    }

    fn cross_entropy_backward(
        &self,
        probs: &Storage,
        labels: &Storage,
        upstream: &Storage,
        layout: &LogitsLayout,
        scale: f32,
    ) -> Result<Storage> {
        let up = data(upstream)?.first().copied().unwrap_or(1.0);
        store(loss::cross_entropy_backward(
            data(probs)?,
            data(labels)?,
            layout.classes,
            scale * up,
        )?)
    }

    fn topk_correct(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout, k: usize) -> Result<Storage> {
        store(loss::topk_correct(data(logits)?, data(labels)?, layout.classes, k)?)
    }

    fn sum_all(&self, x: &Storage) -> Result<Storage> {
        store(vec![data(x)?.iter().map(|&v| v as f64).sum::<f64>() as f32])
    }

    fn nonfinite_check(&self, tensors: &[Storage]) -> Result<Storage> {
        let mut first = None;
        for t in tensors {
            first = data(t)?.iter().copied().find(|v| !v.is_finite());
            if first.is_some() {
                break;
            }
        }
        store(vec![first.unwrap_or(0.0)])
    }

    fn shortcut_a(&self, x: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        store(shortcut::forward(data(x)?, g)?)
    }

    fn shortcut_a_backward(&self, gy: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        store(shortcut::backward(data(gy)?, g)?)
    }

    fn sgd_update(&self, param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, s: &SgdStep) -> Result<()> {
        sgd(param, grad, momentum_buf, s)
    }

    fn sgd_update_gated(
        &self,
        param: &mut Storage,
        grad: &Storage,
        momentum_buf: &mut Storage,
        s: &SgdStep,
        gate: &ScalerGate,
    ) -> Result<()> {
        if !data(gate.check)?[0].is_finite() {
            return Ok(());
        }
        let (state, lrs) = (data(gate.state)?, data(gate.lrs)?);
        let lr = *lrs
            .get(state[2] as usize)
            .ok_or_else(|| Error::Internal(format!("sgd: {} applied steps, {} rates", state[2], lrs.len())))?;
        let step = SgdStep {
            lr,
            grad_scale: state[0],
            ..*s
        };
        sgd(param, grad, momentum_buf, &step)
    }

    fn loss_scale_update(
        &self,
        scale: &mut Storage,
        state: &mut Storage,
        check: &Storage,
        rule: &ScaleRule,
    ) -> Result<()> {
        let finite = data(check)?[0].is_finite();
        let scale = data_mut(scale)?;
        let state = data_mut(state)?;
        let (s, inv, clean, applied) = super::scaled_step(scale[0], state[0], state[1], state[2], finite, rule);
        scale[0] = s;
        state.copy_from_slice(&[inv, clean, applied]);
        Ok(())
    }
}

/// PyTorch's SGD, term for term (dampening 0), in place.
fn sgd(param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, s: &SgdStep) -> Result<()> {
    let g = data(grad)?;
    let p = data_mut(param)?;
    let buf = data_mut(momentum_buf)?;
    if p.len() != g.len() || buf.len() != p.len() {
        return Err(Error::Internal(format!(
            "sgd: param {} grad {} momentum {}",
            p.len(),
            g.len(),
            buf.len()
        )));
    }
    let step = |(pv, (&gv, bv)): (&mut f32, (&f32, &mut f32))| {
        let gv = if s.grad_scale == 1.0 { gv } else { gv * s.grad_scale };
        let d = gv + s.weight_decay * *pv;
        if s.momentum != 0.0 {
            *bv = if s.first_step { d } else { s.momentum * *bv + d };
            let upd = if s.nesterov { d + s.momentum * *bv } else { *bv };
            *pv -= s.lr * upd;
        } else {
            *pv -= s.lr * d;
        }
    };
    if p.len() >= PAR_THRESHOLD {
        p.par_iter_mut()
            .zip(g.par_iter().zip(buf.par_iter_mut()))
            .for_each(step);
    } else {
        p.iter_mut().zip(g.iter().zip(buf.iter_mut())).for_each(step);
    }
    Ok(())
}
