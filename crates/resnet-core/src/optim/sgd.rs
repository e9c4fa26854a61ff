//! SGD as PyTorch defines it (dampening 0; weight decay added to the gradient; the momentum
//! buffer starts as the first gradient), with a schedule and optional linear warm-up.

use super::Schedule;
use crate::backend::{Backend, ScalerGate, SgdStep, Storage};
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
    /// Parses and validates a config; a bad field is named with what it allows ("invalid
    /// optimizer config: `lr` must be a finite number, got null ..."), never by serde's column.
    pub fn from_json(json: &str) -> Result<Self> {
        let bad = |m: String| Error::invalid(format!("invalid optimizer config: {m}"));
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        check_fields(&value).map_err(bad)?;
        let cfg: SgdConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return Err(Error::invalid(format!(
                "lr (learning rate) must be a finite number >= 0, got {}",
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
                "weightDecay must be a finite number >= 0, got {}",
                self.weight_decay
            )));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::invalid("nesterov: Nesterov momentum needs momentum > 0"));
        }
        match &self.schedule {
            Schedule::Multistep { gamma, .. } if !(gamma.is_finite() && *gamma > 0.0) => {
                return Err(Error::invalid(format!(
                    "schedule.gamma must be a finite number > 0, got {gamma}"
                )));
            }
            Schedule::Cosine { min_lr, .. } if !(min_lr.is_finite() && *min_lr >= 0.0) => {
                return Err(Error::invalid(format!(
                    "schedule.minLr must be a finite number >= 0, got {min_lr}"
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// The rate of step `step` as the configuration means it, for reports (`TrainStats.lr` in
    /// JavaScript): the schedule and warm-up evaluated in f64 on the settings as written (0.1,
    /// not the f32 0.100000001490116...), rounded to 12 significant digits so that 0.1 / 10 reads
    /// 0.01. The update itself applies [`SgdConfig::lr_at`], the nearest f32 arithmetic to it.
    pub fn reported_lr(&self, step: u64) -> f64 {
        use super::schedule::{decimal, round12};
        let lr = self.schedule.lr_f64(decimal(self.lr), step);
        let lr = if step < self.warmup_steps {
            lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            lr
        };
        round12(lr)
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

/// Every field's type, named in the message (see [`crate::json_check`]).
fn check_fields(v: &serde_json::Value) -> crate::json_check::Check {
    use crate::json_check::Fields;
    let f = Fields::of(v, "", "the optimizer config")?;
    f.number("lr", false)?;
    f.number("momentum", false)?;
    f.number("weightDecay", false)?;
    f.boolean("nesterov", false)?;
    f.count("warmupSteps", false)?;
    if let Some(schedule) = f.value("schedule", false)? {
        let s = Fields::of(schedule, "schedule.", "`schedule`")?;
        s.one_of("kind", &["constant", "multistep", "cosine"], true)?;
        match schedule.get("kind").and_then(|k| k.as_str()) {
            Some("multistep") => {
                s.counts("milestones", true)?;
                s.number("gamma", true)?;
            }
            Some("cosine") => {
                s.count("totalSteps", true)?;
                s.number("minLr", true)?;
            }
            _ => {}
        }
    }
    Ok(())
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
        self.step_unscaling(1.0)
    }

    /// [`Sgd::step`] on gradients multiplied by `grad_scale` first (1 / the loss scale).
    pub fn step_unscaling(&mut self, grad_scale: f32) -> Result<()> {
        let lr = self.lr();
        self.update_each(lr, grad_scale, |be, param, grad, buf, s| {
            be.sgd_update(param, grad, buf, s)
        })?;
        self.step += 1;
        Ok(())
    }

    /// One mixed-precision update whose skip, scale and rate the device decides (`gate`), so
    /// the host waits for nothing. The step count does not move: whether the step was applied is
    /// known once the gate's check is read, and then `count_applied_step` counts it.
    pub fn step_gated(&mut self, gate: &ScalerGate) -> Result<()> {
        // The rate comes from `gate.lrs`, the scale from `gate.state`.
        self.update_each(0.0, 1.0, |be, param, grad, buf, s| {
            be.sgd_update_gated(param, grad, buf, s, gate)
        })
    }

    /// Counts a step `step_gated` took and the device applied.
    pub fn count_applied_step(&mut self) {
        self.step += 1;
    }

    /// The rates of the next gated step, one for each count of the `pending` steps before it
    /// that the device may have applied (its index is the count).
    pub fn pending_rates(&self, pending: usize) -> Vec<f32> {
        (0..=pending as u64).map(|j| self.config.lr_at(self.step + j)).collect()
    }

    /// Runs `update(backend, param, grad, momentum, step)` on every parameter that has a
    /// gradient, `step` at `lr` and `grad_scale`. A buffer made for this step starts at zero, which a skipped first step leaves
    /// as it is: the momentum of the next step is then `momentum * 0 + d = d`, exactly the first
    /// gradient PyTorch seeds it with.
    fn update_each(
        &mut self,
        lr: f32,
        grad_scale: f32,
        update: impl Fn(&dyn Backend, &mut Storage, &Storage, &mut Storage, &SgdStep) -> Result<()>,
    ) -> Result<()> {
        // Every missing momentum buffer first: when memory runs out here no parameter has moved
        // (and the buffers made so far are dropped again).
        let mut fresh = vec![false; self.params.len()];
        let mut failed = None;
        for (i, (p, buf)) in self.params.iter().zip(self.momentum.iter_mut()).enumerate() {
            if buf.is_none() && p.grad_storage().is_some() {
                match p.device().backend().zeros(p.numel()) {
                    Ok(b) => {
                        *buf = Some(b);
                        fresh[i] = true;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            for (buf, made) in self.momentum.iter_mut().zip(&fresh) {
                if *made {
                    *buf = None;
                }
            }
            return Err(e);
        }
        for ((p, buf), &first_step) in self.params.iter().zip(self.momentum.iter_mut()).zip(&fresh) {
            let Some(grad) = p.grad_storage() else { continue };
            let be = grad.device().backend();
            let Some(b) = buf else { continue };
            let s = SgdStep {
                lr,
                momentum: self.config.momentum,
                weight_decay: self.config.weight_decay,
                nesterov: self.config.nesterov,
                first_step,
                grad_scale,
            };
            p.update_storage(|ps| update(be, ps, &grad, b, &s))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_named() {
        let m = SgdConfig::from_json(r#"{"lr":null}"#).unwrap_err().to_string();
        assert!(
            m.starts_with("invalid optimizer config: `lr` must be a finite number, got null"),
            "{m}"
        );
        assert!(!m.contains("column"), "{m}");
        let m = SgdConfig::from_json(r#"{"schedule":{"kind":"step"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("`schedule.kind` must be one of 'constant', 'multistep', 'cosine', got 'step'"),
            "{m}"
        );
        let m = SgdConfig::from_json(r#"{"schedule":{"kind":"multistep","milestones":[1.5],"gamma":0.1}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("`schedule.milestones[0]` must be a non-negative integer, got 1.5"),
            "{m}"
        );
        let m = SgdConfig::from_json(r#"{"warmupSteps":-1}"#).unwrap_err().to_string();
        assert!(
            m.contains("`warmupSteps` must be a non-negative integer, got -1"),
            "{m}"
        );
    }

    #[test]
    fn reported_lr_is_the_rate_meant() {
        let mut cfg = SgdConfig::default();
        assert_eq!(cfg.lr_at(0) as f64, 0.10000000149011612);
        assert_eq!(cfg.reported_lr(0), 0.1);
        cfg.schedule = Schedule::Multistep {
            milestones: vec![5, 8],
            gamma: 0.1,
        };
        assert_eq!(cfg.reported_lr(4), 0.1);
        assert_eq!(cfg.reported_lr(5), 0.01);
        assert_eq!(cfg.reported_lr(8), 0.001);
        cfg.warmup_steps = 4;
        assert_eq!(cfg.reported_lr(0), 0.025);
    }
}
