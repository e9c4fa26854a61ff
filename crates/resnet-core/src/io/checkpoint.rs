//! safetensors checkpoints: an 8-byte little-endian header length, a JSON header (tensor name ->
//! dtype, shape, byte range; optional string map `__metadata__`), then the raw little-endian data.
//!
//! Both directions go through the `safetensors` crate: it lays out and aligns the file on save and
//! validates offsets against shapes on load. The file's order is the crate's (by alignment, then
//! name); callers look tensors up by name.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl NamedTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedTensor {
            name: name.into(),
            shape,
            data: TensorData::F32(data),
        }
    }

    pub fn i64(name: impl Into<String>, shape: Vec<usize>, data: Vec<i64>) -> Self {
        NamedTensor {
            name: name.into(),
            shape,
            data: TensorData::I64(data),
        }
    }

    /// Product of the shape (1 for a scalar, shape `[]`).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Writes atomically: serialise to `<path>.tmp-<pid>-<random>` in the same directory, fsync the
/// file, rename over `path`, fsync the directory (best effort). A crash never leaves a broken
/// file at `path`. Creates no parent dirs (error naming the dir if missing). Metadata goes in the safetensors `__metadata__` header (string->string).
pub fn save(path: &Path, tensors: &[NamedTensor], metadata: &BTreeMap<String, String>) -> Result<()> {
    let bytes = encode(path, tensors, metadata)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::checkpoint(
            path,
            format!("cannot save: directory {} does not exist", dir.display()),
        ));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::checkpoint(path, "cannot save: path has no file name"))?;
    let tmp = dir.join(format!(
        "{}.tmp-{}-{:016x}",
        file_name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));

    let written = write_file(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the temp file is garbage either way.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::checkpoint(path, format!("cannot save: {e}")));
    }
    // Makes the rename itself durable; not all platforms/filesystems allow syncing a directory.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_file(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Checks names and lengths (naming the offending tensor), then lets the `safetensors` crate lay
/// out the file: it orders tensors by alignment so every dtype starts aligned, as PyTorch wants.
fn encode(path: &Path, tensors: &[NamedTensor], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut names = HashSet::with_capacity(tensors.len());
    for t in tensors {
        if t.name.is_empty() || t.name == "__metadata__" || !names.insert(t.name.as_str()) {
            return Err(Error::checkpoint(
                path,
                format!("cannot save: tensor name {:?} is empty, reserved or repeated", t.name),
            ));
        }
        if t.numel() != t.data.len() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "cannot save: tensor `{}` has shape {:?} ({} elements) but {} values",
                    t.name,
                    t.shape,
                    t.numel(),
                    t.data.len()
                ),
            ));
        }
    }
    let raw: Vec<(Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|t| match &t.data {
            TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        })
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for (t, (dtype, bytes)) in tensors.iter().zip(&raw) {
        let view = TensorView::new(*dtype, t.shape.clone(), bytes)
            .map_err(|e| Error::checkpoint(path, format!("cannot save tensor `{}`: {e}", t.name)))?;
        views.push((t.name.as_str(), view));
    }
    let meta = (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    safetensors::serialize(views, meta).map_err(|e| Error::checkpoint(path, format!("cannot save: {e}")))
}

