//! Whole training steps on the GPU against the CPU: the same losses step by step, a buffer pool
//! that stops growing, and checkpoints that move between devices.

mod common;
mod gpu_common;
mod harness;

use gpu_common::{assert_close_tol, values};
use resnet_core::backend::gpu_memory_stats;
use resnet_core::nn::{BottleneckStride, ResNetSpec, ShortcutOption};
use resnet_core::optim::LossScaler;
use resnet_core::precision::Precision;
use resnet_core::{Device, Model};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Memory statistics are process-wide: these tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn batch(n: usize, c: usize, hw: usize, classes: usize, seed: u32) -> (Vec<f32>, [usize; 4], Vec<i32>) {
    let images = values(n * c * hw * hw, seed);
    let labels = (0..n).map(|i| ((i * 7 + seed as usize) % classes) as i32).collect();
    (images, [n, c, hw, hw], labels)
}

/// A small ImageNet-style net: 7x7 stride-2 stem, max pool, bottlenecks with projection
/// shortcuts (1x1 stride-2 convolutions), a Linear head.
fn small_bottleneck_net() -> ResNetSpec {
    common::small_bottleneck_net(ShortcutOption::B, BottleneckStride::Conv3x3, 7)
}

fn same_losses(dev: Device, spec: ResNetSpec, n: usize, hw: usize, steps: usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let classes = spec.num_classes;
    let mut on_gpu = Model::new(spec.clone(), 3, dev).unwrap();
    let mut on_cpu = Model::new(spec.clone(), 3, Device::Cpu).unwrap();
    for step in 0..steps {
        let (images, shape, labels) = batch(n, spec.in_channels, hw, classes, step as u32);
        let g = on_gpu.train_step(&images, shape, &labels).unwrap();
        let c = on_cpu.train_step(&images, shape, &labels).unwrap();
        eprintln!("step {step}: loss gpu {:.6} cpu {:.6}", g.loss, c.loss);
        assert!(
            (g.loss - c.loss).abs() <= 1e-3 * c.loss.abs().max(1.0),
            "step {step}: loss gpu {} vs cpu {}",
            g.loss,
            c.loss
        );
        assert_eq!(g.correct, c.correct, "step {step}: hits");
    }
    // Eval mode after training: running statistics and weights agree too.
    let (images, shape, _) = batch(n, spec.in_channels, hw, classes, 99);
    assert_close_tol(
        "predictions after training",
        &on_gpu.predict(&images, shape).unwrap(),
        &on_cpu.predict(&images, shape).unwrap(),
        1e-3,
    );
}

fn resnet20_trains_like_the_cpu_for_five_steps(dev: Device) {
    same_losses(
        dev,
        ResNetSpec::cifar(20, ShortcutOption::A, false, 3, 10).unwrap(),
        8,
        8,
        5,
    );
}

fn a_bottleneck_net_trains_like_the_cpu(dev: Device) {
    same_losses(dev, small_bottleneck_net(), 4, 19, 3);
}

/// Without batch norm (the vanishing-gradient experiments): the unfused activations and additions,
/// bare projections; a bottleneck net with an ImageNet stem in the pre-activation ordering too.
fn batch_norm_free_nets_train_like_the_cpu(dev: Device) {
    same_losses(
        dev,
        ResNetSpec::cifar(8, ShortcutOption::B, false, 3, 10)
            .unwrap()
            .with_batch_norm(false),
        8,
        8,
        3,
    );
    same_losses(
        dev,
        small_bottleneck_net().with_batch_norm(false).with_pre_activation(true),
        4,
        19,
        3,
    );
}

fn gpu_memory_reaches_a_steady_state(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(20, ShortcutOption::A, false, 3, 10).unwrap();
    let mut model = Model::new(spec, 1, dev).unwrap();
    let (images, shape, labels) = batch(8, 3, 8, 10, 5);
    let mut after = Vec::new();
    for _ in 0..10 {
        model.train_step(&images, shape, &labels).unwrap();
        after.push(gpu_memory_stats().expect("the GPU is in use"));
    }
    eprintln!("GPU memory (held, peak) after each step: {after:?}");
    assert_eq!(
        after[2], after[9],
        "GPU memory after step 3 {:?} differs from after step 10 {:?}",
        after[2], after[9]
    );
}

