//! Throughput of ResNet training and inference on random data, on the CPU or the GPU.
//! `cargo run --release -p resnet-core --example bench -- [cpu|gpu|auto] [cifar|imagenet] [depth] [batch] [hw] [channels]`
//! (defaults: cpu, cifar, 20, 128, 32 for CIFAR / 224 for ImageNet, 3). Shortcuts are option B
//! (projections) in both families, as in the PyTorch anchor (`shared/anchors/torch_resnet.py`).
//! `... --example bench -- gpu kernels` times the convolution kernels alone on ResNet shapes.

use resnet_core::backend::{Backend, ConvGeometry};
use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::{Device, Model};
use std::time::Instant;

fn main() -> resnet_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut device = Device::Cpu;
    let mut imagenet = false;
    let mut kernels = false;
    let mut nums = Vec::new();
    for a in &args {
        match a.as_str() {
            "cpu" | "gpu" | "auto" => device = Device::parse(a)?,
            "imagenet" => imagenet = true,
            "cifar" => imagenet = false,
            "kernels" => kernels = true,
            _ => nums.push(
                a.parse::<usize>()
                    .map_err(|_| resnet_core::Error::invalid(format!("bench: unknown argument '{a}'")))?,
            ),
        }
    }
    if kernels {
        return conv_kernels(device);
    }
    let depth = *nums.first().unwrap_or(if imagenet { &50 } else { &20 });
    let batch = *nums.get(1).unwrap_or(&128);
    let hw = *nums.get(2).unwrap_or(if imagenet { &224 } else { &32 });
    let ch = *nums.get(3).unwrap_or(&3);
    let classes = if imagenet { 1000 } else { 10 };
    let spec = if imagenet {
        ResNetSpec::imagenet(depth, ShortcutOption::B, ch, classes)?
    } else {
        ResNetSpec::cifar(depth, ShortcutOption::B, false, ch, classes)? // projections, as the PyTorch anchor
    };
    let name = format!(
        "ResNet-{depth} {} {hw}x{hw} batch {batch} on {device}",
        if imagenet { "imagenet" } else { "cifar" }
    );
    let mut model = Model::new(spec, 0, device)?;
    let images: Vec<f32> = (0..batch * ch * hw * hw)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let labels: Vec<i32> = (0..batch as i32).map(|i| i % classes as i32).collect();
    let shape = [batch, ch, hw, hw];
    // Warm up (pipelines compiled, pool filled, clocks up) for at least two steps and, on the
    // GPU, two seconds; then the median of the next steps.
    let (warm_steps, warm_secs, steps) = if device == Device::Cpu {
        (2, 0.0, 5)
    } else {
        (2, 2.0, 20)
    };
    let started = Instant::now();
    let mut i = 0;
    while i < warm_steps || started.elapsed().as_secs_f64() < warm_secs {
        let s = model.train_step(&images, shape, &labels)?;
        eprintln!("warm-up step {i} loss {:.4}", s.loss);
        i += 1;
    }
    let mut times = Vec::new();
    for i in 0..steps {
        let t = Instant::now();
        let s = model.train_step(&images, shape, &labels)?;
        times.push(t.elapsed().as_secs_f64());
        eprintln!("step {i} loss {:.4} {:.4}s", s.loss, t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name}: train img/s {:.1}", batch as f64 / times[times.len() / 2]);
    print_memory("after training");
    for _ in 0..3 {
        model.predict(&images, shape)?;
    }
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        model.predict(&images, shape)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name}: infer img/s {:.1}", batch as f64 / times[times.len() / 2]);
    Ok(())
}

#[cfg(feature = "gpu")]
fn print_memory(when: &str) {
    if let Some(m) = resnet_core::backend::wgpu::memory_stats() {
        println!(
            "GPU memory {when}: peak in use {} MiB, peak held {} MiB, held now {} MiB ({} dispatches, {} submits)",
            m.peak_in_use >> 20,
            m.peak_reserved >> 20,
            m.reserved >> 20,
            m.dispatches,
            m.submits
        );
    }
}

#[cfg(not(feature = "gpu"))]
fn print_memory(_when: &str) {}

fn sync(device: Device) -> resnet_core::Result<()> {
    #[cfg(feature = "gpu")]
    if device == Device::Gpu {
        return resnet_core::backend::wgpu::synchronize();
    }
    let _ = device;
    Ok(())
}

/// Median seconds of `f` over a few runs, the device drained around each.
fn time(device: Device, mut f: impl FnMut() -> resnet_core::Result<()>) -> resnet_core::Result<f64> {
    f()?;
    sync(device)?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        f()?;
        sync(device)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(times[2])
}

/// Forward, data-gradient and weight-gradient kernels of the convolutions that dominate
/// ResNet-20 (CIFAR, batch 128) and ResNet-50 (224, batch 128), in TFLOP/s.
fn conv_kernels(device: Device) -> resnet_core::Result<()> {
    let be: &dyn Backend = device.backend();
    // (label, n, c_in, h, c_out, k, stride, padding)
    let shapes = [
        ("r20 3x3 16->16 32x32", 128, 16, 32, 16, 3, 1, 1),
        ("r20 3x3 32->32 16x16", 128, 32, 16, 32, 3, 1, 1),
        ("r20 3x3 64->64 8x8", 128, 64, 8, 64, 3, 1, 1),
        ("anchor 3x3 64->64 56x56 b64", 64, 64, 56, 64, 3, 1, 1),
        ("r50 3x3 64->64 56x56", 128, 64, 56, 64, 3, 1, 1),
        ("r50 1x1 256->64 56x56", 128, 256, 56, 64, 1, 1, 0),
        ("r50 1x1 64->256 56x56", 128, 64, 56, 256, 1, 1, 0),
        ("r50 3x3 128->128 28x28", 128, 128, 28, 128, 3, 1, 1),
        ("r50 3x3 256->256 14x14", 128, 256, 14, 256, 3, 1, 1),
        ("r50 3x3 512->512 7x7", 128, 512, 7, 512, 3, 1, 1),
        ("r50 1x1 1024->256 14x14", 128, 1024, 14, 256, 1, 1, 0),
        ("r50 7x7 3->64 224 s2", 128, 3, 224, 64, 7, 2, 3),
        ("r50 3x3 128->128 56->28 s2", 128, 128, 56, 128, 3, 2, 1),
    ];
    for (label, n, c, h, o, k, s, p) in shapes {
        let g = ConvGeometry::new(&[n, c, h, h], &[o, c, k, k], s, p)?;
        let x = be.upload(&vec![0.5; n * c * h * h])?;
        let w = be.upload(&vec![0.01; o * c * k * k])?;
        let gy = be.upload(&vec![0.1; n * o * g.oh * g.ow])?;
        let flops = 2.0 * g.macs() as f64;
        let fwd = time(device, || be.conv2d(&x, &w, None, &g).map(|_| ()))?;
        let dgrad = time(device, || be.conv2d_backward_data(&gy, &w, &g).map(|_| ()))?;
        let wgrad = time(device, || be.conv2d_backward_weight(&x, &gy, &g).map(|_| ()))?;
        println!(
            "{label:30} fwd {:7.3} ms {:6.2} TFLOP/s | dgrad {:7.3} ms {:6.2} | wgrad {:7.3} ms {:6.2}",
            fwd * 1e3,
            flops / fwd / 1e12,
            dgrad * 1e3,
            flops / dgrad / 1e12,
            wgrad * 1e3,
            flops / wgrad / 1e12
        );
    }
    Ok(())
}
