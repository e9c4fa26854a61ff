//! The one place `model/` builds an `nn::Ctx`: every pass names what it needs from batch norm
//! here, so a change to how `Ctx` spells it touches this file only.

use crate::nn::{Ctx, ResponseHook};

/// How a pass through the net treats batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Batch statistics; running statistics and counters see the batch.
    Train,
    /// Batch statistics; running statistics and counters stay as they are (probes).
    TrainFrozenStats,
    /// Running statistics.
    Eval,
}

impl Mode {
    /// `Train` or `Eval` from the public API's `training` flag.
    pub(crate) fn from_training(training: bool) -> Mode {
        if training {
            Mode::Train
        } else {
            Mode::Eval
        }
    }

    /// The probes' form of `training`: batch statistics without touching the model.
    pub(crate) fn frozen(training: bool) -> Mode {
        if training {
            Mode::TrainFrozenStats
        } else {
            Mode::Eval
        }
    }
}

pub(crate) fn ctx(pass: Mode, hook: Option<ResponseHook<'_>>) -> Ctx<'_> {
    Ctx {
        training: pass != Mode::Eval,
        keep_running_stats: pass != Mode::Train,
        response_hook: hook,
    }
}
