//! Mutation fuzzing of the file readers users point at their own files: safetensors checkpoints,
//! IDX (raw and gzip) and CIFAR-10 batches. Every mutated file must give `Ok` or `Err`, never a
//! panic. `cargo run --release -p resnet-core --example fuzz_readers -- [iterations] [seed]`

use flate2::write::GzEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_core::data::{cifar, idx};
use resnet_core::io::checkpoint::{self, NamedTensor};
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Truncation, bit flips, random bytes, or a rewritten length/offset field.
fn mutate(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    match rng.random_range(0..5) {
        0 => {
            let keep = rng.random_range(0..=bytes.len());
            bytes.truncate(keep);
        }
        1 => {
            for _ in 0..rng.random_range(1..8) {
                if bytes.is_empty() {
                    break;
                }
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
        }
        2 => {
            let i = rng.random_range(0..bytes.len().max(1));
            let extra: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            bytes.splice(i.min(bytes.len())..i.min(bytes.len()), extra);
        }
        3 => {
            // The length and size fields live in the first bytes of all three formats.
            let n = bytes.len().min(16);
            if n > 0 {
                let i = rng.random_range(0..n);
                bytes[i] = rng.random();
            }
        }
        _ => {
            let i = rng.random_range(0..bytes.len().max(1));
            if let Some(b) = bytes.get_mut(i) {
                *b = 0xff;
            }
        }
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in-memory write");
    e.finish().expect("in-memory gzip")
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let iterations = *args.first().unwrap_or(&10_000);
    let mut rng = ChaCha8Rng::seed_from_u64(*args.get(1).unwrap_or(&1));
    let dir = tempfile_dir();
    let path = dir.join("fuzz.bin");

    let ckpt = dir.join("valid.safetensors");
    let tensors = vec![
        NamedTensor::f32(
            "conv1.weight",
            vec![4, 3, 3, 3],
            (0..108).map(|i| i as f32 * 0.01).collect(),
        ),
        NamedTensor::i64("bn1.num_batches_tracked", vec![], vec![7]),
        NamedTensor::f32("fc.bias", vec![10], vec![0.5; 10]),
    ];
    checkpoint::save(
        &ckpt,
        &tensors,
        &BTreeMap::from([("spec".to_string(), "{}".to_string())]),
    )
    .expect("save");
    let safetensors = std::fs::read(&ckpt).expect("read");
    let mut idx_images = vec![0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7];
    idx_images.extend((0..5 * 6 * 7).map(|i| (i * 13) as u8));
    let mut idx_labels = vec![0, 0, 8, 1, 0, 0, 0, 5];
    idx_labels.extend([0, 3, 9, 1, 2]);
    let cifar: Vec<u8> = (0..3 * 3073)
        .map(|i| if i % 3073 == 0 { (i / 3073) as u8 } else { (i * 7) as u8 })
        .collect();
    let seeds: [(&str, Vec<u8>); 6] = [
        ("safetensors", safetensors),
        ("idx images", idx_images.clone()),
        ("idx images gz", gz(&idx_images)),
        ("idx labels", idx_labels.clone()),
        ("idx labels gz", gz(&idx_labels)),
        ("cifar batch", cifar),
    ];
    for (name, valid) in &seeds {
        let (mut ok, mut err) = (0u64, 0u64);
        for i in 0..iterations {
            let mut bytes = valid.clone();
            for _ in 0..rng.random_range(1..4) {
                mutate(&mut bytes, &mut rng);
            }
            std::fs::write(&path, &bytes).expect("write");
            let outcome = catch_unwind(AssertUnwindSafe(|| read(name, &path)));
            match outcome {
                Ok(true) => ok += 1,
                Ok(false) => err += 1,
                Err(_) => {
                    std::fs::write(dir.join("crash.bin"), &bytes).expect("write");
                    panic!(
                        "{name}: the reader panicked on mutation {i} (saved to {})",
                        dir.join("crash.bin").display()
                    );
                }
            }
        }
        println!("{name:>14}: {iterations} mutated files, {ok} read, {err} rejected with an error, 0 panics");
    }
}

fn read(kind: &str, path: &Path) -> bool {
    match kind {
        "safetensors" => checkpoint::load(path).is_ok(),
        "cifar batch" => cifar::read_cifar_batch(path).is_ok(),
        k if k.starts_with("idx images") => idx::read_idx_images(path).is_ok(),
        _ => idx::read_idx_labels(path).is_ok(),
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-wgpu-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
