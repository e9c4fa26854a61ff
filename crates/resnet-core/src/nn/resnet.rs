//! The ResNet assembled from a `ResNetSpec`: stem, stages of blocks, global pool, classifier.
//! The pre-activation nets (`spec.pre_activation`; layout in `nn::blocks`) differ in the stem (a
//! bare convolution for CIFAR) and in a final batch norm + activation before the pool. Nets
//! without batch norm (`spec.batch_norm` false) have none of the batch norms, the activations
//! stay where they were (the pre-activation net's final activation included).

use super::blocks::{Block, BlockConfig, ConvBn, Shortcut};
use super::init::Init;
use super::layers::{BatchNorm2d, Conv2d, Linear};
use super::spec::{ResNetSpec, Stem};
use super::{Ctx, Entry, Visitor};
use crate::backend::{Activation, ConvGeometry, Device, PoolGeometry};
use crate::error::{Error, Result};
use crate::ops;
use crate::precision::{autocast, Precision};
use crate::tensor::Tensor;
use serde::Serialize;

pub struct ResNet {
    pub spec: ResNetSpec,
    pub conv1: Conv2d,
    /// The stem's batch norm; none in a CIFAR pre-activation net or a net without batch norm.
    pub bn1: Option<BatchNorm2d>,
    pub stages: Vec<Vec<Block>>,
    /// Pre-activation nets with batch norm: the batch norm after the last stage (`bn_final`).
    pub bn_final: Option<BatchNorm2d>,
    pub fc: Linear,
    act: Activation,
    /// The arithmetic of every convolution and the classifier (batch norm stays f32).
    pub precision: Precision,
}

/// One row of `summary()`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LayerSummary {
    pub name: String,
    pub kind: String,
    pub output_shape: Vec<usize>,
    pub params: usize,
    /// Multiply-adds of the forward pass for one image (the paper's "FLOPs").
    pub macs: u64,
}

impl ResNet {
    pub fn new(spec: &ResNetSpec, seed: u64, device: Device) -> Result<Self> {
        spec.validate()?;
        let mut init = Init::new(seed);
        let act: Activation = spec.activation.into();
        let (k, s, p) = match spec.stem {
            Stem::Cifar => (3, 1, 1),
            Stem::Imagenet => (7, 2, 3),
        };
        let conv1 = Conv2d::new(&mut init, device, spec.in_channels, spec.stem_width, k, s, p)?;
        let bn1 = match (spec.batch_norm, spec.pre_activation, spec.stem) {
            (false, _, _) | (true, true, Stem::Cifar) => None,
            _ => Some(BatchNorm2d::new(device, spec.stem_width)?),
        };
        let mut c_in = spec.stem_width;
        let mut stages = Vec::new();
        for (i, st) in spec.stages.iter().enumerate() {
            let mut blocks = Vec::new();
            for j in 0..st.count {
                let cfg = BlockConfig {
                    name: format!("layer{}.{j}", i + 1),
                    pre_activation: spec.pre_activation,
                    batch_norm: spec.batch_norm,
                    skip_first_bn: spec.pre_activation && spec.stem == Stem::Imagenet && i == 0 && j == 0,
                    kind: st.block,
                    c_in,
                    width: st.width,
                    stride: if j == 0 { st.stride } else { 1 },
                    shortcut: spec.shortcut,
                    plain: spec.plain,
                    bottleneck_stride: spec.bottleneck_stride,
                    act,
                };
                let b = Block::new(&mut init, device, &cfg)?;
                c_in = b.c_out;
                blocks.push(b);
            }
            stages.push(blocks);
        }
        let bn_final = match spec.pre_activation && spec.batch_norm {
            true => Some(BatchNorm2d::new(device, c_in)?),
            false => None,
        };
        let fc = Linear::new(&mut init, device, c_in, spec.num_classes)?;
        Ok(ResNet {
            spec: spec.clone(),
            conv1,
            bn1,
            stages,
            bn_final,
            fc,
            act,
            precision: Precision::Fp32,
        })
    }

