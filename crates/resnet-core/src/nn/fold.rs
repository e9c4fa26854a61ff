//! The inference path: a convolution, the batch norm after it (running statistics), the
//! activation and the residual addition as one backend call, `conv2d_fused`. In eval mode batch
//! norm is an affine map per output channel, so it folds into the convolution:
//!
//! ```text
//! bn(conv(x, W)) = conv(x, W') + b',  W'[o] = W[o] * s[o],  b'[o] = beta[o] + (bias[o] - mean[o]) * s[o],
//! s[o] = gamma[o] / sqrt(var[o] + eps)
//! ```
//!
//! computed in f64 on the host and cached on the convolution until any source tensor changes
//! (their versions, see `Tensor::version`: optimiser steps, running-statistics updates, loading
//! a checkpoint, a custom loop's SGD over a parameter). Device-independent: a backend only sees a
//! convolution with a bias and an epilogue.
//!
//! Only the original ordering (conv-BN-act) folds. A pre-activation net's batch norm comes before
//! its convolution, with the activation in between (and zero padding after it), so it has no
//! affine map to fold into the weights: those nets keep the recorded path (see `nn::blocks`).

use super::layers::{BatchNorm2d, Conv2d, BN_EPS};
use crate::backend::{same_device, Activation, Storage};
use crate::error::{Error, Result};
use crate::memory::try_vec;
use crate::tensor::Tensor;
use std::sync::Mutex;

/// A convolution's folded weight and bias, with the versions of what they were folded from.
struct Folded {
    key: Vec<(usize, u64)>,
    weight: Storage,
    bias: Storage,
}

/// Held by each `Conv2d`: its weights with the following batch norm folded in, once computed.
#[derive(Default)]
pub struct FoldCache(Mutex<Option<Folded>>);

/// Identity and version of each tensor, read before their values: a change racing with the fold
/// leaves a key that no longer matches, so the next call folds again.
fn key_of(tensors: &[&Tensor]) -> Vec<(usize, u64)> {
    tensors.iter().map(|t| (t.id(), t.version())).collect()
}

fn sources<'a>(conv: &'a Conv2d, bn: &'a BatchNorm2d) -> Vec<&'a Tensor> {
    let mut s = vec![&conv.weight, &bn.weight, &bn.bias, &bn.running_mean, &bn.running_var];
    s.extend(conv.bias.as_ref());
    s
}

/// W' and b' (see the module's documentation), each product and sum in f64.
fn fold(conv: &Conv2d, bn: &BatchNorm2d) -> Result<(Storage, Storage)> {
    let c_out = conv.weight.shape()[0];
    if bn.channels() != c_out {
        return Err(Error::shape(
            "batch norm folding",
            format!(
                "a batch norm over {} channels after a convolution with {c_out} outputs",
                bn.channels()
            ),
        ));
    }
    let storages: Vec<Storage> = sources(conv, bn).iter().map(|t| t.storage()).collect();
    let refs: Vec<&Storage> = storages.iter().collect();
    let be = same_device("batch norm folding", &refs)?.backend();
    let host = be.download_many(&refs)?;
    let [w, gamma, beta, mean, var] = [&host[0], &host[1], &host[2], &host[3], &host[4]];
    let conv_bias = host.get(5);
    let per_output = w.len() / c_out.max(1);
    let mut folded_w = try_vec(w.len(), 0.0f32, "folded convolution weights")?;
    let mut folded_b = try_vec(c_out, 0.0f32, "a folded convolution bias")?;
    for o in 0..c_out {
        let s = gamma[o] as f64 / (var[o] as f64 + BN_EPS as f64).sqrt();
        let rows = o * per_output..(o + 1) * per_output;
        for (d, &v) in folded_w[rows.clone()].iter_mut().zip(&w[rows]) {
            *d = (v as f64 * s) as f32;
        }
        let b = conv_bias.map_or(0.0, |b| b[o] as f64);
        folded_b[o] = (beta[o] as f64 + (b - mean[o] as f64) * s) as f32;
    }
    Ok((be.upload(&folded_w)?, be.upload(&folded_b)?))
}

impl FoldCache {
    /// `conv`'s weight and bias with `bn` folded in: from the cache while every source tensor is
    /// unchanged, else folded now (and cached).
    fn get(&self, conv: &Conv2d, bn: &BatchNorm2d) -> Result<(Storage, Storage)> {
        let key = key_of(&sources(conv, bn));
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = slot.as_ref().filter(|f| f.key == key) {
            return Ok((f.weight.clone(), f.bias.clone()));
        }
        // The stale copy goes before the new one is made: both need not be held at once.
        *slot = None;
        let (weight, bias) = fold(conv, bn)?;
        *slot = Some(Folded {
            key,
            weight: weight.clone(),
            bias: bias.clone(),
        });
        Ok((weight, bias))
    }

    /// Frees the folded copy. A training step calls this before its forward pass, which makes
    /// the copy stale anyway (running statistics, then weights): otherwise the copy an
    /// evaluation made (a second set of convolution weights) would be held through that step's
    /// peak, and through the whole next epoch.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// `act(bn(conv(x)) [+ residual])` with batch norm's running statistics, as one backend call and
/// not recorded for autograd (callers check `Ctx::inference` first). Without `bn` the
/// convolution's own weight and bias are used; without `act` nothing follows the sum.
pub fn conv_bn_act(
    conv: &Conv2d,
    bn: Option<&BatchNorm2d>,
    x: &Tensor,
    residual: Option<&Tensor>,
    act: Option<Activation>,
) -> Result<Tensor> {
    let g = conv.geometry(x.shape())?.with_precision(crate::precision::current());
    if let Some(r) = residual {
        if r.shape() != g.out_shape() {
            return Err(Error::shape(
                "conv2d_fused",
                format!(
                    "the residual {:?} must have the convolution's output shape {:?}",
                    r.shape(),
                    g.out_shape()
                ),
            ));
        }
    }
    let (w, b) = match bn {
        Some(bn) => {
            let (w, b) = conv.fold_cache().get(conv, bn)?;
            (w, Some(b))
        }
        None => (conv.weight.storage(), conv.bias.as_ref().map(Tensor::storage)),
    };
    let xs = x.storage();
    let rs = residual.map(Tensor::storage);
    let mut all = vec![&xs, &w];
    all.extend(b.iter().chain(rs.iter()));
    let be = same_device("conv2d", &all)?.backend();
    let y = be.conv2d_fused(&xs, &w, b.as_ref(), rs.as_ref(), act, &g)?;
    Tensor::from_storage(y, &g.out_shape())
}
