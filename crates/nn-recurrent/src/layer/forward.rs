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
//!
//! On a variable-length batch (packed, `Dims::off`) each step runs only its running sequences
//! `0..n_t`; in the reverse direction the sequences that end at step `t` (`n_{t+1} <= j < n_t`)
//! start there from the initial state, so the step products run in two blocks of columns
//! ([`Dims::continuing`](super::Dims)). Each sequence's final state is its own last step's.
//!
//! The training forward keeps every step's gates (and the LSTM's `c_t`, the GRU's
//! `W_hn h_{t-1} + b_hn`) for backward ([`Keep::All`]). The forward-only pass
//! ([`Keep::Window`], [`Recurrent::infer`](crate::Recurrent::infer)) runs the same code on
//! buffers that hold one step (the gates when the steps compute the input part, the GRU's
//! `ĝ_n`) or two (the LSTM's `c_{t-1}`, `c_t`), and computes `W_ih · X` window by window of
//! steps ([`window_steps`]), each window's product run just before its steps. A column's sum
//! is the same whatever the product's columns, as long as the product takes the same kernel:
//! so a window is never small enough to move a product that is large enough for
//! matrixmultiply onto the packed kernel (`PARALLEL_MIN_MACS`), and the bits are the training
//! forward's.

use super::products::{bias_column, input_in_loop};
use super::split::{self, ForwardLoop, SharedCols, StepCols};
use super::{Dims, slot_slice};
use crate::cache::DirectionCache;
use crate::gates::GateLayout;
use crate::step::GEMV_MAX_BATCH;
use crate::weights::DirectionWeights;
use crate::{CellKind, RecurrentState};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::kernels::thresholds::PARALLEL_MIN_MACS;
use nn_core::{Accum, Float, Trans, matmul};

/// The smallest `W_hh` (`G·H·H` multiply-adds per column) whose forward steps run on the
/// matrix-vector kernel.
const FORWARD_GEMV_MIN_MACS: usize = 1 << 14;

/// What a layer-direction forward keeps of each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Every step's gates, cells and GRU hidden parts, for backward (buffers of `T*B` columns).
    All,
    /// Only what the next step reads (buffers of [`window_columns`] columns): forward-only.
    Window,
}

/// Columns (`B` per step) of each window of the forward-only pass's input product `W_ih X`
/// (`G·H x 4096` gate values). Windows are a memory bound, not a speed-up: matrixmultiply packs
/// `W_ih` again for every 1024 columns (its `NC` for `f32`) in any case, yet windows of 1024 or
/// 2048 columns took more CPU time than the whole product on `fwd-lstm-l` (`B = 64`, `T = 64`,
/// which this size keeps whole).
const WINDOW_COLUMNS: usize = 4096;

/// The steps of each window of the forward-only pass's input product for a layer with `gh` gate
/// rows and `input` features: about [`WINDOW_COLUMNS`] columns, but never fewer steps than
/// keep the window's product on matrixmultiply when the whole one is (see the module doc), and
/// `T` when the whole product is under `PARALLEL_MIN_MACS` (then it is small in any case).
pub(crate) fn window_steps(gh: usize, input: usize, steps: usize, batch: usize) -> usize {
    let per_step = gh.saturating_mul(input).saturating_mul(batch).max(1);
    if per_step.saturating_mul(steps) < PARALLEL_MIN_MACS {
        return steps;
    }
    let fit = WINDOW_COLUMNS.div_ceil(batch.max(1));
    fit.max(PARALLEL_MIN_MACS.div_ceil(per_step)).min(steps)
}

