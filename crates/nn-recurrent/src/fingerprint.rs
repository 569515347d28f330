//! A fingerprint of a forward's input, so that backward can refuse an `x` that is not the one
//! the forward ran on (its weight gradient `dW_ih = dG · Xᵀ` reads `x` again).
//!
//! The fingerprint of an `(I, N)` matrix is its shape and a 64-bit hash of its values in
//! column-major order, whatever the matrix's strides (a view of a time window and an owned
//! copy of it print the same). Value `k`'s bits (widened to `f64`, exact for `f32`) go into
//! lane `k mod 8`: `h_lane = (h_lane ⊕ bits) · K` with an odd `K`, a bijection of the lane, so
//! a change of any single value always changes the print; the eight lanes (independent chains,
//! so the pass runs at about one value per cycle) are then mixed into one word. It costs one
//! pass over `x` in forward and one in backward, small beside the forward's `W_ih · X` product
//! (`G·H` multiply-adds per value of `x`).

use nalgebra::{Dim, Matrix, RawStorage};
use nn_core::Float;

/// The multiplier of every lane (odd, from the 64-bit golden ratio).
const K: u64 = 0x9E37_79B9_7F4A_7C15;
/// Lanes: independent multiply chains.
const LANES: usize = 8;

/// Shape and hash of a matrix's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    rows: usize,
    cols: usize,
    hash: u64,
}

/// The running lanes; `pos` is the index of the next value.
struct Lanes {
    h: [u64; LANES],
    pos: usize,
}

impl Lanes {
    fn new() -> Self {
        let mut h = [0u64; LANES];
        for (i, v) in h.iter_mut().enumerate() {
            *v = (i as u64 + 1).wrapping_mul(K);
        }
        Lanes { h, pos: 0 }
    }

    fn one<T: Float>(&mut self, v: T) {
        let l = self.pos % LANES;
        self.h[l] = (self.h[l] ^ v.as_f64().to_bits()).wrapping_mul(K);
        self.pos += 1;
    }

    /// Feeds a contiguous run of values: one by one up to a lane boundary, then eight at a
    /// time (the same lane for each value as [`Lanes::one`]).
    fn slice<T: Float>(&mut self, values: &[T]) {
        let head = ((LANES - self.pos % LANES) % LANES).min(values.len());
        let (first, rest) = values.split_at(head);
        first.iter().for_each(|&v| self.one(v));
        let mut blocks = rest.chunks_exact(LANES);
        for block in &mut blocks {
            for (h, &v) in self.h.iter_mut().zip(block) {
                *h = (*h ^ v.as_f64().to_bits()).wrapping_mul(K);
            }
        }
        self.pos += rest.len() - blocks.remainder().len();
        blocks.remainder().iter().for_each(|&v| self.one(v));
    }

    fn finish(&self) -> u64 {
        let mut out = self.pos as u64;
        for &h in &self.h {
            out = (out.rotate_left(23) ^ h).wrapping_mul(K);
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
            m.iter().for_each(|&v| lanes.one(v));
        }
        Fingerprint {
            rows,
            cols,
            hash: lanes.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;

    /// The reference: every value one at a time.
    fn naive(m: &DMatrix<f64>) -> Fingerprint {
        let mut lanes = Lanes::new();
        m.iter().for_each(|&v| lanes.one(v));
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
        // f32 values widen exactly.
        let x32 = x.map(|v| v as f32);
        assert_eq!(Fingerprint::of(&x32), naive(&x32.map(f64::from)));
    }
}
