//! Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`).
//!
//! For each parameter `p` with gradient `g`, at step `t = 1, 2, …` (`m`, `v` start at zero):
//! ```text
//! Adam:  g = g + weight_decay * p            (when weight_decay ≠ 0)
//! AdamW: p = p * (1 - lr * weight_decay)     (decoupled decay, instead of the line above)
//! m = β1 m + (1 - β1) g
//! v = β2 v + (1 - β2) g²
//! p = p - (lr / (1 - β1^t)) · m / (√v / √(1 - β2^t) + eps)
//! ```
//! State per parameter: `exp_avg` (`m`), `exp_avg_sq` (`v`).

use crate::error::{Result, invalid};
use nalgebra::DMatrix;
use nn_core::{Float, lit};

/// Settings of `torch.optim.Adam` ([`AdamConfig::new`]) or `torch.optim.AdamW`
/// ([`AdamConfig::adamw`]); defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default = "super::config::torch_defaults::adam", deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// `(β1, β2)`, the decay rates of the moment averages (default `(0.9, 0.999)`).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0 for Adam, 1e-2 for AdamW).
    pub weight_decay: f64,
    /// `true` for AdamW: decay the weights directly instead of adding `weight_decay * p` to `g`.
    /// Not among the kwargs written: the kind (`adam`, `adamw`) says it.
    #[serde(skip_serializing)]
    pub decoupled_weight_decay: bool,
}

impl AdamConfig {
    /// Adam with learning rate `lr` and PyTorch's other defaults.
    pub fn new(lr: f64) -> Self {
        AdamConfig {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        }
    }
    /// AdamW with learning rate `lr` and PyTorch's other defaults (`weight_decay = 1e-2`).
    pub fn adamw(lr: f64) -> Self {
        AdamConfig {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..Self::new(lr)
        }
    }
    /// Sets `(β1, β2)`.
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
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

