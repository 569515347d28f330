//! Gradient clipping over all parameters of a model.
//!
//! - [`clip_grad_value`] (`torch.nn.utils.clip_grad_value_`): every gradient element is clamped
//!   into `[-v, v]` (the notebook clips to `[-5, 5]`).
//! - [`clip_grad_norm`] (`torch.nn.utils.clip_grad_norm_`): with `‖g‖ = √(Σ_params Σ g²)` the L2
//!   norm of all gradients together (summed in f64 whatever `T` is), every gradient is multiplied
//!   by `c = max_norm / (‖g‖ + 1e-6)` when `c < 1`; returns `‖g‖` before clipping. A NaN or
//!   infinite norm leaves the gradients unchanged (the trainer reports it as an error).

use nn_core::{Float, Module};

/// Clamps every gradient element of `model` into `[-clip, clip]`.
pub fn clip_grad_value<T: Float, M: Module<T> + ?Sized>(model: &mut M, clip: f64) {
    let hi: T = T::cast(clip.abs());
    let lo = -hi;
    model.visit_mut(&mut |_, p| {
        for g in p.grad.iter_mut() {
            // `max`/`min` would turn NaN into a bound; keep it visible.
            if *g > hi {
                *g = hi;
            } else if *g < lo {
                *g = lo;
            }
        }
    });
}

/// The L2 norm of all gradients of `model` together, accumulated in f64.
pub fn grad_norm<T: Float, M: Module<T> + ?Sized>(model: &M) -> f64 {
    let mut total = 0.0f64;
    model.visit(&mut |_, p| {
        let g = p.grad.as_slice();
        total += nn_core::kernels::simd::dispatch(
            #[inline(always)]
            || sum_squares(g),
        );
    });
    total.sqrt()
}

/// `Σ g²` in f64, in sixteen running sums kept in registers (so the loop vectorizes and is not
/// bound by the latency of one chain of additions), added up in a fixed order: the same result
/// on every run.
#[inline(always)]
fn sum_squares<T: Float>(g: &[T]) -> f64 {
    const LANES: usize = 16;
    let mut acc = [0.0f64; LANES];
    let mut chunks = g.chunks_exact(LANES);
    for c in &mut chunks {
        for (s, &v) in acc.iter_mut().zip(c) {
            let v = v.as_f64();
            *s += v * v;
        }
    }
    for (s, &v) in acc.iter_mut().zip(chunks.remainder()) {
        let v = v.as_f64();
        *s += v * v;
    }
    acc.iter().sum()
}

/// Rescales all gradients of `model` so their joint L2 norm is at most about `max_norm`
/// (PyTorch's `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm<T: Float, M: Module<T> + ?Sized>(model: &mut M, max_norm: f64) -> f64 {
    let norm = grad_norm(model);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c: T = T::cast(coef);
        model.visit_mut(&mut |_, p| {
            let g = p.grad.as_mut_slice();
            nn_core::kernels::simd::dispatch(
                #[inline(always)]
                || {
                    for v in g.iter_mut() {
                        *v *= c;
                    }
                },
            );
        });
    }
    norm
}

/// The name of the first parameter of `model` whose gradient holds a NaN or infinity.
pub fn first_non_finite_grad<T: Float, M: Module<T> + ?Sized>(model: &M) -> Option<String> {
    let mut found = None;
    model.visit(&mut |name, p| {
        if found.is_none() && !nn_core::error::all_finite(p.grad.as_slice()) {
            found = Some(name.to_string());
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use nn_core::{Dense, Rng};

    fn model() -> Dense<f64> {
        let mut d = Dense::new(2, 1, &mut Rng::seed_from(0)).unwrap();
        d.weight.grad.copy_from_slice(&[3.0, -7.0]);
        d.bias.grad.copy_from_slice(&[4.0]);
        d
    }

    #[test]
    fn value_clamps_each_element() {
        let mut d = model();
        clip_grad_value(&mut d, 5.0);
        assert_eq!(d.weight.grad.as_slice(), &[3.0, -5.0]);
        assert_eq!(d.bias.grad.as_slice(), &[4.0]);
    }

    #[test]
    fn norm_rescales_only_when_above_and_returns_the_old_norm() {
        // ‖g‖ = √(9 + 49 + 16) = √74
        let mut d = model();
        let n = clip_grad_norm(&mut d, 1.0);
        assert!((n - 74f64.sqrt()).abs() < 1e-14);
        let c = 1.0 / (74f64.sqrt() + 1e-6);
        assert!((d.weight.grad[(0, 1)] - (-7.0 * c)).abs() < 1e-15);
        assert!((grad_norm(&d) - 74f64.sqrt() * c).abs() < 1e-14);
        let mut d = model();
        clip_grad_norm(&mut d, 100.0);
        assert_eq!(d.weight.grad.as_slice(), &[3.0, -7.0]);
        d.bias.grad[0] = f64::NAN;
        assert!(clip_grad_norm(&mut d, 1.0).is_nan());
        assert_eq!(first_non_finite_grad(&d).as_deref(), Some("bias"));
    }
}