/// Columns of the forward-only pass's gate buffer for a layer-direction: `B` when the steps
/// compute the input part, else the longest window: of a full batch (the `T / w` windows of
/// `w =` [`window_steps`] share the `T` steps, so each has `w` to `2w - 1` steps), or of a
/// variable-length one ([`packed_window_len`]: fewer than `w·B + B + m` columns, `m` those of
/// the smallest product on matrixmultiply), at most `T*B`.
pub(crate) fn window_columns(batch: usize, gh: usize, input: usize, steps: usize) -> usize {
    if input_in_loop(batch, gh * input) {
        batch
    } else {
        let w = window_steps(gh, input, steps, batch).max(1);
        let windows = steps / w;
        let full = steps.div_ceil(windows.max(1)) * batch;
        let packed = (w * batch + batch + min_product_columns(gh, input)).min(steps * batch);
        full.max(packed)
    }
}

/// The fewest columns of an input product `(gh x input) · (input x n)` on matrixmultiply
/// (`PARALLEL_MIN_MACS` multiply-adds).
fn min_product_columns(gh: usize, input: usize) -> usize {
    PARALLEL_MIN_MACS.div_ceil(gh.saturating_mul(input).max(1))
}

/// The steps of the forward-only pass's input-product window that starts at index `base` of the
/// direction's order, for a variable-length batch: steps are added until the window holds
/// `target` columns (a full batch's window), except that a window whose rest would be a product
/// too small for matrixmultiply (under `min_cols` columns) takes the rest too. So every window is
/// on the kernel of the whole product (all on matrixmultiply when it is, a single window when it
/// is not), which keeps the training forward's bits.
fn packed_window_len(dims: &Dims<'_>, base: usize, target: usize, min_cols: usize) -> usize {
    let total = dims.col(dims.steps);
    // Columns of the steps before `base` in the direction's order.
    let before = if dims.dir == 0 {
        dims.col(base)
    } else {
        total - dims.col(dims.steps - base)
    };
    let (mut cols, mut len) = (0, 0);
    while base + len < dims.steps {
        cols += dims.running(dims.step(base + len));
        len += 1;
        let rest = total - before - cols;
        if cols >= target && (rest == 0 || rest >= min_cols) {
            break;
        }
    }
    len
}

