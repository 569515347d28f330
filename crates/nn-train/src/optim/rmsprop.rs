//! RMSprop, plain, centered and with momentum (`torch.optim.RMSprop`).
//!
//! For each parameter `p` with gradient `g` (`sq`, `g_avg`, `buf` start at zero):
//! ```text
//! g = g + weight_decay * p                    (when weight_decay ≠ 0)
//! sq = α sq + (1 - α) g²
//! g_avg = α g_avg + (1 - α) g                 (centered only)
//! avg = √(sq - g_avg²) + eps   if centered   else   √sq + eps
//! buf = momentum · buf + g / avg;  p = p - lr · buf      (momentum > 0)
//! p = p - lr · g / avg                                   (otherwise)
//! ```
//! State per parameter: `square_avg`, then `momentum_buffer` (momentum > 0), then `grad_avg`
//! (centered), PyTorch's names.

use crate::error::{Result, invalid};
use nalgebra::DMatrix;
use nn_core::{Float, lit};

/// Settings of `torch.optim.RMSprop`; defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(
    default = "super::config::torch_defaults::rmsprop",
    deny_unknown_fields
)]
pub struct RmsPropConfig {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Smoothing constant `α` (default 0.99).
    pub alpha: f64,
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Normalize by the estimated variance instead of the second moment (default false).
    pub centered: bool,
}

impl RmsPropConfig {
    /// RMSprop with learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Self {
        RmsPropConfig {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
    /// Sets `α`.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Sets the momentum factor.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Turns centering on or off.
    pub fn with_centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    /// The checks PyTorch's constructor makes.
    pub(crate) fn validate(&self) -> Result<()> {
        let checks = [
            ("learning rate", self.lr),
            ("eps", self.eps),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("alpha", self.alpha),
        ];
        for (what, v) in checks {
            if !crate::error::non_negative(v) {
                return Err(invalid(format!("RMSprop: invalid {what} {v}")));
            }
        }
        // PyTorch accepts any alpha >= 0, but above 1 the running average of g² turns negative
        // and its square root NaN on the first step.
        if self.alpha > 1.0 {
            return Err(invalid(format!(
                "RMSprop: alpha {} is above 1 (the average of g² would turn negative)",
                self.alpha
            )));
        }
        Ok(())
    }

    pub(crate) fn buffers(&self) -> &'static [&'static str] {
        match (self.momentum > 0.0, self.centered) {
            (false, false) => &["square_avg"],
            (true, false) => &["square_avg", "momentum_buffer"],
            (false, true) => &["square_avg", "grad_avg"],
            (true, true) => &["square_avg", "momentum_buffer", "grad_avg"],
        }
    }

    /// The update of `p` given `g`, with learning rate `lr`: the new `p` into `out`, the new
    /// state into `out_state` (the inputs are left as they are). Returns `true` when every new
    /// value is finite.
    #[inline(always)]
    pub(crate) fn apply<T: Float>(
        &self,
        lr: f64,
        p: &[T],
        g: &[T],
        state: &[DMatrix<T>],
        out: &mut [T],
        out_state: &mut [DMatrix<T>],
    ) -> bool {
        match (self.momentum > 0.0, self.centered) {
            (false, false) => self.run::<T, false, false>(lr, p, g, state, out, out_state),
            (true, false) => self.run::<T, true, false>(lr, p, g, state, out, out_state),
            (false, true) => self.run::<T, false, true>(lr, p, g, state, out, out_state),
            (true, true) => self.run::<T, true, true>(lr, p, g, state, out, out_state),
        }
    }

