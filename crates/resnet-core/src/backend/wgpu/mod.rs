//! The GPU backend: WGSL compute kernels on wgpu (Vulkan, Metal, DX12). Storage is a pooled GPU
//! buffer; every kernel of the `Backend` trait is recorded into one shared command encoder and
//! runs when the host needs a value back (a download), so a whole training step stays on the GPU
//! and only the loss and the hit count come back.
//!
//! A launch, from a `Backend` method here to a dispatch:
//! 1. The method hands its storages to the family's launcher in `kernels/` (one Rust module per
//!    `.wgsl` family, beside it; the convolutions and the dense GEMM share the register-tiled loop
//!    of `kernels/gemm_tile.wgsl` through `kernels/gemm.rs`).
//! 2. The launcher fills the family's parameter struct (`uniform!`: a `repr(C)` `Pod` struct of
//!    named `u32`/`f32` fields) and names its buffers: `("x", &x)`; a one-thread-a-value kernel
//!    goes through `Family::launch_into`, which also allocates the output it names.
//! 3. `kernels::Family` owns what the shader and the launch must agree on. It generates the WGSL
//!    twin of the parameter struct, the `@binding` of each named buffer (in the order the family
//!    declares them) and the workgroup-size constants (`WG`, `CHUNK`) from the Rust constants, and
//!    puts them in front of the shared helpers (`kernels/prelude.wgsl`: thread index, workgroup
//!    sums; `kernels/grid.wgsl`: NCHW and window index decoding) and the family's kernels.
//!    `kernels/check.rs` has naga validate every generated shader and compare its layout with Rust.
//! 4. `pipelines.rs` compiles the entry point once per variant (tile shape, convolution window:
//!    `const` values replaced), `queue.rs` writes the struct's bytes into the per-submission
//!    uniform arena, binds each buffer at its generated slot and records the dispatch.

mod context;
mod kernels;
mod pipelines;
mod pool;
mod queue;

pub use context::{prefer_adapter, AdapterReport, GpuReport, ADAPTER_ENV};
pub use pool::GpuStorage;

use super::{
    Activation, Backend, BatchStats, ChannelLayout, ConvGeometry, Device, LogitsLayout, MatmulGeometry, PoolGeometry,
    RowLayout, RunningStatsUpdate, ScaleRule, ScalerGate, SgdStep, ShortcutGeometry, StatsSource, Storage,
};
use crate::error::{Error, Result};
use crate::memory::{human_bytes, Available};
use context::{context, existing_context, GpuContext};
use kernels::{batch_norm, conv, elementwise, gemm, loss, pooling, reduce, sgd, shortcut};

pub struct WgpuBackend;

/// Opens the GPU context now (it is otherwise opened on first use); Err says why there is none.
pub fn init() -> Result<()> {
    context().map(|_| ())
}

/// Whether this GPU can compute in precision 'mixed'; the error names what the adapter lacks.
pub fn check_mixed_precision() -> Result<()> {
    kernels::gemm::check_half(context()?)
}

/// The adapters wgpu sees, with their limits and features, and which one `gpu` uses and why.
pub fn report() -> GpuReport {
    context::report()
}

/// GPU memory held by the buffer pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GpuMemoryStats {
    /// Bytes in buffers held by live tensors.
    pub in_use: u64,
    pub peak_in_use: u64,
    /// Bytes of every pooled buffer, live or cached for reuse: what the process holds.
    pub reserved: u64,
    pub peak_reserved: u64,
    /// Command buffers submitted and kernels dispatched so far.
    pub submits: u64,
    pub dispatches: u64,
    /// Reads from the GPU so far; each waits for the queue to drain.
    pub readbacks: u64,
}

