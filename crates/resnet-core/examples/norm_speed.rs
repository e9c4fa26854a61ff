//! Times the CPU batch norm kernels (training forward with ReLU, backward through it) on
//! ResNet-20's and ResNet-18's shapes: `cargo run --release -p resnet-core --example norm_speed`.

use resnet_core::backend::cpu::CpuBackend;
use resnet_core::backend::{Activation, Backend, ChannelLayout, StatsSource};
use std::time::Instant;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn main() -> resnet_core::Result<()> {
    let be = CpuBackend;
    println!("shape (n c hw)          fwd ms   bwd ms   GB/s fwd  GB/s bwd");
    for &(n, c, hw) in &[
        (128, 16, 1024),
        (128, 32, 256),
        (128, 64, 64),
        (32, 64, 3136),
        (32, 512, 16),
    ] {
        let layout = ChannelLayout { n, c, hw };
        let len = n * c * hw;
        let x = be.upload(&values(len, 1))?;
        let gy = be.upload(&values(len, 2))?;
        let gamma = be.upload(&values(c, 3).iter().map(|v| v + 1.5).collect::<Vec<_>>())?;
        let beta = be.upload(&values(c, 4))?;
        let reps = 20;
        let (mut fwd, mut bwd) = (f64::MAX, f64::MAX);
        for _ in 0..reps {
            let t = Instant::now();
            let (out, stats) = be.batch_norm_train_act(&x, &gamma, &beta, &layout, 1e-5, None, Activation::Relu)?;
            fwd = fwd.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let g = be.batch_norm_act_backward(
                &x,
                &out,
                &gy,
                &gamma,
                &stats,
                &layout,
                StatsSource::Batch,
                Activation::Relu,
            )?;
            bwd = bwd.min(t.elapsed().as_secs_f64());
            drop(g);
        }
        // Bytes moved: forward reads x twice and writes y; backward reads x, out, gy twice and writes dx.
        let mb = (len * 4) as f64;
        println!(
            "{:>4} {:>4} {:>5}        {:>7.3}  {:>7.3}   {:>7.1}  {:>7.1}",
            n,
            c,
            hw,
            fwd * 1e3,
            bwd * 1e3,
            3.0 * mb / fwd / 1e9,
            7.0 * mb / bwd / 1e9
        );
    }
    Ok(())
}
