//! The products of one forward step and the bias column the cells add, shared by the sequence
//! forward's time loop and [`Recurrent::step`](crate::Recurrent::step) so that both compute the
//! same sums; and the one product of a backward step.
//!
//! A step's gates are `G_t = W_ih x_t + W_hh h_{t-1}` (`(G·H, B)`, column `b` for sequence `b`).
//! When the steps compute the input part ([`input_in_loop`]) an RNN or LSTM runs both as one
//! product of two packed weights (`packed_matmul_pair`), else `W_hh h_{t-1}` is added to the
//! `W_ih x_t` computed before the loop; a GRU keeps `W_hh h_{t-1}` in a scratch of its own, since
//! its `n` gate needs `W_hn h_{t-1}` apart ([`step_products`]). The cells then add the bias column
//! `b_ih + b_hh` ([`bias_column`]). Backward's product per step is `dh_{t-1} = W_hhᵀ dG_t`
//! ([`step_product`]).

use crate::CellKind;
use crate::cell::fold_bias;
use crate::weights::DirectionWeights;
use nalgebra::{DMatrixView, DMatrixViewMut};
use nn_core::kernels::gemv::{GemvMatrix, gemv, gemv_sum, gemv_two};
use nn_core::kernels::packed::{PackedMatrix, packed_matmul, packed_matmul_pair};
use nn_core::{Accum, Float};

