//! IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//!
//! Layout: 4-byte big-endian magic `00 00 08 ndims` (0x08 = u8 elements), `ndims` big-endian u32
//! dimensions, then the elements. Gzip is detected from the `1f 8b` magic bytes, not the file
//! name, so renamed or already-decompressed files just work.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{Dataset, Split};
use crate::error::{Error, Result};

pub const DEFAULT_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const MAGIC_IMAGES: u32 = 0x0000_0803;
const MAGIC_LABELS: u32 = 0x0000_0801;
/// Deflate cannot expand data by more than ~1032x; a header declaring more than that is lying,
/// and we can say so before allocating anything.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// Up-front allocation cap; beyond it the buffer grows with the data actually decoded, so a lying
/// header never costs more memory than the real content.
const MAX_PREALLOC: u64 = 64 << 20;

/// Reads an IDX image file: returns (pixels, n, h, w), pixels row-major per image.
pub fn read_idx_images(path: &Path) -> Result<(Vec<u8>, usize, usize, usize)> {
    let (dims, data) = read_idx(path, MAGIC_IMAGES, "u8 images, 3 dims")?;
    Ok((data, dims[0], dims[1], dims[2]))
}

/// Reads an IDX label file (one u8 per sample).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, MAGIC_LABELS, "u8 labels, 1 dim")?.1)
}

fn read_idx(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| Error::file(path, io_message("cannot read", &e)))?;
    let gzipped = raw.starts_with(&[0x1f, 0x8b]);
    let file_len = raw.len() as u64;
    let mut reader: Box<dyn Read + '_> = if gzipped {
        Box::new(GzDecoder::new(&raw[..]))
    } else {
        Box::new(&raw[..])
    };
    let gz_err = |e: std::io::Error| Error::file(path, format!("bad gzip stream (corrupt or truncated .gz file): {e}"));

    let mut head = [0u8; 4];
    read_header_bytes(&mut reader, &mut head, path, gzipped)?;
    let found = u32::from_be_bytes(head);
    if found != magic {
        return Err(Error::file(
            path,
            format!(
                "not an IDX file of the expected kind: bad magic number, expected {magic:#010x} \
                 ({what}), found {found:#010x}"
            ),
        ));
    }
    let ndims = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        read_header_bytes(&mut reader, &mut head, path, gzipped)?;
        dims.push(u32::from_be_bytes(head) as usize);
    }
    let header_len = 4 + 4 * ndims as u64;
    let dims_text = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| Error::file(path, format!("header dimensions {dims_text} overflow")))?;

    let available = file_len - header_len.min(file_len);
    if !gzipped && expected != available {
        return Err(Error::file(
            path,
            format!(
                "{} IDX file: header declares {dims_text} = {expected} bytes of data, but the \
                 file has {available} bytes after the {header_len}-byte header",
                if expected > available { "truncated" } else { "malformed" },
            ),
        ));
    }
    if gzipped && expected > file_len.saturating_mul(MAX_DEFLATE_RATIO) {
        return Err(Error::file(
            path,
            format!(
                "header declares {dims_text} = {expected} bytes of data, more than a \
                 {file_len}-byte gzip file can hold (header corrupt or file truncated)"
            ),
        ));
    }

    let mut data = Vec::with_capacity(expected.min(MAX_PREALLOC) as usize);
    // One byte past `expected` reveals trailing garbage without reading all of it.
    (&mut reader)
        .take(expected + 1)
        .read_to_end(&mut data)
        .map_err(gz_err)?;
    if data.len() as u64 != expected {
        let actual = if data.len() as u64 > expected {
            "more than that".to_string()
        } else {
            format!("{} bytes", data.len())
        };
        return Err(Error::file(
            path,
            format!(
                "{} IDX file: header declares {dims_text} = {expected} bytes of data, but the \
                 decompressed data after the {header_len}-byte header has {actual}",
                if (data.len() as u64) < expected {
                    "truncated"
                } else {
                    "malformed"
                },
            ),
        ));
    }
    Ok((dims, data))
}

