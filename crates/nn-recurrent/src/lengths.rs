//! Which steps of a sequence batch are real: all `T` of every sequence ([`Lengths::Full`]), or
//! `lengths[b]` of sequence `b` ([`Lengths::Each`], PyTorch's
//! `pack_padded_sequence(x, lengths, enforce_sorted=False)` followed by
//! `pad_packed_sequence(..., total_length=T)`).
//!
//! The input stays padded, `(I, T*B)` with column `t*B + b`; columns `t*B + b` with
//! `t >= lengths[b]` are padding: never read, their output is 0 and their input gradient 0.

use crate::RecurrentState;
use nalgebra::{DMatrix, DMatrixView};
use nn_core::{Error, Float, Result};

/// The real steps of each sequence of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lengths<'a> {
    /// `B` sequences, each running all `T` steps.
    Full(usize),
    /// Sequence `b` runs steps `0..lengths[b]`, each length in `1..=T`, in any order;
    /// `B = lengths.len()`.
    Each(&'a [usize]),
}

/// `B` sequences of all `T` steps: `forward(&x, 32, ..)` and `forward(&x, Lengths::Full(32), ..)`
/// alike where a function takes `impl Into<Lengths>`.
impl From<usize> for Lengths<'_> {
    fn from(batch: usize) -> Self {
        Lengths::Full(batch)
    }
}

/// Each sequence's length.
impl<'a> From<&'a [usize]> for Lengths<'a> {
    fn from(lengths: &'a [usize]) -> Self {
        Lengths::Each(lengths)
    }
}

/// Each sequence's length.
impl<'a> From<&'a Vec<usize>> for Lengths<'a> {
    fn from(lengths: &'a Vec<usize>) -> Self {
        Lengths::Each(lengths)
    }
}

impl Lengths<'_> {
    /// `B`.
    pub fn batch(&self) -> usize {
        match self {
            Lengths::Full(b) => *b,
            Lengths::Each(l) => l.len(),
        }
    }

    /// Checks every length against `steps` (`1..=T`); `Ok(true)` when every sequence runs all
    /// `T` steps (the batch is then a full one).
    pub(crate) fn check(&self, op: &'static str, steps: usize) -> Result<bool> {
        let Lengths::Each(lengths) = self else {
            return Ok(true);
        };
        if let Some((b, &len)) = lengths
            .iter()
            .enumerate()
            .find(|&(_, &len)| len == 0 || len > steps)
        {
            return Err(Error::InvalidConfig(format!(
                "{op}: sequence {b} has length {len}; every length must be in 1..={steps} (T)"
            )));
        }
        Ok(lengths.iter().all(|&len| len == steps))
    }
}

/// A batch's steps in the packed column layout of PyTorch's `PackedSequence`: the sequences
/// sorted by length, longest first (stable: equal lengths keep their order), and step `t`'s
/// columns holding only the `n_t` sequences still running, `off[t]..off[t+1]`
/// (`n_t = off[t+1] - off[t]`), the `j`-th of them the sorted sequence `j` (the caller's
/// sequence `perm[j]`). Since lengths only shrink, sequence `j` runs at step `t` exactly when
/// `j < n_t`, so a step's work is one block of leading columns.
///
/// For a full batch `off[t] = t*B` and `perm` is the identity: the packed layout is the padded
/// one, and every pass runs exactly as without lengths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Packing {
    /// Sorted position `j` → the caller's sequence.
    pub perm: Vec<usize>,
    /// `T + 1` column offsets.
    pub off: Vec<usize>,
    /// Whether every sequence runs all `T` steps (`perm` the identity, `off[t] = t*B`).
    pub full: bool,
}

impl Packing {
    /// Sets the layout for `lengths` (already checked to lie in `1..=steps`) and `steps`,
    /// reusing the vectors' memory.
    pub fn set(&mut self, lengths: Lengths<'_>, steps: usize) {
        let batch = lengths.batch();
        self.perm.clear();
        self.perm.extend(0..batch);
        self.off.clear();
        match lengths {
            Lengths::Each(lens) if lens.iter().any(|&l| l != steps) => {
                self.full = false;
                self.perm.sort_by_key(|&b| std::cmp::Reverse(lens[b]));
                // `n_t` = the sequences longer than `t`: a pointer into the sorted lengths.
                let mut n = batch;
                let mut acc = 0;
                for t in 0..steps {
                    while n > 0 && lens[self.perm[n - 1]] <= t {
                        n -= 1;
                    }
                    self.off.push(acc);
                    acc += n;
                }
                self.off.push(acc);
            }
            _ => {
                self.full = true;
                self.off.extend((0..=steps).map(|t| t * batch));
            }
        }
    }