    /// [`RmsPropConfig::apply`] for one combination of momentum and centering, so each loop
    /// has no branch per element; the buffers are in [`RmsPropConfig::buffers`]' order.
    #[inline(always)]
    fn run<T: Float, const MOMENTUM: bool, const CENTERED: bool>(
        &self,
        lr: f64,
        p: &[T],
        g: &[T],
        state: &[DMatrix<T>],
        out: &mut [T],
        out_state: &mut [DMatrix<T>],
    ) -> bool {
        let n = p.len();
        let (g, out) = (&g[..n], &mut out[..n]);
        let (sq, rest) = state
            .split_first()
            .expect("RMSprop has a square_avg buffer");
        let (sq_out, rest_out) = out_state
            .split_first_mut()
            .expect("RMSprop has a square_avg buffer");
        let (sq, sq_out) = (&sq.as_slice()[..n], &mut sq_out.as_mut_slice()[..n]);
        // Without momentum or centering, the missing buffers are read and written as empty
        // slices that the loop never touches.
        let none = || (<&[T]>::default(), <&mut [T]>::default());
        let ((buf, buf_out), (ga, ga_out)) = match (rest, rest_out) {
            ([b, a], [bo, ao]) => (
                (b.as_slice(), bo.as_mut_slice()),
                (a.as_slice(), ao.as_mut_slice()),
            ),
            ([x], [xo]) if MOMENTUM => ((x.as_slice(), xo.as_mut_slice()), none()),
            ([x], [xo]) => (none(), (x.as_slice(), xo.as_mut_slice())),
            _ => (none(), none()),
        };
        let (buf, buf_out) = if MOMENTUM {
            (&buf[..n], &mut buf_out[..n])
        } else {
            (buf, buf_out)
        };
        let (ga, ga_out) = if CENTERED {
            (&ga[..n], &mut ga_out[..n])
        } else {
            (ga, ga_out)
        };
        let lr: T = lit(lr);
        let alpha: T = lit(self.alpha);
        let k: T = lit(1.0 - self.alpha);
        let eps: T = lit(self.eps);
        let mom: T = lit(self.momentum);
        let wd: T = lit(self.weight_decay);
        let decay = self.weight_decay != 0.0;
        let mut ok = true;
        for i in 0..n {
            let (p, g) = (p[i], g[i]);
            let g = if decay { g + wd * p } else { g };
            let sn = alpha * sq[i] + k * g * g;
            let avg = if CENTERED {
                let gan = alpha * ga[i] + k * g;
                ga_out[i] = gan;
                ok &= gan.finite();
                (sn - gan * gan).sqrt() + eps
            } else {
                sn.sqrt() + eps
            };
            let pn = if MOMENTUM {
                let bn = mom * buf[i] + g / avg;
                buf_out[i] = bn;
                ok &= bn.finite();
                p - lr * bn
            } else {
                p - lr * (g / avg)
            };
            (out[i], sq_out[i]) = (pn, sn);
            ok &= pn.finite() & sn.finite();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: RmsPropConfig, p: &mut [f64], grads: &[f64]) {
        let mut st: Vec<DMatrix<f64>> =
            cfg.buffers().iter().map(|_| DMatrix::zeros(1, 1)).collect();
        for &g in grads {
            let (mut out, mut out_st) = (p.to_vec(), st.clone());
            assert!(cfg.apply(cfg.lr, p, &[g], &st, &mut out, &mut out_st));
            p.copy_from_slice(&out);
            st = out_st;
        }
    }

    #[test]
    fn plain_centered_and_momentum() {
        // Plain, α=0.5, eps=0: t1 g=1: sq=0.5, p = 1 - 0.1/√0.5; t2 g=2: sq=0.25+2=2.25, p -= 0.1*2/1.5
        let cfg = RmsPropConfig::new(0.1).with_alpha(0.5).with_eps(0.0);
        let mut p = [1.0];
        run(cfg, &mut p, &[1.0, 2.0]);
        let want = 1.0 - 0.1 / 0.5f64.sqrt() - 0.1 * 2.0 / 1.5;
        assert!((p[0] - want).abs() < 1e-15, "{p:?}");
        // Centered: t1 g=1: sq=0.5, ga=0.5, avg=√(0.5-0.25)=0.5, p = 1 - 0.1*1/0.5 = 0.8
        // t2 g=2: sq=2.25, ga=0.25+1=1.25, avg=√(2.25-1.5625)=√0.6875, p = 0.8 - 0.2/√0.6875
        let mut p = [1.0];
        run(cfg.with_centered(true), &mut p, &[1.0, 2.0]);
        let want = 0.8 - 0.2 / 0.6875f64.sqrt();
        assert!((p[0] - want).abs() < 1e-15, "{p:?}");
        // Momentum 0.9: t1 buf = 1/√0.5, p = 1 - 0.1 buf; t2 buf = 0.9 buf + 2/1.5, p -= 0.1 buf
        let mut p = [1.0];
        run(cfg.with_momentum(0.9), &mut p, &[1.0, 2.0]);
        let b1 = 1.0 / 0.5f64.sqrt();
        let b2 = 0.9 * b1 + 2.0 / 1.5;
        let want = 1.0 - 0.1 * b1 - 0.1 * b2;
        assert!((p[0] - want).abs() < 1e-15, "{p:?}");
        // Weight decay: wd=1, p=1, g=0: g'=1, same as the plain first step.
        let mut p = [1.0];
        run(cfg.with_weight_decay(1.0), &mut p, &[0.0]);
        assert!((p[0] - (1.0 - 0.1 / 0.5f64.sqrt())).abs() < 1e-15, "{p:?}");
        assert_eq!(
            cfg.with_momentum(0.9).with_centered(true).buffers().len(),
            3
        );
    }
}
