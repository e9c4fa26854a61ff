//! Learning rate as a function of the optimiser step, so a resumed run picks it up exactly.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Schedule {
    #[default]
    Constant,
    /// Multiply by `gamma` at each milestone (the paper: /10 at 32k and 48k iterations). Step t
    /// uses base * gamma^(milestones <= t), as PyTorch's MultiStepLR stepped once per iteration.
    #[serde(rename_all = "camelCase")]
    Multistep { milestones: Vec<u64>, gamma: f32 },
    /// Cosine annealing from the base rate to `min_lr` over `total_steps`.
    #[serde(rename_all = "camelCase")]
    Cosine { total_steps: u64, min_lr: f32 },
}

impl Schedule {
    pub fn lr(&self, base: f32, step: u64) -> f32 {
        match self {
            Schedule::Constant => base,
            Schedule::Multistep { milestones, gamma } => base * gamma.powi(milestones_passed(milestones, step)),
            Schedule::Cosine { total_steps, min_lr } => {
                let t = cosine_progress(*total_steps, step);
                (*min_lr as f64 + (base - min_lr) as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }
}

/// Milestones at or before `step`: the power of gamma (PyTorch's MultiStepLR).
fn milestones_passed(milestones: &[u64], step: u64) -> i32 {
    milestones.iter().filter(|&&m| m <= step).count() as i32
}

/// How far through the cosine schedule `step` is, in [0, 1].
fn cosine_progress(total_steps: u64, step: u64) -> f64 {
    (step.min(total_steps) as f64) / total_steps.max(1) as f64
}

/// An f32 setting as the decimal number it was written as: the shortest decimal that reads back
/// to the same f32 (0.1f32 is 0.100000001490116..., and this gives 0.1). Settings cross from
/// JavaScript as f64 and are stored as f32; every decimal of up to 6 significant digits survives
/// the trip exactly.
pub(crate) fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// `x` rounded to 12 significant digits: it removes the last-place noise of f64 arithmetic on
/// decimal settings (0.1 * 0.1 = 0.010000000000000002) and keeps far more precision than the f32
/// rate an update applies (about 7 digits).
pub(crate) fn round12(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

impl Schedule {
    /// [`Schedule::lr`] computed in f64 from the settings as written (see [`decimal`]): the rate
    /// as the configuration means it, for reports. The update itself uses [`Schedule::lr`].
    pub fn lr_f64(&self, base: f64, step: u64) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Multistep { milestones, gamma } => {
                base * decimal(*gamma).powi(milestones_passed(milestones, step))
            }
            Schedule::Cosine { total_steps, min_lr } => {
                let t = cosine_progress(*total_steps, step);
                let min = decimal(*min_lr);
                min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_divides_at_each_milestone() {
        let s = Schedule::Multistep {
            milestones: vec![32000, 48000],
            gamma: 0.1,
        };
        assert_eq!(s.lr(0.1, 0), 0.1);
        assert_eq!(s.lr(0.1, 31999), 0.1);
        assert!((s.lr(0.1, 32000) - 0.01).abs() < 1e-9);
        assert!((s.lr(0.1, 48000) - 0.001).abs() < 1e-9);
    }

    #[test]
    fn reported_rates_are_the_decimals_meant() {
        assert_eq!(decimal(0.1), 0.1);
        assert_eq!(decimal(1e-4), 1e-4);
        let s = Schedule::Multistep {
            milestones: vec![10, 20],
            gamma: 0.1,
        };
        assert_eq!(round12(s.lr_f64(0.1, 9)), 0.1);
        assert_eq!(round12(s.lr_f64(0.1, 10)), 0.01);
        assert_eq!(round12(s.lr_f64(0.1, 20)), 0.001);
        let c = Schedule::Cosine {
            total_steps: 100,
            min_lr: 0.0,
        };
        assert_eq!(round12(c.lr_f64(0.1, 50)), 0.05);
    }

    #[test]
    fn cosine_runs_from_base_to_min() {
        let s = Schedule::Cosine {
            total_steps: 100,
            min_lr: 0.001,
        };
        assert!((s.lr(0.1, 0) - 0.1).abs() < 1e-7);
        assert!((s.lr(0.1, 50) - 0.0505).abs() < 1e-6);
        assert!((s.lr(0.1, 100) - 0.001).abs() < 1e-7);
        assert!((s.lr(0.1, 1000) - 0.001).abs() < 1e-7);
    }
}