    /// Real columns `N = Σ lengths`.
    pub fn total(&self) -> usize {
        self.off.last().copied().unwrap_or(0)
    }

    /// Sequences still running at step `t` (`n_t`).
    pub fn running(&self, t: usize) -> usize {
        self.off[t + 1] - self.off[t]
    }

    /// The padded column of packed column `off[t] + j` in a batch of `B = perm.len()`.
    pub fn padded_column(&self, t: usize, j: usize) -> usize {
        t * self.perm.len() + self.perm[j]
    }
}

impl Packing {
    /// The padded column of every packed column, in packed order.
    pub fn padded_columns(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.off.len() - 1)
            .flat_map(move |t| (0..self.running(t)).map(move |j| self.padded_column(t, j)))
    }

    /// Copies the real columns of the padded `src` into the leading `N` columns of `dst`, in
    /// packed order (padded columns are not read).
    pub fn gather<T: Float>(&self, src: &DMatrixView<'_, T>, dst: &mut DMatrix<T>) {
        for (k, c) in self.padded_columns().enumerate() {
            dst.column_mut(k).copy_from(&src.column(c));
        }
    }

    /// The inverse of [`Packing::gather`]: the leading `N` columns of `src` into their padded
    /// columns of `dst`, every padded column of `dst` set to 0.
    pub fn scatter<T: Float>(&self, src: &DMatrix<T>, dst: &mut DMatrix<T>) {
        let batch = self.perm.len();
        for t in 0..self.off.len() - 1 {
            for j in self.running(t)..batch {
                dst.column_mut(t * batch + self.perm[j]).fill(T::zero());
            }
        }
        for (k, c) in self.padded_columns().enumerate() {
            dst.column_mut(c).copy_from(&src.column(k));
        }
    }

    /// A state in the caller's order of sequences into the sorted one (`to_sorted`), or back.
    /// Both are `(H, S*B)` for `S` slots; an LSTM's `c` the same (a missing one is skipped).
    pub fn permute_state<T: Float>(
        &self,
        src: &RecurrentState<T>,
        dst: &mut RecurrentState<T>,
        to_sorted: bool,
    ) {
        let batch = self.perm.len();
        let permute = |s: &DMatrix<T>, d: &mut DMatrix<T>| {
            for slot in 0..s.ncols() / batch.max(1) {
                for (j, &b) in self.perm.iter().enumerate() {
                    let (from, to) = if to_sorted { (b, j) } else { (j, b) };
                    d.column_mut(slot * batch + to)
                        .copy_from(&s.column(slot * batch + from));
                }
            }
        };
        permute(&src.h, &mut dst.h);
        if let (Some(s), Some(d)) = (&src.c, &mut dst.c) {
            permute(s, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_sorts_longest_first_and_counts_the_running_sequences() {
        let mut p = Packing::default();
        p.set(Lengths::Each(&[2, 4, 1, 4]), 4);
        assert!(!p.full);
        assert_eq!(p.perm, [1, 3, 0, 2]);
        assert_eq!(p.off, [0, 4, 7, 9, 11]);
        assert_eq!((p.total(), p.running(1), p.running(3)), (11, 3, 2));
        assert_eq!(p.padded_column(2, 1), 2 * 4 + 3);
        // Every length T: the padded layout.
        p.set(Lengths::Each(&[3, 3]), 3);
        assert!(p.full);
        assert_eq!(
            (p.perm.as_slice(), p.off.as_slice()),
            (&[0, 1][..], &[0, 2, 4, 6][..])
        );
        p.set(Lengths::Full(2), 2);
        assert_eq!(p.off, [0, 2, 4]);
    }

    #[test]
    fn lengths_outside_one_to_t_are_errors() {
        assert!(Lengths::Each(&[1, 0]).check("op", 3).is_err());
        assert!(Lengths::Each(&[4]).check("op", 3).is_err());
        assert_eq!(Lengths::Each(&[3, 3]).check("op", 3).ok(), Some(true));
        assert_eq!(Lengths::Each(&[1, 3]).check("op", 3).ok(), Some(false));
    }
}
