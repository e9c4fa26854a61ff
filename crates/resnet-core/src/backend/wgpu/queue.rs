//! Recording and submitting work. Kernels are recorded into one shared command encoder, inside one
//! long compute pass, and submitted when the host needs a result (a download), on a
//! `synchronize`, or every `SUBMIT_EVERY` dispatches: then the GPU starts on the first kernels of a step
//! while the host is still recording the rest, instead of idling until the readback. Each dispatch's small parameter block goes
//! into a per-submission arena (one uniform buffer, one slot a dispatch) written just before the
//! submit: `queue.write_buffer` runs before the commands of the next submit, so the arena must not
//! be rewritten between recording and submitting, and it is not.

use super::context::GpuContext;
use super::pipelines::Kernel;
use super::pool::{oom_scoped, GpuStorage};
use crate::error::{Error, Result};
use crate::memory::human_bytes;

/// Dispatches recorded before a submit is forced (and parameter slots in the arena).
pub const MAX_DISPATCHES: usize = 512;

/// Dispatches per submit while recording: `RESNET_WGPU_SUBMIT_EVERY`, default 48 (best of 48, 128, 512 for ResNet-20 on an H100).
fn submit_every() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("RESNET_WGPU_SUBMIT_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48)
            .clamp(1, MAX_DISPATCHES)
    })
}
/// Largest parameter block of any kernel, in bytes.
const MAX_PARAMS: u64 = 256;

pub struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: usize,
    params: Vec<u8>,
    arena: Option<wgpu::Buffer>,
    slot: u64,
    /// Submissions so far (statistics).
    pub submits: u64,
    /// Dispatches so far (statistics).
    pub total_dispatches: u64,
    /// Readbacks so far: each one waits for the GPU (statistics).
    pub readbacks: u64,
    /// The newest submission, and the one that ended the last step (`end_step`).
    last_submission: Option<wgpu::SubmissionIndex>,
    previous_step: Option<wgpu::SubmissionIndex>,
}

impl Recorder {
    pub fn new(uniform_alignment: u32) -> Self {
        Recorder {
            encoder: None,
            pass: None,
            dispatches: 0,
            params: Vec::new(),
            arena: None,
            slot: (uniform_alignment as u64).max(MAX_PARAMS),
            submits: 0,
            total_dispatches: 0,
            readbacks: 0,
            last_submission: None,
            previous_step: None,
        }
    }

    fn arena_bytes(&self) -> u64 {
        self.slot * MAX_DISPATCHES as u64
    }

    fn encoder(&mut self, ctx: &GpuContext) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("resnet-wgpu"),
            })
        })
    }

    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Submits everything recorded so far (no wait).
    fn submit(&mut self, ctx: &GpuContext) {
        self.end_pass();
        if let Some(enc) = self.encoder.take() {
            if !self.params.is_empty() {
                if let Some(arena) = &self.arena {
                    ctx.queue.write_buffer(arena, 0, &self.params);
                }
            }
            self.last_submission = Some(ctx.queue.submit([enc.finish()]));
            self.submits += 1;
        }
        self.params.clear();
        self.dispatches = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.encoder.is_none()
    }
}

fn recorder(ctx: &GpuContext) -> std::sync::MutexGuard<'_, Recorder> {
    ctx.recorder.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records one dispatch of `kernel` with the parameter block `params` (binding 0) and storages at
/// the given bindings.
pub fn dispatch(
    ctx: &GpuContext,
    kernel: &Kernel,
    params: &[u8],
    bindings: &[(u32, &GpuStorage)],
    grid: [u32; 3],
) -> Result<()> {
    if grid.contains(&0) {
        return Ok(());
    }
    // Zero padding to 16 bytes: the binding covers the whole WGSL struct whatever its size.
    let size = (params.len() as u64).div_ceil(16) * 16;
    if size > MAX_PARAMS {
        return Err(Error::Internal(format!(
            "kernel {}: {size} bytes of parameters",
            kernel.name
        )));
    }
    let mut r = recorder(ctx);
    if r.dispatches >= MAX_DISPATCHES {
        r.submit(ctx);
    }
    if r.arena.is_none() {
        let size = r.arena_bytes();
        let arena = oom_scoped(ctx, || {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resnet-wgpu params"),
                size,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
        .ok_or_else(|| gpu_oom(size, "the kernels' parameter block"))?;
        r.arena = Some(arena);
    }
    let offset = r.dispatches as u64 * r.slot;
    r.params.resize(offset as usize, 0);
    r.params.extend_from_slice(params);
    r.params.resize((offset + size) as usize, 0);
    let arena = r.arena.clone().expect("arena created above");
    let mut entries = Vec::with_capacity(bindings.len() + 1);
    entries.push(wgpu::BindGroupEntry {
        binding: 0,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &arena,
            offset,
            size: wgpu::BufferSize::new(size),
        }),
    });
    for (binding, s) in bindings {
        entries.push(wgpu::BindGroupEntry {
            binding: *binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: s.buffer(),
                offset: 0,
                size: wgpu::BufferSize::new(s.binding_size()),
            }),
        });
    }
    let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &kernel.layout,
        entries: &entries,
    });
    if r.pass.is_none() {
        let pass = r
            .encoder(ctx)
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            })
            .forget_lifetime();
        r.pass = Some(pass);
    }
    let pass = r.pass.as_mut().expect("pass begun above");
    pass.set_pipeline(&kernel.pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
    r.dispatches += 1;
    r.total_dispatches += 1;
    if r.dispatches >= submit_every() {
        r.submit(ctx);
    }
    Ok(())
}

