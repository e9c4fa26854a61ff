//! Device storage and the buffer pool under it. Sizes are rounded up to a size class (eight
//! classes an octave, so at most 12.5% is wasted); a dropped storage returns its buffer to its
//! class's free list, and the next request of that class (or of a class up to a quarter smaller)
//! takes it back. A training step allocates
//! the same sizes in the same order every time, so after the first steps nothing new is created:
//! memory reaches a steady state.

use super::context::{context, existing_context, GpuContext};
use crate::error::{Error, Result};
use crate::memory::human_bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Smallest buffer handed out, in bytes.
const MIN_BYTES: u64 = 256;

/// The size class of a request: `bytes` rounded up to the next of eight steps an octave.
pub fn class_size(bytes: u64) -> u64 {
    if bytes <= MIN_BYTES {
        return MIN_BYTES;
    }
    let octave = 63 - (bytes - 1).leading_zeros() as u64; // 2^octave < bytes <= 2^(octave+1)
    let step = (1u64 << octave) / 8;
    bytes.div_ceil(step) * step
}

#[derive(Default)]
pub struct Pool {
    free: BTreeMap<u64, Vec<wgpu::Buffer>>,
    /// Bytes held by live storages (size classes, as allocated).
    pub in_use: u64,
    pub peak_in_use: u64,
    /// Bytes of every buffer the pool owns, live or cached: the GPU memory this process holds.
    pub reserved: u64,
    pub peak_reserved: u64,
    /// Test hook: fill each freshly handed-out output with NaN before its kernel runs.
    #[cfg(feature = "test-hooks")]
    pub poison: bool,
}

impl Pool {
    /// A cached buffer for a request of `class`, and its own class: one of that class, or else
    /// the smallest cached one at most a quarter larger (two classes up). A buffer reused is one
    /// the driver need not give: ResNet-50's training step at batch 4 on lavapipe held 789.5 MiB
    /// at its peak instead of 807.5 with exact classes, for 636.0 MiB in use instead of 634.0.
    /// Reaching further saves little more and costs in use (half again: 772.2 held, 661.4 in use;
    /// any size: 944.0 held, as large buffers go to small requests).
    fn take(&mut self, class: u64) -> Option<(wgpu::Buffer, u64)> {
        let larger = class + class / 4;
        let (&got, list) = self.free.range_mut(class..=larger).find(|(_, l)| !l.is_empty())?;
        let b = list.pop()?;
        self.in_use += got;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
        Some((b, got))
    }

    fn created(&mut self, class: u64) {
        self.reserved += class;
        self.peak_reserved = self.peak_reserved.max(self.reserved);
        self.in_use += class;
        self.peak_in_use = self.peak_in_use.max(self.in_use);
    }

    fn give(&mut self, class: u64, b: wgpu::Buffer) {
        self.in_use -= class;
        self.free.entry(class).or_default().push(b);
    }

    /// Releases every cached (free) buffer to the driver; live storages are untouched. (Dropped,
    /// not destroyed: recorded work may still use them; wgpu frees each when the GPU is done.)
    pub fn trim(&mut self) {
        for (class, list) in std::mem::take(&mut self.free) {
            self.reserved -= class * list.len() as u64;
        }
    }
}

/// One pooled buffer holding `len` floats; back to the pool when the last handle drops.
pub struct GpuBuffer {
    buffer: wgpu::Buffer,
    len: usize,
    class: u64,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(ctx) = existing_context() {
            ctx.pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .give(self.class, self.buffer.clone());
        }
    }
}

/// Device-resident f32 storage on the GPU; clones share the buffer.
#[derive(Clone)]
pub struct GpuStorage(Arc<GpuBuffer>);

impl GpuStorage {
    pub fn len(&self) -> usize {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.0.buffer
    }

    /// Bytes a binding of this storage covers: its floats, not the whole size class.
    pub fn binding_size(&self) -> u64 {
        ((self.0.len as u64) * 4).max(4)
    }

