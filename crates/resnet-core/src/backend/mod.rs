//! The backend seam. A backend owns device storage and the kernels over it; autograd, layers and
//! blocks only ever call this trait, so a new device (wgpu) is one more `Storage` variant and one
//! more `Backend` impl, with no change above this line. Every method takes and returns device
//! storage: nothing here implies a host copy except `upload`/`download`.

pub mod cpu;
mod geometry;
pub mod profile;
#[cfg(feature = "gpu")]
pub mod wgpu;

pub use geometry::{
    ChannelLayout, ConvGeometry, LogitsLayout, MatmulGeometry, PoolGeometry, RowLayout, ShortcutGeometry,
};

use crate::error::{Error, Result};
use std::fmt;

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// The process's one GPU (wgpu: Vulkan, Metal or DX12), opened on first use.
    #[cfg(feature = "gpu")]
    Gpu,
}

impl Device {
    /// The device's kernels; while `profile` is on, the same kernels behind a timer.
    pub fn backend(self) -> &'static dyn Backend {
        if profile::is_on() {
            return profile::wrapped(self);
        }
        match self {
            Device::Cpu => &cpu::CpuBackend,
            #[cfg(feature = "gpu")]
            Device::Gpu => &self::wgpu::WgpuBackend,
        }
    }

    /// Marks the end of a training step whose results nobody waits for: on a GPU the recorded
    /// work is submitted and the host waits only for the step before (it runs at most one step
    /// ahead of the device); nothing on the CPU, whose work is done when the call returns.
    pub fn end_step(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "gpu")]
            Device::Gpu => self::wgpu::end_step(),
        }
    }

    /// "cpu", "gpu" or "auto". `gpu` fails with the reason when there is no usable adapter;
    /// `auto` takes a hardware GPU when there is one and the CPU otherwise, and says which on
    /// stderr (once). A software adapter (llvmpipe) is only used when named by
    /// `RESNET_WGPU_ADAPTER`.
    pub fn parse(s: &str) -> Result<Device> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => gpu_device(),
            "auto" => Ok(auto_device()),
            other => Err(Error::invalid(format!(
                "unknown device '{other}': expected 'cpu', 'gpu' or 'auto'"
            ))),
        }
    }
}

#[cfg(feature = "gpu")]
fn gpu_device() -> Result<Device> {
    self::wgpu::init().map(|_| Device::Gpu)
}

#[cfg(not(feature = "gpu"))]
fn gpu_device() -> Result<Device> {
    Err(Error::Device(
        "this build has no GPU support (built without the `gpu` feature); use device 'cpu' or 'auto'".into(),
    ))
}

fn auto_device() -> Device {
    static SAID: std::sync::Once = std::sync::Once::new();
    match gpu_device() {
        Ok(d) => {
            #[cfg(feature = "gpu")]
            SAID.call_once(|| {
                eprintln!(
                    "resnet-wgpu: device 'auto' uses the GPU: {}",
                    self::wgpu::report().selected.unwrap_or_default()
                )
            });
            d
        }
        Err(e) => {
            SAID.call_once(|| eprintln!("resnet-wgpu: device 'auto' uses the CPU: {}", auto_cpu_reason(&e)));
            Device::Cpu
        }
    }
}

/// Why 'auto' took the CPU, in one calm clause: the user chose 'auto', so this is information,
/// not an error (no "device error:", no advice to use 'auto').
fn auto_cpu_reason(e: &Error) -> String {
    #[cfg(feature = "gpu")]
    {
        let env = self::wgpu::ADAPTER_ENV;
        if let Ok(wanted) = std::env::var(env) {
            let detail = match e {
                Error::Device(m) => m.clone(),
                other => other.to_string(),
            };
            return format!("the adapter named by {env}={wanted} is not usable ({detail})");
        }
        let adapters = self::wgpu::report().adapters;
        let hardware = |t: &str| matches!(t, "DiscreteGpu" | "IntegratedGpu" | "VirtualGpu");
        if adapters.is_empty() {
            return "no GPU found (no Vulkan, Metal or DX12 adapter)".into();
        }
        if !adapters.iter().any(|a| hardware(&a.device_type)) {
            let names = adapters.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ");
            return format!(
                "no hardware GPU found (only the software adapter {names}, which is used only when \
                 named: {env}=llvmpipe)"
            );
        }
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = e;
        return "this build has no GPU support (built without the `gpu` feature)".into();
    }
    #[allow(unreachable_code)]
    match e {
        Error::Device(m) => format!("the GPU could not be opened ({m})"),
        other => format!("the GPU could not be opened ({other})"),
    }
}

