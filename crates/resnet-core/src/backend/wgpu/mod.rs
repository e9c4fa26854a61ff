//! The GPU backend: WGSL compute kernels on wgpu (Vulkan, Metal, DX12). Storage is a pooled GPU
//! buffer; every kernel of the `Backend` trait is recorded into one shared command encoder and
//! runs when the host needs a value back (a download), so a whole training step stays on the GPU
//! and only the loss and the hit count come back. One `.wgsl` file per kernel family sits beside
//! this file; the convolutions and the dense GEMM share the register-tiled loop in
//! `gemm_tile.wgsl` (and, where the reduction cursor is plain k, `gemm_plain_k.wgsl`).

mod context;
mod pipelines;
mod pool;
mod queue;

pub use context::{AdapterReport, GpuReport, ADAPTER_ENV};
pub use pool::GpuStorage;

use super::{
    Activation, Backend, BatchStats, ChannelLayout, ConvGeometry, Device, LogitsLayout, MatmulGeometry, PoolGeometry,
    RowLayout, RunningStatsUpdate, SgdStep, ShortcutGeometry, StatsSource, Storage,
};
use crate::error::{Error, Result};
use crate::memory::{human_bytes, Available};
use context::{context, existing_context, GpuContext};
use pipelines::KernelSpec;

const ELEMENTWISE: &[&str] = &[include_str!("elementwise.wgsl")];
const REDUCE: &[&str] = &[include_str!("reduce.wgsl")];
const BATCH_NORM: &[&str] = &[include_str!("batch_norm.wgsl")];
const POOL: &[&str] = &[include_str!("pool.wgsl")];
const LOSS: &[&str] = &[include_str!("loss.wgsl")];
const SHORTCUT: &[&str] = &[include_str!("shortcut.wgsl")];
const SGD: &[&str] = &[include_str!("sgd.wgsl")];
const MATMUL: &[&str] = &[
    include_str!("matmul.wgsl"),
    include_str!("gemm_plain_k.wgsl"),
    include_str!("gemm_tile.wgsl"),
];
const CONV_FORWARD: &[&str] = &[
    include_str!("conv2d_forward.wgsl"),
    include_str!("gemm_plain_k.wgsl"),
    include_str!("gemm_tile.wgsl"),
];
const CONV_BACKWARD_DATA: &[&str] = &[
    include_str!("conv2d_backward_data.wgsl"),
    include_str!("gemm_plain_k.wgsl"),
    include_str!("gemm_tile.wgsl"),
];
const CONV_BACKWARD_WEIGHT: &[&str] = &[
    include_str!("conv2d_backward_weight.wgsl"),
    include_str!("gemm_tile.wgsl"),
];

/// Threads a workgroup of the one-element-a-thread kernels (their `WG`).
const WG: u64 = 256;
/// Values a workgroup reduces in reduce.wgsl and batch_norm.wgsl (`WG * ITEMS`).
const CHUNK: u64 = 4096;
/// Rows a workgroup of loss.wgsl.
const LOSS_WG: u64 = 64;

pub struct WgpuBackend;

