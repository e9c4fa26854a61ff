//! Residual blocks: BasicBlock (two 3x3) and Bottleneck (1x1-3x3-1x1, 4x expansion), each with
//! its shortcut (option A, B or C, or none for the plain nets), in the original ordering of He et
//! al. 2015 (conv-BN-act, activation after the addition) or the pre-activation ordering of He et
//! al. 2016 (BN-act-conv, nothing after the addition).
//!
//! # The pre-activation layout
//!
//! He, Zhang, Ren, Sun, *Identity Mappings in Deep Residual Networks* (ECCV 2016), Fig. 1(b) and
//! Fig. 4(e), as in the authors' code (github.com/KaimingHe/resnet-1k-layers, `resnet-pre-act.lua`)
//! and fb.resnet.torch's `preresnet.lua`. With `h = act(bn1(x))`:
//!
//! ```text
//! basic:       out = conv2(act(bn2(conv1(h))))                      + shortcut
//! bottleneck:  out = conv3(act(bn3(conv2(act(bn2(conv1(h)))))))     + shortcut
//! shortcut:    x                  identity (options A and B where the shape is kept)
//!              shortcut_a(h)      option A where the shape changes (subsample, zero-pad)
//!              downsample.0(h)    1x1 convolution, no batch norm (option B where the shape
//!                                 changes; option C everywhere)
//!              none               plain nets
//! ```
//!
//! A shortcut that changes the shape takes the pre-activated input `h` (the authors' code: "common
//! BN, ReLU" for the units that increase dimensions); an identity takes `x` itself, so the
//! identity path from the first to the last unit carries no nonlinearity. Nothing follows the
//! addition. The network around the blocks (see `resnet.rs`): a CIFAR stem is a bare 3x3
//! convolution (the first block's `bn1` + act normalises it); an ImageNet stem keeps conv-BN-act
//! and max pool, and the first block after it has no `bn1` (fb.resnet.torch's `no_preact`: its
//! input is already normalised and activated, so `h = x`); after the last stage come `bn_final`
//! and the activation, then global pooling.
//!
//! State-dict names: `layerI.J.bnK` normalises the input of `layerI.J.convK` (so `bn1` has the
//! block's input channels), the projection is `layerI.J.downsample.0` (no `downsample.1`), the
//! final batch norm `bn_final`. A CIFAR pre-activation net has no top-level `bn1`.
//!
//! # Without batch norm
//!
//! With `ResNetSpec::batch_norm` false (the vanishing-gradient experiments) every batch norm is
//! left out and nothing else changes: the original block is conv-act, ..., conv, + shortcut, act;
//! the pre-activation block is act-conv, ... (the first block after an ImageNet stem has no
//! activation before its first convolution, as it has no `bn1`); projections are the bare 1x1
//! convolution. The state dict has no `bn` or `downsample.1` names.

use super::init::Init;
use super::layers::{BatchNorm2d, Conv2d};
use super::spec::{BlockKind, BottleneckStride, ShortcutOption};
use super::{Ctx, Visitor};
use crate::backend::{Activation, Device};
use crate::error::Result;
use crate::fused;
use crate::ops;
use crate::tensor::Tensor;

pub const BOTTLENECK_EXPANSION: usize = 4;

pub enum Shortcut {
    /// Plain nets: no shortcut at all.
    None,
    Identity,
    /// Option A: subsample and zero-pad channels, no parameters.
    ZeroPad {
        c_out: usize,
        stride: usize,
    },
    /// Options B/C: 1x1 convolution, torchvision's `downsample.0`, and (original nets with batch
    /// norm only) batch norm, `downsample.1`.
    Projection {
        conv: Conv2d,
        bn: Option<BatchNorm2d>,
    },
}

struct ShortcutConfig {
    option: ShortcutOption,
    plain: bool,
    pre_activation: bool,
    batch_norm: bool,
    c_in: usize,
    c_out: usize,
    stride: usize,
}

impl Shortcut {
    fn new(init: &mut Init, device: Device, cfg: &ShortcutConfig) -> Result<Self> {
        let changes = cfg.stride != 1 || cfg.c_in != cfg.c_out;
        Ok(match (cfg.plain, cfg.option, changes) {
            (true, _, _) => Shortcut::None,
            (false, ShortcutOption::A, true) => Shortcut::ZeroPad {
                c_out: cfg.c_out,
                stride: cfg.stride,
            },
            (false, ShortcutOption::C, _) | (false, ShortcutOption::B, true) => Shortcut::Projection {
                conv: Conv2d::new(init, device, cfg.c_in, cfg.c_out, 1, cfg.stride, 0)?,
                bn: if cfg.pre_activation || !cfg.batch_norm {
                    None
                } else {
                    Some(BatchNorm2d::new(device, cfg.c_out)?)
                },
            },
            (false, _, false) => Shortcut::Identity,
        })
    }