/// The GPU adapters this process can see, their limits and features, and which one device
/// 'gpu' uses and why (for `resnet-wgpu info`).
pub fn adapters_info() -> String {
    #[cfg(feature = "gpu")]
    return self::wgpu::report().to_string();
    #[cfg(not(feature = "gpu"))]
    return "GPU support: not built (the `gpu` feature is off); device 'auto' uses the CPU".to_string();
}

/// Whether `device` can train and infer in precision 'mixed' (f16 GEMM operands); the error says
/// what it lacks.
pub fn check_mixed_precision(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Err(Error::invalid(
            "precision 'mixed' needs a GPU (f16 operands on tensor cores or in f16 shaders); \
             the CPU backend computes in fp32: use precision 'fp32' or device 'gpu'",
        )),
        #[cfg(feature = "gpu")]
        Device::Gpu => self::wgpu::check_mixed_precision(),
    }
}

/// Which GPU adapter device 'gpu' takes, by index (see `wgpu::prefer_adapter`); before first use.
pub fn prefer_gpu_adapter(index: usize) -> Result<()> {
    #[cfg(feature = "gpu")]
    return self::wgpu::prefer_adapter(index);
    #[cfg(not(feature = "gpu"))]
    return Err(Error::invalid(format!(
        "cannot choose GPU adapter {index}: this build has no GPU support"
    )));
}

/// How many threads the CPU backend computes with (rayon's global pool). Must come before any
/// CPU work; data-parallel ranks on one machine split its cores this way.
pub fn set_cpu_threads(threads: usize) -> Result<()> {
    if threads == 0 {
        return Err(Error::invalid("the CPU thread count must be at least 1"));
    }
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build_global() {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == threads => Ok(()),
        Err(_) => Err(Error::invalid(format!(
            "the CPU already computes with {} threads (set the count before the first CPU work): cannot make it {threads}",
            rayon::current_num_threads()
        ))),
    }
}

/// (bytes the GPU buffer pool holds now, most it has held), or None before the GPU is used.
pub fn gpu_memory_stats() -> Option<(u64, u64)> {
    #[cfg(feature = "gpu")]
    return self::wgpu::memory_stats().map(|m| (m.reserved, m.peak_reserved));
    #[cfg(not(feature = "gpu"))]
    return None;
}

/// Memory new tensors on `device` can still have, and what limits it (for the estimates' error
/// messages): on the CPU the host's available memory (see [`crate::memory::host_available`]) plus
/// the buffer pool's cached buffers; on the GPU see `wgpu::available_memory`. None where nothing
/// is known: then only the allocations themselves can fail (as Errors).
pub fn available_memory(device: Device) -> Option<crate::memory::Available> {
    match device {
        Device::Cpu => crate::memory::host_available().map(|a| a.plus(cpu::cached_bytes())),
        #[cfg(feature = "gpu")]
        Device::Gpu => self::wgpu::available_memory(),
    }
}

/// The largest single tensor `device` can hold, in bytes, and the name of the limit (the GPU's
/// binding and buffer limits); None where there is no such limit (the CPU).
pub fn max_tensor_bytes(device: Device) -> Option<(u64, &'static str)> {
    match device {
        Device::Cpu => None,
        #[cfg(feature = "gpu")]
        Device::Gpu => self::wgpu::max_tensor_bytes(),
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            #[cfg(feature = "gpu")]
            Device::Gpu => write!(f, "gpu"),
        }
    }
}

/// Device-resident f32 storage, shared cheaply: cloning bumps a reference count. Integer data
/// (labels) is stored as f32 too: exact for every class index a classifier can have (< 2^24),
/// and it keeps one storage type per device.
#[derive(Clone)]
pub enum Storage {
    Cpu(cpu::CpuStorage),
    #[cfg(feature = "gpu")]
    Gpu(self::wgpu::GpuStorage),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => Device::Gpu,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            #[cfg(feature = "gpu")]
            Storage::Gpu(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Storage({}, {} floats)", self.device(), self.len())
    }
}

/// Hyper-parameters of one SGD update, already resolved for this step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// PyTorch seeds the momentum buffer with the first gradient instead of decaying from zero.
    pub first_step: bool,
    /// What the gradient is multiplied by first: 1 / the loss scale in mixed precision (a power
    /// of two, so exact), 1 otherwise (and then the gradient is used as it is).
    pub grad_scale: f32,
}

