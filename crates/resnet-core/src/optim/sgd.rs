//! SGD as PyTorch defines it (dampening 0; weight decay added to the gradient; the momentum
//! buffer starts as the first gradient), with a schedule and optional linear warm-up.

use super::Schedule;
use crate::backend::{SgdStep, Storage};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub schedule: Schedule,
    /// Steps of linear warm-up from lr/warmup_steps to the scheduled rate.
    pub warmup_steps: u64,
}

impl Default for SgdConfig {
    /// The paper's recipe: lr 0.1, momentum 0.9, weight decay 1e-4.
    fn default() -> Self {
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            schedule: Schedule::Constant,
            warmup_steps: 0,
        }
    }
}

impl SgdConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: SgdConfig =
            serde_json::from_str(json).map_err(|e| Error::invalid(format!("invalid optimizer config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::invalid(format!(
                "learning rate must be a finite number >= 0, got {}",
                self.lr
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) && self.momentum != 0.0 {
            return Err(Error::invalid(format!(
                "momentum must be in [0, 1), got {}",
                self.momentum
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "weight decay must be >= 0, got {}",
                self.weight_decay
            )));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::invalid("Nesterov momentum needs momentum > 0"));
        }
        Ok(())
    }

    pub fn lr_at(&self, step: u64) -> f32 {
        let lr = self.schedule.lr(self.lr, step);
        if step < self.warmup_steps {
            lr * (step + 1) as f32 / self.warmup_steps as f32
        } else {
            lr
        }
    }
}

pub struct Sgd {
    params: Vec<Tensor>,
    momentum: Vec<Option<Storage>>,
    pub config: SgdConfig,
    step: u64,
}

impl Sgd {
    pub fn new(params: Vec<Tensor>, config: SgdConfig) -> Result<Self> {
        config.validate()?;
        if let Some(t) = params.iter().find(|t| !t.requires_grad()) {
            return Err(Error::invalid(format!(
                "SGD: tensor {:?} does not require grad",
                t.shape()
            )));
        }
        let momentum = vec![None; params.len()];
        Ok(Sgd {
            params,
            momentum,
            config,
            step: 0,
        })
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The rate the next `step()` will use.
    pub fn lr(&self) -> f32 {
        self.config.lr_at(self.step)
    }

    /// Applies one update to every parameter that has a gradient, then advances the schedule.
    pub fn step(&mut self) -> Result<()> {
        let lr = self.lr();
        for (p, buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            let Some(grad) = p.grad_storage() else { continue };
            let be = grad.device().backend();
            let first_step = buf.is_none();
            let b = match buf {
                Some(b) => b,
                None => buf.insert(be.zeros(p.numel())?),
            };
            let s = SgdStep {
                lr,
                momentum: self.config.momentum,
                weight_decay: self.config.weight_decay,
                nesterov: self.config.nesterov,
                first_step,
            };
            p.update_storage(|ps| be.sgd_update(ps, &grad, b, &s))?;
        }
        self.step += 1;
        Ok(())
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(|p| p.zero_grad());
    }

    /// Momentum buffers (None before a parameter's first update), in parameter order.
    pub fn momentum_buffers(&self) -> &[Option<Storage>] {
        &self.momentum
    }

    /// Restores a saved position: the step count and the momentum buffers.
    pub fn restore(&mut self, step: u64, buffers: Vec<Option<Storage>>) -> Result<()> {
        if buffers.len() != self.params.len() {
            return Err(Error::invalid(format!(
                "optimizer state has {} momentum buffers for {} parameters",
                buffers.len(),
                self.params.len()
            )));
        }
        for (p, b) in self.params.iter().zip(&buffers) {
            if let Some(b) = b {
                if b.len() != p.numel() {
                    return Err(Error::invalid(format!(
                        "momentum buffer of {} values for a parameter of shape {:?}",
                        b.len(),
                        p.shape()
                    )));
                }
            }
        }
        self.step = step;
        self.momentum = buffers;
        Ok(())
    }
}