    /// `x` is the block's input, `h` its pre-activated input (pre-activation nets; else `x`).
    fn forward(&self, x: &Tensor, h: &Tensor, ctx: &Ctx) -> Result<Option<Tensor>> {
        Ok(match self {
            Shortcut::None => None,
            Shortcut::Identity => Some(x.clone()),
            Shortcut::ZeroPad { c_out, stride } => Some(ops::shortcut_a(h, *c_out, *stride)?),
            Shortcut::Projection { conv, bn } if ctx.inference() => {
                Some(conv.forward_inference(h, bn.as_ref(), None, None)?)
            }
            Shortcut::Projection { conv, bn } => {
                let z = conv.forward(h)?;
                Some(match bn {
                    Some(bn) => bn.forward(&z, ctx)?,
                    None => z,
                })
            }
        })
    }

    /// Reports a projection's output (`forward`'s) as the response of `{block}.downsample.0`.
    /// Separate from `forward` because the branch's last response is reported first, and the
    /// fused join needs the shortcut before it can report that.
    fn report(&self, out: Option<&Tensor>, ctx: &Ctx, block: &str) {
        if let (Shortcut::Projection { conv, .. }, Some(out)) = (self, out) {
            ctx.report(|| format!("{block}.downsample.0"), conv.kernel(), out);
        }
    }

    fn for_each_conv(&self, f: &mut dyn FnMut(&Conv2d)) {
        if let Shortcut::Projection { conv, .. } = self {
            f(conv);
        }
    }

    fn visit(&self, prefix: &str, v: &mut Visitor) {
        if let Shortcut::Projection { conv, bn } = self {
            conv.visit(&format!("{prefix}downsample.0."), v);
            if let Some(bn) = bn {
                bn.visit(&format!("{prefix}downsample.1."), v);
            }
        }
    }
}

/// One convolution of a block and its batch norm: after the convolution in the original nets,
/// before it in the pre-activation nets (where the first block after an ImageNet stem has none
/// before its first convolution); none at all in nets without batch norm.
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: Option<BatchNorm2d>,
    /// Pre-activation nets: the activation (after `bn`, where there is one) comes before the
    /// convolution; false for the first convolution after an ImageNet stem and in original nets.
    pub act_before: bool,
}

/// conv-bn pairs in order, then the shortcut; the last pair's output joins the shortcut.
pub struct Block {
    pub kind: BlockKind,
    /// torchvision's prefix, `layer1.0`: names the responses reported to `Ctx::response_hook`.
    pub name: String,
    pub pre_activation: bool,
    pub convs: Vec<ConvBn>,
    pub shortcut: Shortcut,
    pub act: Activation,
    pub c_out: usize,
}

pub struct BlockConfig {
    pub name: String,
    pub kind: BlockKind,
    pub c_in: usize,
    pub width: usize,
    pub stride: usize,
    pub shortcut: ShortcutOption,
    pub plain: bool,
    pub bottleneck_stride: BottleneckStride,
    pub act: Activation,
    pub pre_activation: bool,
    /// False: no batch norm anywhere in the block (see the module's documentation).
    pub batch_norm: bool,
    /// Pre-activation only: no `bn1` and no activation before `conv1` (the input is already
    /// normalised and activated: the first block after an ImageNet stem).
    pub skip_first_bn: bool,
}

