//! GFLOP/s of the CPU backend's GEMM on the im2col shapes of CIFAR ResNet-20 training (batch 128,
//! 32x32 images): what a change of the `gemm` crate or of its kernels does to the convolutions,
//! without the rest of a training step around it.
//! `cargo run --release -p resnet-core --no-default-features --example gemm_shapes -- [seconds]`
//! (each shape is timed for about `seconds`, default 0.5, once on one thread and once on all).

use resnet_core::backend::cpu::gemm::{gemm, kernel_report, MatView, Threads};
use std::time::Instant;

/// One GEMM as the convolutions issue it: `dst[m, n] = a[m, k] . b[k, n]`, `b` stored as [n, k]
/// when `b_transposed`; the weight gradient's products accumulate.
struct Shape {
    what: &'static str,
    m: usize,
    k: usize,
    n: usize,
    b_transposed: bool,
    accumulate: bool,
}

const fn shape(what: &'static str, m: usize, k: usize, n: usize) -> Shape {
    Shape {
        what,
        m,
        k,
        n,
        b_transposed: false,
        accumulate: false,
    }
}

/// The weight gradient as conv.rs computes it: `dW^T[k, c_out] += P[k, cols] . dY^T[cols, c_out]`.
const fn weight_grad(what: &'static str, c_out: usize, cols: usize, k: usize) -> Shape {
    Shape {
        what,
        m: k,
        k: cols,
        n: c_out,
        b_transposed: false,
        accumulate: true,
    }
}

/// The orientation it replaced, `dW[c_out, k] += dY[c_out, cols] . P[k, cols]^T`, for comparison.
const fn weight_grad_before(what: &'static str, c_out: usize, cols: usize, k: usize) -> Shape {
    Shape {
        what,
        m: c_out,
        k: cols,
        n: k,
        b_transposed: true,
        accumulate: true,
    }
}

/// conv.rs with 2 threads and batch 128: the forward pass (and the stride-1 data gradient, a
/// forward convolution too) puts ceil(512 / (H*W)) images side by side, so N = 1024, 512, 512;
/// the weight gradient takes 8 images per GEMM (N*H*W = 8192, 2048, 512 summed over); the
/// stride-2 data gradient multiplies W^T by one image's output gradient.
const SHAPES: &[Shape] = &[
    shape("fwd stem      C=3  ->16, 32x32", 16, 27, 1024),
    shape("fwd stage1    C=16 ->16, 32x32", 16, 144, 1024),
    shape("fwd stage2/s2 C=16 ->32, 16x16", 32, 144, 512),
    shape("fwd stage2    C=32 ->32, 16x16", 32, 288, 512),
    shape("fwd stage3/s2 C=32 ->64, 8x8", 64, 288, 512),
    shape("fwd stage3    C=64 ->64, 8x8", 64, 576, 512),
    weight_grad("dW^T stage1  144 x 16, 8 img", 16, 8192, 144),
    weight_grad("dW^T stage2  288 x 32, 8 img", 32, 2048, 288),
    weight_grad("dW^T stage3  576 x 64, 8 img", 64, 512, 576),
    weight_grad_before("(before) dW stage1 16 x 144", 16, 8192, 144),
    weight_grad_before("(before) dW stage2 32 x 288", 32, 2048, 288),
    weight_grad_before("(before) dW stage3 64 x 576", 64, 512, 576),
    shape("dX  stage2/s2 W^T . dY, 16x16", 144, 32, 256),
    shape("dX  stage3/s2 W^T . dY, 8x8", 288, 64, 64),
    weight_grad("R18 dW^T s4 4608x512, 32 img", 512, 512, 4608),
    weight_grad_before("R18 dW s4 512x4608, 32 img", 512, 512, 4608),
    weight_grad("R18 dW^T s4 4608x512, 4 img", 512, 64, 4608),
    weight_grad("R18 dW^T s3 2304x256, 32 img", 256, 1568, 2304),
    weight_grad_before("R18 dW s3 256x2304, 32 img", 256, 1568, 2304),
    shape("R18 fwd s4 512x4608 . 512", 512, 4608, 512),
    shape("R18 fwd s3 256x2304 . 784", 256, 2304, 784),
    shape("R18 fwd s1 64x576 . 784", 64, 576, 784),
];

/// Deterministic values in [-1, 1), so runs compare like with like.
fn filled(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Best-of GFLOP/s over repeated calls for about `seconds` (best, not mean: the machine is shared).
fn measure(s: &Shape, threads: Threads, seconds: f64) -> f64 {
    let a = filled(s.m * s.k, 1);
    let b = filled(s.k * s.n, 2);
    let mut c = vec![0.0f32; s.m * s.n];
    let bv = if s.b_transposed {
        MatView::transposed(&b, s.k, s.n)
    } else {
        MatView::new(&b, s.k, s.n)
    };
    let av = MatView::new(&a, s.m, s.k);
    let flop = 2.0 * (s.m * s.k * s.n) as f64;
    // Calls per timed batch: enough that the clock's resolution does not matter.
    let reps = ((2e6 / flop).ceil() as usize).max(1);
    for _ in 0..reps {
        gemm(&mut c, av, bv, s.accumulate, threads);
    }
    let (mut best, start) = (f64::INFINITY, Instant::now());
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        for _ in 0..reps {
            gemm(&mut c, av, bv, s.accumulate, threads);
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    std::hint::black_box(&c);
    flop / best / 1e9
}

fn main() {
    let seconds: f64 = match std::env::args().nth(1).map(|a| a.parse::<f64>()) {
        None => 0.5,
        Some(Ok(s)) if s > 0.0 && s.is_finite() => s,
        Some(_) => {
            eprintln!("gemm_shapes: the argument is the seconds per shape, a positive number");
            std::process::exit(2);
        }
    };
    let report = kernel_report();
    println!("{report}");
    println!(
        "{:<32} {:>5} {:>5} {:>5}  {:>9} {:>9}",
        "shape",
        "M",
        "K",
        "N",
        "1 thread",
        format!("{} thr", report.threads)
    );
    let (mut sum1, mut sum_all) = (0.0, 0.0);
    for s in SHAPES {
        let one = measure(s, Threads::Single, seconds);
        let all = measure(s, Threads::All, seconds);
        sum1 += one.ln();
        sum_all += all.ln();
        println!(
            "{:<32} {:>5} {:>5} {:>5}  {:>9.1} {:>9.1}",
            s.what, s.m, s.k, s.n, one, all
        );
    }
    let n = SHAPES.len() as f64;
    println!(
        "{:<32} {:>17}  {:>9.1} {:>9.1}   GFLOP/s (geometric mean)",
        "all shapes",
        "",
        (sum1 / n).exp(),
        (sum_all / n).exp()
    );
}
