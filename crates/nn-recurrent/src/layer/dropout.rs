//! Dropout between stacked layers: PyTorch's `dropout=p` argument of `nn.RNN`/`nn.LSTM`/`nn.GRU`.
//!
//! In a training pass (a forward given an [`Rng`]) with `p > 0`, the output `Y_l` `(D*H, N)` of
//! every layer `l` but the top one is multiplied elementwise by a mask `M_l` before layer `l+1`
//! reads it:
//!
//! - `M_l[i, j] = 0` with probability `p`, else `s = 1/(1-p)` (so `E[M_l] = 1`);
//! - layer `l+1` reads `Ỹ_l = M_l ⊙ Y_l`, and its weight and input gradients are taken at `Ỹ_l`;
//! - backward: the input gradient layer `l+1` writes is `∂L/∂Ỹ_l`; multiplied by the same mask it
//!   becomes `∂L/∂Y_l = M_l ⊙ ∂L/∂Ỹ_l`, the `dY` of layer `l`.
//!
//! The mask holds the scale values themselves (`0` or `s` in `T`), so forward and backward are one
//! multiply per value. `N` is the number of leading columns in use (`T*B` for full-length
//! batches); columns past it are neither drawn nor touched.
//!
//! Draws: one [`Rng::uniform`] per value (an `f64` in `[0, 1)` with 53 random bits); the value is
//! dropped when it is `< p`. Values are drawn in column-major order of the first `N` columns (row
//! fastest, then column), layer by layer bottom up (layer 0's mask, then layer 1's, ...), so the
//! masks are fixed by the rng state the forward starts from. No pass without dropout (no rng,
//! `p = 0`, or one layer) draws anything.
//!
//! The comparison is made without a branch (a branch on random bits mispredicts half the time at
//! `p = 0.5`, which made the draws about twice as slow): `uniform() = k·2⁻⁵³` for the 53-bit
//! integer `k` it is made of, so `uniform() < p` is `k < ⌈p·2⁵³⌉`, read from the sign bit of
//! `⌈p·2⁵³⌉ - (k + 1)`. The test beside it compares this with `uniform() < p`.

use nalgebra::DMatrix;
use nn_core::{Float, Rng, lit};

/// Draws the mask of one layer's output and applies it: for each value of the first `cols`
/// columns of `output`, `mask = 0` (probability `p`) or `1/(1-p)`, and `dropped = output * mask`.
/// `mask` and `dropped` have `output`'s shape. `p` must be in `(0, 1)`.
///
/// # Panics
/// When `mask` or `dropped` does not have `output`'s shape, or `cols > output.ncols()`.
pub(super) fn draw_and_apply<T: Float>(
    rng: &mut Rng,
    p: f64,
    output: &DMatrix<T>,
    cols: usize,
    mask: &mut DMatrix<T>,
    dropped: &mut DMatrix<T>,
) {
    assert_eq!(mask.shape(), output.shape(), "dropout mask shape");
    assert_eq!(dropped.shape(), output.shape(), "dropout output shape");
    let n = output.nrows() * cols;
    let keep: T = lit(1.0 / (1.0 - p));
    let threshold = threshold(p);
    let values = &output.as_slice()[..n];
    let mask = &mut mask.as_mut_slice()[..n];
    let dropped = &mut dropped.as_mut_slice()[..n];
    for ((m, out), &y) in mask.iter_mut().zip(dropped.iter_mut()).zip(values) {
        *m = keep * lit::<T>(kept(rng.uniform(), threshold) as f64);
        *out = y * *m;
    }
}

/// `2⁵³`: `Rng::uniform` returns `k / 2⁵³` for a 53-bit integer `k`.
const TWO53: f64 = (1u64 << 53) as f64;

/// `⌈p·2⁵³⌉` (exact: scaling by a power of two is), the first `k` whose value is kept.
fn threshold(p: f64) -> u64 {
    (p * TWO53).ceil() as u64
}

/// 1 when the draw `u = k/2⁵³` keeps its value (`u ≥ p`, i.e. `k ≥ threshold`), else 0, with no
/// branch: `k + 1 ≤ 2⁵³` and `threshold ≤ 2⁵³`, so `threshold - (k + 1)` wraps below 0 exactly
/// when `k ≥ threshold`.
#[inline(always)]
fn kept(u: f64, threshold: u64) -> u64 {
    let k = (u * TWO53) as u64;
    threshold.wrapping_sub(k + 1) >> 63
}

/// Backward of the mask: `d = mask ⊙ d` over the first `cols` columns (turns `∂L/∂Ỹ` into
/// `∂L/∂Y`).
///
/// # Panics
/// When `mask` and `d` differ in shape, or `cols > d.ncols()`.
pub(super) fn backward<T: Float>(mask: &DMatrix<T>, d: &mut DMatrix<T>, cols: usize) {
    assert_eq!(mask.shape(), d.shape(), "dropout gradient shape");
    let n = d.nrows() * cols;
    for (g, &m) in d.as_mut_slice()[..n].iter_mut().zip(&mask.as_slice()[..n]) {
        *g *= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_branch_free_comparison_is_uniform_below_p() {
        let ps = [
            1e-300,
            1e-9,
            0.1,
            0.25,
            0.3,
            0.5,
            2.0 / 3.0,
            0.9,
            1.0 - 1e-12,
            1.0 - 1.0 / TWO53,
        ];
        for p in ps {
            let t = threshold(p);
            // Every draw near the boundary (the values `uniform` can return), and the ends.
            let near = (p * TWO53).floor() as u64;
            let ks = (near.saturating_sub(2)..=near + 2).chain([0, (1 << 53) - 1]);
            for k in ks.filter(|&k| k < 1 << 53) {
                let u = k as f64 / TWO53;
                assert_eq!(kept(u, t), u64::from(u >= p), "p = {p}, k = {k}");
            }
            let (mut a, mut b) = (Rng::seed_from(4), Rng::seed_from(4));
            for _ in 0..1000 {
                assert_eq!(kept(a.uniform(), t), u64::from(b.uniform() >= p), "p = {p}");
            }
        }
    }

    #[test]
    fn mask_is_zero_or_scale_and_leaves_unused_columns() {
        let (rows, cols, used) = (3, 5, 4);
        let output = DMatrix::from_fn(rows, cols, |i, j| (i * cols + j) as f64 + 1.0);
        let mut mask = DMatrix::from_element(rows, cols, 7.0);
        let mut dropped = DMatrix::from_element(rows, cols, 7.0);
        let mut rng = Rng::seed_from(3);
        draw_and_apply(&mut rng, 0.5, &output, used, &mut mask, &mut dropped);
        // The draws are exactly `rows * used` uniforms, compared with p, column-major.
        let mut replay = Rng::seed_from(3);
        for j in 0..cols {
            for i in 0..rows {
                if j < used {
                    let m = if replay.uniform() < 0.5 { 0.0 } else { 2.0 };
                    assert_eq!(mask[(i, j)], m);
                    assert_eq!(dropped[(i, j)], output[(i, j)] * m);
                } else {
                    assert_eq!((mask[(i, j)], dropped[(i, j)]), (7.0, 7.0));
                }
            }
        }
        assert_eq!(rng, replay);
        let mut d = DMatrix::from_element(rows, cols, 3.0);
        backward(&mask, &mut d, used);
        for j in 0..cols {
            for i in 0..rows {
                let want = if j < used { 3.0 * mask[(i, j)] } else { 3.0 };
                assert_eq!(d[(i, j)], want);
            }
        }
    }
}
