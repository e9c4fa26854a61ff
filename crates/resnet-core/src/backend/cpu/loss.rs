//! Softmax cross-entropy and top-k accuracy on the CPU, one sample per row.

use super::buffers::CpuBuffer;
use crate::error::Result;
use crate::memory::{try_collect, try_vec};

/// (per-sample loss, softmax probabilities)
pub fn cross_entropy(logits: &[f32], labels: &[f32], classes: usize) -> Result<(Vec<f32>, CpuBuffer)> {
    let mut probs = CpuBuffer::try_uninit(logits.len())?;
    let mut losses = try_vec(labels.len(), 0.0f32, "per-sample losses")?;
    for (((row, p), &label), loss) in logits
        .chunks(classes)
        .zip(probs.chunks_mut(classes))
        .zip(labels)
        .zip(losses.iter_mut())
    {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let log_sum = sum.ln();
        for (pi, &v) in p.iter_mut().zip(row) {
            *pi = ((v - max) as f64 - log_sum).exp() as f32;
        }
        *loss = (log_sum - (row[label as usize] - max) as f64) as f32;
    }
    Ok((losses, probs))
}

pub fn cross_entropy_backward(probs: &[f32], labels: &[f32], classes: usize, scale: f32) -> Result<CpuBuffer> {
    let mut g = CpuBuffer::try_uninit(probs.len())?;
    g.iter_mut().zip(probs).for_each(|(o, &p)| *o = p * scale);
    for (row, &label) in g.chunks_mut(classes).zip(labels) {
        row[label as usize] -= scale;
    }
    Ok(g)
}

/// 1.0 where fewer than k logits beat the label's logit.
pub fn topk_correct(logits: &[f32], labels: &[f32], classes: usize, k: usize) -> Result<Vec<f32>> {
    try_collect(
        logits.chunks_exact(classes).zip(labels).map(|(row, &label)| {
            let target = row[label as usize];
            let better = row.iter().filter(|&&v| v > target).count();
            if better < k && !target.is_nan() {
                1.0
            } else {
                0.0
            }
        }),
        "top-k hits",
    )
}
