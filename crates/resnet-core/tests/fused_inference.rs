//! The inference path (`nn::fold`: batch norm folded into the convolutions, bias, residual and
//! activation in the convolution's epilogue) against the recorded eval forward it replaces, on
//! random weights and non-trivial batch-norm parameters and statistics, for every kind of net;
//! and the folded weights' cache against every way the model's tensors change.
//!
//! The reference is the same net's eval forward with gradients recorded: that pass never takes
//! the inference path (see `Ctx::inference`). Errors are measured per element against
//! `|want| + rms(want)`, as the golden tests do.

mod common;
mod harness;

use common::batch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resnet_core::io::checkpoint::TensorData;
use resnet_core::nn::{ActivationKind, BottleneckStride, Ctx, ResNetSpec, ShortcutOption};
use resnet_core::optim::{Sgd, SgdConfig};
use resnet_core::{ops, Device, Model, Tensor};

const TOL: f32 = 1e-5;
const CLASSES: usize = 10;

/// max over elements of |got - want| / (|want| + rms(want)).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    assert!(got.iter().all(|v| v.is_finite()), "non-finite output");
    let rms = (want.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt();
    got.iter()
        .zip(want)
        .map(|(&g, &w)| ((g - w).abs() as f64 / (w.abs() as f64 + rms + 1e-30)) as f32)
        .fold(0.0, f32::max)
}

/// Gives every batch norm random gamma (either sign), beta, running mean and running variance,
/// none of them near the defaults, so a fold that dropped or misplaced any of them shows.
fn randomise_batch_norms(model: &mut Model, seed: u64) {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut state = model.state_dict().unwrap();
    let prefixes: Vec<String> = state
        .iter()
        .filter_map(|t| t.name.strip_suffix("running_mean").map(str::to_string))
        .collect();
    for t in &mut state {
        let Some(prefix) = prefixes.iter().find(|p| t.name.starts_with(p.as_str())) else {
            continue;
        };
        let field = &t.name[prefix.len()..];
        let TensorData::F32(v) = &mut t.data else { continue };
        for x in v.iter_mut() {
            *x = match field {
                "weight" => r.random_range(0.5f32..1.5) * if r.random_bool(0.2) { -1.0 } else { 1.0 },
                "bias" => r.random_range(-0.5f32..0.5),
                "running_mean" => r.random_range(-0.5f32..0.5),
                "running_var" => r.random_range(0.3f32..2.5),
                _ => *x,
            };
        }
    }
    model.load_state_dict(&state).unwrap();
}

fn model(spec: &ResNetSpec, dev: Device) -> Model {
    let mut m = Model::new(spec.clone(), 7, dev).unwrap();
    randomise_batch_norms(&mut m, 11);
    m
}

/// The recorded eval forward: the path the inference path replaces.
fn unfused(m: &Model, images: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let x = Tensor::from_vec(images, &shape, m.device()).unwrap();
    let logits = m.net().forward(&x, &Ctx::eval()).unwrap();
    assert!(logits.requires_grad(), "the reference must be the recorded path");
    logits.to_vec().unwrap()
}

/// Checks `predict` against the unfused forward; returns the error.
fn check(what: &str, m: &Model, n: usize, c: usize, hw: usize) -> f32 {
    let (images, shape, _) = batch(3, n, c, hw, CLASSES);
    let got = m.predict(&images, shape).unwrap();
    let want = unfused(m, &images, shape);
    let err = rel_err(&got, &want);
    eprintln!("{what} {shape:?}: max relative error {err:.2e}");
    assert!(err <= TOL, "{what} {shape:?}: fused vs unfused error {err:e}");
    err
}

fn cifar(shortcut: ShortcutOption, plain: bool, c: usize) -> ResNetSpec {
    ResNetSpec::cifar(8, shortcut, plain, c, CLASSES).unwrap()
}

fn bottleneck(stride: BottleneckStride, shortcut: ShortcutOption) -> ResNetSpec {
    common::small_bottleneck_net(shortcut, stride, CLASSES)
}