/// Forward of one layer-direction over the whole sequence: fills `out`'s rows `dir*H..`, the
/// buffers `dc` (every step's with [`Keep::All`], else as [`Keep::Window`] says), and slot
/// `dims.slot` of `final_state`.
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
    keep: Keep,
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
    let DirectionCache {
        gates,
        hidden_gates,
        hidden_n,
        cells,
        packed_hh,
        packed_ih,
        gemv_hh,
        gemv_ih,
        bias,
        ..
    } = dc;
    let bias = &mut bias[..gh];
    // A GRU's gates are rows `H..4H` of its buffer (backward writes its `4H` gradient over them).
    let gate_row = layout.hidden_first_row();
    bias_column(cell, w, bias);
    let in_loop = input_in_loop(batch, gh * x.nrows());
    // Batches of 1 to 3 columns step on the matrix-vector kernel (the same bits) unless `W_hh`
    // is tiny (there its packing and dispatch cost more than they save: `seed`, `64x16`, ran
    // 17% slower), the rest on the packed kernel; only the one in use is packed.
    let small = batch <= GEMV_MAX_BATCH && gh * h >= FORWARD_GEMV_MIN_MACS;
    if small {
        if in_loop {
            gemv_ih.pack(&w.weight_ih.value);
        }
        gemv_hh.pack(&w.weight_hh.value);
    } else {
        if in_loop {
            packed_ih.pack(&w.weight_ih.value, Trans::No);
        }
        packed_hh.pack(&w.weight_hh.value, Trans::No);
    }
    let gemv = small.then_some((&*gemv_hh, &*gemv_ih));
    let (window, cell_cols, hn_cols) = match keep {
        Keep::All => (steps, StepCols::All, StepCols::All),
        Keep::Window => (
            if in_loop {
                steps
            } else {
                window_steps(gh, x.nrows(), steps, batch)
            },
            StepCols::Ring(2),
            StepCols::Ring(1),
        ),
    };
    let h0 = slot_slice(Some(&initial.h), slot, dims);
    let h0_zero = h0.iter().all(|&v| v == T::zero());
    let c0 = slot_slice(initial.c.as_ref(), slot, dims);
    let b_hn = &w.bias_hh.value.as_slice()[gh.saturating_sub(h)..];
    // Windows of `steps / windows` or one more steps (each at least `window`), in the
    // direction's order; for a variable-length batch, windows of about `window * B` columns.
    let windows = steps / window;
    let full = dims.col(steps) == steps * batch;
    let mut base = 0;
    for k in 0.. {
        if base == steps {
            break;
        }
        let len = if full {
            steps * (k + 1) / windows - steps * k / windows
        } else {
            let min_cols = min_product_columns(gh, x.nrows());
            packed_window_len(&dims, base, window * batch, min_cols)
        };
        // The window's first step in time (its last one in the reverse direction's order).
        let t0 = if dir == 0 { base } else { steps - base - len };
        let gate_cols = match (keep, in_loop) {
            (Keep::All, _) => StepCols::All,
            (Keep::Window, true) => StepCols::Ring(1),
            (Keep::Window, false) => StepCols::From(t0),
        };
        if !in_loop {
            // `G_x = W_ih · X` over the window (large products in parts at once, one per thread, see
            // [`matmul`]).
            let (c0, n) = (dims.col(t0), dims.col(t0 + len) - dims.col(t0));
            let g0 = gate_cols.col(t0, &dims);
            matmul(
                &mut gates.view_mut((gate_row, g0), (gh, n)),
                Accum::Replace,
                &w.weight_ih.value,
                Trans::No,
                &x.columns(c0, n),
                Trans::No,
            );
        }
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
            h0_zero,
            c0,
            b_hn,
            bias,
            packed: packed_hh,
            x: x.columns(0, x.ncols()),
            packed_ih,
            gemv,
            input_in_loop: in_loop,
            base,
            len,
            gate_cols,
            cell_cols,
            hn_cols,
        };
        split::run_forward(lp);
        base += len;
    }
    // Each sequence's final state is its last step's (the reverse direction's: step 0's).
    let r_out = out.nrows();
    let (out_s, cells_s) = (out.as_slice(), cells.as_slice());
    let h_n = &mut final_state.h.as_mut_slice()[slot * batch * h..][..batch * h];
    let mut c_n = final_state
        .c
        .as_mut()
        .map(|c| &mut c.as_mut_slice()[slot * batch * h..][..batch * h]);
    let full = dims.col(steps) == steps * batch;
    for (j, h_j) in h_n.chunks_exact_mut(h).enumerate() {
        let last = if dir == 1 {
            0
        } else if full {
            steps - 1
        } else {
            // The steps sequence `j` runs: those with more than `j` running.
            (0..steps).rev().find(|&t| dims.running(t) > j).unwrap_or(0)
        };
        let col = dims.col(last) + j;
        h_j.copy_from_slice(&out_s[col * r_out + r0..][..h]);
        if let Some(c_n) = &mut c_n {
            let cc = cell_cols.col(last, &dims) + j;
            c_n[j * h..][..h].copy_from_slice(&cells_s[cc * h..][..h]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_4096_columns_and_keep_large_products_on_matrixmultiply() {
        // The shapes of `tests/infer.rs`: LSTM `I = 300`, `H = 16` at batch 16, 600 steps: two
        // windows; a GRU at batch 1, 12300 steps: three.
        assert_eq!(window_steps(64, 300, 600, 16), 256);
        assert_eq!(window_steps(48, 300, 12300, 1), 4096);
        // A product under matrixmultiply's threshold stays whole.
        assert_eq!(window_steps(16, 3, 50, 2), 50);
        // A small layer above the threshold: longer windows, each above it too.
        let w = window_steps(8, 2, 1 << 20, 1);
        assert!(w > 4096 && 8 * 2 * w >= PARALLEL_MIN_MACS);
        // Buffer columns: the longest of the `T / w` windows, or one step inside the loop.
        assert_eq!(window_columns(16, 64, 300, 600), 300 * 16);
        assert_eq!(window_columns(32, 1024, 128, 64), 32);
    }
}
