//! Memory: how much the host has left, human-readable sizes, and host allocation that fails with
//! an [`Error::OutOfMemory`] instead of aborting the process (what Rust does on a failed
//! allocation: "memory allocation of N bytes failed", SIGABRT).
//!
//! Two lines of defence. Before a model is built or a batch runs, [`crate::model::Model`] compares
//! an estimate from the spec ([`crate::nn::Footprint`]) with what the device has ([`host_available`]
//! on the CPU; [`crate::backend::available_memory`]) and refuses what clearly cannot fit. Under the
//! estimate, the large allocations (tensor storage, convolution scratch, host copies of batches and
//! downloads, parameter initialisation) go through [`try_vec`] / [`try_copy`] and
//! `CpuBuffer::try_*`: a failure releases the CPU buffer pool's cached buffers, tries once more,
//! and then returns an error naming the bytes asked for. Small bookkeeping allocations stay
//! infallible; once the large ones are fallible they are not the ones that hit the wall.

use crate::backend::{self, Device};
use crate::error::{Error, Result};
use crate::nn::{Activations, Footprint, ResNetSpec};

/// Set to `0` or `off` to skip the estimates (allocation failures are still errors): for
/// diagnosing a refusal that looks wrong, and for the tests of the fallible allocations.
pub const MEMORY_CHECK_ENV: &str = "RESNET_WGPU_MEMORY_CHECK";

/// Whether the estimates are checked before building a model or running a batch.
pub fn checks_enabled() -> bool {
    !matches!(
        std::env::var(MEMORY_CHECK_ENV).as_deref().map(str::trim),
        Ok("0") | Ok("off") | Ok("false") | Ok("no")
    )
}

/// "23.1 GiB", "512.0 MiB", "36.0 KiB", "100 bytes" (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// "16.1 G", "853.0 k", "272": a count in SI units (parameters).
pub fn human_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=9_999_999 => format!("{:.1} k", n as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.1} G", n as f64 / 1e9),
    }
}

/// Free memory for this process on a device, and what limits it, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    /// Says where the figure comes from: "the machine has 21.4 GiB available", "the
    /// address-space limit (ulimit -v) of 2.0 GiB leaves 1.1 GiB", "the GPU (NVIDIA H100) has
    /// 80.0 GiB of device memory, 3.0 GiB of it in use by this process".
    pub description: String,
}

impl Available {
    pub fn new(bytes: u64, description: impl Into<String>) -> Self {
        Available {
            bytes,
            description: description.into(),
        }
    }

