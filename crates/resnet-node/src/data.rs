//! `NativeDataset` (u8 images held in Rust), `NativeImageFolder` (JPEG/PNG files on disk) and
//! `NativeLoader` (one epoch of normalised, optionally augmented batches prepared on the core's
//! background thread, handed to JS without a copy); image decoding helpers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::data::{
    self, Augment, Batch, Dataset, EvalView, FolderTransform, ImageFolder, Loader, LoaderConfig, Normalize, OnCorrupt,
    Split, TrainTransform,
};

use crate::convert::{self, count};
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
        channels: f64,
        height: f64,
        width: f64,
        num_classes: f64,
        class_names: Option<Vec<String>>,
    ) -> Result<Self> {
        let what = "Dataset.fromArrays";
        let (channels, height, width, num_classes) = (
            count(what, "channels", channels)?,
            count(what, "height", height)?,
            count(what, "width", width)?,
            count(what, "numClasses", num_classes)?,
        );
        guard_core(what, || {
            Dataset::new(
                images.to_vec(),
                labels.to_vec(),
                channels,
                height,
                width,
                num_classes,
                class_names.unwrap_or_default(),
            )
        })
        .map(NativeDataset::wrap)
    }

    /// The files the samples were read from (Fashion-MNIST: the images and labels files actually
    /// read; CIFAR-10: the batches); empty for a dataset built from arrays.
    #[napi(getter)]
    pub fn files(&self) -> Vec<String> {
        self.inner
            .files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
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

    /// The mean image of pixel/255 (channels x height x width values, channel-major).
    #[napi]
    pub fn pixel_mean(&self) -> Result<Float32Array> {
        guard("Dataset.pixelMean", || Ok(Float32Array::new(self.inner.pixel_mean())))
    }

    /// A new dataset of the given samples, in that order.
    #[napi]
    pub fn subset(&self, indices: Vec<f64>) -> Result<NativeDataset> {
        let n = self.inner.n;
        let indices = convert::indices("Dataset.subset", &indices, n, &format!("the dataset has {n} samples"))?;
        guard("Dataset.subset", || {
            Ok(NativeDataset::wrap(self.inner.subset(&indices)))
        })
    }

    /// The first `k` samples and the rest (k is clamped to the length).
    #[napi(ts_return_type = "[NativeDataset, NativeDataset]")]
    pub fn split_at(&self, k: f64) -> Result<Vec<NativeDataset>> {
        let k = count("Dataset.splitAt", "k", k)?;
        guard("Dataset.splitAt", || {
            let (a, b) = self.inner.split_at(k);
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
    /// A mean image (c*h*w values of pixel/255) subtracted before augmentation:
    /// `(pixel/255 - pixelMean - mean) / std`.
    pub pixel_mean: Option<Float32Array>,
    pub seed: Option<f64>,
}

/// One batch: normalised NCHW pixels, integer labels and the shape.
#[napi(object)]
pub struct NativeBatch {
    pub images: Float32Array,
    pub labels: Int32Array,
    pub shape: Vec<u32>,
    /// Dataset index of each image (row).
    pub indices: Uint32Array,
    /// Position of each row's image in the epoch order; the views of one image share it.
    pub positions: Uint32Array,
}

fn parse_seed(seed: Option<f64>) -> Result<u64> {
    let seed = seed.unwrap_or(0.0);
    if !(seed.is_finite() && seed >= 0.0 && seed.fract() == 0.0) {
        return Err(invalid(format!(
            "loader seed must be a non-negative integer, got {seed}"
        )));
    }
    Ok(seed as u64)
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
        let seed = parse_seed(options.seed)?;
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
                pixel_mean: options.pixel_mean.map(|p| p.to_vec()),
            },
            seed,
        };
        let loader = guard_core("DataLoader", || {
            Loader::new(dataset.inner.clone(), config, epoch as u64)
        })?;
        Ok(NativeLoader::wrap(loader))
    }

    /// Starts preparing the batches of `epoch` of an image folder (decoding on a pool of
    /// `options.workers` threads): the training transform when `options.train`, else the
    /// evaluation view.
    #[napi(factory)]
    pub fn from_folder(folder: &NativeImageFolder, options: FolderLoaderOptions, epoch: u32) -> Result<Self> {
        let seed = parse_seed(options.seed)?;
        let train = match options.train_transform.as_str() {
            "randomResizedCrop" => TrainTransform::RandomResizedCrop,
            "scaleAugment" => TrainTransform::ScaleAugment {
                min: options.scale_min.unwrap_or(256),
                max: options.scale_max.unwrap_or(480),
            },
            "none" => TrainTransform::CenterCrop,
            other => {
                return Err(invalid(format!(
                    "unknown train transform '{other}' (expected 'randomResizedCrop', 'scaleAugment' or 'none')"
                )))
            }
        };
        let view = match options.view.as_str() {
            "center" => EvalView::Center,
            "tenCrop" => EvalView::TenCrop,
            "fullImage" => EvalView::FullImage {
                scales: options.scales.unwrap_or_default(),
            },
            other => {
                return Err(invalid(format!(
                    "unknown view '{other}' (expected 'center', 'tenCrop' or 'fullImage')"
                )))
            }
        };
        let on_corrupt = match options.on_corrupt.as_str() {
            "fail" => OnCorrupt::Fail,
            "skip" => OnCorrupt::Skip,
            other => {
                return Err(invalid(format!(
                    "unknown onCorrupt '{other}' (expected 'fail' or 'skip')"
                )))
            }
        };
        let transform = FolderTransform {
            size: options.size,
            resize: options.resize,
            train,
            view,
            on_corrupt,
            workers: options.workers.unwrap_or(0) as usize,
        };
        let config = LoaderConfig {
            batch_size: options.batch_size as usize,
            shuffle: options.shuffle,
            drop_last: options.drop_last.unwrap_or(false),
            augment: options.train.then_some(Augment {
                pad_crop: 0,
                flip: options.flip,
            }),
            normalize: Normalize {
                mean: options.mean.into_iter().map(|v| v as f32).collect(),
                std: options.std.into_iter().map(|v| v as f32).collect(),
                pixel_mean: None,
            },
            seed,
        };
        let loader = guard_core("DataLoader", || {
            Loader::from_folder(folder.inner.clone(), config, transform, epoch as u64)
        })?;
        Ok(NativeLoader::wrap(loader))
    }

    /// Number of batches in this epoch (an upper bound when an image folder skips files).
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
            indices: Uint32Array::new(b.indices.iter().map(|&i| i as u32).collect()),
            positions: Uint32Array::new(b.positions.iter().map(|&i| i as u32).collect()),
        }))
    }
}

