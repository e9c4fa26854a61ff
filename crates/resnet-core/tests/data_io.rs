//! End-to-end through the public API only: dataset -> loader -> checkpoint, as the trainer uses it.

mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use resnet_core::data::idx::{read_fashion_mnist, DEFAULT_FASHION_MNIST_DIR};
use resnet_core::data::{Augment, Dataset, Loader, LoaderConfig, Normalize, Split};
use resnet_core::io::checkpoint::{self, NamedTensor, TensorData};

fn synthetic(n: usize) -> Dataset {
    // Deterministic but non-constant pixels and labels.
    let images = (0..n * 3 * 8 * 8).map(|i| (i * 31 % 251) as u8).collect();
    let labels = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    Dataset::new(images, labels, 3, 8, 8, 10, vec![]).unwrap()
}

fn loader_epoch_over_a_validation_split() {
    let full = synthetic(100);
    let (train, val) = full.split_at(80);
    let norm = Normalize::from_dataset(&train);
    let config = LoaderConfig {
        batch_size: 32,
        shuffle: true,
        drop_last: false,
        augment: Some(Augment::paper()),
        normalize: norm,
        seed: 1,
        shard: resnet_core::data::Shard::ALONE,
    };
    let train = Arc::new(train);
    let loader = Loader::new(train.clone(), config.clone(), 0).unwrap();
    assert_eq!(loader.len(), 3);
    let mut count = 0;
    for batch in loader {
        let batch = batch.unwrap();
        assert_eq!(batch.images.len(), batch.shape.iter().product::<usize>());
        count += batch.labels.len();
    }
    assert_eq!(count, 80);
    let val_loader = Loader::new(
        Arc::new(val),
        LoaderConfig {
            augment: None,
            shuffle: false,
            ..config
        },
        0,
    );
    assert_eq!(val_loader.unwrap().len(), 1);
}

fn checkpoint_round_trip_through_public_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let tensors = vec![
        NamedTensor::f32(
            "conv1.weight",
            vec![2, 1, 1, 3],
            vec![0.5, -1.25, 3.0, 1e-7, -0.0, 42.0],
        ),
        NamedTensor::i64("bn1.num_batches_tracked", vec![], vec![391]),
    ];
    let meta: BTreeMap<String, String> = [("epoch".to_string(), "3".to_string())].into();
    checkpoint::save(&path, &tensors, &meta).unwrap();
    let (mut back, meta_back) = checkpoint::load(&path).unwrap();
    back.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(back, [tensors[1].clone(), tensors[0].clone()]);
    assert_eq!(meta_back, meta);
    assert!(matches!(back[0].data, TensorData::I64(ref v) if v == &[391]));
}

fn real_fashion_mnist_epoch() {
    let dir = Path::new(DEFAULT_FASHION_MNIST_DIR);
    let test = Arc::new(read_fashion_mnist(dir, Split::Test).unwrap());
    let config = LoaderConfig {
        batch_size: 128,
        shuffle: true,
        drop_last: false,
        augment: Some(Augment {
            pad_crop: 4,
            flip: true,
        }),
        normalize: Normalize::from_dataset(&test),
        seed: 7,
        shard: resnet_core::data::Shard::ALONE,
    };
    let t = std::time::Instant::now();
    let loader = Loader::new(test.clone(), config, 0).unwrap();
    assert_eq!(loader.len(), 79);
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for batch in loader {
        let batch = batch.unwrap();
        sum += batch.images.iter().map(|&v| v as f64).sum::<f64>();
        n += batch.images.len();
    }
    eprintln!("10000 Fashion-MNIST images batched in {:?}", t.elapsed());
    assert_eq!(n, 10_000 * 784);
    // Normalised by its own statistics, the mean is ~0 (padding shifts it slightly negative).
    let mean = sum / n as f64;
    assert!(mean.abs() < 0.3, "{mean}");
}

/// The installed Fashion-MNIST (the `dataset-fashion-mnist` package the set-up script installs).
fn fashion_mnist_installed() -> Result<(), String> {
    match Path::new(DEFAULT_FASHION_MNIST_DIR).is_dir() {
        true => Ok(()),
        false => Err(format!(
            "{DEFAULT_FASHION_MNIST_DIR} not present (scripts/setup.sh installs it)"
        )),
    }
}

fn main() {
    harness::run([
        harness::cpu(
            "loader_epoch_over_a_validation_split",
            loader_epoch_over_a_validation_split,
        ),
        harness::cpu(
            "checkpoint_round_trip_through_public_api",
            checkpoint_round_trip_through_public_api,
        ),
        harness::cpu("real_fashion_mnist_epoch", real_fashion_mnist_epoch).needs(fashion_mnist_installed()),
    ])
}
