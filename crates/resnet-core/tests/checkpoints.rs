//! Checkpoints at the model level: checksums caught on every load path, older files without them,
//! and the weights-only export PyTorch loads strictly (torchvision's names, shapes and dtypes).

mod common;

use common::batch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_core::io::checkpoint::{self, NamedTensor, TensorData, CHECKSUMS_KEY};
use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::{Device, Model};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const DEV: Device = Device::Cpu;

/// A ResNet-8 after `steps` SGD steps on a random batch (momentum buffers, counters and running
/// statistics all moved).
fn trained(seed: u64, steps: usize) -> Model {
    let mut m = Model::new(
        ResNetSpec::cifar(8, ShortcutOption::B, false, 3, 10).unwrap(),
        seed,
        DEV,
    )
    .unwrap();
    let (images, shape, labels) = batch(seed, 6, 3, 8, 10);
    for _ in 0..steps {
        m.train_step(&images, shape, &labels).unwrap();
    }
    m
}

/// (name, absolute byte range of its data) for every tensor of a safetensors file.
fn data_ranges(bytes: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let (n, meta) = SafeTensors::read_metadata(bytes).unwrap();
    meta.offset_keys()
        .into_iter()
        .map(|name| {
            let (a, b) = meta.info(&name).unwrap().data_offsets;
            (name, 8 + n + a..8 + n + b)
        })
        .collect()
}

fn header_metadata(bytes: &[u8]) -> HashMap<String, String> {
    SafeTensors::read_metadata(bytes)
        .unwrap()
        .1
        .metadata()
        .clone()
        .unwrap_or_default()
}

fn predictions(m: &Model) -> Vec<u32> {
    let (images, shape, _) = batch(99, 3, 3, 8, 10);
    m.predict(&images, shape).unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_flipped_data_byte_fails_every_load_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet8.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let mut m = trained(3, 2);
    m.save_checkpoint(&path, BTreeMap::new()).unwrap();
    let valid = std::fs::read(&path).unwrap();
    let ranges = data_ranges(&valid);
    assert!(ranges.iter().any(|(n, _)| n.starts_with("optimizer.momentum.")));
    let mut named = std::collections::BTreeSet::new();
    for _ in 0..30 {
        // Any tensor: weights, running statistics, counters, momentum buffers.
        let (name, range) = &ranges[rng.random_range(0..ranges.len())];
        let mut bytes = valid.clone();
        bytes[rng.random_range(range.clone())] ^= 1 << rng.random_range(0..8);
        std::fs::write(&path, &bytes).unwrap();
        let e = Model::load_checkpoint(&path, DEV).err().unwrap().to_string();
        assert!(
            e.contains("resnet8.safetensors") && e.contains(&format!("tensor `{name}`")) && e.contains("checksum"),
            "{e}"
        );
        let mut other = trained(4, 0);
        let before = predictions(&other);
        let e = other.load_weights(&path).unwrap_err().to_string();
        assert!(e.contains(&format!("`{name}`")), "{e}");
        assert_eq!(predictions(&other), before, "a refused load must not change the model");
        named.insert(name.clone());
    }
    assert!(named.len() > 10, "{named:?}");
    std::fs::write(&path, &valid).unwrap();
    assert_eq!(
        predictions(&Model::load_checkpoint(&path, DEV).unwrap().0),
        predictions(&m)
    );
}

#[test]
fn a_checkpoint_without_checksums_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.safetensors");
    let (images, shape, labels) = batch(7, 6, 3, 8, 10);
    let mut m = trained(5, 2);
    m.save_checkpoint(&path, BTreeMap::new()).unwrap();
    // Rewritten as a build before checksums (or PyTorch) would have: same tensors, no checksums.
    let bytes = std::fs::read(&path).unwrap();
    let mut meta = header_metadata(&bytes);
    assert!(meta.remove(CHECKSUMS_KEY).is_some());
    let st = SafeTensors::deserialize(&bytes).unwrap();
    std::fs::write(&path, safetensors::serialize(st.tensors(), Some(meta)).unwrap()).unwrap();

    let (mut back, meta) = Model::load_checkpoint(&path, DEV).unwrap();
    assert!(!meta.contains_key(CHECKSUMS_KEY));
    assert_eq!(back.step(), 2);
    assert_eq!(predictions(&back), predictions(&m));
    assert_eq!(
        back.train_step(&images, shape, &labels).unwrap(),
        m.train_step(&images, shape, &labels).unwrap()
    );
}