fn cifar_options_a_b_c(dev: Device) {
    let mut errors = Vec::new();
    for option in [ShortcutOption::A, ShortcutOption::B, ShortcutOption::C] {
        let m = model(&cifar(option, false, 3), dev);
        for (n, hw) in [(1, 32), (5, 32), (3, 13)] {
            errors.push(check(&format!("ResNet-8 option {option:?}"), &m, n, 3, hw));
        }
    }
    // The fold rounds differently from batch norm's kernels: an error of exactly zero would mean
    // `predict` never took the inference path.
    assert!(errors.iter().any(|&e| e > 0.0), "predict ran the unfused path");
}

fn plain_and_one_channel_nets(dev: Device) {
    let m = model(&cifar(ShortcutOption::A, true, 3), dev);
    check("plain-8", &m, 4, 3, 15);
    let m = model(&cifar(ShortcutOption::B, false, 1), dev);
    check("ResNet-8 1x28x28", &m, 6, 1, 28);
    check("ResNet-8 1x28x28", &m, 1, 1, 28);
}

fn bottleneck_nets(dev: Device) {
    for (stride, option) in [
        (BottleneckStride::Conv3x3, ShortcutOption::B),
        (BottleneckStride::Conv1x1, ShortcutOption::C),
        (BottleneckStride::Conv3x3, ShortcutOption::A),
    ] {
        let m = model(&bottleneck(stride, option), dev);
        check(&format!("bottleneck {stride:?} {option:?}"), &m, 1, 3, 33);
        check(&format!("bottleneck {stride:?} {option:?}"), &m, 3, 3, 40);
    }
}

/// Pre-activation nets keep the recorded path's kernels except for the ImageNet stem (conv-BN-act,
/// folded); they must still agree.
fn pre_activation_nets(dev: Device) {
    let m = model(&cifar(ShortcutOption::B, false, 3).with_pre_activation(true), dev);
    check("pre-activation ResNet-8", &m, 3, 3, 17);
    let m = model(
        &bottleneck(BottleneckStride::Conv3x3, ShortcutOption::B).with_pre_activation(true),
        dev,
    );
    check("pre-activation bottleneck", &m, 2, 3, 35);
}

/// Without batch norm (the epilogue alone: residual and activation), and with tanh and sigmoid.
fn nets_without_batch_norm_and_other_activations(dev: Device) {
    let m = model(&cifar(ShortcutOption::A, false, 3).with_batch_norm(false), dev);
    check("ResNet-8 without batch norm", &m, 3, 3, 11);
    let m = model(
        &bottleneck(BottleneckStride::Conv3x3, ShortcutOption::B).with_batch_norm(false),
        dev,
    );
    check("bottleneck without batch norm", &m, 2, 3, 33);
    for act in [ActivationKind::Tanh, ActivationKind::Sigmoid] {
        let mut spec = cifar(ShortcutOption::C, false, 3);
        spec.activation = act;
        check(&format!("ResNet-8 {act:?}"), &model(&spec, dev), 3, 3, 12);
    }
}

/// `evaluate_batch` scores the inference path's logits: the same loss and hits as computed here
/// from `predict`'s.
fn evaluation_scores_the_inference_logits(dev: Device) {
    let m = model(&cifar(ShortcutOption::A, false, 3), dev);
    let (images, shape, labels) = batch(9, 13, 3, 32, CLASSES);
    let logits = m.predict(&images, shape).unwrap();
    let stats = m.evaluate_batch(&images, shape, &labels).unwrap();
    let (mut loss, mut top1, mut top5) = (0.0f64, 0, 0);
    for (row, &label) in logits.chunks(CLASSES).zip(&labels) {
        let max = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let lse = row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
        loss += lse - row[label as usize] as f64;
        let above = row.iter().filter(|&&v| v > row[label as usize]).count();
        top1 += usize::from(above < 1);
        top5 += usize::from(above < 5);
    }
    assert!(
        (stats.loss_sum - loss).abs() <= 1e-5 * loss.abs().max(1.0),
        "loss {} vs {loss}",
        stats.loss_sum
    );
    assert_eq!((stats.top1, stats.top5, stats.count), (top1, top5, 13));
}

