//! Synchronised batch norm: the statistics of the global batch (every rank's samples), so N ranks
//! of batch b normalise exactly as one process of batch N*b would.
//!
//! Built from the backend's ordinary batch-norm kernels plus one collective each way, so every
//! backend gets it for free: forward all-gathers each rank's (count, mean, biased variance) and
//! combines them in rank order (Chan et al.'s pairwise formula, f64), identically on every rank;
//! backward all-reduces the per-channel sums of dy and dy * xhat, which is all the data gradient
//! needs from the other ranks. Both cost one host round trip per layer (no GPU-aware MPI here).

use std::sync::Arc;

use super::Communicator;
use crate::backend::{Backend, BatchStats, ChannelLayout, StatsSource, Storage};
use crate::error::{Error, Result};

/// What a synchronised batch-norm op keeps for backward besides its statistics.
#[derive(Clone)]
pub struct SyncedBatch {
    pub comm: Arc<Communicator>,
    /// Values per channel over all ranks.
    pub count: usize,
}

/// Normalises `x` with the global batch statistics; returns the output, the statistics, and the
/// global count per channel (the running variance is unbiased by it).
pub(crate) fn forward(
    be: &dyn Backend,
    x: &Storage,
    (gamma, beta): (&Storage, &Storage),
    layout: &ChannelLayout,
    eps: f32,
    comm: &Arc<Communicator>,
) -> Result<(Storage, BatchStats, SyncedBatch)> {
    let (_, local) = be.batch_norm_train(x, gamma, beta, layout, eps)?;
    let got = be.download_many(&[&local.mean, &local.var])?;
    let (mean, var) = (&got[0], &got[1]);
    let c = layout.c;
    let mut mine = Vec::with_capacity(8 * (1 + 2 * c));
    mine.extend((layout.per_channel() as f64).to_le_bytes());
    for v in mean.iter().chain(var) {
        mine.extend((*v as f64).to_le_bytes());
    }
    let ranks: Vec<Vec<f64>> = comm
        .all_gather(mine)?
        .into_iter()
        .map(|b| {
            b.chunks_exact(8)
                .map(|w| f64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
                .collect()
        })
        .collect();
    let total: f64 = ranks.iter().map(|r| r[0]).sum();
    if ranks.iter().any(|r| r.len() != 1 + 2 * c) {
        return Err(Error::Distributed(format!(
            "synchronised batch norm: the ranks have different channel counts (this rank: {c})"
        )));
    }
    let mut g_mean = vec![0f32; c];
    let mut g_var = vec![0f32; c];
    for ch in 0..c {
        let m: f64 = ranks.iter().map(|r| r[0] * r[1 + ch]).sum::<f64>() / total;
        let v: f64 = ranks
            .iter()
            .map(|r| r[0] * (r[1 + c + ch] + (r[1 + ch] - m).powi(2)))
            .sum::<f64>()
            / total;
        g_mean[ch] = m as f32;
        g_var[ch] = v.max(0.0) as f32;
    }
    let invstd: Vec<f32> = g_var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    let stats = BatchStats {
        mean: be.upload(&g_mean)?,
        var: be.upload(&g_var)?,
        invstd: be.upload(&invstd)?,
    };
    let y = be.batch_norm_apply(x, gamma, beta, &stats, layout)?;
    let synced = SyncedBatch {
        comm: comm.clone(),
        count: total.round() as usize,
    };
    Ok((y, stats, synced))
}

/// (dx, dgamma, dbeta) of synchronised batch norm. dgamma and dbeta are this rank's own sums:
/// the gradient all-reduce adds them up like every other parameter's. dx needs the global sums:
/// dx = gamma * invstd * (dy - sum(dy)/N - xhat * sum(dy * xhat)/N), which is the frozen-stats
/// gradient (gamma * invstd * dy) plus a per-channel affine function of xhat, applied with the
/// batch-norm kernel itself.
pub(crate) fn backward(
    be: &dyn Backend,
    x: &Storage,
    gy: &Storage,
    gamma: &Storage,
    stats: &BatchStats,
    layout: &ChannelLayout,
    synced: &SyncedBatch,
) -> Result<(Storage, Storage, Storage)> {
    let (dx, dgamma, dbeta) = be.batch_norm_backward(x, gy, gamma, stats, layout, StatsSource::Running)?;
    let got = be.download_many(&[&dgamma, &dbeta, gamma, &stats.invstd])?;
    let c = layout.c;
    let sums: Vec<f64> = got[0].iter().chain(&got[1]).map(|&v| v as f64).collect();
    let sums = synced.comm.all_reduce_sum_f64(sums)?;
    let n = synced.count as f64;
    let (mut scale, mut shift) = (vec![0f32; c], vec![0f32; c]);
    for ch in 0..c {
        let k = got[2][ch] as f64 * got[3][ch] as f64;
        scale[ch] = (-k * sums[ch] / n) as f32;
        shift[ch] = (-k * sums[c + ch] / n) as f32;
    }
    let correction = be.batch_norm_apply(x, &be.upload(&scale)?, &be.upload(&shift)?, stats, layout)?;
    Ok((be.add(&dx, &correction)?, dgamma, dbeta))
}
