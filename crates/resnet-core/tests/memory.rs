//! Running out of memory is an Error, not an abort: a network or a batch that cannot fit is
//! refused from its spec before anything is allocated, naming what it needs and what the device
//! has; an allocation that fails anyway (here under `ulimit -v`) comes back as an Error naming the
//! bytes, and the model goes on training.

mod common;
mod gpu_common;
mod harness;

use common::batch;
use resnet_core::backend::{self, wgpu as gpu_backend};
use resnet_core::memory::MEMORY_CHECK_ENV;
use resnet_core::nn::{
    Activations, BlockKind, BottleneckStride, Entry, Footprint, ResNetSpec, ShortcutOption, StageSpec, Stem,
};
use resnet_core::{Device, Error, Model};
use std::time::Instant;

fn cifar(depth: usize) -> ResNetSpec {
    ResNetSpec::cifar(depth, ShortcutOption::A, false, 3, 10).unwrap()
}

fn oom_message(e: Error) -> String {
    let msg = e.to_string();
    assert!(
        matches!(e, Error::OutOfMemory { .. }),
        "not an OutOfMemory error: {msg}"
    );
    msg
}

fn a_million_layer_resnet_is_refused_before_allocating() {
    let t = Instant::now();
    let e = Model::new(cifar(999_998), 0, Device::Cpu)
        .err()
        .expect("ResNet-999998 must not fit");
    let took = t.elapsed();
    let msg = oom_message(e);
    eprintln!("refused in {took:?}: {msg}");
    assert!(msg.starts_with("ResNet-999998 needs about "), "{msg}");
    assert!(
        msg.contains("GiB for parameters, gradients and momentum (16.2 G parameters)"),
        "{msg}"
    );
    // The second figure: what this machine (or its cgroup, or ulimit -v) has.
    assert!(msg.contains("available") || msg.contains("leaves"), "{msg}");
    assert!(took.as_secs() < 5, "the estimate took {took:?}");
}

/// Every family's parameter and buffer counts from the spec alone equal the built model's.
fn the_spec_estimate_counts_exactly_what_the_model_builds() {
    let pre = |s: ResNetSpec| s.with_pre_activation(true);
    let no_bn = |s: ResNetSpec| s.with_batch_norm(false);
    let mut specs = vec![
        cifar(20),
        ResNetSpec::cifar(20, ShortcutOption::B, false, 1, 10).unwrap(),
        ResNetSpec::cifar(14, ShortcutOption::C, false, 3, 7).unwrap(),
        ResNetSpec::cifar(20, ShortcutOption::B, true, 3, 10).unwrap(),
        pre(ResNetSpec::cifar(20, ShortcutOption::B, false, 3, 10).unwrap()),
        pre(ResNetSpec::cifar(14, ShortcutOption::A, true, 3, 10).unwrap()),
        no_bn(cifar(20)),
        no_bn(pre(ResNetSpec::cifar(14, ShortcutOption::C, false, 3, 10).unwrap())),
        ResNetSpec::imagenet(18, ShortcutOption::B, 3, 1000).unwrap(),
        ResNetSpec::imagenet(50, ShortcutOption::B, 3, 100).unwrap(),
        pre(ResNetSpec::imagenet(18, ShortcutOption::A, 3, 10).unwrap()),
        no_bn(pre(ResNetSpec::imagenet(50, ShortcutOption::C, 1, 10).unwrap())),
    ];
    let mut stride_1x1 = ResNetSpec::imagenet(50, ShortcutOption::B, 3, 10).unwrap();
    stride_1x1.bottleneck_stride = BottleneckStride::Conv1x1;
    specs.push(stride_1x1);
    specs.push(ResNetSpec {
        stem: Stem::Cifar,
        stem_width: 8,
        stages: vec![
            StageSpec {
                block: BlockKind::Bottleneck,
                count: 2,
                width: 4,
                stride: 1,
            },
            StageSpec {
                block: BlockKind::Basic,
                count: 3,
                width: 24,
                stride: 2,
            },
        ],
        ..cifar(20)
    });
    for spec in specs {
        let f = Footprint::of(&spec);
        let m = Model::new(spec.clone(), 0, Device::Cpu).unwrap();
        let (mut buffers, mut largest) = (0, 0);
        m.net().visit(&mut |_, e| match e {
            Entry::Buffer(t) => buffers += t.numel(),
            Entry::Param(t) => largest = largest.max(t.numel()),
            Entry::Counter(_) => {}
        });
        assert_eq!(
            f.parameters,
            m.num_parameters() as u64,
            "{}",
            resnet_core::model::describe(&spec)
        );
        assert_eq!(f.buffers, buffers as u64, "{spec:?}");
        assert_eq!(f.largest_parameter, largest as u64, "{spec:?}");
    }
}

