//! Where each cell's gates lie in a layer-direction's gate buffer, forward and backward.
//!
//! A cell with `G` gate blocks of `H` units has `G·H` gate rows. The sequence forward keeps each
//! step's gates in one column of a gate buffer, and backward writes the gate gradients `dG` over
//! them, column by column. For an RNN or LSTM the input side (`dW_ih`, `db_ih`, `dX`) and the
//! hidden side (`dW_hh`, `db_hh`, `dh_{t-1}`) use the same `G·H` rows, so a column has `G·H` rows
//! and both sides start at row 0. A GRU's two sides differ in their `n` block (see `cell::gru`):
//! its column has `4H` rows, `[dgx_n; dg_r; dg_z; dgh_n]`, the hidden side is rows `H..4H` in
//! `W_hh`'s order, and the input side is rows `H..3H` (`r, z`, into `W_ih`'s rows `0..2H`) and
//! rows `0..H` (`n`, into `W_ih`'s rows `2H..3H`). The forward's gates are the hidden side's
//! rows (a GRU's `H..4H`), so backward overwrites them in place.

use crate::CellKind;

/// The rows of one layer-direction's gate buffer (see the module doc), from `(cell, H)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GateLayout {
    /// `G·H`.
    gate_rows: usize,
    /// The first row of the hidden side, which is also the first of the forward's gates.
    hidden_first_row: usize,
    /// The input side's blocks; the first `input_block_count` are used.
    input_blocks: [InputBlock; 2],
    input_block_count: usize,
}

/// A block of rows of the input side of the gate gradients: rows `d_gates_row..+rows` of a
/// gate-buffer column go to rows `w_ih_row..+rows` of `W_ih` (and `b_ih`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InputBlock {
    /// The first row of `W_ih` (and of `b_ih`) the block belongs to.
    pub w_ih_row: usize,
    /// The first row of the block in a gate-buffer column.
    pub d_gates_row: usize,
    /// The block's rows.
    pub rows: usize,
}

impl GateLayout {
    /// The layout of a `cell` with `hidden` units.
    pub(crate) fn new(cell: CellKind, hidden: usize) -> Self {
        let h = hidden;
        let gate_rows = cell.gate_count() * h;
        let block = |w_ih_row, d_gates_row, rows| InputBlock {
            w_ih_row,
            d_gates_row,
            rows,
        };
        match cell {
            CellKind::Gru => GateLayout {
                gate_rows,
                hidden_first_row: h,
                input_blocks: [block(0, h, 2 * h), block(2 * h, 0, h)],
                input_block_count: 2,
            },
            _ => GateLayout {
                gate_rows,
                hidden_first_row: 0,
                input_blocks: [block(0, 0, gate_rows), block(0, 0, 0)],
                input_block_count: 1,
            },
        }
    }

    /// `G·H`: the gate rows of a step (the rows of `W_ih`, `W_hh` and the biases).
    pub(crate) fn gate_rows(&self) -> usize {
        self.gate_rows
    }

    /// The first of the hidden side's `G·H` rows (in `W_hh`'s row order) in a gate-buffer
    /// column, and the first row of the forward's gates there: a GRU's `H`, else 0.
    pub(crate) fn hidden_first_row(&self) -> usize {
        self.hidden_first_row
    }

    /// The rows of a gate-buffer column: the hidden side ends it (a GRU's `4H`, else `G·H`).
    pub(crate) fn buffer_rows(&self) -> usize {
        self.hidden_first_row + self.gate_rows
    }

    /// The input side's blocks, in the order `dW_ih`, `db_ih` and `dX` take them (none empty).
    pub(crate) fn input_blocks(&self) -> impl Iterator<Item = InputBlock> + Clone + '_ {
        self.input_blocks[..self.input_block_count].iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::{GateLayout, InputBlock};
    use crate::{CellKind, Nonlinearity};

    #[test]
    fn the_input_side_covers_the_gate_rows_once() {
        for cell in CellKind::ALL {
            let layout = GateLayout::new(cell, 5);
            let mut w_rows = vec![0; layout.gate_rows()];
            let mut d_rows = vec![0; layout.buffer_rows()];
            for InputBlock {
                w_ih_row,
                d_gates_row,
                rows,
            } in layout.input_blocks()
            {
                assert!(rows > 0);
                w_rows[w_ih_row..][..rows].iter_mut().for_each(|r| *r += 1);
                d_rows[d_gates_row..][..rows]
                    .iter_mut()
                    .for_each(|r| *r += 1);
            }
            assert!(w_rows.iter().all(|&r| r == 1), "{cell:?}");
            // The input side is the first `G·H` rows of a column.
            assert!(d_rows[..layout.gate_rows()].iter().all(|&r| r == 1));
            assert_eq!(
                layout.buffer_rows() - layout.hidden_first_row(),
                layout.gate_rows()
            );
        }
        let gru = GateLayout::new(CellKind::Gru, 5);
        assert_eq!((gru.hidden_first_row(), gru.buffer_rows()), (5, 20));
        let rnn = GateLayout::new(CellKind::Rnn(Nonlinearity::Tanh), 5);
        assert_eq!((rnn.hidden_first_row(), rnn.buffer_rows()), (0, 5));
    }
}