/// Batch-norm statistics of one training forward pass, saved for backward.
pub struct BatchStats {
    pub mean: Storage,
    /// Biased variance, as normalisation uses; kept so running statistics lose no precision.
    pub var: Storage,
    pub invstd: Storage,
}

/// Elementwise activations that share one forward/backward kernel shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
}

/// Where batch norm's mean and variance come from, which decides its backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsSource {
    /// The batch's own statistics: they depend on x, and backward differentiates through them.
    Batch,
    /// The running statistics: constants to backward.
    Running,
}

/// How the running statistics take in one batch's (PyTorch's convention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunningStatsUpdate {
    /// running = (1 - momentum) * running + momentum * batch.
    pub momentum: f32,
    /// Values per channel in the batch: the variance is unbiased by count / (count - 1).
    pub count: usize,
}

/// The kernels a device must provide, in families. Shapes are checked by the caller (the
/// autograd layer, `ops.rs`); a backend may assume lengths agree with the geometry it is given.
pub trait Backend: Send + Sync {
    fn device(&self) -> Device;

    // Storage: the only host <-> device copies.
    fn upload(&self, data: &[f32]) -> Result<Storage>;
    fn download(&self, s: &Storage) -> Result<Vec<f32>>;
    /// Several storages in one round trip (a step's scalars): on a GPU every download waits for
    /// the queue, so they are read together. On the host a copy each is already the cheapest.
    fn download_many(&self, s: &[&Storage]) -> Result<Vec<Vec<f32>>> {
        s.iter().map(|s| self.download(s)).collect()
    }
    fn zeros(&self, len: usize) -> Result<Storage>;

    // Elementwise: same-length operands, one output value per input value.
    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage>;
    /// `y = act(a + b)`: the residual join, fused.
    fn add_activation(&self, a: &Storage, b: &Storage, act: Activation) -> Result<Storage>;
    fn scale(&self, a: &Storage, alpha: f32) -> Result<Storage>;
    fn activation(&self, x: &Storage, act: Activation) -> Result<Storage>;
    /// Gradient through an activation, from its output `y` (all three are functions of y).
    fn activation_backward(&self, y: &Storage, gy: &Storage, act: Activation) -> Result<Storage>;

