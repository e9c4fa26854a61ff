//! `NativeModel`: a ResNet owned by Rust. Long calls (train step, predict, evaluate, save, load)
//! are `job`s on the libuv pool; the rest are quick synchronous calls. A batch arrives either as
//! JS arrays (copied, so JS may reuse them) or as the loader's own `NativeBatch` (shared as is).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::data::Batch;
use resnet_core::model::{torchvision_depth, DataParallelOptions, Model, ViewScore};
use resnet_core::nn::ResNetSpec;
use resnet_core::optim::SgdConfig;
use resnet_core::precision::Precision;
use resnet_core::Device;

use crate::convert::{count, parse_device, parse_seed, shape4};
use crate::data::{copied_batch, NativeBatch};
use crate::distributed::NativeWorld;
use crate::errors::{copy_array, guard, invalid, js_error};
use crate::job::{job, job_with, Pending};
use crate::tensor::NativeTensor;

/// Shared between the JS object and the tasks it has in flight; `None` once disposed.
type Shared = Arc<Mutex<Option<Model>>>;

fn with_model<T>(inner: &Shared, f: impl FnOnce(&mut Model) -> resnet_core::Result<T>) -> Result<T> {
    let mut slot = inner.lock().map_err(|_| {
        Error::from_reason("model is unusable: an earlier call panicked while using it; create or load it again")
    })?;
    let model = slot
        .as_mut()
        .ok_or_else(|| Error::from_reason("model has been disposed"))?;
    f(model).map_err(js_error)
}

/// How a model trains as one of several ranks (`attachDistributed`).
#[napi(object)]
pub struct DistributedOptions {
    /// Batch statistics over every rank's batch.
    pub sync_batch_norm: bool,
    /// Megabytes of gradients per all-reduce.
    pub bucket_cap_mb: f64,
    /// All-reduce each bucket while backward computes the next.
    pub overlap: bool,
}

/// Scalars of one training step (summed over ranks while distributed).
#[napi(object)]
pub struct TrainStats {
    pub loss: f64,
    pub correct: u32,
    pub batch: u32,
    pub lr: f64,
    pub step: i64,
    /// Mixed precision: the loss scale this step used (absent in fp32).
    pub loss_scale: Option<f64>,
    /// Mixed precision: the gradients overflowed, so the step was skipped and the scale halved.
    pub skipped: bool,
}

/// Sums over one evaluated batch (divide by `count` for means).
#[napi(object)]
pub struct EvalStats {
    pub loss_sum: f64,
    pub top1: u32,
    pub top5: u32,
    pub count: u32,
}

/// One convolution layer's response to a batch (`layerResponses`).
#[napi(object)]
pub struct LayerResponse {
    /// torchvision-style layer name: `conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`.
    pub name: String,
    /// Kernel size: 3 for the paper's 3x3 layers, 1 for projections and bottleneck 1x1s, 7.
    pub kernel: u32,
    /// Standard deviation over every element of the response (population).
    pub std: f64,
    pub mean: f64,
}

/// L2 norm of the loss gradient with respect to one layer's weight (`gradientNorms`).
#[napi(object)]
pub struct GradNorm {
    /// `conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`, ..., `fc`.
    pub name: String,
    /// Kernel size of a convolution; 0 for the fully connected classifier.
    pub kernel: u32,
    pub norm: f64,
    /// Elements of the weight.
    pub numel: u32,
}

/// GPU memory held by the buffer pool, in bytes.
#[napi(object)]
pub struct MemoryStats {
    /// Bytes the pool holds from the driver now (live tensors and cached buffers).
    pub live_bytes: f64,
    /// The most it has held.
    pub peak_bytes: f64,
    /// Bytes in live tensors now.
    pub in_use_bytes: f64,
    /// The most in live tensors since the process began.
    pub peak_in_use_bytes: f64,
    /// GPU kernels this process has dispatched so far (a difference counts a step's).
    pub dispatches: f64,
}

#[napi]
pub struct NativeModel {
    inner: Shared,
    /// The metadata of the checkpoint this model was loaded from (empty for a new model).
    metadata: BTreeMap<String, String>,
}

impl NativeModel {
    fn wrap(model: Model, metadata: BTreeMap<String, String>) -> Self {
        NativeModel {
            inner: Arc::new(Mutex::new(Some(model))),
            metadata,
        }
    }
}