/// Opens the GPU context now (it is otherwise opened on first use); Err says why there is none.
pub fn init() -> Result<()> {
    context().map(|_| ())
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

/// Submits recorded work without waiting.
pub fn flush() -> Result<()> {
    match existing_context() {
        Some(ctx) => queue::flush(ctx),
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

/// Returns cached (unused) pool buffers to the driver.
pub fn trim() -> Result<()> {
    if let Some(ctx) = existing_context() {
        queue::sync(ctx)?;
        ctx.pool.lock().unwrap_or_else(|e| e.into_inner()).trim();
    }
    Ok(())
}

/// Test hook: the peak figures of [`memory_stats`] start again from what the pool holds now.
#[doc(hidden)]
pub fn reset_peak_memory() {
    if let Some(ctx) = existing_context() {
        let mut p = ctx.pool.lock().unwrap_or_else(|e| e.into_inner());
        p.peak_in_use = p.in_use;
        p.peak_reserved = p.reserved;
    }
}

/// Test hook: fill every freshly allocated kernel output with NaN before its kernel runs, so a
/// test can see that every element was written.
#[doc(hidden)]
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

fn u(v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Device(format!("size {v} is too large for a GPU kernel (at most 2^32 - 1)")))
}

fn f(v: f32) -> u32 {
    v.to_bits()
}

/// A grid of `workgroups` workgroups, spread over x and y so no dimension passes the limit.
fn grid(ctx: &GpuContext, workgroups: u64) -> Result<[u32; 3]> {
    let max = ctx.limits.max_compute_workgroups_per_dimension.max(1) as u64;
    if workgroups <= max {
        return Ok([workgroups as u32, 1, 1]);
    }
    let y = workgroups.div_ceil(max);
    if y > max {
        return Err(Error::Device(format!(
            "{workgroups} workgroups do not fit in one dispatch"
        )));
    }
    Ok([workgroups.div_ceil(y) as u32, y as u32, 1])
}

#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &GpuContext,
    family: &'static str,
    sources: &'static [&'static str],
    entry: &'static str,
    consts: &[(&'static str, String)],
    params: &[u32],
    bindings: &[(u32, &GpuStorage)],
    workgroups: u64,
) -> Result<()> {
    let kernel = ctx.pipelines.get(
        ctx,
        &KernelSpec {
            family,
            sources,
            entry,
            consts,
        },
    )?;
    queue::dispatch(ctx, &kernel, params, bindings, grid(ctx, workgroups)?)
}

/// An uninitialised output of `len` floats (NaN-filled under the test hook).
fn output(ctx: &GpuContext, len: usize) -> Result<GpuStorage> {
    let s = GpuStorage::alloc(len)?;
    if ctx.pool.lock().unwrap_or_else(|e| e.into_inner()).poison {
        fill(ctx, &s, f32::NAN)?;
    }
    Ok(s)
}

fn fill(ctx: &GpuContext, s: &GpuStorage, v: f32) -> Result<()> {
    let len = s.len();
    run(
        ctx,
        "elementwise",
        ELEMENTWISE,
        "fill",
        &[],
        &[u(len)?, 0, f(v), 1],
        &[(3, s)],
        (len as u64).div_ceil(WG),
    )
}

fn store(s: GpuStorage) -> Result<Storage> {
    Ok(Storage::Gpu(s))
}

/// The storage, unshared: a copy first if another handle (a tensor saved for backward) holds it.
fn make_mut(ctx: &GpuContext, s: &mut Storage) -> Result<GpuStorage> {
    let g = gpu(s)?.clone();
    // The slot and `g` are two handles; any more is a tensor that must keep the old values.
    if g.handles() > 2 {
        let copy = GpuStorage::alloc(g.len())?;
        let len = g.len();
        run(
            ctx,
            "elementwise",
            ELEMENTWISE,
            "copy",
            &[],
            &[u(len)?, 0, 0, 1],
            &[(1, &g), (3, &copy)],
            (len as u64).div_ceil(WG),
        )?;
        *s = Storage::Gpu(copy.clone());
        return Ok(copy);
    }
    Ok(g)
}

fn elementwise(a: &Storage, b: Option<&Storage>, entry: &'static str, op: u32, alpha: f32) -> Result<Storage> {
    let ctx = context()?;
    let a = gpu(a)?;
    let len = a.len();
    if let Some(b) = b {
        if gpu(b)?.len() != len {
            return Err(Error::Internal(format!(
                "elementwise op on {} and {} values",
                len,
                gpu(b)?.len()
            )));
        }
    }
    let y = output(ctx, len)?;
    let mut bindings = vec![(1, a)];
    if let Some(b) = b {
        bindings.push((2, gpu(b)?));
    }
    bindings.push((3, &y));
    run(
        ctx,
        "elementwise",
        ELEMENTWISE,
        entry,
        &[],
        &[u(len)?, op, f(alpha), 1],
        &bindings,
        (len as u64).div_ceil(WG),
    )?;
    store(y)
}

fn act_code(act: Activation) -> u32 {
    match act {
        Activation::Relu => 0,
        Activation::Tanh => 1,
        Activation::Sigmoid => 2,
    }
}

/// The tile shape of a GEMM, chosen by the size of M (small channel counts get flat tiles).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tile {
    bm: u32,
    bn: u32,
    bk: u32,
    tm: u32,
    tn: u32,
    prefetch: bool,
}

/// Tuning override for experiments: `RESNET_WGPU_GEMM=bm,bn,bk,tm,tn,prefetch(0/1)` for every GEMM.
fn tile_override() -> Option<Tile> {
    static TILE: std::sync::OnceLock<Option<Tile>> = std::sync::OnceLock::new();
    *TILE.get_or_init(|| {
        let v: Vec<u32> = std::env::var("RESNET_WGPU_GEMM")
            .ok()?
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        let t = Tile {
            bm: *v.first()?,
            bn: *v.get(1)?,
            bk: *v.get(2)?,
            tm: *v.get(3)?,
            tn: *v.get(4)?,
            prefetch: v.get(5) != Some(&0),
        };
        // gemm_tile.wgsl assumes 256 threads and BM, BN, BK dividing the thread count.
        let divides_256 = |x: u32| x > 0 && 256u32.is_multiple_of(x);
        let ok = t.tm > 0
            && t.tn > 0
            && t.bm.is_multiple_of(t.tm)
            && t.bn.is_multiple_of(t.tn)
            && (t.bm / t.tm) * (t.bn / t.tn) == 256
            && divides_256(t.bm)
            && divides_256(t.bn)
            && divides_256(t.bk);
        if !ok {
            eprintln!("resnet-wgpu: ignoring RESNET_WGPU_GEMM={v:?} (needs 256 threads; BM, BN, BK dividing 256)");
        }
        ok.then_some(t)
    })
}

fn tile_for(m: usize) -> Tile {
    if let Some(t) = tile_override() {
        return t;
    }
    // Measured on an H100 (NVIDIA Vulkan driver): 64x128 tiles of 4x8 a thread run every ResNet-50
    // convolution at 19-22 TFLOP/s; 128x128 tiles of 8x8 fall off a cliff (~2 TFLOP/s) in the
    // forward kernel there, so they are not used.
    match m {
        m if m > 32 => Tile {
            bm: 64,
            bn: 128,
            bk: 8,
            tm: 4,
            tn: 8,
            prefetch: true,
        },
        m if m > 16 => Tile {
            bm: 32,
            bn: 128,
            bk: 8,
            tm: 2,
            tn: 8,
            prefetch: true,
        },
        _ => Tile {
            bm: 16,
            bn: 256,
            bk: 8,
            tm: 2,
            tn: 8,
            prefetch: true,
        },
    }
}

impl Tile {
    fn consts(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BM", self.bm.to_string()),
            ("BN", self.bn.to_string()),
            ("BK", self.bk.to_string()),
            ("TM", self.tm.to_string()),
            ("TN", self.tn.to_string()),
            ("PREFETCH", self.prefetch.to_string()),
        ]
    }

    fn tiles(&self, m: usize, n: usize) -> u64 {
        (m as u64).div_ceil(self.bm as u64) * (n as u64).div_ceil(self.bn as u64)
    }
}