    // Convolution: NCHW input, OIHW weight, every size in `ConvGeometry`.
    fn conv2d(&self, x: &Storage, w: &Storage, bias: Option<&Storage>, g: &ConvGeometry) -> Result<Storage>;
    /// `act(conv2d(x, w, bias) [+ residual])` for inference (nothing is kept for backward):
    /// with batch norm folded into `w` and `bias`, one call is a whole conv-BN-act(-add) chain.
    /// `residual` has the output's shape; `act` None means none. This default composes the
    /// unfused kernels; a backend overrides it to apply the bias, the addition and the activation
    /// while each output block is still in cache.
    fn conv2d_fused(
        &self,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
        residual: Option<&Storage>,
        act: Option<Activation>,
        g: &ConvGeometry,
    ) -> Result<Storage> {
        let y = self.conv2d(x, w, bias, g)?;
        self.unfused_epilogue(y, residual, act)
    }
    /// What `conv2d_fused` does after the convolution, as separate kernels: the residual added,
    /// then the activation (for backends, or shapes, whose convolution cannot apply them itself).
    fn unfused_epilogue(&self, y: Storage, residual: Option<&Storage>, act: Option<Activation>) -> Result<Storage> {
        match (residual, act) {
            (_, Some(act)) => self.epilogue(y, residual, act),
            (Some(r), None) => self.add(&y, r),
            (None, None) => Ok(y),
        }
    }
    fn conv2d_backward_data(&self, gy: &Storage, w: &Storage, g: &ConvGeometry) -> Result<Storage>;
    fn conv2d_backward_weight(&self, x: &Storage, gy: &Storage, g: &ConvGeometry) -> Result<Storage>;
    /// Sum of an NCHW tensor over N, H and W: the bias gradient.
    fn sum_nhw(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage>;

    // Batch norm: per channel of an NCHW tensor; statistics saved for backward in `BatchStats`.
    /// Normalises with the batch's own statistics (biased variance), saved for backward.
    fn batch_norm_train(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
    ) -> Result<(Storage, BatchStats)>;
    /// Statistics for eval mode: the running mean and 1/sqrt(running_var + eps).
    fn batch_norm_frozen_stats(&self, running_mean: &Storage, running_var: &Storage, eps: f32) -> Result<BatchStats>;
    /// y = (x - mean) * invstd * gamma + beta
    fn batch_norm_apply(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
    ) -> Result<Storage>;
    /// Returns (dx, dgamma, dbeta); `source` says whether the statistics depend on x.
    fn batch_norm_backward(
        &self,
        x: &Storage,
        gy: &Storage,
        gamma: &Storage,
        stats: &BatchStats,
        layout: &ChannelLayout,
        source: StatsSource,
    ) -> Result<(Storage, Storage, Storage)>;
    /// `act(batch_norm_train(x) [+ residual])`: what a ResNet runs after most convolutions. A
    /// backend may fuse it into one pass (the CPU does); by default it is the separate kernels.
    #[allow(clippy::too_many_arguments)]
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
        let (y, stats) = self.batch_norm_train(x, gamma, beta, layout, eps)?;
        Ok((self.epilogue(y, residual, act)?, stats))
    }
    /// A training step's batch norm: `batch_norm_train` (`batch_norm_train_act` with an
    /// `epilogue`), then `update_running_stats` from the statistics it computed. A backend may
    /// update the running statistics in the pass that finishes the batch's (the GPU does).
    #[allow(clippy::too_many_arguments)]
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
        let (y, stats) = match epilogue {
            Some((residual, act)) => self.batch_norm_train_act(x, gamma, beta, layout, eps, residual, act)?,
            None => self.batch_norm_train(x, gamma, beta, layout, eps)?,
        };
        self.update_running_stats(running_mean, running_var, &stats, update)?;
        Ok((y, stats))
    }
    /// `act(batch_norm_apply(x) [+ residual])`, fusable as `batch_norm_train_act`.
    #[allow(clippy::too_many_arguments)]
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
        let y = self.batch_norm_apply(x, gamma, beta, stats, layout)?;
        self.epilogue(y, residual, act)
    }
    /// The residual add and activation after batch norm, as separate kernels.
    fn epilogue(&self, y: Storage, residual: Option<&Storage>, act: Activation) -> Result<Storage> {
        match residual {
            Some(r) => self.add_activation(&y, r, act),
            None => self.activation(&y, act),
        }
    }
    /// `batch_norm_backward` of `out = act(batch_norm(x))` given d(loss)/d(out): the activation's
    /// backward first, which a backend may fuse into batch norm's passes (the CPU does).
    #[allow(clippy::too_many_arguments)]
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
        let g = self.activation_backward(out, gy, act)?;
        self.batch_norm_backward(x, &g, gamma, stats, layout, source)
    }
    /// Folds a batch's statistics into the running ones, with the unbiased variance as PyTorch.
    fn update_running_stats(
        &self,
        running_mean: &mut Storage,
        running_var: &mut Storage,
        stats: &BatchStats,
        update: &RunningStatsUpdate,
    ) -> Result<()>;

    // Pooling: max pooling over windows, global average pooling over whole feature maps.
    fn max_pool2d(&self, x: &Storage, g: &PoolGeometry) -> Result<Storage>;
    fn max_pool2d_backward(&self, x: &Storage, gy: &Storage, g: &PoolGeometry) -> Result<Storage>;
    /// [N, C, HW] -> [N, C]
    fn global_avg_pool(&self, x: &Storage, layout: &ChannelLayout) -> Result<Storage>;
    fn global_avg_pool_backward(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage>;

    // Dense: row-major matrices.
    fn matmul(&self, a: &Storage, b: &Storage, g: &MatmulGeometry) -> Result<Storage>;
    /// x[rows, cols] + bias[cols], `cols` being the bias's length.
    fn add_row_bias(&self, x: &Storage, bias: &Storage) -> Result<Storage>;
    /// Column sums of x[rows, cols] -> [cols]
    fn sum_rows(&self, x: &Storage, layout: &RowLayout) -> Result<Storage>;

    // Loss and metrics: softmax cross-entropy over logits [n, classes], labels as f32 indices.
    /// Returns (per-sample losses [n], softmax probabilities [n, classes]).
    fn cross_entropy(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout) -> Result<(Storage, Storage)>;
    /// d(upstream[0] * scale * sum of losses)/d logits = upstream[0] * scale * (probs - onehot).
    /// `upstream` stays on the device: no readback in the middle of backward.
    fn cross_entropy_backward(
        &self,
        probs: &Storage,
        labels: &Storage,
        upstream: &Storage,
        layout: &LogitsLayout,
        scale: f32,
    ) -> Result<Storage>;
    /// Per-sample indicator (1.0/0.0) that the label is among the top `k` logits.
    fn topk_correct(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout, k: usize) -> Result<Storage>;
    /// Sum of all elements, as a 1-element storage (stays on the device).
    fn sum_all(&self, x: &Storage) -> Result<Storage>;
    /// Mixed precision's overflow check of a step's gradients, one value: 0 when every value of
    /// every tensor is finite, else one of their infs or NaNs (GradScaler checks each value, too).
    fn nonfinite_check(&self, tensors: &[Storage]) -> Result<Storage>;

    // Shortcut: the paper's parameter-free option A (subsample, zero-pad channels).
    fn shortcut_a(&self, x: &Storage, g: &ShortcutGeometry) -> Result<Storage>;
    fn shortcut_a_backward(&self, gy: &Storage, g: &ShortcutGeometry) -> Result<Storage>;

    // Optimiser: in place, fused (weight decay, momentum, Nesterov, step).
    fn sgd_update(&self, param: &mut Storage, grad: &Storage, momentum_buf: &mut Storage, step: &SgdStep)
        -> Result<()>;
    /// `sgd_update` of a mixed-precision step decided on the device: nothing changes when the
    /// gate's check is inf or NaN; otherwise the gradient is multiplied by the gate's 1 / scale
    /// and the rate is the gate's `lrs[applied]` (`step.lr` and `step.grad_scale` are not used).
    fn sgd_update_gated(
        &self,
        param: &mut Storage,
        grad: &Storage,
        momentum_buf: &mut Storage,
        step: &SgdStep,
        gate: &ScalerGate,
    ) -> Result<()>;
    /// `LossScaler::update` on the device: from the check of this step's gradients, halves or
    /// grows `scale` (1 value) and updates `state` (`[1 / scale, clean steps, applied steps]`).
    fn loss_scale_update(
        &self,
        scale: &mut Storage,
        state: &mut Storage,
        check: &Storage,
        rule: &ScaleRule,
    ) -> Result<()>;
}

