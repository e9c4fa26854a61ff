//! Datasets: readers for the on-disk formats (IDX for Fashion-MNIST, CIFAR-10 binary batches),
//! the paper's augmentation, and a background-thread batch loader.
//!
//! Images stay `u8` in memory (a quarter of the f32 size; Fashion-MNIST train is 47 MB) and are
//! converted to normalised f32 only per batch, in the loader. Image folders (ImageNet's layout,
//! [`folder`]) stay on disk and are decoded per batch.

pub mod augment;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod shard;

use std::fmt;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::error::{Error, Result};

pub use folder::{EvalView, FolderTransform, ImageFolder, OnCorrupt, SkippedImage, TrainTransform};
pub use loader::{Augment, Batch, Loader, LoaderConfig, Normalize};
pub use shard::Shard;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// An in-memory labelled image dataset, u8 pixels, NCHW layout (each image c*h*w bytes contiguous).
#[derive(Clone)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    /// The files the samples were read from (images, then labels, for IDX data); empty for data
    /// built in memory. Subsets and splits keep their parent's.
    pub files: Vec<PathBuf>,
}

// Hand-written so that `{:?}` on a 47 MB dataset prints a summary, not every pixel.
impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("n", &self.n)
            .field("c", &self.c)
            .field("h", &self.h)
            .field("w", &self.w)
            .field("num_classes", &self.num_classes)
            .field("class_names", &self.class_names)
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Builds a dataset after checking that the buffers agree with the dimensions and every label
    /// is below `num_classes`. `class_names` may be empty (no names known).
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u8>,
        c: usize,
        h: usize,
        w: usize,
        num_classes: usize,
        class_names: Vec<String>,
    ) -> Result<Dataset> {
        let n = labels.len();
        let image_len = c
            .checked_mul(h)
            .and_then(|x| x.checked_mul(w))
            .ok_or_else(|| Error::invalid(format!("dataset: image size {c}x{h}x{w} overflows")))?;
        if image_len == 0 {
            return Err(Error::invalid(format!("dataset: image size {c}x{h}x{w} is empty")));
        }
        if n.checked_mul(image_len) != Some(images.len()) {
            return Err(Error::invalid(format!(
                "dataset: {} pixel bytes is not {n} labels x {c}x{h}x{w}",
                images.len()
            )));
        }
        if !class_names.is_empty() && class_names.len() != num_classes {
            return Err(Error::invalid(format!(
                "dataset: {} class names for {num_classes} classes",
                class_names.len()
            )));
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= num_classes) {
            return Err(Error::LabelRange {
                label: label as i64,
                index,
                classes: num_classes,
            });
        }
        Ok(Dataset {
            images,
            labels,
            n,
            c,
            h,
            w,
            num_classes,
            class_names,
            files: Vec::new(),
        })
    }

    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// The pixels of image `i` (c*h*w bytes, channel-major).
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[i * len..(i + 1) * len]
    }

    /// Per-channel mean and *population* standard deviation (divide by N, i.e. numpy's default
    /// `std()`, not torch's unbiased `.std()`; with millions of pixels the two agree to ~1e-7) of
    /// pixel/255 over every pixel of every image. Sums are exact integers, so the result does not
    /// depend on summation order. An empty dataset gives zeros.
    pub fn channel_mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let (c, plane) = (self.c, self.h * self.w);
        let count = (self.n * plane) as f64;
        if self.n == 0 || plane == 0 {
            return (vec![0.0; c], vec![0.0; c]);
        }
        // u64 cannot overflow: 255^2 * 2^40 pixels < 2^56.
        let (sum, sq) = self
            .images
            .par_chunks(self.image_len())
            .fold(
                || (vec![0u64; c], vec![0u64; c]),
                |(mut sum, mut sq), img| {
                    for (ch, px) in img.chunks_exact(plane).enumerate() {
                        let (mut s, mut q) = (0u64, 0u64);
                        for &p in px {
                            s += p as u64;
                            q += (p as u64) * (p as u64);
                        }
                        sum[ch] += s;
                        sq[ch] += q;
                    }
                    (sum, sq)
                },
            )
            .reduce(
                || (vec![0u64; c], vec![0u64; c]),
                |(mut a, mut b), (x, y)| {
                    a.iter_mut().zip(&x).for_each(|(a, x)| *a += x);
                    b.iter_mut().zip(&y).for_each(|(b, y)| *b += y);
                    (a, b)
                },
            );
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for ch in 0..c {
            let m = sum[ch] as f64 / count;
            let var = (sq[ch] as f64 / count - m * m).max(0.0);
            mean.push((m / 255.0) as f32);
            std.push((var.sqrt() / 255.0) as f32);
        }
        (mean, std)
    }

    /// The mean image of pixel/255: `c*h*w` values, channel-major (the paper's per-pixel mean,
    /// [`Normalize::per_pixel_mean`]). Sums are exact integers; an empty dataset gives zeros.
    pub fn pixel_mean(&self) -> Vec<f32> {
        let len = self.image_len();
        if self.n == 0 {
            return vec![0.0; len];
        }
        // u64 cannot overflow: 255 * 2^40 images < 2^48.
        let sum = self
            .images
            .par_chunks(len)
            .fold(
                || vec![0u64; len],
                |mut sum, img| {
                    sum.iter_mut().zip(img).for_each(|(s, &p)| *s += p as u64);
                    sum
                },
            )
            .reduce(
                || vec![0u64; len],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let scale = 1.0 / (self.n as f64 * 255.0);
        sum.into_iter().map(|s| (s as f64 * scale) as f32).collect()
    }

    /// A new dataset holding the given samples in the given order (repeats allowed).
    ///
    /// # Panics
    /// If an index is `>= self.n` — indices come from code, not from user files.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let len = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            assert!(i < self.n, "Dataset::subset: index {i} out of range (n = {})", self.n);
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            images,
            labels,
            n: indices.len(),
            c: self.c,
            h: self.h,
            w: self.w,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
            files: self.files.clone(),
        }
    }

    /// The first `k` samples and the rest; `k` is clamped to `n` (so `split_at(n + 1)` gives an
    /// empty second half rather than a panic).
    pub fn split_at(&self, k: usize) -> (Dataset, Dataset) {
        let k = k.min(self.n);
        let cut = k * self.image_len();
        let part = |images: &[u8], labels: &[u8]| Dataset {
            images: images.to_vec(),
            labels: labels.to_vec(),
            n: labels.len(),
            c: self.c,
            h: self.h,
            w: self.w,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
            files: self.files.clone(),
        };
        (
            part(&self.images[..cut], &self.labels[..k]),
            part(&self.images[cut..], &self.labels[k..]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_dataset(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Dataset {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut images = vec![0u8; n * c * h * w];
        rng.fill_bytes(&mut images);
        let labels = (0..n).map(|_| (rng.next_u32() % 10) as u8).collect();
        Dataset::new(images, labels, c, h, w, 10, vec![]).unwrap()
    }

    #[test]
    fn mean_std_matches_naive_f64() {
        let d = random_dataset(37, 3, 5, 7, 1);
        let (mean, std) = d.channel_mean_std();
        for ch in 0..3 {
            let px: Vec<f64> = (0..d.n)
                .flat_map(|i| d.image(i)[ch * 35..(ch + 1) * 35].to_vec())
                .map(|p| p as f64 / 255.0)
                .collect();
            let m = px.iter().sum::<f64>() / px.len() as f64;
            let v = px.iter().map(|p| (p - m) * (p - m)).sum::<f64>() / px.len() as f64;
            assert!((mean[ch] as f64 - m).abs() < 1e-6, "{} vs {m}", mean[ch]);
            assert!((std[ch] as f64 - v.sqrt()).abs() < 1e-6);
        }
        // Random bytes: mean near 0.5, std near 1/sqrt(12) of range.
        assert!((mean[0] - 0.5).abs() < 0.05);
    }

    #[test]
    fn subset_and_split_copy_the_right_samples() {
        let d = random_dataset(10, 2, 3, 3, 2);
        let s = d.subset(&[7, 2, 7]);
        assert_eq!(s.n, 3);
        assert_eq!(s.image(0), d.image(7));
        assert_eq!(s.image(1), d.image(2));
        assert_eq!(s.labels, vec![d.labels[7], d.labels[2], d.labels[7]]);

        let (a, b) = d.split_at(4);
        assert_eq!((a.n, b.n), (4, 6));
        assert_eq!(a.image(3), d.image(3));
        assert_eq!(b.image(0), d.image(4));
        assert_eq!(b.labels[..], d.labels[4..]);
        let (all, none) = d.split_at(99);
        assert_eq!((all.n, none.n), (10, 0));
    }

    #[test]
    fn new_rejects_inconsistent_buffers_and_labels() {
        assert!(Dataset::new(vec![0; 10], vec![0, 1], 1, 2, 2, 10, vec![]).is_err());
        let err = Dataset::new(vec![0; 8], vec![0, 12], 1, 2, 2, 10, vec![]).unwrap_err();
        assert!(matches!(
            err,
            Error::LabelRange {
                label: 12,
                index: 1,
                classes: 10
            }
        ));
    }

    #[test]
    fn debug_does_not_dump_pixels() {
        let d = random_dataset(100, 1, 28, 28, 3);
        assert!(format!("{d:?}").len() < 200);
    }
}
