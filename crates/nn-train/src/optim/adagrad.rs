//! Adagrad (`torch.optim.Adagrad`).
//!
//! For each parameter `p` with gradient `g`, at step `t = 1, 2, …`
//! (`sum` starts at `initial_accumulator_value`):
//! ```text
//! g = g + weight_decay * p                  (when weight_decay ≠ 0)
//! clr = lr / (1 + (t - 1) * lr_decay)
//! sum = sum + g²
//! p = p - clr · g / (√sum + eps)
//! ```
//! State per parameter: `sum`.

use crate::error::{Result, invalid};
use nalgebra::DMatrix;
use nn_core::{Float, lit};

/// Settings of `torch.optim.Adagrad`; defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(
    default = "super::config::torch_defaults::adagrad",
    deny_unknown_fields
)]
pub struct AdagradConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Decay of the learning rate with the step count (default 0).
    pub lr_decay: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Starting value of the squared-gradient sum (default 0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator (default 1e-10).
    pub eps: f64,
}

impl AdagradConfig {
    /// Adagrad with learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Self {
        AdagradConfig {
            lr,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
        }
    }
    /// Sets `lr_decay`.
    pub fn with_lr_decay(mut self, lr_decay: f64) -> Self {
        self.lr_decay = lr_decay;
        self
    }
    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Sets the starting value of `sum`.
    pub fn with_initial_accumulator_value(mut self, v: f64) -> Self {
        self.initial_accumulator_value = v;
        self
    }
    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// The checks PyTorch's constructor makes.
    pub(crate) fn validate(&self) -> Result<()> {
        let checks = [
            ("learning rate", self.lr),
            ("lr_decay", self.lr_decay),
            ("weight_decay", self.weight_decay),
            ("initial_accumulator_value", self.initial_accumulator_value),
            ("eps", self.eps),
        ];
        for (what, v) in checks {
            if !crate::error::non_negative(v) {
                return Err(invalid(format!("Adagrad: invalid {what} {v}")));
            }
        }
        Ok(())
    }

    pub(crate) fn buffers(&self) -> &'static [&'static str] {
        &["sum"]
    }

    /// The update of `p` given `g`, at step `t` (1-based), with learning rate `lr`: the new `p`
    /// into `out`, the new state into `out_state` (the inputs are left as they are). Returns
    /// `true` when every new value is finite.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn apply<T: Float>(
        &self,
        lr: f64,
        t: u64,
        p: &[T],
        g: &[T],
        state: &[DMatrix<T>],
        out: &mut [T],
        out_state: &mut [DMatrix<T>],
    ) -> bool {
        let ([sum], [sum_out]) = (state, out_state) else {
            unreachable!("Adagrad has one buffer")
        };
        let n = p.len();
        let (g, out) = (&g[..n], &mut out[..n]);
        let (sum, sum_out) = (&sum.as_slice()[..n], &mut sum_out.as_mut_slice()[..n]);
        let clr: T = lit(lr / (1.0 + (t - 1) as f64 * self.lr_decay));
        let eps: T = lit(self.eps);
        let wd: T = lit(self.weight_decay);
        let decay = self.weight_decay != 0.0;
        let mut ok = true;
        for i in 0..n {
            let (p, g) = (p[i], g[i]);
            let g = if decay { g + wd * p } else { g };
            let sn = sum[i] + g * g;
            let pn = p - clr * (g / (sn.sqrt() + eps));
            (out[i], sum_out[i]) = (pn, sn);
            ok &= pn.finite() & sn.finite();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(cfg: &AdagradConfig, t: u64, p: &mut [f64], g: &[f64], st: &mut Vec<DMatrix<f64>>) {
        let (mut out, mut out_st) = (p.to_vec(), st.clone());
        assert!(cfg.apply(cfg.lr, t, p, g, st, &mut out, &mut out_st));
        p.copy_from_slice(&out);
        *st = out_st;
    }

    #[test]
    fn lr_decay_accumulator_and_weight_decay() {
        // lr=0.1, lr_decay=0.5, init acc 1, wd 0.5, eps 0; p=2, g=0 then g=1:
        // t1: g'=1, sum=2, p = 2 - 0.1 * 1/√2
        // t2: clr = 0.1/1.5, g' = 1 + 0.5 p1, sum = 2 + g'², p = p1 - clr g'/√sum
        let cfg = AdagradConfig::new(0.1)
            .with_lr_decay(0.5)
            .with_initial_accumulator_value(1.0)
            .with_weight_decay(0.5)
            .with_eps(0.0);
        let mut p = [2.0];
        let mut st = vec![DMatrix::from_element(1, 1, 1.0)];
        step(&cfg, 1, &mut p, &[0.0], &mut st);
        let p1 = 2.0 - 0.1 / 2f64.sqrt();
        assert!((p[0] - p1).abs() < 1e-15);
        step(&cfg, 2, &mut p, &[1.0], &mut st);
        let g = 1.0 + 0.5 * p1;
        let want = p1 - (0.1 / 1.5) * (g / (2.0 + g * g).sqrt());
        assert!((p[0] - want).abs() < 1e-15, "{} vs {want}", p[0]);
        assert!(
            AdagradConfig::new(0.1)
                .with_lr_decay(-1.0)
                .validate()
                .is_err()
        );
    }
}