/// One step of dynamic loss scaling as `LossScaler::update` takes it, on the device's copy of
/// the scaler: `(scale, 1 / scale, clean steps, applied steps)` after a step whose gradients were
/// `finite` or not. Every scale is a power of two, so halving and doubling are exact and the
/// reciprocal never needs a division.
pub fn scaled_step(
    scale: f32,
    inv: f32,
    clean: f32,
    applied: f32,
    finite: bool,
    rule: &ScaleRule,
) -> (f32, f32, f32, f32) {
    if !finite {
        return (
            (scale * 0.5).max(rule.min_scale),
            (inv * 2.0).min(1.0 / rule.min_scale),
            0.0,
            applied,
        );
    }
    let clean = clean + 1.0;
    if clean >= rule.growth_interval as f32 {
        return (
            (scale * 2.0).min(rule.max_scale),
            (inv * 0.5).max(1.0 / rule.max_scale),
            0.0,
            applied + 1.0,
        );
    }
    (scale, inv, clean, applied + 1.0)
}

/// What a gated SGD update reads on the device (see [`Backend::sgd_update_gated`]).
pub struct ScalerGate<'a> {
    /// The step's overflow check (`Backend::nonfinite_check`): finite exactly when the step is applied.
    pub check: &'a Storage,
    /// The loss scaler's `[1 / scale, clean steps, applied steps]`; applied steps count the
    /// steps applied since the host last read the scaler, and index `lrs`.
    pub state: &'a Storage,
    /// The rate of the step for each count of applied steps the device may have reached.
    pub lrs: &'a Storage,
}

/// The constants of dynamic loss scaling (`LossScaler`'s).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleRule {
    pub growth_interval: u32,
    pub min_scale: f32,
    pub max_scale: f32,
}

/// Checks that every storage handed to an op lives on one device; names the op when not.
pub fn same_device(op: &'static str, storages: &[&Storage]) -> Result<Device> {
    let first = storages
        .first()
        .ok_or_else(|| Error::Internal(format!("{op}: no inputs")))?
        .device();
    for s in storages.iter().skip(1) {
        if s.device() != first {
            return Err(Error::DeviceMismatch {
                op,
                a: first.to_string(),
                b: s.device().to_string(),
            });
        }
    }
    Ok(first)
}