    /// The smaller of two figures (None counts as no limit).
    pub fn min(a: Option<Available>, b: Option<Available>) -> Option<Available> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.bytes < a.bytes { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The same limit with `extra` reclaimable bytes (cached pool buffers) counted as free.
    pub fn plus(mut self, extra: u64) -> Self {
        self.bytes = self.bytes.saturating_add(extra);
        self
    }
}

/// Memory this process can still take on the host: the least of the machine's available memory
/// (`MemAvailable`), what a cgroup memory limit leaves (v2 `memory.max`, v1
/// `memory.limit_in_bytes`, less the usage without inactive page cache, over the cgroup and its
/// ancestors) and what an address-space limit (`ulimit -v`, RLIMIT_AS) leaves over the process's
/// current virtual size. Read from /proc and /sys on every call (a few small files); Linux only,
/// None elsewhere or where nothing can be read.
pub fn host_available() -> Option<Available> {
    #[cfg(target_os = "linux")]
    {
        let machine =
            meminfo_available().map(|b| Available::new(b, format!("the machine has {} available", human_bytes(b))));
        Available::min(Available::min(machine, cgroup_available()), address_space_available())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(target_os = "linux")]
fn read(path: impl AsRef<std::path::Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A `Key:   123 kB` line of /proc/meminfo or /proc/self/status, in bytes.
#[cfg(target_os = "linux")]
fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    let kb: u64 = line[key.len() + 1..].split_whitespace().next()?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

#[cfg(target_os = "linux")]
fn meminfo_available() -> Option<u64> {
    kb_field(&read("/proc/meminfo")?, "MemAvailable")
}

/// RLIMIT_AS from /proc/self/limits ("Max address space  <soft>  <hard>  bytes") less VmSize.
#[cfg(target_os = "linux")]
fn address_space_available() -> Option<Available> {
    let limits = read("/proc/self/limits")?;
    let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
    let soft: u64 = line["Max address space".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?; // "unlimited" -> None
    let size = kb_field(&read("/proc/self/status")?, "VmSize")?;
    let left = soft.saturating_sub(size);
    Some(Available::new(
        left,
        format!(
            "the address-space limit (ulimit -v) of {} leaves {}",
            human_bytes(soft),
            human_bytes(left)
        ),
    ))
}

/// The tightest cgroup memory limit over this process's cgroup and its ancestors (v2 or v1).
#[cfg(target_os = "linux")]
fn cgroup_available() -> Option<Available> {
    let cgroups = read("/proc/self/cgroup")?;
    let mut best: Option<Available> = None;
    for line in cgroups.lines() {
        // "0::/path" (v2) or "4:memory:/path" (v1).
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (root, limit_file, usage_file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let mut dir = std::path::PathBuf::from(root);
        dir.extend(path.trim_start_matches('/').split('/').filter(|s| !s.is_empty()));
        // From the process's own cgroup up to the root of the hierarchy (inside a container the
        // path may not exist below the mount: then only the mount's own files count).
        loop {
            if let Some(a) = cgroup_dir_available(&dir, limit_file, usage_file) {
                best = Available::min(best, Some(a));
            }
            if dir.as_os_str().len() <= root.len() || !dir.pop() {
                break;
            }
        }
    }
    best
}

#[cfg(target_os = "linux")]
fn cgroup_dir_available(dir: &std::path::Path, limit_file: &str, usage_file: &str) -> Option<Available> {
    let limit: u64 = read(dir.join(limit_file))?.trim().parse().ok()?; // "max" -> None
    if limit >= 1 << 60 {
        return None; // v1's "no limit" is a huge number
    }
    let usage: u64 = read(dir.join(usage_file))?.trim().parse().ok()?;
    // Page cache that is not in active use is reclaimed before the limit bites.
    let inactive_file = read(dir.join("memory.stat"))
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("total_inactive_file ")
                        .or_else(|| l.strip_prefix("inactive_file "))
                })
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let left = limit.saturating_sub(usage.saturating_sub(inactive_file));
    Some(Available::new(
        left,
        format!(
            "the cgroup memory limit of {} leaves {}",
            human_bytes(limit),
            human_bytes(left)
        ),
    ))
}

/// The error for a failed host allocation of `bytes` for `what` (names what is left, if known).
pub fn host_oom(bytes: u64, what: &str) -> Error {
    let left = match host_available() {
        Some(a) => format!(" ({})", a.description),
        None => String::new(),
    };
    Error::OutOfMemory {
        bytes,
        message: format!(
            "out of memory: allocating {} ({bytes} bytes) on the host for {what} failed{left}",
            human_bytes(bytes)
        ),
    }
}

/// Reserves room for `additional` more elements in `v`; on failure releases the CPU buffer pool's
/// cached buffers and tries once more before returning [`host_oom`].
pub fn try_reserve<T>(v: &mut Vec<T>, additional: usize, what: &str) -> Result<()> {
    if v.try_reserve_exact(additional).is_ok() {
        return Ok(());
    }
    crate::backend::cpu::release_cached();
    v.try_reserve_exact(additional).map_err(|_| {
        let bytes = (additional as u128 * std::mem::size_of::<T>() as u128).min(u64::MAX as u128) as u64;
        host_oom(bytes, what)
    })
}

/// `len` copies of `value`, or an error naming the bytes.
pub fn try_vec<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(&mut v, len, what)?;
    v.resize(len, value);
    Ok(v)
}

/// A copy of `src`, or an error naming the bytes.
pub fn try_copy<T: Clone>(src: &[T], what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(&mut v, src.len(), what)?;
    v.extend_from_slice(src);
    Ok(v)
}

/// The items of an exact-size iterator collected into a Vec reserved up front (fallibly).
pub fn try_collect<T>(iter: impl ExactSizeIterator<Item = T>, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    try_reserve(&mut v, iter.len(), what)?;
    v.extend(iter);
    Ok(v)
}

/// Bytes per value.
const F32: u64 = 4;

/// Room kept free beside a model's parameters when deciding whether it fits (the batches need
/// some too; the per-batch check sizes those).
const MODEL_MARGIN: u64 = 64 << 20;

/// Refuses, before anything is allocated, a network whose parameters, gradients and momentum
/// (plus the running statistics and [`MODEL_MARGIN`]) need more than `device` has, or (GPU) whose
/// largest weight is larger than one buffer may be. The error names both figures: "ResNet-999998
/// needs about 181.4 GiB for parameters, gradients and momentum (16.2 G parameters); the machine
/// has 22.2 GiB available". Sizes come from the spec alone ([`Footprint`]): well under a
/// millisecond for any depth.
pub fn check_model_fits(spec: &ResNetSpec, device: Device) -> Result<()> {
    if !checks_enabled() {
        return Ok(());
    }
    let f = Footprint::of(spec);
    if let Some((limit, name)) = backend::max_tensor_bytes(device) {
        let largest = f.largest_parameter.saturating_mul(F32);
        if largest > limit {
            return Err(Error::OutOfMemory {
                bytes: largest,
                message: format!(
                    "{}: its largest weight needs {} ({largest} bytes), more than this GPU can hold in one buffer: {} \
                     ({limit} bytes, the adapter's {name})",
                    spec.name(),
                    human_bytes(largest),
                    human_bytes(limit)
                ),
            });
        }
    }
    let need = f.training_state_bytes().saturating_add(MODEL_MARGIN);
    match backend::available_memory(device) {
        Some(a) if need > a.bytes => Err(Error::OutOfMemory {
            bytes: need,
            message: format!(
                "{} needs about {} for parameters, gradients and momentum ({} parameters); {}",
                spec.name(),
                human_bytes(need),
                human_count(f.parameters),
                a.description
            ),
        }),
        _ => Ok(()),
    }
}

/// What a batch is for, as far as memory goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Forward, backward (and the update): the tape holds every activation. `state_bytes` is the
    /// memory the step adds beside activations: gradients, and momentum buffers not made yet.
    Training { state_bytes: u64 },
    /// A forward pass without a tape (predict, evaluate, layer responses).
    Eval,
}

/// Refuses, before the forward pass, a batch of `shape` (NCHW) whose activations cannot fit on
/// `device`: on the GPU one activation tensor larger than a buffer may be, and anywhere an
/// estimated peak ([`Activations`], plus `Pass::Training`'s state, plus the CPU's convolution
/// scratch) above what the device has. The error names both figures and how many images would
/// fit.
pub fn check_batch_fits(spec: &ResNetSpec, device: Device, shape: [usize; 4], pass: Pass) -> Result<()> {
    if !checks_enabled() {
        return Ok(());
    }
    let [n, c, h, w] = shape;
    let a = Activations::of(spec, h, w);
    let batch = n as u64;
    let what = match pass {
        Pass::Training { .. } => "a training step",
        Pass::Eval => "a forward pass",
    };
    let shape_text = format!("[{n}, {c}, {h}, {w}]");
    if let Some((limit, name)) = backend::max_tensor_bytes(device) {
        let per_image = a.largest.max((c * h * w) as u64).saturating_mul(F32);
        let largest = per_image.saturating_mul(batch);
        if largest > limit {
            return Err(Error::OutOfMemory {
                bytes: largest,
                message: format!(
                    "{what} on a batch of {shape_text} makes a tensor of {} ({largest} bytes), more than this GPU can \
                     hold in one buffer: {} ({limit} bytes, the adapter's {name}); at most about {} images of this \
                     size fit in a batch",
                    human_bytes(largest),
                    human_bytes(limit),
                    limit / per_image.max(1)
                ),
            });
        }
    }
    let per_image = match pass {
        Pass::Training { .. } => a.training,
        Pass::Eval => a.eval,
    }
    .saturating_mul(F32);
    let fixed = match pass {
        Pass::Training { state_bytes } => state_bytes,
        Pass::Eval => 0,
    }
    .saturating_add(match device {
        // Per-thread im2col scratch (forward: patches and a wide output; backward alike).
        Device::Cpu => (rayon::current_num_threads().min(n.max(1)) as u64)
            .saturating_mul(a.largest_patches.saturating_mul(2))
            .saturating_mul(F32),
        #[allow(unreachable_patterns)]
        _ => 0,
    });
    let need = per_image.saturating_mul(batch).saturating_add(fixed);
    let Some(avail) = backend::available_memory(device) else {
        return Ok(());
    };
    if need > avail.bytes {
        let fit = avail.bytes.saturating_sub(fixed) / per_image.max(1);
        let state = match pass {
            Pass::Training { state_bytes } if state_bytes > 0 => {
                format!(" and {} of gradients and momentum", human_bytes(state_bytes))
            }
            _ => String::new(),
        };
        return Err(Error::OutOfMemory {
            bytes: need,
            message: format!(
                "{what} of {} on a batch of {shape_text} needs about {} ({} of activations an image{state}); {}: \
                 use a smaller batch ({})",
                spec.name(),
                human_bytes(need),
                human_bytes(per_image),
                avail.description,
                match fit {
                    0 => "not even one image of this size fits".to_string(),
                    1 => "about 1 image fits".to_string(),
                    k => format!("about {k} images fit"),
                }
            ),
        });
    }
    // Tight but possible on the CPU: hand the pool's cached buffers back first, so the step's own
    // allocations can have that memory.
    if device == Device::Cpu && need > avail.bytes.saturating_sub(backend::cpu::cached_bytes()) {
        backend::cpu::release_cached();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(100), "100 bytes");
        assert_eq!(human_bytes(36864), "36.0 KiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_count(272_474), "272.5 k");
        assert_eq!(human_count(16_117_000_000), "16.1 G");
    }

    #[test]
    fn an_impossible_allocation_is_an_error_not_an_abort() {
        let e = try_vec(usize::MAX / 8, 0.0f32, "a test tensor").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::OutOfMemory { .. }), "{msg}");
        assert!(msg.contains("bytes") && msg.contains("a test tensor"), "{msg}");
        // 2^60 bytes: the size is valid but no machine has it.
        let e = try_vec(1usize << 58, 0u32, "a huge tensor").unwrap_err();
        assert!(e.to_string().contains("1152921504606846976 bytes"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_host_reports_some_memory() {
        let a = host_available().expect("Linux has /proc/meminfo");
        assert!(a.bytes > 0 && !a.description.is_empty(), "{a:?}");
    }
}