fn read_header_bytes(reader: &mut dyn Read, buf: &mut [u8; 4], path: &Path, gzipped: bool) -> Result<()> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::file(path, "truncated IDX file: ends inside the header")
        } else if gzipped {
            Error::file(path, format!("bad gzip stream (corrupt or truncated .gz file): {e}"))
        } else {
            Error::file(path, format!("cannot read IDX header: {e}"))
        }
    })
}

pub(crate) fn io_message(action: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("{action}: file not found"),
        std::io::ErrorKind::PermissionDenied => format!("{action}: permission denied"),
        _ => format!("{action}: {e}"),
    }
}

/// Which of `<dir>/<stem>.gz` and `<dir>/<stem>` to read, and a warning when both exist.
///
/// With only one present, that one. With both, the more recently modified (the one a user just
/// wrote or decompressed); on equal times (`gunzip -k` keeps the time) the `.gz`. Reading one of
/// two silently would hide which data trains, so the choice is said once per file on stderr, and
/// the dataset lists the files it read (`Dataset::files`).
pub fn choose_variant(dir: &Path, stem: &str) -> (Option<PathBuf>, Option<String>) {
    let gz = dir.join(format!("{stem}.gz"));
    let raw = dir.join(stem);
    match (gz.is_file(), raw.is_file()) {
        (false, false) => (None, None),
        (true, false) => (Some(gz), None),
        (false, true) => (Some(raw), None),
        (true, true) => {
            let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
            let raw_newer = matches!((modified(&raw), modified(&gz)), (Some(r), Some(g)) if r > g);
            let (chosen, other, why) = if raw_newer {
                (raw, gz, "the more recently modified")
            } else {
                (gz, raw, "not older than the other")
            };
            let note = format!(
                "resnet-wgpu: {} and {} both exist; reading {} ({why}; remove the other to silence this)",
                chosen.display(),
                other.file_name().unwrap_or_default().to_string_lossy(),
                chosen.file_name().unwrap_or_default().to_string_lossy(),
            );
            (Some(chosen), Some(note))
        }
    }
}

/// [`choose_variant`], printing its warning once per chosen file per process.
fn find_variant(dir: &Path, stem: &str) -> Option<PathBuf> {
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let (path, note) = choose_variant(dir, stem);
    if let (Some(p), Some(note)) = (&path, note) {
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        if !warned.contains(p) {
            warned.push(p.clone());
            eprintln!("{note}");
        }
    }
    path
}

