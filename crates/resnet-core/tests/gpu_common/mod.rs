//! Shared by the GPU tests: random values and comparisons against the CPU backend (the adapter
//! is opened by `tests/harness`).

#![allow(dead_code)]

use resnet_core::backend::{Backend, Storage};
use resnet_core::Device;

/// Deterministic values in [-1, 1).
pub fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(0x9e3779b9);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

pub fn cpu() -> &'static dyn Backend {
    Device::Cpu.backend()
}

/// Asserts that `got` (GPU) matches `want` (CPU) to 1e-4 relative, measured against each value
/// and the tensor's RMS (so sums that cancel to near zero are not held to an impossible bound),
/// and that no element is NaN (every element was written: outputs start as NaN in these tests).
pub fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_close_tol(what, got, want, 1e-4)
}

pub fn assert_close_tol(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let (i, err) = worst_error(what, got, want);
    assert!(
        err <= tol,
        "{what}: element {i}: gpu {} vs cpu {} (relative error {err:.2e})",
        got[i],
        want[i]
    );
}

/// The element with the largest error in [`assert_close`]'s measure, and that error; panics on a
/// length mismatch or a NaN where `want` has none.
pub fn worst_error(what: &str, got: &[f32], want: &[f32]) -> (usize, f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rms = (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt() as f32;
    let mut worst = (0usize, 0.0f32);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            !a.is_nan() || b.is_nan(),
            "{what}: element {i} is NaN (not written?), expected {b}"
        );
        let err = (a - b).abs() / (b.abs() + rms).max(1e-30);
        if err > worst.1 {
            worst = (i, err);
        }
    }
    worst
}

/// Host values onto both backends.
pub fn both(gpu: &dyn Backend, data: &[f32]) -> (Storage, Storage) {
    (gpu.upload(data).unwrap(), cpu().upload(data).unwrap())
}

pub fn down(s: &Storage) -> Vec<f32> {
    s.device().backend().download(s).unwrap()
}
