//! `NativeSgd`: the core's SGD over tensors the user chose, for explicit training loops.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use resnet_core::optim::{Sgd, SgdConfig};

use crate::errors::{guard, guard_core, js_error};
use crate::tensor::NativeTensor;

#[napi]
pub struct NativeSgd {
    inner: Sgd,
}

#[napi]
impl NativeSgd {
    /// SGD over `params` with a config JSON (lr, momentum, weightDecay, nesterov, schedule).
    #[napi(constructor)]
    pub fn new(params: Vec<&NativeTensor>, config_json: String) -> Result<Self> {
        guard("SGD", || {
            let cfg = SgdConfig::from_json(&config_json).map_err(js_error)?;
            let params = params.iter().map(|p| p.tensor().cloned()).collect::<Result<Vec<_>>>()?;
            Sgd::new(params, cfg).map(|inner| NativeSgd { inner }).map_err(js_error)
        })
    }

    /// One update from the accumulated gradients (advances the schedule).
    #[napi]
    pub fn step(&mut self) -> Result<()> {
        guard_core("SGD.step", || self.inner.step())
    }

    #[napi]
    pub fn zero_grad(&mut self) {
        self.inner.zero_grad();
    }

    /// The learning rate the next step will use, as configured (f64; see `SgdConfig::reported_lr`).
    #[napi(getter)]
    pub fn lr(&self) -> f64 {
        self.inner.config.reported_lr(self.inner.step_count())
    }
}
