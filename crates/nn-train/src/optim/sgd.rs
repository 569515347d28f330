//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay
//! (`torch.optim.SGD`).
//!
//! For each parameter `p` with gradient `g`, at step `t = 1, 2, …`:
//! ```text
//! g = g + weight_decay * p                       (when weight_decay ≠ 0)
//! buf = g                                        (t = 1)
//! buf = momentum * buf + (1 - dampening) * g     (t > 1)       } when momentum ≠ 0
//! d = g + momentum * buf  if nesterov  else  buf               }
//! p = p - lr * d                                 (d = g without momentum)
//! ```
//! State per parameter: `momentum_buffer` (only when `momentum ≠ 0`).

use crate::error::{Result, invalid};
use nalgebra::DMatrix;
use nn_core::{Float, lit};

/// Settings of `torch.optim.SGD`; defaults are PyTorch's (everything but `lr` is zero/false).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    #[serde(default)]
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer.
    #[serde(default)]
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening = 0`).
    #[serde(default)]
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    #[serde(default)]
    pub weight_decay: f64,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
    /// Sets the momentum factor.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Sets the dampening.
    pub fn with_dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }
    /// Turns Nesterov momentum on or off.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
    /// Sets the L2 penalty.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// The checks PyTorch's constructor makes.
    pub(crate) fn validate(&self) -> Result<()> {
        if !crate::error::non_negative(self.lr) {
            return Err(invalid(format!("SGD: invalid learning rate {}", self.lr)));
        }
        if !crate::error::non_negative(self.momentum) {
            return Err(invalid(format!("SGD: invalid momentum {}", self.momentum)));
        }
        if !crate::error::non_negative(self.weight_decay) {
            return Err(invalid(format!(
                "SGD: invalid weight_decay {}",
                self.weight_decay
            )));
        }
        if !self.dampening.is_finite() {
            return Err(invalid(format!(
                "SGD: invalid dampening {}",
                self.dampening
            )));
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(invalid(
                "SGD: Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        Ok(())
    }

    /// Names of the per-parameter state buffers.
    pub(crate) fn buffers(&self) -> &'static [&'static str] {
        if self.momentum != 0.0 {
            &["momentum_buffer"]
        } else {
            &[]
        }
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
        let n = p.len();
        let (g, out) = (&g[..n], &mut out[..n]);
        let lr: T = lit(lr);
        let wd: T = lit(self.weight_decay);
        let decay = self.weight_decay != 0.0;
        let mut ok = true;
        if self.momentum == 0.0 {
            for i in 0..n {
                let (p, g) = (p[i], g[i]);
                let d = if decay { g + wd * p } else { g };
                let pn = p - lr * d;
                out[i] = pn;
                ok &= pn.finite();
            }
            return ok;
        }
        let mom: T = lit(self.momentum);
        let keep: T = lit(1.0 - self.dampening);
        let ([buf], [buf_out]) = (state, out_state) else {
            unreachable!("SGD with momentum has one buffer")
        };
        let (buf, buf_out) = (&buf.as_slice()[..n], &mut buf_out.as_mut_slice()[..n]);
        for i in 0..n {
            let (p, g) = (p[i], g[i]);
            let d = if decay { g + wd * p } else { g };
            let bn = if t == 1 { d } else { buf[i] * mom + keep * d };
            let d = if self.nesterov { d + mom * bn } else { bn };
            let pn = p - lr * d;
            (out[i], buf_out[i]) = (pn, bn);
            ok &= pn.finite() & bn.finite();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: SgdConfig, p: &mut [f64], grads: &[[f64; 2]]) {
        let mut st: Vec<DMatrix<f64>> = cfg
            .buffers()
            .iter()
            .map(|_| DMatrix::zeros(p.len(), 1))
            .collect();
        for (i, g) in grads.iter().enumerate() {
            let (mut out, mut out_st) = (p.to_vec(), st.clone());
            assert!(cfg.apply(cfg.lr, i as u64 + 1, p, g, &st, &mut out, &mut out_st));
            p.copy_from_slice(&out);
            st = out_st;
        }
    }

    #[test]
    fn plain_and_weight_decay() {
        // p = 1 - 0.1 * (0.5 + 0.1 * 1) = 0.94
        let mut p = [1.0, -2.0];
        run(
            SgdConfig::new(0.1).with_weight_decay(0.1),
            &mut p,
            &[[0.5, 0.25]],
        );
        assert!((p[0] - 0.94).abs() < 1e-15 && (p[1] - (-2.0 - 0.1 * (0.25 - 0.2))).abs() < 1e-15);
    }

    #[test]
    fn momentum_dampening_and_nesterov_follow_pytorch() {
        // torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5), p=1, g=1 then g=2:
        // t1: buf=1, p=1-0.1*1=0.9; t2: buf=0.9*1+0.5*2=1.9, p=0.9-0.19=0.71
        let mut p = [1.0, 0.0];
        run(
            SgdConfig::new(0.1).with_momentum(0.9).with_dampening(0.5),
            &mut p,
            &[[1.0, 0.0], [2.0, 0.0]],
        );
        assert!((p[0] - 0.71).abs() < 1e-15, "{p:?}");
        // nesterov, momentum 0.9: t1: buf=1, d=1+0.9=1.9, p=1-0.19=0.81;
        // t2: buf=0.9+2=2.9, d=2+2.61=4.61, p=0.81-0.461=0.349
        let mut p = [1.0, 0.0];
        run(
            SgdConfig::new(0.1).with_momentum(0.9).with_nesterov(true),
            &mut p,
            &[[1.0, 0.0], [2.0, 0.0]],
        );
        assert!((p[0] - 0.349).abs() < 1e-15, "{p:?}");
        // weight decay enters the buffer: wd=0.5, p=1, g=1: d=1.5, buf=1.5, p=1-0.15=0.85
        let mut p = [1.0, 0.0];
        run(
            SgdConfig::new(0.1)
                .with_momentum(0.9)
                .with_weight_decay(0.5),
            &mut p,
            &[[1.0, 0.0]],
        );
        assert!((p[0] - 0.85).abs() < 1e-15, "{p:?}");
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(SgdConfig::new(-1.0).validate().is_err());
        assert!(SgdConfig::new(0.1).with_nesterov(true).validate().is_err());
        assert!(
            SgdConfig::new(0.1)
                .with_momentum(0.9)
                .with_dampening(0.1)
                .with_nesterov(true)
                .validate()
                .is_err()
        );
        assert!(
            SgdConfig::new(0.1)
                .with_momentum(0.9)
                .with_nesterov(true)
                .validate()
                .is_ok()
        );
    }
}