fn readbacks() -> u64 {
    resnet_core::backend::wgpu::memory_stats()
        .expect("the GPU is in use")
        .readbacks
}

/// `fit` between reports: steps queued on the GPU wait for nothing, and one download at the end
/// gives every step's figures, bit for bit those of steps that each read their own.
fn queued_steps_read_nothing_back_until_asked(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 3, 10).unwrap();
    let mut stepped = Model::new(spec.clone(), 8, dev).unwrap();
    let mut queued = Model::new(spec, 8, dev).unwrap();
    let batches: Vec<_> = (0..6).map(|s| batch(5 + s % 2, 3, 9, 10, 40 + s as u32)).collect();
    let expected: Vec<_> = batches
        .iter()
        .map(|(x, shape, y)| stepped.train_step(x, *shape, y).unwrap())
        .collect();
    let before = readbacks();
    for (x, shape, y) in &batches {
        queued.queue_train_step(x, *shape, y).unwrap();
    }
    assert_eq!(readbacks(), before, "six queued steps read nothing back");
    let got = queued.take_step_stats().unwrap();
    assert_eq!(readbacks(), before + 1, "one download for all six steps' figures");
    assert_eq!(got, expected);
    let (images, shape, _) = batch(4, 3, 9, 10, 99);
    assert_eq!(
        queued.predict(&images, shape).unwrap(),
        stepped.predict(&images, shape).unwrap(),
        "the same weights and running statistics"
    );
}

/// `evaluate` on a GPU: batches queued for evaluation wait for nothing, and one download gives each
/// batch's sums exactly as `evaluate_batch` gives them.
fn queued_evaluation_reads_nothing_back_until_asked(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 3, 10).unwrap();
    let mut model = Model::new(spec, 9, dev).unwrap();
    let batches: Vec<_> = (0..4).map(|s| batch(3 + s % 3, 3, 9, 10, 60 + s as u32)).collect();
    let expected: Vec<_> = batches
        .iter()
        .map(|(x, shape, y)| model.evaluate_batch(x, *shape, y).unwrap())
        .collect();
    let before = readbacks();
    for (x, shape, y) in &batches {
        model.queue_evaluate_batch(x, *shape, y).unwrap();
    }
    assert_eq!(readbacks(), before, "four queued batches read nothing back");
    assert_eq!(model.take_eval_stats().unwrap(), expected);
    assert_eq!(readbacks(), before + 1, "one download for all four");
    assert!(model.take_eval_stats().unwrap().is_empty(), "taken once");
}

fn a_checkpoint_saved_on_the_gpu_predicts_the_same_on_the_cpu(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 3, 10).unwrap();
    let mut model = Model::new(spec, 2, dev).unwrap();
    for step in 0..2 {
        let (images, shape, labels) = batch(4, 3, 8, 10, step);
        model.train_step(&images, shape, &labels).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpu.safetensors");
    model.save_checkpoint(&path, BTreeMap::new()).unwrap();
    let (on_cpu, _) = Model::load_checkpoint(&path, Device::Cpu).unwrap();
    let (back_on_gpu, _) = Model::load_checkpoint(&path, dev).unwrap();
    let (images, shape, _) = batch(3, 3, 8, 10, 42);
    let want = model.predict(&images, shape).unwrap();
    assert_close_tol(
        "CPU predictions from a GPU checkpoint",
        &on_cpu.predict(&images, shape).unwrap(),
        &want,
        1e-4,
    );
    assert_eq!(
        back_on_gpu.predict(&images, shape).unwrap(),
        want,
        "reloaded on the GPU"
    );
}

