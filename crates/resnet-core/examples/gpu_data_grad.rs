//! Milliseconds per data gradient of the GPU backend on the strided convolutions of ResNet-50
//! (torchvision's, stride on the 3x3) at a given batch: run it twice, once as is and once with
//! `RESNET_WGPU_PHASED_DATA_GRAD=off`, to see what skipping the products with zeros gives.
//! `cargo run --release -p resnet-core --example gpu_data_grad -- [batch] [repeats]`
//! (`RESNET_WGPU_ADAPTER=llvmpipe` on a machine without a GPU).

use resnet_core::backend::{ConvGeometry, Device};
use std::time::Instant;

/// (what, channels in, input side, channels out, kernel, padding); stride 2 throughout.
const SHAPES: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("layer2.0.conv2 3x3/2 128@56", 128, 56, 128, 3, 1),
    ("layer2.0.downsample 1x1/2 256>512", 256, 56, 512, 1, 0),
    ("layer3.0.conv2 3x3/2 256@28", 256, 28, 256, 3, 1),
    ("layer3.0.downsample 1x1/2 512>1024", 512, 28, 1024, 1, 0),
    ("layer4.0.conv2 3x3/2 512@14", 512, 14, 512, 3, 1),
    ("layer4.0.downsample 1x1/2 1024>2048", 1024, 14, 2048, 1, 0),
];

fn main() -> resnet_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let repeats: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let dev = Device::parse("gpu")?;
    let be = dev.backend();
    let phased = std::env::var("RESNET_WGPU_PHASED_DATA_GRAD").map_or(true, |v| v != "off");
    println!(
        "{}; batch {batch}; data gradient {}",
        resnet_core::backend::wgpu::report().selected.unwrap_or_default(),
        if phased { "by phase" } else { "plain (zeros multiplied)" }
    );
    let mut total = 0.0;
    for &(what, c, hw, o, k, p) in SHAPES {
        let g = ConvGeometry::new(&[batch, c, hw, hw], &[o, c, k, k], 2, p)?;
        let gy = be.upload(&values(batch * o * g.oh * g.ow, 1))?;
        let w = be.upload(&values(o * c * k * k, 2))?;
        // The first call compiles the pipeline.
        be.download(&be.conv2d_backward_data(&gy, &w, &g)?)?;
        let mut best = f64::INFINITY;
        for _ in 0..repeats {
            let t = Instant::now();
            let gx = be.conv2d_backward_data(&gy, &w, &g)?;
            resnet_core::backend::wgpu::synchronize()?;
            best = best.min(t.elapsed().as_secs_f64());
            drop(gx);
        }
        let gmac = (c * batch * hw * hw * o * k * k) as f64 / 4.0 / 1e9;
        println!("{what:<38} {:9.2} ms  ({:.1} GMAC/s useful)", best * 1e3, gmac / best);
        total += best;
    }
    println!("total {:.2} ms", total * 1e3);
    Ok(())
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}
