//! Image-folder datasets in torchvision's `ImageFolder` layout, `root/<class>/<image>.{jpg,jpeg,png}`
//! (ImageNet's), decoded with the `image` crate and transformed in Rust.
//!
//! - Classes are the sub-folders of `root` in sorted (byte) order; hidden folders (`.name`) are
//!   ignored. Images are found recursively under each class folder, sorted by path; files with
//!   other extensions (`.txt`, ...) are ignored. The format is taken from the content, not the
//!   extension, so a PNG named `.jpg` decodes.
//! - Every image becomes 8-bit RGB: grey is replicated, alpha dropped, 16-bit scaled to 8 bits.
//! - Resizes are bilinear with antialiasing (`FilterType::Triangle`, PIL's "bilinear"); a resize to
//!   the image's own size is an exact copy. "Shorter side to s" follows torchvision's `Resize(s)`:
//!   the longer side becomes `floor(s * long / short)`.
//! - Training transforms ([`TrainTransform`]): torchvision's `RandomResizedCrop` (scale
//!   (0.08, 1), ratio (3/4, 4/3), ten tries then a centre crop), the paper's scale augmentation
//!   (shorter side a random integer in `[min, max]`, then a random `size x size` crop), or the
//!   evaluation centre crop; then a random horizontal flip.
//! - Evaluation views ([`EvalView`]): resize the shorter side to `resize`, then the centre
//!   `size x size` crop, or ten crops (torchvision's `TenCrop`: the four corners and the centre,
//!   then the same five of the mirrored image), or the whole image with its shorter side at each of
//!   a list of scales (fully-convolutional multi-scale testing; no crop, so sizes differ and the
//!   loader gives each such view a batch of its own).
//!
//! Randomness, as in the rest of the loader, comes from one ChaCha stream per sample seeded by
//! (seed, epoch, position in the epoch's order) and is drawn in a fixed order, so results do not
//! depend on threads or timing.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};
use rand::RngCore;

use super::augment::uniform_below;
use crate::error::{Error, Result};

/// File extensions (lower case) taken as images when scanning.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// An image the loader left out (`OnCorrupt::Skip`), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedImage {
    pub path: PathBuf,
    pub reason: String,
}

