//! PyTorch golden fixtures (`fixtures/`, written by `scripts/make_fixtures.py`): every op's output
//! and gradients, one whole ResNet-20 SGD step, torchvision ResNet-18/50 logits, and two
//! pre-activation nets (logits and one SGD step), on the CPU and (where there is an adapter;
//! lavapipe by default) on the GPU.
//!
//! Errors are measured per element against `|want| + rms(want)` (so values that cancel to near
//! zero are not held to an impossible bound): at most 1e-4 for ops and logits, 1e-3 for the step.

#[cfg(feature = "gpu")]
mod gpu_common;
mod harness;

use resnet_core::io::checkpoint::{self, NamedTensor, TensorData};
use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::ops::{self, BatchNormArgs, BnMode};
use resnet_core::optim::{Sgd, SgdConfig};
use resnet_core::{Device, Model, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;

const OPS_TOL: f32 = 1e-4;
const STEP_TOL: f32 = 1e-3;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

struct Fixture {
    tensors: BTreeMap<String, NamedTensor>,
    meta: BTreeMap<String, String>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let (tensors, meta) =
            checkpoint::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e} (run scripts/make_fixtures.py)"));
        Fixture {
            tensors: tensors.into_iter().map(|t| (t.name.clone(), t)).collect(),
            meta,
        }
    }

    fn get(&self, name: &str) -> &NamedTensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no tensor {name}"))
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        match &self.get(name).data {
            TensorData::F32(v) => v.clone(),
            TensorData::I64(_) => panic!("{name} is not f32"),
        }
    }

    fn i64(&self, name: &str) -> Vec<i64> {
        match &self.get(name).data {
            TensorData::I64(v) => v.clone(),
            TensorData::F32(_) => panic!("{name} is not i64"),
        }
    }

    fn shape(&self, name: &str) -> Vec<usize> {
        self.get(name).shape.clone()
    }

    fn constant(&self, name: &str, dev: Device) -> Tensor {
        Tensor::from_vec(&self.f32(name), &self.shape(name), dev).unwrap()
    }

    fn leaf(&self, name: &str, dev: Device) -> Tensor {
        Tensor::parameter(&self.f32(name), &self.shape(name), dev).unwrap()
    }
}

/// max over elements of |got - want| / (|want| + rms(want)).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    let rms = (want.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt() as f32;
    got.iter()
        .zip(want)
        .map(|(a, b)| {
            if a.is_nan() {
                f32::INFINITY
            } else {
                (a - b).abs() / (b.abs() + rms).max(1e-30)
            }
        })
        .fold(0.0, f32::max)
}

/// Asserts closeness and records the worst error seen.
struct Checker {
    tol: f32,
    worst: (f32, String),
    label: String,
}

impl Checker {
    fn new(label: impl Into<String>, tol: f32) -> Self {
        Checker {
            tol,
            worst: (0.0, String::new()),
            label: label.into(),
        }
    }

    fn check(&mut self, what: &str, got: &[f32], want: &[f32]) {
        let e = rel_err(got, want);
        assert!(
            e <= self.tol,
            "{}: {what}: relative error {e:.3e} > {:.0e}",
            self.label,
            self.tol
        );
        if e >= self.worst.0 {
            self.worst = (e, what.to_string());
        }
    }

    fn report(&self) {
        eprintln!(
            "{}: max relative error {:.3e} ({})",
            self.label, self.worst.0, self.worst.1
        );
    }
}

/// sum(out * r) as a [1, 1] tensor (via a linear map), so backward seeds `out` with `r`.
fn weighted_sum(out: &Tensor, r: &[f32]) -> Tensor {
    let n = out.numel();
    let flat = ops::reshape(out, &[1, n]).unwrap();
    let rt = Tensor::from_vec(r, &[1, n], out.device()).unwrap();
    ops::linear(&flat, &rt, None).unwrap()
}

fn grad(t: &Tensor) -> Vec<f32> {
    t.grad().expect("backward reached the tensor").to_vec().unwrap()
}

