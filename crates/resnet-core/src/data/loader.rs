//! Epoch batch loader: shuffles, augments and normalises on a background thread so the training
//! loop only ever waits on a channel.
//!
//! Reproducibility: the order is a function of (seed, epoch) and each sample's augmentation is a
//! function of (seed, epoch, position in the epoch's order) — not of the batch size, of which
//! thread prepared it, or of timing — so a run repeats exactly.
//!
//! Two sources: an in-memory u8 [`Dataset`] ([`Loader::new`]) and an [`ImageFolder`]
//! ([`Loader::from_folder`]), whose images are decoded and transformed per batch on a small
//! thread pool of the loader's own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::augment::{self, uniform_below, CropFlip};
use super::folder::{self, EvalView, FolderTransform, ImageFolder, OnCorrupt};
use super::shard::{batch_ranges, Shard};
use super::Dataset;
use crate::error::{Error, Result};
use std::ops::Range;

/// Per-channel normalisation, applied as `(pixel/255 - mean) / std`; with `pixel_mean`, as
/// `(pixel/255 - pixel_mean[c, y, x] - mean) / std` (the paper's "per-pixel mean subtracted").
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// A mean image of pixel/255, `c*h*w` values channel-major (the training split's, see
    /// [`Dataset::pixel_mean`]). It is subtracted before augmentation, so the zero padding of the
    /// random crop is 0 after normalisation. In-memory datasets only.
    pub pixel_mean: Option<Vec<f32>>,
}

impl Normalize {
    /// Just pixel/255 (mean 0, std 1) for `c` channels.
    pub fn identity(c: usize) -> Self {
        Normalize {
            mean: vec![0.0; c],
            std: vec![1.0; c],
            pixel_mean: None,
        }
    }

    /// The dataset's own per-channel statistics (compute them on the training split).
    pub fn from_dataset(dataset: &Dataset) -> Self {
        let (mean, std) = dataset.channel_mean_std();
        Normalize {
            mean,
            std,
            pixel_mean: None,
        }
    }

    /// The dataset's mean image subtracted, no division (compute it on the training split).
    pub fn per_pixel_mean(dataset: &Dataset) -> Self {
        Normalize {
            pixel_mean: Some(dataset.pixel_mean()),
            ..Normalize::identity(dataset.c)
        }
    }
}

/// Training-time augmentation; see [`augment`](super::augment).
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    /// Zero-padding on each side before a random crop back to h x w; 0 disables (paper: 4).
    pub pad_crop: usize,
    /// Random horizontal mirror with p = 0.5.
    pub flip: bool,
}

impl Augment {
    /// He et al. 2015, sec. 4.2: 4-pixel pad, random 32x32 crop, random horizontal flip.
    pub fn paper() -> Self {
        Augment {
            pad_crop: 4,
            flip: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Drop the final batch when it would be smaller than `batch_size`.
    pub drop_last: bool,
    pub augment: Option<Augment>,
    pub normalize: Normalize,
    pub seed: u64,
    /// This rank's part of each global batch (`Shard::ALONE` when training alone); see
    /// [`shard`](super::shard).
    pub shard: Shard,
}

/// One batch, ready for the model.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Normalised pixels, NCHW, `shape[0]` images (views, for multi-view evaluation).
    pub images: Vec<f32>,
    pub labels: Vec<i32>,
    pub shape: [usize; 4],
    /// Dataset index of each image, in batch order.
    pub indices: Vec<usize>,
    /// Position in the epoch's order of each image: the views of one image (ten crops, scales)
    /// share it and come one after another, so consumers can average them.
    pub positions: Vec<usize>,
}

impl Batch {
    /// The batch of `indices` (at `first_position` in the epoch's order) with prepared `images`.
    fn of_dataset(d: &Dataset, images: Vec<f32>, first_position: usize, indices: &[usize]) -> Batch {
        Batch {
            images,
            labels: indices.iter().map(|&i| d.labels[i] as i32).collect(),
            shape: [indices.len(), d.c, d.h, d.w],
            indices: indices.to_vec(),
            positions: (first_position..first_position + indices.len()).collect(),
        }
    }
}

/// Batches of one epoch, prepared ahead on a background thread.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    batches: usize,
    received: usize,
    /// Set by the producer when it finished normally (it may send fewer than `batches` batches
    /// when an image folder skips files).
    done: Arc<AtomicBool>,
}