#[napi]
impl NativeModel {
    /// Builds a freshly initialised model from a spec (JSON), a seed and a device name.
    #[napi(constructor)]
    pub fn new(spec_json: String, seed: Option<f64>, device: Option<String>) -> Result<Self> {
        guard("NativeModel", || {
            let device = parse_device(device.as_deref())?;
            let seed = parse_seed("seed", seed)?;
            let spec = ResNetSpec::from_json(&spec_json).map_err(js_error)?;
            Model::new(spec, seed, device)
                .map(|m| NativeModel::wrap(m, BTreeMap::new()))
                .map_err(js_error)
        })
    }

    /// Rebuilds a model from a checkpoint (architecture from the file), off the main thread.
    #[napi(ts_return_type = "Promise<NativeModel>")]
    pub fn load(path: String, device: Option<String>) -> Result<Pending<Loaded, NativeModel>> {
        let device = parse_device(device.as_deref())?;
        let path = PathBuf::from(path);
        Ok(job_with(
            "load",
            move || Model::load_checkpoint(&path, device).map_err(js_error),
            |(model, metadata)| Ok(NativeModel::wrap(model, metadata)),
        ))
    }

    /// The ImageNet ResNet a torchvision state dict (safetensors) belongs to, loaded from it, off
    /// the main thread. `arch`: `resnet18`, `resnet34`, `resnet50`, `resnet101` or `resnet152`.
    #[napi(ts_return_type = "Promise<NativeModel>")]
    pub fn load_torchvision(
        arch: String,
        path: String,
        device: Option<String>,
    ) -> Result<Pending<Loaded, NativeModel>> {
        let device = parse_device(device.as_deref())?;
        let depth = torchvision_depth(&arch).map_err(js_error)?;
        let path = PathBuf::from(path);
        Ok(job_with(
            "loadTorchvision",
            move || {
                Model::load_torchvision(depth, &path, device)
                    .map(|m| (m, BTreeMap::new()))
                    .map_err(js_error)
            },
            |(model, metadata)| Ok(NativeModel::wrap(model, metadata)),
        ))
    }

    /// The architecture as JSON (the same form the constructor takes).
    #[napi]
    pub fn spec_json(&self) -> Result<String> {
        guard("specJson", || with_model(&self.inner, |m| Ok(m.spec().to_json())))
    }

    #[napi]
    pub fn num_parameters(&self) -> Result<i64> {
        guard("numParameters", || {
            with_model(&self.inner, |m| Ok(m.num_parameters() as i64))
        })
    }

    /// Optimizer steps taken so far (queued mixed-precision steps are read first: whether each
    /// was applied or skipped is decided on the device).
    #[napi]
    pub fn step(&self) -> Result<i64> {
        guard("step", || {
            with_model(&self.inner, |m| {
                m.settle()?;
                Ok(m.step() as i64)
            })
        })
    }

    /// Per-layer rows (name, kind, outputShape, params, macs) for an h x w input, as JSON.
    #[napi]
    pub fn summary(&self, height: f64, width: f64) -> Result<String> {
        guard("summary", || {
            let (height, width) = (count("summary", "height", height)?, count("summary", "width", width)?);
            let rows = with_model(&self.inner, |m| m.summary(height, width))?;
            serde_json::to_string(&rows).map_err(|e| Error::from_reason(format!("summary: {e}")))
        })
    }

    /// Computes the convolutions and the classifier in `precision` ('fp32' or 'mixed') from now
    /// on; 'mixed' is refused, naming what is missing, on the CPU and on GPUs without f16 shaders.
    #[napi]
    pub fn set_precision(&self, precision: String) -> Result<()> {
        guard("setPrecision", || {
            let p = Precision::parse(&precision).map_err(js_error)?;
            with_model(&self.inner, |m| m.set_precision(p))
        })
    }

    /// 'fp32' or 'mixed'.
    #[napi]
    pub fn precision(&self) -> Result<String> {
        guard("precision", || {
            with_model(&self.inner, |m| Ok(m.precision().to_string()))
        })
    }

