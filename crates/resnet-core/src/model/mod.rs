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
use crate::optim::{DeviceScaler, LossScaler, Sgd, SgdConfig};
use crate::precision::Precision;
use crate::tensor::Tensor;

use context::{ctx, mode};

pub struct Model {
    net: ResNet,
    device: Device,
    optimizer: Sgd,
    /// Set while training data-parallel across ranks.
    data_parallel: Option<data_parallel::DataParallel>,
    /// Set in mixed precision: the loss scaler as of the last step whose figures were read
    /// (the device's copy, `on_device`, is ahead of it by the `unsettled` steps since).
    scaler: Option<LossScaler>,
    /// The loss scaler's copy that mixed-precision steps read and update on the device.
    on_device: Option<DeviceScaler>,
    /// Mixed-precision steps taken whose overflow check has not been read yet: whether each was
    /// applied, so the step count, is known once it is.
    unsettled: usize,
    /// A checkpoint's loss scaler, taken up when the precision becomes mixed (a resumed run goes
    /// on at the scale it had reached).
    resumed_scaler: Option<LossScaler>,
    /// Steps taken whose figures have not been reported yet (`queue_train_step`).
    queued: Vec<train::QueuedStep>,
    /// Evaluated batches whose sums have not been read yet (`queue_evaluate_batch`).
    queued_evals: Vec<([crate::backend::Storage; 3], usize)>,
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
            scaler: None,
            on_device: None,
            unsettled: 0,
            resumed_scaler: None,
            queued: Vec::new(),
            queued_evals: Vec::new(),
        })
    }

    /// Computes the convolutions and the classifier in `precision` from now on. `Mixed` needs a
    /// GPU with half-precision shaders; it starts dynamic loss scaling at `GradScaler`'s 2^16.
    /// The weights stay f32 either way, so a checkpoint does not depend on the precision.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision == Precision::Mixed {
            crate::backend::check_mixed_precision(self.device)?;
            if self.data_parallel.is_some() {
                return Err(crate::error::Error::invalid(
                    "precision 'mixed' is not available in data-parallel training yet; use precision 'fp32'",
                ));
            }
        }
        if precision != self.net.precision {
            self.settle()?;
            self.scaler = (precision == Precision::Mixed).then(|| self.resumed_scaler.clone().unwrap_or_default());
            self.on_device = None;
        }
        self.net.precision = precision;
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.net.precision
    }

    /// The loss scaler of mixed precision (None in fp32), as of the last step whose figures were
    /// read: `settle` first to include queued steps.
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// Takes up a saved loss scaler: now in mixed precision, or when the precision becomes mixed.
    pub fn resume_loss_scaler(&mut self, scaler: LossScaler) -> Result<()> {
        self.settle()?;
        if self.scaler.is_some() {
            self.scaler = Some(scaler.clone());
            self.on_device = None;
        }
        self.resumed_scaler = Some(scaler);
        Ok(())
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

    /// Optimizer steps taken. In mixed precision a queued step counts once its figures are read
    /// (`settle`, `take_step_stats`): until then whether it was applied or skipped is not known.
    pub fn step(&self) -> u64 {
        self.optimizer.step_count()
    }

    /// The optimiser's momentum buffers, in parameter order (None before a parameter's first step).
    pub fn momentum_buffers(&self) -> &[Option<crate::backend::Storage>] {
        self.optimizer.momentum_buffers()
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