fn run_ops(dev: Device) {
    let f = Fixture::load("ops.safetensors");
    let cases: Vec<serde_json::Value> = serde_json::from_str(&f.meta["cases"]).unwrap();
    let mut c = Checker::new(format!("ops on {dev}"), OPS_TOL);
    let u = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}")) as usize;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let key = |t: &str| format!("{name}.{t}");
        let op = case["op"].as_str().unwrap();
        let mut chk = |t: &str, got: &[f32]| c.check(&key(t), got, &f.f32(&key(t)));
        match op {
            "conv2d" => {
                let (x, w) = (f.leaf(&key("x"), dev), f.leaf(&key("w"), dev));
                let b = case["bias"].as_bool().unwrap().then(|| f.leaf(&key("b"), dev));
                let y = ops::conv2d(&x, &w, b.as_ref(), u(case, "stride"), u(case, "padding")).unwrap();
                assert_eq!(y.shape(), f.shape(&key("y")), "{name}");
                chk("y", &y.to_vec().unwrap());
                weighted_sum(&y, &f.f32(&key("r"))).backward().unwrap();
                chk("dx", &grad(&x));
                chk("dw", &grad(&w));
                if let Some(b) = &b {
                    chk("db", &grad(b));
                }
            }
            "batch_norm2d" => {
                let x = f.leaf(&key("x"), dev);
                let (gamma, beta) = (f.leaf(&key("gamma"), dev), f.leaf(&key("beta"), dev));
                let (rm, rv) = (
                    f.constant(&key("running_mean"), dev),
                    f.constant(&key("running_var"), dev),
                );
                let args = BatchNormArgs {
                    gamma: &gamma,
                    beta: &beta,
                    running_mean: &rm,
                    running_var: &rv,
                    mode: if case["training"].as_bool().unwrap() {
                        BnMode::Train
                    } else {
                        BnMode::Eval
                    },
                    sync: None,
                    momentum: 0.1,
                    eps: 1e-5,
                };
                let y = ops::batch_norm2d(&x, &args).unwrap();
                chk("y", &y.to_vec().unwrap());
                chk("running_mean_after", &rm.to_vec().unwrap());
                chk("running_var_after", &rv.to_vec().unwrap());
                weighted_sum(&y, &f.f32(&key("r"))).backward().unwrap();
                chk("dx", &grad(&x));
                chk("dgamma", &grad(&gamma));
                chk("dbeta", &grad(&beta));
            }
            "max_pool2d" => {
                let x = f.leaf(&key("x"), dev);
                let y = ops::max_pool2d(&x, u(case, "kernel"), u(case, "stride"), u(case, "padding")).unwrap();
                assert_eq!(y.shape(), f.shape(&key("y")), "{name}");
                chk("y", &y.to_vec().unwrap());
                weighted_sum(&y, &f.f32(&key("r"))).backward().unwrap();
                chk("dx", &grad(&x));
            }
            "global_avg_pool" => {
                let x = f.leaf(&key("x"), dev);
                let y = ops::global_avg_pool(&x).unwrap();
                chk("y", &y.to_vec().unwrap());
                weighted_sum(&y, &f.f32(&key("r"))).backward().unwrap();
                chk("dx", &grad(&x));
            }
            "linear" => {
                let (x, w) = (f.leaf(&key("x"), dev), f.leaf(&key("w"), dev));
                let b = case["bias"].as_bool().unwrap().then(|| f.leaf(&key("b"), dev));
                let y = ops::linear(&x, &w, b.as_ref()).unwrap();
                chk("y", &y.to_vec().unwrap());
                weighted_sum(&y, &f.f32(&key("r"))).backward().unwrap();
                chk("dx", &grad(&x));
                chk("dw", &grad(&w));
                if let Some(b) = &b {
                    chk("db", &grad(b));
                }
            }
            "cross_entropy" => {
                let logits = f.leaf(&key("logits"), dev);
                let labels: Vec<i32> = f.i64(&key("labels")).iter().map(|&l| l as i32).collect();
                let y = ops::labels_tensor(&labels, logits.shape()[1], dev).unwrap();
                let loss = ops::cross_entropy(&logits, &y).unwrap();
                chk("loss", &loss.to_vec().unwrap());
                loss.backward().unwrap();
                chk("dlogits", &grad(&logits));
            }
            "shortcut_a" => {
                let x = f.leaf(&key("x"), dev);
                let y = ops::shortcut_a(&x, u(case, "c_out"), u(case, "stride")).unwrap();
                assert_eq!(y.shape(), f.shape(&key("y")), "{name}");
                chk("y", &y.to_vec().unwrap());
                weighted_sum(&y, &f.f32(&key("r"))).backward().unwrap();
                chk("dx", &grad(&x));
            }
            other => panic!("unknown op {other} in the fixture"),
        }
    }
    assert!(cases.len() >= 20, "{} cases", cases.len());
    c.report();
}

