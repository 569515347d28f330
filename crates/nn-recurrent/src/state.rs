//! The recurrent state of every layer and direction: `h`, and `c` for the LSTM.
//!
//! Both are `(H, L*D*B)`: column `(l*D + d)*B + b` is sequence `b`'s state in layer `l`,
//! direction `d` — the bytes of PyTorch's `h_n` / `c_n` `[L*D, B, H]`.

use nalgebra::{DMatrix, DMatrixView};
use nn_core::{Error, Float, Result, try_zeros};

/// Hidden (and, for LSTM, cell) state of all layers and directions.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentState<T: Float> {
    /// `(H, L*D*B)`, column `(l*D + d)*B + b`.
    pub h: DMatrix<T>,
    /// LSTM only: same layout as `h`.
    pub c: Option<DMatrix<T>>,
}

impl<T: Float> RecurrentState<T> {
    /// A zero state of `slots = L*D` blocks of `batch` columns, with a cell state when `with_c`.
    ///
    /// # Panics
    /// When the state cannot be allocated (see [`try_zeros`](Self::try_zeros)).
    pub fn zeros(hidden: usize, slots: usize, batch: usize, with_c: bool) -> Self {
        match Self::try_zeros(hidden, slots, batch, with_c) {
            Ok(state) => state,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`zeros`](Self::zeros), or [`Error::TooLarge`] when the state cannot be allocated: `op`
    /// `"recurrent state"` with its `(hidden, slots * batch)` shape, or, when `slots * batch`
    /// overflows, `op` `"recurrent state (L*D slots, B columns each)"` with `(slots, batch)`.
    pub fn try_zeros(hidden: usize, slots: usize, batch: usize, with_c: bool) -> Result<Self> {
        const OP: &str = "recurrent state";
        // `slots * batch` columns do not fit a `usize`: name the two factors, since no column
        // count can be reported.
        let cols = slots.checked_mul(batch).ok_or(Error::TooLarge {
            op: "recurrent state (L*D slots, B columns each)",
            rows: slots,
            cols: batch,
        })?;
        Ok(RecurrentState {
            h: try_zeros(OP, hidden, cols)?,
            c: with_c.then(|| try_zeros(OP, hidden, cols)).transpose()?,
        })
    }

    /// The batch size `B`, given `slots = L*D`.
    pub fn batch(&self, slots: usize) -> usize {
        self.h.ncols() / slots.max(1)
    }

    /// The `(H, B)` hidden state of slot `slot = l*D + d`.
    ///
    /// # Panics
    ///
    /// When the state has no such slot (`(slot + 1) * batch` columns beyond its `L*D*B`), like
    /// indexing a slice out of range.
    pub fn h_slot(&self, slot: usize, batch: usize) -> DMatrixView<'_, T> {
        self.h
            .columns(slot_first_column(slot, batch, self.h.ncols()), batch)
    }

    /// The `(H, B)` cell state of slot `slot = l*D + d` (LSTM only).
    ///
    /// # Panics
    ///
    /// As [`RecurrentState::h_slot`], when the state has no such slot.
    pub fn c_slot(&self, slot: usize, batch: usize) -> Option<DMatrixView<'_, T>> {
        let first = slot_first_column(slot, batch, self.h.ncols());
        self.c.as_ref().map(|c| c.columns(first, batch))
    }

    /// Sets every value to zero.
    pub fn fill_zero(&mut self) {
        self.h.fill(T::zero());
        if let Some(c) = &mut self.c {
            c.fill(T::zero());
        }
    }

    /// Copies `src` in (a missing `c` as zeros), or zeros when there is none. Shapes were
    /// checked by the caller.
    pub(crate) fn copy_initial(&mut self, src: Option<&Self>) {
        let Some(s) = src else {
            return self.fill_zero();
        };
        self.h.copy_from(&s.h);
        if let Some(c) = &mut self.c {
            match &s.c {
                Some(src) => c.copy_from(src),
                None => c.fill(T::zero()),
            }
        }
    }
}

/// The first column of slot `slot` of `batch` columns in a state of `cols` columns; panics with
/// the slot, batch and column count when the slot is not there.
fn slot_first_column(slot: usize, batch: usize, cols: usize) -> usize {
    match slot.checked_add(1).and_then(|n| n.checked_mul(batch)) {
        Some(end) if end <= cols => slot * batch,
        _ => panic!(
            "RecurrentState: no slot {slot} of {batch} columns in a state of {cols} columns (L*D*B)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_in_range_are_views() {
        let s = RecurrentState::<f32>::zeros(3, 2, 4, true);
        assert_eq!(s.h_slot(1, 4).shape(), (3, 4));
        assert_eq!(s.c_slot(1, 4).map(|c| c.shape()), Some((3, 4)));
    }

    #[test]
    #[should_panic(expected = "no slot 5 of 2 columns in a state of 2 columns")]
    fn a_slot_beyond_the_state_panics_naming_it() {
        let s = RecurrentState::<f32>::zeros(8, 1, 2, false);
        let _ = s.h_slot(5, 2);
    }
}
