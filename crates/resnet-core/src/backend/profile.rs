//! Where a step's time goes: a `Backend` that wraps another and times every call, summing seconds
//! and calls per phase (convolution forward, its two gradients, batch norm, ...), so a benchmark
//! can set our breakdown beside PyTorch's profiler. Kernels are untouched: `Device::backend()`
//! hands out the wrapper only while profiling is on, and otherwise costs one relaxed atomic load.
//!
//! The profile is process-wide (the flag and the sums are statics): every thread's calls count.
//! Time outside the backend (autograd bookkeeping, the tape, dropping storages, the binding) is
//! the wall time since `start` less the phases: `PhaseProfile::other_seconds`.
//!
//! CPU only. GPU calls return once their work is queued and a download then waits for the whole
//! queue, so host-side timings would put kernel time in the wrong phase. GPU calls are therefore
//! passed through untimed and counted, and `take` refuses a profile that saw any.

use super::{
    Activation, Backend, BatchStats, ChannelLayout, ConvGeometry, Device, LogitsLayout, MatmulGeometry, PoolGeometry,
    RowLayout, RunningStatsUpdate, ScaleRule, ScalerGate, SgdStep, ShortcutGeometry, StatsSource, Storage,
};
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One part of a training step, as the benchmark reports it (PyTorch's ops map to the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    ConvForward,
    ConvDataGrad,
    /// The weight gradient, and a convolution bias's gradient (`sum_nhw`).
    ConvWeightGrad,
    /// Training statistics, applying them, eval-mode statistics and the running-statistics update.
    BnForward,
    BnBackward,
    /// Adds, activations, scaling, the option-A shortcut, and their gradients.
    Elementwise,
    Pooling,
    /// Cross entropy forward and backward, the loss sum and top-k hits.
    Loss,
    /// The classifier: matmul, row bias, column sums.
    Linear,
    Optimizer,
    /// Host <-> device copies and zero-filled storages.
    AllocCopy,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::ConvForward,
        Phase::ConvDataGrad,
        Phase::ConvWeightGrad,
        Phase::BnForward,
        Phase::BnBackward,
        Phase::Elementwise,
        Phase::Pooling,
        Phase::Loss,
        Phase::Linear,
        Phase::Optimizer,
        Phase::AllocCopy,
    ];

    /// The name shared with `scripts/torch_cpu_bench.py`'s grouping of PyTorch's ops.
    pub fn name(self) -> &'static str {
        match self {
            Phase::ConvForward => "conv forward",
            Phase::ConvDataGrad => "conv data grad",
            Phase::ConvWeightGrad => "conv weight grad",
            Phase::BnForward => "bn forward",
            Phase::BnBackward => "bn backward",
            Phase::Elementwise => "elementwise",
            Phase::Pooling => "pooling",
            Phase::Loss => "loss",
            Phase::Linear => "linear",
            Phase::Optimizer => "optimizer",
            Phase::AllocCopy => "alloc/copy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Seconds and calls of one phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseTime {
    pub phase: Phase,
    pub seconds: f64,
    pub calls: u64,
}

/// What `take` returns: every phase (in `Phase::ALL` order, zero ones included) and the wall time
/// the profile covered.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseProfile {
    pub wall_seconds: f64,
    pub phases: Vec<PhaseTime>,
}

impl PhaseProfile {
    pub fn get(&self, phase: Phase) -> PhaseTime {
        self.phases[phase.index()]
    }

    pub fn phase_seconds(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }

    /// Wall time outside the backend's calls; clamped at 0 because calls made on several threads
    /// at once can add up to more than the wall time.
    pub fn other_seconds(&self) -> f64 {
        (self.wall_seconds - self.phase_seconds()).max(0.0)
    }
}

const PHASES: usize = Phase::ALL.len();

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];
static CALLS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];
static UNTIMED_CALLS: AtomicU64 = AtomicU64::new(0);

/// Wall time of the profile: `since` while it runs, banked by `stop` for `take`.
struct Clock {
    since: Option<Instant>,
    banked: Duration,
}

static CLOCK: Mutex<Clock> = Mutex::new(Clock {
    since: None,
    banked: Duration::ZERO,
});

