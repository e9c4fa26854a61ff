//! A ResNet with its optimiser: the unit the binding drives. Split by job:
//!
//! - `train`: one SGD step, logits, and the loss and top-1/top-5 sums of a batch;
//! - `probes`: layer responses and gradient norms, which leave the model as it was;
//! - `checkpoint`: the state dict and the safetensors files it is saved to and loaded from;
//! - `torchvision`: building and loading the net a torchvision state dict belongs to;
//! - `views`: multi-view evaluation (the softmax of an image's views averaged, then scored);
//! - `input`: the checks a batch passes before anything touches a device;
//! - `readback`: a step's scalars fetched in one download;
//! - `context`: the one place an `nn::Ctx` is built;
//! - `data_parallel`: training as one of several ranks (DDP's semantics).
//!
//! Every call taking a batch takes `(images, shape, labels)` in that order.

mod checkpoint;
mod context;
mod data_parallel;
mod input;
mod probes;
mod readback;
mod torchvision;
mod train;
mod views;

pub use checkpoint::{describe, FORMAT, VERSION};
pub use data_parallel::DataParallelOptions;
pub use probes::{GradNorm, LayerResponse};
pub use torchvision::{torchvision_depth, TORCHVISION_ARCHS};
pub use train::{EvalStats, TrainStats};
pub use views::ViewScore;

use crate::backend::Device;
use crate::error::Result;
use crate::memory;
use crate::nn::{LayerSummary, ResNet, ResNetSpec};
use crate::optim::{Sgd, SgdConfig};
use crate::tensor::Tensor;

use context::{ctx, mode};

pub struct Model {
    net: ResNet,
    device: Device,
    optimizer: Sgd,
    /// Set while training data-parallel across ranks.
    data_parallel: Option<data_parallel::DataParallel>,
}

impl Model {
    /// Refuses (an `Error::OutOfMemory` naming both figures) a spec whose parameters, gradients
    /// and momentum cannot fit on `device`, before allocating anything (`memory::check_model_fits`).
    pub fn new(spec: ResNetSpec, seed: u64, device: Device) -> Result<Self> {
        spec.validate()?;
        memory::check_model_fits(&spec, device)?;
        let net = ResNet::new(&spec, seed, device)?;
        let optimizer = Sgd::new(
            net.parameters().into_iter().map(|(_, t)| t).collect(),
            SgdConfig::default(),
        )?;
        Ok(Model {
            net,
            device,
            optimizer,
            data_parallel: None,
        })
    }

    pub fn spec(&self) -> &ResNetSpec {
        &self.net.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The network itself, for tests and tools that drive `nn` directly (a forward pass with
    /// their own `Ctx`, a walk over every buffer).
    pub fn net(&self) -> &ResNet {
        &self.net
    }

    pub fn num_parameters(&self) -> usize {
        self.net.num_parameters()
    }

    pub fn summary(&self, h: usize, w: usize) -> Result<Vec<LayerSummary>> {
        self.net.summary(h, w)
    }

    /// Replaces the optimiser settings; momentum buffers and the step count carry over.
    pub fn configure_optimizer(&mut self, cfg: SgdConfig) -> Result<()> {
        cfg.validate()?;
        self.optimizer.config = cfg;
        Ok(())
    }

    pub fn optimizer_config(&self) -> &SgdConfig {
        &self.optimizer.config
    }

    pub fn step(&self) -> u64 {
        self.optimizer.step_count()
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.net.parameters()
    }

    pub fn parameter(&self, name: &str) -> Option<Tensor> {
        self.parameters().into_iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Logits, recorded for autograd (custom loops from TS).
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.net.forward(x, &ctx(mode(training), None))
    }

    /// Pooled features [N, C] before the classifier (custom heads).
    pub fn features(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.net.features(x, &ctx(mode(training), None))
    }

    /// The output of every stage (C2..C5 for the ImageNet nets), recorded for autograd.
    pub fn stage_outputs(&self, x: &Tensor, training: bool) -> Result<Vec<Tensor>> {
        self.net.stage_outputs(x, &ctx(mode(training), None))
    }
}