fn resnet20(dev: Device) -> Model {
    let spec = ResNetSpec::cifar(20, ShortcutOption::A, false, 3, 10).unwrap();
    let mut m = Model::new(spec, 0, dev).unwrap();
    let (init, _) = checkpoint::load(&fixture("resnet20_init.safetensors")).unwrap();
    m.load_state_dict(&init).unwrap();
    m
}

/// The state dict after the step: parameters, running statistics and num_batches_tracked.
fn check_after(c: &mut Checker, f: &Fixture, m: &Model) {
    let sd = m.state_dict().unwrap();
    let expected = f.tensors.keys().filter(|k| k.starts_with("after.")).count();
    assert_eq!(sd.len(), expected, "state dict size");
    for t in sd {
        let key = format!("after.{}", t.name);
        match &t.data {
            TensorData::F32(v) => c.check(&key, v, &f.f32(&key)),
            TensorData::I64(v) => assert_eq!(v, &f.i64(&key), "{key}"),
        }
    }
}

fn run_resnet20_step(dev: Device) {
    let f = Fixture::load("resnet20_step.safetensors");
    let mut c = Checker::new(format!("ResNet-20 step on {dev}"), STEP_TOL);
    let shape = f.shape("input");
    let labels: Vec<i32> = f.i64("labels").iter().map(|&l| l as i32).collect();

    // Explicitly: forward, loss, backward, every gradient, then SGD over the parameters.
    let m = resnet20(dev);
    let x = f.constant("input", dev);
    let logits = m.forward(&x, true).unwrap();
    c.check("logits", &logits.to_vec().unwrap(), &f.f32("logits"));
    let y = ops::labels_tensor(&labels, 10, dev).unwrap();
    let loss = ops::cross_entropy(&logits, &y).unwrap();
    c.check("loss", &loss.to_vec().unwrap(), &f.f32("loss"));
    loss.backward().unwrap();
    let params = m.parameters();
    let grads = f.tensors.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(params.len(), grads, "one gradient per parameter");
    for (name, p) in &params {
        c.check(&format!("grad.{name}"), &grad(p), &f.f32(&format!("grad.{name}")));
    }
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-4,
        ..SgdConfig::default()
    };
    let mut sgd = Sgd::new(params.into_iter().map(|(_, t)| t).collect(), cfg.clone()).unwrap();
    sgd.step().unwrap();
    check_after(&mut c, &f, &m);

    // The fast path: Model::train_step.
    let mut m = resnet20(dev);
    m.configure_optimizer(cfg).unwrap();
    let x = f.f32("input");
    let stats = m
        .train_step(&x, [shape[0], shape[1], shape[2], shape[3]], &labels)
        .unwrap();
    c.check("train_step loss", &[stats.loss], &f.f32("loss"));
    check_after(&mut c, &f, &m);
    c.report();
}

// --- hash_init: scripts/make_fixtures.py's deterministic weights --------------------------------

