//! Dynamic loss scaling for mixed precision, as PyTorch's `GradScaler` does it: the loss is
//! multiplied by a scale before backward so that small gradients survive the f16 operands; a step
//! whose gradients overflowed (an inf or NaN anywhere) is skipped and the scale halved; after
//! `growth_interval` clean steps in a row the scale doubles.

use serde::{Deserialize, Serialize};

use crate::backend::{Device, ScaleRule, ScalerGate, Storage};
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LossScaler {
    scale: f32,
    /// Clean steps since the scale last changed.
    clean_steps: u32,
    growth_interval: u32,
}

/// What [`LossScaler::update`] decided about one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaledStep {
    /// The gradients were finite: apply them (divided by the scale the step used).
    Apply,
    /// An inf or NaN: leave the weights alone; the scale was halved.
    Skip,
}

impl Default for LossScaler {
    /// `GradScaler`'s defaults: 2^16, doubled after 2000 clean steps.
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            clean_steps: 0,
            growth_interval: 2000,
        }
    }
}

/// The scale never falls below this (f32's smallest normal is far below; a scale this small means
/// the forward pass itself overflows, which no scale can mend).
const MIN_SCALE: f32 = 1.0 / 65536.0;
/// Nor grows past this: beyond it f32 gradients themselves would overflow.
const MAX_SCALE: f32 = 16_777_216.0;

impl LossScaler {
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Records whether this step's gradients were all finite, and says whether to apply them.
    pub fn update(&mut self, finite: bool) -> ScaledStep {
        if !finite {
            self.scale = (self.scale * 0.5).max(MIN_SCALE);
            self.clean_steps = 0;
            return ScaledStep::Skip;
        }
        self.clean_steps += 1;
        if self.clean_steps >= self.growth_interval {
            self.scale = (self.scale * 2.0).min(MAX_SCALE);
            self.clean_steps = 0;
        }
        ScaledStep::Apply
    }

    /// A scaler restored from a checkpoint (`scale` a power of two in range, as `update` keeps it).
    pub fn restored(scale: f32, clean_steps: u32) -> Option<Self> {
        let power_of_two = scale.is_finite() && scale > 0.0 && scale.log2().fract() == 0.0;
        (power_of_two && (MIN_SCALE..=MAX_SCALE).contains(&scale)).then(|| LossScaler {
            scale,
            clean_steps,
            ..LossScaler::default()
        })
    }

    pub fn clean_steps(&self) -> u32 {
        self.clean_steps
    }

    /// The constants `update` applies, for the device's copy.
    pub fn rule(&self) -> ScaleRule {
        ScaleRule {
            growth_interval: self.growth_interval,
            min_scale: MIN_SCALE,
            max_scale: MAX_SCALE,
        }
    }
}

/// A loss scaler's copy on the device, which mixed-precision steps read and update there, so a
/// step waits for nothing: its backward starts from `scale`, and its update is skipped or applied
/// by the device (`Backend::sgd_update_gated`). The host's `LossScaler` catches up when the
/// steps' checks are read, by running `update` on each, which the device's `scaled_step` mirrors.
pub struct DeviceScaler {
    scale: Storage,
    /// `[1 / scale, clean steps, steps applied since this copy was made]`.
    state: Storage,
    rule: ScaleRule,
}

impl DeviceScaler {
    pub fn upload(scaler: &LossScaler, device: Device) -> Result<Self> {
        let be = device.backend();
        Ok(DeviceScaler {
            scale: be.upload(&[scaler.scale])?,
            // A power of two's reciprocal is exact.
            state: be.upload(&[1.0 / scaler.scale, scaler.clean_steps as f32, 0.0])?,
            rule: scaler.rule(),
        })
    }

    /// The scale as one value on the device: a step's backward starts from it.
    pub fn scale(&self) -> Storage {
        self.scale.clone()
    }

    /// What a gated update of this step reads: its gradients' `check` and its `rates`, one for
    /// each count of steps applied since this copy was made.
    pub fn gate<'a>(&'a self, check: &'a Storage, rates: &'a Storage) -> ScalerGate<'a> {
        ScalerGate {
            check,
            state: &self.state,
            lrs: rates,
        }
    }

    /// After the step's updates: the scale and counts that follow from its `check`.
    pub fn update(&mut self, check: &Storage) -> Result<()> {
        let be = check.device().backend();
        be.loss_scale_update(&mut self.scale, &mut self.state, check, &self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_halves_and_clean_runs_double() {
        let mut s = LossScaler::default();
        assert_eq!(s.update(false), ScaledStep::Skip);
        assert_eq!(s.scale(), 32768.0);
        for _ in 0..1999 {
            assert_eq!(s.update(true), ScaledStep::Apply);
        }
        assert_eq!(s.scale(), 32768.0);
        s.update(true);
        assert_eq!(s.scale(), 65536.0);
        // An overflow restarts the count.
        s.update(true);
        s.update(false);
        assert_eq!((s.scale(), s.clean_steps()), (32768.0, 0));
    }

    #[test]
    fn the_scale_stays_in_range() {
        let mut s = LossScaler::default();
        for _ in 0..100 {
            s.update(false);
        }
        assert_eq!(s.scale(), MIN_SCALE);
        assert!(LossScaler::restored(3.0, 0).is_none());
        assert!(LossScaler::restored(f32::INFINITY, 0).is_none());
        assert_eq!(LossScaler::restored(1024.0, 7).unwrap().clean_steps(), 7);
    }

    /// The device's rule (`backend::scaled_step`, which the CPU backend runs and the GPU kernel
    /// copies) decides every step as `update` does, the reciprocal exact at every scale.
    #[test]
    fn the_device_rule_follows_update() {
        use crate::backend::scaled_step;
        let mut host = LossScaler {
            growth_interval: 3,
            ..LossScaler::default()
        };
        let rule = host.rule();
        let (mut scale, mut inv, mut clean, mut applied) = (host.scale, 1.0 / host.scale, 0.0, 0.0);
        let mut applied_host = 0.0;
        // Overflows down to the floor, clean runs up to the ceiling, and mixtures in between.
        let finite: Vec<bool> = (0..40)
            .map(|i| i % 7 == 3)
            .chain((0..200).map(|i| i % 23 != 0))
            .collect();
        let (mut floor, mut ceiling) = (false, false);
        for (i, &f) in finite.iter().enumerate() {
            if host.update(f) == ScaledStep::Apply {
                applied_host += 1.0;
            }
            (scale, inv, clean, applied) = scaled_step(scale, inv, clean, applied, f, &rule);
            assert_eq!(
                (scale, clean, applied),
                (host.scale, host.clean_steps as f32, applied_host),
                "step {i}"
            );
            assert_eq!(inv, 1.0 / scale, "step {i}");
            floor |= scale == MIN_SCALE;
            ceiling |= scale == MAX_SCALE;
        }
        assert!(floor && ceiling, "the scale reached both bounds");
    }
}