/// The files of an image folder and their classes; pixels are read per batch by the loader.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    paths: Vec<PathBuf>,
    labels: Vec<u32>,
    class_names: Vec<String>,
    /// Shared with subsets, so skips seen through any of them are reported by all.
    skipped: Arc<Mutex<BTreeMap<PathBuf, String>>>,
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|s| s.starts_with('.'))
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::file(dir, format!("image folder: cannot list: {e}")))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::file(dir, format!("image folder: cannot list: {e}")))?;
        if !is_hidden(&entry.file_name()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Image files under `dir`, recursively (following links), sorted by path.
fn collect_images(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    if depth > 32 {
        return Err(Error::file(
            dir,
            "image folder: folders nested too deep (a link cycle?)",
        ));
    }
    for path in list_dir(dir)? {
        if path.is_dir() {
            collect_images(&path, out, depth + 1)?;
        } else if has_image_extension(&path) && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

impl ImageFolder {
    /// Lists `root/<class>/**/<image>.{jpg,jpeg,png}`. Fails, naming the path, when `root` is
    /// missing or not a folder, has no class folders, or a class folder holds no images.
    pub fn scan(root: impl AsRef<Path>) -> Result<ImageFolder> {
        let root = root.as_ref();
        match fs::metadata(root) {
            Err(e) => {
                return Err(Error::file(
                    root,
                    format!("image folder: cannot open the root folder: {e}"),
                ))
            }
            Ok(m) if !m.is_dir() => return Err(Error::file(root, "image folder: the root is not a folder")),
            Ok(_) => {}
        }
        let class_dirs: Vec<PathBuf> = list_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
        if class_dirs.is_empty() {
            return Err(Error::file(
                root,
                "image folder: no class folders (expected root/<class>/<image>.jpg|.jpeg|.png)",
            ));
        }
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        let mut class_names = Vec::with_capacity(class_dirs.len());
        for (label, dir) in class_dirs.iter().enumerate() {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::file(dir, "image folder: class folder name is not valid UTF-8"))?;
            let mut images = Vec::new();
            collect_images(dir, &mut images, 0)?;
            if images.is_empty() {
                return Err(Error::file(
                    dir,
                    format!("image folder: class '{name}' has no images (.jpg, .jpeg or .png)"),
                ));
            }
            class_names.push(name.to_string());
            labels.extend(std::iter::repeat_n(label as u32, images.len()));
            paths.extend(images);
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            paths,
            labels,
            class_names,
            skipped: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Folder names, in class-index order.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Image paths, in sample order (by class, then path).
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Class index of each sample.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The given samples, in that order (repeats allowed); shares the skipped-file record.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> ImageFolder {
        ImageFolder {
            root: self.root.clone(),
            paths: indices.iter().map(|&i| self.paths[i].clone()).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
            skipped: self.skipped.clone(),
        }
    }

    /// Sample `i`'s pixels as RGB; the error names the file.
    pub fn load(&self, i: usize) -> Result<RgbImage> {
        decode_rgb(&self.paths[i])
    }

    /// Files left out so far under `OnCorrupt::Skip`, sorted by path.
    pub fn skipped(&self) -> Vec<SkippedImage> {
        let map = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(|(path, reason)| SkippedImage {
                path: path.clone(),
                reason: reason.clone(),
            })
            .collect()
    }

    /// Records a skipped file; warns on stderr the first time a file is skipped.
    pub(crate) fn record_skip(&self, path: &Path, reason: &str) {
        let mut map = self.skipped.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(path) {
            eprintln!("resnet-wgpu: skipping an image that cannot be decoded: {reason}");
            map.insert(path.to_path_buf(), reason.to_string());
        }
    }
}

/// Decodes a JPEG or PNG file (format from the content) to 8-bit RGB; errors name the file.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let reader = ImageReader::open(path)
        .map_err(|e| Error::file(path, format!("cannot read the image: {e}")))?
        .with_guessed_format()
        .map_err(|e| Error::file(path, format!("cannot read the image: {e}")))?;
    let image = reader
        .decode()
        .map_err(|e| Error::file(path, format!("cannot decode the image: {e}")))?;
    Ok(image.to_rgb8())
}

/// Decodes JPEG or PNG bytes to 8-bit RGBA (grey replicated, opaque alpha added):
/// `(pixels, width, height)`. For `predict`, which resizes in TypeScript.
pub fn decode_rgba_bytes(bytes: &[u8]) -> Result<(Vec<u8>, u32, u32)> {
    let image = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::invalid(format!("cannot read the image: {e}")))?
        .decode()
        .map_err(|e| Error::invalid(format!("cannot decode the image (JPEG or PNG expected): {e}")))?;
    let rgba = image.to_rgba8();
    let (w, h) = rgba.dimensions();
    Ok((rgba.into_raw(), w, h))
}

/// Encodes interleaved 8-bit pixels (`channels` 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) as PNG or,
/// with `quality` 1..=100, as JPEG (alpha is dropped). Handy for writing test images.
pub fn encode_image(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u32,
    jpeg_quality: Option<u8>,
) -> Result<Vec<u8>> {
    let expected = width as usize * height as usize * channels as usize;
    if pixels.len() != expected || width == 0 || height == 0 {
        return Err(Error::invalid(format!(
            "encode image: {} bytes for {width}x{height} with {channels} channels (expected {expected}, non-empty)",
            pixels.len()
        )));
    }
    let v = pixels.to_vec();
    let image = match channels {
        1 => image::GrayImage::from_raw(width, height, v).map(DynamicImage::ImageLuma8),
        2 => image::GrayAlphaImage::from_raw(width, height, v).map(DynamicImage::ImageLumaA8),
        3 => RgbImage::from_raw(width, height, v).map(DynamicImage::ImageRgb8),
        4 => image::RgbaImage::from_raw(width, height, v).map(DynamicImage::ImageRgba8),
        _ => None,
    }
    .ok_or_else(|| Error::invalid(format!("encode image: {channels} channels (expected 1, 2, 3 or 4)")))?;
    let mut out = Cursor::new(Vec::new());
    let result = match jpeg_quality {
        None => image.write_to(&mut out, ImageFormat::Png),
        Some(q) => {
            let q = q.clamp(1, 100);
            let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, q);
            let flat = match channels {
                1 | 2 => DynamicImage::ImageLuma8(image.to_luma8()),
                _ => DynamicImage::ImageRgb8(image.to_rgb8()),
            };
            encoder.encode_image(&flat)
        }
    };
    result.map_err(|e| Error::invalid(format!("encode image: {e}")))?;
    Ok(out.into_inner())
}

/// The training-time transform of an image folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrainTransform {
    /// torchvision's `RandomResizedCrop(size)`: a crop of 8-100% of the area and aspect ratio in
    /// [3/4, 4/3] (log-uniform), resized to `size x size`.
    RandomResizedCrop,
    /// He et al. 2015, sec. 3.4: shorter side resized to a random integer in `[min, max]`
    /// (paper: [256, 480]), then a random `size x size` crop.
    ScaleAugment { min: u32, max: u32 },
    /// No random crop: the evaluation centre crop (shorter side to `resize`, centre `size`).
    CenterCrop,
}

