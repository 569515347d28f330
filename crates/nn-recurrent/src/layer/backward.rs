//! Backward (BPTT) of one layer-direction over the whole sequence batch, after the layer above
//! (or the caller) has given `dY`, the gradient of its output rows `d*H..(d+1)*H`:
//!
//! 1. The time loop (forward order reversed, [`split`]'s) only computes `dG_t` from `dh_t` (the
//!    upstream `dY` column plus what step `t+1` sent back) and `dh_{t-1} = W_hhᵀ · dG_t` (one
//!    product per step). `dG` `(G·H, T*B)` (a GRU's `(4H, T*B)`, [`GateLayout`]) is written over
//!    the forward's gates.
//! 2. Then once over the whole sequence: `dW_ih += dG · Xᵀ`, `dW_hh += dG · H_prevᵀ` (`H_prev` is
//!    the hidden sequence shifted by one step, starting at `h0`, read from the output without a
//!    copy; both through [`add_a_bt`], which reads `dG` in place), `db += Σ_columns dG` (summed
//!    by `dW_ih`'s pass over `dG`, [`add_a_bt_row_sums`]), and `dX = W_ihᵀ · dG`, skipped when
//!    no input gradient is wanted.
//!
//! On a variable-length batch the products run over the `N` real columns, and `H_prev` is
//! gathered into a buffer (column `off[t] + j` = sequence `j`'s `h_{t-1}`, or its initial state),
//! since its columns are no longer one shift of the output's.
//!
//! The running `dh` (`dc`) of each sequence is the layer-direction's slot of the state gradient,
//! turned from `∂L/∂(h_n, c_n)` into `∂L/∂(h0, c0)`.

use super::split::{self, BackwardLoop, SharedCols};
use super::{Dims, slot_slice};
use crate::cache::DirectionCache;
use crate::gates::{GateLayout, InputBlock};
use crate::weights::DirectionWeights;
use crate::{CellKind, RecurrentState};
use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};
use nn_core::kernels::row_sums::add_row_sums;
use nn_core::kernels::wgrad::{add_a_bt, add_a_bt_row_sums};
use nn_core::{Accum, Float, Trans, matmul};

