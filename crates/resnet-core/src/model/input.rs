//! Checks of a batch against the model, run before anything touches a device so that bad data is
//! an error naming the problem, not a panic or a silently wrong result.

use crate::error::{Error, Result};
use crate::memory::{self, Pass};
use crate::nn::ResNetSpec;

use super::Model;

/// An NCHW batch: channels match the model, nothing empty, the right number of finite values.
pub(crate) fn check_images(spec: &ResNetSpec, images: &[f32], shape: [usize; 4]) -> Result<()> {
    let [n, c, h, w] = shape;
    if c != spec.in_channels {
        return Err(Error::shape(
            "images",
            format!(
                "the model takes {} channel(s), got images of shape [{n}, {c}, {h}, {w}]",
                spec.in_channels
            ),
        ));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::shape("images", format!("empty batch or image: shape {shape:?}")));
    }
    if images.len() != n * c * h * w {
        return Err(Error::shape(
            "images",
            format!("shape {shape:?} needs {} values, got {}", n * c * h * w, images.len()),
        ));
    }
    if let Some(index) = images.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { index });
    }
    Ok(())
}

fn check_labels(n: usize, labels: &[i32]) -> Result<()> {
    if labels.len() != n {
        return Err(Error::shape(
            "labels",
            format!("{} labels for a batch of {n} images", labels.len()),
        ));
    }
    Ok(())
}

impl Model {
    /// Images alone (predict, probes without labels), and that a pass over them fits in memory.
    pub(crate) fn check_batch(&self, images: &[f32], shape: [usize; 4], pass: Pass) -> Result<()> {
        check_images(&self.net.spec, images, shape)?;
        memory::check_batch_fits(&self.net.spec, self.device, shape, pass)
    }

    /// A labelled batch (train, evaluate, gradient norms): images, one label per image, memory.
    pub(crate) fn check_labelled(&self, images: &[f32], shape: [usize; 4], labels: &[i32], pass: Pass) -> Result<()> {
        check_images(&self.net.spec, images, shape)?;
        check_labels(shape[0], labels)?;
        memory::check_batch_fits(&self.net.spec, self.device, shape, pass)
    }

    /// What a training pass adds beside activations: gradients, and (`update`) the momentum
    /// buffers the optimizer has not made yet.
    pub(crate) fn training_pass(&self, update: bool) -> Pass {
        let params = self.parameters();
        let missing: usize = match update {
            true => params
                .iter()
                .zip(self.optimizer.momentum_buffers())
                .filter(|(_, b)| b.is_none())
                .map(|((_, p), _)| p.numel())
                .sum(),
            false => 0,
        };
        let grads: usize = params.iter().map(|(_, p)| p.numel()).sum();
        Pass::Training {
            state_bytes: 4 * (grads + missing) as u64,
        }
    }
}
