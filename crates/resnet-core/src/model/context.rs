//! The one place `model/` builds an `nn::Ctx`: every pass names its `BnMode` here.

use std::sync::Arc;

use crate::distributed::Communicator;
use crate::nn::{BnMode, Ctx, ResponseHook};

/// `Train` or `Eval` from the public API's `training` flag.
pub(crate) fn mode(training: bool) -> BnMode {
    if training {
        BnMode::Train
    } else {
        BnMode::Eval
    }
}

/// The probes' form of `training`: batch statistics without touching the model.
pub(crate) fn frozen(training: bool) -> BnMode {
    if training {
        BnMode::TrainFrozenStats
    } else {
        BnMode::Eval
    }
}

pub(crate) fn ctx(bn_mode: BnMode, hook: Option<ResponseHook<'_>>) -> Ctx<'_> {
    Ctx {
        bn_mode,
        response_hook: hook,
        batch_norm_sync: None,
    }
}

/// A data-parallel training pass: batch statistics over every rank's batch when `sync` is set.
pub(crate) fn ctx_synced(bn_mode: BnMode, sync: Option<&Arc<Communicator>>) -> Ctx<'_> {
    Ctx {
        bn_mode,
        response_hook: None,
        batch_norm_sync: sync,
    }
}