/// `predict` after a change equals the unfused forward after it, and differs from `predict`
/// before it: the folded weights were refolded.
fn assert_refolded(what: &str, m: &Model, images: &[f32], shape: [usize; 4], before: &[f32]) {
    let after = m.predict(images, shape).unwrap();
    let want = unfused(m, images, shape);
    let err = rel_err(&after, &want);
    eprintln!("{what}: max relative error after the change {err:.2e}");
    assert!(err <= TOL, "{what}: stale folded weights? error {err:e}");
    assert!(rel_err(before, &want) > 1e-3, "{what}: the change changed nothing");
}

fn folded_weights_follow_every_change(dev: Device) {
    let mut m = model(&cifar(ShortcutOption::B, false, 3), dev);
    let (images, shape, labels) = batch(5, 4, 3, 16, CLASSES);

    // A training step: SGD on the weights, new running statistics.
    let before = m.predict(&images, shape).unwrap();
    m.train_step(&images, shape, &labels).unwrap();
    assert_refolded("train_step", &m, &images, shape, &before);

    // A training-mode forward alone: running statistics only.
    let before = m.predict(&images, shape).unwrap();
    let x = Tensor::from_vec(&images, &shape, dev).unwrap();
    m.forward(&x, true).unwrap();
    assert_refolded("training-mode forward", &m, &images, shape, &before);

    // A custom loop's own SGD over one parameter the model handed out.
    let before = m.predict(&images, shape).unwrap();
    let w = m.parameter("layer1.0.conv1.weight").unwrap();
    let mut sgd = Sgd::new(
        vec![w],
        SgdConfig {
            lr: 0.5,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    let y = ops::labels_tensor(&labels, CLASSES, dev).unwrap();
    ops::cross_entropy(&m.forward(&x, false).unwrap(), &y)
        .unwrap()
        .backward()
        .unwrap();
    sgd.step().unwrap();
    assert_refolded("a custom SGD step", &m, &images, shape, &before);

    // Loading a state dict.
    let before = m.predict(&images, shape).unwrap();
    randomise_batch_norms(&mut m, 99);
    assert_refolded("load_state_dict", &m, &images, shape, &before);
}

/// A mismatched residual is an error naming both shapes, not a panic in a kernel.
fn a_misshapen_residual_is_an_error(dev: Device) {
    let m = model(&cifar(ShortcutOption::B, false, 3), dev);
    let conv = &m.net().conv1;
    let x = Tensor::from_vec(&vec![0.5; 2 * 3 * 8 * 8], &[2, 3, 8, 8], dev).unwrap();
    let r = Tensor::from_vec(&vec![0.0; 2 * 16 * 8 * 7], &[2, 16, 8, 7], dev).unwrap();
    let e = resnet_core::autograd::no_grad(|| conv.forward_inference(&x, m.net().bn1.as_ref(), Some(&r), None))
        .expect_err("a misshapen residual must be refused");
    assert!(e.to_string().contains("[2, 16, 8, 7]"), "{e}");
}

type DeviceCase = (&'static str, fn(Device));

fn main() {
    let on_each_device: [DeviceCase; 8] = [
        ("cifar_options_a_b_c", cifar_options_a_b_c),
        ("plain_and_one_channel_nets", plain_and_one_channel_nets),
        ("bottleneck_nets", bottleneck_nets),
        ("pre_activation_nets", pre_activation_nets),
        (
            "nets_without_batch_norm_and_other_activations",
            nets_without_batch_norm_and_other_activations,
        ),
        (
            "evaluation_scores_the_inference_logits",
            evaluation_scores_the_inference_logits,
        ),
        ("folded_weights_follow_every_change", folded_weights_follow_every_change),
        ("a_misshapen_residual_is_an_error", a_misshapen_residual_is_an_error),
    ];
    harness::run(
        on_each_device
            .into_iter()
            .flat_map(|(name, test)| harness::each_device(name, test)),
    );
}
