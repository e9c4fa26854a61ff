//! `NativeDataset` (u8 images held in Rust) and `NativeLoader` (one epoch of normalised, optionally
//! augmented batches prepared on the core's background thread, handed to JS without a copy).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::data::{self, Augment, Batch, Dataset, Loader, LoaderConfig, Normalize, Split};

use crate::errors::{guard, guard_core, invalid, js_error};

fn parse_split(split: &str) -> Result<Split> {
    match split {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        other => Err(invalid(format!("unknown split '{other}' (expected 'train' or 'test')"))),
    }
}

/// Per-channel statistics of pixel/255.
#[napi(object)]
pub struct MeanStd {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

#[napi]
pub struct NativeDataset {
    pub(crate) inner: Arc<Dataset>,
}

impl NativeDataset {
    fn wrap(d: Dataset) -> Self {
        NativeDataset { inner: Arc::new(d) }
    }
}

#[napi]
impl NativeDataset {
    /// Reads Fashion-MNIST IDX files (gzip or raw) from `dir` (default: the core's default dir).
    #[napi(ts_return_type = "Promise<NativeDataset>")]
    pub fn fashion_mnist(split: String, dir: Option<String>) -> Result<AsyncTask<ReadDatasetTask>> {
        let dir = PathBuf::from(dir.unwrap_or_else(|| data::idx::DEFAULT_FASHION_MNIST_DIR.to_string()));
        Ok(AsyncTask::new(ReadDatasetTask {
            format: Format::FashionMnist,
            dir,
            split: parse_split(&split)?,
        }))
    }

    /// Reads the CIFAR-10 binary batches from `dir`.
    #[napi(ts_return_type = "Promise<NativeDataset>")]
    pub fn cifar10(split: String, dir: String) -> Result<AsyncTask<ReadDatasetTask>> {
        Ok(AsyncTask::new(ReadDatasetTask {
            format: Format::Cifar10,
            dir: PathBuf::from(dir),
            split: parse_split(&split)?,
        }))
    }

    /// A dataset from u8 pixels (NCHW, N = labels.length) and u8 labels, both copied.
    #[napi(factory)]
    pub fn from_arrays(
        images: Uint8Array,
        labels: Uint8Array,
        channels: u32,
        height: u32,
        width: u32,
        num_classes: u32,
        class_names: Option<Vec<String>>,
    ) -> Result<Self> {
        guard_core("Dataset.fromArrays", || {
            Dataset::new(
                images.to_vec(),
                labels.to_vec(),
                channels as usize,
                height as usize,
                width as usize,
                num_classes as usize,
                class_names.unwrap_or_default(),
            )
        })
        .map(NativeDataset::wrap)
    }

    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.inner.n as u32
    }

    #[napi(getter)]
    pub fn channels(&self) -> u32 {
        self.inner.c as u32
    }

    #[napi(getter)]
    pub fn height(&self) -> u32 {
        self.inner.h as u32
    }

    #[napi(getter)]
    pub fn width(&self) -> u32 {
        self.inner.w as u32
    }

    #[napi(getter)]
    pub fn num_classes(&self) -> u32 {
        self.inner.num_classes as u32
    }

    #[napi(getter)]
    pub fn class_names(&self) -> Vec<String> {
        self.inner.class_names.clone()
    }

    /// The labels, copied.
    #[napi]
    pub fn labels(&self) -> Uint8Array {
        Uint8Array::new(self.inner.labels.clone())
    }

    /// Per-channel mean and standard deviation of pixel/255 over the whole dataset.
    #[napi]
    pub fn mean_std(&self) -> Result<MeanStd> {
        guard("Dataset.meanStd", || {
            let (mean, std) = self.inner.channel_mean_std();
            Ok(MeanStd {
                mean: mean.into_iter().map(f64::from).collect(),
                std: std.into_iter().map(f64::from).collect(),
            })
        })
    }

    /// A new dataset of the given samples, in that order.
    #[napi]
    pub fn subset(&self, indices: Vec<u32>) -> Result<NativeDataset> {
        let n = self.inner.n;
        if let Some((at, &i)) = indices.iter().enumerate().find(|(_, &i)| i as usize >= n) {
            return Err(invalid(format!(
                "Dataset.subset: index {i} at position {at} is out of range (the dataset has {n} samples)"
            )));
        }
        let indices: Vec<usize> = indices.into_iter().map(|i| i as usize).collect();
        guard("Dataset.subset", || {
            Ok(NativeDataset::wrap(self.inner.subset(&indices)))
        })
    }