/// The gate products of one forward step, for the forward's time loop and
/// [`Recurrent::step`](crate::Recurrent::step) alike, so that both compute the same sums. `g` is
/// the step's `G·H` gate rows, `gru_hidden` the GRU's scratch for `W_hh h_{t-1}` (`None` for
/// the other cells). With `input` (`W_ih` packed and `x_t`: the step computes the input part,
/// [`input_in_loop`]) an RNN or LSTM writes
/// `g = W_ih x_t + W_hh h_{t-1}` as one chain per gate ([`packed_matmul_pair`]) and a GRU
/// `g = W_ih x_t`; without it `g` already holds `W_ih x_t` and an RNN or LSTM adds
/// `W_hh h_{t-1}`. The GRU's scratch gets `W_hh h_{t-1}` either way.
///
/// `h_prev` is `None` when the state is all zeros (the first step from a zero initial state):
/// `W_hh · 0` adds nothing, so that product is skipped (a GRU's scratch is zeroed). The sums
/// are the same: the pair's chains run over `x_t`'s terms first, and each zero term after them
/// adds `±0` to a sum that is never `-0` (it starts at `+0`, and in round-to-nearest a sum of
/// nonzero values that cancels is `+0`).
pub(crate) fn step_products<T: Float>(
    g: &mut DMatrixViewMut<'_, T>,
    gru_hidden: Option<&mut DMatrixViewMut<'_, T>>,
    w_hh: &PackedMatrix<T>,
    h_prev: Option<&DMatrixView<'_, T>>,
    input: Option<(&PackedMatrix<T>, &DMatrixView<'_, T>)>,
) {
    match (gru_hidden, input, h_prev) {
        (Some(hidden), input, h_prev) => {
            if let Some((w_ih, x_t)) = input {
                step_product(g, Accum::Replace, w_ih, x_t);
            }
            match h_prev {
                Some(h_prev) => step_product(hidden, Accum::Replace, w_hh, h_prev),
                None => hidden.fill(T::zero()),
            }
        }
        (None, Some((w_ih, x_t)), Some(h_prev)) => {
            packed_matmul_pair(g, Accum::Replace, w_ih, x_t, w_hh, h_prev);
        }
        (None, Some((w_ih, x_t)), None) => step_product(g, Accum::Replace, w_ih, x_t),
        (None, None, Some(h_prev)) => step_product(g, Accum::Add, w_hh, h_prev),
        (None, None, None) => {}
    }
}

/// [`step_products`] for batches of at most [`GEMV_MAX_BATCH`](crate::step::GEMV_MAX_BATCH)
/// columns, on the matrix–vector kernel ([`gemv`]: each element the same chain as the packed
/// kernel's, so the same bits; large products as two static halves of rows on two threads).
pub(crate) fn gemv_step_products<T: Float>(
    g: &mut DMatrixViewMut<'_, T>,
    gru_hidden: Option<&mut DMatrixViewMut<'_, T>>,
    w_hh: &GemvMatrix<T>,
    h_prev: Option<&DMatrixView<'_, T>>,
    input: Option<(&GemvMatrix<T>, &DMatrixView<'_, T>)>,
) {
    match (input, gru_hidden, h_prev) {
        // GRU: `W_ih x_t` and `W_hh h_{t-1}` apart.
        (Some((ih, x)), Some(hid), Some(hp)) => gemv_two(g, ih, x, hid, w_hh, hp),
        (ih, Some(hid), hp) => {
            if let Some((ih, x)) = ih {
                gemv(g, Accum::Replace, ih, x);
            }
            match hp {
                Some(hp) => gemv(hid, Accum::Replace, w_hh, hp),
                None => hid.fill(T::zero()),
            }
        }
        // RNN, LSTM: `W_ih x_t`, then `W_hh h_{t-1}` added.
        (Some((ih, x)), None, Some(hp)) => gemv_sum(g, Accum::Replace, ih, x, w_hh, hp),
        (Some((ih, x)), None, None) => gemv(g, Accum::Replace, ih, x),
        (None, None, Some(hp)) => gemv(g, Accum::Add, w_hh, hp),
        (None, None, None) => {}
    }
}

/// `out (=|+=) w · h` for one time step: `W_hh · h_{t-1}` in forward, `W_hhᵀ · dG_t` in backward.
/// This is the only product inside the time loops. `w` was packed once before the loop
/// ([`PackedMatrix`]), so the step allocates nothing and skips matrixmultiply's per-call repacking.
#[inline]
pub(crate) fn step_product<T: Float>(
    out: &mut DMatrixViewMut<'_, T>,
    accum: Accum,
    w: &PackedMatrix<T>,
    h: &DMatrixView<'_, T>,
) {
    packed_matmul(out, accum, w, h);
}

/// Writes the bias column the cells add to the gate pre-activations: `b_ih + b_hh`, but only
/// `b_in` in a GRU's `n` block (see [`fold_bias`]).
///
/// The cells add the bias rather than the input product starting from it (a bias column written
/// into every column of the gate buffer, then the product added): that saves writing the
/// `(G·H, T·B)` gate buffer once and reading it back inside the product (figures in PERF.md).
/// The GRU's sums are the same ones when the product's
/// inner dimension `I` fits one of matrixmultiply's `k` blocks (256): `Wx + b` is `b + Wx`.
/// Otherwise, and for the LSTM and RNN (whose bias comes after `W_hh h`), the last bit of a
/// pre-activation can change.
pub(crate) fn bias_column<T: Float>(cell: CellKind, w: &DirectionWeights<T>, bias: &mut [T]) {
    let (b_ih, b_hh) = (w.bias_ih.value.as_slice(), w.bias_hh.value.as_slice());
    let hidden = w.weight_hh.value.ncols();
    for (row, v) in bias.iter_mut().enumerate() {
        *v = if fold_bias(cell, row, hidden) {
            b_ih[row] + b_hh[row]
        } else {
            b_ih[row]
        };
    }
}

/// Smallest batch for which a layer computes `W_ih x_t` inside the forward time loop (an RNN or
/// LSTM in the step product, [`packed_matmul_pair`]; a GRU, whose `n` gate keeps `W_hn h` apart,
/// as a second product of the step) rather than as one product over the whole sequence before
/// it (see [`input_in_loop`]).
///
/// The loop saves writing the `(G·H, T·B)` gate buffer and reading it back, but streams `W_ih`
/// once per step for only `B` columns; from this batch on the saving wins (figures in PERF.md).
/// It is on the batch alone, not the columns per thread, so the thread count never changes
/// which sums are computed.
const INPUT_IN_LOOP_MIN_BATCH: usize = 24;

/// Largest `W_ih` (`G·H x I` values) that the time loop streams at every step: `lstm-m`'s
/// (512 KiB of `f32`) gains, a larger one (`lstm-l`'s 4 MiB) was not shown to, so it keeps the
/// whole-sequence product (figures in PERF.md).
const INPUT_IN_LOOP_MAX_VALUES: usize = 1 << 18;

/// Whether a layer-direction's forward computes `W_ih x_t` in the time loop (`B ≥`
/// [`INPUT_IN_LOOP_MIN_BATCH`] and a `W_ih` of at most [`INPUT_IN_LOOP_MAX_VALUES`] values);
/// else `W_ih X` is one product before it. Shapes alone decide, so results never depend on the
/// threads.
pub(crate) fn input_in_loop(batch: usize, w_ih_values: usize) -> bool {
    batch >= INPUT_IN_LOOP_MIN_BATCH && w_ih_values <= INPUT_IN_LOOP_MAX_VALUES
}
