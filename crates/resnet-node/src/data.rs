//! `NativeDataset` (u8 images held in Rust), `NativeImageFolder` (JPEG/PNG files on disk) and
//! `NativeLoader` (one epoch of normalised, optionally augmented batches prepared on the core's
//! background thread, each a `NativeBatch` that stays in Rust until JS reads it or a model takes
//! it); the image folder's transform options, typed and checked by the core; image decoding.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::data::{
    self, Augment, Batch, Dataset, EvalView, FolderTransform, ImageFolder, Loader, LoaderConfig, Normalize, OnCorrupt,
    Shard, Split, TrainTransform,
};

use crate::convert::{self, count, parse_seed};
use crate::errors::{copy_array, guard, guard_core, invalid, js_error};
use crate::job::{job_with, Pending};

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

/// A dataset held by Rust. Loaders share it; `dispose` lets go of this handle's share now.
#[napi]
pub struct NativeDataset {
    inner: Option<Arc<Dataset>>,
}

impl NativeDataset {
    fn wrap(d: Dataset) -> Self {
        NativeDataset {
            inner: Some(Arc::new(d)),
        }
    }

    /// The dataset, or an Error once `dispose` has been called.
    pub(crate) fn dataset(&self) -> Result<&Arc<Dataset>> {
        self.inner
            .as_ref()
            .ok_or_else(|| invalid("the Dataset has been disposed (its images were freed by dispose())"))
    }
}

#[napi]
impl NativeDataset {
    /// Reads Fashion-MNIST IDX files (gzip or raw) from `dir` (default: the core's default dir).
    #[napi(ts_return_type = "Promise<NativeDataset>")]
    pub fn fashion_mnist(split: String, dir: Option<String>) -> Result<Pending<Dataset, NativeDataset>> {
        let dir = PathBuf::from(dir.unwrap_or_else(|| data::idx::DEFAULT_FASHION_MNIST_DIR.to_string()));
        let split = parse_split(&split)?;
        Ok(read_dataset(move || data::idx::read_fashion_mnist(&dir, split)))
    }

    /// Reads the CIFAR-10 binary batches from `dir`.
    #[napi(ts_return_type = "Promise<NativeDataset>")]
    pub fn cifar10(split: String, dir: String) -> Result<Pending<Dataset, NativeDataset>> {
        let dir = PathBuf::from(dir);
        let split = parse_split(&split)?;
        Ok(read_dataset(move || data::cifar::read_cifar10(&dir, split)))
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
    pub fn files(&self) -> Result<Vec<String>> {
        Ok(self
            .dataset()?
            .files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect())
    }

    #[napi(getter)]
    pub fn length(&self) -> Result<u32> {
        Ok(self.dataset()?.n as u32)
    }

    #[napi(getter)]
    pub fn channels(&self) -> Result<u32> {
        Ok(self.dataset()?.c as u32)
    }

    #[napi(getter)]
    pub fn height(&self) -> Result<u32> {
        Ok(self.dataset()?.h as u32)
    }

    #[napi(getter)]
    pub fn width(&self) -> Result<u32> {
        Ok(self.dataset()?.w as u32)
    }

    #[napi(getter)]
    pub fn num_classes(&self) -> Result<u32> {
        Ok(self.dataset()?.num_classes as u32)
    }

    #[napi(getter)]
    pub fn class_names(&self) -> Result<Vec<String>> {
        Ok(self.dataset()?.class_names.clone())
    }

    /// The labels, copied.
    #[napi]
    pub fn labels(&self) -> Result<Uint8Array> {
        Ok(Uint8Array::new(self.dataset()?.labels.clone()))
    }

    /// Per-channel mean and standard deviation of pixel/255 over the whole dataset.
    #[napi]
    pub fn mean_std(&self) -> Result<MeanStd> {
        let dataset = self.dataset()?;
        guard("Dataset.meanStd", || {
            let (mean, std) = dataset.channel_mean_std();
            Ok(MeanStd {
                mean: mean.into_iter().map(f64::from).collect(),
                std: std.into_iter().map(f64::from).collect(),
            })
        })
    }

    /// The mean image of pixel/255 (channels x height x width values, channel-major).
    #[napi]
    pub fn pixel_mean(&self) -> Result<Float32Array> {
        let dataset = self.dataset()?;
        guard("Dataset.pixelMean", || Ok(Float32Array::new(dataset.pixel_mean())))
    }

    /// A new dataset of the given samples, in that order.
    #[napi]
    pub fn subset(&self, indices: Vec<f64>) -> Result<NativeDataset> {
        let dataset = self.dataset()?;
        let n = dataset.n;
        let indices = convert::indices("Dataset.subset", &indices, n, &format!("the dataset has {n} samples"))?;
        guard("Dataset.subset", || Ok(NativeDataset::wrap(dataset.subset(&indices))))
    }

    /// The first `k` samples and the rest (k is clamped to the length).
    #[napi(ts_return_type = "[NativeDataset, NativeDataset]")]
    pub fn split_at(&self, k: f64) -> Result<Vec<NativeDataset>> {
        let dataset = self.dataset()?;
        let k = count("Dataset.splitAt", "k", k)?;
        guard("Dataset.splitAt", || {
            let (a, b) = dataset.split_at(k);
            Ok(vec![NativeDataset::wrap(a), NativeDataset::wrap(b)])
        })
    }

    /// Lets go of the images now instead of at garbage collection (a loader still running keeps
    /// its share until it finishes); later calls throw naming the disposed Dataset.
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.inner.is_none()
    }
}