#[test]
fn weights_only_export_holds_the_state_dict_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (full, only) = (
        dir.path().join("full.safetensors"),
        dir.path().join("weights.safetensors"),
    );
    let mut m = trained(6, 3);
    m.save_checkpoint(&full, BTreeMap::new()).unwrap();
    let extra = BTreeMap::from([("note".to_string(), "for torch".to_string())]);
    m.export_weights(&only, extra.clone()).unwrap();

    let (tensors, meta) = checkpoint::load(&only).unwrap();
    let by_name = |mut v: Vec<NamedTensor>| {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    assert_eq!(by_name(tensors.clone()), by_name(m.state_dict().unwrap()));
    assert!(tensors.iter().all(|t| !t.name.starts_with("optimizer.")));
    let counters: Vec<_> = tensors
        .iter()
        .filter(|t| t.name.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(counters.len(), 9);
    assert!(counters
        .iter()
        .all(|t| t.data == TensorData::I64(vec![3]) && t.shape.is_empty()));
    let raw = std::fs::read(&only).unwrap();
    let st = SafeTensors::deserialize(&raw).unwrap();
    assert_eq!(
        st.tensor("bn1.num_batches_tracked").unwrap().dtype(),
        safetensors::Dtype::I64
    );
    assert_eq!(st.tensor("bn1.running_var").unwrap().dtype(), safetensors::Dtype::F32);
    let keys: Vec<&str> = meta.keys().map(String::as_str).collect();
    assert_eq!(keys, ["format", "note", "spec"]);
    assert_eq!(ResNetSpec::from_json(&meta["spec"]).unwrap(), *m.spec());
    // The full checkpoint has momentum buffers beside the same state dict.
    let (full_tensors, full_meta) = checkpoint::load(&full).unwrap();
    assert_eq!(full_tensors.len(), tensors.len() + m.parameters().len());
    assert!(full_meta.contains_key("step") && full_meta.contains_key("optimizer"));

    // Deterministic: the same weights, the same bytes.
    m.export_weights(&only, extra.clone()).unwrap();
    assert_eq!(std::fs::read(&only).unwrap(), raw);
    // Checksummed like every save.
    assert!(header_metadata(&raw).contains_key(CHECKSUMS_KEY));

    // Loads back: the same eval predictions; step 0 and no momentum (the next step differs from
    // the full checkpoint's, which resumes exactly).
    let (back, _) = Model::load_checkpoint(&only, DEV).unwrap();
    assert_eq!(back.step(), 0);
    assert_eq!(predictions(&back), predictions(&m));
    let mut fresh = Model::new(m.spec().clone(), 77, DEV).unwrap();
    assert_ne!(predictions(&fresh), predictions(&m));
    fresh.load_weights(&only).unwrap();
    assert_eq!(predictions(&fresh), predictions(&m));
}

/// `[name, shape, dtype]` rows as `scripts/make_fixtures.py` stores torchvision's state dicts.
fn torchvision_names(arch: &str) -> Vec<(String, Vec<usize>, String)> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/imagenet_logits.safetensors");
    let (_, meta) = checkpoint::load(&fixture).unwrap();
    serde_json::from_str(&meta[&format!("{arch}.names")]).unwrap()
}

#[test]
fn resnet18_weights_only_export_has_torchvisions_keys_shapes_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    let m = Model::new(ResNetSpec::imagenet(18, ShortcutOption::B, 3, 1000).unwrap(), 0, DEV).unwrap();
    m.export_weights(&path, BTreeMap::new()).unwrap();
    let raw = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&raw).unwrap();
    let mut ours: Vec<(String, Vec<usize>, String)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), format!("{:?}", view.dtype())))
        .collect();
    let mut want = torchvision_names("resnet18");
    assert_eq!(want.len(), 122);
    ours.sort();
    want.sort();
    assert_eq!(ours, want, "strict=True needs exactly torchvision's keys");
}