fn clock() -> std::sync::MutexGuard<'static, Clock> {
    // The clock holds plain values only: a panic elsewhere cannot leave it inconsistent.
    CLOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn reset_sums() {
    for a in NANOS.iter().chain(CALLS.iter()) {
        a.store(0, Ordering::Relaxed);
    }
    UNTIMED_CALLS.store(0, Ordering::Relaxed);
}

/// Starts a fresh profile (earlier sums are dropped) and routes backend calls through the timer.
pub fn start() {
    let mut c = clock();
    reset_sums();
    c.banked = Duration::ZERO;
    c.since = Some(Instant::now());
    ON.store(true, Ordering::SeqCst);
}

/// Stops timing; the sums stay until `take` or the next `start`.
pub fn stop() {
    let mut c = clock();
    ON.store(false, Ordering::SeqCst);
    if let Some(t) = c.since.take() {
        c.banked += t.elapsed();
    }
}

/// Whether backend calls are being timed now.
pub fn is_on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Stops timing and returns the profile, clearing the sums. An Error if GPU calls were made while
/// it ran (see the module's documentation): their time would be misattributed.
pub fn take() -> Result<PhaseProfile> {
    stop();
    let mut c = clock();
    let wall_seconds = std::mem::take(&mut c.banked).as_secs_f64();
    let phases = Phase::ALL
        .iter()
        .map(|&phase| PhaseTime {
            phase,
            seconds: NANOS[phase.index()].load(Ordering::Relaxed) as f64 * 1e-9,
            calls: CALLS[phase.index()].load(Ordering::Relaxed),
        })
        .collect();
    let untimed = UNTIMED_CALLS.load(Ordering::Relaxed);
    reset_sums();
    if untimed > 0 {
        return Err(Error::invalid(format!(
            "the phase profile saw {untimed} GPU backend calls: it times the CPU backend only (GPU work \
             is asynchronous, so host-side timings would measure submission, not the kernels); profile \
             a model on device 'cpu'"
        )));
    }
    Ok(PhaseProfile { wall_seconds, phases })
}

/// A backend whose every call is timed into its phase; `Device::backend` hands these out.
pub(super) struct Profiled {
    inner: &'static dyn Backend,
}

static CPU: Profiled = Profiled {
    inner: &super::cpu::CpuBackend,
};
#[cfg(feature = "gpu")]
static GPU: Profiled = Profiled {
    inner: &super::wgpu::WgpuBackend,
};

/// The timing wrapper around `device`'s backend.
pub(super) fn wrapped(device: Device) -> &'static dyn Backend {
    match device {
        Device::Cpu => &CPU,
        #[cfg(feature = "gpu")]
        Device::Gpu => &GPU,
    }
}

/// Whether `backend` is one of the timing wrappers (the tests check the switch with it).
pub fn is_wrapper(backend: &dyn Backend) -> bool {
    let addr = backend as *const dyn Backend as *const u8;
    #[cfg(feature = "gpu")]
    if std::ptr::eq(addr, &GPU as *const Profiled as *const u8) {
        return true;
    }
    std::ptr::eq(addr, &CPU as *const Profiled as *const u8)
}

impl Profiled {
    fn time<T>(&self, phase: Phase, call: impl FnOnce() -> T) -> T {
        if self.inner.device() != Device::Cpu {
            UNTIMED_CALLS.fetch_add(1, Ordering::Relaxed);
            return call();
        }
        let t = Instant::now();
        let out = call();
        let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        NANOS[phase.index()].fetch_add(ns, Ordering::Relaxed);
        CALLS[phase.index()].fetch_add(1, Ordering::Relaxed);
        out
    }
}

// Every method delegates, those with a default body included, so the inner backend's own
// override (one round trip for `download_many` on the GPU) is the one that runs.
impl Backend for Profiled {
    fn device(&self) -> Device {
        self.inner.device()
    }

    fn upload(&self, data: &[f32]) -> Result<Storage> {
        self.time(Phase::AllocCopy, || self.inner.upload(data))
    }

    fn download(&self, s: &Storage) -> Result<Vec<f32>> {
        self.time(Phase::AllocCopy, || self.inner.download(s))
    }

