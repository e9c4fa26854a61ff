//! `NativeModel`: a ResNet owned by Rust. Long calls (train step, predict, evaluate, save, load)
//! are `AsyncTask`s on the libuv pool; the rest are quick synchronous calls.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::model::Model;
use resnet_core::nn::ResNetSpec;
use resnet_core::optim::SgdConfig;
use resnet_core::Device;

use crate::convert::{count, parse_device, shape4};
use crate::errors::{copy_array, guard, guard_core, invalid, js_error};
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

/// A seed from a JS number: a non-negative integer up to 2^53.
fn parse_seed(seed: Option<f64>) -> Result<u64> {
    let s = seed.unwrap_or(0.0);
    if !(s.is_finite() && s >= 0.0 && s.fract() == 0.0 && s <= 9_007_199_254_740_992.0) {
        return Err(invalid(format!("seed must be a non-negative integer, got {s}")));
    }
    Ok(s as u64)
}

/// Scalars of one training step.
#[napi(object)]
pub struct TrainStats {
    pub loss: f64,
    pub correct: u32,
    pub batch: u32,
    pub lr: f64,
    pub step: i64,
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
    pub live_bytes: f64,
    pub peak_bytes: f64,
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
            let seed = parse_seed(seed)?;
            let spec = ResNetSpec::from_json(&spec_json).map_err(js_error)?;
            Model::new(spec, seed, device)
                .map(|m| NativeModel::wrap(m, BTreeMap::new()))
                .map_err(js_error)
        })
    }

    /// Rebuilds a model from a checkpoint (architecture from the file), off the main thread.
    #[napi(ts_return_type = "Promise<NativeModel>")]
    pub fn load(path: String, device: Option<String>) -> Result<AsyncTask<LoadTask>> {
        let device = parse_device(device.as_deref())?;
        Ok(AsyncTask::new(LoadTask {
            path: PathBuf::from(path),
            device,
        }))
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

    /// Optimizer steps taken so far.
    #[napi]
    pub fn step(&self) -> Result<i64> {
        guard("step", || with_model(&self.inner, |m| Ok(m.step() as i64)))
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

    /// Replaces the optimizer (SGD config JSON: lr, momentum, weightDecay, nesterov, schedule).
    #[napi]
    pub fn configure_optimizer(&self, config_json: String) -> Result<()> {
        guard("configureOptimizer", || {
            let cfg = SgdConfig::from_json(&config_json).map_err(js_error)?;
            with_model(&self.inner, |m| m.configure_optimizer(cfg))
        })
    }

    /// One forward + loss + backward + optimizer update on a worker thread.
    #[napi(ts_return_type = "Promise<TrainStats>")]
    pub fn train_step(
        &self,
        images: Float32Array,
        shape: Vec<f64>,
        labels: Int32Array,
    ) -> Result<AsyncTask<TrainStepTask>> {
        Ok(AsyncTask::new(TrainStepTask {
            model: self.inner.clone(),
            images: copy_array(&images, "the batch's images")?,
            shape: shape4("trainStep", &shape)?,
            labels: copy_array(&labels, "the batch's labels")?,
        }))
    }

    /// Logits [N, numClasses] (eval mode) on a worker thread.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn predict(&self, images: Float32Array, shape: Vec<f64>) -> Result<AsyncTask<PredictTask>> {
        Ok(AsyncTask::new(PredictTask {
            model: self.inner.clone(),
            images: copy_array(&images, "the batch's images")?,
            shape: shape4("predict", &shape)?,
        }))
    }

    /// Loss sum and top-1/top-5 hits of one labelled batch (eval mode) on a worker thread.
    #[napi(ts_return_type = "Promise<EvalStats>")]
    pub fn evaluate_batch(
        &self,
        images: Float32Array,
        shape: Vec<f64>,
        labels: Int32Array,
    ) -> Result<AsyncTask<EvaluateTask>> {
        Ok(AsyncTask::new(EvaluateTask {
            model: self.inner.clone(),
            images: copy_array(&images, "the batch's images")?,
            shape: shape4("evaluateBatch", &shape)?,
            labels: copy_array(&labels, "the batch's labels")?,
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
    ) -> Result<AsyncTask<LayerResponsesTask>> {
        Ok(AsyncTask::new(LayerResponsesTask {
            model: self.inner.clone(),
            images: copy_array(&images, "the batch's images")?,
            shape: shape4("layerResponses", &shape)?,
            training,
        }))
    }

    /// L2 norms of d(loss)/dW for every convolution weight and the classifier's weight, in layer
    /// order, for one labelled batch in training mode, on a worker thread. The model is not
    /// changed (parameters, statistics, optimizer state, step, gradients).
    #[napi(ts_return_type = "Promise<GradNorm[]>")]
    pub fn gradient_norms(
        &self,
        images: Float32Array,
        labels: Int32Array,
        shape: Vec<f64>,
    ) -> Result<AsyncTask<GradientNormsTask>> {
        Ok(AsyncTask::new(GradientNormsTask {
            model: self.inner.clone(),
            images: copy_array(&images, "the batch's images")?,
            labels: copy_array(&labels, "the batch's labels")?,
            shape: shape4("gradientNorms", &shape)?,
        }))
    }

    /// Writes a safetensors checkpoint (atomic) with string metadata.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save(&self, path: String, metadata: Option<HashMap<String, String>>) -> AsyncTask<SaveTask> {
        AsyncTask::new(SaveTask {
            model: self.inner.clone(),
            path: PathBuf::from(path),
            metadata: metadata.unwrap_or_default().into_iter().collect(),
            weights_only: false,
        })
    }

    /// Writes only the state dict (weights, running statistics, int64 `num_batches_tracked`,
    /// torchvision names) that PyTorch's `load_state_dict(..., strict=True)` takes; atomic.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn export_weights(&self, path: String, metadata: Option<HashMap<String, String>>) -> AsyncTask<SaveTask> {
        AsyncTask::new(SaveTask {
            model: self.inner.clone(),
            path: PathBuf::from(path),
            metadata: metadata.unwrap_or_default().into_iter().collect(),
            weights_only: true,
        })
    }

    /// Loads weights from a checkpoint of the same architecture into this model; resolves to the
    /// checkpoint's metadata.
    #[napi(ts_return_type = "Promise<Record<string, string>>")]
    pub fn load_weights(&self, path: String) -> AsyncTask<LoadWeightsTask> {
        AsyncTask::new(LoadWeightsTask {
            model: self.inner.clone(),
            path: PathBuf::from(path),
        })
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
            with_model(&self.inner, |m| m.forward(&x.inner, training)).map(NativeTensor::from)
        })
    }

    /// Pooled features [N, C] before the classifier.
    #[napi]
    pub fn features(&self, x: &NativeTensor, training: bool) -> Result<NativeTensor> {
        guard("features", || {
            with_model(&self.inner, |m| m.features(&x.inner, training)).map(NativeTensor::from)
        })
    }

    /// The output of every stage (C2..C5 for the ImageNet nets); with `training` the graph is
    /// recorded for `backward()`.
    #[napi]
    pub fn stage_outputs(&self, x: &NativeTensor, training: bool) -> Result<Vec<NativeTensor>> {
        guard("stageOutputs", || {
            with_model(&self.inner, |m| m.stage_outputs(&x.inner, training))
                .map(|v| v.into_iter().map(NativeTensor::from).collect())
        })
    }

    /// Device memory of the GPU buffer pool: bytes held now and at most so far; null on the CPU.
    #[napi]
    pub fn memory_stats(&self) -> Result<Option<MemoryStats>> {
        guard("memoryStats", || {
            let device = with_model(&self.inner, |m| Ok(m.device()))?;
            Ok(match (device, resnet_core::backend::gpu_memory_stats()) {
                (Device::Cpu, _) | (_, None) => None,
                #[allow(unreachable_patterns)]
                (_, Some((live, peak))) => Some(MemoryStats {
                    live_bytes: live as f64,
                    peak_bytes: peak as f64,
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

pub struct TrainStepTask {
    model: Shared,
    images: Vec<f32>,
    shape: [usize; 4],
    labels: Vec<i32>,
}

impl Task for TrainStepTask {
    type Output = TrainStats;
    type JsValue = TrainStats;

    fn compute(&mut self) -> Result<TrainStats> {
        guard("trainStep", || {
            // The rate as configured (f64), not the f32 the update used widened (0.10000000149...).
            let (s, lr) = with_model(&self.model, |m| {
                let s = m.train_step(&self.images, self.shape, &self.labels)?;
                let lr = m.optimizer_config().reported_lr(s.step.saturating_sub(1));
                Ok((s, lr))
            })?;
            Ok(TrainStats {
                loss: s.loss as f64,
                correct: s.correct as u32,
                batch: s.batch as u32,
                lr,
                step: s.step as i64,
            })
        })
    }

    fn resolve(&mut self, _env: Env, output: TrainStats) -> Result<TrainStats> {
        Ok(output)
    }
}

pub struct PredictTask {
    model: Shared,
    images: Vec<f32>,
    shape: [usize; 4],
}

impl Task for PredictTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> Result<Vec<f32>> {
        guard("predict", || {
            with_model(&self.model, |m| m.predict(&self.images, self.shape))
        })
    }

    fn resolve(&mut self, _env: Env, output: Vec<f32>) -> Result<Float32Array> {
        Ok(Float32Array::new(output))
    }
}

pub struct EvaluateTask {
    model: Shared,
    images: Vec<f32>,
    shape: [usize; 4],
    labels: Vec<i32>,
}

impl Task for EvaluateTask {
    type Output = EvalStats;
    type JsValue = EvalStats;

    fn compute(&mut self) -> Result<EvalStats> {
        guard("evaluateBatch", || {
            let s = with_model(&self.model, |m| {
                m.evaluate_batch(&self.images, self.shape, &self.labels)
            })?;
            Ok(EvalStats {
                loss_sum: s.loss_sum,
                top1: s.top1 as u32,
                top5: s.top5 as u32,
                count: s.count as u32,
            })
        })
    }

    fn resolve(&mut self, _env: Env, output: EvalStats) -> Result<EvalStats> {
        Ok(output)
    }
}

pub struct LayerResponsesTask {
    model: Shared,
    images: Vec<f32>,
    shape: [usize; 4],
    training: bool,
}

impl Task for LayerResponsesTask {
    type Output = Vec<LayerResponse>;
    type JsValue = Vec<LayerResponse>;

    fn compute(&mut self) -> Result<Vec<LayerResponse>> {
        guard("layerResponses", || {
            let rows = with_model(&self.model, |m| {
                m.layer_responses(&self.images, self.shape, self.training)
            })?;
            Ok(rows
                .into_iter()
                .map(|r| LayerResponse {
                    name: r.name,
                    kernel: r.kernel as u32,
                    std: r.std,
                    mean: r.mean,
                })
                .collect())
        })
    }

    fn resolve(&mut self, _env: Env, output: Vec<LayerResponse>) -> Result<Vec<LayerResponse>> {
        Ok(output)
    }
}

pub struct GradientNormsTask {
    model: Shared,
    images: Vec<f32>,
    labels: Vec<i32>,
    shape: [usize; 4],
}

impl Task for GradientNormsTask {
    type Output = Vec<GradNorm>;
    type JsValue = Vec<GradNorm>;

    fn compute(&mut self) -> Result<Vec<GradNorm>> {
        guard("gradientNorms", || {
            let rows = with_model(&self.model, |m| {
                m.gradient_norms(&self.images, &self.labels, self.shape)
            })?;
            Ok(rows
                .into_iter()
                .map(|g| GradNorm {
                    name: g.name,
                    kernel: g.kernel as u32,
                    norm: g.norm,
                    numel: g.numel as u32,
                })
                .collect())
        })
    }

    fn resolve(&mut self, _env: Env, output: Vec<GradNorm>) -> Result<Vec<GradNorm>> {
        Ok(output)
    }
}

pub struct SaveTask {
    model: Shared,
    path: PathBuf,
    metadata: BTreeMap<String, String>,
    weights_only: bool,
}

impl Task for SaveTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        let metadata = std::mem::take(&mut self.metadata);
        if self.weights_only {
            return guard("exportWeights", || {
                with_model(&self.model, |m| m.export_weights(&self.path, metadata))
            });
        }
        guard("save", || {
            with_model(&self.model, |m| m.save_checkpoint(&self.path, metadata))
        })
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

pub struct LoadWeightsTask {
    model: Shared,
    path: PathBuf,
}

impl Task for LoadWeightsTask {
    type Output = BTreeMap<String, String>;
    type JsValue = HashMap<String, String>;

    fn compute(&mut self) -> Result<BTreeMap<String, String>> {
        guard("loadWeights", || {
            with_model(&self.model, |m| m.load_weights(&self.path))
        })
    }

    fn resolve(&mut self, _env: Env, output: BTreeMap<String, String>) -> Result<HashMap<String, String>> {
        Ok(output.into_iter().collect())
    }
}

pub struct LoadTask {
    path: PathBuf,
    device: Device,
}

impl Task for LoadTask {
    type Output = (Model, BTreeMap<String, String>);
    type JsValue = NativeModel;

    fn compute(&mut self) -> Result<Self::Output> {
        guard_core("load", || Model::load_checkpoint(&self.path, self.device))
    }

    fn resolve(&mut self, _env: Env, (model, metadata): Self::Output) -> Result<NativeModel> {
        Ok(NativeModel::wrap(model, metadata))
    }
}
