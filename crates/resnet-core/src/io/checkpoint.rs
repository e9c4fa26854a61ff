//! safetensors checkpoints: an 8-byte little-endian header length, a JSON header (tensor name ->
//! dtype, shape, byte range; optional string map `__metadata__`), then the raw little-endian data.
//!
//! Both directions go through the `safetensors` crate: it lays out and aligns the file on save and
//! validates offsets against shapes on load. The file's order is the crate's (by alignment, then
//! name); callers look tensors up by name. The metadata is written in key order, so the same
//! tensors and metadata always give the same bytes.
//!
//! Every save stores a CRC-32 of each tensor's data bytes in the metadata key [`CHECKSUMS_KEY`]
//! (JSON: tensor name -> 8 lowercase hex digits), and one of the rest of the metadata under
//! `__metadata__` (a name no tensor can have); `load` verifies them and names the tensor whose
//! data changed. Files without that key (older checkpoints, files written by PyTorch) load as
//! before.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::error::{Error, Result};

/// The metadata key holding the per-tensor checksums: a JSON object of tensor name -> CRC-32
/// (IEEE, as zlib's) of the tensor's little-endian data bytes, 8 lowercase hex digits; the entry
/// [`METADATA_ENTRY`] holds the CRC-32 of the other metadata entries as compact JSON in key order.
/// Written by every [`save`], checked and removed from the returned metadata by [`load`].
pub const CHECKSUMS_KEY: &str = "checksums.crc32";

/// The entry of [`CHECKSUMS_KEY`] that covers the metadata itself (the spec, the step, ...).
pub const METADATA_ENTRY: &str = "__metadata__";

fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

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
/// file at `path`; the temp files crashed saves left for this `path` are removed on the next save
/// to it once their process is gone (see [`remove_stale_temp_files`]). Creates no parent dirs
/// (error naming the dir if missing). Metadata goes in the safetensors `__metadata__` header
/// (string->string), with the tensors' checksums under [`CHECKSUMS_KEY`] (a caller's value for
/// that key is replaced).
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
    remove_stale_temp_files(&dir, &file_name.to_string_lossy());
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

/// Whether the process that wrote a temp file is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    Alive,
    Dead,
    /// This platform cannot tell.
    Unknown,
}

/// Whether process `pid` exists on this machine. Linux: `/proc/<pid>` (where /proc is mounted);
/// other Unix systems: `kill(pid, 0)` failing with ESRCH (a process of another user, EPERM,
/// counts as alive); elsewhere (Windows) `Unknown`.
pub fn process_state(pid: u32) -> ProcessState {
    if pid == std::process::id() {
        return ProcessState::Alive;
    }
    #[cfg(target_os = "linux")]
    if Path::new("/proc/self").exists() {
        return if Path::new("/proc").join(pid.to_string()).exists() {
            ProcessState::Alive
        } else {
            ProcessState::Dead
        };
    }
    platform_process_state(pid)
}

#[cfg(unix)]
fn platform_process_state(pid: u32) -> ProcessState {
    kill_probe(pid)
}

#[cfg(not(unix))]
fn platform_process_state(_pid: u32) -> ProcessState {
    ProcessState::Unknown
}

/// `kill(pid, 0)`: sends no signal, only checks that the process exists. The C library std links
/// on every Unix provides `kill`; `pid_t` is a 32-bit int and ESRCH is 3 on all of them (Linux,
/// macOS, the BSDs, illumos), so no crate is needed for it.
#[cfg(unix)]
pub fn kill_probe(pid: u32) -> ProcessState {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const ESRCH: i32 = 3;
    // 0 and negative values address process groups, not a process.
    let Ok(p) = i32::try_from(pid) else {
        return ProcessState::Unknown;
    };
    if p <= 0 {
        return ProcessState::Unknown;
    }
    // SAFETY: signal 0 performs only the existence and permission checks; nothing is delivered.
    if unsafe { kill(p, 0) } == 0 {
        return ProcessState::Alive;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(ESRCH) => ProcessState::Dead,
        _ => ProcessState::Alive,
    }
}

