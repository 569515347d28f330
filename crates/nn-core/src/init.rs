//! Weight initializers, all drawing from a seeded [`Rng`] so one seed gives the same numbers.
//!
//! For a weight of shape `(out, in)`: `fan_in = in`, `fan_out = out` (PyTorch's convention).
//! - [`Init::TorchDefault`]: `U(-1/√fan_in, 1/√fan_in)`, what `nn.Linear` does for weight and bias.
//! - [`Init::Uniform`]: `U(-bound, bound)`; PyTorch's recurrent layers use `bound = 1/√hidden`.
//! - [`Init::XavierUniform`] `U(-a, a)`, `a = gain·√(6/(fan_in+fan_out))`;
//!   [`Init::XavierNormal`] `N(0, gain²·2/(fan_in+fan_out))`.
//! - [`Init::HeUniform`] `U(-√(6/fan_in), √(6/fan_in))`; [`Init::HeNormal`] `N(0, 2/fan_in)`.
//! - [`Init::Orthogonal`]: `gain · Q` from the QR factorization of a normal matrix, with the signs
//!   of `R`'s diagonal folded in (as `torch.nn.init.orthogonal_`).
//! - [`Init::Normal`]: `N(0, std²)`; the notebook's `0.01 * randn` is `Normal { std: 0.01 }`.
//! - [`Init::Zeros`].

use crate::{Error, Float, Result, Rng};
use nalgebra::DMatrix;
use rand_distr::{Distribution, StandardNormal};

/// How to fill a new parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `U(-1/√fan_in, 1/√fan_in)`.
    TorchDefault,
    /// `U(-bound, bound)`.
    Uniform {
        /// Half-width.
        bound: f64,
    },
    /// Glorot uniform.
    XavierUniform {
        /// Scale (1 for linear, 5/3 for tanh in PyTorch's `calculate_gain`).
        gain: f64,
    },
    /// Glorot normal.
    XavierNormal {
        /// Scale.
        gain: f64,
    },
    /// Kaiming uniform for ReLU.
    HeUniform,
    /// Kaiming normal for ReLU.
    HeNormal,
    /// A (semi-)orthogonal matrix times `gain`.
    Orthogonal {
        /// Scale.
        gain: f64,
    },
    /// `N(0, std²)`.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// All zeros.
    Zeros,
}

impl Init {
    /// The notebook's `0.01 * N(0, 1)`.
    pub const NOTEBOOK: Init = Init::Normal { std: 0.01 };

    /// A new `(rows, cols)` matrix with `fan_in = cols`, `fan_out = rows`; sizes too large to
    /// allocate are [`Error::TooLarge`].
    pub fn matrix<T: Float>(&self, rows: usize, cols: usize, rng: &mut Rng) -> Result<DMatrix<T>> {
        let mut m = crate::try_zeros("Init::matrix", rows, cols)?;
        self.fill(&mut m, cols, rows, rng)?;
        Ok(m)
    }

    /// Fills `m` in column-major order. A fan of zero is an error for the rules that divide by it.
    pub fn fill<T: Float>(
        &self,
        m: &mut DMatrix<T>,
        fan_in: usize,
        fan_out: usize,
        rng: &mut Rng,
    ) -> Result<()> {
        let need = |fan: usize| {
            if fan == 0 {
                Err(Error::InvalidConfig(format!(
                    "{self:?} needs a non-zero fan"
                )))
            } else {
                Ok(fan as f64)
            }
        };
        let uniform = |m: &mut DMatrix<T>, bound: f64, rng: &mut Rng| {
            for v in m.iter_mut() {
                *v = T::cast((2.0 * rng.uniform() - 1.0) * bound);
            }
        };
        let normal = |m: &mut DMatrix<T>, std: f64, rng: &mut Rng| {
            for v in m.iter_mut() {
                let z: f64 = StandardNormal.sample(rng);
                *v = T::cast(z * std);
            }
        };
        match *self {
            Init::TorchDefault => uniform(m, 1.0 / need(fan_in)?.sqrt(), rng),
            Init::Uniform { bound } => uniform(m, bound, rng),
            Init::XavierUniform { gain } => {
                uniform(m, gain * (6.0 / need(fan_in + fan_out)?).sqrt(), rng)
            }
            Init::XavierNormal { gain } => {
                normal(m, gain * (2.0 / need(fan_in + fan_out)?).sqrt(), rng)
            }
            Init::HeUniform => uniform(m, (6.0 / need(fan_in)?).sqrt(), rng),
            Init::HeNormal => normal(m, (2.0 / need(fan_in)?).sqrt(), rng),
            Init::Normal { std } => normal(m, std, rng),
            Init::Zeros => m.fill(T::zero()),
            Init::Orthogonal { gain } => {
                let (r, c) = m.shape();
                if r == 0 || c == 0 {
                    return Ok(());
                }
                // QR of a tall normal matrix; transpose back when `m` is wide.
                let (tall_r, tall_c) = if r < c { (c, r) } else { (r, c) };
                let mut a = DMatrix::<f64>::zeros(tall_r, tall_c);
                for v in a.iter_mut() {
                    *v = StandardNormal.sample(rng);
                }
                let qr = a.qr();
                let mut q = qr.q();
                let rr = qr.r();
                for j in 0..tall_c {
                    if rr[(j, j)] < 0.0 {
                        q.column_mut(j).neg_mut();
                    }
                }
                let q = if r < c { q.transpose() } else { q };
                for (dst, src) in m.iter_mut().zip(q.iter()) {
                    *dst = T::cast(gain * src);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers() {
        for init in [
            Init::TorchDefault,
            Init::XavierUniform { gain: 1.0 },
            Init::XavierNormal { gain: 1.0 },
            Init::HeUniform,
            Init::HeNormal,
            Init::Orthogonal { gain: 1.0 },
            Init::NOTEBOOK,
        ] {
            let a = init.matrix::<f64>(5, 3, &mut Rng::seed_from(3)).unwrap();
            let b = init.matrix::<f64>(5, 3, &mut Rng::seed_from(3)).unwrap();
            assert_eq!(a, b, "{init:?}");
            assert!(a.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn bounds_and_scales() {
        let mut rng = Rng::seed_from(1);
        let m = Init::TorchDefault.matrix::<f64>(50, 16, &mut rng).unwrap();
        assert!(m.amax() <= 0.25 && m.amax() > 0.2);
        let n = Init::NOTEBOOK.matrix::<f64>(100, 100, &mut rng).unwrap();
        let std = (n.iter().map(|v| v * v).sum::<f64>() / 1e4).sqrt();
        assert!((std - 0.01).abs() < 0.001, "{std}");
        assert!(Init::HeNormal.matrix::<f32>(3, 0, &mut rng).is_err());
    }

    #[test]
    fn orthogonal_is_orthogonal_both_ways() {
        let mut rng = Rng::seed_from(2);
        let tall = Init::Orthogonal { gain: 1.0 }
            .matrix::<f64>(6, 4, &mut rng)
            .unwrap();
        assert!((tall.transpose() * &tall - DMatrix::identity(4, 4)).amax() < 1e-12);
        let wide = Init::Orthogonal { gain: 2.0 }
            .matrix::<f64>(3, 5, &mut rng)
            .unwrap();
        assert!((&wide * wide.transpose() - DMatrix::identity(3, 3) * 4.0).amax() < 1e-12);
    }
}