/// The first `n` Fashion-MNIST training images, normalised, in batches of `batch`.
fn fashion_mnist_batches(n: usize, batch: usize) -> Vec<(Vec<f32>, [usize; 4], Vec<i32>)> {
    use resnet_core::data::idx::{read_fashion_mnist, DEFAULT_FASHION_MNIST_DIR};
    let train = read_fashion_mnist(
        std::path::Path::new(DEFAULT_FASHION_MNIST_DIR),
        resnet_core::data::Split::Train,
    )
    .expect("Fashion-MNIST (scripts/setup.sh installs it)");
    let pixels = 28 * 28;
    (0..n / batch)
        .map(|b| {
            let range = b * batch..(b + 1) * batch;
            let images = train.images[range.start * pixels..range.end * pixels]
                .iter()
                .map(|&v| (v as f32 / 255.0 - 0.286) / 0.353)
                .collect();
            let labels = train.labels[range].iter().map(|&l| l as i32).collect();
            (images, [batch, 1, 28, 28], labels)
        })
        .collect()
}

/// Mixed precision trains like fp32: ResNet-20 on 128 Fashion-MNIST images, two epochs of batch
/// 16, from the same initial weights. The f16 operands shift each step's loss a little, so the
/// curves are held to follow each other, and the mixed one to fall as far.
fn mixed_precision_tracks_the_fp32_loss_curve(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(20, ShortcutOption::A, false, 1, 10).unwrap();
    let batches = fashion_mnist_batches(128, 16);
    let curve = |precision| {
        let mut model = Model::new(spec.clone(), 11, dev).unwrap();
        // A gentle rate: at 0.1 this tiny run's loss jumps about, and the two curves with it.
        let sgd = resnet_core::optim::SgdConfig {
            lr: 0.02,
            ..Default::default()
        };
        model.configure_optimizer(sgd).unwrap();
        model.set_precision(precision).unwrap();
        let mut losses = Vec::new();
        let started = std::time::Instant::now();
        for _epoch in 0..2 {
            for (images, shape, labels) in &batches {
                let s = model.train_step(images, *shape, labels).unwrap();
                assert!(
                    !s.skipped,
                    "{precision} step {} skipped at scale {:?}",
                    s.step, s.loss_scale
                );
                assert_eq!(s.loss_scale.is_some(), precision == Precision::Mixed);
                losses.push(s.loss);
            }
        }
        eprintln!("{precision}: {} steps in {:.1?}", losses.len(), started.elapsed());
        losses
    };
    let fp32 = curve(Precision::Fp32);
    let mixed = curve(Precision::Mixed);
    eprintln!("fp32 losses:  {fp32:.4?}\nmixed losses: {mixed:.4?}");
    assert!(
        (mixed[0] - fp32[0]).abs() <= 2e-3 * fp32[0],
        "first step: {} vs {}",
        mixed[0],
        fp32[0]
    );
    for (i, (m, f)) in mixed.iter().zip(&fp32).enumerate() {
        assert!((m - f).abs() <= 0.1 * f.max(0.5), "step {i}: mixed {m} vs fp32 {f}");
    }
    let last_epoch = |l: &[f32]| l[8..].iter().sum::<f32>() / 8.0;
    let (m, f) = (last_epoch(&mixed), last_epoch(&fp32));
    assert!(m < 0.8 * mixed[0], "mixed precision did not learn: {} -> {m}", mixed[0]);
    assert!(
        (m - f).abs() <= 0.05 * f,
        "last epoch's mean loss: mixed {m} vs fp32 {f}"
    );
}

/// Every parameter and momentum value of a model.
fn state(m: &Model) -> Vec<Vec<f32>> {
    let mut all: Vec<Vec<f32>> = m.parameters().iter().map(|(_, t)| t.to_vec().unwrap()).collect();
    for b in m.momentum_buffers().iter().flatten() {
        all.push(b.device().backend().download(b).unwrap());
    }
    all
}

