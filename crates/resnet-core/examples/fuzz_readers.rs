//! Mutation fuzzing of the file readers users point at their own files: safetensors checkpoints
//! (written with per-tensor checksums; read by `checkpoint::load` and by `Model::load_checkpoint`,
//! which also rebuilds the model), IDX (raw and gzip) and CIFAR-10 batches. Every mutated file must
//! give `Ok` or `Err`, never a panic; a mutated checkpoint that still reads with its checksums must
//! hold exactly the original's tensors and metadata (the checksums' job). A mutant whose
//! checksums key itself was destroyed reads as an older, unchecked file; those are counted.
//! `cargo run --release -p resnet-core --example fuzz_readers -- [iterations] [seed]`

use flate2::write::GzEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_core::data::{cifar, idx};
use resnet_core::io::checkpoint::{self, NamedTensor, CHECKSUMS_KEY};
use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::{Device, Model};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Truncation, bit flips, random bytes, a rewritten length/offset field, or (safetensors) a
/// changed byte of the JSON header, where names, shapes, offsets and checksums live.
fn mutate(bytes: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    match rng.random_range(0..6) {
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
        4 => {
            let i = rng.random_range(0..bytes.len().max(1));
            if let Some(b) = bytes.get_mut(i) {
                *b = 0xff;
            }
        }
        _ => {
            let header = bytes
                .first_chunk::<8>()
                .map_or(0, |h| u64::from_le_bytes(*h).min(bytes.len() as u64 - 8) as usize);
            if header > 0 {
                let i = 8 + rng.random_range(0..header);
                bytes[i] = match rng.random_range(0..3) {
                    0 => bytes[i] ^ (1 << rng.random_range(0..8)),
                    1 => b"0123456789"[rng.random_range(0..10)],
                    _ => rng.random(),
                };
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
    // A real checkpoint: ResNet-8 after one SGD step (weights, statistics, counters, momentum).
    let mut model = Model::new(
        ResNetSpec::cifar(8, ShortcutOption::B, false, 1, 10).expect("spec"),
        0,
        Device::Cpu,
    )
    .expect("model");
    let images: Vec<f32> = (0..4 * 8 * 8).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
    model.train_step(&images, [4, 1, 8, 8], &[0, 3, 9, 1]).expect("step");
    model.save_checkpoint(&ckpt, BTreeMap::new()).expect("save");
    let model_checkpoint = std::fs::read(&ckpt).expect("read");
    let mut idx_images = vec![0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7];
    idx_images.extend((0..5 * 6 * 7).map(|i| (i * 13) as u8));
    let mut idx_labels = vec![0, 0, 8, 1, 0, 0, 0, 5];
    idx_labels.extend([0, 3, 9, 1, 2]);
    let cifar: Vec<u8> = (0..3 * 3073)
        .map(|i| if i % 3073 == 0 { (i / 3073) as u8 } else { (i * 7) as u8 })
        .collect();
    let seeds: [(&str, Vec<u8>); 7] = [
        ("safetensors", safetensors),
        ("model checkpoint", model_checkpoint),
        ("idx images", idx_images.clone()),
        ("idx images gz", gz(&idx_images)),
        ("idx labels", idx_labels.clone()),
        ("idx labels gz", gz(&idx_labels)),
        ("cifar batch", cifar),
    ];
    let original = |bytes: &[u8]| {
        std::fs::write(&path, bytes).expect("write");
        checkpoint::load(&path).expect("the unmutated checkpoint reads")
    };
    let originals = [original(&seeds[0].1), original(&seeds[1].1)];
    for (name, valid) in &seeds {
        let (mut ok, mut err, mut checksum) = (0u64, 0u64, 0u64);
        let (mut unchecked, mut unchecked_changed) = (0u64, 0u64);
        for i in 0..iterations {
            let mut bytes = valid.clone();
            for _ in 0..rng.random_range(1..4) {
                mutate(&mut bytes, &mut rng);
            }
            std::fs::write(&path, &bytes).expect("write");
            let outcome = catch_unwind(AssertUnwindSafe(|| read(name, &path)));
            match outcome {
                Ok(Ok(())) => {
                    ok += 1;
                    let seed = match *name {
                        "safetensors" => Some(&originals[0]),
                        "model checkpoint" => Some(&originals[1]),
                        _ => None,
                    };
                    if let Some(want) = seed {
                        let got = checkpoint::load(&path).expect("read once, reads again");
                        let checked = SafeTensors::read_metadata(&bytes)
                            .ok()
                            .and_then(|(_, m)| m.metadata().as_ref().map(|m| m.contains_key(CHECKSUMS_KEY)))
                            .unwrap_or(false);
                        if !checked {
                            unchecked += 1;
                            if got.0 != want.0 {
                                unchecked_changed += 1;
                                let keep = dir.join(format!("unchecked-{i}.bin"));
                                std::fs::write(&keep, &bytes).expect("write");
                            }
                        } else if &got != want {
                            std::fs::write(dir.join("silent.bin"), &bytes).expect("write");
                            panic!("{name}: mutation {i} read without an error but changed the content (saved to silent.bin)");
                        }
                    }
                }
                Ok(Err(e)) => {
                    err += 1;
                    checksum += u64::from(e.contains("checksum"));
                }
                Err(_) => {
                    std::fs::write(dir.join("crash.bin"), &bytes).expect("write");
                    panic!(
                        "{name}: the reader panicked on mutation {i} (saved to {})",
                        dir.join("crash.bin").display()
                    );
                }
            }
        }
        let caught = match checksum {
            0 => String::new(),
            n => format!(" ({n} of them by a checksum)"),
        };
        let same = if matches!(*name, "safetensors" | "model checkpoint") {
            format!(
                " ({} with checksums, each identical to the original; {unchecked} whose checksums key was \
                 hit, read as unchecked files, {unchecked_changed} of them with changed tensors)",
                ok - unchecked
            )
        } else {
            String::new()
        };
        println!(
            "{name:>16}: {iterations} mutated files, {ok} read{same}, {err} rejected with an error{caught}, 0 panics"
        );
    }
}

fn read(kind: &str, path: &Path) -> Result<(), String> {
    let msg = |e: resnet_core::Error| e.to_string();
    match kind {
        "safetensors" => checkpoint::load(path).map(drop).map_err(msg),
        "model checkpoint" => Model::load_checkpoint(path, Device::Cpu).map(drop).map_err(msg),
        "cifar batch" => cifar::read_cifar_batch(path).map(drop).map_err(msg),
        k if k.starts_with("idx images") => idx::read_idx_images(path).map(drop).map_err(msg),
        _ => idx::read_idx_labels(path).map(drop).map_err(msg),
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-wgpu-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
