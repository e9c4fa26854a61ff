//! Launchers of batch_norm.wgsl: batch statistics in two passes (partial sums per chunk and
//! channel, then per channel), the affine apply, the backward pass, frozen statistics and the
//! running-statistics update. The apply may finish with a residual add and an activation, and
//! the backward pass may then start from the activation's output gradient (one pass each
//! instead of two: a ResNet's batch norms are nearly all followed by a ReLU).

use super::elementwise::{fused_act_code, Epilogue};
use super::reduce::chunks;
use super::{output, read, read_write, to_u32, uniform, Family, CHUNK, ITEMS, WG};
use crate::backend::wgpu::context::GpuContext;
use crate::backend::wgpu::pool::GpuStorage;
use crate::backend::{Activation, ChannelLayout};
use crate::error::{Error, Result};

uniform! {
    pub struct BatchNormParams {
        c: u32,
        hw: u32,
        /// N * HW values per channel.
        count: u32,
        chunks: u32,
        /// N * C * HW.
        len: u32,
        /// Backward: whether the statistics came from the batch (their gradient flows).
        batch_statistics: u32,
        eps: f32,
        momentum: f32,
        /// count / (count - 1): the running variance is the unbiased one (PyTorch).
        unbias: f32,
        /// The fused activation: 0 none, else 1 + its code (`fused_act_code`).
        act: u32,
        /// Whether `apply` adds `residual` before the activation.
        residual: u32,
    }
}

pub(super) static BATCH_NORM: Family<BatchNormParams> = Family::new(
    "batch_norm",
    &[("WG", WG), ("ITEMS", ITEMS), ("CHUNK", CHUNK)],
    &[
        read("x"),
        read("gy"),
        read("gamma"),
        read("beta"),
        // Added to apply's output before the activation.
        read("residual"),
        // The fused activation's output, for backward.
        read("out"),
        read_write("mean"),
        read_write("var_"),
        read_write("invstd"),
        // [chunks, 2, C]
        read_write("partial"),
        read_write("y"),
        read_write("dgamma"),
        read_write("dbeta"),
        read_write("running_mean"),
        read_write("running_var"),
    ],
    &[
        super::PRELUDE,
        super::GRID,
        super::ACTIVATION,
        include_str!("batch_norm.wgsl"),
    ],
);

/// The parameters every entry reads for tensor shape `s` in `chunks` chunks a channel.
fn shape_params(s: ChannelLayout, chunks: usize) -> Result<BatchNormParams> {
    Ok(BatchNormParams {
        c: to_u32(s.c)?,
        hw: to_u32(s.hw)?,
        count: to_u32(s.n * s.hw)?,
        chunks: to_u32(chunks)?,
        len: to_u32(s.len())?,
        ..BatchNormParams::default()
    })
}

/// First pass of a two-pass channel reduction: `entry` sums each of `chunks` chunks of every
/// channel (a workgroup each) into a fresh `partial` of [chunks, 2, C].
fn partial_sums(
    ctx: &GpuContext,
    entry: &'static str,
    p: &BatchNormParams,
    inputs: &[(&str, &GpuStorage)],
    chunks: usize,
) -> Result<GpuStorage> {
    let c = p.c as usize;
    let partial = output(ctx, chunks * 2 * c)?;
    let mut buffers = inputs.to_vec();
    buffers.push(("partial", &partial));
    BATCH_NORM.launch(ctx, entry, p, &buffers, (chunks * c) as u64)?;
    Ok(partial)
}

/// Per-channel statistics on the GPU.
pub struct Stats {
    pub mean: GpuStorage,
    pub var: GpuStorage,
    pub invstd: GpuStorage,
}

/// The running statistics a training step's batch norm updates, in place, with the statistics
/// it computes: `running = (1 - momentum) * running + momentum * batch`, the variance unbiased
/// over the `count` values a channel had.
pub struct RunningUpdate<'a> {
    pub mean: &'a GpuStorage,
    pub var: &'a GpuStorage,
    pub momentum: f32,
    pub count: usize,
}

fn unbias(count: usize) -> f32 {
    count as f32 / (count.max(2) - 1) as f32
}

/// Normalises `x` with its own (biased) batch statistics and applies `epilogue`; returns the
/// output and the statistics. With `running`, the pass that finishes the statistics updates
/// the running ones too.
pub fn train(
    ctx: &GpuContext,
    x: &GpuStorage,
    (gamma, beta): (&GpuStorage, &GpuStorage),
    s: ChannelLayout,
    eps: f32,
    epilogue: Epilogue,
    running: Option<RunningUpdate>,
) -> Result<(GpuStorage, Stats)> {
    let chunks = chunks(s.n * s.hw);
    let p = BatchNormParams {
        batch_statistics: 1,
        eps,
        unbias: running.as_ref().map_or(1.0, |r| unbias(r.count)),
        momentum: running.as_ref().map_or(0.0, |r| r.momentum),
        ..shape_params(s, chunks)?
    };
    let partial = partial_sums(ctx, "stats_partial", &p, &[("x", x)], chunks)?;
    let stats = Stats {
        mean: output(ctx, s.c)?,
        var: output(ctx, s.c)?,
        invstd: output(ctx, s.c)?,
    };
    let mut buffers = vec![
        ("x", x),
        ("mean", &stats.mean),
        ("var_", &stats.var),
        ("invstd", &stats.invstd),
        ("partial", &partial),
    ];
    let entry = match &running {
        Some(r) => {
            buffers.extend([("running_mean", r.mean), ("running_var", r.var)]);
            "stats_finalize_running"
        }
        None => "stats_finalize",
    };
    BATCH_NORM.launch_each(ctx, entry, &p, &buffers, s.c)?;
    let y = apply_with(ctx, &p, x, (gamma, beta), (&stats.mean, &stats.invstd), epilogue)?;
    Ok((y, stats))
}

