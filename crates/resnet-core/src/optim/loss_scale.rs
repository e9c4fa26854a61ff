//! Dynamic loss scaling for mixed precision, as PyTorch's `GradScaler` does it: the loss is
//! multiplied by a scale before backward so that small gradients survive the f16 operands; a step
//! whose gradients overflowed (an inf or NaN anywhere) is skipped and the scale halved; after
//! `growth_interval` clean steps in a row the scale doubles.

use serde::{Deserialize, Serialize};

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
}
