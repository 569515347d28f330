//! Learning-rate schedules, as the closed forms of PyTorch's `lr_scheduler`s.
//!
//! With `base` the optimizer's initial learning rate and `e` the number of scheduler steps taken
//! so far (PyTorch's `last_epoch`; the trainer steps the schedule once per training step):
//! - `Constant`: `base`;
//! - `Step` (`StepLR`): `base · γ^⌊e / step_size⌋`;
//! - `Exponential` (`ExponentialLR`): `base · γ^e`;
//! - `Cosine` (`CosineAnnealingLR`): `η_min + (base − η_min)(1 + cos(π e / T_max)) / 2`
//!   (past `T_max` the closed form rises again, as PyTorch's does).
//!
//! PyTorch's `scheduler.step()` updates the rate recursively; the closed forms give the same
//! values up to rounding.

use crate::error::{Result, invalid};

/// A learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` every `step_size` steps.
    Step {
        /// Steps between decays (> 0).
        step_size: u64,
        /// Decay factor.
        gamma: f64,
    },
    /// Multiply by `gamma` every step.
    Exponential {
        /// Decay factor.
        gamma: f64,
    },
    /// Half a cosine from `base` down to `eta_min` over `t_max` steps.
    Cosine {
        /// Steps of the half period (> 0).
        t_max: u64,
        /// The lowest rate.
        eta_min: f64,
    },
}

impl LrSchedule {
    /// Checks the settings (non-zero periods, finite factors).
    pub fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { step_size, gamma } if step_size > 0 && gamma.is_finite() => Ok(()),
            LrSchedule::Exponential { gamma } if gamma.is_finite() => Ok(()),
            LrSchedule::Cosine { t_max, eta_min } if t_max > 0 && eta_min.is_finite() => Ok(()),
            other => Err(invalid(format!("invalid learning-rate schedule {other:?}"))),
        }
    }

    /// The learning rate after `epoch` scheduler steps, starting from `base`.
    pub fn lr_at(&self, base: f64, epoch: u64) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powf((epoch / step_size.max(1)) as f64)
            }
            LrSchedule::Exponential { gamma } => base * gamma.powf(epoch as f64),
            LrSchedule::Cosine { t_max, eta_min } => {
                let phase = std::f64::consts::PI * epoch as f64 / t_max.max(1) as f64;
                eta_min + (base - eta_min) * (1.0 + phase.cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() {
        let s = LrSchedule::Step {
            step_size: 3,
            gamma: 0.5,
        };
        let got: Vec<f64> = (0..7).map(|e| s.lr_at(1.0, e)).collect();
        assert_eq!(got, vec![1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]);
        let e = LrSchedule::Exponential { gamma: 0.9 };
        assert!((e.lr_at(0.1, 2) - 0.081).abs() < 1e-16);
        let c = LrSchedule::Cosine {
            t_max: 10,
            eta_min: 0.001,
        };
        assert_eq!(c.lr_at(0.1, 0), 0.1);
        assert!((c.lr_at(0.1, 5) - 0.0505).abs() < 1e-15);
        assert!((c.lr_at(0.1, 10) - 0.001).abs() < 1e-15);
        assert_eq!(LrSchedule::Constant.lr_at(0.3, 99), 0.3);
        assert!(
            LrSchedule::Step {
                step_size: 0,
                gamma: 0.5
            }
            .validate()
            .is_err()
        );
        assert!(c.validate().is_ok());
    }
}
