//! The main job without Node: ResNet-20 on Fashion-MNIST for one epoch on the CPU, as the CLI
//! runs it. `cargo run --release -p resnet-core --example train_fmnist -- [epochs] [augment 0|1] [seed] [shortcut 0=A|1=B]`

use resnet_core::data::{idx, Augment, Loader, LoaderConfig, Normalize, Split};
use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::optim::{Schedule, SgdConfig};
use resnet_core::{Device, Model};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() -> resnet_core::Result<()> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let epochs = *args.first().unwrap_or(&1);
    let augment = args.get(1).copied().unwrap_or(0) == 1;
    let seed = args.get(2).copied().unwrap_or(0);
    let shortcut = if args.get(3).copied().unwrap_or(0) == 1 {
        ShortcutOption::B
    } else {
        ShortcutOption::A
    };
    let dir = Path::new(idx::DEFAULT_FASHION_MNIST_DIR);
    let train = Arc::new(idx::read_fashion_mnist(dir, Split::Train)?);
    let test = Arc::new(idx::read_fashion_mnist(dir, Split::Test)?);
    let normalize = Normalize::from_dataset(&train);
    let batch = 128;
    let steps_per_epoch = train.n / batch;
    let total = steps_per_epoch as u64 * epochs;
    let mut model = Model::new(ResNetSpec::cifar(20, shortcut, false, 1, 10)?, seed, Device::Cpu)?;
    model.configure_optimizer(SgdConfig {
        schedule: Schedule::Multistep {
            milestones: vec![total / 2, total * 3 / 4],
            gamma: 0.1,
        },
        ..SgdConfig::default()
    })?;
    let t0 = Instant::now();
    let mut last = 0.0;
    for epoch in 0..epochs {
        let cfg = LoaderConfig {
            batch_size: batch,
            shuffle: true,
            drop_last: true,
            augment: augment.then(Augment::paper),
            normalize: normalize.clone(),
            seed,
            shard: resnet_core::data::Shard::ALONE,
        };
        for (i, b) in Loader::new(train.clone(), cfg, epoch)?.enumerate() {
            let b = b?;
            let s = model.train_step(&b.images, b.shape, &b.labels)?;
            last = s.loss;
            if i % 50 == 0 {
                eprintln!(
                    "epoch {epoch} step {i} loss {:.4} acc {:.3} lr {} {:.1} img/s",
                    s.loss,
                    s.correct as f32 / s.batch as f32,
                    s.lr,
                    (s.step as f64 * batch as f64) / t0.elapsed().as_secs_f64()
                );
            }
        }
    }
    let cfg = LoaderConfig {
        batch_size: 500,
        shuffle: false,
        drop_last: false,
        augment: None,
        normalize,
        seed,
        shard: resnet_core::data::Shard::ALONE,
    };
    let (mut hits, mut n) = (0, 0);
    for b in Loader::new(test, cfg, 0)? {
        let b = b?;
        let e = model.evaluate_batch(&b.images, b.shape, &b.labels)?;
        hits += e.top1;
        n += e.count;
    }
    println!(
        "final loss {last:.6} test acc {:.4} time {:.0}s",
        hits as f64 / n as f64,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
