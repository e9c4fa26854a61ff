//! CIFAR-10 "binary version" batches: fixed-size records of 1 label byte followed by 3072 pixel
//! bytes (3x32x32, channel-major: all red, then green, then blue).

use std::path::{Path, PathBuf};

use super::idx::{check_labels, io_message};
use super::{Dataset, Split};
use crate::error::{Error, Result};

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const IMAGE_BYTES: usize = 3 * 32 * 32;
const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILES: [&str; 1] = ["test_batch.bin"];
/// The directory the official tarball unpacks to.
const SUBDIR: &str = "cifar-10-batches-bin";

/// Reads one batch file: (images 3x32x32 each, labels).
pub fn read_cifar_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| Error::file(path, io_message("cannot read", &e)))?;
    if raw.is_empty() || raw.len() % RECORD_BYTES != 0 {
        return Err(Error::file(
            path,
            format!(
                "not a CIFAR-10 binary batch: size {} bytes is not a nonzero multiple of the \
                 {RECORD_BYTES}-byte record (1 label + 3x32x32 pixels); truncated or wrong file?",
                raw.len()
            ),
        ));
    }
    let n = raw.len() / RECORD_BYTES;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for record in raw.chunks_exact(RECORD_BYTES) {
        labels.push(record[0]);
        images.extend_from_slice(&record[1..]);
    }
    check_labels(&labels, path, 10)?;
    Ok((images, labels))
}

/// Reads a CIFAR-10 split from `dir` or `dir/cifar-10-batches-bin`. Class names come from
/// `batches.meta.txt` when it lists exactly 10 names, else the standard ones.
pub fn read_cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let files: &[&str] = match split {
        Split::Train => &TRAIN_FILES,
        Split::Test => &TEST_FILES,
    };
    let root = [dir.to_path_buf(), dir.join(SUBDIR)]
        .into_iter()
        .find(|d| files.iter().all(|f| d.join(f).is_file()))
        .ok_or_else(|| not_found(dir, files))?;

    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let (i, l) = read_cifar_batch(&root.join(f))?;
        images.extend_from_slice(&i);
        labels.extend_from_slice(&l);
    }
    let mut dataset = Dataset::new(images, labels, 3, 32, 32, 10, class_names(&root))?;
    dataset.files = files.iter().map(|f| root.join(f)).collect();
    Ok(dataset)
}

fn not_found(dir: &Path, files: &[&str]) -> Error {
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file() && !dir.join(SUBDIR).join(f).is_file())
        .collect();
    let missing = if missing.is_empty() {
        // Some files in each place: still unusable, say what is expected.
        files.join(", ")
    } else {
        missing.join(", ")
    };
    Error::file(
        dir,
        format!(
            "CIFAR-10 not found: expected {missing} in this directory or in {SUBDIR}/ under it \
             (the binary version, https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz)"
        ),
    )
}

fn class_names(root: &Path) -> Vec<String> {
    let meta: PathBuf = root.join("batches.meta.txt");
    let names: Vec<String> = std::fs::read_to_string(meta)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() == 10 {
        names
    } else {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// n random records; returns (file bytes, images, labels).
    fn fake_batch(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut file, mut images, mut labels) = (vec![], vec![], vec![]);
        for _ in 0..n {
            let label = (rng.next_u32() % 10) as u8;
            let mut px = vec![0u8; IMAGE_BYTES];
            rng.fill_bytes(&mut px);
            file.push(label);
            file.extend_from_slice(&px);
            images.extend_from_slice(&px);
            labels.push(label);
        }
        (file, images, labels)
    }

    #[test]
    fn reads_train_from_subdir_and_test_from_dir() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join(SUBDIR);
        std::fs::create_dir(&sub).unwrap();
        let (mut all_images, mut all_labels) = (vec![], vec![]);
        for (k, f) in TRAIN_FILES.iter().enumerate() {
            let (file, i, l) = fake_batch(2 + k, k as u64);
            std::fs::write(sub.join(f), file).unwrap();
            all_images.extend(i);
            all_labels.extend(l);
        }
        let names = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        std::fs::write(sub.join("batches.meta.txt"), names).unwrap();
        let train = read_cifar10(dir.path(), Split::Train).unwrap();
        assert_eq!((train.n, train.c, train.h, train.w), (20, 3, 32, 32));
        assert_eq!(train.images, all_images);
        assert_eq!(train.labels, all_labels);
        assert_eq!(train.class_names[9], "j");

        let (file, i, l) = fake_batch(3, 77);
        std::fs::write(dir.path().join("test_batch.bin"), file).unwrap();
        let test = read_cifar10(dir.path(), Split::Test).unwrap();
        assert_eq!((test.images, test.labels), (i, l));
        assert_eq!(test.class_names[0], "airplane");
    }

    #[test]
    fn bad_size_and_bad_label_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data_batch_1.bin");
        let (file, _, _) = fake_batch(2, 1);
        std::fs::write(&p, &file[..file.len() - 1]).unwrap();
        let msg = read_cifar_batch(&p).unwrap_err().to_string();
        assert!(msg.contains("data_batch_1.bin") && msg.contains("6145"), "{msg}");
        std::fs::write(&p, b"").unwrap();
        assert!(read_cifar_batch(&p).is_err());

        let mut file = file;
        file[RECORD_BYTES] = 11;
        std::fs::write(&p, &file).unwrap();
        let msg = read_cifar_batch(&p).unwrap_err().to_string();
        assert!(msg.contains("label 11 at index 1"), "{msg}");
    }

    #[test]
    fn missing_files_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _, _) = fake_batch(1, 1);
        std::fs::write(dir.path().join("data_batch_1.bin"), file).unwrap();
        let msg = read_cifar10(dir.path(), Split::Train).unwrap_err().to_string();
        assert!(msg.contains("data_batch_5.bin"), "{msg}");
        assert!(!msg.contains("data_batch_1.bin"), "{msg}");
        assert!(msg.contains(&*dir.path().to_string_lossy()), "{msg}");
    }
}
