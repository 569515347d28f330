//! A fingerprint of a forward's input, so that backward can refuse an `x` that is not the one
//! the forward ran on (its weight gradient `dW_ih = dG · Xᵀ` reads `x` again).
//!
//! The fingerprint of an `(I, N)` matrix is its shape and a 64-bit hash of its values in
//! column-major order, whatever the matrix's strides (a view of a time window and an owned
//! copy of it print the same). The values' bytes are read as 32-bit words (one per `f32`, two
//! per `f64`); word `k` goes into lane `k mod 64`: `h_lane = (h_lane ⊕ word) · K` with an odd
//! `K`, a bijection of the lane, so a change of any single value always changes the print. The
//! 64 lanes are independent chains of one multiply each, run as wide vectors
//! ([`nn_core::kernels::simd::dispatch`]), then mixed into one 64-bit word. It costs one pass over
//! `x` in forward and one in backward, small beside the forward's `W_ih · X` product (`G·H`
//! multiply-adds per value of `x`). Two different inputs with the same shape print alike with a
//! chance of about 2⁻³² when they differ in several values of one lane: a guard against
//! mistakes, not against an adversary.

use nalgebra::{Dim, Matrix, RawStorage};
use nn_core::Float;
use nn_core::kernels::simd::dispatch;

/// The multiplier of every lane (odd).
const K: u32 = 0x9E37_79B9;
/// The final mix's multiplier (odd, from the 64-bit golden ratio).
const K64: u64 = 0x9E37_79B9_7F4A_7C15;
/// Lanes: independent multiply chains.
const LANES: usize = 64;

/// Shape and hash of a matrix's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    rows: usize,
    cols: usize,
    hash: u64,
}

/// The running lanes; `pos` is the index of the next word.
struct Lanes {
    h: [u32; LANES],
    pos: usize,
}

/// The 32-bit words of `values`' bytes (little-endian machines: the low word of an `f64` first).
fn words<T: Float>(values: &[T]) -> &[u32] {
    // SAFETY: `Float` is implemented for `f32` and `f64` only: plain values with no padding,
    // aligned to at least 4 bytes, whose bytes are whole 32-bit words.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr().cast::<u32>(), values.len() * T::BYTES / 4)
    }
}

impl Lanes {
    fn new() -> Self {
        let mut h = [0u32; LANES];
        for (i, v) in h.iter_mut().enumerate() {
            *v = (i as u32 + 1).wrapping_mul(K);
        }
        Lanes { h, pos: 0 }
    }

    fn one(&mut self, w: u32) {
        let l = self.pos % LANES;
        self.h[l] = (self.h[l] ^ w).wrapping_mul(K);
        self.pos += 1;
    }

    /// Feeds a contiguous run of values: word by word up to a lane boundary, then 64 words at
    /// a time (the same lane for each word as [`Lanes::one`]).
    fn slice<T: Float>(&mut self, values: &[T]) {
        let words = words(values);
        let head = ((LANES - self.pos % LANES) % LANES).min(words.len());
        let (first, rest) = words.split_at(head);
        first.iter().for_each(|&w| self.one(w));
        let blocks = rest.chunks_exact(LANES);
        let tail = blocks.remainder();
        let h = &mut self.h;
        dispatch(
            #[inline(always)]
            || {
                for block in blocks {
                    for (h, &w) in h.iter_mut().zip(block) {
                        *h = (*h ^ w).wrapping_mul(K);
                    }
                }
            },
        );
        self.pos += rest.len() - tail.len();
        tail.iter().for_each(|&w| self.one(w));
    }

    fn finish(&self) -> u64 {
        let mut out = self.pos as u64;
        for &h in &self.h {
            out = (out.rotate_left(23) ^ u64::from(h)).wrapping_mul(K64);
        }
        out ^ (out >> 29)
    }
}