/// One GEMM through gemm_tile.wgsl whose C is `out_len` floats (bound at `out_binding`); `extra`
/// params follow (m, n, k, splits, k_chunk). When the output tiles alone cannot fill the GPU the
/// reduction is split (split-K) and the partials are added by reduce.wgsl.
#[allow(clippy::too_many_arguments)]
fn gemm(
    ctx: &GpuContext,
    family: &'static str,
    sources: &'static [&'static str],
    mut consts: Vec<(&'static str, String)>,
    (m, n, k): (usize, usize, usize),
    extra: &[u32],
    inputs: &[(u32, &GpuStorage)],
    (out_binding, out_len): (u32, usize),
) -> Result<GpuStorage> {
    let tile = tile_for(m);
    let (splits, k_chunk) = split_k(tile.tiles(m, n), k, tile.bk, out_len);
    let out = output(ctx, splits * out_len)?;
    consts.extend(tile.consts());
    let mut params = vec![u(m)?, u(n)?, u(k)?, u(splits)?, u(k_chunk)?];
    params.extend_from_slice(extra);
    let mut bindings = inputs.to_vec();
    bindings.push((out_binding, &out));
    run(
        ctx,
        family,
        sources,
        "main",
        &consts,
        &params,
        &bindings,
        tile.tiles(m, n) * splits as u64,
    )?;
    if splits == 1 {
        return Ok(out);
    }
    sum_leading(ctx, &out, splits, out_len)
}

