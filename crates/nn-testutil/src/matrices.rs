//! Test matrices: uniform random values in `[-1, 1)` drawn from [`nn_core::Rng`] (column-major
//! order, so one seed gives one matrix), a `(rows, cols)` matrix filled from a list of values
//! repeated row by row (for property tests, whose strategies draw a flat list), and whether
//! every value is finite.

use nalgebra::DMatrix;
use nn_core::{Float, Rng};

/// A `(rows, cols)` matrix of `2u - 1` for uniform draws `u` of `rng`, column by column.
pub fn uniform_matrix(rows: usize, cols: usize, rng: &mut Rng) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| 2.0 * rng.uniform() - 1.0)
}

/// A `(rows, cols)` matrix whose entry `(i, j)` is `values[(i·cols + j) mod len]`: the list
/// read row by row, repeated as often as needed. An empty list panics unless the matrix is
/// empty.
pub fn cycled(rows: usize, cols: usize, values: &[f64]) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |i, j| {
        values[(i * cols + j) % values.len().max(1)]
    })
}

/// Whether every value of `m` is finite (neither NaN nor infinite).
pub fn all_finite<T: Float>(m: &DMatrix<T>) -> bool {
    m.iter().all(|v| v.finite())
}