fn fnv1a32(s: &str) -> u32 {
    s.bytes()
        .fold(0x811C_9DC5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7FEB_352D);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846C_A68B);
    x ^ (x >> 16)
}

fn hash_init(name: &str, shape: &[usize], dtype: &str) -> NamedTensor {
    if dtype == "I64" {
        return NamedTensor::i64(name, shape.to_vec(), vec![7]);
    }
    let fan_in: usize = shape[1..].iter().product();
    let (scale, offset) = if name.ends_with("running_var") {
        (0.25, 1.0)
    } else if name.ends_with("running_mean") || name.ends_with(".bias") {
        (0.125, 0.0)
    } else if shape.len() == 1 {
        (0.25, 1.0)
    } else if name.starts_with("fc.") {
        ((1.0 / fan_in as f64).sqrt() as f32, 0.0)
    } else {
        ((6.0 / fan_in as f64).sqrt() as f32, 0.0)
    };
    let seed = fnv1a32(name);
    let n: usize = shape.iter().product();
    let v = (0..n as u32)
        .map(|i| {
            let h = lowbias32(i.wrapping_mul(0x9E37_79B1).wrapping_add(seed)) >> 8;
            let u = h as f32 / 8_388_608.0 - 1.0;
            u * scale + offset
        })
        .collect();
    NamedTensor::f32(name, shape.to_vec(), v)
}

/// Writes the hash-initialised torchvision state dict of `arch` to `dir`.
fn torchvision_state_dict(f: &Fixture, arch: &str, dir: &std::path::Path) -> PathBuf {
    let names: Vec<(String, Vec<usize>, String)> = serde_json::from_str(&f.meta[&format!("{arch}.names")]).unwrap();
    let sd: Vec<NamedTensor> = names.iter().map(|(n, s, d)| hash_init(n, s, d)).collect();
    let TensorData::F32(probe) = &sd[0].data else {
        panic!("conv1.weight first")
    };
    assert_eq!(sd[0].name, "conv1.weight");
    assert_eq!(
        &probe[..16],
        &f.f32(&format!("{arch}.probe.conv1.weight"))[..],
        "hash_init differs from the Python one"
    );
    let path = dir.join(format!("{arch}.safetensors"));
    checkpoint::save(&path, &sd, &BTreeMap::new()).unwrap();
    path
}

