//! The runner of the test binaries that have GPU cases (`harness = false` in Cargo.toml, on
//! libtest-mimic). libtest cannot skip a test at run time, so a GPU test without an adapter used
//! to `return` early and pass without checking anything. Here a GPU case without an adapter is
//! reported as *ignored* by the runner, after one line saying why; with `CI` or
//! `RESNET_WGPU_REQUIRE_GPU` set it fails instead, so CI cannot go green without lavapipe.
//!
//! A binary lists its cases in `main` with `cpu` (no GPU), `gpu` (the GPU only) and `each_device`
//! (one check as `cpu::NAME` and `gpu::NAME`), then calls `run`.

#![allow(dead_code)]

use libtest_mimic::{Arguments, Failed, Trial};
use resnet_core::Device;

pub struct Case {
    name: String,
    body: Body,
    ignored: bool,
    missing: Option<String>,
}

impl Case {
    /// Runs only when asked for (`--ignored`), like libtest's `#[ignore]`.
    pub fn ignored(self) -> Case {
        Case { ignored: true, ..self }
    }

    /// A case that needs something the machine may lack (a dataset): without it the case is
    /// reported as ignored with the reason, or fails in CI, where the set-up installs it.
    pub fn needs(self, what: Result<(), String>) -> Case {
        Case {
            missing: what.err(),
            ..self
        }
    }
}

enum Body {
    Host(Box<dyn FnOnce() + Send>),
    Gpu(fn(Device)),
}

/// A test that needs no GPU.
pub fn cpu(name: &str, test: fn()) -> Case {
    Case {
        name: name.to_string(),
        body: Body::Host(Box::new(test)),
        ignored: false,
        missing: None,
    }
}

/// A test of the GPU backend: ignored (or, in CI, failed) where there is no adapter.
pub fn gpu(name: &str, test: fn(Device)) -> Case {
    Case {
        name: name.to_string(),
        body: Body::Gpu(test),
        ignored: false,
        missing: None,
    }
}

/// The same check on the CPU (`cpu::NAME`) and on the GPU (`gpu::NAME`).
pub fn each_device(name: &str, test: fn(Device)) -> [Case; 2] {
    [
        Case {
            name: format!("cpu::{name}"),
            body: Body::Host(Box::new(move || test(Device::Cpu))),
            ignored: false,
            missing: None,
        },
        gpu(&format!("gpu::{name}"), test),
    ]
}

/// Whether a missing adapter must fail the run rather than skip the GPU cases.
fn gpu_required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("RESNET_WGPU_REQUIRE_GPU").is_some()
}

/// The GPU device for tests, or why there is none. Without `RESNET_WGPU_ADAPTER` the tests run on
/// lavapipe (`llvmpipe`), which CI installs; `RESNET_WGPU_ADAPTER=nvidia` (say) runs them on a
/// real GPU. Fresh buffers are poisoned with NaN, so an element no kernel wrote shows.
#[cfg(feature = "gpu")]
fn open_gpu() -> Result<Device, String> {
    use resnet_core::backend::wgpu;
    if std::env::var_os(wgpu::ADAPTER_ENV).is_none() {
        // Before any GPU use and any test thread: `run` calls this first.
        std::env::set_var(wgpu::ADAPTER_ENV, "llvmpipe");
    }
    let d = Device::parse("gpu").map_err(|e| e.to_string())?;
    wgpu::set_poison(true).map_err(|e| e.to_string())?;
    eprintln!("GPU tests run on: {}", wgpu::report().selected.unwrap_or_default());
    Ok(d)
}

#[cfg(not(feature = "gpu"))]
fn open_gpu() -> Result<Device, String> {
    Err("this build has no GPU support (the `gpu` feature is off)".into())
}

/// Runs the cases the command line selects and exits with libtest's status.
pub fn run(cases: impl IntoIterator<Item = Case>) -> ! {
    let args = Arguments::from_args();
    let cases: Vec<Case> = cases.into_iter().collect();
    let wants_gpu = !args.list && cases.iter().any(|c| matches!(c.body, Body::Gpu(_)));
    let device = wants_gpu.then(open_gpu);
    let required = gpu_required();
    if let Some(Err(why)) = &device {
        if required {
            eprintln!("\nGPU tests FAIL: no GPU adapter, and CI / RESNET_WGPU_REQUIRE_GPU is set: {why}\n");
        } else {
            eprintln!(
                "\nGPU tests reported as ignored: {why}\n(install mesa-vulkan-drivers for lavapipe, or name an adapter with RESNET_WGPU_ADAPTER)\n"
            );
        }
    }
    let trials = cases.into_iter().map(|case| {
        let ignored = case.ignored;
        if let Some(why) = case.missing {
            eprintln!("{}: {why}", case.name);
            return Trial::test(case.name, move || Err(Failed::from(why))).with_ignored_flag(!required);
        }
        let trial = match case.body {
            Body::Host(f) => Trial::test(case.name, move || {
                f();
                Ok(())
            }),
            Body::Gpu(f) => match &device {
                Some(Ok(dev)) => {
                    let dev = *dev;
                    Trial::test(case.name, move || {
                        f(dev);
                        Ok(())
                    })
                }
                Some(Err(why)) => {
                    let why = format!("no GPU adapter: {why}");
                    Trial::test(case.name, move || Err(Failed::from(why))).with_ignored_flag(!required)
                }
                // Listing only (`--list`): nothing runs.
                None => Trial::test(case.name, || Ok(())),
            },
        };
        if ignored {
            trial.with_ignored_flag(true)
        } else {
            trial
        }
    });
    libtest_mimic::run(&args, trials.collect()).exit()
}
