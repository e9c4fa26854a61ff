//! A ResNet with its optimiser: the unit the binding drives. One `train_step` does forward, loss,
//! backward and the update; inputs are validated first so bad data is an error, not a panic.

use crate::autograd::no_grad;
use crate::backend::{Device, LogitsLayout};
use crate::error::{Error, Result};
use crate::io::checkpoint::{self, NamedTensor, TensorData};
use crate::memory::{self, Pass};
use crate::nn::{BnMode, Ctx, Entry, LayerSummary, ResNet, ResNetSpec};
use crate::ops;
use crate::optim::{Sgd, SgdConfig};
use crate::tensor::Tensor;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;

pub const FORMAT: &str = "resnet-wgpu";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const MOMENTUM_PREFIX: &str = "optimizer.momentum.";

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TrainStats {
    pub loss: f32,
    /// Top-1 hits in this batch (training mode, before the update).
    pub correct: usize,
    pub batch: usize,
    /// The rate this step used.
    pub lr: f32,
    /// Optimiser steps taken so far, this one included.
    pub step: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Default)]
pub struct EvalStats {
    pub loss_sum: f64,
    pub top1: usize,
    pub top5: usize,
    pub count: usize,
}

/// One convolution layer's response (see [`Model::layer_responses`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerResponse {
    /// torchvision-style layer name: `conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`.
    pub name: String,
    /// Kernel size (3 for the paper's 3x3 layers, 1, 7).
    pub kernel: usize,
    /// Standard deviation over every element of the batch's response (population, divide by n).
    pub std: f64,
    pub mean: f64,
}

/// The gradient of the loss with respect to one layer's weight (see [`Model::gradient_norms`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GradNorm {
    /// `conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`, ..., `fc`.
    pub name: String,
    /// Kernel size of a convolution; 0 for the fully connected classifier.
    pub kernel: usize,
    /// L2 norm of dL/dW (the loss alone: no weight decay).
    pub norm: f64,
    /// Elements of the weight (norm / sqrt(numel) is the root mean square).
    pub numel: usize,
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

pub struct Model {
    net: ResNet,
    device: Device,
    optimizer: Sgd,
}