/// Temp files of a process this platform cannot check are removed once older than this.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The writer's PID of a temp file `save` makes for `file_name` (`<file_name>.tmp-<pid>-<16 hex
/// digits>`); None for any other name.
fn temp_file_pid(name: &str, file_name: &str) -> Option<u32> {
    let rest = name.strip_prefix(file_name)?.strip_prefix(".tmp-")?;
    let (pid, random) = rest.split_once('-')?;
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if random.len() != 16 || !random.chars().all(hex) || pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temp files an interrupted [`save`] of `dir/file_name` left behind: those whose
/// writing process is gone ([`process_state`] `Dead`), and, where the platform cannot tell,
/// those older than [`STALE_TEMP_AGE`]. A live process's temp file (a save in progress) and every
/// other file are left alone. Best effort: errors are ignored. Returns the paths removed.
pub fn remove_stale_temp_files(dir: &Path, file_name: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| temp_file_pid(n, file_name)) else {
            continue;
        };
        let stale = match process_state(pid) {
            ProcessState::Alive => false,
            ProcessState::Dead => true,
            ProcessState::Unknown => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP_AGE),
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if stale && is_file && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
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
    let mut checksums = BTreeMap::new();
    for (t, (dtype, bytes)) in tensors.iter().zip(&raw) {
        let view = TensorView::new(*dtype, t.shape.clone(), bytes)
            .map_err(|e| Error::checkpoint(path, format!("cannot save tensor `{}`: {e}", t.name)))?;
        views.push((t.name.as_str(), view));
        checksums.insert(t.name.as_str(), crc_hex(bytes));
    }
    let mut metadata = metadata.clone();
    metadata.remove(CHECKSUMS_KEY);
    let metadata_sum = crc_hex(to_json(&metadata).as_bytes());
    checksums.insert(METADATA_ENTRY, metadata_sum);
    metadata.insert(CHECKSUMS_KEY.to_string(), to_json(&checksums));
    // The crate writes `__metadata__` from a HashMap, in an order that changes from run to run;
    // it lays out the tensors, and the metadata is spliced in here in key order instead.
    let file = safetensors::serialize(views, None).map_err(|e| Error::checkpoint(path, format!("cannot save: {e}")))?;
    let n = u64::from_le_bytes(*file.first_chunk::<8>().expect("the crate writes the length")) as usize;
    let header = std::str::from_utf8(&file[8..8 + n])
        .expect("the crate writes JSON")
        .trim_end();
    let rest = header.strip_prefix('{').expect("the header is a JSON object");
    let mut spliced = format!("{{\"__metadata__\":{}", to_json(&metadata));
    if rest != "}" {
        spliced.push(',');
    }
    spliced.push_str(rest);
    // The data starts 8-aligned, as the crate (and PyTorch) keep it.
    while spliced.len() % 8 != 0 {
        spliced.push(' ');
    }
    let mut out = Vec::with_capacity(8 + spliced.len() + file.len() - 8 - n);
    out.extend_from_slice(&(spliced.len() as u64).to_le_bytes());
    out.extend_from_slice(spliced.as_bytes());
    out.extend_from_slice(&file[8 + n..]);
    Ok(out)
}

/// Whether a metadata entry is [`save`]'s checksum map under a damaged key: its value parses as
/// one (with the [`METADATA_ENTRY`]), or its key is [`CHECKSUMS_KEY`] with one or two bytes
/// changed and its value is a JSON object.
fn looks_like_checksums(key: &str, value: &str) -> bool {
    let near_key =
        key.len() == CHECKSUMS_KEY.len() && key.bytes().zip(CHECKSUMS_KEY.bytes()).filter(|(a, b)| a != b).count() <= 2;
    value.starts_with('{')
        && (near_key
            || value.contains(METADATA_ENTRY)
                && serde_json::from_str::<BTreeMap<String, String>>(value)
                    .is_ok_and(|m| m.contains_key(METADATA_ENTRY)))
}