/// How an image folder is viewed for evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvalView {
    /// Shorter side to `resize`, then the centre `size x size` crop: one view.
    Center,
    /// Shorter side to `resize`, then torchvision's `TenCrop(size)`: top-left, top-right,
    /// bottom-left, bottom-right, centre, then the same five of the mirrored image.
    TenCrop,
    /// The whole image with its shorter side at each scale, no crop: one view per scale, each a
    /// batch of its own (sizes differ).
    FullImage { scales: Vec<u32> },
}

impl EvalView {
    /// Views per image.
    pub fn views(&self) -> usize {
        match self {
            EvalView::Center => 1,
            EvalView::TenCrop => 10,
            EvalView::FullImage { scales } => scales.len(),
        }
    }
}

/// What to do with an image that cannot be read or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCorrupt {
    /// The batch fails with an error naming the file (the loader then ends).
    Fail,
    /// The image is left out of its batch, recorded in [`ImageFolder::skipped`] and reported on
    /// stderr once.
    Skip,
}

/// The transforms of an image-folder loader. Whether the training transform or the evaluation
/// view is used is chosen by [`LoaderConfig::augment`](super::LoaderConfig): `Some` trains (its
/// `flip` enables the mirror; `pad_crop` must be 0), `None` evaluates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderTransform {
    /// Output side S of crops (224).
    pub size: u32,
    /// Shorter side before the centre crop / ten crops (256).
    pub resize: u32,
    pub train: TrainTransform,
    pub view: EvalView,
    pub on_corrupt: OnCorrupt,
    /// Decoding threads; 0 means one per core (at most 16).
    pub workers: usize,
}

impl Default for FolderTransform {
    /// ImageNet: `RandomResizedCrop(224)` for training, resize 256 + centre 224 for evaluation.
    fn default() -> Self {
        FolderTransform {
            size: 224,
            resize: 256,
            train: TrainTransform::RandomResizedCrop,
            view: EvalView::Center,
            on_corrupt: OnCorrupt::Fail,
            workers: 0,
        }
    }
}

/// Largest side accepted for any resize target, against accidental huge allocations.
const MAX_SIDE: u32 = 8192;