/// None until the GPU has been used.
pub fn memory_stats() -> Option<GpuMemoryStats> {
    let ctx = existing_context()?;
    let p = ctx.pool.lock().unwrap_or_else(|e| e.into_inner());
    let r = ctx.recorder.lock().unwrap_or_else(|e| e.into_inner());
    Some(GpuMemoryStats {
        in_use: p.in_use,
        peak_in_use: p.peak_in_use,
        reserved: p.reserved,
        peak_reserved: p.peak_reserved,
        submits: r.submits,
        dispatches: r.total_dispatches,
        readbacks: r.readbacks,
    })
}

/// Memory the GPU can still give this process, as far as can be told (wgpu has no portable
/// query): for a software adapter (lavapipe, whose buffers are host memory) the host's available
/// memory; otherwise the device-local heap the driver reports (Vulkan) less what this process's
/// pool holds in live tensors, and for an integrated GPU no more than the host has. Cached pool
/// buffers count as free (they are reused or trimmed). None before the GPU is opened, or where
/// nothing is known (Metal, DX12).
pub fn available_memory() -> Option<Available> {
    let ctx = existing_context()?;
    let (reserved, in_use) = {
        let p = ctx.pool.lock().unwrap_or_else(|e| e.into_inner());
        (p.reserved, p.in_use)
    };
    let host = || crate::memory::host_available().map(|a| a.plus(reserved.saturating_sub(in_use)));
    let device = || {
        ctx.device_memory.map(|heap| {
            let left = heap.saturating_sub(in_use);
            Available::new(
                left,
                format!(
                    "the GPU ({}) has {} of device memory, {} of it in use by this process",
                    ctx.info.name,
                    human_bytes(heap),
                    human_bytes(in_use)
                ),
            )
        })
    };
    match ctx.info.device_type {
        wgpu::DeviceType::Cpu => host().map(|a| Available {
            description: format!(
                "{} (the software adapter {} uses host memory)",
                a.description, ctx.info.name
            ),
            ..a
        }),
        wgpu::DeviceType::IntegratedGpu => Available::min(device(), host()),
        _ => device(),
    }
}

/// The largest tensor a kernel can bind, in bytes, and the name of the adapter limit that sets
/// it; None before the GPU is opened.
pub fn max_tensor_bytes() -> Option<(u64, &'static str)> {
    existing_context().map(pool::max_tensor_bytes)
}

/// Whether precision 'mixed' runs its GEMMs on cooperative matrices (tensor cores) now: the
/// adapter offers them (`AdapterReport::tensor_core_subgroup`) and `use_tensor_cores` has not
/// turned them off. None before the GPU is opened.
pub fn tensor_cores() -> Option<bool> {
    existing_context().map(|ctx| ctx.cooperative_subgroup.is_some() && kernels::gemm::tensor_cores_on())
}

/// Turns the cooperative-matrix GEMMs off (the f16 tiled loop instead) or back on, process-wide,
/// to check or time one against the other; it changes nothing where they are not offered.
pub fn use_tensor_cores(on: bool) {
    kernels::gemm::set_tensor_cores(on);
}

/// Whether the data gradient of `g` runs phase by phase (a strided convolution whose phases each
/// fill the GPU), skipping the products with zeros; tests and benchmarks ask.
pub fn data_gradient_by_phase(g: &crate::backend::ConvGeometry) -> bool {
    kernels::conv::runs_by_phase(g)
}

/// Ends a training step: see `queue::end_step`.
pub fn end_step() -> Result<()> {
    match existing_context() {
        Some(ctx) => queue::end_step(ctx),
        None => Ok(()),
    }
}

/// Submits recorded work and waits for the GPU to finish it.
pub fn synchronize() -> Result<()> {
    match existing_context() {
        Some(ctx) => queue::sync(ctx),
        None => Ok(()),
    }
}

/// Test hook: the peak figures of [`memory_stats`] start again from what the pool holds now.
#[cfg(feature = "test-hooks")]
pub fn reset_peak_memory() {
    if let Some(ctx) = existing_context() {
        let mut p = ctx.pool.lock().unwrap_or_else(|e| e.into_inner());
        p.peak_in_use = p.in_use;
        p.peak_reserved = p.reserved;
    }
}