/// `1 / sqrt(running_var + eps)`, for normalising with frozen statistics.
pub fn frozen_invstd(ctx: &GpuContext, running_var: &GpuStorage, eps: f32) -> Result<GpuStorage> {
    let c = running_var.len();
    let p = BatchNormParams {
        eps,
        unbias: 1.0,
        ..shape_params(ChannelLayout { n: 1, c, hw: 1 }, 1)?
    };
    BATCH_NORM.launch_into(ctx, "frozen_invstd", &p, &[("var_", running_var)], "invstd", c)
}

/// `y = (x - mean) * invstd * gamma + beta`, then `epilogue`.
pub fn apply(
    ctx: &GpuContext,
    x: &GpuStorage,
    (gamma, beta): (&GpuStorage, &GpuStorage),
    (mean, invstd): (&GpuStorage, &GpuStorage),
    s: ChannelLayout,
    epilogue: Epilogue,
) -> Result<GpuStorage> {
    let p = BatchNormParams {
        unbias: 1.0,
        ..shape_params(s, 1)?
    };
    apply_with(ctx, &p, x, (gamma, beta), (mean, invstd), epilogue)
}

fn apply_with(
    ctx: &GpuContext,
    p: &BatchNormParams,
    x: &GpuStorage,
    (gamma, beta): (&GpuStorage, &GpuStorage),
    (mean, invstd): (&GpuStorage, &GpuStorage),
    epilogue: Epilogue,
) -> Result<GpuStorage> {
    if let Some(r) = epilogue.residual.filter(|r| r.len() != x.len()) {
        return Err(Error::Internal(format!(
            "batch norm's residual has {} values for {} inputs",
            r.len(),
            x.len()
        )));
    }
    let p = BatchNormParams {
        act: fused_act_code(epilogue.act),
        residual: epilogue.residual.is_some() as u32,
        ..*p
    };
    // Every binding the kernel declares must be bound: without a residual, x stands in (unread).
    BATCH_NORM.launch_into(
        ctx,
        "apply",
        &p,
        &[
            ("x", x),
            ("gamma", gamma),
            ("beta", beta),
            ("mean", mean),
            ("invstd", invstd),
            ("residual", epilogue.residual.unwrap_or(x)),
        ],
        "y",
        p.len as usize,
    )
}

/// The gradients (dx, dgamma, dbeta); `batch_statistics` says whether mean and invstd came from
/// this batch (then their own gradient flows into dx). With `through`, the activation's output
/// and the activation: `gy` is then the gradient of that output, taken back through the
/// activation on the fly.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: &GpuContext,
    x: &GpuStorage,
    gy: &GpuStorage,
    gamma: &GpuStorage,
    mean: &GpuStorage,
    invstd: &GpuStorage,
    s: ChannelLayout,
    batch_statistics: bool,
    through: Option<(&GpuStorage, Activation)>,
) -> Result<(GpuStorage, GpuStorage, GpuStorage)> {
    if let Some((out, _)) = through.filter(|(out, _)| out.len() != gy.len()) {
        return Err(Error::Internal(format!(
            "batch norm's activation output has {} values for {} gradients",
            out.len(),
            gy.len()
        )));
    }
    let chunks = chunks(s.n * s.hw);
    let p = BatchNormParams {
        batch_statistics: batch_statistics as u32,
        unbias: 1.0,
        act: fused_act_code(through.map(|(_, act)| act)),
        ..shape_params(s, chunks)?
    };
    // Without an activation, gy stands in for its output (unread).
    let out = through.map_or(gy, |(out, _)| out);
    let inputs = [("x", x), ("gy", gy), ("out", out), ("mean", mean)];
    let partial = partial_sums(ctx, "backward_partial", &p, &inputs, chunks)?;
    let (dgamma, dbeta) = (output(ctx, s.c)?, output(ctx, s.c)?);
    BATCH_NORM.launch_each(
        ctx,
        "backward_finalize",
        &p,
        &[
            ("invstd", invstd),
            ("partial", &partial),
            ("dgamma", &dgamma),
            ("dbeta", &dbeta),
        ],
        s.c,
    )?;
    // dx goes out through `y`.
    let dx = BATCH_NORM.launch_into(
        ctx,
        "backward_dx",
        &p,
        &[
            ("x", x),
            ("gy", gy),
            ("out", out),
            ("gamma", gamma),
            ("mean", mean),
            ("invstd", invstd),
            ("dgamma", &dgamma),
            ("dbeta", &dbeta),
        ],
        "y",
        s.len(),
    )?;
    Ok((dx, dgamma, dbeta))
}

/// `running = (1 - momentum) * running + momentum * batch`, in place, the variance unbiased
/// over the `count` values a channel had.
pub fn update_running(
    ctx: &GpuContext,
    running_mean: &GpuStorage,
    running_var: &GpuStorage,
    batch: (&GpuStorage, &GpuStorage),
    momentum: f32,
    count: usize,
) -> Result<()> {
    let c = running_mean.len();
    let p = BatchNormParams {
        count: to_u32(count)?,
        batch_statistics: 1,
        momentum,
        unbias: unbias(count),
        ..shape_params(ChannelLayout { n: 1, c, hw: 1 }, 1)?
    };
    BATCH_NORM.launch_each(
        ctx,
        "running_update",
        &p,
        &[
            ("mean", batch.0),
            ("var_", batch.1),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
        c,
    )
}
