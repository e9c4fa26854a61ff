//! torchvision interop: the ImageNet ResNet a torchvision state dict (saved as safetensors)
//! belongs to, built and loaded. The architecture names (`resnet18` ... `resnet152`) are mapped
//! here too, so every caller (the binding, the CLI through it) shares one rule.

use std::path::Path;

use crate::backend::Device;
use crate::error::{Error, Result};
use crate::io::checkpoint;
use crate::nn::{ResNetSpec, ShortcutOption};

use super::Model;

/// The torchvision architectures [`Model::load_torchvision`] takes, with their depths.
pub const TORCHVISION_ARCHS: [(&str, usize); 5] = [
    ("resnet18", 18),
    ("resnet34", 34),
    ("resnet50", 50),
    ("resnet101", 101),
    ("resnet152", 152),
];

/// The depth of a torchvision architecture name (`resnet50` -> 50).
pub fn torchvision_depth(arch: &str) -> Result<usize> {
    TORCHVISION_ARCHS
        .iter()
        .find(|(name, _)| *name == arch)
        .map(|&(_, depth)| depth)
        .ok_or_else(|| {
            let names: Vec<&str> = TORCHVISION_ARCHS.iter().map(|(name, _)| *name).collect();
            Error::invalid(format!(
                "unknown torchvision architecture '{arch}': expected one of {}",
                names.join(", ")
            ))
        })
}

impl Model {
    /// An ImageNet ResNet of `depth` (18, 34, 50, 101 or 152) in torchvision's layout (option B
    /// projections, the bottleneck's stride in its 3x3 convolution) holding a torchvision state
    /// dict saved as safetensors (`safetensors.torch.save_file(model.state_dict(), path)`). The
    /// input channels and classes are read from `conv1.weight` and `fc.weight`; every missing,
    /// unexpected or misshapen key is named.
    pub fn load_torchvision(depth: usize, path: &Path, device: Device) -> Result<Model> {
        let (tensors, _) = checkpoint::load(path)?;
        let dim = |name: &str, axis: usize| -> Result<usize> {
            let t = tensors
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| Error::checkpoint(path, format!("no `{name}`: not a torchvision ResNet state dict")))?;
            t.shape
                .get(axis)
                .copied()
                .ok_or_else(|| Error::checkpoint(path, format!("`{name}` has shape {:?}", t.shape)))
        };
        let spec = ResNetSpec::imagenet(depth, ShortcutOption::B, dim("conv1.weight", 1)?, dim("fc.weight", 0)?)?;
        let mut model = Model::new(spec, 0, device)?;
        model
            .load_state_dict(&tensors)
            .map_err(|e| Error::checkpoint(path, format!("not a torchvision ResNet-{depth}: {e}")))?;
        Ok(model)
    }
}
