//! Whole training steps on the GPU against the CPU: the same losses step by step, a buffer pool
//! that stops growing, and checkpoints that move between devices.

mod common;
mod gpu_common;
mod harness;

use gpu_common::{assert_close_tol, values};
use resnet_core::backend::gpu_memory_stats;
use resnet_core::nn::{BottleneckStride, ResNetSpec, ShortcutOption};
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

fn main() {
    harness::run([
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
            "a_checkpoint_saved_on_the_gpu_predicts_the_same_on_the_cpu",
            a_checkpoint_saved_on_the_gpu_predicts_the_same_on_the_cpu,
        ),
    ])
}