impl Block {
    pub fn new(init: &mut Init, device: Device, cfg: &BlockConfig) -> Result<Self> {
        let w = cfg.width;
        // (c_in, c_out, kernel, stride, padding) of each convolution.
        let layout: Vec<(usize, usize, usize, usize, usize)> = match cfg.kind {
            BlockKind::Basic => vec![(cfg.c_in, w, 3, cfg.stride, 1), (w, w, 3, 1, 1)],
            BlockKind::Bottleneck => {
                let (s1, s3) = match cfg.bottleneck_stride {
                    BottleneckStride::Conv1x1 => (cfg.stride, 1),
                    BottleneckStride::Conv3x3 => (1, cfg.stride),
                };
                vec![
                    (cfg.c_in, w, 1, s1, 0),
                    (w, w, 3, s3, 1),
                    (w, w * BOTTLENECK_EXPANSION, 1, 1, 0),
                ]
            }
        };
        let c_out = layout.last().map(|l| l.1).unwrap_or(w);
        let mut convs = Vec::new();
        for (i, &(ci, co, k, s, p)) in layout.iter().enumerate() {
            let conv = Conv2d::new(init, device, ci, co, k, s, p)?;
            let act_before = cfg.pre_activation && !(i == 0 && cfg.skip_first_bn);
            let bn = match (cfg.batch_norm, cfg.pre_activation, act_before) {
                (false, _, _) => None,
                (true, false, _) => Some(BatchNorm2d::new(device, co)?),
                (true, true, true) => Some(BatchNorm2d::new(device, ci)?),
                (true, true, false) => None,
            };
            convs.push(ConvBn { conv, bn, act_before });
        }
        let shortcut = Shortcut::new(
            init,
            device,
            &ShortcutConfig {
                option: cfg.shortcut,
                plain: cfg.plain,
                pre_activation: cfg.pre_activation,
                batch_norm: cfg.batch_norm,
                c_in: cfg.c_in,
                c_out,
                stride: cfg.stride,
            },
        )?;
        Ok(Block {
            kind: cfg.kind,
            name: cfg.name.clone(),
            pre_activation: cfg.pre_activation,
            convs,
            shortcut,
            act: cfg.act,
            c_out,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        if self.pre_activation {
            self.forward_pre_activation(x, ctx)
        } else {
            self.forward_original(x, ctx)
        }
    }

    fn conv_name(&self, i: usize) -> String {
        format!("{}.conv{}", self.name, i + 1)
    }

    /// conv-BN-act ..., conv-BN, + shortcut, act (without batch norm: conv-act ..., conv, +
    /// shortcut, act).
    fn forward_original(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let missing = || crate::Error::Internal("a block without convolutions".into());
        let (last, inner) = self.convs.split_last().ok_or_else(missing)?;
        if ctx.inference() {
            return self.forward_inference(x, inner, last, ctx);
        }
        let mut y = x.clone();
        for (i, conv_bn) in inner.iter().enumerate() {
            let z = conv_bn.conv.forward(&y)?;
            y = self.bn_act(i, conv_bn, &z, None, ctx)?;
        }
        let z = last.conv.forward(&y)?;
        let shortcut = self.shortcut.forward(x, x, ctx)?;
        let out = self.bn_act(inner.len(), last, &z, shortcut.as_ref(), ctx)?;
        self.shortcut.report(shortcut.as_ref(), ctx, &self.name);
        Ok(out)
    }

    /// `forward_original` on the inference path (`nn::fold`): each conv-BN-act, and the last
    /// conv-BN with the join, one backend call; no response is reported (there is no hook).
    fn forward_inference(&self, x: &Tensor, inner: &[ConvBn], last: &ConvBn, ctx: &Ctx) -> Result<Tensor> {
        let mut y = x.clone();
        for ConvBn { conv, bn, .. } in inner {
            y = conv.forward_inference(&y, bn.as_ref(), None, Some(self.act))?;
        }
        let shortcut = self.shortcut.forward(x, x, ctx)?;
        last.conv
            .forward_inference(&y, last.bn.as_ref(), shortcut.as_ref(), Some(self.act))
    }

    /// `act(bn(z) [+ residual])` after convolution `i` of an original block (`act(z [+
    /// residual])` without batch norm), reporting the response before the addition and the
    /// activation as that convolution's.
    fn bn_act(&self, i: usize, conv_bn: &ConvBn, z: &Tensor, residual: Option<&Tensor>, ctx: &Ctx) -> Result<Tensor> {
        let report = |r: &Tensor| ctx.report(|| self.conv_name(i), conv_bn.conv.kernel(), r);
        match (&conv_bn.bn, residual) {
            (Some(bn), _) => bn.forward_act(z, ctx, residual, self.act, ctx.tap(&report)),
            (None, Some(s)) => {
                report(z);
                fused::add_activation(z, s, self.act)
            }
            (None, None) => {
                report(z);
                ops::activation(z, self.act)
            }
        }
    }

    /// BN-act-conv, ..., + shortcut (without batch norm: act-conv, ...; see the module's
    /// documentation). Also the inference path: batch norm before a convolution, with the
    /// activation between them, does not fold into it (see `nn::fold`).
    fn forward_pre_activation(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let mut h = None;
        let mut y = x.clone();
        for (i, ConvBn { conv, bn, act_before }) in self.convs.iter().enumerate() {
            if *act_before {
                y = match bn {
                    Some(bn) => bn.forward_act(&y, ctx, None, self.act, None)?,
                    None => ops::activation(&y, self.act)?,
                };
            }
            if i == 0 {
                h = Some(y.clone());
            }
            y = conv.forward(&y)?;
            ctx.report(|| self.conv_name(i), conv.kernel(), &y);
        }
        let h = h.ok_or_else(|| crate::Error::Internal("a block without convolutions".into()))?;
        let shortcut = self.shortcut.forward(x, &h, ctx)?;
        self.shortcut.report(shortcut.as_ref(), ctx, &self.name);
        match shortcut {
            Some(s) => ops::add(&y, &s),
            None => Ok(y),
        }
    }

    pub fn for_each_conv(&self, f: &mut dyn FnMut(&Conv2d)) {
        self.convs.iter().for_each(|c| f(&c.conv));
        self.shortcut.for_each_conv(f);
    }

    pub fn visit(&self, prefix: &str, v: &mut Visitor) {
        for (i, ConvBn { conv, bn, .. }) in self.convs.iter().enumerate() {
            let bn_name = format!("{prefix}bn{}.", i + 1);
            if self.pre_activation {
                if let Some(bn) = bn {
                    bn.visit(&bn_name, v);
                }
                conv.visit(&format!("{prefix}conv{}.", i + 1), v);
            } else {
                conv.visit(&format!("{prefix}conv{}.", i + 1), v);
                if let Some(bn) = bn {
                    bn.visit(&bn_name, v);
                }
            }
        }
        self.shortcut.visit(prefix, v);
    }
}
