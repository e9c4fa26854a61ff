//! Milliseconds per forward convolution, data gradient and weight gradient of the CPU backend on the
//! convolutions of ResNet-20 (batch 128) and ResNet-18 at 112x112 (batch 32): run it twice, once as is and once
//! with `RESNET_WGPU_CPU_CONV=im2col`, to see where the direct kernel beats im2col + GEMM.
//! `cargo run --profile profiling -p resnet-core --no-default-features --example conv_paths -- [seconds] [name filter]`

use resnet_core::backend::cpu::{CpuBackend, CpuBuffer};
use resnet_core::backend::{Backend, ConvGeometry, Storage};
use std::sync::Arc;
use std::time::Instant;

/// (what, batch, channels in, input side, channels out, kernel, stride)
const SHAPES: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("resnet20 stem 3x32", 128, 3, 32, 16, 3, 1),
    ("resnet20 stem 1x28", 128, 1, 28, 16, 3, 1),
    ("resnet20 stage1", 128, 16, 32, 16, 3, 1),
    ("resnet20 stage2", 128, 32, 16, 32, 3, 1),
    ("resnet20 stage3", 128, 64, 8, 64, 3, 1),
    ("resnet20 stage1 1x28", 128, 16, 28, 16, 3, 1),
    ("resnet20 stage3 1x28", 128, 64, 7, 64, 3, 1),
    ("resnet20 down 16>32", 128, 16, 32, 32, 3, 2),
    ("resnet18 stem 7x7/2", 32, 3, 112, 64, 7, 2),
    ("resnet18 stage1 @112", 32, 64, 28, 64, 3, 1),
    ("resnet18 down 64>128", 32, 64, 28, 128, 3, 2),
    ("resnet18 proj 64>128", 32, 64, 28, 128, 1, 2),
    ("resnet18 stage2 @112", 32, 128, 14, 128, 3, 1),
    ("resnet18 down 128>256", 32, 128, 14, 256, 3, 2),
    ("resnet18 stage3 @112", 32, 256, 7, 256, 3, 1),
    ("resnet18 down 256>512", 32, 256, 7, 512, 3, 2),
    ("resnet18 stage4 @112", 32, 512, 4, 512, 3, 1),
    ("batch 1, stage2", 1, 32, 16, 32, 3, 1),
];

fn storage(len: usize, seed: u32) -> Storage {
    let v: Vec<f32> = (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 9) as f32 / 8388608.0 - 0.5)
        .collect();
    Storage::Cpu(Arc::new(CpuBuffer::from_vec(v)))
}

/// The fastest of the runs made in about `seconds` (at least 3, after one warm-up).
fn best_of(seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    let (mut runs, start, mut best) = (0u32, Instant::now(), f64::INFINITY);
    while start.elapsed().as_secs_f64() < seconds || runs < 3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let path = std::env::var("RESNET_WGPU_CPU_CONV").unwrap_or_else(|_| "default".into());
    println!("path: {path}");
    let filter: Option<String> = std::env::args().nth(2);
    for &(what, n, c, side, o, k, stride) in SHAPES {
        if filter.as_deref().is_some_and(|f| !what.contains(f)) {
            continue;
        }
        let g = ConvGeometry::new(&[n, c, side, side], &[o, c, k, k], stride, k / 2).unwrap();
        let out = g.oh * g.ow;
        let x = storage(n * c * side * side, 1);
        let w = storage(o * c * k * k, 2);
        let gy = storage(n * o * out, 3);
        let gflop = 2.0 * (n * o * out * c * k * k) as f64 / 1e9;
        let forward = best_of(seconds, || {
            CpuBackend.conv2d(&x, &w, None, &g).unwrap();
        });
        let data = best_of(seconds, || {
            CpuBackend.conv2d_backward_data(&gy, &w, &g).unwrap();
        });
        let weight = best_of(seconds, || {
            CpuBackend.conv2d_backward_weight(&x, &gy, &g).unwrap();
        });
        println!(
            "{what:<22} fwd {:>7.2} ms {:>5.0} GF/s  data {:>7.2} ms {:>5.0} GF/s  weight {:>7.2} ms {:>5.0} GF/s",
            forward * 1e3,
            gflop / forward,
            data * 1e3,
            gflop / data,
            weight * 1e3,
            gflop / weight
        );
    }
}
