//! Batch normalisation over NCHW on the CPU. Statistics are reduced per channel in f64 (one
//! channel per task, planes in order, each plane in `simd::LANES` partial sums: deterministic),
//! the elementwise parts run per plane; both compiled for AVX-512 where the CPU has it (`simd`).

use super::buffers::CpuBuffer;
use super::simd::{grad_sums, sum_and_squares, wide_fn};
use super::{activate, activate_grad};
use crate::backend::{Activation, ChannelLayout, StatsSource};
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
                let (s, q) = sum_and_squares(&x[(i * c + ch) * hw..(i * c + ch + 1) * hw]);
                sum += s;
                sum_sq += q;
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

/// What follows the normalisation in the same pass: an optional residual, then an activation.
pub type Epilogue<'a> = (Option<&'a [f32]>, Activation);

/// y = act((x - mean) * invstd * gamma + beta [+ residual]) when `epilogue` is
/// `Some((residual, act))`, else the plain normalisation; plane by plane. The same float
/// operations in the same order as normalising, then adding and activating in separate passes,
/// so the results are identical, without writing and reading back the normalised tensor.
pub fn apply(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    invstd: &[f32],
    layout: &ChannelLayout,
    epilogue: Option<Epilogue>,
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
            match epilogue {
                None => normalise_plane(yp, xp, None, scale, shift, |v| v),
                Some((residual, act)) => {
                    let rp = residual.map(|r| &r[plane * hw..(plane + 1) * hw]);
                    // ReLU spelled out so the loop vectorises; the others go through `activate`.
                    match act {
                        Activation::Relu => normalise_plane(yp, xp, rp, scale, shift, |v| v.max(0.0)),
                        _ => normalise_plane(yp, xp, rp, scale, shift, |v| activate(v, act)),
                    }
                }
            }
        });
    Ok(y)
}

wide_fn! {
    fn normalise_plane(
        yp: &mut [f32],
        xp: &[f32],
        rp: Option<&[f32]>,
        scale: f32,
        shift: f32,
        act: impl Fn(f32) -> f32,
    ) {
        match rp {
            None => yp.iter_mut().zip(xp).for_each(|(o, &v)| *o = act(v * scale + shift)),
            Some(rp) => yp
                .iter_mut()
                .zip(xp)
                .zip(rp)
                .for_each(|((o, &v), &r)| *o = act(v * scale + shift + r)),
        }
    }
}

wide_fn! {
    /// One plane of dx: `k * (dy - mean_gy - (x - mean) * proj)` with the batch's statistics
    /// (`Some((mean_gy, mean, proj))`), `k * dy` with running ones.
    fn input_grad_plane(
        dp: &mut [f32],
        gp: &[f32],
        yp: &[f32],
        xp: &[f32],
        k: f32,
        batch: Option<(f32, f32, f32)>,
        dy: impl Fn(f32, f32) -> f32,
    ) {
        match batch {
            Some((mean_gy, mean, proj)) => {
                for (((d, &g), &y), &v) in dp.iter_mut().zip(gp).zip(yp).zip(xp) {
                    *d = k * (dy(y, g) - mean_gy - (v - mean) * proj);
                }
            }
            None => {
                for ((d, &g), &y) in dp.iter_mut().zip(gp).zip(yp) {
                    *d = k * dy(y, g);
                }
            }
        }
    }
}

/// (dx, dgamma, dbeta). With batch statistics the mean and variance are functions of x and
/// contribute to dx; with running statistics dx is a per-channel scaling of dy. With
/// `through = Some((out, act))`, `gy` is the gradient of `out = act(batch_norm(x))` and is taken
/// back through the activation as it is read, instead of in a pass of its own (same values).
pub fn backward(
    x: &[f32],
    gy: &[f32],
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    layout: &ChannelLayout,
    source: StatsSource,
    through: Option<(&[f32], Activation)>,
) -> Result<(CpuBuffer, Vec<f32>, Vec<f32>)> {
    let stats = (mean, invstd);
    match through {
        // `gy` stands in for the unused activation output.
        None => backward_with(x, gy, gy, gamma, stats, layout, source, |_, g| g),
        Some((out, Activation::Relu)) => {
            backward_with(
                x,
                gy,
                out,
                gamma,
                stats,
                layout,
                source,
                |y, g| {
                    if y > 0.0 {
                        g
                    } else {
                        0.0
                    }
                },
            )
        }
        Some((out, act)) => backward_with(x, gy, out, gamma, stats, layout, source, |y, g| {
            activate_grad(y, g, act)
        }),
    }
}