/// Test hook: fill every freshly allocated kernel output with NaN before its kernel runs, so a
/// test can see that every element was written.
#[cfg(feature = "test-hooks")]
pub fn set_poison(on: bool) -> Result<()> {
    context()?.pool.lock().unwrap_or_else(|e| e.into_inner()).poison = on;
    Ok(())
}

fn gpu(s: &Storage) -> Result<&GpuStorage> {
    match s {
        Storage::Gpu(g) => Ok(g),
        #[allow(unreachable_patterns)]
        _ => Err(Error::DeviceMismatch {
            op: "gpu kernel",
            a: "gpu".into(),
            b: s.device().to_string(),
        }),
    }
}

fn store(s: GpuStorage) -> Result<Storage> {
    Ok(Storage::Gpu(s))
}

fn stats(s: batch_norm::Stats) -> BatchStats {
    BatchStats {
        mean: Storage::Gpu(s.mean),
        var: Storage::Gpu(s.var),
        invstd: Storage::Gpu(s.invstd),
    }
}

/// An SGD update's gradient, once its parameter and momentum buffer are checked to match it.
fn same_lengths<'a>(param: &Storage, grad: &'a Storage, momentum_buf: &Storage) -> Result<&'a GpuStorage> {
    let g = gpu(grad)?;
    let (plen, blen) = (gpu(param)?.len(), gpu(momentum_buf)?.len());
    if plen != g.len() || blen != plen {
        return Err(Error::Internal(format!(
            "sgd: param {plen} grad {} momentum {blen}",
            g.len()
        )));
    }
    Ok(g)
}

/// The storage, unshared: a copy first if another handle (a tensor saved for backward) holds it.
fn make_mut(ctx: &GpuContext, s: &mut Storage) -> Result<GpuStorage> {
    let g = gpu(s)?.clone();
    // The slot and `g` are two handles; any more is a tensor that must keep the old values.
    if g.handles() > 2 {
        let copy = elementwise::copy(ctx, &g)?;
        *s = Storage::Gpu(copy.clone());
        return Ok(copy);
    }
    Ok(g)
}

/// Batch norm's epilogue as the launcher takes it, from the `(residual, activation)` of the API.
fn bn_epilogue(epilogue: Option<(Option<&Storage>, Activation)>) -> Result<elementwise::Epilogue<'_>> {
    Ok(match epilogue {
        Some((residual, act)) => elementwise::Epilogue {
            residual: residual.map(gpu).transpose()?,
            act: Some(act),
        },
        None => elementwise::Epilogue::default(),
    })
}

/// Batch norm with given statistics on storages, then `epilogue` (see `batch_norm::apply`).
fn bn_apply(
    (x, gamma, beta): (&Storage, &Storage, &Storage),
    stats: &BatchStats,
    layout: &ChannelLayout,
    epilogue: Option<(Option<&Storage>, Activation)>,
) -> Result<Storage> {
    let affine = (gpu(gamma)?, gpu(beta)?);
    let (mean, invstd) = (gpu(&stats.mean)?, gpu(&stats.invstd)?);
    let epilogue = bn_epilogue(epilogue)?;
    store(batch_norm::apply(
        context()?,
        gpu(x)?,
        affine,
        (mean, invstd),
        *layout,
        epilogue,
    )?)
}

/// Training-mode batch norm on storages (see `batch_norm::train`).
fn bn_train(
    (x, gamma, beta): (&Storage, &Storage, &Storage),
    layout: &ChannelLayout,
    eps: f32,
    epilogue: Option<(Option<&Storage>, Activation)>,
    running: Option<batch_norm::RunningUpdate>,
) -> Result<(Storage, BatchStats)> {
    let affine = (gpu(gamma)?, gpu(beta)?);
    let epilogue = bn_epilogue(epilogue)?;
    let (y, s) = batch_norm::train(context()?, gpu(x)?, affine, *layout, eps, epilogue, running)?;
    Ok((store(y)?, stats(s)))
}