/// Reads a safetensors file fully. Every problem is an `Error::Checkpoint` naming the file.
/// Returns tensors in file (offset) order plus the metadata (empty if none). Accepts F32, F16 and
/// BF16 (widened to f32), I64 and I32 (widened to i64).
pub fn load(path: &Path) -> Result<(Vec<NamedTensor>, BTreeMap<String, String>)> {
    let fail = |msg: String| Error::checkpoint(path, msg);
    let buf = std::fs::read(path).map_err(|e| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            _ => format!("cannot read: {e}"),
        })
    })?;
    // Clearer messages than the crate's for the two commonest corruptions (truncation, or not a
    // safetensors file at all).
    let Some(len_bytes) = buf.first_chunk::<8>() else {
        return Err(fail(format!(
            "truncated or not a safetensors file: {} bytes, less than the 8-byte header length",
            buf.len()
        )));
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    let after = (buf.len() - 8) as u64;
    if header_len > after {
        return Err(fail(format!(
            "truncated or not a safetensors file: the header length field says {header_len} \
             bytes but only {after} bytes follow it"
        )));
    }
    let (n, meta) = SafeTensors::read_metadata(&buf).map_err(|e| {
        fail(match e {
            SafeTensorError::MetadataIncompleteBuffer => format!(
                "file size {} bytes does not match the tensor data the header describes \
                 (truncated, or trailing bytes): {e}",
                buf.len()
            ),
            _ => format!("invalid safetensors file: {e}"),
        })
    })?;
    let data = &buf[8 + n..];

    let mut tensors = Vec::new();
    for name in meta.offset_keys() {
        let info = meta
            .info(&name)
            .ok_or_else(|| fail(format!("tensor `{name}` listed but has no header entry")))?;
        let (start, end) = info.data_offsets;
        let bytes = data
            .get(start..end)
            .ok_or_else(|| fail(format!("tensor `{name}`: data offsets {start}..{end} out of bounds")))?;
        let values = decode(bytes, info.dtype).ok_or_else(|| {
            fail(format!(
                "tensor `{name}` has unsupported dtype {} (supported: F32, F16, BF16, I64, I32)",
                info.dtype
            ))
        })?;
        tensors.push(NamedTensor {
            name,
            shape: info.shape.clone(),
            data: values,
        });
    }
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    Ok((tensors, metadata))
}

/// Little-endian bytes to our two element types; None for dtypes we do not take.
fn decode(bytes: &[u8], dtype: Dtype) -> Option<TensorData> {
    fn each<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    Some(match dtype {
        Dtype::F32 => TensorData::F32(each(bytes, f32::from_le_bytes)),
        Dtype::F16 => TensorData::F32(each(bytes, |b| f16_to_f32(u16::from_le_bytes(b)))),
        Dtype::BF16 => TensorData::F32(each(bytes, |b: [u8; 2]| {
            f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
        })),
        Dtype::I64 => TensorData::I64(each(bytes, i64::from_le_bytes)),
        Dtype::I32 => TensorData::I64(each(bytes, |b| i32::from_le_bytes(b) as i64)),
        _ => return None,
    })
}

