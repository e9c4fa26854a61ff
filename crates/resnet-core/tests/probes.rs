//! The probes behind the paper's Figure 7 and vanishing-gradient plots: `Model::layer_responses`
//! (every convolution's response: names, order, values against the ops called by hand, eval vs
//! training statistics) and `Model::gradient_norms` (against an explicit forward/backward), and
//! that neither changes the model in any way.

#[cfg(feature = "gpu")]
mod gpu_common;
mod harness;

mod common;

use common::batch;
use resnet_core::autograd::no_grad;
use resnet_core::backend::Activation;
use resnet_core::io::checkpoint::{NamedTensor, TensorData};
use resnet_core::model::{GradNorm, LayerResponse};
use resnet_core::nn::{BnMode, Ctx, ResNetSpec, ShortcutOption};
use resnet_core::ops::{self, BatchNormArgs};
use resnet_core::{fused, Device, Model, Tensor};

const DEV: Device = Device::Cpu;

fn cifar(depth: usize, option: ShortcutOption, plain: bool, pre: bool) -> ResNetSpec {
    ResNetSpec::cifar(depth, option, plain, 3, 10)
        .unwrap()
        .with_pre_activation(pre)
}

/// A model a few steps into training, so running statistics and momentum are not the initial ones.
fn trained(spec: &ResNetSpec, seed: u64) -> Model {
    let mut m = Model::new(spec.clone(), seed, DEV).unwrap();
    let (images, shape, labels) = batch(seed + 100, 6, spec.in_channels, 8, spec.num_classes);
    for _ in 0..2 {
        m.train_step(&images, shape, &labels).unwrap();
    }
    m
}

/// Everything a probe must leave alone: the state dict (parameters, running statistics,
/// counters), the step, which parameters hold a gradient, and the predictions.
type Snapshot = (Vec<NamedTensor>, u64, Vec<Option<Vec<f32>>>, Vec<f32>);

fn snapshot(m: &Model, images: &[f32], shape: [usize; 4]) -> Snapshot {
    let grads = m
        .parameters()
        .iter()
        .map(|(_, p)| p.grad().map(|g| g.to_vec().unwrap()))
        .collect();
    (
        m.state_dict().unwrap(),
        m.step(),
        grads,
        m.predict(images, shape).unwrap(),
    )
}

fn names(r: &[LayerResponse]) -> Vec<&str> {
    r.iter().map(|l| l.name.as_str()).collect()
}

/// conv1, then each block's convolutions (and its projection, where it has one).
fn expected_names(blocks: &[(usize, usize, usize, bool)]) -> Vec<String> {
    let mut v = vec!["conv1".to_string()];
    for &(stage, count, convs, projection_first) in blocks {
        for j in 0..count {
            for k in 1..=convs {
                v.push(format!("layer{stage}.{j}.conv{k}"));
            }
            if projection_first && j == 0 {
                v.push(format!("layer{stage}.{j}.downsample.0"));
            }
        }
    }
    v
}