fn read_dataset(
    read: impl FnOnce() -> resnet_core::Result<Dataset> + Send + 'static,
) -> Pending<Dataset, NativeDataset> {
    job_with(
        "read dataset",
        move || read().map_err(js_error),
        |d| Ok(NativeDataset::wrap(d)),
    )
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
    /// This rank's part of each global batch in data-parallel training.
    pub shard: Option<ShardOptions>,
}

/// Data-parallel loading: every rank shares one epoch order and takes piece `rank` of `count`
/// of each global batch (`count * batchSize` samples).
#[napi(object)]
pub struct ShardOptions {
    pub rank: u32,
    pub count: u32,
}

fn shard(options: Option<ShardOptions>) -> Result<Shard> {
    let shard = options.map_or(Shard::ALONE, |s| Shard {
        rank: s.rank as usize,
        count: s.count as usize,
    });
    guard_core("DataLoader", || shard.validate())?;
    Ok(shard)
}

/// One batch the loader prepared, kept in Rust: the model takes it as it is (`trainBatch`,
/// `evaluateLoadedBatch`, `predictBatch`); JS reads the values only when it asks (a copy each).
#[napi]
pub struct NativeBatch {
    inner: Option<Arc<Batch>>,
}

impl NativeBatch {
    /// The batch for a model task, or an Error once disposed.
    pub(crate) fn shared(&self) -> Result<Arc<Batch>> {
        self.inner
            .clone()
            .ok_or_else(|| invalid("the batch has been disposed (its values were freed by dispose())"))
    }
}

/// A labelled batch from JS arrays, copied so that JS may reuse them while a task runs.
pub(crate) fn copied_batch(what: &str, images: &[f32], shape: &[f64], labels: &[i32]) -> Result<Batch> {
    Ok(Batch {
        images: copy_array(images, "the batch's images")?,
        labels: copy_array(labels, "the batch's labels")?,
        shape: convert::shape4(what, shape)?,
        ..Batch::default()
    })
}

#[napi]
impl NativeBatch {
    /// A batch from JS arrays (copied): NCHW images, a label per image, and optionally each
    /// row's epoch position (rows sharing one are views of one image).
    #[napi(factory)]
    pub fn from_arrays(
        images: Float32Array,
        labels: Int32Array,
        shape: Vec<f64>,
        positions: Option<Uint32Array>,
    ) -> Result<NativeBatch> {
        let batch = Batch {
            positions: positions
                .map(|p| p.iter().map(|&i| i as usize).collect())
                .unwrap_or_default(),
            ..copied_batch("Batch", &images, &shape, &labels)?
        };
        Ok(NativeBatch {
            inner: Some(Arc::new(batch)),
        })
    }

