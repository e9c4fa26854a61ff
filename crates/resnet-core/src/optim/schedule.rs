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
            Schedule::Multistep { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| m <= step).count() as i32;
                base * gamma.powi(passed)
            }
            Schedule::Cosine { total_steps, min_lr } => {
                let t = (step.min(*total_steps) as f64) / (*total_steps).max(1) as f64;
                (*min_lr as f64 + (base - min_lr) as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
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
