//! The GPU buffer pool's peak bytes in use during one ResNet training step, at several batch
//! sizes, and what that makes per image: the slope between batches (activations and the
//! gradients in flight) and the intercept (weights, gradients, momentum, per-step scratch).
//! Runs on any adapter, lavapipe included, so the figure needs no GPU; compare the projection at
//! batch 128 with PyTorch's `max_memory_allocated` for the same net (`shared/anchors/torch_mem.py`).
//! Also prints the kernels dispatched by one training step and one prediction.
//! `RESNET_WGPU_ADAPTER=llvmpipe cargo run --release -p resnet-core --example train_memory -- [imagenet|cifar] [mixed] [depth] [side] [batches...]`
//! (defaults: imagenet, fp32, 50 224 1 2).

#[cfg(feature = "gpu")]
fn main() -> resnet_core::Result<()> {
    use resnet_core::backend::wgpu as gpu;
    use resnet_core::nn::{ResNetSpec, ShortcutOption};
    use resnet_core::{Device, Model};

    let args: Vec<String> = std::env::args().skip(1).collect();
    let imagenet = args.first().map(|a| a != "cifar").unwrap_or(true);
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let depth = *nums.first().unwrap_or(if imagenet { &50 } else { &20 });
    let side = *nums.get(1).unwrap_or(if imagenet { &224 } else { &32 });
    let batches = if nums.len() > 2 { nums[2..].to_vec() } else { vec![1, 2] };
    let (spec, classes) = if imagenet {
        (ResNetSpec::imagenet(depth, ShortcutOption::B, 3, 1000)?, 1000)
    } else {
        (ResNetSpec::cifar(depth, ShortcutOption::B, false, 3, 10)?, 10)
    };
    let mut model = Model::new(spec, 0, Device::Gpu)?;
    if args.iter().any(|a| a == "mixed") {
        model.set_precision(resnet_core::precision::Precision::Mixed)?;
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut points = Vec::new();
    for &n in &batches {
        let images: Vec<f32> = (0..n * 3 * side * side)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let labels: Vec<i32> = (0..n as i32).map(|i| i % classes).collect();
        let shape = [n, 3, side, side];
        // The first step at a size creates the momentum buffers and fills the pool.
        model.train_step(&images, shape, &labels)?;
        gpu::synchronize()?;
        gpu::reset_peak_memory();
        let before = gpu::memory_stats().expect("a GPU model has pool statistics");
        model.train_step(&images, shape, &labels)?;
        gpu::synchronize()?;
        let m = gpu::memory_stats().expect("a GPU model has pool statistics");
        model.predict(&images, shape)?;
        let after = gpu::memory_stats().expect("a GPU model has pool statistics");
        println!(
            "ResNet-{depth} {side}x{side} batch {n}: peak in use {:.1} MiB, peak held {:.1} MiB; \
             {} dispatches a training step, {} a prediction",
            mib(m.peak_in_use),
            mib(m.peak_reserved),
            m.dispatches - before.dispatches,
            after.dispatches - m.dispatches
        );
        points.push((n as f64, m.peak_in_use as f64));
    }
    if let (Some(&(n0, p0)), Some(&(n1, p1))) = (points.first(), points.last()) {
        if n1 > n0 {
            let per_image = (p1 - p0) / (n1 - n0);
            let fixed = p0 - per_image * n0;
            println!(
                "per image {:.1} MiB, fixed {:.1} MiB; at batch 128: {:.0} MiB",
                per_image / 1048576.0,
                fixed / 1048576.0,
                (fixed + 128.0 * per_image) / 1048576.0
            );
        }
    }
    Ok(())
}

#[cfg(not(feature = "gpu"))]
fn main() {
    eprintln!("train_memory needs the gpu feature");
}