    /// Handles sharing this buffer (copy-on-write before an in-place update).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// A buffer for `len` floats from the pool (contents undefined).
    pub fn alloc(len: usize) -> Result<GpuStorage> {
        let ctx = context()?;
        let bytes = (len as u64).saturating_mul(4).max(4);
        let (limit, name) = max_tensor_bytes(ctx);
        if bytes > limit {
            return Err(too_large(bytes, &format!("a tensor of {len} floats"), limit, name));
        }
        let class = class_size(bytes).min(ctx.limits.max_buffer_size);
        let cached = ctx.pool.lock().unwrap_or_else(|p| p.into_inner()).take(class);
        let (buffer, class) = match cached {
            Some(b) => b,
            None => (create(ctx, class)?, class),
        };
        Ok(GpuStorage(Arc::new(GpuBuffer { buffer, len, class })))
    }
}

/// The largest tensor a kernel can bind, in bytes, and the limit that sets it.
pub fn max_tensor_bytes(ctx: &GpuContext) -> (u64, &'static str) {
    let binding = ctx.limits.max_storage_buffer_binding_size;
    if ctx.limits.max_buffer_size < binding {
        (ctx.limits.max_buffer_size, "max_buffer_size")
    } else {
        (binding, "max_storage_buffer_binding_size")
    }
}

/// The error for a tensor larger than the GPU can bind: names its bytes and the limit.
pub fn too_large(bytes: u64, what: &str, limit: u64, name: &str) -> Error {
    Error::OutOfMemory {
        bytes,
        message: format!(
            "{what} needs {} ({bytes} bytes), more than this GPU can hold in one buffer: {} ({limit} bytes, \
             the adapter's {name}); use a smaller batch or image size",
            human_bytes(bytes),
            human_bytes(limit)
        ),
    }
}

/// Runs `f` inside an out-of-memory error scope: None when wgpu reported out of memory.
pub fn oom_scoped<T>(ctx: &GpuContext, f: impl FnOnce() -> T) -> Option<T> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let value = f();
    match pollster::block_on(scope.pop()) {
        None => Some(value),
        Some(_) => None,
    }
}

fn try_create(ctx: &GpuContext, class: u64) -> Option<wgpu::Buffer> {
    oom_scoped(ctx, || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resnet-wgpu pool"),
            size: class,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
}

fn create(ctx: &GpuContext, class: u64) -> Result<wgpu::Buffer> {
    let b = match try_create(ctx, class) {
        Some(b) => b,
        None => {
            // Out of memory: finish the recorded work, give the cached buffers back to the driver
            // and try once more.
            super::queue::sync(ctx)?;
            ctx.pool.lock().unwrap_or_else(|p| p.into_inner()).trim();
            super::queue::sync(ctx)?;
            try_create(ctx, class).ok_or_else(|| {
                let in_use = ctx.pool.lock().unwrap_or_else(|p| p.into_inner()).in_use;
                let has = match ctx.device_memory {
                    Some(heap) => format!(" of the {} it has", human_bytes(heap)),
                    None => String::new(),
                };
                Error::OutOfMemory {
                    bytes: class,
                    message: format!(
                        "out of GPU memory: allocating {} ({class} bytes) on {} failed with {}{has} in use by \
                         this process; use a smaller batch or model",
                        human_bytes(class),
                        ctx.describe(),
                        human_bytes(in_use)
                    ),
                }
            })?
        }
    };
    ctx.pool.lock().unwrap_or_else(|p| p.into_inner()).created(class);
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::class_size;

    #[test]
    fn classes_round_up_by_at_most_an_eighth() {
        assert_eq!(class_size(1), 256);
        assert_eq!(class_size(256), 256);
        assert_eq!(class_size(257), 288);
        assert_eq!(class_size(1 << 20), 1 << 20);
        for b in [300u64, 1000, 4097, 123_456, 10_000_000, (1 << 30) + 1] {
            let c = class_size(b);
            assert!(c >= b && (c - b) * 8 <= b, "{b} -> {c}");
            assert_eq!(class_size(c), c, "a class is its own class");
        }
    }
}