impl FolderTransform {
    pub fn validate(&self) -> Result<()> {
        let side = |what: &str, v: u32| {
            if v == 0 || v > MAX_SIDE {
                Err(Error::invalid(format!(
                    "image folder: {what} must be in 1..={MAX_SIDE}, got {v}"
                )))
            } else {
                Ok(())
            }
        };
        side("size", self.size)?;
        side("resize", self.resize)?;
        if self.resize < self.size {
            return Err(Error::invalid(format!(
                "image folder: resize ({}) must be at least size ({}) for the centre crop",
                self.resize, self.size
            )));
        }
        if let TrainTransform::ScaleAugment { min, max } = self.train {
            side("scaleAugment min", min)?;
            side("scaleAugment max", max)?;
            if min > max || min < self.size {
                return Err(Error::invalid(format!(
                    "image folder: scaleAugment range [{min}, {max}] must satisfy size ({}) <= min <= max",
                    self.size
                )));
            }
        }
        if let EvalView::FullImage { scales } = &self.view {
            if scales.is_empty() {
                return Err(Error::invalid("image folder: fullImage needs at least one scale"));
            }
            for &s in scales {
                side("fullImage scale", s)?;
            }
        }
        Ok(())
    }

    pub(crate) fn threads(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get()).min(16)
        }
    }
}

