//! The architecture as plain data. TypeScript builds it (`resnet.cifar`, `resnet.imagenet`), it
//! crosses the binding as JSON, and it is stored in every checkpoint so a model can be rebuilt.

use crate::backend::Activation;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// One 3x3 stride-1 convolution (the paper's CIFAR nets).
    Cifar,
    /// 7x7 stride-2 convolution and 3x3 stride-2 max pool (the paper's ImageNet nets).
    Imagenet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShortcutOption {
    /// Identity; zero-padded, subsampled identity where dimensions change (parameter-free).
    A,
    /// Identity; 1x1 projection where dimensions change.
    B,
    /// 1x1 projection on every block.
    C,
}

/// Which convolution of a bottleneck carries a stage's stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BottleneckStride {
    /// The paper: the first 1x1 convolution.
    #[serde(rename = "1x1")]
    Conv1x1,
    /// torchvision's "v1.5", whose pretrained weights expect it: the 3x3 convolution.
    #[serde(rename = "3x3")]
    Conv3x3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActivationKind {
    #[default]
    Relu,
    Tanh,
    Sigmoid,
}

impl From<ActivationKind> for Activation {
    fn from(a: ActivationKind) -> Self {
        match a {
            ActivationKind::Relu => Activation::Relu,
            ActivationKind::Tanh => Activation::Tanh,
            ActivationKind::Sigmoid => Activation::Sigmoid,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageSpec {
    pub block: BlockKind,
    pub count: usize,
    /// Channels of the block's 3x3 convolutions; a bottleneck outputs four times this.
    pub width: usize,
    pub stride: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResNetSpec {
    pub stem: Stem,
    pub stem_width: usize,
    pub stages: Vec<StageSpec>,
    pub shortcut: ShortcutOption,
    #[serde(default)]
    pub plain: bool,
    pub in_channels: usize,
    pub num_classes: usize,
    #[serde(default = "default_bottleneck_stride")]
    pub bottleneck_stride: BottleneckStride,
    #[serde(default)]
    pub activation: ActivationKind,
    /// The pre-activation residual unit of He et al. 2016, "Identity Mappings in Deep Residual
    /// Networks" (BN-act-conv inside the block, nothing after the addition, a final BN + act
    /// before pooling); the layout is documented in `nn::blocks`. Absent (false) in older
    /// checkpoints, and not written when false, so their specs read and compare unchanged.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pre_activation: bool,
    /// Batch normalisation (default true). False builds the network without any batch-norm layer
    /// (stem, blocks, projection shortcuts, a pre-activation net's `bn_final`): each convolution
    /// feeds the activation (or the addition, then the activation) directly, and a pre-activation
    /// block is act-conv. For the vanishing-gradient experiments. Convolutions stay bias-free and
    /// He-initialised (drawn in the same order, so a seed gives the same convolution weights with
    /// or without batch norm); the experiment measures gradients at initialisation, where a zero
    /// bias would change nothing. Absent (true) in older checkpoints, and not written when true,
    /// so their specs read and compare unchanged.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub batch_norm: bool,
}

/// Every field's type and allowed values, named in the message (see [`crate::json_check`]).
fn check_fields(v: &serde_json::Value) -> crate::json_check::Check {
    use crate::json_check::{describe, Fields};
    let f = Fields::of(v, "", "the spec")?;
    f.one_of("stem", &["cifar", "imagenet"], true)?;
    f.count("stemWidth", true)?;
    if let Some(stages) = f.value("stages", true)? {
        let list = stages
            .as_array()
            .ok_or_else(|| format!("`stages` must be an array of stages, got {}", describe(stages)))?;
        for (i, stage) in list.iter().enumerate() {
            let prefix = format!("stages[{i}].");
            let s = Fields::of(stage, &prefix, &format!("`stages[{i}]`"))?;
            s.one_of("block", &["basic", "bottleneck"], true)?;
            for key in ["count", "width", "stride"] {
                s.count(key, true)?;
            }
        }
    }
    f.one_of("shortcut", &["A", "B", "C"], true)?;
    f.boolean("plain", false)?;
    f.count("inChannels", true)?;
    f.count("numClasses", true)?;
    f.one_of("bottleneckStride", &["1x1", "3x3"], false)?;
    f.one_of("activation", &["relu", "tanh", "sigmoid"], false)?;
    f.boolean("preActivation", false)?;
    f.boolean("batchNorm", false)?;
    Ok(())
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn default_true() -> bool {
    true
}

fn default_bottleneck_stride() -> BottleneckStride {
    BottleneckStride::Conv3x3
}

impl ResNetSpec {
    /// Parses and validates a spec. A bad field is reported by name with the allowed values
    /// ("invalid ResNet spec: `shortcut` must be one of 'A', 'B', 'C', got 'D'"), never by serde's
    /// line and column.
    pub fn from_json(json: &str) -> Result<Self> {
        let bad = |m: String| Error::invalid(format!("invalid ResNet spec: {m}"));
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        check_fields(&value).map_err(bad)?;
        let spec: ResNetSpec = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a spec always serialises")
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("invalid ResNet spec: {m}")));
        if self.in_channels == 0 || self.num_classes == 0 || self.stem_width == 0 {
            return bad("inChannels, numClasses and stemWidth must be at least 1".into());
        }
        if self.stages.is_empty() {
            return bad("at least one stage is needed".into());
        }
        for (i, s) in self.stages.iter().enumerate() {
            if s.count == 0 || s.width == 0 || s.stride == 0 {
                return bad(format!(
                    "stage {} needs count, width and stride of at least 1, got {s:?}",
                    i + 1
                ));
            }
        }
        Ok(())
    }

    /// The same network with the pre-activation residual unit (He et al. 2016), or without it.
    pub fn with_pre_activation(mut self, pre_activation: bool) -> Self {
        self.pre_activation = pre_activation;
        self
    }

    /// The same network with batch normalisation, or without any (see [`ResNetSpec::batch_norm`]).
    pub fn with_batch_norm(mut self, batch_norm: bool) -> Self {
        self.batch_norm = batch_norm;
        self
    }

    /// Weighted layers: the stem, 2 or 3 per block, the classifier (the paper's "depth").
    pub fn depth(&self) -> usize {
        let per_block = |s: &StageSpec| match s.block {
            BlockKind::Basic => 2,
            BlockKind::Bottleneck => 3,
        };
        2 + self.stages.iter().map(|s| s.count * per_block(s)).sum::<usize>()
    }

    /// `ResNet-20`, `Plain-56`, `PreResNet-110`, `PrePlain-20` (as TypeScript's `nameOf`; the
    /// name does not say whether the net has batch norm: [`crate::model::describe`] does).
    pub fn name(&self) -> String {
        let family = match (self.pre_activation, self.plain) {
            (false, false) => "ResNet",
            (false, true) => "Plain",
            (true, false) => "PreResNet",
            (true, true) => "PrePlain",
        };
        format!("{family}-{}", self.depth())
    }

    /// CIFAR ResNet of depth 6n+2 (the paper's section 4.2).
    pub fn cifar(
        depth: usize,
        shortcut: ShortcutOption,
        plain: bool,
        in_channels: usize,
        num_classes: usize,
    ) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(Error::invalid(format!(
                "CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}"
            )));
        }
        let n = (depth - 2) / 6;
        Ok(ResNetSpec {
            stem: Stem::Cifar,
            stem_width: 16,
            stages: [(16, 1), (32, 2), (64, 2)]
                .iter()
                .map(|&(width, stride)| StageSpec {
                    block: BlockKind::Basic,
                    count: n,
                    width,
                    stride,
                })
                .collect(),
            shortcut,
            plain,
            in_channels,
            num_classes,
            bottleneck_stride: BottleneckStride::Conv3x3,
            activation: ActivationKind::Relu,
            pre_activation: false,
            batch_norm: true,
        })
    }

    /// ImageNet ResNet-18/34/50/101/152 (the paper's Table 1).
    pub fn imagenet(depth: usize, shortcut: ShortcutOption, in_channels: usize, num_classes: usize) -> Result<Self> {
        let (block, counts) = match depth {
            18 => (BlockKind::Basic, [2, 2, 2, 2]),
            34 => (BlockKind::Basic, [3, 4, 6, 3]),
            50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
            152 => (BlockKind::Bottleneck, [3, 8, 36, 3]),
            _ => {
                return Err(Error::invalid(format!(
                    "ImageNet ResNet depth must be 18, 34, 50, 101 or 152, got {depth}"
                )))
            }
        };
        Ok(ResNetSpec {
            stem: Stem::Imagenet,
            stem_width: 64,
            stages: counts
                .iter()
                .zip([(64, 1), (128, 2), (256, 2), (512, 2)])
                .map(|(&count, (width, stride))| StageSpec {
                    block,
                    count,
                    width,
                    stride,
                })
                .collect(),
            shortcut,
            plain: false,
            in_channels,
            num_classes,
            bottleneck_stride: BottleneckStride::Conv3x3,
            activation: ActivationKind::Relu,
            pre_activation: false,
            batch_norm: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> String {
        ResNetSpec::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn bad_fields_are_named_with_their_allowed_values() {
        let good = ResNetSpec::cifar(20, ShortcutOption::A, false, 1, 10)
            .unwrap()
            .to_json();
        assert!(ResNetSpec::from_json(&good).is_ok());
        let m = message(&good.replace(r#""shortcut":"A""#, r#""shortcut":"D""#));
        assert_eq!(
            m,
            "invalid ResNet spec: `shortcut` must be one of 'A', 'B', 'C', got 'D'"
        );
        let m = message(&good.replace(r#""activation":"relu""#, r#""activation":"gelu""#));
        assert_eq!(
            m,
            "invalid ResNet spec: `activation` must be one of 'relu', 'tanh', 'sigmoid', got 'gelu'"
        );
        let m = message(&good.replace(r#""block":"basic""#, r#""block":"wide""#));
        assert!(
            m.contains("`stages[0].block` must be one of 'basic', 'bottleneck', got 'wide'"),
            "{m}"
        );
        let m = message(&good.replace(r#""inChannels":1"#, r#""inChannels":1.5"#));
        assert!(
            m.contains("`inChannels` must be a non-negative integer, got 1.5"),
            "{m}"
        );
        let m = message(&good.replace(r#""plain":false"#, r#""plain":null"#));
        assert!(m.contains("`plain` must be true or false, got null"), "{m}");
        // (Malformed JSON keeps serde's position: there it is the useful part.)
        assert!(message("{").starts_with("invalid ResNet spec: not valid JSON"));
        for m in [m, message(&good.replace(r#""plain":false"#, r#""plane":false"#))] {
            assert!(!m.contains("column"), "{m}");
        }
        assert!(message(&good.replace(r#""plain":false"#, r#""plane":false"#)).contains("unknown field `plane`"));
    }
}