/// Batches prepared ahead of the consumer: enough to hide jitter, few enough that memory stays
/// small (CIFAR, batch 128: 1.5 MB each).
const PREFETCH: usize = 3;
const PERMUTATION_STREAM: u64 = 0x7065_726d_7574_6521;
const AUGMENT_STREAM: u64 = 0x6175_676d_656e_7421;

impl Loader {
    /// Starts preparing the batches of `epoch`. Fails if `batch_size` is 0, the dataset is empty,
    /// or `normalize` does not have one finite mean and one positive finite std per channel.
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig, epoch: u64) -> Result<Loader> {
        if config.batch_size == 0 {
            return Err(Error::invalid("data loader: batch_size must be at least 1"));
        }
        if dataset.n == 0 {
            return Err(Error::invalid("data loader: the dataset is empty"));
        }
        let lut = normalize_table(&config.normalize, dataset.c)?;
        let ranges = batch_ranges(dataset.n, config.batch_size, config.drop_last, config.shard)?;
        let order = if config.shuffle {
            epoch_permutation(dataset.n, config.seed, epoch)
        } else {
            (0..dataset.n).collect()
        };

        if let Some(pm) = &config.normalize.pixel_mean {
            if pm.len() != dataset.image_len() {
                return Err(Error::invalid(format!(
                    "data loader: the per-pixel mean has {} values, but the images have {}x{}x{} = {}",
                    pm.len(),
                    dataset.c,
                    dataset.h,
                    dataset.w,
                    dataset.image_len()
                )));
            }
            if let Some(i) = pm.iter().position(|v| !v.is_finite()) {
                return Err(Error::invalid(format!(
                    "data loader: the per-pixel mean has a non-finite value at index {i}"
                )));
            }
        }
        let producer = Producer {
            source: Source::Memory(dataset),
            config,
            epoch,
            order,
            ranges,
            lut,
        };
        Self::start(producer)
    }

    /// Starts preparing the batches of `epoch` of an image folder: decoded, transformed by
    /// `transform` and normalised per channel (`config.normalize`, 3 channels; no per-pixel mean).
    /// `config.augment` selects the training transform (`Some`, whose `flip` enables the random
    /// mirror and whose `pad_crop` must be 0) or the evaluation view (`None`).
    ///
    /// Batches hold `batch_size` images, times [`EvalView::views`] rows when evaluating with ten
    /// crops; with [`EvalView::FullImage`] every view of every image is a batch of one, so
    /// [`len`](Loader::len) is `n * scales`. With [`OnCorrupt::Skip`] batches may be smaller and
    /// the epoch may end before `len` batches.
    pub fn from_folder(
        folder: Arc<ImageFolder>,
        config: LoaderConfig,
        transform: FolderTransform,
        epoch: u64,
    ) -> Result<Loader> {
        if config.batch_size == 0 {
            return Err(Error::invalid("data loader: batch_size must be at least 1"));
        }
        if folder.is_empty() {
            return Err(Error::invalid("data loader: the image folder is empty"));
        }
        transform.validate()?;
        if config.normalize.pixel_mean.is_some() {
            return Err(Error::invalid(
                "data loader: a per-pixel mean needs images of one size; image folders take per-channel mean/std",
            ));
        }
        if config.augment.as_ref().is_some_and(|a| a.pad_crop > 0) {
            return Err(Error::invalid(
                "data loader: pad_crop does not apply to image folders (their crops come from the folder transform)",
            ));
        }
        let lut = normalize_table(&config.normalize, 3)?;
        let n = folder.len();
        // Full-image evaluation takes one image at a time, each scale a batch of its own.
        let full_image = match (&config.augment, &transform.view) {
            (None, EvalView::FullImage { scales }) => Some(scales.len()),
            _ => None,
        };
        let chunk_size = if full_image.is_some() { 1 } else { config.batch_size };
        let ranges = batch_ranges(n, chunk_size, config.drop_last, config.shard)?;
        let order = if config.shuffle {
            epoch_permutation(n, config.seed, epoch)
        } else {
            (0..n).collect()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(transform.threads())
            .thread_name(|i| format!("resnet-image-decode-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the image decoding threads: {e}")))?;
        let producer = Producer {
            source: Source::Folder {
                folder,
                transform,
                pool,
            },
            config,
            epoch,
            order,
            ranges,
            lut,
        };
        Self::start(producer)
    }

    fn start(producer: Producer) -> Result<Loader> {
        // With full-image views every image of a range gives one batch per scale.
        let batches = match &producer.source {
            Source::Folder { transform, .. } if producer.config.augment.is_none() => match &transform.view {
                EvalView::FullImage { scales } => producer.ranges.iter().map(|r| r.len()).sum::<usize>() * scales.len(),
                _ => producer.ranges.len(),
            },
            _ => producer.ranges.len(),
        };
        let (tx, rx) = sync_channel(PREFETCH);
        let done = Arc::new(AtomicBool::new(false));
        let finished = done.clone();
        // The JoinHandle is dropped (thread detached) on purpose: Drop must never wait for the
        // producer. Once `rx` is gone its next `send` fails and it returns.
        std::thread::Builder::new()
            .name("resnet-data-loader".into())
            .spawn(move || {
                if producer.run(tx.clone()) {
                    finished.store(true, Ordering::SeqCst);
                }
                drop(tx);
            })
            .map_err(|e| Error::Internal(format!("cannot start the data loader thread: {e}")))?;
        Ok(Loader {
            rx,
            batches,
            received: 0,
            done,
        })
    }

    /// Number of batches this epoch (an upper bound when an image folder skips files).
    pub fn len(&self) -> usize {
        self.batches
    }

    /// True when the epoch has no batches (drop_last with fewer samples than one batch).
    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }

    /// The next batch, `None` after the last one. An `Err` (an image folder's file that cannot be
    /// decoded, under `OnCorrupt::Fail`, or the producer thread dying, a bug) ends the loader.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        if self.received >= self.batches {
            return None;
        }
        match self.rx.recv() {
            Ok(Ok(batch)) => {
                self.received += 1;
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.received = self.batches;
                Some(Err(e))
            }
            Err(_) if self.done.load(Ordering::SeqCst) => {
                self.received = self.batches;
                None
            }
            Err(_) => {
                let at = self.received;
                self.received = self.batches;
                Some(Err(Error::Internal(format!(
                    "data loader thread stopped before batch {at} of {} (it panicked)",
                    self.batches
                ))))
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batches - self.received;
        (left, Some(left))
    }
}