/// IEEE half to single; exact (every f16 is representable as f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    match exp {
        0 => {
            // Zero or subnormal: man * 2^-24.
            let v = man as f32 * f32::from_bits(0x3380_0000);
            f32::from_bits(sign | v.to_bits())
        }
        31 => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use safetensors::tensor::TensorView;

    fn sample_tensors(seed: u64) -> Vec<NamedTensor> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut f = |n: usize| (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect();
        vec![
            NamedTensor::f32("layer1.0.conv1.weight", vec![4, 3, 3, 3], f(108)),
            NamedTensor::i64("bn1.num_batches_tracked", vec![], vec![123_456_789_012]),
            NamedTensor::f32("bn1.running_var", vec![3], f(3)),
            NamedTensor::f32("fc.bias", vec![10], f(10)),
            NamedTensor::f32("empty", vec![0, 5], vec![]),
        ]
    }

    fn meta() -> BTreeMap<String, String> {
        [("epoch", "17"), ("arch", "resnet20"), ("quote\"d", "π ✓")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn saved(dir: &Path) -> (PathBuf, Vec<u8>) {
        let p = dir.join("model.safetensors");
        save(&p, &sample_tensors(1), &meta()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        (p, bytes)
    }

    fn expect_checkpoint_err(path: &Path, bytes: &[u8]) -> String {
        std::fs::write(path, bytes).unwrap();
        let err = load(path).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
        msg
    }

    #[test]
    fn round_trip_keeps_values_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = saved(dir.path());
        let (mut tensors, metadata) = load(&p).unwrap();
        let mut want = sample_tensors(1);
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(tensors, want);
        assert_eq!(metadata, meta());

        let empty = dir.path().join("empty.safetensors");
        save(&empty, &[], &BTreeMap::new()).unwrap();
        assert_eq!(load(&empty).unwrap(), (vec![], BTreeMap::new()));
    }

    #[test]
    fn readable_by_the_safetensors_crate() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes) = saved(dir.path());
        assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 5);
        let w = st.tensor("layer1.0.conv1.weight").unwrap();
        assert_eq!(w.dtype(), Dtype::F32);
        assert_eq!(w.shape(), &[4, 3, 3, 3]);
        let TensorData::F32(expected) = &sample_tensors(1)[0].data else {
            unreachable!()
        };
        let got: Vec<f32> = w
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(&got, expected);
        let nbt = st.tensor("bn1.num_batches_tracked").unwrap();
        assert_eq!(nbt.dtype(), Dtype::I64);
        assert_eq!(nbt.data(), 123_456_789_012i64.to_le_bytes());
        let (_, m) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(m.metadata().as_ref().unwrap()["epoch"], "17");
    }

    #[test]
    fn truncated_and_lying_header_length() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes) = saved(dir.path());
        let p = dir.path().join("bad.safetensors");
        let msg = expect_checkpoint_err(&p, &bytes[..bytes.len() / 2]);
        assert!(msg.contains("truncated"), "{msg}");
        let msg = expect_checkpoint_err(&p, &bytes[..bytes.len() - 4]);
        assert!(msg.contains("does not match"), "{msg}");
        expect_checkpoint_err(&p, &bytes[..5]);
        expect_checkpoint_err(&p, &[]);

        let mut lying = bytes.clone();
        lying[..8].copy_from_slice(&(bytes.len() as u64 * 3).to_le_bytes());
        let msg = expect_checkpoint_err(&p, &lying);
        assert!(msg.contains("header length"), "{msg}");
        lying[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        expect_checkpoint_err(&p, &lying);

        let msg = load(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(msg.contains("absent") && msg.contains("not found"), "{msg}");
    }

    /// A file with a hand-written header over `data`.
    fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn lying_offsets_and_bad_json_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let data = [7u8; 16];
        // Offsets beyond the data.
        let msg = expect_checkpoint_err(
            &p,
            &raw_file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,32]}}"#, &data),
        );
        assert!(msg.contains("tensor") || msg.contains("does not match"), "{msg}");
        // Offsets disagreeing with shape x dtype.
        let msg = expect_checkpoint_err(
            &p,
            &raw_file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, &data),
        );
        assert!(msg.contains("invalid"), "{msg}");
        // Overlapping tensors.
        let msg = expect_checkpoint_err(
            &p,
            &raw_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &data[..12],
            ),
        );
        assert!(msg.contains("offset"), "{msg}");
        let msg = expect_checkpoint_err(&p, &raw_file(r#"{"a":{"dtype":"F32""#, &data));
        assert!(msg.contains("JSON"), "{msg}");
    }

    #[test]
    fn unsupported_dtype_names_tensor_and_dtype_and_halves_widen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u8.safetensors");
        let pixels = [1u8, 2, 3, 4];
        let view = TensorView::new(Dtype::U8, vec![4], &pixels).unwrap();
        std::fs::write(&p, safetensors::serialize([("input.pixels", view)], None).unwrap()).unwrap();
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.contains("input.pixels") && msg.contains("U8"), "{msg}");

        let half: Vec<u8> = [0x3c00u16, 0xc000, 0x0001, 0x7c00, 0x3555]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let bf: Vec<u8> = [0x3f80u16, 0xc0a0].iter().flat_map(|h| h.to_le_bytes()).collect();
        let ints: Vec<u8> = [-5i32, 7].iter().flat_map(|h| h.to_le_bytes()).collect();
        let file = safetensors::serialize(
            [
                ("h", TensorView::new(Dtype::F16, vec![5], &half).unwrap()),
                ("b", TensorView::new(Dtype::BF16, vec![2], &bf).unwrap()),
                ("i", TensorView::new(Dtype::I32, vec![2], &ints).unwrap()),
            ],
            None,
        )
        .unwrap();
        std::fs::write(&p, file).unwrap();
        let (t, m) = load(&p).unwrap();
        assert!(m.is_empty());
        let get = |n: &str| t.iter().find(|x| x.name == n).unwrap().data.clone();
        assert_eq!(
            get("h"),
            TensorData::F32(vec![1.0, -2.0, 2f32.powi(-24), f32::INFINITY, 0.333_251_95])
        );
        assert_eq!(get("b"), TensorData::F32(vec![1.0, -5.0]));
        assert_eq!(get("i"), TensorData::I64(vec![-5, 7]));
    }

    #[test]
    fn atomic_save_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = saved(dir.path());
        let newer = sample_tensors(2);
        save(&p, &newer, &BTreeMap::new()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["model.safetensors"]);
        let by_name = |mut v: Vec<NamedTensor>| {
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        assert_eq!(by_name(load(&p).unwrap().0), by_name(newer.clone()));

        // A failed save (bad tensor) leaves the old file intact and no temp file.
        let bad = [NamedTensor::f32("w", vec![2, 2], vec![1.0; 3])];
        let msg = save(&p, &bad, &BTreeMap::new()).unwrap_err().to_string();
        assert!(msg.contains("`w`") && msg.contains("4 elements"), "{msg}");
        let dup = [
            NamedTensor::f32("w", vec![1], vec![1.0]),
            NamedTensor::f32("w", vec![1], vec![2.0]),
        ];
        assert!(save(&p, &dup, &BTreeMap::new()).is_err());
        assert_eq!(by_name(load(&p).unwrap().0), by_name(newer));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn saving_into_missing_dir_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let err = save(&missing.join("m.safetensors"), &sample_tensors(1), &meta()).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }));
        let msg = err.to_string();
        assert!(msg.contains("no-such-dir") && msg.contains("does not exist"), "{msg}");
    }

    #[test]
    fn fuzzed_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (_, valid) = saved(dir.path());
        let p = dir.path().join("fuzz.safetensors");
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        let mut errors = 0;
        for i in 0..500 {
            let mut bytes = valid.clone();
            match rng.next_u32() % 4 {
                0 => bytes.truncate(rng.next_u32() as usize % bytes.len()),
                1 => {
                    // Header region is where structure lives; hit it most.
                    let hlen = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
                    for _ in 0..1 + rng.next_u32() % 3 {
                        let j = rng.next_u32() as usize % hlen;
                        bytes[j] = rng.next_u32() as u8;
                    }
                }
                2 => {
                    // Rewrite a digit in the JSON (shapes / offsets).
                    let digits: Vec<usize> = (8..bytes.len().min(600))
                        .filter(|&j| bytes[j].is_ascii_digit())
                        .collect();
                    let j = digits[rng.next_u32() as usize % digits.len()];
                    bytes[j] = b'0' + (rng.next_u32() % 10) as u8;
                }
                _ => {
                    let j = rng.next_u32() as usize % bytes.len();
                    bytes[j] ^= 1 << (rng.next_u32() % 8);
                }
            }
            std::fs::write(&p, &bytes).unwrap();
            match std::panic::catch_unwind(|| load(&p)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    assert!(matches!(e, Error::Checkpoint { .. }));
                    errors += 1;
                }
                Err(_) => panic!("load panicked on mutation {i}"),
            }
        }
        assert!(errors > 100, "{errors}");
    }
}