impl Backend for WgpuBackend {
    fn device(&self) -> Device {
        Device::Gpu
    }

    fn upload(&self, data: &[f32]) -> Result<Storage> {
        let ctx = context()?;
        let s = GpuStorage::alloc(data.len())?;
        queue::write(ctx, &s, data)?;
        store(s)
    }

    fn download(&self, s: &Storage) -> Result<Vec<f32>> {
        queue::read(context()?, gpu(s)?)
    }

    fn download_many(&self, s: &[&Storage]) -> Result<Vec<Vec<f32>>> {
        let srcs = s.iter().map(|s| gpu(s)).collect::<Result<Vec<_>>>()?;
        queue::read_many(context()?, &srcs)
    }

    fn zeros(&self, len: usize) -> Result<Storage> {
        let s = GpuStorage::alloc(len)?;
        elementwise::fill(context()?, &s, 0.0)?;
        store(s)
    }

    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        store(elementwise::add(context()?, gpu(a)?, gpu(b)?)?)
    }

    fn add_activation(&self, a: &Storage, b: &Storage, act: Activation) -> Result<Storage> {
        store(elementwise::add_activation(context()?, gpu(a)?, gpu(b)?, act)?)
    }

    fn scale(&self, a: &Storage, alpha: f32) -> Result<Storage> {
        store(elementwise::scale(context()?, gpu(a)?, alpha)?)
    }

    fn activation(&self, x: &Storage, act: Activation) -> Result<Storage> {
        store(elementwise::activation(context()?, gpu(x)?, act)?)
    }

    fn activation_backward(&self, y: &Storage, gy: &Storage, act: Activation) -> Result<Storage> {
        store(elementwise::activation_backward(context()?, gpu(y)?, gpu(gy)?, act)?)
    }

    fn conv2d(&self, x: &Storage, w: &Storage, bias: Option<&Storage>, g: &ConvGeometry) -> Result<Storage> {
        let bias = bias.map(gpu).transpose()?;
        store(conv::forward(context()?, gpu(x)?, gpu(w)?, bias, g)?)
    }

    fn conv2d_fused(
        &self,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
        residual: Option<&Storage>,
        act: Option<Activation>,
        g: &ConvGeometry,
    ) -> Result<Storage> {
        g.check_epilogue(bias.map(Storage::len), residual.map(Storage::len))?;
        let ctx = context()?;
        let bias = bias.map(gpu).transpose()?;
        let residual = residual.map(gpu).transpose()?;
        store(conv::forward_fused(ctx, gpu(x)?, gpu(w)?, bias, residual, act, g)?)
    }

    fn conv2d_backward_data(&self, gy: &Storage, w: &Storage, g: &ConvGeometry) -> Result<Storage> {
        store(conv::backward_data(context()?, gpu(gy)?, gpu(w)?, g)?)
    }

    fn conv2d_backward_weight(&self, x: &Storage, gy: &Storage, g: &ConvGeometry) -> Result<Storage> {
        store(conv::backward_weight(context()?, gpu(x)?, gpu(gy)?, g)?)
    }

    fn sum_nhw(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        let &ChannelLayout { n, c, hw } = layout;
        store(reduce::channel_sum(context()?, gpu(gy)?, n, c, hw)?)
    }

    fn batch_norm_train(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
    ) -> Result<(Storage, BatchStats)> {
        bn_train((x, gamma, beta), layout, eps, None, None)
    }

    fn batch_norm_train_act(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
        residual: Option<&Storage>,
        act: Activation,
    ) -> Result<(Storage, BatchStats)> {
        bn_train((x, gamma, beta), layout, eps, Some((residual, act)), None)
    }

    fn batch_norm_train_running(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
        epilogue: Option<(Option<&Storage>, Activation)>,
        (running_mean, running_var): (&mut Storage, &mut Storage),
        update: &RunningStatsUpdate,
    ) -> Result<(Storage, BatchStats)> {
        let ctx = context()?;
        let (rm, rv) = (make_mut(ctx, running_mean)?, make_mut(ctx, running_var)?);
        let running = batch_norm::RunningUpdate {
            mean: &rm,
            var: &rv,
            momentum: update.momentum,
            count: update.count,
        };
        bn_train((x, gamma, beta), layout, eps, epilogue, Some(running))
    }

    fn batch_norm_apply_act(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
        residual: Option<&Storage>,
        act: Activation,
    ) -> Result<Storage> {
        bn_apply((x, gamma, beta), stats, layout, Some((residual, act)))
    }

    fn batch_norm_act_backward(
        &self,
        x: &Storage,
        out: &Storage,
        gy: &Storage,
        gamma: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
        source: StatsSource,
        act: Activation,
    ) -> Result<(Storage, Storage, Storage)> {
        let (mean, invstd) = (gpu(&stats.mean)?, gpu(&stats.invstd)?);
        let (dx, dgamma, dbeta) = batch_norm::backward(
            context()?,
            gpu(x)?,
            gpu(gy)?,
            gpu(gamma)?,
            mean,
            invstd,
            *layout,
            source == StatsSource::Batch,
            Some((gpu(out)?, act)),
        )?;
        Ok((store(dx)?, store(dgamma)?, store(dbeta)?))
    }

    fn batch_norm_frozen_stats(&self, running_mean: &Storage, running_var: &Storage, eps: f32) -> Result<BatchStats> {
        let invstd = batch_norm::frozen_invstd(context()?, gpu(running_var)?, eps)?;
        Ok(BatchStats {
            mean: running_mean.clone(),
            var: running_var.clone(),
            invstd: store(invstd)?,
        })
    }

    fn batch_norm_apply(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
    ) -> Result<Storage> {
        bn_apply((x, gamma, beta), stats, layout, None)
    }

    fn batch_norm_backward(
        &self,
        x: &Storage,
        gy: &Storage,
        gamma: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
        source: StatsSource,
    ) -> Result<(Storage, Storage, Storage)> {
        let (mean, invstd) = (gpu(&stats.mean)?, gpu(&stats.invstd)?);
        let planes = *layout;
        let batch_statistics = source == StatsSource::Batch;
        let (dx, dgamma, dbeta) = batch_norm::backward(
            context()?,
            gpu(x)?,
            gpu(gy)?,
            gpu(gamma)?,
            mean,
            invstd,
            planes,
            batch_statistics,
            None,
        )?;
        Ok((store(dx)?, store(dgamma)?, store(dbeta)?))
    }

    fn update_running_stats(
        &self,
        running_mean: &mut Storage,
        running_var: &mut Storage,
        stats: &BatchStats,
        update: &RunningStatsUpdate,
    ) -> Result<()> {
        let &RunningStatsUpdate { momentum, count } = update;
        let ctx = context()?;
        let (rm, rv) = (make_mut(ctx, running_mean)?, make_mut(ctx, running_var)?);
        let batch = (gpu(&stats.mean)?, gpu(&stats.var)?);
        batch_norm::update_running(ctx, &rm, &rv, batch, momentum, count)
    }

    fn max_pool2d(&self, x: &Storage, g: &PoolGeometry) -> Result<Storage> {
        store(pooling::max_pool(context()?, gpu(x)?, g)?)
    }

    fn max_pool2d_backward(&self, x: &Storage, gy: &Storage, g: &PoolGeometry) -> Result<Storage> {
        store(pooling::max_pool_backward(context()?, gpu(x)?, gpu(gy)?, g)?)
    }

    fn global_avg_pool(&self, x: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        store(pooling::global_avg_pool(context()?, gpu(x)?, *layout)?)
    }

    fn global_avg_pool_backward(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        store(pooling::global_avg_pool_backward(context()?, gpu(gy)?, *layout)?)
    }

    fn matmul(&self, a: &Storage, b: &Storage, g: &MatmulGeometry) -> Result<Storage> {
        let &MatmulGeometry {
            m,
            k,
            n,
            transpose_a,
            transpose_b,
            precision,
        } = g;
        store(gemm::matmul(
            context()?,
            gpu(a)?,
            gpu(b)?,
            (m, k, n),
            (transpose_a, transpose_b),
            precision,
        )?)
    }

    fn add_row_bias(&self, x: &Storage, bias: &Storage) -> Result<Storage> {
        let bias = gpu(bias)?;
        store(elementwise::add_row_bias(context()?, gpu(x)?, bias, bias.len())?)
    }

    fn sum_rows(&self, x: &Storage, layout: &RowLayout) -> Result<Storage> {
        let &RowLayout { rows, cols } = layout;
        store(reduce::sum_leading(context()?, gpu(x)?, rows, cols)?)
    }

    fn cross_entropy(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout) -> Result<(Storage, Storage)> {
        let &LogitsLayout { n, classes } = layout;
        let (losses, probs) = loss::cross_entropy(context()?, gpu(logits)?, gpu(labels)?, n, classes)?;
        Ok((store(losses)?, store(probs)?))
    }

    fn cross_entropy_backward(
        &self,
        probs: &Storage,
        labels: &Storage,
        upstream: &Storage,
        layout: &LogitsLayout,
        scale: f32,
    ) -> Result<Storage> {
        let &LogitsLayout { n, classes } = layout;
        let (probs, labels, upstream) = (gpu(probs)?, gpu(labels)?, gpu(upstream)?);
        store(loss::cross_entropy_backward(
            context()?,
            probs,
            labels,
            upstream,
            (n, classes),
            scale,
        )?)
    }

    fn topk_correct(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout, k: usize) -> Result<Storage> {
        let &LogitsLayout { n, classes } = layout;
        store(loss::topk_correct(
            context()?,
            gpu(logits)?,
            gpu(labels)?,
            (n, classes),
            k,
        )?)
    }

    fn sum_all(&self, x: &Storage) -> Result<Storage> {
        store(reduce::sum_all(context()?, gpu(x)?)?)
    }

    fn nonfinite_check(&self, tensors: &[Storage]) -> Result<Storage> {
        let tensors = tensors.iter().map(gpu).collect::<Result<Vec<_>>>()?;
        store(reduce::nonfinite_check(context()?, &tensors)?)
    }

    fn shortcut_a(&self, x: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        store(shortcut::forward(context()?, gpu(x)?, g)?)
    }

    fn shortcut_a_backward(&self, gy: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        store(shortcut::backward(context()?, gpu(gy)?, g)?)
    }

    fn sgd_update(&self, param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, s: &SgdStep) -> Result<()> {
        let ctx = context()?;
        let g = same_lengths(param, grad, momentum_buf)?;
        let (p, b) = (make_mut(ctx, param)?, make_mut(ctx, momentum_buf)?);
        sgd::step(ctx, &p, g, &b, s)
    }

    fn sgd_update_gated(
        &self,
        param: &mut Storage,
        grad: &Storage,
        momentum_buf: &mut Storage,
        s: &SgdStep,
        gate: &ScalerGate,
    ) -> Result<()> {
        let ctx = context()?;
        let g = same_lengths(param, grad, momentum_buf)?;
        let gate = sgd::Gate {
            check: gpu(gate.check)?,
            scaler: gpu(gate.state)?,
            lrs: gpu(gate.lrs)?,
        };
        let (p, b) = (make_mut(ctx, param)?, make_mut(ctx, momentum_buf)?);
        sgd::step_gated(ctx, &p, g, &b, s, &gate)
    }

    fn loss_scale_update(
        &self,
        scale: &mut Storage,
        state: &mut Storage,
        check: &Storage,
        rule: &ScaleRule,
    ) -> Result<()> {
        let ctx = context()?;
        let check = gpu(check)?;
        let (scale, state) = (make_mut(ctx, scale)?, make_mut(ctx, state)?);
        sgd::scale_update(ctx, &scale, &state, check, rule)
    }
}