/// A batch whose training step needs about twice what the host has: refused before the forward
/// pass with both figures and how many images would fit; the model then trains a small batch.
fn a_batch_that_cannot_fit_is_refused_and_the_model_still_trains() {
    let spec = cifar(1202);
    let available = backend::available_memory(Device::Cpu)
        .expect("Linux reports its memory")
        .bytes;
    let per_image = Activations::of(&spec, 32, 32).training * 4;
    let n = (2 * available / per_image) as usize + 1;
    let mut model = Model::new(spec, 0, Device::Cpu).unwrap();
    let images = vec![0.25f32; n * 3 * 32 * 32];
    let labels = vec![3i32; n];
    let t = Instant::now();
    let msg = oom_message(model.train_step(&images, [n, 3, 32, 32], &labels).unwrap_err());
    eprintln!("{n} images: refused in {:?}: {msg}", t.elapsed());
    assert!(
        msg.starts_with(&format!(
            "a training step of ResNet-1202 on a batch of [{n}, 3, 32, 32] needs about "
        )),
        "{msg}"
    );
    assert!(
        msg.contains("of activations an image") && msg.contains("use a smaller batch (about "),
        "{msg}"
    );
    assert_eq!(model.step(), 0);
    // Eval passes hold no tape: the same batch is refused only where even that cannot fit.
    let (x, shape, y) = batch(1, 2, 3, 8, 10);
    let s = model.train_step(&x, shape, &y).unwrap();
    assert!(s.loss.is_finite() && model.step() == 1);
}