fn conv_consts(g: &ConvGeometry) -> Vec<(&'static str, String)> {
    vec![
        ("KH", g.kh.to_string()),
        ("KW", g.kw.to_string()),
        ("STRIDE", g.stride.to_string()),
        ("PAD", g.padding.to_string()),
    ]
}

/// How many ways to split a reduction of `k` so that `tiles` output tiles fill the GPU, keeping
/// at least `min_chunk` of k a split and the partials under `max_partial` floats.
fn split_k(tiles: u64, k: usize, bk: u32, out_len: usize) -> (usize, usize) {
    const TARGET_WORKGROUPS: u64 = 768;
    const MIN_CHUNK: usize = 256;
    const MAX_PARTIAL: usize = 1 << 25;
    let by_fill = (TARGET_WORKGROUPS / tiles.max(1)).max(1) as usize;
    let by_chunk = k.div_ceil(MIN_CHUNK).max(1);
    let by_memory = (MAX_PARTIAL / out_len.max(1)).max(1);
    let splits = by_fill.min(by_chunk).min(by_memory).max(1);
    let bk = bk as usize;
    let chunk = k.div_ceil(splits).div_ceil(bk) * bk;
    let chunk = chunk.max(bk);
    (k.div_ceil(chunk).max(1), chunk)
}

/// Channel sums of an [n, c, hw] tensor: partial sums per chunk, then over chunks.
fn channel_sum(ctx: &GpuContext, x: &GpuStorage, n: usize, c: usize, hw: usize) -> Result<GpuStorage> {
    let count = n * hw;
    let chunks = (count as u64).div_ceil(CHUNK).max(1) as usize;
    let partial = output(ctx, chunks * c)?;
    run(
        ctx,
        "reduce",
        REDUCE,
        "channel_sums",
        &[],
        &[u(count)?, u(chunks)?, u(c)?, u(hw)?],
        &[(1, x), (2, &partial)],
        (chunks * c) as u64,
    )?;
    sum_leading(ctx, &partial, chunks, c)
}

