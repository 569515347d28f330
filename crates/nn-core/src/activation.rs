//! Elementwise activations (and the column-wise softmax), each with its backward.
//!
//! Every backward here is written in terms of the forward's output `y` (which is all it needs):
//! - identity: `dx = dy`
//! - ReLU: `dx = dy · [y > 0]`; leaky ReLU (slope `a ≥ 0`): `dx = dy · (y > 0 ? 1 : a)`
//! - sigmoid `y = 1/(1+e^{-x})`: `dx = dy · y(1-y)`
//! - tanh: `dx = dy · (1-y²)`
//! - softmax over each column `y_i = e^{x_i}/Σ_j e^{x_j}`: `dx_i = y_i (dy_i - Σ_j y_j dy_j)`
//!
//! Shapes: `(features, N)`; `y`, `dy` and `dx` have the same shape.

use crate::{Error, Float, Result, Shape, check_shape, lit};
use nalgebra::DMatrix;

/// An activation function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `y = x`.
    Identity,
    /// `y = max(x, 0)`.
    Relu,
    /// `y = x` for `x > 0`, else `slope · x` (`slope ≥ 0`).
    LeakyRelu {
        /// Slope for negative inputs (PyTorch's default is 0.01).
        slope: f64,
    },
    /// `y = 1/(1+e^{-x})`.
    Sigmoid,
    /// `y = tanh x`.
    Tanh,
    /// Softmax over each column.
    Softmax,
}

/// The logistic function `1/(1+e^{-x})` ([`Float::act_sigmoid`]: libm in f64, a vectorizable
/// polynomial in f32).
#[inline(always)]
pub fn sigmoid<T: Float>(x: T) -> T {
    x.act_sigmoid()
}

/// `tanh x` ([`Float::act_tanh`]: libm in f64, a vectorizable polynomial in f32).
#[inline(always)]
pub fn tanh<T: Float>(x: T) -> T {
    x.act_tanh()
}

/// Softmax of one column in place: subtract the max, exponentiate, normalize.
pub fn softmax_in_place<T: Float>(col: &mut [T]) {
    let max = col
        .iter()
        .copied()
        .fold(T::min_value().unwrap(), |a, b| a.max(b));
    let mut sum = T::zero();
    for v in col.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = T::one() / sum;
    for v in col.iter_mut() {
        *v *= inv;
    }
}

impl Activation {
    fn slope<T: Float>(&self) -> Result<T> {
        match *self {
            Activation::LeakyRelu { slope } if !(slope >= 0.0 && slope.is_finite()) => Err(
                Error::InvalidConfig(format!("leaky ReLU slope must be ≥ 0, got {slope}")),
            ),
            Activation::LeakyRelu { slope } => Ok(lit(slope)),
            _ => Ok(T::zero()),
        }
    }

    /// `x ← f(x)`.
    pub fn forward_in_place<T: Float>(&self, x: &mut DMatrix<T>) -> Result<()> {
        let a: T = self.slope()?;
        match self {
            Activation::Identity => {}
            Activation::Relu | Activation::LeakyRelu { .. } => {
                for v in x.iter_mut() {
                    if *v <= T::zero() {
                        *v *= a;
                    }
                }
            }
            Activation::Sigmoid => {
                let x = x.as_mut_slice();
                crate::kernels::simd::dispatch(
                    #[inline(always)]
                    || x.iter_mut().for_each(|v| *v = sigmoid(*v)),
                )
            }
            Activation::Tanh => {
                let x = x.as_mut_slice();
                crate::kernels::simd::dispatch(
                    #[inline(always)]
                    || x.iter_mut().for_each(|v| *v = tanh(*v)),
                )
            }
            Activation::Softmax => {
                if x.nrows() == 0 {
                    return Err(Error::Empty {
                        op: "softmax",
                        what: "features",
                    });
                }
                let rows = x.nrows();
                for col in x.as_mut_slice().chunks_exact_mut(rows) {
                    softmax_in_place(col);
                }
            }
        }
        Ok(())
    }

    /// `f(x)` as a new matrix.
    pub fn forward<T: Float>(&self, x: &DMatrix<T>) -> Result<DMatrix<T>> {
        let mut y = x.clone();
        self.forward_in_place(&mut y)?;
        Ok(y)
    }