    /// The first `k` samples and the rest (k is clamped to the length).
    #[napi(ts_return_type = "[NativeDataset, NativeDataset]")]
    pub fn split_at(&self, k: u32) -> Result<Vec<NativeDataset>> {
        guard("Dataset.splitAt", || {
            let (a, b) = self.inner.split_at(k as usize);
            Ok(vec![NativeDataset::wrap(a), NativeDataset::wrap(b)])
        })
    }
}

enum Format {
    FashionMnist,
    Cifar10,
}

pub struct ReadDatasetTask {
    format: Format,
    dir: PathBuf,
    split: Split,
}

impl Task for ReadDatasetTask {
    type Output = Dataset;
    type JsValue = NativeDataset;

    fn compute(&mut self) -> Result<Dataset> {
        guard_core("read dataset", || match self.format {
            Format::FashionMnist => data::idx::read_fashion_mnist(&self.dir, self.split),
            Format::Cifar10 => data::cifar::read_cifar10(&self.dir, self.split),
        })
    }

    fn resolve(&mut self, _env: Env, output: Dataset) -> Result<NativeDataset> {
        Ok(NativeDataset::wrap(output))
    }
}

/// Random crop after zero padding, and random horizontal flip.
#[napi(object)]
pub struct AugmentOptions {
    pub pad_crop: u32,
    pub flip: bool,
}

#[napi(object)]
pub struct LoaderOptions {
    pub batch_size: u32,
    pub shuffle: bool,
    pub drop_last: Option<bool>,
    pub augment: Option<AugmentOptions>,
    /// Per-channel normalisation `(pixel/255 - mean) / std`.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub seed: Option<f64>,
}

/// One batch: normalised NCHW pixels, integer labels and the shape.
#[napi(object)]
pub struct NativeBatch {
    pub images: Float32Array,
    pub labels: Int32Array,
    pub shape: Vec<u32>,
}

#[napi]
pub struct NativeLoader {
    inner: Arc<Mutex<Option<Loader>>>,
    batches: u32,
}

#[napi]
impl NativeLoader {
    /// Starts preparing the batches of `epoch` in the background (order depends on seed and epoch).
    #[napi(constructor)]
    pub fn new(dataset: &NativeDataset, options: LoaderOptions, epoch: u32) -> Result<Self> {
        let seed = options.seed.unwrap_or(0.0);
        if !(seed.is_finite() && seed >= 0.0 && seed.fract() == 0.0) {
            return Err(invalid(format!(
                "loader seed must be a non-negative integer, got {seed}"
            )));
        }
        let config = LoaderConfig {
            batch_size: options.batch_size as usize,
            shuffle: options.shuffle,
            drop_last: options.drop_last.unwrap_or(false),
            augment: options.augment.map(|a| Augment {
                pad_crop: a.pad_crop as usize,
                flip: a.flip,
            }),
            normalize: Normalize {
                mean: options.mean.into_iter().map(|v| v as f32).collect(),
                std: options.std.into_iter().map(|v| v as f32).collect(),
            },
            seed: seed as u64,
        };
        let loader = guard_core("DataLoader", || {
            Loader::new(dataset.inner.clone(), config, epoch as u64)
        })?;
        let batches = loader.len() as u32;
        Ok(NativeLoader {
            inner: Arc::new(Mutex::new(Some(loader))),
            batches,
        })
    }

    /// Number of batches in this epoch.
    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.batches
    }

    /// The next batch, or null after the last one (waits off the main thread).
    #[napi(ts_return_type = "Promise<NativeBatch | null>")]
    pub fn next(&self) -> AsyncTask<NextBatchTask> {
        AsyncTask::new(NextBatchTask {
            loader: self.inner.clone(),
        })
    }

    /// Stops the background preparation; `next()` then resolves to null.
    #[napi]
    pub fn close(&self) {
        let mut slot = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None;
    }
}

pub struct NextBatchTask {
    loader: Arc<Mutex<Option<Loader>>>,
}

impl Task for NextBatchTask {
    type Output = Option<Batch>;
    type JsValue = Option<NativeBatch>;

    fn compute(&mut self) -> Result<Option<Batch>> {
        guard("DataLoader.next", || {
            let mut slot = self.loader.lock().unwrap_or_else(|e| e.into_inner());
            match slot.as_mut().and_then(|l| l.next_batch()) {
                None => Ok(None),
                Some(batch) => batch.map(Some).map_err(js_error),
            }
        })
    }

    fn resolve(&mut self, _env: Env, output: Option<Batch>) -> Result<Option<NativeBatch>> {
        Ok(output.map(|b| NativeBatch {
            shape: b.shape.iter().map(|&d| d as u32).collect(),
            images: Float32Array::new(b.images),
            labels: Int32Array::new(b.labels),
        }))
    }
}