impl Fingerprint {
    /// The print of `m`, read column by column (one slice per column when a column's values
    /// are adjacent, as in any matrix or column window of one).
    pub(crate) fn of<T: Float, R: Dim, C: Dim, S: RawStorage<T, R, C>>(
        m: &Matrix<T, R, C, S>,
    ) -> Self {
        let (rows, cols) = m.shape();
        let mut lanes = Lanes::new();
        if m.data.is_contiguous() {
            // SAFETY: the storage is contiguous, so its `len()` elements form one slice.
            lanes.slice(unsafe { m.data.as_slice_unchecked() });
        } else if m.strides().0 == 1 {
            for j in 0..cols {
                let col = m.column(j);
                // SAFETY: a column with row stride 1 is `rows` adjacent values.
                lanes.slice(unsafe { std::slice::from_raw_parts(col.as_ptr(), rows) });
            }
        } else {
            m.iter().for_each(|v| lanes.slice(std::slice::from_ref(v)));
        }
        Fingerprint {
            rows,
            cols,
            hash: lanes.finish(),
        }
    }
}

impl Fingerprint {
    /// The print of the `(rows, n)` matrix whose columns are `m`'s columns `cols` in that order
    /// (the same as [`Fingerprint::of`] on a copy of them; `m`'s rows are adjacent).
    pub(crate) fn of_columns<T: Float>(
        m: &nalgebra::DMatrixView<'_, T>,
        cols: impl Iterator<Item = usize>,
    ) -> Self {
        let rows = m.nrows();
        let mut lanes = Lanes::new();
        let mut n = 0;
        for c in cols {
            let col = m.column(c);
            // SAFETY: a column of a `DMatrixView` with row stride 1 is `rows` adjacent values.
            debug_assert_eq!(m.strides().0, 1);
            lanes.slice(unsafe { std::slice::from_raw_parts(col.as_ptr(), rows) });
            n += 1;
        }
        Fingerprint {
            rows,
            cols: n,
            hash: lanes.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;

    /// The reference: every value one at a time.
    fn naive<T: Float>(m: &DMatrix<T>) -> Fingerprint {
        let mut lanes = Lanes::new();
        m.iter().for_each(|v| {
            words(std::slice::from_ref(v))
                .iter()
                .for_each(|&w| lanes.one(w))
        });
        Fingerprint {
            rows: m.nrows(),
            cols: m.ncols(),
            hash: lanes.finish(),
        }
    }

    #[test]
    fn layouts_print_alike_and_any_change_shows() {
        let big = DMatrix::from_fn(7, 40, |i, j| ((i * 40 + j) as f64 * 0.37).sin());
        for (r0, c0, rows, cols) in [(0, 0, 7, 40), (0, 3, 7, 13), (2, 5, 4, 9), (1, 0, 5, 1)] {
            let view = big.view((r0, c0), (rows, cols));
            let owned = view.into_owned();
            assert_eq!(Fingerprint::of(&view), naive(&owned));
            assert_eq!(Fingerprint::of(&owned), naive(&owned));
            assert_eq!(
                Fingerprint::of(&owned.transpose().transpose()),
                naive(&owned)
            );
        }
        let x = big.clone();
        let print = Fingerprint::of(&x);
        assert_ne!(Fingerprint::of(&(&x * 3.0)), print);
        for k in [0, 1, 7, 8, 100, 279] {
            let mut y = x.clone();
            y[k] += 1e-12;
            assert_ne!(Fingerprint::of(&y), print, "value {k}");
        }
        // Same values, another shape.
        assert_ne!(
            Fingerprint::of(
                &x.clone()
                    .reshape_generic(nalgebra::Dyn(14), nalgebra::Dyn(20))
            ),
            print
        );
        // f32 values, in a window of a wider matrix.
        let x32 = big.map(|v| v as f32);
        let view = x32.view((1, 2), (5, 30));
        assert_eq!(Fingerprint::of(&view), naive(&view.into_owned()));
        let mut y = view.into_owned();
        y[(4, 29)] = -y[(4, 29)];
        assert_ne!(Fingerprint::of(&y), Fingerprint::of(&view));
    }
}