impl NativeLoader {
    fn wrap(loader: Loader) -> Self {
        let batches = loader.len() as u32;
        NativeLoader {
            inner: Arc::new(Mutex::new(Some(loader))),
            batches,
        }
    }
}

/// Options of `NativeLoader.fromFolder` (the TypeScript `ImageFolder` resolves them).
#[napi(object)]
pub struct FolderLoaderOptions {
    pub batch_size: u32,
    pub shuffle: bool,
    pub drop_last: Option<bool>,
    /// Training transform (true) or evaluation view (false).
    pub train: bool,
    /// Random horizontal flip when training.
    pub flip: bool,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub seed: Option<f64>,
    /// Crop side S.
    pub size: u32,
    /// Shorter side before the centre crop / ten crops.
    pub resize: u32,
    /// 'randomResizedCrop' | 'scaleAugment' | 'none'.
    pub train_transform: String,
    pub scale_min: Option<u32>,
    pub scale_max: Option<u32>,
    /// 'center' | 'tenCrop' | 'fullImage'.
    pub view: String,
    /// Shorter sides of the 'fullImage' views.
    pub scales: Option<Vec<u32>>,
    /// 'fail' | 'skip'.
    pub on_corrupt: String,
    /// Decoding threads (0 or absent: one per core, at most 16).
    pub workers: Option<u32>,
}

/// A file an image-folder loader left out, and why.
#[napi(object)]
pub struct SkippedFile {
    pub path: String,
    pub reason: String,
}

/// An image folder `root/<class>/<image>.{jpg,jpeg,png}`: paths and classes; pixels are decoded
/// per batch by the loader.
#[napi]
pub struct NativeImageFolder {
    pub(crate) inner: Arc<ImageFolder>,
}