/// A step whose scaled gradients overflow f16 changes nothing but the scale, as `GradScaler`'s
/// skipped `optimizer.step()`: every parameter, buffer and momentum value stays, the step count
/// too, and the scale halves; the next steps train again.
fn an_overflowing_step_is_skipped_and_the_scale_halved(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 3, 10).unwrap();
    let mut model = Model::new(spec, 4, dev).unwrap();
    model.set_precision(Precision::Mixed).unwrap();
    let (images, shape, labels) = batch(8, 3, 8, 10, 1);
    let first = model.train_step(&images, shape, &labels).unwrap();
    assert_eq!((first.skipped, first.loss_scale, first.step), (false, Some(65536.0), 1));
    // 2^24 times the loss gradient (up to 1/8 a logit) is far past f16's 65504.
    model
        .resume_loss_scaler(LossScaler::restored(16_777_216.0, 0).unwrap())
        .unwrap();
    let before = state(&model);
    let (images, shape, labels) = batch(8, 3, 8, 10, 2);
    let skipped = model.train_step(&images, shape, &labels).unwrap();
    assert!(skipped.skipped, "{skipped:?}");
    assert_eq!(skipped.step, 1, "a skipped step is not counted");
    assert_eq!(model.loss_scaler().unwrap().scale(), 8_388_608.0);
    assert!(
        before == state(&model),
        "a skipped step changed the parameters or momentum"
    );
    let mut scale = 8_388_608.0;
    for i in 0..16 {
        let s = model.train_step(&images, shape, &labels).unwrap();
        assert!(s.loss.is_finite());
        if !s.skipped {
            assert!(state(&model) != before, "an applied step left the weights as they were");
            return;
        }
        scale *= 0.5;
        assert_eq!(model.loss_scaler().unwrap().scale(), scale, "step {i}");
    }
    panic!("16 steps in a row overflowed");
}

/// Mixed precision between reports: the device skips an overflowing step, halves the scale and
/// picks the next step's rate by how many steps it applied, with nothing read back; one download
/// then gives what steps that each read their own check give, bit for bit, and the same weights,
/// momentum, step count and scaler. Warm-up makes every step's rate differ, and a start at 2^24
/// makes the first steps overflow, so a wrong rate, scale or skip shows.
fn queued_mixed_steps_decide_on_the_device(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 3, 10).unwrap();
    let model = || {
        let mut m = Model::new(spec.clone(), 11, dev).unwrap();
        m.set_precision(Precision::Mixed).unwrap();
        let mut cfg = m.optimizer_config().clone();
        cfg.warmup_steps = 6;
        cfg.nesterov = true;
        m.configure_optimizer(cfg).unwrap();
        m.resume_loss_scaler(LossScaler::restored(16_777_216.0, 0).unwrap())
            .unwrap();
        m
    };
    let (mut stepped, mut queued) = (model(), model());
    let batches: Vec<_> = (0..12).map(|s| batch(6 + s % 3, 3, 8, 10, 70 + s as u32)).collect();
    let expected: Vec<_> = batches
        .iter()
        .map(|(x, shape, y)| stepped.train_step(x, *shape, y).unwrap())
        .collect();
    let skipped = expected.iter().filter(|s| s.skipped).count();
    assert!(
        skipped >= 1 && expected.len() - skipped >= 3,
        "the steps should both skip and apply: {expected:?}"
    );
    let before = readbacks();
    for (x, shape, y) in &batches {
        queued.queue_train_step(x, *shape, y).unwrap();
    }
    assert_eq!(readbacks(), before, "twelve queued mixed steps read nothing back");
    assert_eq!(queued.step(), 0, "counted once read");
    let got = queued.take_step_stats().unwrap();
    assert_eq!(readbacks(), before + 1, "one download for all twelve");
    assert_eq!(got, expected);
    assert_eq!(queued.step(), stepped.step());
    assert_eq!(queued.loss_scaler(), stepped.loss_scaler());
    assert!(state(&queued) == state(&stepped), "the same weights and momentum");
    // Queued on from the settled scaler: the device's copy starts again from the host's.
    for (x, shape, y) in batches.iter().take(3) {
        queued.queue_train_step(x, *shape, y).unwrap();
        stepped.train_step(x, *shape, y).unwrap();
    }
    queued.settle().unwrap();
    assert_eq!(queued.step(), stepped.step());
    assert!(state(&queued) == state(&stepped), "the same after a second round");
}