/// Backward of one layer-direction: adds into `w`'s gradients, turns slot `dims.slot` of
/// `d_state` from `∂L/∂(h_n, c_n)` into `∂L/∂(h0, c0)`, and writes or adds `W_ihᵀ dG` into
/// `d_x` when given. `dy` is `∂L/∂out` (`(D*H, T*B)`, rows `dir*H..` are this direction's).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_direction<T: Float>(
    cell: CellKind,
    w: &mut DirectionWeights<T>,
    x: &DMatrixView<'_, T>,
    dims: Dims,
    initial: &RecurrentState<T>,
    out: &DMatrix<T>,
    dy: &DMatrix<T>,
    dc: &mut DirectionCache<T>,
    d_state: &mut RecurrentState<T>,
    d_x: Option<(DMatrixViewMut<'_, T>, Accum)>,
    h_prev_buf: &mut DMatrix<T>,
) {
    let Dims {
        hidden: h,
        steps,
        batch,
        dir,
        slot,
        ..
    } = dims;
    let layout = GateLayout::new(cell, h);
    let (gh, rows_out, r0) = (layout.gate_rows(), out.nrows(), dir * h);
    // The gate gradients are written over the gates, which are dead once their step's backward
    // cell has read them; so a backward consumes its forward (`Saved::Used`).
    let DirectionCache {
        gates: d_gates,
        hidden_n,
        cells,
        packed_hh,
        bias,
        ..
    } = dc;
    packed_hh.pack(&w.weight_hh.value, Trans::Yes);
    let hidden_row = layout.hidden_first_row();
    // The running dh (dc) of sequence `b` is column `slot*B + b` of `d_state`: one contiguous
    // span of `B` columns per layer-direction.
    let RecurrentState { h: dh_m, c: dc_m } = d_state;
    let span = slot * batch * h..(slot + 1) * batch * h;
    let mut no_cell = [];
    let dc_all = match dc_m {
        Some(m) => &mut m.as_mut_slice()[span.clone()],
        None => &mut no_cell[..],
    };
    let lp = BackwardLoop {
        cell,
        dims,
        gh,
        rows_out,
        r0,
        h0: slot_slice(Some(&initial.h), slot, dims),
        c0: slot_slice(initial.c.as_ref(), slot, dims),
        out: out.as_slice(),
        dy: dy.as_slice(),
        hidden_n: hidden_n.as_slice(),
        cells: cells.as_slice(),
        d_rows: d_gates.nrows(),
        hidden_row,
        d_gates: SharedCols::new(d_gates),
        dh: SharedCols::from_slice(&mut dh_m.as_mut_slice()[span], h),
        dc: SharedCols::from_slice(dc_all, h),
        packed: packed_hh,
    };
    split::run_backward(lp);
    // The real columns (`N = T*B` without lengths).
    let total = dims.col(steps);
    let full = total == steps * batch;
    let d_gates = d_gates.columns(0, total);
    // Whole-sequence products, each side on its rows of `d_gates`.
    let d_hidden = d_gates.rows(hidden_row, gh);
    // The weight gradients read `dG`, `X` and the hidden sequence in place ([`add_a_bt`]).
    // `W_ih`'s also sum `dG`'s rows of its blocks (every column) into `bias` as they go, from
    // zero in column order; the input blocks are rows `0..covered`, and a GRU's `dgh_n` rows
    // after them are summed apart.
    bias.fill(T::zero());
    let mut covered = 0;
    for InputBlock {
        w_ih_row,
        d_gates_row,
        rows,
    } in layout.input_blocks()
    {
        let dw = &mut w.weight_ih.grad.rows_mut(w_ih_row, rows);
        add_a_bt_row_sums(
            dw,
            &d_gates.rows(d_gates_row, rows),
            x,
            &mut bias[d_gates_row..][..rows],
        );
        covered += rows;
    }
    debug_assert!(
        layout
            .input_blocks()
            .all(|b| b.d_gates_row + b.rows <= covered)
    );
    let rest = d_gates.nrows() - covered;
    if rest > 0 {
        add_row_sums(&mut bias[covered..], &d_gates.rows(covered, rest));
    }
    let shifted = (steps - 1) * batch;
    if !full {
        // Variable lengths: step `t`'s `h_{t-1}` columns are not one shift of the output's, so
        // they are gathered into `h_prev_buf` `(H, N)`, column `off[t] + j` for sequence `j`
        // (the initial state's column for those that start at `t`), for one product.
        let h0 = slot_slice(Some(&initial.h), slot, dims);
        let (out_s, r_out) = (out.as_slice(), out.nrows());
        let buf = &mut h_prev_buf.as_mut_slice()[..total * h];
        for t in 0..steps {
            for j in 0..dims.running(t) {
                let src = match dims.prev_of(t, j) {
                    Some(tp) => &out_s[(dims.col(tp) + j) * r_out + r0..][..h],
                    None => &h0[j * h..][..h],
                };
                buf[(dims.col(t) + j) * h..][..h].copy_from_slice(src);
            }
        }
        add_a_bt(
            &mut w.weight_hh.grad,
            &d_hidden,
            &h_prev_buf.view((0, 0), (h, total)),
        );
    } else if shifted > 0 {
        // Step t's h_{t-1} is output column block t-1 (forward) or t+1 (reverse).
        let (g0, h0_col) = if dir == 0 { (batch, 0) } else { (0, batch) };
        let h_prev = out.view((r0, h0_col), (h, shifted));
        add_a_bt(
            &mut w.weight_hh.grad,
            &d_hidden.columns(g0, shifted),
            &h_prev,
        );
    }
    // The first step's h_{t-1} is the initial state: zeros unless the caller gave one, and a
    // zero product adds nothing.
    let h0 = initial.h.columns(slot * batch, batch);
    if full && h0.iter().any(|&v| v != T::zero()) {
        let first = dims.step(0) * batch;
        add_a_bt(&mut w.weight_hh.grad, &d_hidden.columns(first, batch), &h0);
    }
    // Each bias gradient takes its side's rows of the row sums.
    let add_rows = |db: &mut DMatrix<T>, w_row: usize, g_row: usize, rows: usize| {
        for (g, &v) in db.as_mut_slice()[w_row..][..rows]
            .iter_mut()
            .zip(&bias[g_row..][..rows])
        {
            *g += v;
        }
    };
    for b in layout.input_blocks() {
        add_rows(&mut w.bias_ih.grad, b.w_ih_row, b.d_gates_row, b.rows);
    }
    add_rows(&mut w.bias_hh.grad, 0, hidden_row, gh);
    if let Some((mut d_x, accum)) = d_x {
        // `W_ihᵀ dgx`, block by block: the first writes (or adds, as asked), the rest add.
        for (i, b) in layout.input_blocks().enumerate() {
            matmul(
                &mut d_x,
                if i == 0 { accum } else { Accum::Add },
                &w.weight_ih.value.rows(b.w_ih_row, b.rows),
                Trans::Yes,
                &d_gates.rows(b.d_gates_row, b.rows),
                Trans::No,
            );
        }
    }
}