fn torchvision_resnet18_and_50_logits_match_pytorch(dev: Device) {
    let f = Fixture::load("imagenet_logits.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let s = f.shape("input");
    let input = f.f32("input");
    for (arch, depth) in [("resnet18", 18), ("resnet50", 50)] {
        let path = torchvision_state_dict(&f, arch, dir.path());
        let mut c = Checker::new(format!("{arch} logits on {dev}"), OPS_TOL);
        let m = Model::load_torchvision(depth, &path, dev).unwrap();
        assert_eq!(
            m.spec(),
            &ResNetSpec::imagenet(depth, ShortcutOption::B, 3, 1000).unwrap()
        );
        let logits = m.predict(&input, [s[0], s[1], s[2], s[3]]).unwrap();
        c.check("logits", &logits, &f.f32(&format!("{arch}.logits")));
        c.report();
    }
    if dev != Device::Cpu {
        return; // The messages below do not depend on the device: checked once.
    }
    // The wrong depth names the keys that do not fit.
    let r18 = dir.path().join("resnet18.safetensors");
    let msg = Model::load_torchvision(34, &r18, Device::Cpu)
        .err()
        .expect("ResNet-18 weights are no ResNet-34")
        .to_string();
    assert!(msg.contains("missing keys: layer1.2.conv1.weight"), "{msg}");
    let r50 = dir.path().join("resnet50.safetensors");
    let msg = Model::load_torchvision(18, &r50, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("resnet50.safetensors")
            && msg.contains("unexpected keys: layer1.0.bn3.bias")
            && msg.contains("misshapen keys: layer1.0.conv1.weight"),
        "{msg}"
    );
}

// --- pre-activation nets (He et al. 2016) --------------------------------------------------------

/// A pre-activation fixture: the model from its `spec`, with the hash-initialised weights its
/// `names` list, checked name for name and shape for shape against our state dict.
fn preact_model(f: &Fixture, dev: Device) -> Model {
    let spec = ResNetSpec::from_json(&f.meta["spec"]).unwrap();
    assert!(spec.pre_activation);
    let names: Vec<(String, Vec<usize>, String)> = serde_json::from_str(&f.meta["names"]).unwrap();
    let sd: Vec<NamedTensor> = names.iter().map(|(n, s, d)| hash_init(n, s, d)).collect();
    let mut m = Model::new(spec, 0, dev).unwrap();
    let ours: Vec<(String, Vec<usize>)> = m.state_dict().unwrap().into_iter().map(|t| (t.name, t.shape)).collect();
    let theirs: Vec<(String, Vec<usize>)> = names.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect();
    assert_eq!(ours, theirs, "PyTorch's state dict: the same names, shapes and order");
    m.load_state_dict(&sd).unwrap();
    m
}

fn run_preact(file: &str, dev: Device) {
    let f = Fixture::load(file);
    let mut c = Checker::new(format!("{file} on {dev}"), STEP_TOL);
    let s = f.shape("input");
    let shape = [s[0], s[1], s[2], s[3]];
    let input = f.f32("input");
    let labels: Vec<i32> = f.i64("labels").iter().map(|&l| l as i32).collect();

    // Eval mode, before the step.
    let m = preact_model(&f, dev);
    let mut logits = Checker::new(format!("{file} eval logits on {dev}"), OPS_TOL);
    logits.check("eval.logits", &m.predict(&input, shape).unwrap(), &f.f32("eval.logits"));
    logits.report();

    // One training step, explicitly: forward, loss, every gradient, SGD.
    let x = f.constant("input", dev);
    let out = m.forward(&x, true).unwrap();
    c.check("logits", &out.to_vec().unwrap(), &f.f32("logits"));
    let classes = m.spec().num_classes;
    let loss = ops::cross_entropy(&out, &ops::labels_tensor(&labels, classes, dev).unwrap()).unwrap();
    c.check("loss", &loss.to_vec().unwrap(), &f.f32("loss"));
    loss.backward().unwrap();
    let params = m.parameters();
    assert_eq!(
        params.len(),
        f.tensors.keys().filter(|k| k.starts_with("grad.")).count()
    );
    for (name, p) in &params {
        c.check(&format!("grad.{name}"), &grad(p), &f.f32(&format!("grad.{name}")));
    }
    let cfg = SgdConfig::from_json(&f.meta["optimizer"]).unwrap();
    let mut sgd = Sgd::new(params.into_iter().map(|(_, t)| t).collect(), cfg.clone()).unwrap();
    sgd.step().unwrap();
    check_after(&mut c, &f, &m);

    // The fast path.
    let mut m = preact_model(&f, dev);
    m.configure_optimizer(cfg).unwrap();
    let stats = m.train_step(&input, shape, &labels).unwrap();
    c.check("train_step loss", &[stats.loss], &f.f32("loss"));
    check_after(&mut c, &f, &m);
    c.report();
}

fn pre_activation_nets_match_pytorch(dev: Device) {
    for file in ["preresnet8_cifar.safetensors", "preresnet_bottleneck.safetensors"] {
        run_preact(file, dev);
    }
}

fn main() {
    harness::run(
        [
            harness::each_device("every_op_matches_pytorch", run_ops),
            harness::each_device("resnet20_sgd_step_matches_pytorch", run_resnet20_step),
            harness::each_device(
                "torchvision_resnet18_and_50_logits_match_pytorch",
                torchvision_resnet18_and_50_logits_match_pytorch,
            ),
            harness::each_device("pre_activation_nets_match_pytorch", pre_activation_nets_match_pytorch),
        ]
        .into_iter()
        .flatten(),
    )
}