    fn download_many(&self, s: &[&Storage]) -> Result<Vec<Vec<f32>>> {
        self.time(Phase::AllocCopy, || self.inner.download_many(s))
    }

    fn zeros(&self, len: usize) -> Result<Storage> {
        self.time(Phase::AllocCopy, || self.inner.zeros(len))
    }

    fn add(&self, a: &Storage, b: &Storage) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.add(a, b))
    }

    fn add_activation(&self, a: &Storage, b: &Storage, act: Activation) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.add_activation(a, b, act))
    }

    fn scale(&self, a: &Storage, alpha: f32) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.scale(a, alpha))
    }

    fn activation(&self, x: &Storage, act: Activation) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.activation(x, act))
    }

    fn activation_backward(&self, y: &Storage, gy: &Storage, act: Activation) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.activation_backward(y, gy, act))
    }

    fn conv2d(&self, x: &Storage, w: &Storage, bias: Option<&Storage>, g: &ConvGeometry) -> Result<Storage> {
        self.time(Phase::ConvForward, || self.inner.conv2d(x, w, bias, g))
    }

    fn conv2d_backward_data(&self, gy: &Storage, w: &Storage, g: &ConvGeometry) -> Result<Storage> {
        self.time(Phase::ConvDataGrad, || self.inner.conv2d_backward_data(gy, w, g))
    }

    fn conv2d_backward_weight(&self, x: &Storage, gy: &Storage, g: &ConvGeometry) -> Result<Storage> {
        self.time(Phase::ConvWeightGrad, || self.inner.conv2d_backward_weight(x, gy, g))
    }

    fn sum_nhw(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        self.time(Phase::ConvWeightGrad, || self.inner.sum_nhw(gy, layout))
    }

    fn batch_norm_train(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
    ) -> Result<(Storage, BatchStats)> {
        self.time(Phase::BnForward, || {
            self.inner.batch_norm_train(x, gamma, beta, layout, eps)
        })
    }

    fn batch_norm_frozen_stats(&self, running_mean: &Storage, running_var: &Storage, eps: f32) -> Result<BatchStats> {
        self.time(Phase::BnForward, || {
            self.inner.batch_norm_frozen_stats(running_mean, running_var, eps)
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
        self.time(Phase::BnForward, || {
            self.inner.batch_norm_apply(x, gamma, beta, stats, layout)
        })
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
        self.time(Phase::BnBackward, || {
            self.inner.batch_norm_backward(x, gy, gamma, stats, layout, source)
        })
    }

    // Inference's convolution with batch norm folded in and its epilogue: conv forward.
    fn conv2d_fused(
        &self,
        x: &Storage,
        w: &Storage,
        bias: Option<&Storage>,
        residual: Option<&Storage>,
        act: Option<Activation>,
        g: &ConvGeometry,
    ) -> Result<Storage> {
        self.time(Phase::ConvForward, || {
            self.inner.conv2d_fused(x, w, bias, residual, act, g)
        })
    }

    // The fused batch-norm kernels count as batch norm: the activation they absorb is a few
    // percent of their pass.
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
        self.time(Phase::BnForward, || {
            self.inner
                .batch_norm_train_act(x, gamma, beta, layout, eps, residual, act)
        })
    }

    fn batch_norm_train_running(
        &self,
        x: &Storage,
        gamma: &Storage,
        beta: &Storage,
        layout: &ChannelLayout,
        eps: f32,
        epilogue: Option<(Option<&Storage>, Activation)>,
        running: (&mut Storage, &mut Storage),
        update: &RunningStatsUpdate,
    ) -> Result<(Storage, BatchStats)> {
        self.time(Phase::BnForward, || {
            self.inner
                .batch_norm_train_running(x, gamma, beta, layout, eps, epilogue, running, update)
        })
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
        self.time(Phase::BnForward, || {
            self.inner
                .batch_norm_apply_act(x, gamma, beta, stats, layout, residual, act)
        })
    }

    fn epilogue(&self, y: Storage, residual: Option<&Storage>, act: Activation) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.epilogue(y, residual, act))
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
        self.time(Phase::BnBackward, || {
            self.inner
                .batch_norm_act_backward(x, out, gy, gamma, stats, layout, source, act)
        })
    }

    fn update_running_stats(
        &self,
        running_mean: &mut Storage,
        running_var: &mut Storage,
        stats: &BatchStats,
        update: &RunningStatsUpdate,
    ) -> Result<()> {
        self.time(Phase::BnForward, || {
            self.inner
                .update_running_stats(running_mean, running_var, stats, update)
        })
    }

    fn max_pool2d(&self, x: &Storage, g: &PoolGeometry) -> Result<Storage> {
        self.time(Phase::Pooling, || self.inner.max_pool2d(x, g))
    }

    fn max_pool2d_backward(&self, x: &Storage, gy: &Storage, g: &PoolGeometry) -> Result<Storage> {
        self.time(Phase::Pooling, || self.inner.max_pool2d_backward(x, gy, g))
    }

    fn global_avg_pool(&self, x: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        self.time(Phase::Pooling, || self.inner.global_avg_pool(x, layout))
    }

    fn global_avg_pool_backward(&self, gy: &Storage, layout: &ChannelLayout) -> Result<Storage> {
        self.time(Phase::Pooling, || self.inner.global_avg_pool_backward(gy, layout))
    }

    fn matmul(&self, a: &Storage, b: &Storage, g: &MatmulGeometry) -> Result<Storage> {
        self.time(Phase::Linear, || self.inner.matmul(a, b, g))
    }

    fn add_row_bias(&self, x: &Storage, bias: &Storage) -> Result<Storage> {
        self.time(Phase::Linear, || self.inner.add_row_bias(x, bias))
    }

    fn sum_rows(&self, x: &Storage, layout: &RowLayout) -> Result<Storage> {
        self.time(Phase::Linear, || self.inner.sum_rows(x, layout))
    }

    fn cross_entropy(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout) -> Result<(Storage, Storage)> {
        self.time(Phase::Loss, || self.inner.cross_entropy(logits, labels, layout))
    }

    fn cross_entropy_backward(
        &self,
        probs: &Storage,
        labels: &Storage,
        upstream: &Storage,
        layout: &LogitsLayout,
        scale: f32,
    ) -> Result<Storage> {
        self.time(Phase::Loss, || {
            self.inner
                .cross_entropy_backward(probs, labels, upstream, layout, scale)
        })
    }

    fn topk_correct(&self, logits: &Storage, labels: &Storage, layout: &LogitsLayout, k: usize) -> Result<Storage> {
        self.time(Phase::Loss, || self.inner.topk_correct(logits, labels, layout, k))
    }

    fn sum_all(&self, x: &Storage) -> Result<Storage> {
        self.time(Phase::Loss, || self.inner.sum_all(x))
    }

    fn nonfinite_check(&self, tensors: &[Storage]) -> Result<Storage> {
        self.time(Phase::Optimizer, || self.inner.nonfinite_check(tensors))
    }

    fn shortcut_a(&self, x: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.shortcut_a(x, g))
    }

    fn shortcut_a_backward(&self, gy: &Storage, g: &ShortcutGeometry) -> Result<Storage> {
        self.time(Phase::Elementwise, || self.inner.shortcut_a_backward(gy, g))
    }

    fn sgd_update(
        &self,
        param: &mut Storage,
        grad: &Storage,
        momentum_buf: &mut Storage,
        step: &SgdStep,
    ) -> Result<()> {
        self.time(Phase::Optimizer, || {
            self.inner.sgd_update(param, grad, momentum_buf, step)
        })
    }

    fn sgd_update_gated(
        &self,
        param: &mut Storage,
        grad: &Storage,
        momentum_buf: &mut Storage,
        step: &SgdStep,
        gate: &ScalerGate,
    ) -> Result<()> {
        self.time(Phase::Optimizer, || {
            self.inner.sgd_update_gated(param, grad, momentum_buf, step, gate)
        })
    }

    fn loss_scale_update(
        &self,
        scale: &mut Storage,
        state: &mut Storage,
        check: &Storage,
        rule: &ScaleRule,
    ) -> Result<()> {
        self.time(Phase::Optimizer, || {
            self.inner.loss_scale_update(scale, state, check, rule)
        })
    }
}