/// Runs this test binary's `oom_child` under `ulimit -v` (2 GiB of address space): each of its
/// allocations that cannot be had must come back as an Error, so it exits normally, where an
/// abort ("memory allocation of N bytes failed", SIGABRT) would fail here.
#[cfg(target_os = "linux")]
fn allocation_failures_under_an_address_space_limit_are_errors() {
    let exe = std::env::current_exe().unwrap();
    let t = Instant::now();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 2097152 && exec \"$0\" oom_child --exact --ignored --nocapture --test-threads 1")
        .arg(&exe)
        .env("RESNET_CORE_OOM_CHILD", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("child ({:?}): {}\n{stdout}\n{stderr}", t.elapsed(), out.status);
    assert!(
        out.status.success(),
        "the child under ulimit -v failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
}

fn oom_child() {
    if std::env::var_os("RESNET_CORE_OOM_CHILD").is_none() {
        return;
    }
    // Without the estimates: the allocations themselves must fail cleanly.
    std::env::set_var(MEMORY_CHECK_ENV, "off");

    // A parameter too large to initialise (one 3x3 convolution of 20000 x 20000 channels: 13.4 GiB).
    let huge = ResNetSpec {
        stages: vec![StageSpec {
            block: BlockKind::Basic,
            count: 1,
            width: 20_000,
            stride: 1,
        }],
        ..ResNetSpec::cifar(8, ShortcutOption::A, false, 1, 10).unwrap()
    };
    let msg = oom_message(Model::new(huge.clone(), 0, Device::Cpu).err().unwrap());
    eprintln!("huge weight: {msg}");
    assert!(
        msg.contains("out of memory: allocating ") && msg.contains("bytes) on the host"),
        "{msg}"
    );
    assert!(msg.contains("ulimit -v"), "{msg}");

    // A batch whose first convolution's output (16 x 12 x 12 floats an image) passes the limit.
    let mut model = Model::new(
        ResNetSpec::cifar(8, ShortcutOption::A, false, 1, 10).unwrap(),
        0,
        Device::Cpu,
    )
    .unwrap();
    let n = 250_000;
    let images = vec![0.5f32; n * 144];
    let labels = vec![1i32; n];
    let msg = oom_message(model.train_step(&images, [n, 1, 12, 12], &labels).unwrap_err());
    eprintln!("huge batch: {msg}");
    assert!(msg.contains("bytes) on the host for a tensor failed"), "{msg}");
    let msg = oom_message(model.predict(&images, [n, 1, 12, 12]).unwrap_err());
    assert!(msg.contains("bytes) on the host"), "{msg}");

    // The model is intact and trains.
    let (x, shape, y) = batch(2, 8, 1, 12, 10);
    for _ in 0..2 {
        assert!(model.train_step(&x, shape, &y).unwrap().loss.is_finite());
    }
    assert_eq!(model.step(), 2);

    // With the estimates on, both are refused before allocating, naming the limit.
    std::env::set_var(MEMORY_CHECK_ENV, "on");
    let msg = oom_message(Model::new(huge, 0, Device::Cpu).err().unwrap());
    assert!(
        msg.contains("the address-space limit (ulimit -v) of 2.0 GiB leaves "),
        "{msg}"
    );
    let msg = oom_message(model.train_step(&images, [n, 1, 12, 12], &labels).unwrap_err());
    assert!(
        msg.contains("the address-space limit (ulimit -v) of 2.0 GiB leaves "),
        "{msg}"
    );
    assert!(model.train_step(&x, shape, &y).unwrap().loss.is_finite());
    println!("oom_child: every failure was an Error");
}

/// On the GPU (lavapipe unless told otherwise): a tensor larger than one buffer may be is refused
/// naming the limit; the model then trains; the estimate of a step's activations is close to what
/// the buffer pool really holds; and ResNet-999998 is refused there too. One test, so that the
/// pool's figures are this test's alone.
/// The GPU tests here read the process-wide pool's figures: one at a time.
static POOL_FIGURES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gpu_limits_and_estimates(dev: Device) {
    let _alone = POOL_FIGURES.lock().unwrap_or_else(|e| e.into_inner());
    let limit = backend::max_tensor_bytes(dev).expect("the GPU has buffer limits");
    let available = backend::available_memory(dev);
    eprintln!("GPU: largest tensor {limit:?}; available {available:?}");

    // 1. A batch whose stem output (16 x 32 x 32 floats an image) is larger than the binding limit.
    let spec = ResNetSpec::cifar(8, ShortcutOption::A, false, 1, 10).unwrap();
    let mut model = Model::new(spec.clone(), 0, dev).unwrap();
    let n = (limit.0 / (16 * 32 * 32 * 4)) as usize + 1;
    let images = vec![0.5f32; n * 32 * 32];
    let labels = vec![1i32; n];
    let msg = oom_message(model.train_step(&images, [n, 1, 32, 32], &labels).unwrap_err());
    eprintln!("{msg}");
    assert!(
        msg.contains(&format!("({} bytes, the adapter's {})", limit.0, limit.1)),
        "{msg}"
    );
    assert!(msg.contains(&format!("at most about {} images", n - 1)), "{msg}");
    let (x, shape, y) = batch(3, 4, 1, 12, 10);
    assert!(model.train_step(&x, shape, &y).unwrap().loss.is_finite());
    drop(model);

    // 2. The training estimate against the pool's peak for a first step (activations, gradients
    // and the new momentum buffers all live at the end of the step).
    for spec in [
        cifar(20),
        ResNetSpec::cifar(20, ShortcutOption::B, false, 3, 10)
            .unwrap()
            .with_pre_activation(true),
        cifar(14).with_batch_norm(false),
    ] {
        gpu_backend::synchronize().unwrap();
        let mut model = Model::new(spec.clone(), 0, dev).unwrap();
        gpu_backend::reset_peak_memory();
        let before = gpu_backend::memory_stats().unwrap();
        let (x, shape, y) = batch(4, 8, 3, 16, 10);
        model.train_step(&x, shape, &y).unwrap();
        let after = gpu_backend::memory_stats().unwrap();
        let measured = after.peak_in_use.saturating_sub(before.in_use) as f64;
        let params = model.num_parameters() as f64 * 4.0;
        let estimate = Activations::of(&spec, 16, 16).training as f64 * 4.0 * 8.0 + 2.0 * params;
        let ratio = estimate / measured;
        eprintln!(
            "{}: estimated {:.1} MiB, the pool's peak {:.1} MiB over {:.1} MiB before (ratio {ratio:.2})",
            resnet_core::model::describe(&spec),
            estimate / 1048576.0,
            measured / 1048576.0,
            before.in_use as f64 / 1048576.0
        );
        assert!(
            (0.6..1.6).contains(&ratio),
            "estimate {estimate} vs measured {measured}"
        );
    }

    // 3. The parameters of ResNet-999998 do not fit on this GPU either (on lavapipe: host memory).
    if available.is_some() {
        let msg = oom_message(Model::new(cifar(999_998), 0, dev).err().unwrap());
        eprintln!("{msg}");
        assert!(msg.starts_with("ResNet-999998 needs about "), "{msg}");
    }
}

/// An evaluation's folded weights (`nn::fold`) are freed when training resumes: the training
/// step makes them stale anyway, and holding them would add a second set of convolution weights
/// to every later step's peak.
fn folded_weights_are_freed_when_training_resumes(dev: Device) {
    let _alone = POOL_FIGURES.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ResNetSpec::cifar(20, ShortcutOption::B, false, 3, 10).unwrap();
    let mut model = Model::new(spec, 0, dev).unwrap();
    let conv_bytes: usize = model
        .parameters()
        .iter()
        .filter(|(_, t)| t.shape().len() == 4)
        .map(|(_, t)| t.numel() * 4)
        .sum();
    let (x, shape, y) = batch(5, 4, 3, 16, 10);
    let in_use = || {
        gpu_backend::synchronize().unwrap();
        gpu_backend::memory_stats().unwrap().in_use as f64
    };
    model.train_step(&x, shape, &y).unwrap();
    let training = in_use();
    let first = model.predict(&x, shape).unwrap();
    let evaluated = in_use();
    eprintln!(
        "in use: {:.2} MiB training, {:.2} MiB after a prediction; convolution weights {:.2} MiB",
        training / 1048576.0,
        evaluated / 1048576.0,
        conv_bytes as f64 / 1048576.0
    );
    assert!(
        evaluated - training >= 0.9 * conv_bytes as f64,
        "a prediction holds its folded weights"
    );
    model.train_step(&x, shape, &y).unwrap();
    let trained = in_use();
    assert!(
        trained <= training + 0.05 * conv_bytes as f64,
        "after a training step {trained} bytes are in use, {training} before the prediction"
    );
    // Folded again from the new weights, not from the freed copy.
    let second = model.predict(&x, shape).unwrap();
    assert_ne!(first, second);
}

fn main() {
    harness::run([
        harness::cpu(
            "a_million_layer_resnet_is_refused_before_allocating",
            a_million_layer_resnet_is_refused_before_allocating,
        ),
        harness::cpu(
            "the_spec_estimate_counts_exactly_what_the_model_builds",
            the_spec_estimate_counts_exactly_what_the_model_builds,
        ),
        harness::cpu(
            "a_batch_that_cannot_fit_is_refused_and_the_model_still_trains",
            a_batch_that_cannot_fit_is_refused_and_the_model_still_trains,
        ),
        #[cfg(target_os = "linux")]
        harness::cpu(
            "allocation_failures_under_an_address_space_limit_are_errors",
            allocation_failures_under_an_address_space_limit_are_errors,
        ),
        // Run by allocation_failures_under_an_address_space_limit_are_errors under ulimit -v.
        harness::cpu("oom_child", oom_child).ignored(),
        harness::gpu("gpu_limits_and_estimates", gpu_limits_and_estimates),
        harness::gpu(
            "folded_weights_are_freed_when_training_resumes",
            folded_weights_are_freed_when_training_resumes,
        ),
    ])
}