    /// `"adam"` or `"adamw"`.
    pub fn kind(&self) -> &'static str {
        if self.decoupled_weight_decay {
            "adamw"
        } else {
            "adam"
        }
    }

    /// The checks PyTorch's constructor makes.
    pub(crate) fn validate(&self) -> Result<()> {
        let name = self.kind();
        if !crate::error::non_negative(self.lr) {
            return Err(invalid(format!(
                "{name}: invalid learning rate {}",
                self.lr
            )));
        }
        if !crate::error::non_negative(self.eps) {
            return Err(invalid(format!("{name}: invalid eps {}", self.eps)));
        }
        for (i, b) in [self.betas.0, self.betas.1].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(format!("{name}: invalid beta at index {i}: {b}")));
            }
        }
        if !crate::error::non_negative(self.weight_decay) {
            return Err(invalid(format!(
                "{name}: invalid weight_decay {}",
                self.weight_decay
            )));
        }
        Ok(())
    }

    pub(crate) fn buffers(&self) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
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
        let ([m, v], [m_out, v_out]) = (state, out_state) else {
            unreachable!("Adam has two buffers")
        };
        let n = p.len();
        let (g, out) = (&g[..n], &mut out[..n]);
        let (m, m_out) = (&m.as_slice()[..n], &mut m_out.as_mut_slice()[..n]);
        let (v, v_out) = (&v.as_slice()[..n], &mut v_out.as_mut_slice()[..n]);
        let (b1, b2) = self.betas;
        // Scalars are computed in f64, as PyTorch computes them in Python floats.
        let bias_correction1 = 1.0 - b1.powf(t as f64);
        let bias_correction2 = 1.0 - b2.powf(t as f64);
        let step_size: T = lit(lr / bias_correction1);
        let bc2_sqrt: T = lit(bias_correction2.sqrt());
        let (b1t, b2t): (T, T) = (lit(b1), lit(b2));
        let (k1, k2): (T, T) = (lit(1.0 - b1), lit(1.0 - b2));
        let eps: T = lit(self.eps);
        let coupled = self.weight_decay != 0.0 && !self.decoupled_weight_decay;
        let wd: T = lit(self.weight_decay);
        let shrink: T = lit(1.0 - lr * self.weight_decay);
        let decoupled = self.weight_decay != 0.0 && self.decoupled_weight_decay;
        let mut ok = true;
        for i in 0..n {
            let mut pn = p[i];
            if decoupled {
                pn *= shrink;
            }
            let g = if coupled { g[i] + wd * pn } else { g[i] };
            let mn = b1t * m[i] + k1 * g;
            let vn = b2t * v[i] + k2 * g * g;
            let denom = vn.sqrt() / bc2_sqrt + eps;
            pn -= step_size * (mn / denom);
            (out[i], m_out[i], v_out[i]) = (pn, mn, vn);
            ok &= pn.finite() & mn.finite() & vn.finite();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: AdamConfig, p: &mut [f64], grads: &[f64]) {
        let mut st = vec![DMatrix::zeros(p.len(), 1), DMatrix::zeros(p.len(), 1)];
        for (i, &g) in grads.iter().enumerate() {
            let (mut out, mut out_st) = (p.to_vec(), st.clone());
            assert!(cfg.apply(cfg.lr, i as u64 + 1, p, &[g], &st, &mut out, &mut out_st));
            p.copy_from_slice(&out);
            st = out_st;
        }
    }

    #[test]
    fn first_steps_match_the_formula() {
        // Step 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², so p -= lr * g / (|g| + eps).
        let mut p = [1.0];
        run(AdamConfig::new(0.1), &mut p, &[0.5]);
        assert!(
            (p[0] - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-15,
            "{p:?}"
        );
        // Step 2 with g = 0.5, then 1.0 (plain Python floats):
        // m = 0.9*0.05 + 0.1*1 = 0.145, v = 0.999*0.00025 + 0.001*1 = 0.00124975
        // p -= (0.1/(1-0.81)) * 0.145 / (sqrt(0.00124975)/sqrt(1-0.998001) + 1e-8)
        let mut q = [1.0];
        run(AdamConfig::new(0.1), &mut q, &[0.5, 1.0]);
        let p1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8);
        let want = p1
            - (0.1 / (1.0 - 0.81)) * 0.145
                / (0.00124975f64.sqrt() / (1.0 - 0.998001f64).sqrt() + 1e-8);
        assert!((q[0] - want).abs() < 1e-14, "{} vs {want}", q[0]);
    }

    #[test]
    fn adam_weight_decay_enters_the_gradient_adamw_shrinks_the_weight() {
        // Adam, wd = 0.5, p = 2, g = 0: g' = 1, step 1 moves p by lr * 1 / (1 + eps).
        let mut p = [2.0];
        run(AdamConfig::new(0.1).with_weight_decay(0.5), &mut p, &[0.0]);
        assert!((p[0] - (2.0 - 0.1 / (1.0 + 1e-8))).abs() < 1e-15, "{p:?}");
        // AdamW, wd = 0.5, p = 2, g = 0: p = 2 * (1 - 0.05) = 1.9, and the Adam step is 0.
        let mut p = [2.0];
        run(
            AdamConfig::adamw(0.1).with_weight_decay(0.5),
            &mut p,
            &[0.0],
        );
        assert!((p[0] - 1.9).abs() < 1e-15, "{p:?}");
        // AdamW with a gradient: decay first, then the step: 1.9 - 0.1 * 0.5/(0.5+1e-8).
        let mut p = [2.0];
        run(
            AdamConfig::adamw(0.1).with_weight_decay(0.5),
            &mut p,
            &[0.5],
        );
        assert!(
            (p[0] - (1.9 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-15,
            "{p:?}"
        );
        assert_eq!(AdamConfig::adamw(1e-3).weight_decay, 1e-2);
        assert!(
            AdamConfig::new(0.1)
                .with_betas(1.0, 0.9)
                .validate()
                .is_err()
        );
    }
}