fn responses_name_every_convolution_in_layer_order() {
    let (images, shape, _) = batch(1, 4, 3, 8, 10);
    // ResNet-20 / plain-20 / PreResNet-20, option A: 19 convolutions, all 3x3.
    let twenty = expected_names(&[(1, 3, 2, false), (2, 3, 2, false), (3, 3, 2, false)]);
    for (plain, pre) in [(false, false), (true, false), (false, true), (true, true)] {
        let spec = cifar(20, ShortcutOption::A, plain, pre);
        let m = Model::new(spec.clone(), 0, DEV).unwrap();
        for training in [false, true] {
            let r = m.layer_responses(&images, shape, training).unwrap();
            assert_eq!(names(&r), twenty, "{} training={training}", spec.name());
            assert!(r.iter().all(|l| l.kernel == 3), "{}", spec.name());
            assert!(r.iter().all(|l| l.std > 0.0 && l.std.is_finite() && l.mean.is_finite()));
        }
    }
    // Option B: the two projections, 1x1, after their block's convolutions.
    let m = Model::new(cifar(8, ShortcutOption::B, false, false), 0, DEV).unwrap();
    let r = m.layer_responses(&images, shape, false).unwrap();
    assert_eq!(
        names(&r),
        expected_names(&[(1, 1, 2, false), (2, 1, 2, true), (3, 1, 2, true)])
    );
    let kernels: Vec<usize> = r.iter().map(|l| l.kernel).collect();
    assert_eq!(kernels, [3, 3, 3, 3, 3, 1, 3, 3, 1]);
    // A bottleneck net with an ImageNet stem, pre-activation and not.
    for pre in [false, true] {
        let mut spec = ResNetSpec::imagenet(50, ShortcutOption::B, 3, 5)
            .unwrap()
            .with_pre_activation(pre);
        spec.stem_width = 8;
        spec.stages.truncate(2);
        spec.stages[0].width = 4;
        spec.stages[0].count = 2;
        spec.stages[1].width = 8;
        spec.stages[1].count = 1;
        let m = Model::new(spec, 0, DEV).unwrap();
        let (images, shape, _) = batch(2, 2, 3, 16, 5);
        let r = m.layer_responses(&images, shape, true).unwrap();
        assert_eq!(names(&r), expected_names(&[(1, 2, 3, true), (2, 1, 3, true)]));
        let kernels: Vec<usize> = r.iter().map(|l| l.kernel).collect();
        assert_eq!(kernels, [7, 1, 3, 1, 1, 1, 3, 1, 1, 3, 1, 1]);
    }
}

fn bn_args<'a>(
    gamma: &'a Tensor,
    beta: &'a Tensor,
    rm: &'a Tensor,
    rv: &'a Tensor,
    training: bool,
) -> BatchNormArgs<'a> {
    BatchNormArgs {
        gamma,
        beta,
        running_mean: rm,
        running_var: rv,
        mode: if training { BnMode::Train } else { BnMode::Eval },
        sync: None,
        momentum: 0.1,
        eps: 1e-5,
    }
}

