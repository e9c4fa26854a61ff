//! Batch normalisation over NCHW on the CPU. Statistics are reduced per channel in f64 (one
//! channel per task, in a fixed order: deterministic), the elementwise parts run per plane.

use super::buffers::CpuBuffer;
use crate::backend::{ChannelLayout, StatsSource};
use crate::error::Result;
use rayon::prelude::*;

/// Per-channel (mean, biased variance) of x[n, c, hw], in one pass: sums of x and x^2 in f64,
/// where E[x^2] - E[x]^2 keeps full f32 precision unless |mean| exceeds the std ~10^4-fold.
pub fn channel_stats(x: &[f32], layout: &ChannelLayout) -> (Vec<f32>, Vec<f32>) {
    let &ChannelLayout { n, c, hw } = layout;
    let count = (n * hw) as f64;
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
            for i in 0..n {
                for &v in &x[(i * c + ch) * hw..(i * c + ch + 1) * hw] {
                    let v = v as f64;
                    sum += v;
                    sum_sq += v * v;
                }
            }
            let mean = sum / count;
            let var = (sum_sq / count - mean * mean).max(0.0);
            (mean as f32, var as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

pub fn invstd(var: &[f32], eps: f32) -> Vec<f32> {
    var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect()
}

/// y = (x - mean) * invstd * gamma + beta, plane by plane.
pub fn apply(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    invstd: &[f32],
    layout: &ChannelLayout,
) -> Result<CpuBuffer> {
    let &ChannelLayout { c, hw, .. } = layout;
    let mut y = CpuBuffer::try_uninit(x.len())?;
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(plane, (yp, xp))| {
            let ch = plane % c;
            let scale = invstd[ch] * gamma[ch];
            let shift = beta[ch] - mean[ch] * scale;
            yp.iter_mut().zip(xp).for_each(|(o, &v)| *o = v * scale + shift);
        });
    Ok(y)
}

/// (dx, dgamma, dbeta). With batch statistics the mean and variance are functions of x and
/// contribute to dx; with running statistics dx is a per-channel scaling of dy.
pub fn backward(
    x: &[f32],
    gy: &[f32],
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    layout: &ChannelLayout,
    source: StatsSource,
) -> Result<(CpuBuffer, Vec<f32>, Vec<f32>)> {
    let &ChannelLayout { n, c, hw } = layout;
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sum_gy, mut sum_gy_xc) = (0.0f64, 0.0f64);
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                for (&g, &v) in gy[r.clone()].iter().zip(&x[r]) {
                    sum_gy += g as f64;
                    sum_gy_xc += g as f64 * (v - mean[ch]) as f64;
                }
            }
            (sum_gy, sum_gy_xc)
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(invstd)
        .map(|(s, &is)| (s.1 * is as f64) as f32)
        .collect();
    let count = (n * hw) as f32;
    let mut dx = CpuBuffer::try_uninit(x.len())?;
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dp)| {
        let ch = plane % c;
        let r = plane * hw..(plane + 1) * hw;
        let k = gamma[ch] * invstd[ch];
        if source == StatsSource::Batch {
            // dx = k * (dy - mean(dy) - xhat * mean(dy * xhat))
            let mean_gy = dbeta[ch] / count;
            let proj = dgamma[ch] / count * invstd[ch];
            for ((d, &g), &v) in dp.iter_mut().zip(&gy[r.clone()]).zip(&x[r]) {
                *d = k * (g - mean_gy - (v - mean[ch]) * proj);
            }
        } else {
            dp.iter_mut().zip(&gy[r]).for_each(|(d, &g)| *d = k * g);
        }
    });
    Ok((dx, dgamma, dbeta))
}
