//! The adding problem (Hochreiter & Schmidhuber 1997; the setup of Le et al. 2015 and Arjovsky
//! et al. 2016).
//!
//! Each of `T` steps carries two features: a value from `U[0, 1]` and a marker. Exactly two
//! markers are set, one in each half of the sequence; the target is the sum of the two marked
//! values, read at the last step. Always predicting 1 gives MSE = Var(U₁ + U₂) = 1/6 ≈ 0.167.

use nalgebra::DMatrix;
use nn_core::{Float, Rng};

/// A batch: inputs `(2, T*B)` (column `t*B + b`) and targets `(1, B)`. Needs `len ≥ 2`.
pub fn batch<T: Float>(len: usize, batch: usize, rng: &mut Rng) -> (DMatrix<T>, DMatrix<T>) {
    let mut x = DMatrix::zeros(2, len * batch);
    let mut y = DMatrix::zeros(1, batch);
    let half = len.div_ceil(2);
    for b in 0..batch {
        for t in 0..len {
            x[(0, t * batch + b)] = T::cast(rng.uniform());
        }
        let first = rng.below(half);
        let second = half + rng.below(len - half);
        let mut sum = 0.0;
        for m in [first, second] {
            x[(1, m * batch + b)] = T::one();
            sum += x[(0, m * batch + b)].as_f64();
        }
        y[(0, b)] = T::cast(sum);
    }
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_markers_one_per_half_and_the_target_is_their_sum() {
        let mut rng = Rng::seed_from(1);
        let (x, y) = batch::<f64>(10, 3, &mut rng);
        for b in 0..3 {
            let marked: Vec<usize> = (0..10).filter(|t| x[(1, t * 3 + b)] == 1.0).collect();
            assert_eq!(marked.len(), 2);
            assert!(marked[0] < 5 && marked[1] >= 5);
            let sum: f64 = marked.iter().map(|t| x[(0, t * 3 + b)]).sum();
            assert!((sum - y[(0, b)]).abs() < 1e-15);
        }
    }
}