/// out[i] = sum over s < count of x[s * len + i]
fn sum_leading(ctx: &GpuContext, x: &GpuStorage, count: usize, len: usize) -> Result<GpuStorage> {
    let out = output(ctx, len)?;
    run(
        ctx,
        "reduce",
        REDUCE,
        "sum_leading",
        &[],
        &[u(len)?, u(count)?, 0, 0],
        &[(1, x), (2, &out)],
        (len as u64).div_ceil(WG),
    )?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn bn_params(
    c: usize,
    hw: usize,
    count: usize,
    chunks: usize,
    len: usize,
    batch_stats: bool,
    eps: f32,
    momentum: f32,
    unbias: f32,
) -> Result<Vec<u32>> {
    Ok(vec![
        u(c)?,
        u(hw)?,
        u(count)?,
        u(chunks)?,
        u(len)?,
        batch_stats as u32,
        f(eps),
        f(momentum),
        f(unbias),
    ])
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

    fn zeros(&self, len: usize) -> Result<Storage> {
        let ctx = context()?;
        let s = GpuStorage::alloc(len)?;
        fill(ctx, &s, 0.0)?;
        store(s)
    }

    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        elementwise(a, Some(b), "add", 0, 0.0)
    }

    fn add_activation(&self, a: &Storage, b: &Storage, act: Activation) -> Result<Storage> {
        elementwise(a, Some(b), "add_activation", act_code(act), 0.0)
    }

    fn scale(&self, a: &Storage, alpha: f32) -> Result<Storage> {
        elementwise(a, None, "scale", 0, alpha)
    }

    fn activation(&self, x: &Storage, act: Activation) -> Result<Storage> {
        elementwise(x, None, "activation", act_code(act), 0.0)
    }

    fn activation_backward(&self, y: &Storage, gy: &Storage, act: Activation) -> Result<Storage> {
        elementwise(y, Some(gy), "activation_backward", act_code(act), 0.0)
    }

    fn conv2d(&self, x: &Storage, w: &Storage, bias: Option<&Storage>, g: &ConvGeometry) -> Result<Storage> {
        let ctx = context()?;
        let (xs, ws) = (gpu(x)?, gpu(w)?);
        let bs = match bias {
            Some(b) => gpu(b)?,
            None => xs,
        };
        let (m, n, k) = (g.c_out, g.n * g.oh * g.ow, g.c_in * g.kh * g.kw);
        let extra = [u(g.c_in)?, u(g.h)?, u(g.w)?, u(g.oh)?, u(g.ow)?, bias.is_some() as u32];
        let y = gemm(
            ctx,
            "conv2d_forward",
            CONV_FORWARD,
            conv_consts(g),
            (m, n, k),
            &extra,
            &[(1, xs), (2, ws), (3, bs)],
            (4, g.n * g.c_out * g.oh * g.ow),
        )?;
        store(y)
    }

    fn conv2d_backward_data(&self, gy: &Storage, w: &Storage, g: &ConvGeometry) -> Result<Storage> {
        let ctx = context()?;
        let (gys, ws) = (gpu(gy)?, gpu(w)?);
        let (m, n, k) = (g.c_in, g.n * g.h * g.w, g.c_out * g.kh * g.kw);
        let extra = [u(g.c_out)?, u(g.h)?, u(g.w)?, u(g.oh)?, u(g.ow)?];
        let gx = gemm(
            ctx,
            "conv2d_backward_data",
            CONV_BACKWARD_DATA,
            conv_consts(g),
            (m, n, k),
            &extra,
            &[(1, gys), (2, ws)],
            (3, g.n * g.c_in * g.h * g.w),
        )?;
        store(gx)
    }

    fn conv2d_backward_weight(&self, x: &Storage, gy: &Storage, g: &ConvGeometry) -> Result<Storage> {
        let ctx = context()?;
        let (xs, gys) = (gpu(x)?, gpu(gy)?);
        let (m, n, k) = (g.c_out, g.c_in * g.kh * g.kw, g.n * g.oh * g.ow);
        let extra = [u(g.c_in)?, u(g.h)?, u(g.w)?, u(g.oh)?, u(g.ow)?];
        let gw = gemm(
            ctx,
            "conv2d_backward_weight",
            CONV_BACKWARD_WEIGHT,
            conv_consts(g),
            (m, n, k),
            &extra,
            &[(1, xs), (2, gys)],
            (3, m * n),
        )?;
        store(gw)
    }

    fn sum_nhw(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        let &ChannelLayout { n, c, hw } = layout;
        let ctx = context()?;
        store(channel_sum(ctx, gpu(gy)?, n, c, hw)?)
    }

    fn batch_norm_train(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
    ) -> Result<(Storage, BatchStats)> {
        let &ChannelLayout { n, c, hw } = layout;
        let ctx = context()?;
        let xs = gpu(x)?;
        let (count, len) = (n * hw, n * c * hw);
        let chunks = (count as u64).div_ceil(CHUNK).max(1) as usize;
        let p = bn_params(c, hw, count, chunks, len, true, eps, 0.0, 1.0)?;
        let partial = output(ctx, chunks * 2 * c)?;
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "stats_partial",
            &[],
            &p,
            &[(1, xs), (8, &partial)],
            (chunks * c) as u64,
        )?;
        let (mean, var, invstd) = (output(ctx, c)?, output(ctx, c)?, output(ctx, c)?);
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "stats_finalize",
            &[],
            &p,
            &[(1, xs), (5, &mean), (6, &var), (7, &invstd), (8, &partial)],
            (c as u64).div_ceil(WG),
        )?;
        let y = output(ctx, len)?;
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "apply",
            &[],
            &p,
            &[
                (1, xs),
                (3, gpu(gamma)?),
                (4, gpu(beta)?),
                (5, &mean),
                (7, &invstd),
                (9, &y),
            ],
            (len as u64).div_ceil(WG),
        )?;
        Ok((
            store(y)?,
            BatchStats {
                mean: store(mean)?,
                var: store(var)?,
                invstd: store(invstd)?,
            },
        ))
    }

    fn batch_norm_frozen_stats(&self, running_mean: &Storage, running_var: &Storage, eps: f32) -> Result<BatchStats> {
        let ctx = context()?;
        let var = gpu(running_var)?;
        let c = var.len();
        let invstd = output(ctx, c)?;
        let p = bn_params(c, 1, 1, 1, c, false, eps, 0.0, 1.0)?;
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "frozen_invstd",
            &[],
            &p,
            &[(6, var), (7, &invstd)],
            (c as u64).div_ceil(WG),
        )?;
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
        let &ChannelLayout { n, c, hw } = layout;
        let ctx = context()?;
        let len = n * c * hw;
        let y = output(ctx, len)?;
        let p = bn_params(c, hw, n * hw, 1, len, false, 0.0, 0.0, 1.0)?;
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "apply",
            &[],
            &p,
            &[
                (1, gpu(x)?),
                (3, gpu(gamma)?),
                (4, gpu(beta)?),
                (5, gpu(&stats.mean)?),
                (7, gpu(&stats.invstd)?),
                (9, &y),
            ],
            (len as u64).div_ceil(WG),
        )?;
        store(y)
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
        let &ChannelLayout { n, c, hw } = layout;
        let batch_statistics = source == StatsSource::Batch;
        let ctx = context()?;
        let (xs, gys, mean, invstd) = (gpu(x)?, gpu(gy)?, gpu(&stats.mean)?, gpu(&stats.invstd)?);
        let (count, len) = (n * hw, n * c * hw);
        let chunks = (count as u64).div_ceil(CHUNK).max(1) as usize;
        let p = bn_params(c, hw, count, chunks, len, batch_statistics, 0.0, 0.0, 1.0)?;
        let partial = output(ctx, chunks * 2 * c)?;
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "backward_partial",
            &[],
            &p,
            &[(1, xs), (2, gys), (5, mean), (8, &partial)],
            (chunks * c) as u64,
        )?;
        let (dgamma, dbeta) = (output(ctx, c)?, output(ctx, c)?);
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "backward_finalize",
            &[],
            &p,
            &[(7, invstd), (8, &partial), (10, &dgamma), (11, &dbeta)],
            (c as u64).div_ceil(WG),
        )?;
        let dx = output(ctx, len)?;
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "backward_dx",
            &[],
            &p,
            &[
                (1, xs),
                (2, gys),
                (3, gpu(gamma)?),
                (5, mean),
                (7, invstd),
                (9, &dx),
                (10, &dgamma),
                (11, &dbeta),
            ],
            (len as u64).div_ceil(WG),
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
        let rm = make_mut(ctx, running_mean)?;
        let rv = make_mut(ctx, running_var)?;
        let c = rm.len();
        let unbias = count as f32 / (count.max(2) - 1) as f32;
        let p = bn_params(c, 1, count, 1, c, true, 0.0, momentum, unbias)?;
        run(
            ctx,
            "batch_norm",
            BATCH_NORM,
            "running_update",
            &[],
            &p,
            &[(5, gpu(&stats.mean)?), (6, gpu(&stats.var)?), (12, &rm), (13, &rv)],
            (c as u64).div_ceil(WG),
        )
    }

    fn max_pool2d(&self, x: &Storage, g: &PoolGeometry) -> Result<Storage> {
        let ctx = context()?;
        let len = g.n * g.c * g.oh * g.ow;
        let y = output(ctx, len)?;
        let p = [
            u(len)?,
            u(g.h)?,
            u(g.w)?,
            u(g.oh)?,
            u(g.ow)?,
            u(g.kernel)?,
            u(g.stride)?,
            u(g.padding)?,
            1,
        ];
        run(
            ctx,
            "pool",
            POOL,
            "max_pool",
            &[],
            &p,
            &[(1, gpu(x)?), (3, &y)],
            (len as u64).div_ceil(WG),
        )?;
        store(y)
    }

    fn max_pool2d_backward(&self, x: &Storage, gy: &Storage, g: &PoolGeometry) -> Result<Storage> {
        let ctx = context()?;
        let len = g.n * g.c * g.h * g.w;
        let gx = output(ctx, len)?;
        let p = [
            u(len)?,
            u(g.h)?,
            u(g.w)?,
            u(g.oh)?,
            u(g.ow)?,
            u(g.kernel)?,
            u(g.stride)?,
            u(g.padding)?,
            1,
        ];
        run(
            ctx,
            "pool",
            POOL,
            "max_pool_backward",
            &[],
            &p,
            &[(1, gpu(x)?), (2, gpu(gy)?), (3, &gx)],
            (len as u64).div_ceil(WG),
        )?;
        store(gx)
    }

    fn global_avg_pool(&self, x: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        let &ChannelLayout { n, c, hw } = layout;
        let ctx = context()?;
        let len = n * c;
        let y = output(ctx, len)?;
        let p = [u(len)?, 0, 0, 0, 0, 0, 0, 0, u(hw)?];
        run(
            ctx,
            "pool",
            POOL,
            "global_avg_pool",
            &[],
            &p,
            &[(1, gpu(x)?), (3, &y)],
            (len as u64).div_ceil(WG),
        )?;
        store(y)
    }

    fn global_avg_pool_backward(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        let &ChannelLayout { n, c, hw } = layout;
        let ctx = context()?;
        let len = n * c * hw;
        let gx = output(ctx, len)?;
        let p = [u(len)?, 0, 0, 0, 0, 0, 0, 0, u(hw)?];
        run(
            ctx,
            "pool",
            POOL,
            "global_avg_pool_backward",
            &[],
            &p,
            &[(2, gpu(gy)?), (3, &gx)],
            (len as u64).div_ceil(WG),
        )?;
        store(gx)
    }

    fn matmul(&self, a: &Storage, b: &Storage, g: &MatmulGeometry) -> Result<Storage> {
        let &MatmulGeometry {
            m,
            k,
            n,
            transpose_a,
            transpose_b,
        } = g;
        let ctx = context()?;
        let consts = vec![
            ("TRANS_A", transpose_a.to_string()),
            ("TRANS_B", transpose_b.to_string()),
            ("A_K_FAST", (!transpose_a).to_string()),
            ("B_K_FAST", transpose_b.to_string()),
        ];
        let c = gemm(
            ctx,
            "matmul",
            MATMUL,
            consts,
            (m, n, k),
            &[],
            &[(1, gpu(a)?), (2, gpu(b)?)],
            (3, m * n),
        )?;
        store(c)
    }

    fn add_row_bias(&self, x: &Storage, bias: &Storage) -> Result<Storage> {
        let cols = gpu(bias)?.len();
        let ctx = context()?;
        let xs = gpu(x)?;
        let len = xs.len();
        let y = output(ctx, len)?;
        run(
            ctx,
            "elementwise",
            ELEMENTWISE,
            "add_row_bias",
            &[],
            &[u(len)?, 0, 0, u(cols.max(1))?],
            &[(1, xs), (2, gpu(bias)?), (3, &y)],
            (len as u64).div_ceil(WG),
        )?;
        store(y)
    }

    fn sum_rows(&self, x: &Storage, layout: &RowLayout) -> Result<Storage> {
        let &RowLayout { rows, cols } = layout;
        let ctx = context()?;
        store(sum_leading(ctx, gpu(x)?, rows, cols)?)
    }

    fn cross_entropy(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout) -> Result<(Storage, Storage)> {
        let &LogitsLayout { n, classes } = layout;
        let ctx = context()?;
        let losses = output(ctx, n)?;
        let probs = output(ctx, n * classes)?;
        run(
            ctx,
            "loss",
            LOSS,
            "cross_entropy",
            &[],
            &[u(n)?, u(classes)?, 0, 0],
            &[(1, gpu(logits)?), (2, gpu(labels)?), (4, &losses), (5, &probs)],
            (n as u64).div_ceil(LOSS_WG),
        )?;
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
        let ctx = context()?;
        let g = output(ctx, n * classes)?;
        run(
            ctx,
            "loss",
            LOSS,
            "cross_entropy_backward",
            &[],
            &[u(n)?, u(classes)?, 0, f(scale)],
            &[(2, gpu(labels)?), (3, gpu(upstream)?), (4, &g), (5, gpu(probs)?)],
            ((n * classes) as u64).div_ceil(LOSS_WG),
        )?;
        store(g)
    }

    fn topk_correct(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout, k: usize) -> Result<Storage> {
        let &LogitsLayout { n, classes } = layout;
        let ctx = context()?;
        let hits = output(ctx, n)?;
        run(
            ctx,
            "loss",
            LOSS,
            "topk_correct",
            &[],
            &[u(n)?, u(classes)?, u(k)?, 0],
            &[(1, gpu(logits)?), (2, gpu(labels)?), (4, &hits)],
            (n as u64).div_ceil(LOSS_WG),
        )?;
        store(hits)
    }

    fn sum_all(&self, x: &Storage) -> Result<Storage> {
        let ctx = context()?;
        let mut cur = gpu(x)?.clone();
        let mut len = cur.len();
        if len == 0 {
            return self.zeros(1);
        }
        loop {
            let groups = (len as u64).div_ceil(CHUNK) as usize;
            let out = output(ctx, groups)?;
            run(
                ctx,
                "reduce",
                REDUCE,
                "sum_chunks",
                &[],
                &[u(len)?, u(groups)?, 0, 0],
                &[(1, &cur), (2, &out)],
                groups as u64,
            )?;
            if groups == 1 {
                return store(out);
            }
            cur = out;
            len = groups;
        }
    }

    fn shortcut_a(&self, x: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        let &ShortcutGeometry {
            c_in,
            c_out,
            h,
            w,
            stride,
            pad_before,
            ..
        } = g;
        shortcut("forward", x, g.out_len(), [c_in, c_out, h, w, stride, pad_before])
    }

    fn shortcut_a_backward(&self, gy: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        let &ShortcutGeometry {
            c_in,
            c_out,
            h,
            w,
            stride,
            pad_before,
            ..
        } = g;
        shortcut("backward", gy, g.in_len(), [c_in, c_out, h, w, stride, pad_before])
    }

    fn sgd_update(&self, param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, s: &SgdStep) -> Result<()> {
        let ctx = context()?;
        let g = gpu(grad)?;
        let (plen, blen) = (gpu(param)?.len(), gpu(momentum_buf)?.len());
        if plen != g.len() || blen != plen {
            return Err(Error::Internal(format!(
                "sgd: param {plen} grad {} momentum {blen}",
                g.len()
            )));
        }
        let p = make_mut(ctx, param)?;
        let b = make_mut(ctx, momentum_buf)?;
        let params = [
            u(plen)?,
            f(s.lr),
            f(s.momentum),
            f(s.weight_decay),
            s.nesterov as u32,
            s.first_step as u32,
        ];
        run(
            ctx,
            "sgd",
            SGD,
            "sgd",
            &[],
            &params,
            &[(1, g), (2, &p), (3, &b)],
            (plen as u64).div_ceil(WG),
        )
    }
}

/// Both directions of the option-A shortcut: one kernel family, `len` outputs (one per thread).
fn shortcut(
    entry: &'static str,
    src: &Storage,
    len: usize,
    [c_in, c_out, h, w, stride, pad_before]: [usize; 6],
) -> Result<Storage> {
    let ctx = context()?;
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    let out = output(ctx, len)?;
    let p = [
        u(len)?,
        u(c_in)?,
        u(c_out)?,
        u(h)?,
        u(w)?,
        u(oh)?,
        u(ow)?,
        u(stride)?,
        u(pad_before)?,
    ];
    run(
        ctx,
        "shortcut",
        SHORTCUT,
        entry,
        &[],
        &p,
        &[(1, gpu(src)?), (2, &out)],
        (len as u64).div_ceil(WG),
    )?;
    store(out)
}