/// Reads one Fashion-MNIST split from `dir` (`train-*` or `t10k-*` IDX files, gzip'd or raw;
/// where both forms of a file exist, see [`choose_variant`]). Dimensions come from the files
/// (28x28 for the real data), c = 1. `Dataset::files` names the two files read.
pub fn read_fashion_mnist(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images_stem = format!("{prefix}-images-idx3-ubyte");
    let labels_stem = format!("{prefix}-labels-idx1-ubyte");
    let (images_path, labels_path) = match (find_variant(dir, &images_stem), find_variant(dir, &labels_stem)) {
        (Some(i), Some(l)) => (i, l),
        (i, l) => {
            let missing: Vec<String> = [(i, &images_stem), (l, &labels_stem)]
                .into_iter()
                .filter(|(found, _)| found.is_none())
                .map(|(_, stem)| format!("{stem}.gz (or {stem})"))
                .collect();
            let place = if dir.is_dir() {
                "in this directory"
            } else {
                "(the directory does not exist)"
            };
            return Err(Error::file(
                dir,
                format!(
                    "Fashion-MNIST not found: expected {} {place}; install the Debian package \
                     dataset-fashion-mnist or pass --data DIR",
                    missing.join(" and ")
                ),
            ));
        }
    };

    let (images, n, h, w) = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if labels.len() != n {
        return Err(Error::file(
            &labels_path,
            format!(
                "has {} labels but {} has {n} images",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    check_labels(&labels, &labels_path, 10)?;
    let mut dataset = Dataset::new(
        images,
        labels,
        1,
        h,
        w,
        10,
        FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
    )?;
    dataset.files = vec![images_path, labels_path];
    Ok(dataset)
}

/// Label range check that names the file (Dataset::new would only give an index).
pub(crate) fn check_labels(labels: &[u8], path: &Path, classes: usize) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        None => Ok(()),
        Some(i) => Err(Error::file(
            path,
            format!(
                "label {} at index {i} is out of range (expected 0..{classes})",
                labels[i]
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::io::Write;

    fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    /// Writes a fake Fashion-MNIST split (n images of h x w) and returns its pixels and labels.
    fn write_split(dir: &Path, prefix: &str, n: usize, gzip: bool, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let pixels = random_bytes(n * 28 * 28, seed);
        let labels: Vec<u8> = random_bytes(n, seed + 1).iter().map(|b| b % 10).collect();
        let img = idx_bytes(MAGIC_IMAGES, &[n as u32, 28, 28], &pixels);
        let lab = idx_bytes(MAGIC_LABELS, &[n as u32], &labels);
        let suffix = if gzip { ".gz" } else { "" };
        let (img, lab) = if gzip { (gz(&img), gz(&lab)) } else { (img, lab) };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{suffix}")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{suffix}")), lab).unwrap();
        (pixels, labels)
    }

    #[test]
    fn reads_gzip_and_raw_identically() {
        let dir = tempfile::tempdir().unwrap();
        let pixels = random_bytes(5 * 4 * 3, 7);
        let file = idx_bytes(MAGIC_IMAGES, &[5, 4, 3], &pixels);
        let raw_path = dir.path().join("a.idx");
        // Misleading extension on purpose: detection is by content.
        let gz_path = dir.path().join("b.idx");
        std::fs::write(&raw_path, &file).unwrap();
        std::fs::write(&gz_path, gz(&file)).unwrap();
        for p in [&raw_path, &gz_path] {
            let (data, n, h, w) = read_idx_images(p).unwrap();
            assert_eq!((n, h, w), (5, 4, 3));
            assert_eq!(data, pixels);
        }
        let labels = random_bytes(9, 8);
        std::fs::write(&raw_path, idx_bytes(MAGIC_LABELS, &[9], &labels)).unwrap();
        assert_eq!(read_idx_labels(&raw_path).unwrap(), labels);
    }

    #[test]
    fn wrong_magic_says_expected_and_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels-as-images");
        std::fs::write(&p, idx_bytes(MAGIC_LABELS, &[3], &[1, 2, 3])).unwrap();
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("magic"), "{msg}");
        assert!(msg.contains("0x00000803") && msg.contains("0x00000801"), "{msg}");
        assert!(msg.contains("labels-as-images"), "{msg}");
    }

    #[test]
    fn truncated_names_file_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let file = idx_bytes(MAGIC_IMAGES, &[4, 5, 5], &random_bytes(100, 1));
        for (name, bytes) in [
            ("cut.raw", file[..file.len() - 10].to_vec()),
            ("cut.gz", gz(&file[..file.len() - 10])),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let msg = read_idx_images(&p).unwrap_err().to_string();
            assert!(msg.contains(name), "{msg}");
            assert!(msg.contains("truncated"), "{msg}");
            assert!(msg.contains("100") && msg.contains("90"), "{msg}");
        }
        // A gzip stream cut short is a gzip error, not a silent short read.
        let p = dir.path().join("cut-stream.gz");
        let z = gz(&file);
        std::fs::write(&p, &z[..z.len() / 2]).unwrap();
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("cut-stream.gz"), "{msg}");
    }

    #[test]
    fn lying_header_does_not_allocate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liar");
        let file = idx_bytes(MAGIC_IMAGES, &[1_000_000_000, 28, 28], &random_bytes(84, 2));
        assert_eq!(file.len(), 100);
        std::fs::write(&p, &file).unwrap();
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("784000000000"), "{msg}");
        std::fs::write(&p, gz(&file)).unwrap();
        assert!(read_idx_images(&p).is_err());
        // u32::MAX^3 overflows u64.
        let huge = idx_bytes(MAGIC_IMAGES, &[u32::MAX; 3], &[]);
        std::fs::write(&p, huge).unwrap();
        assert!(read_idx_images(&p).unwrap_err().to_string().contains("overflow"));
    }

    #[test]
    fn bad_gzip_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.gz");
        let mut z = gz(&idx_bytes(MAGIC_LABELS, &[50], &random_bytes(50, 3)));
        let mid = z.len() / 2;
        z[mid] ^= 0xff;
        z[mid + 1] ^= 0x55;
        std::fs::write(&p, z).unwrap();
        let msg = read_idx_labels(&p).unwrap_err().to_string();
        assert!(msg.contains("bad.gz"), "{msg}");
    }

    #[test]
    fn fashion_mnist_dir_gz_raw_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let (pixels, labels) = write_split(dir.path(), "train", 12, true, 10);
        let (tp, tl) = write_split(dir.path(), "t10k", 5, false, 20);
        let train = read_fashion_mnist(dir.path(), Split::Train).unwrap();
        assert_eq!((train.n, train.c, train.h, train.w), (12, 1, 28, 28));
        assert_eq!(train.images, pixels);
        assert_eq!(train.labels, labels);
        assert_eq!(train.class_names[9], "Ankle boot");
        let test = read_fashion_mnist(dir.path(), Split::Test).unwrap();
        assert_eq!((test.images, test.labels), (tp, tl));

        assert_eq!(
            train.files,
            vec![
                dir.path().join("train-images-idx3-ubyte.gz"),
                dir.path().join("train-labels-idx1-ubyte.gz")
            ]
        );

        // Both forms: the newer one is read, and the files say which. Same time: the .gz.
        write_split(dir.path(), "train", 3, false, 30);
        let (gz_img, raw_img) = (
            dir.path().join("train-images-idx3-ubyte.gz"),
            dir.path().join("train-images-idx3-ubyte"),
        );
        let set_time = |p: &Path, secs: u64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        for stem in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
            set_time(&dir.path().join(format!("{stem}.gz")), 1_000_000);
            set_time(&dir.path().join(stem), 2_000_000);
        }
        let newer_raw = read_fashion_mnist(dir.path(), Split::Train).unwrap();
        assert_eq!(newer_raw.n, 3);
        assert_eq!(newer_raw.files[0], raw_img);
        let (chosen, note) = choose_variant(dir.path(), "train-images-idx3-ubyte");
        assert_eq!(chosen.as_ref(), Some(&raw_img));
        let note = note.unwrap();
        assert!(
            note.contains("both exist") && note.contains("reading train-images-idx3-ubyte ("),
            "{note}"
        );
        for stem in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
            set_time(&dir.path().join(stem), 1_000_000);
        }
        assert_eq!(choose_variant(dir.path(), "train-images-idx3-ubyte").0, Some(gz_img));
        assert_eq!(read_fashion_mnist(dir.path(), Split::Train).unwrap().n, 12);

        // Labels count disagreeing with images count.
        let lab = idx_bytes(MAGIC_LABELS, &[11], &[0; 11]);
        std::fs::write(dir.path().join("train-labels-idx1-ubyte.gz"), gz(&lab)).unwrap();
        let msg = read_fashion_mnist(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("11 labels") && msg.contains("12 images"), "{msg}");

        // Label 10 with 10 classes.
        let mut bad = vec![3u8; 12];
        bad[4] = 10;
        let lab = idx_bytes(MAGIC_LABELS, &[12], &bad);
        std::fs::write(dir.path().join("train-labels-idx1-ubyte.gz"), gz(&lab)).unwrap();
        let msg = read_fashion_mnist(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("label 10 at index 4"), "{msg}");
        assert!(msg.contains("train-labels-idx1-ubyte.gz"), "{msg}");
    }

    #[test]
    fn fashion_mnist_missing_dir_names_dir_and_package() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let msg = read_fashion_mnist(&missing, Split::Test).unwrap_err().to_string();
        assert!(msg.contains(&*missing.to_string_lossy()), "{msg}");
        assert!(msg.contains("dataset-fashion-mnist"), "{msg}");
        assert!(msg.contains("t10k-images-idx3-ubyte.gz"), "{msg}");
        // Only the labels file missing: name just that one.
        write_split(dir.path(), "t10k", 2, true, 1);
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let msg = read_fashion_mnist(dir.path(), Split::Test).unwrap_err().to_string();
        assert!(msg.contains("t10k-labels") && !msg.contains("t10k-images"), "{msg}");
    }

    #[test]
    fn real_fashion_mnist_if_installed() {
        let dir = Path::new(DEFAULT_FASHION_MNIST_DIR);
        if !dir.is_dir() {
            eprintln!("skipping: {DEFAULT_FASHION_MNIST_DIR} not present");
            return;
        }
        for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let t = std::time::Instant::now();
            let d = read_fashion_mnist(dir, split).unwrap();
            eprintln!("{split:?}: {} images in {:?}", d.n, t.elapsed());
            assert_eq!((d.n, d.c, d.h, d.w), (n, 1, 28, 28));
            assert_eq!(d.images.len(), n * 784);
            let mut counts = [0usize; 10];
            for &l in &d.labels {
                counts[l as usize] += 1;
            }
            assert_eq!(counts, [n / 10; 10]);
            let (mean, std) = d.channel_mean_std();
            // Published Fashion-MNIST statistics: mean ~0.286, std ~0.353.
            assert!((mean[0] - 0.286).abs() < 0.01, "{mean:?}");
            assert!((std[0] - 0.353).abs() < 0.01, "{std:?}");
        }
    }

    #[test]
    fn fuzzed_idx_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let valid = idx_bytes(MAGIC_IMAGES, &[6, 7, 5], &random_bytes(210, 4));
        let valid_gz = gz(&valid);
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let p = dir.path().join("fuzz");
        let (mut ok, mut err) = (0, 0);
        for i in 0..500 {
            let mut bytes = if i % 2 == 0 { valid.clone() } else { valid_gz.clone() };
            mutate(&mut bytes, &mut rng);
            std::fs::write(&p, &bytes).unwrap();
            let result = std::panic::catch_unwind(|| {
                let a = read_idx_images(&p).map(|_| ());
                let b = read_idx_labels(&p).map(|_| ());
                a.or(b)
            });
            match result {
                Ok(Ok(())) => ok += 1,
                Ok(Err(_)) => err += 1,
                Err(_) => panic!("reader panicked on mutation {i}: {bytes:?}"),
            }
        }
        assert!(err > 100, "mutations should mostly be rejected ({ok} ok, {err} err)");
    }

    /// Random truncation, byte flips or header-field rewrites.
    fn mutate(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
        match rng.next_u32() % 4 {
            0 => {
                let cut = rng.next_u32() as usize % (bytes.len() + 1);
                bytes.truncate(cut);
            }
            1 => {
                for _ in 0..1 + rng.next_u32() % 4 {
                    let i = rng.next_u32() as usize % bytes.len();
                    bytes[i] = rng.next_u32() as u8;
                }
            }
            2 => {
                // Rewrite a 4-byte-aligned field near the start (magic / dims / lengths).
                let i = (rng.next_u32() as usize % 4) * 4;
                if i + 4 <= bytes.len() {
                    bytes[i..i + 4].copy_from_slice(&rng.next_u32().to_be_bytes());
                }
            }
            _ => {
                let extra = rng.next_u32() as usize % 16;
                bytes.extend((0..extra).map(|_| rng.next_u32() as u8));
            }
        }
    }
}