    /// `dx` from the forward output `y` and the upstream gradient `dy` (written, not added).
    pub fn backward_to<T: Float>(
        &self,
        y: &DMatrix<T>,
        dy: &DMatrix<T>,
        dx: &mut DMatrix<T>,
    ) -> Result<()> {
        check_shape("activation backward dy", dy, Shape::from(y))?;
        check_shape("activation backward dx", dx, Shape::from(y))?;
        let a: T = self.slope()?;
        let rows = y.nrows();
        let (y, dy, out) = (y.as_slice(), dy.as_slice(), dx.as_mut_slice());
        match self {
            Activation::Identity => out.copy_from_slice(dy),
            Activation::Relu | Activation::LeakyRelu { .. } => {
                for ((o, &yi), &di) in out.iter_mut().zip(y).zip(dy) {
                    *o = if yi > T::zero() { di } else { a * di };
                }
            }
            Activation::Sigmoid => {
                for ((o, &yi), &di) in out.iter_mut().zip(y).zip(dy) {
                    *o = di * yi * (T::one() - yi);
                }
            }
            Activation::Tanh => {
                for ((o, &yi), &di) in out.iter_mut().zip(y).zip(dy) {
                    *o = di * (T::one() - yi * yi);
                }
            }
            Activation::Softmax => {
                for ((o, yc), dc) in out
                    .chunks_exact_mut(rows.max(1))
                    .zip(y.chunks_exact(rows.max(1)))
                    .zip(dy.chunks_exact(rows.max(1)))
                {
                    let dot = yc.iter().zip(dc).fold(T::zero(), |s, (&a, &b)| s + a * b);
                    for ((oi, &yi), &di) in o.iter_mut().zip(yc).zip(dc) {
                        *oi = yi * (di - dot);
                    }
                }
            }
        }
        Ok(())
    }

    /// `dx` as a new matrix.
    pub fn backward<T: Float>(&self, y: &DMatrix<T>, dy: &DMatrix<T>) -> Result<DMatrix<T>> {
        let mut dx = DMatrix::zeros(y.nrows(), y.ncols());
        self.backward_to(y, dy, &mut dx)?;
        Ok(dx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Init, Rng, gradcheck};

    #[test]
    fn every_backward_passes_the_gradient_check() {
        let mut rng = Rng::seed_from(9);
        let x = Init::Normal { std: 1.5 }
            .matrix::<f64>(4, 3, &mut rng)
            .unwrap();
        let probe = Init::Normal { std: 1.0 }
            .matrix::<f64>(4, 3, &mut rng)
            .unwrap();
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu { slope: 0.1 },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Softmax,
        ] {
            let y = act.forward(&x).unwrap();
            let dx = act.backward(&y, &probe).unwrap();
            let report = gradcheck::check_input(&x, &dx, |x| {
                Ok(act.forward(x)?.component_mul(&probe).sum())
            })
            .unwrap();
            assert!(report.max_rel_error <= 1e-6, "{act:?}: {report:?}");
        }
    }

    #[test]
    fn softmax_columns_sum_to_one_and_stay_finite_for_large_inputs() {
        let x = DMatrix::from_column_slice(3, 2, &[1000.0, 0.0, -1000.0, 1.0, 2.0, 3.0]);
        let y = Activation::Softmax.forward(&x).unwrap();
        for c in y.column_iter() {
            assert!((c.sum() - 1.0f64).abs() < 1e-12);
        }
        assert!(y.iter().all(|v| v.is_finite()));
        assert!((sigmoid(-1000.0f64)).abs() < 1e-300 && sigmoid(1000.0f64) == 1.0);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let y = DMatrix::<f32>::zeros(2, 2);
        assert!(
            Activation::Tanh
                .backward(&y, &DMatrix::zeros(2, 3))
                .is_err()
        );
        assert!(Activation::LeakyRelu { slope: -1.0 }.forward(&y).is_err());
        assert!(
            Activation::Softmax
                .forward(&DMatrix::<f32>::zeros(0, 2))
                .is_err()
        );
    }
}