/// Mixed steps queued past the rate table's length (64 unsettled steps) are settled once on the
/// way, and train exactly as steps read one by one: the table starts again from the settled count.
fn a_long_mixed_queue_settles_once_on_the_way(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 3, 10).unwrap();
    let model = || {
        let mut m = Model::new(spec.clone(), 12, dev).unwrap();
        m.set_precision(Precision::Mixed).unwrap();
        let mut cfg = m.optimizer_config().clone();
        cfg.lr = 0.02;
        cfg.warmup_steps = 80;
        m.configure_optimizer(cfg).unwrap();
        m
    };
    let (mut stepped, mut queued) = (model(), model());
    let (x, shape, y) = batch(2, 3, 4, 10, 5);
    let before = readbacks();
    for _ in 0..70 {
        queued.queue_train_step(&x, shape, &y).unwrap();
    }
    assert_eq!(readbacks(), before + 1, "70 queued steps settle once, at the 65th");
    let got = queued.take_step_stats().unwrap();
    let expected: Vec<_> = (0..70).map(|_| stepped.train_step(&x, shape, &y).unwrap()).collect();
    assert_eq!(got, expected);
    assert_eq!(queued.step(), stepped.step());
    assert_eq!(
        queued.parameter("fc.weight").unwrap().to_vec().unwrap(),
        stepped.parameter("fc.weight").unwrap().to_vec().unwrap()
    );
}

/// The probes read the network in fp32 whatever the model's precision: the same figures, bit for
/// bit, from a mixed model as from an fp32 one with the same weights.
fn probes_measure_in_fp32_whatever_the_precision(dev: Device) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 3, 10).unwrap();
    let fp32 = Model::new(spec.clone(), 6, dev).unwrap();
    let mut mixed = Model::new(spec, 6, dev).unwrap();
    mixed.set_precision(Precision::Mixed).unwrap();
    let (images, shape, labels) = batch(4, 3, 8, 10, 3);
    assert_eq!(
        format!("{:?}", mixed.gradient_norms(&images, shape, &labels).unwrap()),
        format!("{:?}", fp32.gradient_norms(&images, shape, &labels).unwrap())
    );
    assert_eq!(
        format!("{:?}", mixed.layer_responses(&images, shape, true).unwrap()),
        format!("{:?}", fp32.layer_responses(&images, shape, true).unwrap())
    );
    // While the model itself computes in mixed precision.
    assert_ne!(
        mixed.predict(&images, shape).unwrap(),
        fp32.predict(&images, shape).unwrap()
    );
}

fn main() {
    harness::run([
        harness::gpu(
            "probes_measure_in_fp32_whatever_the_precision",
            probes_measure_in_fp32_whatever_the_precision,
        ),
        harness::gpu(
            "mixed_precision_tracks_the_fp32_loss_curve",
            mixed_precision_tracks_the_fp32_loss_curve,
        ),
        harness::gpu(
            "an_overflowing_step_is_skipped_and_the_scale_halved",
            an_overflowing_step_is_skipped_and_the_scale_halved,
        ),
        harness::gpu(
            "queued_mixed_steps_decide_on_the_device",
            queued_mixed_steps_decide_on_the_device,
        ),
        harness::gpu(
            "a_long_mixed_queue_settles_once_on_the_way",
            a_long_mixed_queue_settles_once_on_the_way,
        ),
        harness::gpu(
            "resnet20_trains_like_the_cpu_for_five_steps",
            resnet20_trains_like_the_cpu_for_five_steps,
        ),
        harness::gpu(
            "a_bottleneck_net_trains_like_the_cpu",
            a_bottleneck_net_trains_like_the_cpu,
        ),
        harness::gpu(
            "batch_norm_free_nets_train_like_the_cpu",
            batch_norm_free_nets_train_like_the_cpu,
        ),
        harness::gpu("gpu_memory_reaches_a_steady_state", gpu_memory_reaches_a_steady_state),
        harness::gpu(
            "queued_steps_read_nothing_back_until_asked",
            queued_steps_read_nothing_back_until_asked,
        ),
        harness::gpu(
            "queued_evaluation_reads_nothing_back_until_asked",
            queued_evaluation_reads_nothing_back_until_asked,
        ),
        harness::gpu(
            "a_checkpoint_saved_on_the_gpu_predicts_the_same_on_the_cpu",
            a_checkpoint_saved_on_the_gpu_predicts_the_same_on_the_cpu,
        ),
    ])
}