fn to_json<K: serde::Serialize + Ord, V: serde::Serialize>(map: &BTreeMap<K, V>) -> String {
    serde_json::to_string(map).expect("a map of strings serialises")
}

/// Reads a safetensors file fully. Every problem is an `Error::Checkpoint` naming the file.
/// Returns tensors in file (offset) order plus the metadata (empty if none; without
/// [`CHECKSUMS_KEY`], which is verified here: a tensor whose data does not match its checksum is
/// an error naming it). Accepts F32, F16 and BF16 (widened to f32), I64 and I32 (widened to i64).
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
    let mut metadata: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut checksums = match metadata.remove(CHECKSUMS_KEY) {
        // A file of ours whose checksums key was damaged must not read as an unchecked file.
        None => match metadata.iter().find(|(k, v)| looks_like_checksums(k, v)) {
            Some((key, _)) => {
                return Err(fail(format!(
                    "the metadata key {key:?} holds checksums but is not `{CHECKSUMS_KEY}`: the header is corrupted"
                )))
            }
            None => None,
        },
        Some(json) => Some(serde_json::from_str::<BTreeMap<String, String>>(&json).map_err(|e| {
            fail(format!(
                "the `{CHECKSUMS_KEY}` metadata is not a JSON object of tensor name -> checksum \
                 (corrupted header?): {e}"
            ))
        })?),
    };
    if let Some(stored) = checksums.as_mut().and_then(|sums| sums.remove(METADATA_ENTRY)) {
        let actual = crc_hex(to_json(&metadata).as_bytes());
        if stored != actual {
            let stored: String = stored.chars().take(16).collect();
            return Err(fail(format!(
                "the metadata (spec, step, optimizer, ...) does not match its checksum (CRC-32 stored \
                 {stored:?}, computed {actual:?}): the file is corrupted"
            )));
        }
    }

    let mut tensors = Vec::new();
    for name in meta.offset_keys() {
        let info = meta
            .info(&name)
            .ok_or_else(|| fail(format!("tensor `{name}` listed but has no header entry")))?;
        let (start, end) = info.data_offsets;
        let bytes = data
            .get(start..end)
            .ok_or_else(|| fail(format!("tensor `{name}`: data offsets {start}..{end} out of bounds")))?;
        if let Some(sums) = checksums.as_mut() {
            let stored = sums.remove(&name).ok_or_else(|| {
                fail(format!(
                    "tensor `{name}` has no checksum although the file lists checksums (corrupted header?)"
                ))
            })?;
            let actual = crc_hex(bytes);
            if stored != actual {
                let stored: String = stored.chars().take(16).collect();
                return Err(fail(format!(
                    "tensor `{name}`: its data does not match its checksum (CRC-32 stored {stored:?}, \
                     computed {actual:?}): the file is corrupted"
                )));
            }
        }
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
    if let Some(extra) = checksums.and_then(|sums| sums.into_keys().next()) {
        return Err(fail(format!(
            "a checksum is listed for tensor `{extra}`, which the file does not hold (corrupted header?)"
        )));
    }
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

    /// The data byte range of every tensor of a file, from its header.
    fn data_ranges(bytes: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
        let (n, m) = SafeTensors::read_metadata(bytes).unwrap();
        m.offset_keys()
            .into_iter()
            .map(|name| {
                let (a, b) = m.info(&name).unwrap().data_offsets;
                (name, 8 + n + a..8 + n + b)
            })
            .collect()
    }

    fn header_metadata(bytes: &[u8]) -> std::collections::HashMap<String, String> {
        SafeTensors::read_metadata(bytes).unwrap().1.metadata().clone().unwrap()
    }

    #[test]
    fn every_save_stores_a_checksum_per_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes) = saved(dir.path());
        let meta = header_metadata(&bytes);
        let sums: BTreeMap<String, String> = serde_json::from_str(&meta[CHECKSUMS_KEY]).unwrap();
        let mut names: Vec<_> = sample_tensors(1).into_iter().map(|t| t.name).collect();
        names.push(METADATA_ENTRY.into());
        names.sort();
        assert_eq!(sums.keys().cloned().collect::<Vec<_>>(), names);
        for (name, range) in data_ranges(&bytes) {
            assert_eq!(sums[&name], format!("{:08x}", crc32fast::hash(&bytes[range])), "{name}");
        }
        assert_eq!(sums[METADATA_ENTRY], crc_hex(to_json(&super::tests::meta()).as_bytes()));
        // zlib's CRC-32 (the check value of the standard).
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        // A caller's value under the key is replaced, and load hands the key back to nobody.
        let p = dir.path().join("mine.safetensors");
        let mut m = meta_with(&[(CHECKSUMS_KEY, "{}")]);
        m.insert("epoch".into(), "3".into());
        save(&p, &sample_tensors(3), &m).unwrap();
        let (_, back) = load(&p).unwrap();
        assert_eq!(back, meta_with(&[("epoch", "3")]));
    }

    fn meta_with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_flipped_data_byte_is_an_error_naming_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.safetensors");
        let mut rng = ChaCha8Rng::seed_from_u64(77);
        for round in 0..40 {
            save(&p, &sample_tensors(round), &meta()).unwrap();
            let valid = std::fs::read(&p).unwrap();
            let ranges: Vec<_> = data_ranges(&valid).into_iter().filter(|(_, r)| !r.is_empty()).collect();
            let (name, range) = &ranges[rng.random_range(0..ranges.len())];
            let mut bytes = valid.clone();
            let at = rng.random_range(range.clone());
            bytes[at] ^= 1 << rng.random_range(0..8);
            let msg = expect_checkpoint_err(&p, &bytes);
            assert!(
                msg.contains(&format!("tensor `{name}`")) && msg.contains("checksum"),
                "{msg}"
            );
            for (other, _) in &ranges {
                assert!(other == name || !msg.contains(&format!("`{other}`")), "{msg}");
            }
            // Two flips in one byte undo each other: the file reads again.
            bytes[at] = valid[at];
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(load(&p).unwrap().1, meta());
        }
    }

    /// `bytes` with its metadata replaced (None: no `__metadata__` at all).
    fn with_metadata(bytes: &[u8], metadata: Option<std::collections::HashMap<String, String>>) -> Vec<u8> {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let views: Vec<_> = st.tensors();
        safetensors::serialize(views, metadata).unwrap()
    }

    #[test]
    fn files_without_checksums_still_load_and_bad_checksum_headers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes) = saved(dir.path());
        let (mut want, _) = load(&dir.path().join("model.safetensors")).unwrap();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        let p = dir.path().join("plain.safetensors");
        let sorted = |mut v: Vec<NamedTensor>| {
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        // As PyTorch's `save_file` writes it: no metadata, or metadata without checksums.
        std::fs::write(&p, with_metadata(&bytes, None)).unwrap();
        assert_eq!(sorted(load(&p).unwrap().0), want);
        let mut meta = header_metadata(&bytes);
        meta.remove(CHECKSUMS_KEY);
        std::fs::write(&p, with_metadata(&bytes, Some(meta.clone()))).unwrap();
        let (t, m) = load(&p).unwrap();
        assert_eq!((sorted(t), m), (want.clone(), super::tests::meta()));
        // Without checksums a flipped byte goes unnoticed (what they are for).
        let mut flipped = std::fs::read(&p).unwrap();
        let (_, r) = data_ranges(&flipped).into_iter().find(|(n, _)| n == "fc.bias").unwrap();
        flipped[r.start] ^= 0x40;
        std::fs::write(&p, &flipped).unwrap();
        assert_ne!(sorted(load(&p).unwrap().0), want);

        // The committed PyTorch fixtures carry no checksums and load.
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        for f in ["resnet20_init.safetensors", "imagenet_logits.safetensors"] {
            let (t, m) = load(&fixtures.join(f)).unwrap();
            assert!(!t.is_empty() && !m.contains_key(CHECKSUMS_KEY), "{f}");
        }

        // A checksum map that is not JSON, lacks a tensor, or names one the file lacks.
        let bad = |value: &str| {
            let mut m = header_metadata(&bytes);
            m.insert(CHECKSUMS_KEY.into(), value.into());
            expect_checkpoint_err(&p, &with_metadata(&bytes, Some(m)))
        };
        let msg = bad("{\"fc.bias\":");
        assert!(msg.contains(CHECKSUMS_KEY) && msg.contains("JSON"), "{msg}");
        let mut sums: BTreeMap<String, String> = serde_json::from_str(&header_metadata(&bytes)[CHECKSUMS_KEY]).unwrap();
        sums.remove("bn1.running_var");
        let msg = bad(&serde_json::to_string(&sums).unwrap());
        assert!(msg.contains("`bn1.running_var` has no checksum"), "{msg}");
        sums.insert("bn1.running_var".into(), "00000000".into());
        let msg = bad(&serde_json::to_string(&sums).unwrap());
        assert!(
            msg.contains("`bn1.running_var`") && msg.contains("does not match its checksum"),
            "{msg}"
        );
        sums.remove("bn1.running_var");
        sums.insert("ghost".into(), "00000000".into());
        sums.insert("bn1.running_var".into(), String::new());
        let msg = bad(&serde_json::to_string(&sums).unwrap());
        assert!(msg.contains("`bn1.running_var`"), "{msg}");
        let mut sums: BTreeMap<String, String> = serde_json::from_str(&header_metadata(&bytes)[CHECKSUMS_KEY]).unwrap();
        sums.insert("ghost".into(), "00000000".into());
        let msg = bad(&serde_json::to_string(&sums).unwrap());
        assert!(msg.contains("`ghost`") && msg.contains("does not hold"), "{msg}");
    }

    #[test]
    fn a_changed_metadata_value_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (p, bytes) = saved(dir.path());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let keys: Vec<String> = meta().into_keys().collect();
        for _ in 0..10 {
            let mut m = header_metadata(&bytes);
            let key = &keys[rng.random_range(0..keys.len())];
            let value = m.get_mut(key).unwrap();
            value.push(char::from(b'a' + rng.random_range(0..26u8)));
            let msg = expect_checkpoint_err(&p, &with_metadata(&bytes, Some(m)));
            assert!(msg.contains("metadata") && msg.contains("checksum"), "{msg}");
        }
        // The same entries in another order (a file rewritten by another tool) still check.
        std::fs::write(&p, with_metadata(&bytes, Some(header_metadata(&bytes)))).unwrap();
        assert_eq!(load(&p).unwrap().1, meta());
        // A damaged checksums key is not mistaken for a file without checksums.
        for (key, damage_value) in [
            ("checksums.crc33", false),
            ("a long way from it", false),
            ("Chedksums.crc32", true),
        ] {
            let mut m = header_metadata(&bytes);
            let mut sums = m.remove(CHECKSUMS_KEY).unwrap();
            if damage_value {
                sums = sums.replace("__metadata__", "__metadada__");
            }
            m.insert(key.into(), sums);
            let msg = expect_checkpoint_err(&p, &with_metadata(&bytes, Some(m)));
            assert!(msg.contains(&format!("{key:?} holds checksums")), "{msg}");
        }
        // A user's own key of that length with another kind of value is no false alarm.
        let mut m = header_metadata(&bytes);
        m.remove(CHECKSUMS_KEY);
        m.insert("checksums.crc64".into(), "0123456789abcdef".into());
        std::fs::write(&p, with_metadata(&bytes, Some(m))).unwrap();
        assert_eq!(load(&p).unwrap().1["checksums.crc64"], "0123456789abcdef");
        // A file saved before the metadata had a checksum of its own loads.
        let mut m = header_metadata(&bytes);
        let mut sums: BTreeMap<String, String> = serde_json::from_str(&m[CHECKSUMS_KEY]).unwrap();
        sums.remove(METADATA_ENTRY);
        m.insert(CHECKSUMS_KEY.into(), to_json(&sums));
        m.insert("epoch".into(), "18".into());
        std::fs::write(&p, with_metadata(&bytes, Some(m))).unwrap();
        assert_eq!(load(&p).unwrap().1["epoch"], "18");
    }

    #[test]
    fn the_same_tensors_and_metadata_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let meta: BTreeMap<String, String> = (0..12).map(|i| (format!("key{i}"), format!("value {i}"))).collect();
        let p = dir.path().join("a.safetensors");
        save(&p, &sample_tensors(5), &meta).unwrap();
        let first = std::fs::read(&p).unwrap();
        for _ in 0..4 {
            save(&p, &sample_tensors(5), &meta).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), first);
        }
        // The metadata sits in key order, before the tensors; the data starts 8-aligned.
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
        assert!(
            header.starts_with("{\"__metadata__\":{\"checksums.crc32\":"),
            "{header}"
        );
        let mut names: Vec<String> = meta.keys().cloned().collect();
        names.sort();
        let at: Vec<usize> = names
            .iter()
            .map(|k| header.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{header}");
    }

    #[test]
    fn temp_file_names() {
        let f = "model.safetensors";
        assert_eq!(
            temp_file_pid("model.safetensors.tmp-123-00ff00ff00ff00ff", f),
            Some(123)
        );
        for other in [
            "model.safetensors",
            "model.safetensors.tmp-123-00ff00ff00ff00f",
            "model.safetensors.tmp-123-00FF00FF00FF00FF",
            "model.safetensors.tmp--00ff00ff00ff00ff",
            "model.safetensors.tmp-12a-00ff00ff00ff00ff",
            "model.safetensors.tmp-123-00ff00ff00ff00ff.bak",
            "other.safetensors.tmp-123-00ff00ff00ff00ff",
            "xmodel.safetensors.tmp-123-00ff00ff00ff00ff",
            "model.safetensors.tmp-99999999999-00ff00ff00ff00ff",
        ] {
            assert_eq!(temp_file_pid(other, f), None, "{other}");
        }
    }

    /// The PID of a process that has exited (and been reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[cfg(unix)]
    #[test]
    fn process_states() {
        assert_eq!(process_state(std::process::id()), ProcessState::Alive);
        let dead = dead_pid();
        assert_eq!(process_state(dead), ProcessState::Dead);
        // The macOS/BSD path, checked here too: init (maybe another user's process) is alive.
        assert_eq!(kill_probe(std::process::id()), ProcessState::Alive);
        assert_eq!(kill_probe(1), ProcessState::Alive);
        assert_eq!(kill_probe(dead), ProcessState::Dead);
        assert_eq!(kill_probe(0), ProcessState::Unknown);
        assert_eq!(kill_probe(u32::MAX), ProcessState::Unknown);
    }

    #[cfg(unix)]
    #[test]
    fn a_save_removes_the_temp_files_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = saved(dir.path());
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut tmp = |target: &str, pid: u32| {
            let name = format!("{target}.tmp-{pid}-{:016x}", rng.next_u64());
            std::fs::write(dir.path().join(&name), b"half a checkpoint").unwrap();
            name
        };
        let dead = dead_pid();
        let stale = [tmp("model.safetensors", dead), tmp("model.safetensors", dead)];
        let live = tmp("model.safetensors", std::process::id());
        let live_other = tmp("model.safetensors", 1);
        let other_target = tmp("other.safetensors", dead);
        for keep in ["model.safetensors.tmp-x", "model.safetensors.bak", "notes.txt"] {
            std::fs::write(dir.path().join(keep), b"mine").unwrap();
        }
        let listing = || {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let before = listing();
        assert_eq!(before.len(), 9);
        save(&p, &sample_tensors(4), &meta()).unwrap();
        let after = listing();
        for s in &stale {
            assert!(!after.contains(s), "{s} should be gone: {after:?}");
        }
        let mut want: Vec<String> = before.into_iter().filter(|n| !stale.contains(n)).collect();
        want.sort();
        assert_eq!(after, want);
        assert!(after.contains(&live) && after.contains(&live_other) && after.contains(&other_target));
        assert_eq!(load(&p).unwrap().0.len(), 5);
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
