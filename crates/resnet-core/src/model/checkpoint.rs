//! The checkpoint format: the state dict under torchvision's names, and the safetensors files
//! `save_checkpoint` (everything, optimiser included) and `export_weights` (weights only) write
//! and `load_checkpoint` / `load_weights` read back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::backend::Device;
use crate::error::{Error, Result};
use crate::io::checkpoint::{self, NamedTensor, TensorData};
use crate::nn::{Entry, ResNetSpec};
use crate::optim::{LossScaler, SgdConfig};

use super::Model;

pub const FORMAT: &str = "resnet-wgpu";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const MOMENTUM_PREFIX: &str = "optimizer.momentum.";

impl Model {
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
        if let Some(scaler) = self.loss_scaler() {
            m.insert("lossScaler".into(), serde_json::to_string(scaler).unwrap_or_default());
        }
        m
    }

    /// Weights, buffers, optimiser state and the spec in one safetensors file, written atomically.
    pub fn save_checkpoint(&mut self, path: &Path, extra: BTreeMap<String, String>) -> Result<()> {
        // The step count and loss scaler of every queued step.
        self.settle()?;
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
        // Queued steps are counted before the saved count replaces it.
        self.settle()?;
        self.load_state_dict(tensors)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        if let Some(cfg) = meta.get("optimizer").and_then(|j| SgdConfig::from_json(j).ok()) {
            self.optimizer.config = cfg;
        }
        if let Some(json) = meta.get("lossScaler") {
            let scaler = serde_json::from_str::<LossScaler>(json)
                .ok()
                .and_then(|s| LossScaler::restored(s.scale(), s.clean_steps()))
                .ok_or_else(|| Error::checkpoint(path, format!("its loss scaler {json} is not a valid one")))?;
            self.resume_loss_scaler(scaler)?;
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