    /// Replaces the optimizer (SGD config JSON: lr, momentum, weightDecay, nesterov, schedule).
    #[napi]
    pub fn configure_optimizer(&self, config_json: String) -> Result<()> {
        guard("configureOptimizer", || {
            let cfg = SgdConfig::from_json(&config_json).map_err(js_error)?;
            with_model(&self.inner, |m| m.configure_optimizer(cfg))
        })
    }

    /// Trains as one rank of `world` from now on: refuses (naming the ranks) when the ranks'
    /// specs, optimizer settings or options differ, then copies rank 0's whole state (weights,
    /// buffers, momentum, step) to every rank. Every rank must call it.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn attach_distributed(&self, world: &NativeWorld, options: DistributedOptions) -> Result<Pending<()>> {
        let mb = options.bucket_cap_mb;
        if !(mb.is_finite() && mb > 0.0) {
            return Err(invalid(format!(
                "attachDistributed: bucketCapMb must be a positive number of megabytes, got {mb}"
            )));
        }
        let options = DataParallelOptions {
            sync_batch_norm: options.sync_batch_norm,
            bucket_cap_bytes: ((mb * 1_048_576.0) as usize).max(4),
            overlap: options.overlap,
        };
        let (model, comm) = (self.inner.clone(), world.communicator());
        Ok(job("attachDistributed", move || {
            with_model(&model, |m| m.attach_data_parallel(comm, options))
        }))
    }

    /// Back to training alone.
    #[napi]
    pub fn detach_distributed(&self) -> Result<()> {
        with_model(&self.inner, |m| {
            m.detach_data_parallel();
            Ok(())
        })
    }

    /// One forward + loss + backward + optimizer update on a worker thread.
    #[napi(ts_return_type = "Promise<TrainStats>")]
    pub fn train_step(&self, images: Float32Array, shape: Vec<f64>, labels: Int32Array) -> Result<Pending<TrainStats>> {
        Ok(self.train_on(Arc::new(copied_batch("trainStep", &images, &shape, &labels)?)))
    }

    /// `trainStep` on a batch the loader prepared, handed over as it is (no copy through JS).
    #[napi(ts_return_type = "Promise<TrainStats>")]
    pub fn train_batch(&self, batch: &NativeBatch) -> Result<Pending<TrainStats>> {
        Ok(self.train_on(batch.shared()?))
    }

    /// `trainStep` without waiting for the step's figures: they stay on the device until
    /// `takeStepStats`, so a GPU runs this step while the host prepares the next.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn queue_train_step(&self, images: Float32Array, shape: Vec<f64>, labels: Int32Array) -> Result<Pending<()>> {
        Ok(self.queue_on(Arc::new(copied_batch("queueTrainStep", &images, &shape, &labels)?)))
    }

    /// `queueTrainStep` on a batch the loader prepared.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn queue_train_batch(&self, batch: &NativeBatch) -> Result<Pending<()>> {
        Ok(self.queue_on(batch.shared()?))
    }

    /// The figures of every queued step, oldest first, in one read from the device.
    #[napi(ts_return_type = "Promise<TrainStats[]>")]
    pub fn take_step_stats(&self) -> Pending<Vec<TrainStats>> {
        let model = self.inner.clone();
        job("takeStepStats", move || {
            with_model(&model, |m| {
                let stats = m.take_step_stats()?;
                Ok(stats.into_iter().map(|s| train_stats(m, s)).collect())
            })
        })
    }

    /// Logits [N, numClasses] (eval mode) on a worker thread.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn predict(&self, images: Float32Array, shape: Vec<f64>) -> Result<Pending<Vec<f32>, Float32Array>> {
        let batch = Batch {
            images: copy_array(&images, "the batch's images")?,
            shape: shape4("predict", &shape)?,
            ..Batch::default()
        };
        Ok(self.predict_on(Arc::new(batch)))
    }

    /// `predict` on a batch the loader prepared (no copy through JS).
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn predict_batch(&self, batch: &NativeBatch) -> Result<Pending<Vec<f32>, Float32Array>> {
        Ok(self.predict_on(batch.shared()?))
    }

    /// Loss sum and top-1/top-5 hits of one labelled batch (eval mode) on a worker thread.
    #[napi(ts_return_type = "Promise<EvalStats>")]
    pub fn evaluate_batch(
        &self,
        images: Float32Array,
        shape: Vec<f64>,
        labels: Int32Array,
    ) -> Result<Pending<EvalStats>> {
        Ok(self.evaluate_on(Arc::new(copied_batch("evaluateBatch", &images, &shape, &labels)?)))
    }

    /// `evaluateBatch` on a batch the loader prepared (no copy through JS).
    #[napi(ts_return_type = "Promise<EvalStats>")]
    pub fn evaluate_loaded_batch(&self, batch: &NativeBatch) -> Result<Pending<EvalStats>> {
        Ok(self.evaluate_on(batch.shared()?))
    }

    /// `evaluateLoadedBatch` without waiting for the sums: they stay on the device until
    /// `takeEvalStats` (so a GPU evaluates this batch while the host prepares the next).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn queue_evaluate_loaded_batch(&self, batch: &NativeBatch) -> Result<Pending<()>> {
        let (model, batch) = (self.inner.clone(), batch.shared()?);
        Ok(job("evaluate", move || {
            with_model(&model, |m| {
                m.queue_evaluate_batch(&batch.images, batch.shape, &batch.labels)
            })
        }))
    }

    /// The sums of every batch queued by `queueEvaluateLoadedBatch`, in order, in one read.
    #[napi(ts_return_type = "Promise<EvalStats[]>")]
    pub fn take_eval_stats(&self) -> Pending<Vec<EvalStats>> {
        let model = self.inner.clone();
        job("evaluate", move || {
            with_model(&model, |m| {
                Ok(m.take_eval_stats()?.into_iter().map(EvalStats::from).collect())
            })
        })
    }

    /// Adds the views of a loader's batch to a multi-view `score` (eval mode) on a worker thread.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn score_views(&self, batch: &NativeBatch, score: &NativeViewScore) -> Result<Pending<()>> {
        let (model, batch, score) = (self.inner.clone(), batch.shared()?, score.inner.clone());
        Ok(job("evaluateViews", move || {
            let mut score = score.lock().unwrap_or_else(|e| e.into_inner());
            with_model(&model, |m| {
                m.score_views(&batch.images, batch.shape, &batch.labels, &batch.positions, &mut score)
            })
        }))
    }

    /// Every convolution layer's response (std and mean) to a batch, in layer order, on a worker
    /// thread: the batch-norm output before the activation/addition (original nets) or the
    /// convolution's output (pre-activation nets). `training`: batch statistics (running ones are
    /// not updated); otherwise running statistics. The model is not changed.
    #[napi(ts_return_type = "Promise<LayerResponse[]>")]
    pub fn layer_responses(
        &self,
        images: Float32Array,
        shape: Vec<f64>,
        training: bool,
    ) -> Result<Pending<Vec<LayerResponse>>> {
        let images = copy_array(&images, "the batch's images")?;
        let shape = shape4("layerResponses", &shape)?;
        let model = self.inner.clone();
        Ok(job("layerResponses", move || {
            let rows = with_model(&model, |m| m.layer_responses(&images, shape, training))?;
            Ok(rows.into_iter().map(LayerResponse::from).collect())
        }))
    }

    /// L2 norms of d(loss)/dW for every convolution weight and the classifier's weight, in layer
    /// order, for one labelled batch in training mode, on a worker thread. The model is not
    /// changed (parameters, statistics, optimizer state, step, gradients).
    #[napi(ts_return_type = "Promise<GradNorm[]>")]
    pub fn gradient_norms(
        &self,
        images: Float32Array,
        shape: Vec<f64>,
        labels: Int32Array,
    ) -> Result<Pending<Vec<GradNorm>>> {
        let batch = copied_batch("gradientNorms", &images, &shape, &labels)?;
        let model = self.inner.clone();
        Ok(job("gradientNorms", move || {
            let rows = with_model(&model, |m| m.gradient_norms(&batch.images, batch.shape, &batch.labels))?;
            Ok(rows.into_iter().map(GradNorm::from).collect())
        }))
    }

    /// Writes a safetensors checkpoint (atomic) with string metadata.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save(&self, path: String, metadata: Option<HashMap<String, String>>) -> Pending<()> {
        let (model, path, metadata) = (self.inner.clone(), PathBuf::from(path), sorted(metadata));
        job("save", move || {
            with_model(&model, |m| m.save_checkpoint(&path, metadata))
        })
    }

    /// Writes only the state dict (weights, running statistics, int64 `num_batches_tracked`,
    /// torchvision names) that PyTorch's `load_state_dict(..., strict=True)` takes; atomic.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn export_weights(&self, path: String, metadata: Option<HashMap<String, String>>) -> Pending<()> {
        let (model, path, metadata) = (self.inner.clone(), PathBuf::from(path), sorted(metadata));
        job("exportWeights", move || {
            with_model(&model, |m| m.export_weights(&path, metadata))
        })
    }

    /// Loads weights from a checkpoint of the same architecture into this model; resolves to the
    /// checkpoint's metadata.
    #[napi(ts_return_type = "Promise<Record<string, string>>")]
    pub fn load_weights(&self, path: String) -> Pending<BTreeMap<String, String>, HashMap<String, String>> {
        let (model, path) = (self.inner.clone(), PathBuf::from(path));
        job_with(
            "loadWeights",
            move || with_model(&model, |m| m.load_weights(&path)),
            |meta| Ok(meta.into_iter().collect()),
        )
    }

    /// Parameter and buffer names, torchvision style (`layer1.0.conv1.weight`).
    #[napi]
    pub fn parameter_names(&self) -> Result<Vec<String>> {
        guard("parameterNames", || {
            with_model(&self.inner, |m| {
                Ok(m.parameters().into_iter().map(|(name, _)| name).collect())
            })
        })
    }

    /// The live parameter tensor (shares storage with the model).
    #[napi]
    pub fn parameter(&self, name: String) -> Result<NativeTensor> {
        guard("parameter", || {
            with_model(&self.inner, |m| Ok(m.parameter(&name)))?
                .map(NativeTensor::from)
                .ok_or_else(|| {
                    invalid(format!(
                        "the model has no parameter named '{name}' (see parameterNames())"
                    ))
                })
        })
    }

    /// Logits for `x`; with `training` the graph is recorded for `backward()`.
    #[napi]
    pub fn forward(&self, x: &NativeTensor, training: bool) -> Result<NativeTensor> {
        guard("forward", || {
            let x = x.tensor()?;
            with_model(&self.inner, |m| m.forward(x, training)).map(NativeTensor::from)
        })
    }

    /// Pooled features [N, C] before the classifier.
    #[napi]
    pub fn features(&self, x: &NativeTensor, training: bool) -> Result<NativeTensor> {
        guard("features", || {
            let x = x.tensor()?;
            with_model(&self.inner, |m| m.features(x, training)).map(NativeTensor::from)
        })
    }

    /// The output of every stage (C2..C5 for the ImageNet nets); with `training` the graph is
    /// recorded for `backward()`.
    #[napi]
    pub fn stage_outputs(&self, x: &NativeTensor, training: bool) -> Result<Vec<NativeTensor>> {
        guard("stageOutputs", || {
            let x = x.tensor()?;
            with_model(&self.inner, |m| m.stage_outputs(x, training))
                .map(|v| v.into_iter().map(NativeTensor::from).collect())
        })
    }

    /// The GPU buffer pool: bytes held and in use, now and at most so far, and the kernels
    /// dispatched; null on the CPU.
    #[napi]
    pub fn memory_stats(&self) -> Result<Option<MemoryStats>> {
        guard("memoryStats", || {
            let device = with_model(&self.inner, |m| Ok(m.device()))?;
            Ok(match (device, resnet_core::backend::wgpu::memory_stats()) {
                (Device::Cpu, _) | (_, None) => None,
                #[allow(unreachable_patterns)]
                (_, Some(m)) => Some(MemoryStats {
                    live_bytes: m.reserved as f64,
                    peak_bytes: m.peak_reserved as f64,
                    in_use_bytes: m.in_use as f64,
                    peak_in_use_bytes: m.peak_in_use as f64,
                    dispatches: m.dispatches as f64,
                }),
            })
        })
    }

    /// "cpu" or "gpu": where this model's tensors live.
    #[napi]
    pub fn device(&self) -> Result<String> {
        guard("device", || with_model(&self.inner, |m| Ok(m.device().to_string())))
    }

    /// Frees the model now (waits for a call in flight); later calls throw "model has been disposed".
    #[napi]
    pub fn dispose(&self) {
        let mut slot = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None;
        // Host buffers the model's steps left in the CPU pool go back to the system too.
        resnet_core::backend::cpu::release_cached();
    }

    /// String metadata of the checkpoint this model was loaded from (`spec`, `step`, user keys).
    #[napi]
    pub fn checkpoint_metadata(&self) -> HashMap<String, String> {
        self.metadata.clone().into_iter().collect()
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.inner.lock().map(|s| s.is_none()).unwrap_or(true)
    }
}

