//! Softmax cross-entropy and top-k accuracy on the CPU, one sample per row.

/// (per-sample loss, softmax probabilities)
pub fn cross_entropy(logits: &[f32], labels: &[f32], classes: usize) -> (Vec<f32>, Vec<f32>) {
    let mut probs = vec![0.0f32; logits.len()];
    let losses = logits
        .chunks(classes)
        .zip(probs.chunks_mut(classes))
        .zip(labels)
        .map(|((row, p), &label)| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            let log_sum = sum.ln();
            for (pi, &v) in p.iter_mut().zip(row) {
                *pi = ((v - max) as f64 - log_sum).exp() as f32;
            }
            (log_sum - (row[label as usize] - max) as f64) as f32
        })
        .collect();
    (losses, probs)
}

pub fn cross_entropy_backward(probs: &[f32], labels: &[f32], classes: usize, scale: f32) -> Vec<f32> {
    let mut g: Vec<f32> = probs.iter().map(|&p| p * scale).collect();
    for (row, &label) in g.chunks_mut(classes).zip(labels) {
        row[label as usize] -= scale;
    }
    g
}

/// 1.0 where fewer than k logits beat the label's logit.
pub fn topk_correct(logits: &[f32], labels: &[f32], classes: usize, k: usize) -> Vec<f32> {
    logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, &label)| {
            let target = row[label as usize];
            let better = row.iter().filter(|&&v| v > target).count();
            if better < k && !target.is_nan() {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}
