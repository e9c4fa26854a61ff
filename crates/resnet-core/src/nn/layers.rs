//! The parameterised layers: Conv2d, BatchNorm2d, Linear. Each owns its tensors and lists them
//! under torchvision's names.

use super::fold::{self as fold_bn, FoldCache};
use super::init::Init;
use super::{Ctx, Entry, Visitor};
use crate::backend::{Activation, ConvGeometry, Device};
use crate::error::Result;
use crate::fused::{self, PreActivationTap};
use crate::ops::{self, BatchNormArgs};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub padding: usize,
    /// The weights with the following batch norm folded in, for the inference path.
    folded: FoldCache,
}

impl Conv2d {
    /// Bias-free, He-initialised. A batch norm follows (or precedes) every convolution in the
    /// usual nets; the nets without batch norm (`ResNetSpec::batch_norm` false) keep the
    /// convolutions bias-free too, for simplicity: they serve to measure gradients at
    /// initialisation, where a zero bias changes nothing.
    pub fn new(
        init: &mut Init,
        device: Device,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let w = init.kaiming_normal_fan_out(c_out, c_in, kernel, kernel)?;
        Ok(Conv2d {
            weight: Tensor::parameter(&w, &[c_out, c_in, kernel, kernel], device)?,
            bias: None,
            stride,
            padding,
            folded: FoldCache::default(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.bias.as_ref(), self.stride, self.padding)
    }

    /// `act(bn(conv(x)) [+ residual])` on the inference path (see `nn::fold`): batch norm (eval)
    /// folded into this convolution, everything after it in the convolution's epilogue.
    pub fn forward_inference(
        &self,
        x: &Tensor,
        bn: Option<&BatchNorm2d>,
        residual: Option<&Tensor>,
        act: Option<Activation>,
    ) -> Result<Tensor> {
        fold_bn::conv_bn_act(self, bn, x, residual, act)
    }

    pub(super) fn fold_cache(&self) -> &FoldCache {
        &self.folded
    }

    /// The kernel's (square) size: 1, 3 or 7.
    pub fn kernel(&self) -> usize {
        self.weight.shape()[2]
    }

    pub fn geometry(&self, input: &[usize]) -> Result<ConvGeometry> {
        ConvGeometry::new(input, self.weight.shape(), self.stride, self.padding)
    }

    pub fn visit(&self, prefix: &str, v: &mut Visitor) {
        v(format!("{prefix}weight"), Entry::Param(&self.weight));
        if let Some(b) = &self.bias {
            v(format!("{prefix}bias"), Entry::Param(b));
        }
    }
}

pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: AtomicU64,
}

pub const BN_MOMENTUM: f32 = 0.1;
pub const BN_EPS: f32 = 1e-5;

impl BatchNorm2d {
    /// gamma 1, beta 0 (the paper), running statistics of a unit normal.
    pub fn new(device: Device, c: usize) -> Result<Self> {
        let (ones, zeros) = (vec![1.0; c], vec![0.0; c]);
        Ok(BatchNorm2d {
            weight: Tensor::parameter(&ones, &[c], device)?,
            bias: Tensor::parameter(&zeros, &[c], device)?,
            running_mean: Tensor::from_vec(&zeros, &[c], device)?,
            running_var: Tensor::from_vec(&ones, &[c], device)?,
            num_batches_tracked: AtomicU64::new(0),
        })
    }

    pub fn channels(&self) -> usize {
        self.weight.numel()
    }

    /// Runs `f` with this layer's arguments in `ctx`'s mode, and counts the batch where the
    /// mode lets it change the running statistics.
    fn with_args<R>(&self, ctx: &Ctx, f: impl FnOnce(&BatchNormArgs) -> Result<R>) -> Result<R> {
        let y = f(&BatchNormArgs {
            gamma: &self.weight,
            beta: &self.bias,
            running_mean: &self.running_mean,
            running_var: &self.running_var,
            mode: ctx.bn_mode,
            sync: ctx.batch_norm_sync,
            momentum: BN_MOMENTUM,
            eps: BN_EPS,
        })?;
        if ctx.bn_mode.updates_running_stats() {
            self.num_batches_tracked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(y)
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.with_args(ctx, |a| ops::batch_norm2d(x, a))
    }

    /// `act(bn(x) [+ residual])`, fused so the tape keeps no batch-norm output; `tap` sees the
    /// batch-norm output (see [`fused::batch_norm_act`]).
    pub fn forward_act(
        &self,
        x: &Tensor,
        ctx: &Ctx,
        residual: Option<&Tensor>,
        act: Activation,
        tap: Option<PreActivationTap>,
    ) -> Result<Tensor> {
        self.with_args(ctx, |a| fused::batch_norm_act(x, a, residual, act, tap))
    }

    pub fn visit(&self, prefix: &str, v: &mut Visitor) {
        v(format!("{prefix}weight"), Entry::Param(&self.weight));
        v(format!("{prefix}bias"), Entry::Param(&self.bias));
        v(format!("{prefix}running_mean"), Entry::Buffer(&self.running_mean));
        v(format!("{prefix}running_var"), Entry::Buffer(&self.running_var));
        v(
            format!("{prefix}num_batches_tracked"),
            Entry::Counter(&self.num_batches_tracked),
        );
    }
}

pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(init: &mut Init, device: Device, c_in: usize, c_out: usize) -> Result<Self> {
        let w = init.uniform_fan_in(c_out * c_in, c_in)?;
        let b = init.uniform_fan_in(c_out, c_in)?;
        Ok(Linear {
            weight: Tensor::parameter(&w, &[c_out, c_in], device)?,
            bias: Tensor::parameter(&b, &[c_out], device)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, Some(&self.bias))
    }

    pub fn visit(&self, prefix: &str, v: &mut Visitor) {
        v(format!("{prefix}weight"), Entry::Param(&self.weight));
        v(format!("{prefix}bias"), Entry::Param(&self.bias));
    }
}