/// Submits the recorded work and waits until the GPU has finished all of it.
pub fn sync(ctx: &GpuContext) -> Result<()> {
    recorder(ctx).submit(ctx);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Device(format!("waiting for the GPU: {e}")))?;
    ctx.check_error()
}

/// Ends a training step without waiting for it: submits what it recorded, then waits only for
/// the step before it. The host so records step k+1 while the GPU runs step k, and never gets
/// further ahead (each step's upload stays staged until its step runs, so the lag bounds that
/// memory).
pub fn end_step(ctx: &GpuContext) -> Result<()> {
    let previous = {
        let mut r = recorder(ctx);
        r.submit(ctx);
        let this = r.last_submission.clone();
        std::mem::replace(&mut r.previous_step, this)
    };
    if let Some(index) = previous {
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Device(format!("waiting for the GPU: {e}")))?;
    }
    ctx.check_error()
}

/// Copies host data into `dst`. Recorded work is submitted first: a queue write lands before the
/// commands of the next submit, so it must not overtake kernels already recorded.
pub fn write(ctx: &GpuContext, dst: &GpuStorage, data: &[f32]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut r = recorder(ctx);
    if !r.is_empty() {
        r.submit(ctx);
    }
    // The queue stages the data in memory of its own, which can run out too.
    oom_scoped(ctx, || {
        ctx.queue.write_buffer(dst.buffer(), 0, bytemuck::cast_slice(data))
    })
    .ok_or_else(|| gpu_oom(data.len() as u64 * 4, "staging an upload"))
}

/// The error for a GPU-side allocation (outside the pool) that wgpu reported out of memory.
fn gpu_oom(bytes: u64, what: &str) -> Error {
    Error::OutOfMemory {
        bytes,
        message: format!(
            "out of GPU memory: allocating {} ({bytes} bytes) for {what} failed",
            human_bytes(bytes)
        ),
    }
}

/// Reads `src` back: submits everything recorded, copies into a mappable buffer, waits.
pub fn read(ctx: &GpuContext, src: &GpuStorage) -> Result<Vec<f32>> {
    Ok(read_many(ctx, &[src])?.pop().unwrap_or_default())
}

/// Reads several storages back with one submit and one wait: they are copied side by side into
/// one staging buffer, so a step's scalars cost one round trip, not one each.
pub fn read_many(ctx: &GpuContext, srcs: &[&GpuStorage]) -> Result<Vec<Vec<f32>>> {
    let lens: Vec<usize> = srcs.iter().map(|s| s.len()).collect();
    let total: usize = lens.iter().sum();
    if total == 0 {
        return Ok(lens.iter().map(|_| Vec::new()).collect());
    }
    let bytes = (total as u64) * 4;
    let staging = oom_scoped(ctx, || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resnet-wgpu readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    })
    .ok_or_else(|| gpu_oom(bytes, "reading a tensor back"))?;
    {
        let mut r = recorder(ctx);
        r.end_pass();
        let encoder = r.encoder(ctx);
        let mut offset = 0u64;
        for src in srcs {
            let len = (src.len() as u64) * 4;
            if len > 0 {
                encoder.copy_buffer_to_buffer(src.buffer(), 0, &staging, offset, len);
            }
            offset += len;
        }
        r.submit(ctx);
        r.readbacks += 1;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |res| {
        let _ = tx.send(res);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Device(format!("waiting for the GPU: {e}")))?;
    ctx.check_error()?;
    rx.recv()
        .map_err(|_| Error::Device("the GPU never answered a readback".into()))?
        .map_err(|e| Error::Device(format!("reading back from the GPU: {e}")))?;
    let out = {
        let mapped = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Device(format!("reading back from the GPU: {e}")))?;
        let all = bytemuck::cast_slice::<u8, f32>(&mapped);
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                let part = &all[start..start + len];
                start += len;
                crate::memory::try_copy(part, "a tensor read back from the GPU")
            })
            .collect::<Result<Vec<_>>>()
    };
    staging.unmap();
    out
}
