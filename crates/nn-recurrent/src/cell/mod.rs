//! The cells' elementwise math for one sequence at one time step, on plain slices.
//!
//! Every cell splits its step into matrix products, which the layer does for many columns at once,
//! and the elementwise part here, which sees one column (one sequence `b` at one step `t`):
//! - the input projection `W_ih x_t + b_ih` (one product over all `T*B` columns, or for large
//!   enough batches one per step; biases folded in, see [`fold_bias`]),
//! - the hidden projection `W_hh h_{t-1}` (one product per step),
//! - then [`rnn`], [`lstm`] or [`gru`] turns the projected gates into `h_t` (and `c_t`).
//!
//! Backward mirrors this: the functions here turn `∂L/∂h_t` (and `∂L/∂c_t`) into the gradient of
//! the gate pre-activations `dG_t`; the layer does the products (`dh_{t-1} = W_hhᵀ dG_t`, and over
//! the whole sequence `dW_ih += dG Xᵀ`, `dW_hh += dG H_prevᵀ`, `dX = W_ihᵀ dG`).
//!
//! Slices have length `H` (states) or `G*H` (gates, blocks of `H` rows in PyTorch's gate order).
//! The functions assert nothing; the layer hands them slices of the right lengths.

pub(crate) mod gru;
pub(crate) mod lstm;
pub(crate) mod rnn;

use crate::CellKind;

/// Whether row `row` of the gates (of `G*H`) gets `b_hh` folded into the input projection.
/// Every row does except the GRU's `n` block, where `b_hn` sits inside `r * (W_hn h + b_hn)`.
#[inline]
pub(crate) fn fold_bias(cell: CellKind, row: usize, hidden: usize) -> bool {
    !(cell == CellKind::Gru && row >= 2 * hidden)
}