    /// [N, C, H, W].
    #[napi(getter)]
    pub fn shape(&self) -> Result<Vec<u32>> {
        Ok(self.shared()?.shape.iter().map(|&d| d as u32).collect())
    }

    /// Normalised NCHW pixels (a copy).
    #[napi]
    pub fn images(&self) -> Result<Float32Array> {
        Ok(Float32Array::new(self.shared()?.images.clone()))
    }

    /// Class index of each row (a copy).
    #[napi]
    pub fn labels(&self) -> Result<Int32Array> {
        Ok(Int32Array::new(self.shared()?.labels.clone()))
    }

    /// Dataset index of each row's image.
    #[napi]
    pub fn indices(&self) -> Result<Uint32Array> {
        Ok(Uint32Array::new(
            self.shared()?.indices.iter().map(|&i| i as u32).collect(),
        ))
    }

    /// Position of each row's image in the epoch order; the views of one image share it.
    #[napi]
    pub fn positions(&self) -> Result<Uint32Array> {
        Ok(Uint32Array::new(
            self.shared()?.positions.iter().map(|&i| i as u32).collect(),
        ))
    }

    /// Lets go of the values now (a model task still running keeps its share until it ends).
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
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
        let seed = parse_seed("loader seed", options.seed)?;
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
            shard: shard(options.shard)?,
        };
        let dataset = dataset.dataset()?.clone();
        let loader = guard_core("DataLoader", || Loader::new(dataset, config, epoch as u64))?;
        Ok(NativeLoader::wrap(loader))
    }

    /// Starts preparing the batches of `epoch` of an image folder (decoding on a pool of
    /// `transform.workers` threads): the training transform when `options.train`, else the
    /// evaluation view.
    #[napi(factory)]
    pub fn from_folder(
        folder: &NativeImageFolder,
        options: FolderLoaderOptions,
        transform: FolderTransformOptions,
        epoch: u32,
    ) -> Result<Self> {
        let seed = parse_seed("loader seed", options.seed)?;
        let transform = transform.to_core()?;
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
            shard: shard(options.shard)?,
        };
        let folder = folder.inner.clone();
        let loader = guard_core("DataLoader", || {
            Loader::from_folder(folder, config, transform, epoch as u64)
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
    pub fn next(&self) -> Pending<Option<Batch>, Option<NativeBatch>> {
        let loader = self.inner.clone();
        job_with(
            "DataLoader.next",
            move || {
                let mut slot = loader.lock().unwrap_or_else(|e| e.into_inner());
                match slot.as_mut().and_then(|l| l.next_batch()) {
                    None => Ok(None),
                    Some(batch) => batch.map(Some).map_err(js_error),
                }
            },
            |batch| {
                Ok(batch.map(|b| NativeBatch {
                    inner: Some(Arc::new(b)),
                }))
            },
        )
    }

    /// Stops the background preparation; `next()` then resolves to null.
    #[napi]
    pub fn close(&self) {
        let mut slot = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *slot = None;
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

/// The loader side of `NativeLoader.fromFolder` (the folder's own transform is separate).
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
    pub shard: Option<ShardOptions>,
}

/// Training transform of an image folder, before the random flip.
#[napi(string_enum)]
pub enum TrainTransformName {
    #[napi(value = "randomResizedCrop")]
    RandomResizedCrop,
    #[napi(value = "scaleAugment")]
    ScaleAugment,
    /// The evaluation centre crop.
    #[napi(value = "none")]
    CenterCrop,
}

/// Evaluation view of an image folder (`fullImage` takes its `scales`).
#[napi(string_enum)]
pub enum ViewName {
    #[napi(value = "center")]
    Center,
    #[napi(value = "tenCrop")]
    TenCrop,
    #[napi(value = "fullImage")]
    FullImage,
}

/// What an unreadable image does: fail the batch, or be left out.
#[napi(string_enum)]
pub enum OnCorruptName {
    #[napi(value = "fail")]
    Fail,
    #[napi(value = "skip")]
    Skip,
}

/// An image folder's transforms with every default filled in (TypeScript fills them); checked
/// once, here, by the core's `FolderTransform::validate`.
#[napi(object)]
pub struct FolderTransformOptions {
    /// Crop side S.
    pub size: f64,
    /// Shorter side before the centre crop / ten crops.
    pub resize: f64,
    pub train: TrainTransformName,
    /// Shorter-side range `[min, max]` of 'scaleAugment'.
    pub scale_range: Vec<f64>,
    pub view: ViewName,
    /// Shorter sides of the 'fullImage' views.
    pub scales: Option<Vec<f64>>,
    pub on_corrupt: OnCorruptName,
    /// Decoding threads (absent: one per core, at most 16).
    pub workers: Option<f64>,
}

impl FolderTransformOptions {
    fn to_core(&self) -> Result<FolderTransform> {
        let what = "imageFolder";
        let side = |name: &str, v: f64| -> Result<u32> { Ok(count(what, name, v)? as u32) };
        let train = match self.train {
            TrainTransformName::RandomResizedCrop => TrainTransform::RandomResizedCrop,
            TrainTransformName::CenterCrop => TrainTransform::CenterCrop,
            TrainTransformName::ScaleAugment => match self.scale_range[..] {
                [min, max] => TrainTransform::ScaleAugment {
                    min: side("scaleRange[0]", min)?,
                    max: side("scaleRange[1]", max)?,
                },
                _ => return Err(invalid(format!("{what}: scaleRange must be [min, max]"))),
            },
        };
        let view = match self.view {
            ViewName::Center => EvalView::Center,
            ViewName::TenCrop => EvalView::TenCrop,
            ViewName::FullImage => EvalView::FullImage {
                scales: self
                    .scales
                    .iter()
                    .flatten()
                    .map(|&s| side("fullImage scale", s))
                    .collect::<Result<_>>()?,
            },
        };
        let transform = FolderTransform {
            size: side("size", self.size)?,
            resize: side("resize", self.resize)?,
            train,
            view,
            on_corrupt: match self.on_corrupt {
                OnCorruptName::Fail => OnCorrupt::Fail,
                OnCorruptName::Skip => OnCorrupt::Skip,
            },
            // 0 is the core's "one per core".
            workers: self
                .workers
                .map(|w| count(what, "workers", w))
                .transpose()?
                .unwrap_or(0),
        };
        transform.validate().map_err(js_error)?;
        Ok(transform)
    }
}

/// Checks an image folder's transforms (the rule is the core's), so that a bad option is an
/// Error when the folder is opened, not at its first batch.
#[napi]
pub fn check_folder_transform(transform: FolderTransformOptions) -> Result<()> {
    transform.to_core().map(drop)
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
    pub fn scan(root: String) -> Pending<ImageFolder, NativeImageFolder> {
        let root = PathBuf::from(root);
        job_with(
            "image folder",
            move || ImageFolder::scan(&root).map_err(js_error),
            |folder| {
                Ok(NativeImageFolder {
                    inner: Arc::new(folder),
                })
            },
        )
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

/// A decoded image: RGBA pixels, row-major.
#[napi(object)]
pub struct DecodedImage {
    pub data: Uint8Array,
    pub width: u32,
    pub height: u32,
}

/// Decodes JPEG or PNG bytes (format from the content) to 8-bit RGBA, off the main thread.
#[napi(ts_return_type = "Promise<DecodedImage>")]
pub fn decode_image(bytes: Uint8Array) -> Pending<(Vec<u8>, u32, u32), DecodedImage> {
    let bytes = bytes.to_vec();
    job_with(
        "decode image",
        move || data::folder::decode_rgba_bytes(&bytes).map_err(js_error),
        |(data, width, height)| {
            Ok(DecodedImage {
                data: Uint8Array::new(data),
                width,
                height,
            })
        },
    )
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
