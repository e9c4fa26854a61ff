//! Residual blocks: BasicBlock (two 3x3) and Bottleneck (1x1-3x3-1x1, 4x expansion), each with
//! its shortcut (option A, B or C, or none for the plain nets).

use super::init::Init;
use super::layers::{BatchNorm2d, Conv2d};
use super::spec::{BlockKind, BottleneckStride, ShortcutOption};
use super::{Ctx, Visitor};
use crate::backend::{Activation, Device};
use crate::error::Result;
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
    /// Options B/C: 1x1 convolution and batch norm, torchvision's `downsample.0`/`downsample.1`.
    Projection {
        conv: Conv2d,
        bn: BatchNorm2d,
    },
}

impl Shortcut {
    fn new(
        init: &mut Init,
        device: Device,
        option: ShortcutOption,
        plain: bool,
        c_in: usize,
        c_out: usize,
        stride: usize,
    ) -> Result<Self> {
        let changes = stride != 1 || c_in != c_out;
        Ok(match (plain, option, changes) {
            (true, _, _) => Shortcut::None,
            (false, ShortcutOption::A, true) => Shortcut::ZeroPad { c_out, stride },
            (false, ShortcutOption::C, _) | (false, ShortcutOption::B, true) => Shortcut::Projection {
                conv: Conv2d::new(init, device, c_in, c_out, 1, stride, 0)?,
                bn: BatchNorm2d::new(device, c_out)?,
            },
            (false, _, false) => Shortcut::Identity,
        })
    }

    fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Option<Tensor>> {
        Ok(match self {
            Shortcut::None => None,
            Shortcut::Identity => Some(x.clone()),
            Shortcut::ZeroPad { c_out, stride } => Some(ops::shortcut_a(x, *c_out, *stride)?),
            Shortcut::Projection { conv, bn } => Some(bn.forward(&conv.forward(x)?, ctx)?),
        })
    }

    fn visit(&self, prefix: &str, v: &mut Visitor) {
        if let Shortcut::Projection { conv, bn } = self {
            conv.visit(&format!("{prefix}downsample.0."), v);
            bn.visit(&format!("{prefix}downsample.1."), v);
        }
    }
}

/// conv-bn pairs in order, then the shortcut; the last pair's output joins the shortcut.
pub struct Block {
    pub kind: BlockKind,
    pub convs: Vec<(Conv2d, BatchNorm2d)>,
    pub shortcut: Shortcut,
    pub act: Activation,
    pub c_out: usize,
}

pub struct BlockConfig {
    pub kind: BlockKind,
    pub c_in: usize,
    pub width: usize,
    pub stride: usize,
    pub shortcut: ShortcutOption,
    pub plain: bool,
    pub bottleneck_stride: BottleneckStride,
    pub act: Activation,
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
        for &(ci, co, k, s, p) in &layout {
            convs.push((
                Conv2d::new(init, device, ci, co, k, s, p)?,
                BatchNorm2d::new(device, co)?,
            ));
        }
        let shortcut = Shortcut::new(init, device, cfg.shortcut, cfg.plain, cfg.c_in, c_out, cfg.stride)?;
        Ok(Block {
            kind: cfg.kind,
            convs,
            shortcut,
            act: cfg.act,
            c_out,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let (last, inner) = self
            .convs
            .split_last()
            .ok_or_else(|| crate::Error::Internal("a block without convolutions".into()))?;
        let mut y = x.clone();
        for (conv, bn) in inner {
            y = bn.forward_act(&conv.forward(&y)?, ctx, None, self.act)?;
        }
        let (conv, bn) = last;
        let z = conv.forward(&y)?;
        let shortcut = self.shortcut.forward(x, ctx)?;
        if let Some(hook) = &ctx.residual_hook {
            // The response before the addition must exist as a tensor: the unfused path.
            let r = bn.forward(&z, ctx)?;
            hook(&r);
            return match shortcut {
                Some(s) => ops::add_activation(&r, &s, self.act),
                None => ops::activation(&r, self.act),
            };
        }
        bn.forward_act(&z, ctx, shortcut.as_ref(), self.act)
    }

    pub fn visit(&self, prefix: &str, v: &mut Visitor) {
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            conv.visit(&format!("{prefix}conv{}.", i + 1), v);
            bn.visit(&format!("{prefix}bn{}.", i + 1), v);
        }
        self.shortcut.visit(prefix, v);
    }
}
