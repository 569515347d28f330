//! Forward of one layer-direction over the whole sequence batch: from its input `X` `(I, T*B)`
//! (`I = D*H` above the first layer) into its rows `d*H..(d+1)*H` of the layer's output
//! `(D*H, T*B)`, its gate buffer (`(G·H, T*B)`, a GRU's `(4H, T*B)` with the gates in rows
//! `H..4H`, [`GateLayout`]) and its slot `l*D + d` of the final state `(H, L*D*B)`.
//!
//! 1. `G_x = W_ih · X`: one product over all `T*B` columns into the gate buffer, except with a
//!    batch of at least 24 and a `W_ih` of at most 2^18 values, whose steps compute it
//!    ([`input_in_loop`]: the gate buffer is then written once per step, not filled before the
//!    loop and read back at every step).
//! 2. For each step (in reverse order for `d = 1`): `G_t += W_hh · h_{t-1}` (one product,
//!    [`step_product`](super::products::step_product); the GRU's into a scratch, since its `n`
//!    gate keeps `W_hn h` apart), or when the steps compute the input part,
//!    `G_t = W_ih · x_t + W_hh · h_{t-1}` (RNN, LSTM: one product of two packed weights,
//!    `packed_matmul_pair`, each gate's sum running on from `W_ih x_t` into `W_hh h_{t-1}`; GRU:
//!    `W_ih · x_t` as a product of its own); then the cell adds the bias `b_ih + b_hh`
//!    ([`bias_column`]) and its elementwise math writes `h_t` into the output. The time loop is
//!    [`split`]'s.

use super::products::{bias_column, input_in_loop};
use super::split::{self, ForwardLoop, SharedCols};
use super::{Dims, slot_slice};
use crate::cache::DirectionCache;
use crate::gates::GateLayout;
use crate::weights::DirectionWeights;
use crate::{CellKind, RecurrentState};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::{Accum, Float, Trans, matmul};

/// Forward of one layer-direction over the whole sequence: fills `out`'s rows `dir*H..`, the
/// cache `dc`, and slot `dims.slot` of `final_state`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_direction<T: Float>(
    cell: CellKind,
    w: &DirectionWeights<T>,
    x: &DMatrixView<'_, T>,
    dims: Dims,
    initial: &RecurrentState<T>,
    out: &mut DMatrix<T>,
    dc: &mut DirectionCache<T>,
    final_state: &mut RecurrentState<T>,
) {
    let Dims {
        hidden: h,
        steps,
        batch,
        dir,
        slot,
    } = dims;
    let layout = GateLayout::new(cell, h);
    let (gh, rows_out, r0) = (layout.gate_rows(), out.nrows(), dir * h);
    let DirectionCache {
        gates,
        hidden_gates,
        hidden_n,
        cells,
        packed_hh,
        packed_ih,
        bias,
        ..
    } = dc;
    let bias = &mut bias[..gh];
    // A GRU's gates are rows `H..4H` of its buffer (backward writes its `4H` gradient over them).
    let gate_row = layout.hidden_first_row();
    bias_column(cell, w, bias);
    let in_loop = input_in_loop(batch, gh * x.nrows());
    if in_loop {
        packed_ih.pack(&w.weight_ih.value, Trans::No);
    } else {
        // `G_x = W_ih · X` (large products in parts at once, one per thread, see [`matmul`]).
        matmul(
            &mut gates.view_mut((gate_row, 0), (gh, steps * batch)),
            Accum::Replace,
            &w.weight_ih.value,
            Trans::No,
            x,
            Trans::No,
        );
    }
    packed_hh.pack(&w.weight_hh.value, Trans::No);
    let h0 = slot_slice(Some(&initial.h), slot, dims);
    let lp = ForwardLoop {
        cell,
        dims,
        gh,
        rows_out,
        r0,
        out: SharedCols::new(out),
        gates: SharedCols::new(gates),
        gate_row,
        hidden_gates: SharedCols::new(hidden_gates),
        hidden_n: SharedCols::new(hidden_n),
        cells: SharedCols::new(cells),
        h0,
        h0_zero: h0.iter().all(|&v| v == T::zero()),
        c0: slot_slice(initial.c.as_ref(), slot, dims),
        b_hn: &w.bias_hh.value.as_slice()[gh.saturating_sub(h)..],
        bias,
        packed: packed_hh,
        x: x.columns(0, x.ncols()),
        packed_ih,
        input_in_loop: in_loop,
    };
    split::run_forward(lp);
    let last = dims.last() * batch;
    final_state
        .h
        .columns_mut(slot * batch, batch)
        .copy_from(&out.view((r0, last), (h, batch)));
    if let Some(c_n) = &mut final_state.c {
        c_n.columns_mut(slot * batch, batch)
            .copy_from(&cells.columns(last, batch));
    }
}