    /// A CIFAR pre-activation net: the bare convolution. Otherwise conv-BN-act (conv-act without
    /// batch norm), then the max pool of an ImageNet stem.
    fn stem(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let bare = self.spec.pre_activation && self.spec.stem == Stem::Cifar;
        if ctx.inference() {
            // conv-BN-act in one call (a pre-activation ImageNet stem is conv-BN-act too).
            let act = (!bare).then_some(self.act);
            let y = self.conv1.forward_inference(x, self.bn1.as_ref(), None, act)?;
            return self.stem_pool(y);
        }
        let z = self.conv1.forward(x)?;
        let k = self.conv1.kernel();
        if bare {
            ctx.report(|| "conv1".into(), k, &z);
            return Ok(z);
        }
        let report = |r: &Tensor| ctx.report(|| "conv1".into(), k, r);
        let y = match &self.bn1 {
            None => {
                report(&z);
                ops::activation(&z, self.act)?
            }
            Some(bn) if self.spec.pre_activation => {
                report(&z);
                bn.forward_act(&z, ctx, None, self.act, None)?
            }
            Some(bn) => bn.forward_act(&z, ctx, None, self.act, ctx.tap(&report))?,
        };
        self.stem_pool(y)
    }

    fn stem_pool(&self, y: Tensor) -> Result<Tensor> {
        match self.spec.stem {
            Stem::Cifar => Ok(y),
            Stem::Imagenet => ops::max_pool2d(&y, 3, 2, 1),
        }
    }

    /// The output of every stage (C2..C5 for the ImageNet nets), for use as a backbone. In a
    /// pre-activation net these are the blocks' sums, before `bn_final` and its activation.
    pub fn stage_outputs(&self, x: &Tensor, ctx: &Ctx) -> Result<Vec<Tensor>> {
        autocast(self.precision, || self.stage_outputs_cast(x, ctx))
    }

    fn stage_outputs_cast(&self, x: &Tensor, ctx: &Ctx) -> Result<Vec<Tensor>> {
        self.check_input(x)?;
        let mut y = self.stem(x, ctx)?;
        let mut outs = Vec::new();
        for blocks in &self.stages {
            for b in blocks {
                y = b.forward(&y, ctx)?;
            }
            outs.push(y.clone());
        }
        Ok(outs)
    }

    /// Globally pooled features [N, C] before the classifier.
    pub fn features(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        autocast(self.precision, || self.features_cast(x, ctx))
    }

    fn features_cast(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        let mut last = self
            .stage_outputs_cast(x, ctx)?
            .pop()
            .ok_or_else(|| Error::Internal("no stages".into()))?;
        if self.spec.pre_activation {
            last = match &self.bn_final {
                Some(bn) => bn.forward_act(&last, ctx, None, self.act, None)?,
                None => ops::activation(&last, self.act)?,
            };
        }
        ops::global_avg_pool(&last)
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.forward_at(self.precision, x, ctx)
    }

    /// [`ResNet::forward`] in `precision` whatever the net's own (the probes measure in fp32).
    pub fn forward_at(&self, precision: Precision, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        autocast(precision, || self.fc.forward(&self.features_cast(x, ctx)?))
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let s = x.shape();
        if s.len() != 4 || s[1] != self.spec.in_channels {
            return Err(Error::shape(
                "resnet",
                format!(
                    "expected images of shape [N, {}, H, W], got {s:?}",
                    self.spec.in_channels
                ),
            ));
        }
        if s[0] == 0 {
            return Err(Error::shape("resnet", "the batch is empty"));
        }
        Ok(())
    }

    /// Every parameter, buffer and counter under torchvision's names, in a fixed order.
    pub fn visit(&self, v: &mut Visitor) {
        self.conv1.visit("conv1.", v);
        if let Some(bn) = &self.bn1 {
            bn.visit("bn1.", v);
        }
        for (i, blocks) in self.stages.iter().enumerate() {
            for (j, b) in blocks.iter().enumerate() {
                b.visit(&format!("layer{}.{}.", i + 1, j), v);
            }
        }
        if let Some(bn) = &self.bn_final {
            bn.visit("bn_final.", v);
        }
        self.fc.visit("fc.", v);
    }