/// Checks an NCHW batch against the model before anything touches a device.
fn check_images(spec: &ResNetSpec, images: &[f32], shape: [usize; 4]) -> Result<()> {
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
        Ok(Model { net, device, optimizer })
    }

    pub fn spec(&self) -> &ResNetSpec {
        &self.net.spec
    }

    pub fn device(&self) -> Device {
        self.device
    }

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

    fn ctx(training: bool) -> Ctx<'static> {
        if training {
            Ctx::train()
        } else {
            Ctx::eval()
        }
    }

    /// Logits, recorded for autograd (custom loops from TS).
    pub fn forward(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.net.forward(x, &Self::ctx(training))
    }

    /// Pooled features [N, C] before the classifier (custom heads).
    pub fn features(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.net.features(x, &Self::ctx(training))
    }

    /// The output of every stage (C2..C5 for the ImageNet nets), recorded for autograd.
    pub fn stage_outputs(&self, x: &Tensor, training: bool) -> Result<Vec<Tensor>> {
        self.net.stage_outputs(x, &Self::ctx(training))
    }

    /// The response of every convolution layer to a batch, in layer order (each block's
    /// convolutions, then its projection shortcut): for the original nets the layer's batch-norm
    /// output before the activation or the addition (the paper's Figure 7); for pre-activation
    /// nets and nets without batch norm (`spec.batch_norm` false) the convolution's output. A forward pass only: nothing is recorded for autograd. With
    /// `training` batch norm uses the batch's statistics (as during training) but no running
    /// statistic or counter is updated; without it, the running statistics. The model is left
    /// exactly as it was.
    pub fn layer_responses(&self, images: &[f32], shape: [usize; 4], training: bool) -> Result<Vec<LayerResponse>> {
        check_images(&self.net.spec, images, shape)?;
        self.check_batch_memory(shape, Pass::Eval)?;
        let out = std::cell::RefCell::new(Vec::new());
        let failed = std::cell::RefCell::new(None);
        let hook = |name: &str, kernel: usize, t: &Tensor| {
            if failed.borrow().is_some() {
                return;
            }
            match t.to_vec() {
                Ok(v) => {
                    let (mean, std) = mean_std(&v);
                    out.borrow_mut().push(LayerResponse {
                        name: name.to_string(),
                        kernel,
                        std,
                        mean,
                    });
                }
                Err(e) => *failed.borrow_mut() = Some(e),
            }
        };
        let ctx = Ctx {
            bn_mode: if training {
                BnMode::TrainFrozenStats
            } else {
                BnMode::Eval
            },
            response_hook: Some(&hook),
        };
        no_grad(|| {
            let x = Tensor::from_vec(images, &shape, self.device)?;
            self.net.forward(&x, &ctx).map(drop)
        })?;
        if let Some(e) = failed.into_inner() {
            return Err(e);
        }
        Ok(out.into_inner())
    }

    /// The L2 norm of d(mean cross-entropy)/dW for every convolution weight and the classifier's
    /// weight, in layer order (the stem, each block's convolutions then its projection, `fc`),
    /// for one labelled batch in training mode (batch statistics). The model is left exactly as
    /// it was: parameters, running statistics and counters, optimiser state and step, and any
    /// gradients the parameters already held.
    pub fn gradient_norms(&self, images: &[f32], labels: &[i32], shape: [usize; 4]) -> Result<Vec<GradNorm>> {
        check_images(&self.net.spec, images, shape)?;
        check_labels(shape[0], labels)?;
        self.check_batch_memory(shape, self.training_pass(false))?;
        let y = ops::labels_tensor(labels, self.net.spec.num_classes, self.device)?;
        let x = Tensor::from_vec(images, &shape, self.device)?;
        let params = self.parameters();
        let held: Vec<Option<crate::backend::Storage>> = params.iter().map(|(_, p)| p.grad_storage()).collect();
        params.iter().for_each(|(_, p)| p.zero_grad());
        let run = || -> Result<Vec<GradNorm>> {
            let ctx = Ctx {
                bn_mode: BnMode::TrainFrozenStats,
                response_hook: None,
            };
            let logits = self.net.forward(&x, &ctx)?;
            ops::cross_entropy(&logits, &y)?.backward()?;
            let mut norms = Vec::new();
            for (name, p) in &params {
                let Some(module) = name.strip_suffix(".weight") else {
                    continue;
                };
                let kernel = match p.shape() {
                    [_, _, k, _] => *k,
                    _ if module == "fc" => 0,
                    _ => continue,
                };
                let g = p.grad().map(|g| g.to_vec()).transpose()?.unwrap_or_default();
                let norm = g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                norms.push(GradNorm {
                    name: module.to_string(),
                    kernel,
                    norm,
                    numel: p.numel(),
                });
            }
            Ok(norms)
        };
        let result = run();
        for ((_, p), g) in params.iter().zip(held) {
            p.zero_grad();
            if let Some(g) = g {
                p.accumulate_grad(g)?;
            }
        }
        result
    }

    /// Forward, mean cross-entropy, backward and one SGD update.
    ///
    /// A batch that cannot fit is refused before the forward pass (`memory::check_batch_fits`).
    /// When memory runs out during the step anyway (an `Error::OutOfMemory`), the model stays
    /// usable: the step's graph and gradients are dropped, and no parameter or momentum buffer has
    /// changed unless the update itself failed; only the batch-norm running statistics of layers
    /// the forward pass got through have seen the batch.
    pub fn train_step(&mut self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<TrainStats> {
        check_images(&self.net.spec, images, shape)?;
        check_labels(shape[0], labels)?;
        self.check_batch_memory(shape, self.training_pass(true))?;
        let result = self.train_step_checked(images, shape, labels);
        if result.is_err() {
            self.optimizer.zero_grad();
        }
        result
    }

    /// What a training pass adds beside activations: gradients, and (`update`) the momentum
    /// buffers the optimizer has not made yet.
    fn training_pass(&self, update: bool) -> Pass {
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

    fn check_batch_memory(&self, shape: [usize; 4], pass: Pass) -> Result<()> {
        memory::check_batch_fits(&self.net.spec, self.device, shape, pass)
    }

    fn train_step_checked(&mut self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<TrainStats> {
        let y = ops::labels_tensor(labels, self.net.spec.num_classes, self.device)?;
        let x = Tensor::from_vec(images, &shape, self.device)?;
        self.optimizer.zero_grad();
        let logits = self.net.forward(&x, &Ctx::train())?;
        let loss = ops::cross_entropy(&logits, &y)?;
        loss.backward()?;
        let lr = self.optimizer.lr();
        self.optimizer.step()?;
        self.optimizer.zero_grad();
        let be = self.device.backend();
        let layout = LogitsLayout {
            n: shape[0],
            classes: self.net.spec.num_classes,
        };
        let hits = be.sum_all(&be.topk_correct(&logits.storage(), &y.storage(), &layout, 1)?)?;
        let loss_value = loss.scalar()?;
        if !loss_value.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged: the loss is {loss_value} at step {} (lower the learning rate)",
                self.step()
            )));
        }
        Ok(TrainStats {
            loss: loss_value,
            correct: be.download(&hits)?[0].round() as usize,
            batch: shape[0],
            lr,
            step: self.step(),
        })
    }

    /// Logits [N, classes] in eval mode.
    pub fn predict(&self, images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        check_images(&self.net.spec, images, shape)?;
        self.check_batch_memory(shape, Pass::Eval)?;
        no_grad(|| {
            let x = Tensor::from_vec(images, &shape, self.device)?;
            self.net.forward(&x, &Ctx::eval())?.to_vec()
        })
    }

    /// Summed loss and top-1/top-5 hits of one batch in eval mode.
    pub fn evaluate_batch(&self, images: &[f32], shape: [usize; 4], labels: &[i32]) -> Result<EvalStats> {
        check_images(&self.net.spec, images, shape)?;
        check_labels(shape[0], labels)?;
        self.check_batch_memory(shape, Pass::Eval)?;
        let classes = self.net.spec.num_classes;
        no_grad(|| {
            let y = ops::labels_tensor(labels, classes, self.device)?;
            let x = Tensor::from_vec(images, &shape, self.device)?;
            let logits = self.net.forward(&x, &Ctx::eval())?;
            let be = self.device.backend();
            let layout = LogitsLayout { n: shape[0], classes };
            let (losses, _) = be.cross_entropy(&logits.storage(), &y.storage(), &layout)?;
            let count = |k| -> Result<usize> {
                let hits = be.sum_all(&be.topk_correct(&logits.storage(), &y.storage(), &layout, k)?)?;
                Ok(be.download(&hits)?[0].round() as usize)
            };
            Ok(EvalStats {
                loss_sum: be.download(&be.sum_all(&losses)?)?[0] as f64,
                top1: count(1)?,
                top5: count(5.min(classes))?,
                count: shape[0],
            })
        })
    }

    /// Parameters and buffers under torchvision's names (num_batches_tracked as int64).
    pub fn state_dict(&self) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        let mut err = None;
        self.net.visit(&mut |name, e| {
            let t = match e {
                Entry::Param(t) | Entry::Buffer(t) => t.to_vec().map(|v| NamedTensor::f32(name, t.shape().to_vec(), v)),
                Entry::Counter(c) => Ok(NamedTensor::i64(name, vec![], vec![c.load(Ordering::Relaxed) as i64])),
            };
            match t {
                Ok(t) => out.push(t),
                Err(e) => err = Some(e),
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Loads parameters and buffers; every missing, unexpected or misshapen key is named.
    pub fn load_state_dict(&mut self, tensors: &[NamedTensor]) -> Result<()> {
        let given: BTreeMap<&str, &NamedTensor> = tensors
            .iter()
            .filter(|t| !t.name.starts_with("optimizer."))
            .map(|t| (t.name.as_str(), t))
            .collect();
        let mut expected = BTreeSet::new();
        let (mut missing, mut misshapen) = (Vec::new(), Vec::new());
        self.net.visit(&mut |name, e| {
            let shape: Vec<usize> = match &e {
                Entry::Param(t) | Entry::Buffer(t) => t.shape().to_vec(),
                Entry::Counter(_) => vec![],
            };
            match given.get(name.as_str()) {
                None => missing.push(name.clone()),
                Some(t) if t.numel() != shape.iter().product::<usize>() || (!shape.is_empty() && t.shape != shape) => {
                    misshapen.push(format!("{name} (checkpoint {:?}, model {shape:?})", t.shape))
                }
                Some(_) => {}
            }
            expected.insert(name);
        });
        let unexpected: Vec<&str> = given.keys().filter(|k| !expected.contains(**k)).copied().collect();
        if !missing.is_empty() || !unexpected.is_empty() || !misshapen.is_empty() {
            let list = |v: Vec<String>| {
                let n = v.len();
                let mut s = v.into_iter().take(8).collect::<Vec<_>>().join(", ");
                if n > 8 {
                    s.push_str(&format!(", ... ({n} in all)"));
                }
                s
            };
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("missing keys: {}", list(missing)));
            }
            if !unexpected.is_empty() {
                parts.push(format!(
                    "unexpected keys: {}",
                    list(unexpected.iter().map(|s| s.to_string()).collect())
                ));
            }
            if !misshapen.is_empty() {
                parts.push(format!("misshapen keys: {}", list(misshapen)));
            }
            return Err(Error::StateDict(parts.join("; ")));
        }
        let device = self.device;
        let mut result = Ok(());
        self.net.visit(&mut |name, e| {
            if result.is_err() {
                return;
            }
            let t = given[name.as_str()];
            result = match (e, &t.data) {
                (Entry::Param(p) | Entry::Buffer(p), TensorData::F32(v)) => {
                    device.backend().upload(v).and_then(|s| p.set_storage(s))
                }
                (Entry::Counter(c), TensorData::I64(v)) => {
                    c.store(v.first().copied().unwrap_or(0).max(0) as u64, Ordering::Relaxed);
                    Ok(())
                }
                (_, _) => Err(Error::StateDict(format!("{name} has the wrong dtype"))),
            };
        });
        result
    }

    fn metadata(&self, extra: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut m = extra;
        m.insert("format".into(), FORMAT.into());
        m.insert("version".into(), VERSION.into());
        m.insert("spec".into(), self.net.spec.to_json());
        m.insert(
            "optimizer".into(),
            serde_json::to_string(&self.optimizer.config).unwrap_or_default(),
        );
        m.insert("step".into(), self.step().to_string());
        m
    }

    /// Weights, buffers, optimiser state and the spec in one safetensors file, written atomically.
    pub fn save_checkpoint(&self, path: &Path, extra: BTreeMap<String, String>) -> Result<()> {
        let mut tensors = self.state_dict()?;
        let params = self.parameters();
        for ((name, p), buf) in params.iter().zip(self.optimizer.momentum_buffers()) {
            if let Some(b) = buf {
                let v = b.device().backend().download(b)?;
                tensors.push(NamedTensor::f32(
                    format!("{MOMENTUM_PREFIX}{name}"),
                    p.shape().to_vec(),
                    v,
                ));
            }
        }
        checkpoint::save(path, &tensors, &self.metadata(extra))
    }

    /// Only the state dict, as torchvision names it: weights, running statistics and
    /// `num_batches_tracked` (int64), so that PyTorch's
    /// `model.load_state_dict(safetensors.torch.load_file(path), strict=True)` takes it. No
    /// optimizer state; the metadata holds `extra`, `format` and `spec` (so `load_checkpoint`
    /// and `load_weights` still rebuild and check the architecture; `load_checkpoint` gives step
    /// 0 and the default optimizer) and the checksums, but no version or step, so the same
    /// weights always give the same bytes. Written atomically, like `save_checkpoint`.
    pub fn export_weights(&self, path: &Path, extra: BTreeMap<String, String>) -> Result<()> {
        let mut meta = extra;
        meta.insert("format".into(), FORMAT.into());
        meta.insert("spec".into(), self.net.spec.to_json());
        checkpoint::save(path, &self.state_dict()?, &meta)
    }

    /// Rebuilds the model from the spec stored in a checkpoint and restores everything in it.
    pub fn load_checkpoint(path: &Path, device: Device) -> Result<(Model, BTreeMap<String, String>)> {
        let (tensors, meta) = checkpoint::load(path)?;
        let spec_json = meta.get("spec").ok_or_else(|| {
            Error::checkpoint(path, "no architecture in its metadata (not a resnet-wgpu checkpoint; use loadWeights for a plain state dict)")
        })?;
        let spec = ResNetSpec::from_json(spec_json).map_err(|e| Error::checkpoint(path, e.to_string()))?;
        let mut model = Model::new(spec, 0, device)?;
        model.restore(path, &tensors, &meta)?;
        Ok((model, meta))
    }

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
        let spec = ResNetSpec::imagenet(
            depth,
            crate::nn::ShortcutOption::B,
            dim("conv1.weight", 1)?,
            dim("fc.weight", 0)?,
        )?;
        let mut model = Model::new(spec, 0, device)?;
        model
            .load_state_dict(&tensors)
            .map_err(|e| Error::checkpoint(path, format!("not a torchvision ResNet-{depth}: {e}")))?;
        Ok(model)
    }

    /// Loads weights into this model; the checkpoint must be of the same architecture.
    pub fn load_weights(&mut self, path: &Path) -> Result<BTreeMap<String, String>> {
        let (tensors, meta) = checkpoint::load(path)?;
        if let Some(spec_json) = meta.get("spec") {
            if let Ok(theirs) = ResNetSpec::from_json(spec_json) {
                if &theirs != self.spec() {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "it holds a different architecture: checkpoint {} but this model is {}",
                            describe(&theirs),
                            describe(self.spec())
                        ),
                    ));
                }
            }
        }
        self.restore(path, &tensors, &meta)?;
        Ok(meta)
    }

    fn restore(&mut self, path: &Path, tensors: &[NamedTensor], meta: &BTreeMap<String, String>) -> Result<()> {
        self.load_state_dict(tensors)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        if let Some(cfg) = meta.get("optimizer").and_then(|j| SgdConfig::from_json(j).ok()) {
            self.optimizer.config = cfg;
        }
        let step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
        let by_name: BTreeMap<&str, &NamedTensor> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut buffers = Vec::new();
        for (name, p) in self.parameters() {
            buffers.push(match by_name.get(format!("{MOMENTUM_PREFIX}{name}").as_str()) {
                Some(NamedTensor {
                    data: TensorData::F32(v),
                    ..
                }) if v.len() == p.numel() => Some(self.device.backend().upload(v)?),
                Some(_) => {
                    return Err(Error::checkpoint(
                        path,
                        format!("momentum buffer of {name} is misshapen"),
                    ))
                }
                None => None,
            });
        }
        self.optimizer.restore(step, buffers)
    }
}

/// "ResNet-20 (Cifar stem, option A, 1 channel(s), 10 classes)"; "..., 10 classes, no batch
/// norm)" for a net without batch norm.
pub fn describe(spec: &ResNetSpec) -> String {
    format!(
        "{} ({:?} stem, option {:?}, {} channel(s), {} classes{})",
        spec.name(),
        spec.stem,
        spec.shortcut,
        spec.in_channels,
        spec.num_classes,
        if spec.batch_norm { "" } else { ", no batch norm" }
    )
}