/// A model and the metadata of the file it came from, made on the pool, wrapped on the main thread.
type Loaded = (Model, BTreeMap<String, String>);

fn sorted(metadata: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    metadata.unwrap_or_default().into_iter().collect()
}

/// The batch-taking tasks, shared by the JS-array and the loader-batch entry points.
impl NativeModel {
    fn train_on(&self, batch: Arc<Batch>) -> Pending<TrainStats> {
        let model = self.inner.clone();
        job("trainStep", move || {
            with_model(&model, |m| {
                let s = m.train_step(&batch.images, batch.shape, &batch.labels)?;
                Ok(train_stats(m, s))
            })
        })
    }

    fn queue_on(&self, batch: Arc<Batch>) -> Pending<()> {
        let model = self.inner.clone();
        job("queueTrainStep", move || {
            with_model(&model, |m| {
                m.queue_train_step(&batch.images, batch.shape, &batch.labels)
            })
        })
    }

    fn predict_on(&self, batch: Arc<Batch>) -> Pending<Vec<f32>, Float32Array> {
        let model = self.inner.clone();
        job_with(
            "predict",
            move || with_model(&model, |m| m.predict(&batch.images, batch.shape)),
            |logits| Ok(Float32Array::new(logits)),
        )
    }

    fn evaluate_on(&self, batch: Arc<Batch>) -> Pending<EvalStats> {
        let model = self.inner.clone();
        job("evaluateBatch", move || {
            with_model(&model, |m| m.evaluate_batch(&batch.images, batch.shape, &batch.labels)).map(EvalStats::from)
        })
    }
}