fn mean_std(t: &Tensor) -> (f64, f64) {
    let v = t.to_vec().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The model's tensor `name` (parameter or buffer) as a fresh constant.
fn tensor(m: &Model, name: &str) -> Tensor {
    let sd = m.state_dict().unwrap();
    let t = sd
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no {name}"));
    let TensorData::F32(v) = &t.data else { panic!("{name}") };
    Tensor::from_vec(v, &t.shape, DEV).unwrap()
}

fn close(got: &LayerResponse, (mean, std): (f64, f64)) {
    assert!(
        (got.std - std).abs() <= 1e-5 * std && (got.mean - mean).abs() <= 1e-5 * (std + mean.abs()),
        "{}: got mean {} std {}, by hand mean {mean} std {std}",
        got.name,
        got.mean,
        got.std
    );
}

fn responses_equal_the_ops_called_by_hand() {
    let (images, shape, _) = batch(3, 5, 3, 8, 10);
    for pre in [false, true] {
        let m = trained(&cifar(8, ShortcutOption::A, false, pre), 4);
        let x = Tensor::from_vec(&images, &shape, DEV).unwrap();
        let t = |n: &str| tensor(&m, n);
        for training in [false, true] {
            let r = m.layer_responses(&images, shape, training).unwrap();
            // Batch norm of `z` with the layer's statistics (or the batch's) and ReLU.
            let bn = |z: &Tensor, prefix: &str| {
                let (g, b) = (t(&format!("{prefix}.weight")), t(&format!("{prefix}.bias")));
                let (rm, rv) = (
                    t(&format!("{prefix}.running_mean")),
                    t(&format!("{prefix}.running_var")),
                );
                ops::batch_norm2d(z, &bn_args(&g, &b, &rm, &rv, training)).unwrap()
            };
            let conv = |y: &Tensor, name: &str, stride| ops::conv2d(y, &t(name), None, stride, 1).unwrap();
            no_grad(|| {
                let stem = conv(&x, "conv1.weight", 1);
                if pre {
                    // Pre-activation: the convolutions' outputs.
                    close(&r[0], mean_std(&stem));
                    let h = ops::relu(&bn(&stem, "layer1.0.bn1")).unwrap();
                    let z1 = conv(&h, "layer1.0.conv1.weight", 1);
                    close(&r[1], mean_std(&z1));
                    let z2 = conv(
                        &ops::relu(&bn(&z1, "layer1.0.bn2")).unwrap(),
                        "layer1.0.conv2.weight",
                        1,
                    );
                    close(&r[2], mean_std(&z2));
                    // layer2.0's first convolution sees the pre-activated sum of layer1.0.
                    let s = ops::add(&z2, &stem).unwrap();
                    let h2 = ops::relu(&bn(&s, "layer2.0.bn1")).unwrap();
                    close(&r[3], mean_std(&conv(&h2, "layer2.0.conv1.weight", 2)));
                } else {
                    // Original: batch norm outputs, before the activation or the addition.
                    let r0 = bn(&stem, "bn1");
                    close(&r[0], mean_std(&r0));
                    let y0 = ops::relu(&r0).unwrap();
                    let r1 = bn(&conv(&y0, "layer1.0.conv1.weight", 1), "layer1.0.bn1");
                    close(&r[1], mean_std(&r1));
                    let r2 = bn(
                        &conv(&ops::relu(&r1).unwrap(), "layer1.0.conv2.weight", 1),
                        "layer1.0.bn2",
                    );
                    close(&r[2], mean_std(&r2));
                    let y1 = fused::add_activation(&r2, &y0, Activation::Relu).unwrap();
                    close(
                        &r[3],
                        mean_std(&bn(&conv(&y1, "layer2.0.conv1.weight", 2), "layer2.0.bn1")),
                    );
                }
            });
        }
        // Batch statistics normalise each channel to ~N(beta, gamma^2); running ones do not.
        let (e, tr) = (
            m.layer_responses(&images, shape, false).unwrap(),
            m.layer_responses(&images, shape, true).unwrap(),
        );
        assert!(
            e.iter().zip(&tr).any(|(a, b)| (a.std - b.std).abs() > 1e-3 * b.std),
            "eval == train"
        );
    }
}

fn probes_leave_the_model_exactly_as_it_was() {
    let (images, shape, labels) = batch(5, 4, 3, 8, 10);
    for pre in [false, true] {
        for option in [ShortcutOption::A, ShortcutOption::B] {
            let spec = cifar(8, option, false, pre);
            let m = trained(&spec, 6);
            let before = snapshot(&m, &images, shape);
            m.layer_responses(&images, shape, true).unwrap();
            m.layer_responses(&images, shape, false).unwrap();
            assert!(before == snapshot(&m, &images, shape), "{} responses", spec.name());
            m.gradient_norms(&images, shape, &labels).unwrap();
            let after = snapshot(&m, &images, shape);
            assert!(after.2.iter().all(Option::is_none), "gradients left behind");
            assert!(before == after, "{} gradient norms", spec.name());
            // The optimiser state too: the next step equals that of a twin never probed.
            let (mut m, mut twin) = (m, trained(&spec, 6));
            let (a, b) = (
                m.train_step(&images, shape, &labels).unwrap(),
                twin.train_step(&images, shape, &labels).unwrap(),
            );
            assert_eq!(a, b);
            assert_eq!(m.state_dict().unwrap(), twin.state_dict().unwrap());
        }
    }
    // Gradients a custom loop had accumulated are still there, unchanged.
    let m = trained(&cifar(8, ShortcutOption::A, false, false), 7);
    let x = Tensor::from_vec(&images, &shape, DEV).unwrap();
    let y = ops::labels_tensor(&labels, 10, DEV).unwrap();
    ops::cross_entropy(&m.forward(&x, false).unwrap(), &y)
        .unwrap()
        .backward()
        .unwrap();
    let before = snapshot(&m, &images, shape);
    assert!(before.2.iter().all(Option::is_some));
    m.gradient_norms(&images, shape, &labels).unwrap();
    assert!(before == snapshot(&m, &images, shape));
}

fn gradient_norms_equal_an_explicit_backward() {
    let (images, shape, labels) = batch(8, 6, 3, 8, 10);
    for (spec, convs) in [
        (cifar(20, ShortcutOption::A, false, false), 19),
        (cifar(20, ShortcutOption::A, true, false), 19),
        (cifar(8, ShortcutOption::B, false, true), 9),
        (cifar(8, ShortcutOption::C, false, false), 10),
    ] {
        let m = trained(&spec, 9);
        let norms: Vec<GradNorm> = m.gradient_norms(&images, shape, &labels).unwrap();
        assert_eq!(norms.len(), convs + 1, "{}", spec.name());
        let last = norms.last().unwrap();
        assert_eq!((last.name.as_str(), last.kernel, last.numel), ("fc", 0, 640));
        assert_eq!(norms[0].name, "conv1");
        // The same names and order as the responses, plus fc.
        let r = m.layer_responses(&images, shape, true).unwrap();
        let rn: Vec<&str> = r.iter().map(|l| l.name.as_str()).collect();
        let gn: Vec<&str> = norms[..convs].iter().map(|g| g.name.as_str()).collect();
        assert_eq!(rn, gn);
        // By hand on a twin: forward in training mode, loss, backward, norms of .grad.
        let twin = trained(&spec, 9);
        let x = Tensor::from_vec(&images, &shape, DEV).unwrap();
        let y = ops::labels_tensor(&labels, 10, DEV).unwrap();
        ops::cross_entropy(&twin.forward(&x, true).unwrap(), &y)
            .unwrap()
            .backward()
            .unwrap();
        for g in &norms {
            let p = twin.parameter(&format!("{}.weight", g.name)).unwrap();
            assert_eq!(p.numel(), g.numel);
            let want = p
                .grad()
                .unwrap()
                .to_vec()
                .unwrap()
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(
                (g.norm - want).abs() <= 1e-6 * want && want > 0.0,
                "{} {}: {} vs {want}",
                spec.name(),
                g.name,
                g.norm
            );
        }
    }
}

fn probes_reject_bad_input_without_touching_the_model() {
    let m = trained(&cifar(8, ShortcutOption::A, false, false), 10);
    let (images, shape, labels) = batch(11, 4, 3, 8, 10);
    let before = snapshot(&m, &images, shape);
    let e = m
        .gradient_norms(&images, shape, &[0, 1, 10, 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 10") && e.contains("10 classes"), "{e}");
    let e = m.gradient_norms(&images, shape, &labels[..3]).unwrap_err().to_string();
    assert!(e.contains("3 labels"), "{e}");
    let e = m.layer_responses(&images, [4, 1, 8, 8], false).unwrap_err().to_string();
    assert!(e.contains("3 channel"), "{e}");
    let e = m.layer_responses(&images[1..], shape, true).unwrap_err().to_string();
    assert!(e.contains("767"), "{e}");
    assert!(before == snapshot(&m, &images, shape));
}

/// A hooked forward (the probes' taps on the fused path) computes the same network as a plain
/// one, bit for bit.
fn a_response_hook_changes_no_output() {
    let (images, shape, _) = batch(12, 4, 3, 8, 10);
    for pre in [false, true] {
        for option in [ShortcutOption::A, ShortcutOption::B] {
            let spec = cifar(8, option, false, pre);
            for training in [false, true] {
                let run = |hooked: bool| {
                    let m = trained(&spec, 13);
                    let x = Tensor::from_vec(&images, &shape, DEV).unwrap();
                    let count = std::cell::Cell::new(0);
                    let hook = |_: &str, _: usize, _: &Tensor| count.set(count.get() + 1);
                    let ctx = Ctx {
                        bn_mode: if training { BnMode::Train } else { BnMode::Eval },
                        response_hook: if hooked { Some(&hook) } else { None },
                        batch_norm_sync: None,
                    };
                    let logits = m.net().forward(&x, &ctx).unwrap().to_vec().unwrap();
                    (logits, m.state_dict().unwrap(), count.get())
                };
                let (fused, hooked) = (run(false), run(true));
                assert_eq!(fused.0, hooked.0, "{} training={training}", spec.name());
                assert_eq!(fused.1, hooked.1, "running statistics");
                assert_eq!(
                    (fused.2, hooked.2),
                    (0, if option == ShortcutOption::B { 9 } else { 7 })
                );
            }
        }
    }
}

/// Nets without batch norm: every response is the convolution's output (there is no batch norm
/// to report), the same in eval and training mode; the names and order are those of the nets
/// with batch norm; the hooked forward equals the unhooked one; a gradient norm for every
/// convolution and fc.
fn batch_norm_free_responses_are_the_convolutions_outputs() {
    let (images, shape, labels) = batch(16, 5, 3, 8, 10);
    let x = Tensor::from_vec(&images, &shape, DEV).unwrap();
    for pre in [false, true] {
        let spec = cifar(8, ShortcutOption::B, false, pre).with_batch_norm(false);
        let m = Model::new(spec.clone(), 17, DEV).unwrap();
        let t = |n: &str| tensor(&m, n);
        let r = m.layer_responses(&images, shape, false).unwrap();
        assert_eq!(
            r,
            m.layer_responses(&images, shape, true).unwrap(),
            "no batch statistics"
        );
        assert_eq!(
            names(&r),
            expected_names(&[(1, 1, 2, false), (2, 1, 2, true), (3, 1, 2, true)])
        );
        let conv = |y: &Tensor, name: &str, stride, pad| ops::conv2d(y, &t(name), None, stride, pad).unwrap();
        let relu = |y: &Tensor| ops::relu(y).unwrap();
        no_grad(|| {
            let stem = conv(&x, "conv1.weight", 1, 1);
            close(&r[0], mean_std(&stem));
            if pre {
                // act-conv: the stem is bare, each convolution sees the activated input.
                let h = relu(&stem);
                let z1 = conv(&h, "layer1.0.conv1.weight", 1, 1);
                close(&r[1], mean_std(&z1));
                let z2 = conv(&relu(&z1), "layer1.0.conv2.weight", 1, 1);
                close(&r[2], mean_std(&z2));
                let h2 = relu(&ops::add(&z2, &stem).unwrap());
                let z3 = conv(&h2, "layer2.0.conv1.weight", 2, 1);
                close(&r[3], mean_std(&z3));
                let z4 = conv(&relu(&z3), "layer2.0.conv2.weight", 1, 1);
                close(&r[4], mean_std(&z4));
                // The projection takes the activated input of the block.
                close(&r[5], mean_std(&conv(&h2, "layer2.0.downsample.0.weight", 2, 0)));
            } else {
                // conv-act, ..., conv, + shortcut, act.
                let y0 = relu(&stem);
                let z1 = conv(&y0, "layer1.0.conv1.weight", 1, 1);
                close(&r[1], mean_std(&z1));
                let z2 = conv(&relu(&z1), "layer1.0.conv2.weight", 1, 1);
                close(&r[2], mean_std(&z2));
                let y1 = fused::add_activation(&z2, &y0, Activation::Relu).unwrap();
                let z3 = conv(&y1, "layer2.0.conv1.weight", 2, 1);
                close(&r[3], mean_std(&z3));
                let z4 = conv(&relu(&z3), "layer2.0.conv2.weight", 1, 1);
                close(&r[4], mean_std(&z4));
                close(&r[5], mean_std(&conv(&y1, "layer2.0.downsample.0.weight", 2, 0)));
            }
        });
        // The hooked forward computes the same logits as the plain one.
        let hook = |_: &str, _: usize, _: &Tensor| {};
        let hooked = Ctx {
            bn_mode: BnMode::Train,
            response_hook: Some(&hook),
            batch_norm_sync: None,
        };
        assert_eq!(
            m.net().forward(&x, &hooked).unwrap().to_vec().unwrap(),
            m.forward(&x, true).unwrap().to_vec().unwrap()
        );
        // Gradient norms: the 9 convolutions and fc, in the responses' order, and the model unchanged.
        let before = snapshot(&m, &images, shape);
        let norms = m.gradient_norms(&images, shape, &labels).unwrap();
        assert_eq!(norms.len(), 10, "{}", spec.name());
        let gn: Vec<&str> = norms.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(&gn[..9], &names(&r)[..]);
        assert_eq!(gn[9], "fc");
        assert!(norms.iter().all(|g| g.norm > 0.0 && g.norm.is_finite()));
        assert!(before == snapshot(&m, &images, shape));
    }
    // Plain-20 without batch norm: 19 convolutions, all 3x3, and fc.
    let m = Model::new(cifar(20, ShortcutOption::A, true, false).with_batch_norm(false), 0, DEV).unwrap();
    let r = m.layer_responses(&images, shape, true).unwrap();
    assert_eq!(
        names(&r),
        expected_names(&[(1, 3, 2, false), (2, 3, 2, false), (3, 3, 2, false)])
    );
    assert_eq!(m.gradient_norms(&images, shape, &labels).unwrap().len(), 20);
}

/// The probes on the GPU (lavapipe by default) agree with the CPU, and leave the model unchanged.
fn probes_on_the_gpu_match_the_cpu(gpu: Device) {
    let (images, shape, labels) = batch(14, 4, 3, 8, 10);
    for (pre, batch_norm) in [(false, true), (true, true), (false, false)] {
        let spec = cifar(8, ShortcutOption::B, false, pre).with_batch_norm(batch_norm);
        let cpu = trained(&spec, 15);
        let mut g = Model::new(spec.clone(), 0, gpu).unwrap();
        g.load_state_dict(&cpu.state_dict().unwrap()).unwrap();
        let before = g.state_dict().unwrap();
        for training in [false, true] {
            let (a, b) = (
                cpu.layer_responses(&images, shape, training).unwrap(),
                g.layer_responses(&images, shape, training).unwrap(),
            );
            assert_eq!(names(&a), names(&b));
            for (x, y) in a.iter().zip(&b) {
                assert!((x.std - y.std).abs() <= 1e-4 * x.std, "{} {x:?} vs {y:?}", spec.name());
                assert!(
                    (x.mean - y.mean).abs() <= 1e-4 * (x.std + x.mean.abs()),
                    "{x:?} vs {y:?}"
                );
            }
        }
        let (a, b) = (
            cpu.gradient_norms(&images, shape, &labels).unwrap(),
            g.gradient_norms(&images, shape, &labels).unwrap(),
        );
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.name, x.kernel, x.numel), (&y.name, y.kernel, y.numel));
            assert!(
                (x.norm - y.norm).abs() <= 1e-3 * x.norm,
                "{} {x:?} vs {y:?}",
                spec.name()
            );
        }
        assert_eq!(g.state_dict().unwrap(), before, "the GPU model is unchanged");
        assert!(g.parameters().iter().all(|(_, p)| p.grad().is_none()));
    }
}

fn main() {
    harness::run([
        harness::cpu(
            "responses_name_every_convolution_in_layer_order",
            responses_name_every_convolution_in_layer_order,
        ),
        harness::cpu(
            "responses_equal_the_ops_called_by_hand",
            responses_equal_the_ops_called_by_hand,
        ),
        harness::cpu(
            "probes_leave_the_model_exactly_as_it_was",
            probes_leave_the_model_exactly_as_it_was,
        ),
        harness::cpu(
            "gradient_norms_equal_an_explicit_backward",
            gradient_norms_equal_an_explicit_backward,
        ),
        harness::cpu(
            "probes_reject_bad_input_without_touching_the_model",
            probes_reject_bad_input_without_touching_the_model,
        ),
        harness::cpu("a_response_hook_changes_no_output", a_response_hook_changes_no_output),
        harness::cpu(
            "batch_norm_free_responses_are_the_convolutions_outputs",
            batch_norm_free_responses_are_the_convolutions_outputs,
        ),
        harness::gpu("probes_on_the_gpu_match_the_cpu", probes_on_the_gpu_match_the_cpu),
    ])
}