/// Shuffled index permutation for an epoch (Fisher-Yates with ChaCha8Rng seeded from seed and
/// epoch); exposed for tests.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(seed, PERMUTATION_STREAM), epoch));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = uniform_below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// splitmix64's finaliser: a cheap bijective scramble, so nearby (seed, epoch, position) triples
/// give unrelated ChaCha seeds.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mix(a: u64, b: u64) -> u64 {
    splitmix64(a ^ splitmix64(b))
}

/// Per channel, the normalised value of each of the 256 pixel values: normalisation becomes one
/// table lookup per pixel.
fn normalize_table(norm: &Normalize, c: usize) -> Result<Vec<[f32; 256]>> {
    if norm.mean.len() != c || norm.std.len() != c {
        return Err(Error::invalid(format!(
            "data loader: normalize has {} means and {} stds, but the images have {c} channels",
            norm.mean.len(),
            norm.std.len()
        )));
    }
    let mut tables = Vec::with_capacity(c);
    for (ch, (&mean, &std)) in norm.mean.iter().zip(&norm.std).enumerate() {
        if !mean.is_finite() || !std.is_finite() || std <= 0.0 {
            return Err(Error::invalid(format!(
                "data loader: channel {ch} has mean {mean} and std {std}; need finite values \
                 and std > 0"
            )));
        }
        let mut t = [0f32; 256];
        for (v, out) in t.iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - mean) / std;
        }
        tables.push(t);
    }
    Ok(tables)
}