/// A step's figures for JS. The rate is the one configured (f64), not the f32 the update used
/// widened (0.10000000149...); a skipped step did not advance the count, so its rate is the next
/// one's.
fn train_stats(m: &Model, s: resnet_core::model::TrainStats) -> TrainStats {
    let attempted = if s.skipped { s.step } else { s.step.saturating_sub(1) };
    TrainStats {
        loss: s.loss as f64,
        correct: s.correct as u32,
        batch: s.batch as u32,
        lr: m.optimizer_config().reported_lr(attempted),
        step: s.step as i64,
        loss_scale: s.loss_scale.map(f64::from),
        skipped: s.skipped,
    }
}

impl From<resnet_core::model::EvalStats> for EvalStats {
    fn from(s: resnet_core::model::EvalStats) -> Self {
        EvalStats {
            loss_sum: s.loss_sum,
            top1: s.top1 as u32,
            top5: s.top5 as u32,
            count: s.count as u32,
        }
    }
}

impl From<resnet_core::model::LayerResponse> for LayerResponse {
    fn from(r: resnet_core::model::LayerResponse) -> Self {
        LayerResponse {
            name: r.name,
            kernel: r.kernel as u32,
            std: r.std,
            mean: r.mean,
        }
    }
}

impl From<resnet_core::model::GradNorm> for GradNorm {
    fn from(g: resnet_core::model::GradNorm) -> Self {
        GradNorm {
            name: g.name,
            kernel: g.kernel as u32,
            norm: g.norm,
            numel: g.numel as u32,
        }
    }
}

/// The running score of a multi-view evaluation (`scoreViews`): the softmax of each image's views
/// averaged, then scored (the rule is the core's `ViewScore`).
#[napi]
pub struct NativeViewScore {
    inner: Arc<Mutex<ViewScore>>,
}

#[napi]
impl NativeViewScore {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NativeViewScore {
            inner: Arc::new(Mutex::new(ViewScore::new())),
        }
    }

    /// Images scored so far (an image whose views may continue in the next batch is not yet).
    #[napi(getter)]
    pub fn scored(&self) -> u32 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).scored() as u32
    }

    /// Scores the last image and returns the sums over every image scored (divide by `count`).
    #[napi]
    pub fn finish(&self) -> EvalStats {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).finish().into()
    }
}