#[napi]
impl NativeImageFolder {
    /// Lists the folder (off the main thread); throws naming the path when the root is missing,
    /// has no class folders, or a class folder has no images.
    #[napi(ts_return_type = "Promise<NativeImageFolder>")]
    pub fn scan(root: String) -> AsyncTask<ScanFolderTask> {
        AsyncTask::new(ScanFolderTask {
            root: PathBuf::from(root),
        })
    }

    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.inner.len() as u32
    }

    #[napi(getter)]
    pub fn num_classes(&self) -> u32 {
        self.inner.num_classes() as u32
    }

    /// Folder names, in class-index order.
    #[napi(getter)]
    pub fn class_names(&self) -> Vec<String> {
        self.inner.class_names().to_vec()
    }

    #[napi(getter)]
    pub fn root(&self) -> String {
        self.inner.root().to_string_lossy().into_owned()
    }

    /// Class index of each image.
    #[napi]
    pub fn labels(&self) -> Int32Array {
        Int32Array::new(self.inner.labels().iter().map(|&l| l as i32).collect())
    }

    /// Image paths, in sample order.
    #[napi]
    pub fn paths(&self) -> Vec<String> {
        self.inner
            .paths()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    /// Files left out so far (onCorrupt 'skip'), sorted by path.
    #[napi]
    pub fn skipped(&self) -> Vec<SkippedFile> {
        self.inner
            .skipped()
            .into_iter()
            .map(|s| SkippedFile {
                path: s.path.to_string_lossy().into_owned(),
                reason: s.reason,
            })
            .collect()
    }

    /// The given samples, in that order (sharing the skipped-file record).
    #[napi]
    pub fn subset(&self, indices: Vec<f64>) -> Result<NativeImageFolder> {
        let n = self.inner.len();
        let indices = convert::indices("ImageFolder.subset", &indices, n, &format!("the folder has {n} images"))?;
        guard("ImageFolder.subset", || {
            Ok(NativeImageFolder {
                inner: Arc::new(self.inner.subset(&indices)),
            })
        })
    }
}

pub struct ScanFolderTask {
    root: PathBuf,
}

impl Task for ScanFolderTask {
    type Output = ImageFolder;
    type JsValue = NativeImageFolder;

    fn compute(&mut self) -> Result<ImageFolder> {
        guard_core("image folder", || ImageFolder::scan(&self.root))
    }

    fn resolve(&mut self, _env: Env, output: ImageFolder) -> Result<NativeImageFolder> {
        Ok(NativeImageFolder {
            inner: Arc::new(output),
        })
    }
}

/// A decoded image: RGBA pixels, row-major.
#[napi(object)]
pub struct DecodedImage {
    pub data: Uint8Array,
    pub width: u32,
    pub height: u32,
}

/// Decodes JPEG or PNG bytes (format from the content) to 8-bit RGBA, off the main thread.
#[napi(ts_return_type = "Promise<DecodedImage>")]
pub fn decode_image(bytes: Uint8Array) -> AsyncTask<DecodeImageTask> {
    AsyncTask::new(DecodeImageTask { bytes: bytes.to_vec() })
}

pub struct DecodeImageTask {
    bytes: Vec<u8>,
}

impl Task for DecodeImageTask {
    type Output = (Vec<u8>, u32, u32);
    type JsValue = DecodedImage;

    fn compute(&mut self) -> Result<(Vec<u8>, u32, u32)> {
        guard_core("decode image", || data::folder::decode_rgba_bytes(&self.bytes))
    }

    fn resolve(&mut self, _env: Env, (data, width, height): (Vec<u8>, u32, u32)) -> Result<DecodedImage> {
        Ok(DecodedImage {
            data: Uint8Array::new(data),
            width,
            height,
        })
    }
}

/// Encodes interleaved 8-bit pixels (1 grey, 2 grey+alpha, 3 RGB or 4 RGBA channels) as PNG, or
/// as JPEG when `jpegQuality` (1-100) is given.
#[napi]
pub fn encode_image(
    pixels: Uint8Array,
    width: u32,
    height: u32,
    channels: u32,
    jpeg_quality: Option<u32>,
) -> Result<Uint8Array> {
    let quality = jpeg_quality.map(|q| q.clamp(1, 100) as u8);
    guard_core("encode image", || {
        data::folder::encode_image(&pixels, width, height, channels, quality)
    })
    .map(Uint8Array::new)
}