enum Source {
    Memory(Arc<Dataset>),
    Folder {
        folder: Arc<ImageFolder>,
        transform: FolderTransform,
        pool: rayon::ThreadPool,
    },
}

struct Producer {
    source: Source,
    config: LoaderConfig,
    epoch: u64,
    order: Vec<usize>,
    /// Positions in `order` of each batch (or, for full-image views, of each run of images).
    ranges: Vec<Range<usize>>,
    lut: Vec<[f32; 256]>,
}

impl Producer {
    /// Sends the epoch's batches; true when it got to the end (not stopped by a dropped loader
    /// or an error).
    fn run(self, tx: SyncSender<Result<Batch>>) -> bool {
        match &self.source {
            Source::Memory(dataset) => {
                for r in &self.ranges {
                    if tx
                        .send(Ok(self.prepare(dataset, r.start, &self.order[r.clone()])))
                        .is_err()
                    {
                        return false; // Loader dropped.
                    }
                }
            }
            Source::Folder {
                folder,
                transform,
                pool,
            } => {
                for r in &self.ranges {
                    match self.prepare_folder(folder, transform, pool, r.start, &self.order[r.clone()]) {
                        Ok(out) => {
                            for batch in out {
                                if tx.send(Ok(batch)).is_err() {
                                    return false;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// The batches of one chunk of an image folder's epoch order: images decoded and transformed
    /// in parallel on the loader's pool (each from its own position-seeded stream, so the result
    /// does not depend on the threads), then assembled in order. Returns no batch when every image
    /// of the chunk was skipped.
    fn prepare_folder(
        &self,
        folder: &ImageFolder,
        transform: &FolderTransform,
        pool: &rayon::ThreadPool,
        first_position: usize,
        indices: &[usize],
    ) -> Result<Vec<Batch>> {
        let aug_seed = mix(mix(self.config.seed, AUGMENT_STREAM), self.epoch);
        let train_flip = self.config.augment.as_ref().map(|a| a.flip);
        let decoded: Vec<Result<Vec<image::RgbImage>>> = pool.install(|| {
            indices
                .par_iter()
                .enumerate()
                .map(|(k, &i)| {
                    let image = folder.load(i)?;
                    let mut rng = ChaCha8Rng::seed_from_u64(mix(aug_seed, (first_position + k) as u64));
                    Ok(folder::transform_image(&image, transform, train_flip, &mut rng))
                })
                .collect()
        });
        // (position, dataset index, views) of the images kept.
        let mut kept = Vec::with_capacity(indices.len());
        for (k, (&i, result)) in indices.iter().zip(decoded).enumerate() {
            match result {
                Ok(views) => kept.push((first_position + k, i, views)),
                Err(e) if transform.on_corrupt == OnCorrupt::Skip => {
                    folder.record_skip(&folder.paths()[i], &e.to_string())
                }
                Err(e) => return Err(e),
            }
        }
        let labels = folder.labels();
        let mut batches = Vec::new();
        let mut images = Vec::new();
        let mut rows = (Vec::new(), Vec::new(), Vec::new()); // labels, indices, positions
        let mut size = (0, 0);
        for (position, i, views) in kept {
            for view in views {
                let (w, h) = (view.width() as usize, view.height() as usize);
                if !rows.0.is_empty() && (h, w) != size {
                    // Views of another size (full-image scales): close the batch.
                    batches.push(Batch {
                        images: std::mem::take(&mut images),
                        labels: std::mem::take(&mut rows.0),
                        shape: [rows.1.len(), 3, size.0, size.1],
                        indices: std::mem::take(&mut rows.1),
                        positions: std::mem::take(&mut rows.2),
                    });
                }
                size = (h, w);
                let start = images.len();
                images.resize(start + 3 * h * w, 0.0);
                folder::write_planes(&view, &self.lut, &mut images[start..]);
                rows.0.push(labels[i] as i32);
                rows.1.push(i);
                rows.2.push(position);
            }
        }
        if !rows.0.is_empty() {
            batches.push(Batch {
                images,
                labels: rows.0,
                shape: [rows.1.len(), 3, size.0, size.1],
                indices: rows.1,
                positions: rows.2,
            });
        }
        Ok(batches)
    }

    /// One batch, sequentially: at ~1 ns per pixel a CIFAR batch of 128 takes well under a
    /// millisecond, which the background thread already hides; fanning out over rayon would
    /// only compete with the training step's own threads.
    fn prepare(&self, d: &Dataset, first_position: usize, indices: &[usize]) -> Batch {
        if let Some(pixel_mean) = &self.config.normalize.pixel_mean {
            return self.prepare_pixel_mean(d, pixel_mean, first_position, indices);
        }
        let len = d.image_len();
        let plane = d.h * d.w;
        let mut images = vec![0f32; indices.len() * len];
        let mut scratch = vec![0u8; len];
        let augment = self.config.augment.as_ref().filter(|a| a.pad_crop > 0 || a.flip);
        let aug_seed = mix(mix(self.config.seed, AUGMENT_STREAM), self.epoch);

        for (k, (&i, out)) in indices.iter().zip(images.chunks_exact_mut(len)).enumerate() {
            let src = d.image(i);
            let pixels: &[u8] = match augment {
                Some(a) => {
                    let position = (first_position + k) as u64;
                    let mut rng = ChaCha8Rng::seed_from_u64(mix(aug_seed, position));
                    let t = CropFlip::sample(a.pad_crop, a.flip, &mut rng);
                    augment::apply(src, &mut scratch, d.c, d.h, d.w, t);
                    &scratch
                }
                None => src,
            };
            for ((out_plane, px_plane), table) in out
                .chunks_exact_mut(plane)
                .zip(pixels.chunks_exact(plane))
                .zip(&self.lut)
            {
                for (o, &p) in out_plane.iter_mut().zip(px_plane) {
                    *o = table[p as usize];
                }
            }
        }

        Batch::of_dataset(d, images, first_position, indices)
    }

    /// [`prepare`](Self::prepare) with a mean image: each image is normalised in its own
    /// coordinates first, `(pixel/255 - pixel_mean - mean) / std`, then cropped and mirrored
    /// with 0 in the padding (the same transform, drawn from the same stream, as without it).
    fn prepare_pixel_mean(&self, d: &Dataset, pixel_mean: &[f32], first_position: usize, indices: &[usize]) -> Batch {
        let len = d.image_len();
        let plane = d.h * d.w;
        let mut images = vec![0f32; indices.len() * len];
        let mut scratch = vec![0f32; len];
        let augment = self.config.augment.as_ref().filter(|a| a.pad_crop > 0 || a.flip);
        let aug_seed = mix(mix(self.config.seed, AUGMENT_STREAM), self.epoch);
        let norm = &self.config.normalize;

        for (k, (&i, out)) in indices.iter().zip(images.chunks_exact_mut(len)).enumerate() {
            let target: &mut [f32] = if augment.is_some() { &mut scratch } else { out };
            for (ch, ((dst, src), pm)) in target
                .chunks_exact_mut(plane)
                .zip(d.image(i).chunks_exact(plane))
                .zip(pixel_mean.chunks_exact(plane))
                .enumerate()
            {
                let (mean, inv_std) = (norm.mean[ch], 1.0 / norm.std[ch]);
                for ((o, &p), &m) in dst.iter_mut().zip(src).zip(pm) {
                    *o = (p as f32 / 255.0 - m - mean) * inv_std;
                }
            }
            if let Some(a) = augment {
                let position = (first_position + k) as u64;
                let mut rng = ChaCha8Rng::seed_from_u64(mix(aug_seed, position));
                let t = CropFlip::sample(a.pad_crop, a.flip, &mut rng);
                augment::apply_with(&scratch, out, d.c, d.h, d.w, t, 0.0);
            }
        }

        Batch::of_dataset(d, images, first_position, indices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;
    use std::time::{Duration, Instant};

    fn random_dataset(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Arc<Dataset> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut images = vec![0u8; n * c * h * w];
        rng.fill_bytes(&mut images);
        let labels = (0..n).map(|_| (rng.next_u32() % 10) as u8).collect();
        Arc::new(Dataset::new(images, labels, c, h, w, 10, vec![]).unwrap())
    }

    fn config(batch_size: usize, c: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: true,
            drop_last: false,
            augment: Some(Augment::paper()),
            normalize: Normalize {
                mean: (0..c).map(|i| 0.1 + 0.2 * i as f32).collect(),
                std: (0..c).map(|i| 0.25 + 0.5 * i as f32).collect(),
                pixel_mean: None,
            },
            seed: 42,
            shard: Shard::ALONE,
        }
    }

    fn collect(d: &Arc<Dataset>, cfg: &LoaderConfig, epoch: u64) -> Vec<Batch> {
        Loader::new(d.clone(), cfg.clone(), epoch)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn same_seed_and_epoch_repeat_exactly() {
        let d = random_dataset(50, 3, 8, 8, 1);
        let cfg = config(16, 3);
        let a = collect(&d, &cfg, 3);
        let b = collect(&d, &cfg, 3);
        assert_eq!(a.len(), 4);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.indices, y.indices);
            assert_eq!(x.labels, y.labels);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&x.images), bits(&y.images));
        }
        let c = collect(&d, &cfg, 4);
        assert_ne!(a[0].indices, c[0].indices);
        assert_ne!(epoch_permutation(50, 42, 3), epoch_permutation(50, 43, 3));

        // Augmentation depends on position, not batch size.
        let big = collect(
            &d,
            &LoaderConfig {
                batch_size: 50,
                ..cfg.clone()
            },
            3,
        );
        let flat: Vec<f32> = a.iter().flat_map(|b| b.images.clone()).collect();
        assert_eq!(flat, big[0].images);
    }

    #[test]
    fn each_index_once_and_partial_last_batch() {
        let d = random_dataset(23, 1, 4, 4, 2);
        let mut cfg = config(5, 1);
        let batches = collect(&d, &cfg, 0);
        assert_eq!(batches.len(), 5);
        let sizes: Vec<usize> = batches.iter().map(|b| b.shape[0]).collect();
        assert_eq!(sizes, [5, 5, 5, 5, 3]);
        let last = batches.last().unwrap();
        assert_eq!(last.images.len(), 3 * 16);
        assert_eq!(last.labels.len(), 3);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        assert_ne!(seen, (0..23).collect::<Vec<_>>(), "shuffle had no effect");
        seen.sort();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        for b in &batches {
            for (k, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.labels[k], d.labels[i] as i32);
            }
        }

        cfg.drop_last = true;
        let loader = Loader::new(d.clone(), cfg.clone(), 0).unwrap();
        assert_eq!(loader.len(), 4);
        assert_eq!(loader.map(|b| b.unwrap().shape[0]).sum::<usize>(), 20);
        cfg.batch_size = 30;
        let mut loader = Loader::new(d.clone(), cfg, 0).unwrap();
        assert!(loader.is_empty());
        assert!(loader.next_batch().is_none());
    }

    #[test]
    fn permutation_is_a_permutation() {
        for n in [0, 1, 2, 17, 1000] {
            let mut p = epoch_permutation(n, 7, 1);
            p.sort();
            assert_eq!(p, (0..n).collect::<Vec<_>>());
        }
        assert_eq!(epoch_permutation(100, 7, 1), epoch_permutation(100, 7, 1));
        assert_ne!(epoch_permutation(100, 7, 1), epoch_permutation(100, 7, 2));
    }

    #[test]
    fn normalisation_is_exact_without_augment() {
        let d = random_dataset(6, 3, 4, 5, 3);
        let mut cfg = config(6, 3);
        cfg.shuffle = false;
        cfg.augment = None;
        let b = collect(&d, &cfg, 0).remove(0);
        assert_eq!(b.shape, [6, 3, 4, 5]);
        assert_eq!(b.indices, (0..6).collect::<Vec<_>>());
        // Image 4, channel 2, row 3, column 1.
        let offset = 4 * 60 + 2 * 20 + 3 * 5 + 1;
        let px = d.images[offset] as f32;
        let expected = (px / 255.0 - 0.5) / 1.25;
        assert!((b.images[offset] - expected).abs() < 1e-6);
        // Every pixel of channel 0: (p/255 - 0.1) / 0.25.
        for i in 0..6 {
            for j in 0..20 {
                let p = d.images[i * 60 + j] as f32;
                assert!((b.images[i * 60 + j] - (p / 255.0 - 0.1) / 0.25).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn augmented_batch_matches_the_augment_module() {
        let d = random_dataset(4, 1, 6, 6, 4);
        let mut cfg = config(4, 1);
        cfg.shuffle = false;
        cfg.normalize = Normalize::identity(1);
        let b = collect(&d, &cfg, 5).remove(0);
        let mut any_changed = false;
        for k in 0..4 {
            let aug_seed = mix(mix(42, AUGMENT_STREAM), 5);
            let mut rng = ChaCha8Rng::seed_from_u64(mix(aug_seed, k as u64));
            let t = CropFlip::sample(4, true, &mut rng);
            let mut expected = vec![0u8; 36];
            augment::apply(d.image(k), &mut expected, 1, 6, 6, t);
            let got: Vec<u8> = b.images[k * 36..(k + 1) * 36]
                .iter()
                .map(|v| (v * 255.0).round() as u8)
                .collect();
            assert_eq!(got, expected);
            any_changed |= got != d.image(k);
        }
        assert!(any_changed);
    }

    #[test]
    fn per_pixel_mean_is_subtracted_before_the_crop() {
        let d = random_dataset(5, 3, 6, 7, 8);
        let norm = Normalize::per_pixel_mean(&d);
        let pm = norm.pixel_mean.clone().unwrap();
        let mut cfg = config(5, 3);
        cfg.shuffle = false;
        cfg.augment = None;
        cfg.normalize = norm.clone();
        let plain = collect(&d, &cfg, 2).remove(0);
        for (j, v) in plain.images.iter().enumerate() {
            let expected = d.images[j] as f32 / 255.0 - pm[j % 126];
            assert!((v - expected).abs() < 1e-6);
        }
        // The mean image of the batch is 0 (it is the whole dataset).
        for p in 0..126 {
            let s: f32 = (0..5).map(|i| plain.images[i * 126 + p]).sum();
            assert!(s.abs() < 1e-5, "{s}");
        }

        cfg.augment = Some(Augment::paper());
        cfg.normalize.std = vec![0.5, 2.0, 4.0];
        let b = collect(&d, &cfg, 2).remove(0);
        let aug_seed = mix(mix(42, AUGMENT_STREAM), 2);
        let mut padded_zeros = 0;
        for k in 0..5 {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(aug_seed, k as u64));
            let t = CropFlip::sample(4, true, &mut rng);
            let normalised: Vec<f32> = (0..126)
                .map(|j| (d.image(k)[j] as f32 / 255.0 - pm[j]) / [0.5, 2.0, 4.0][j / 42])
                .collect();
            let mut expected = vec![f32::NAN; 126];
            augment::apply_with(&normalised, &mut expected, 3, 6, 7, t, 0.0);
            assert_eq!(b.images[k * 126..(k + 1) * 126], expected[..]);
            padded_zeros += expected.iter().filter(|v| **v == 0.0).count();
        }
        assert!(padded_zeros > 0, "no padding was drawn");

        cfg.normalize.pixel_mean = Some(vec![0.0; 5]);
        let msg = Loader::new(d.clone(), cfg, 0).err().unwrap().to_string();
        assert!(msg.contains("per-pixel mean has 5 values"), "{msg}");
    }

    #[test]
    fn rejects_bad_config() {
        let d = random_dataset(4, 3, 2, 2, 5);
        let mut cfg = config(0, 3);
        assert!(Loader::new(d.clone(), cfg.clone(), 0).is_err());
        cfg.batch_size = 2;
        cfg.normalize = Normalize::identity(1);
        let msg = Loader::new(d.clone(), cfg.clone(), 0).err().unwrap().to_string();
        assert!(msg.contains("3 channels"), "{msg}");
        cfg.normalize = Normalize {
            mean: vec![0.0; 3],
            std: vec![1.0, 0.0, 1.0],
            pixel_mean: None,
        };
        assert!(Loader::new(d.clone(), cfg.clone(), 0).is_err());
        let empty = Arc::new(d.subset(&[]));
        cfg.normalize = Normalize::identity(3);
        assert!(Loader::new(empty, cfg, 0).is_err());
    }

    #[test]
    fn drop_mid_epoch_is_quick_and_stops_the_thread() {
        let d = random_dataset(4096, 3, 32, 32, 6);
        let cfg = config(256, 3);
        let mut loader = Loader::new(d.clone(), cfg, 0).unwrap();
        assert!(loader.next_batch().unwrap().is_ok());
        // Let the producer fill the channel and block on send.
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        drop(loader);
        assert!(t.elapsed() < Duration::from_secs(1));
        // The producer held the only other reference; it must let go promptly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&d) > 1 {
            assert!(Instant::now() < deadline, "loader thread did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn two_shards_give_the_rows_of_one_loader_with_twice_the_batch() {
        let d = random_dataset(45, 3, 8, 8, 3);
        let whole = collect(&d, &config(16, 3), 2);
        let shards: Vec<Vec<Batch>> = (0..2)
            .map(|rank| {
                let cfg = LoaderConfig {
                    shard: Shard { rank, count: 2 },
                    ..config(8, 3)
                };
                collect(&d, &cfg, 2)
            })
            .collect();
        assert_eq!(shards[0].len(), whole.len());
        assert_eq!(shards[1].len(), whole.len());
        for (k, global) in whole.iter().enumerate() {
            let (a, b) = (&shards[0][k], &shards[1][k]);
            assert_eq!([a.indices.clone(), b.indices.clone()].concat(), global.indices);
            assert_eq!([a.positions.clone(), b.positions.clone()].concat(), global.positions);
            // Same positions, same augmentation: the pixels match bit for bit.
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&[a.images.clone(), b.images.clone()].concat()),
                bits(&global.images)
            );
        }
    }

    #[test]
    fn batch_preparation_is_fast() {
        let d = random_dataset(1280, 3, 32, 32, 7);
        let producer = Producer {
            source: Source::Memory(d.clone()),
            config: config(128, 3),
            epoch: 0,
            order: (0..1280).collect(),
            ranges: Vec::new(),
            lut: normalize_table(&config(128, 3).normalize, 3).unwrap(),
        };
        let t = Instant::now();
        for b in 0..10 {
            let idx: Vec<usize> = (b * 128..(b + 1) * 128).collect();
            assert_eq!(producer.prepare(&d, b * 128, &idx).shape, [128, 3, 32, 32]);
        }
        let per_batch = t.elapsed() / 10;
        eprintln!("CIFAR batch of 128, augmented: {per_batch:?}");
        // Generous bound for unoptimised/CI builds; release is ~10x below.
        assert!(per_batch < Duration::from_millis(20), "{per_batch:?}");
    }
}
