//! Throughput of ResNet training and inference on the CPU backend, random data.
//! `cargo run --release -p resnet-core --example bench -- [depth] [batch] [hw] [channels]`

use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::{Device, Model};
use std::time::Instant;

fn main() -> resnet_core::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let depth = *args.first().unwrap_or(&20);
    let batch = *args.get(1).unwrap_or(&128);
    let hw = *args.get(2).unwrap_or(&32);
    let ch = *args.get(3).unwrap_or(&3);
    let spec = ResNetSpec::cifar(depth, ShortcutOption::A, false, ch, 10)?;
    let mut model = Model::new(spec, 0, Device::Cpu)?;
    let images: Vec<f32> = (0..batch * ch * hw * hw).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i % 10).collect();
    let shape = [batch, ch, hw, hw];
    let mut times = Vec::new();
    for i in 0..7 {
        let t = Instant::now();
        let s = model.train_step(&images, shape, &labels)?;
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
        eprintln!("step {i} loss {:.4} {:.3}s", s.loss, t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("train img/s {:.1}", batch as f64 / times[times.len() / 2]);
    let t = Instant::now();
    for _ in 0..3 {
        model.predict(&images, shape)?;
    }
    println!("infer img/s {:.1}", 3.0 * batch as f64 / t.elapsed().as_secs_f64());
    Ok(())
}
