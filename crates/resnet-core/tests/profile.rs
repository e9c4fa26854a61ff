//! The phase profiler (`backend::profile`): it changes no result, it sees every phase of a
//! training step, and with it off `Device::backend()` is the plain backend.

mod common;

use common::batch;
use resnet_core::backend::profile::{self, Phase, PhaseProfile};
use resnet_core::nn::{ResNetSpec, ShortcutOption};
use resnet_core::{Device, Model};
use std::sync::Mutex;

/// The profile is process-wide: the tests here take turns with it.
static PROFILE: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    PROFILE.lock().unwrap_or_else(|e| e.into_inner())
}

fn params_bits(m: &Model) -> Vec<(String, Vec<u32>)> {
    m.parameters()
        .into_iter()
        .map(|(n, t)| (n, t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// Two training steps (momentum in play from the second) on an odd-sized random batch; the
/// losses and the parameters after, as bits.
fn train_two_steps(spec: &ResNetSpec) -> (Vec<u32>, Vec<(String, Vec<u32>)>) {
    let mut m = Model::new(spec.clone(), 7, Device::Cpu).unwrap();
    let (x, shape, y) = batch(11, 3, 3, 9, 10);
    let losses = (0..2)
        .map(|_| m.train_step(&x, shape, &y).unwrap().loss.to_bits())
        .collect();
    (losses, params_bits(&m))
}

fn profiled<T>(f: impl FnOnce() -> T) -> (T, PhaseProfile) {
    profile::start();
    assert!(
        profile::is_wrapper(Device::Cpu.backend()),
        "profiling on: the timing wrapper"
    );
    let out = f();
    (out, profile::take().unwrap())
}

#[test]
fn off_is_the_plain_backend() {
    let _t = turn();
    assert!(!profile::is_on());
    assert!(!profile::is_wrapper(Device::Cpu.backend()));
    profile::start();
    assert!(profile::is_on());
    profile::stop();
    assert!(!profile::is_on());
    assert!(
        !profile::is_wrapper(Device::Cpu.backend()),
        "stopped: the plain backend again"
    );
    profile::take().unwrap();
}

#[test]
fn profiling_changes_no_bit_and_sees_every_phase() {
    let _t = turn();
    // Option A has the parameter-free shortcut; option B the 1x1 projections.
    for option in [ShortcutOption::A, ShortcutOption::B] {
        let spec = ResNetSpec::cifar(8, option, false, 3, 10).unwrap();
        let plain = train_two_steps(&spec);
        let (timed, p) = profiled(|| train_two_steps(&spec));
        assert_eq!(plain, timed, "{option:?}: profiling on changed a loss or a parameter");

        // ResNet-8: a stem and 3 blocks of two 3x3 convolutions, plus 2 projections in option B.
        let convs = if option == ShortcutOption::B { 9 } else { 7 };
        let params = Model::new(spec.clone(), 0, Device::Cpu).unwrap().parameters().len() as u64;
        assert_eq!(
            p.get(Phase::ConvForward).calls,
            2 * convs,
            "{option:?}: conv forward calls"
        );
        assert_eq!(
            p.get(Phase::ConvWeightGrad).calls,
            2 * convs,
            "{option:?}: conv weight grad calls"
        );
        let data = p.get(Phase::ConvDataGrad).calls;
        // The stem's input needs no gradient; every other convolution's does.
        assert!(data > 0 && data <= 2 * convs, "{option:?}: conv data grad calls {data}");
        assert_eq!(
            p.get(Phase::Optimizer).calls,
            2 * params,
            "{option:?}: one SGD update per parameter per step"
        );
        for phase in Phase::ALL {
            let t = p.get(phase);
            assert!(
                t.calls > 0 && t.seconds > 0.0,
                "{option:?}: phase {} is empty: {t:?}",
                phase.name()
            );
        }
        // Calls on this one thread lie inside the wall time.
        assert!(p.phase_seconds() <= p.wall_seconds, "{p:?}");
        assert_eq!(p.other_seconds(), p.wall_seconds - p.phase_seconds());
    }
    // `take` cleared the sums.
    profile::start();
    let empty = profile::take().unwrap();
    assert!(
        empty.phases.iter().all(|t| t.calls == 0 && t.seconds == 0.0),
        "{empty:?}"
    );
    assert_eq!(empty.phases.len(), Phase::ALL.len());
}

#[test]
fn inference_is_profiled_too() {
    let _t = turn();
    let spec = ResNetSpec::imagenet(18, ShortcutOption::B, 1, 5).unwrap();
    let m = Model::new(spec, 3, Device::Cpu).unwrap();
    let (x, shape, _) = batch(5, 1, 1, 33, 5);
    let plain = m.predict(&x, shape).unwrap();
    let (timed, p) = profiled(|| m.predict(&x, shape).unwrap());
    assert_eq!(
        plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        timed.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // ResNet-18: the stem, 16 block convolutions and 3 projections; the max pool after the stem.
    assert_eq!(p.get(Phase::ConvForward).calls, 20);
    assert!(p.get(Phase::Pooling).calls >= 2);
    for phase in [
        Phase::ConvDataGrad,
        Phase::ConvWeightGrad,
        Phase::BnBackward,
        Phase::Optimizer,
    ] {
        assert_eq!(p.get(phase).calls, 0, "no {} in inference", phase.name());
    }
}