/// Python's `round` (half to even) of `num / 2` for a non-negative integer `num`: torchvision's
/// centre-crop offset `int(round((len - crop) / 2.0))`.
pub fn center_offset(len: u32, crop: u32) -> u32 {
    let d = len.saturating_sub(crop);
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Size after resizing the shorter side to `target` (torchvision's `Resize(int)`).
pub fn shorter_side_size(w: u32, h: u32, target: u32) -> (u32, u32) {
    let scaled = |long: u32, short: u32| ((target as u64 * long as u64) / short.max(1) as u64).max(1) as u32;
    if w <= h {
        (target, scaled(h, w))
    } else {
        (scaled(w, h), target)
    }
}

/// Bilinear (antialiased) resize so the shorter side is `target`.
pub fn resize_shorter(image: &RgbImage, target: u32) -> RgbImage {
    let (w, h) = shorter_side_size(image.width(), image.height(), target);
    imageops::resize(image, w, h, FilterType::Triangle)
}

fn crop(image: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    imageops::crop_imm(image, x, y, w, h).to_image()
}

/// The centre `size x size` crop (torchvision's offsets). The image must be at least that big.
pub fn center_crop(image: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    crop(image, center_offset(w, size), center_offset(h, size), size, size)
}

/// torchvision's `FiveCrop`: top-left, top-right, bottom-left, bottom-right, centre.
pub fn five_crop(image: &RgbImage, size: u32) -> [RgbImage; 5] {
    let (w, h) = image.dimensions();
    let (r, b) = (w - size, h - size);
    [
        crop(image, 0, 0, size, size),
        crop(image, r, 0, size, size),
        crop(image, 0, b, size, size),
        crop(image, r, b, size, size),
        center_crop(image, size),
    ]
}

/// torchvision's `TenCrop`: [`five_crop`] of the image, then of its mirror image.
pub fn ten_crop(image: &RgbImage, size: u32) -> Vec<RgbImage> {
    let mut views = five_crop(image, size).to_vec();
    views.extend(five_crop(&imageops::flip_horizontal(image), size));
    views
}

/// Uniform in [0, 1) from the top 53 bits (our own sampler, independent of `rand`'s versions).
fn uniform01<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3):
/// `(x, y, width, height)` of the crop in a `w x h` image.
pub fn random_resized_crop_box<R: RngCore + ?Sized>(w: u32, h: u32, rng: &mut R) -> (u32, u32, u32, u32) {
    let area = w as f64 * h as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * (0.08 + (1.0 - 0.08) * uniform01(rng));
        let ratio = (lo + (hi - lo) * uniform01(rng)).exp();
        let cw = (target * ratio).sqrt().round_ties_even();
        let ch = (target / ratio).sqrt().round_ties_even();
        if cw >= 1.0 && cw <= w as f64 && ch >= 1.0 && ch <= h as f64 {
            let (cw, ch) = (cw as u32, ch as u32);
            let y = uniform_below(rng, (h - ch + 1) as u64) as u32;
            let x = uniform_below(rng, (w - cw + 1) as u64) as u32;
            return (x, y, cw, ch);
        }
    }
    // Fallback: the largest centred crop with the ratio clamped into range.
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < 3.0 / 4.0 {
        (w, ((w as f64 / (3.0 / 4.0)).round_ties_even() as u32).clamp(1, h))
    } else if in_ratio > 4.0 / 3.0 {
        (((h as f64 * (4.0 / 3.0)).round_ties_even() as u32).clamp(1, w), h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

/// The views of one decoded image: one for training (`Some(flip)` selects training, `flip`
/// enabling the random mirror), [`EvalView::views`] for evaluation. Randomness is drawn from
/// `rng` in a fixed order: the crop parameters, then the flip coin.
pub fn transform_image<R: RngCore + ?Sized>(
    image: &RgbImage,
    t: &FolderTransform,
    train_flip: Option<bool>,
    rng: &mut R,
) -> Vec<RgbImage> {
    let s = t.size;
    match train_flip {
        Some(flip) => {
            let mut out = match t.train {
                TrainTransform::RandomResizedCrop => {
                    let (x, y, cw, ch) = random_resized_crop_box(image.width(), image.height(), rng);
                    imageops::resize(&crop(image, x, y, cw, ch), s, s, FilterType::Triangle)
                }
                TrainTransform::ScaleAugment { min, max } => {
                    let shorter = min + uniform_below(rng, (max - min + 1) as u64) as u32;
                    let resized = resize_shorter(image, shorter);
                    let (w, h) = resized.dimensions();
                    let y = uniform_below(rng, (h - s + 1) as u64) as u32;
                    let x = uniform_below(rng, (w - s + 1) as u64) as u32;
                    crop(&resized, x, y, s, s)
                }
                TrainTransform::CenterCrop => center_crop(&resize_shorter(image, t.resize), s),
            };
            if flip && rng.next_u64() >> 63 == 1 {
                imageops::flip_horizontal_in_place(&mut out);
            }
            vec![out]
        }
        None => match &t.view {
            EvalView::Center => vec![center_crop(&resize_shorter(image, t.resize), s)],
            EvalView::TenCrop => ten_crop(&resize_shorter(image, t.resize), s),
            EvalView::FullImage { scales } => scales.iter().map(|&scale| resize_shorter(image, scale)).collect(),
        },
    }
}

/// Writes `image` as channel-major f32 through per-channel lookup tables (`tables[c][pixel]`).
pub(crate) fn write_planes(image: &RgbImage, tables: &[[f32; 256]], out: &mut [f32]) {
    let plane = (image.width() * image.height()) as usize;
    debug_assert_eq!(out.len(), 3 * plane);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (k, px) in image.as_raw().chunks_exact(3).enumerate() {
        r[k] = tables[0][px[0] as usize];
        g[k] = tables[1][px[1] as usize];
        b[k] = tables[2][px[2] as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn center_offset_rounds_half_to_even_like_python() {
        // round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(16) = 16.
        assert_eq!(center_offset(225, 224), 0);
        assert_eq!(center_offset(227, 224), 2);
        assert_eq!(center_offset(229, 224), 2);
        assert_eq!(center_offset(256, 224), 16);
        assert_eq!(center_offset(224, 224), 0);
    }

    #[test]
    fn shorter_side_truncates_like_torchvision() {
        assert_eq!(shorter_side_size(500, 375, 256), (341, 256));
        assert_eq!(shorter_side_size(37, 53, 20), (20, 28));
        assert_eq!(shorter_side_size(40, 40, 7), (7, 7));
    }
}
