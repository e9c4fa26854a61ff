//! The phase profiler (`resnet_core::backend::profile`) for `npm run bench`: start it, run steps,
//! take the seconds and calls per phase. Process-wide, CPU only.

use napi_derive::napi;
use resnet_core::backend::profile;

use crate::errors::{guard, guard_core};

/// Seconds and backend calls of one phase since `profileStart`.
#[napi(object)]
pub struct PhaseTime {
    /// "conv forward", "conv data grad", "conv weight grad", "bn forward", "bn backward",
    /// "elementwise", "pooling", "loss", "linear", "optimizer" or "alloc/copy".
    pub phase: String,
    pub seconds: f64,
    pub calls: f64,
}

/// What `profileTake` returns. `otherSeconds`: wall time outside backend calls (autograd, the
/// tape, freeing storages, the binding and whatever JS ran meanwhile).
#[napi(object)]
pub struct PhaseProfile {
    pub wall_seconds: f64,
    pub other_seconds: f64,
    pub phases: Vec<PhaseTime>,
}

/// Starts timing every CPU backend call of this process, by phase (earlier sums are dropped).
#[napi]
pub fn profile_start() -> napi::Result<()> {
    guard("profileStart", || {
        profile::start();
        Ok(())
    })
}

/// Stops timing and returns the sums since `profileStart`. Throws if GPU work ran meanwhile (the
/// profile times CPU kernels only: GPU calls return before their work is done).
#[napi]
pub fn profile_take() -> napi::Result<PhaseProfile> {
    guard_core("profileTake", || {
        let p = profile::take()?;
        Ok(PhaseProfile {
            wall_seconds: p.wall_seconds,
            other_seconds: p.other_seconds(),
            phases: p
                .phases
                .iter()
                .map(|t| PhaseTime {
                    phase: t.phase.name().to_string(),
                    seconds: t.seconds,
                    calls: t.calls as f64,
                })
                .collect(),
        })
    })
}