/// `backward` reading dy as `dy(out, gy)` element by element.
#[allow(clippy::too_many_arguments)]
fn backward_with(
    x: &[f32],
    gy: &[f32],
    out: &[f32],
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    layout: &ChannelLayout,
    source: StatsSource,
    dy: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<(CpuBuffer, Vec<f32>, Vec<f32>)> {
    let &ChannelLayout { n, c, hw } = layout;
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sum_gy, mut sum_gy_xc) = (0.0f64, 0.0f64);
            for i in 0..n {
                let r = (i * c + ch) * hw..(i * c + ch + 1) * hw;
                let (s, p) = grad_sums(&gy[r.clone()], &out[r.clone()], &x[r], mean[ch], &dy);
                sum_gy += s;
                sum_gy_xc += p;
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
        let batch = (source == StatsSource::Batch).then(|| {
            // dx = k * (dy - mean(dy) - xhat * mean(dy * xhat))
            (dbeta[ch] / count, mean[ch], dgamma[ch] / count * invstd[ch])
        });
        input_grad_plane(dp, &gy[r.clone()], &out[r.clone()], &x[r], k, batch, &dy);
    });
    Ok((dx, dgamma, dbeta))
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::{Activation, Backend, ChannelLayout, StatsSource, Storage};

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn bits(be: &CpuBackend, s: &Storage) -> Vec<u32> {
        be.download(s).unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// The fused batch norm + (residual) + activation kernels give bit for bit what the separate
    /// kernels give, forward (batch and running statistics) and backward, for every activation.
    #[test]
    fn fused_batch_norm_activation_equals_the_separate_kernels() {
        let be = CpuBackend;
        let mut cases = 0;
        for &(n, c, h, w) in &[(3, 5, 7, 3), (2, 1, 1, 2), (1, 4, 5, 5), (4, 3, 2, 9)] {
            let layout = ChannelLayout { n, c, hw: h * w };
            let len = n * c * h * w;
            let x = be
                .upload(&values(len, 1).iter().map(|v| v * 3.0 + 0.5).collect::<Vec<_>>())
                .unwrap();
            let residual = be.upload(&values(len, 2)).unwrap();
            let gy = be.upload(&values(len, 3)).unwrap();
            let gamma = be
                .upload(&values(c, 4).iter().map(|v| v + 1.5).collect::<Vec<_>>())
                .unwrap();
            let beta = be.upload(&values(c, 5)).unwrap();
            for act in [Activation::Relu, Activation::Tanh, Activation::Sigmoid] {
                for with_residual in [false, true] {
                    let r = with_residual.then_some(&residual);
                    let (y, stats) = be.batch_norm_train(&x, &gamma, &beta, &layout, 1e-5).unwrap();
                    let separate = match r {
                        Some(r) => be.add_activation(&y, r, act).unwrap(),
                        None => be.activation(&y, act).unwrap(),
                    };
                    let (fused, fused_stats) = be
                        .batch_norm_train_act(&x, &gamma, &beta, &layout, 1e-5, r, act)
                        .unwrap();
                    assert_eq!(bits(&be, &fused), bits(&be, &separate), "train {act:?} {layout:?}");
                    assert_eq!(bits(&be, &fused_stats.invstd), bits(&be, &stats.invstd));

                    let applied = be.batch_norm_apply(&x, &gamma, &beta, &stats, &layout).unwrap();
                    let separate_eval = match r {
                        Some(r) => be.add_activation(&applied, r, act).unwrap(),
                        None => be.activation(&applied, act).unwrap(),
                    };
                    let fused_eval = be
                        .batch_norm_apply_act(&x, &gamma, &beta, &stats, &layout, r, act)
                        .unwrap();
                    assert_eq!(
                        bits(&be, &fused_eval),
                        bits(&be, &separate_eval),
                        "eval {act:?} {layout:?}"
                    );
                    cases += 1;
                }
                for source in [StatsSource::Batch, StatsSource::Running] {
                    let (out, stats) = be
                        .batch_norm_train_act(&x, &gamma, &beta, &layout, 1e-5, None, act)
                        .unwrap();
                    let g = be.activation_backward(&out, &gy, act).unwrap();
                    let separate = be.batch_norm_backward(&x, &g, &gamma, &stats, &layout, source).unwrap();
                    let fused = be
                        .batch_norm_act_backward(&x, &out, &gy, &gamma, &stats, &layout, source, act)
                        .unwrap();
                    for (a, b) in [
                        (&fused.0, &separate.0),
                        (&fused.1, &separate.1),
                        (&fused.2, &separate.2),
                    ] {
                        assert_eq!(bits(&be, a), bits(&be, b), "backward {act:?} {source:?} {layout:?}");
                    }
                    // ReLU's mask did cut something, so the comparison is not vacuous.
                    if act == Activation::Relu {
                        let plain = be
                            .batch_norm_backward(&x, &gy, &gamma, &stats, &layout, source)
                            .unwrap();
                        assert_ne!(bits(&be, &plain.0), bits(&be, &separate.0));
                    }
                }
            }
        }
        assert_eq!(cases, 24);
    }
}