    /// Frees every folded inference copy of the weights (`nn::fold`); a training step begins
    /// with it.
    pub fn drop_folds(&self) {
        let mut drop = |c: &Conv2d| c.fold_cache().clear();
        drop(&self.conv1);
        self.stages.iter().flatten().for_each(|b| b.for_each_conv(&mut drop));
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.visit(&mut |name, e| {
            if let Entry::Param(t) = e {
                out.push((name, t.clone()));
            }
        });
        out
    }

    pub fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Layers with output shapes, parameters and multiply-adds for an `h` x `w` input, computed
    /// from shapes alone (no forward pass).
    pub fn summary(&self, h: usize, w: usize) -> Result<Vec<LayerSummary>> {
        let mut rows = Vec::new();
        let mut shape = vec![1, self.spec.in_channels, h, w];
        let g = self.conv1.geometry(&shape)?;
        shape = g.out_shape().to_vec();
        let bn_params = |bn: &Option<BatchNorm2d>| bn.as_ref().map_or(0, |bn| 2 * bn.channels());
        rows.push(LayerSummary {
            name: "conv1".into(),
            kind: match (&self.bn1, self.spec.pre_activation && self.spec.stem == Stem::Cifar) {
                (Some(_), _) => format!("Conv2d {}x{}/{} + BN + act", g.kh, g.kw, g.stride),
                (None, false) => format!("Conv2d {}x{}/{} + act", g.kh, g.kw, g.stride),
                (None, true) => format!("Conv2d {}x{}/{}", g.kh, g.kw, g.stride),
            },
            output_shape: shape.clone(),
            params: self.conv1.weight.numel() + bn_params(&self.bn1),
            macs: g.macs(),
        });
        if self.spec.stem == Stem::Imagenet {
            let pg = PoolGeometry::new(&shape, 3, 2, 1)?;
            shape = pg.out_shape().to_vec();
            rows.push(LayerSummary {
                name: "maxpool".into(),
                kind: "MaxPool2d 3x3/2".into(),
                output_shape: shape.clone(),
                params: 0,
                macs: 0,
            });
        }
        for (i, blocks) in self.stages.iter().enumerate() {
            for (j, b) in blocks.iter().enumerate() {
                let mut macs = 0;
                let mut params = 0;
                let input = shape.clone();
                for ConvBn { conv, bn, .. } in &b.convs {
                    let g: ConvGeometry = conv.geometry(&shape)?;
                    macs += g.macs();
                    params += conv.weight.numel() + bn_params(bn);
                    shape = g.out_shape().to_vec();
                }
                let sc = match &b.shortcut {
                    Shortcut::Projection { conv, bn } => {
                        let g = conv.geometry(&input)?;
                        macs += g.macs();
                        params += conv.weight.numel() + bn_params(bn);
                        "projection"
                    }
                    Shortcut::ZeroPad { .. } => "option A",
                    Shortcut::Identity => "identity",
                    Shortcut::None => "none (plain)",
                };
                let pre = if b.pre_activation { "PreAct" } else { "" };
                let no_bn = if self.spec.batch_norm { "" } else { ", no BN" };
                let kind = format!("{pre}{:?}Block, shortcut {sc}{no_bn}", b.kind);
                rows.push(LayerSummary {
                    name: format!("layer{}.{}", i + 1, j),
                    kind,
                    output_shape: shape.clone(),
                    params,
                    macs,
                });
            }
        }
        let c = shape[1];
        if let Some(bn) = &self.bn_final {
            rows.push(LayerSummary {
                name: "bn_final".into(),
                kind: "BN + act".into(),
                output_shape: shape.clone(),
                params: bn_params(&self.bn_final),
                macs: 0,
            });
            debug_assert_eq!(bn.channels(), c);
        }
        rows.push(LayerSummary {
            name: "avgpool".into(),
            kind: "GlobalAvgPool".into(),
            output_shape: vec![1, c],
            params: 0,
            macs: 0,
        });
        rows.push(LayerSummary {
            name: "fc".into(),
            kind: "Linear".into(),
            output_shape: vec![1, self.spec.num_classes],
            params: self.fc.weight.numel() + self.fc.bias.numel(),
            macs: (c * self.spec.num_classes) as u64,
        });
        Ok(rows)
    }
}
