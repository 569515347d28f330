//! A [`SeqModel`](super::SeqModel) on a variable-length batch ([`Lengths::Each`], PyTorch's
//! packed sequences): the losses cover the real positions only.
//!
//! - `NextToken`: the head and the loss run on the real positions only, the layer's packed
//!   output (`RecurrentCache::packed_output`; the forward-only pass gathers [`real_columns`]);
//!   the targets of padded positions (`t >= lengths[b]`) are never read, and
//!   the mean is over the real positions (any of them may still be [`IGNORE_INDEX`](nn_core::loss::IGNORE_INDEX)). The
//!   padded columns of the logits hold the head's output for the zero output there, its bias.
//! - `StepMse`: `L = Σ_real (logits − y)² / (O·N)`, `N = Σ lengths`; padded columns get no loss
//!   and a zero gradient, and their targets are not read.
//! - The last-step objectives read each sequence's own last step, column
//!   `(lengths[b] - 1)·B + b` (PyTorch: the output gathered at `lengths - 1`, or `h_n`).

use crate::error::Result;
use nalgebra::DMatrix;

use nn_core::{Error, Float, Shape};
use nn_recurrent::Lengths;

/// The padded column of each sequence's last real step, in sequence order.
pub(crate) fn last_columns(lengths: Lengths<'_>, steps: usize) -> impl Iterator<Item = usize> + '_ {
    let batch = lengths.batch();
    (0..batch).map(move |b| {
        let len = match lengths {
            Lengths::Full(_) => steps,
            Lengths::Each(l) => l[b],
        };
        (len - 1) * batch + b
    })
}

/// The padded columns of the real positions, step by step (`t*B + b` with `t < lengths[b]`).
pub(crate) fn real_columns(lengths: Lengths<'_>, steps: usize) -> impl Iterator<Item = usize> + '_ {
    (0..steps * lengths.batch()).filter(move |&c| !padded(lengths, c))
}

/// The targets of the `gathered` columns, in that order, into `buf`; targets of the wrong count
/// (not `cols`) are a `LengthMismatch`.
pub(crate) fn gather_targets(
    targets: &[usize],
    gathered: &[usize],
    cols: usize,
    buf: &mut Vec<usize>,
) -> Result<()> {
    if targets.len() != cols {
        return Err(Error::LengthMismatch {
            op: "SeqModel NextToken targets (T*B)",
            expected: cols,
            got: targets.len(),
        }
        .into());
    }
    buf.clear();
    buf.extend(gathered.iter().map(|&c| targets[c]));
    Ok(())
}

/// Whether padded column `col` (`t*B + b`) is past its sequence's end.
fn padded(lengths: Lengths<'_>, col: usize) -> bool {
    match lengths {
        Lengths::Full(_) => false,
        Lengths::Each(l) => col / l.len() >= l[col % l.len()],
    }
}

/// Mean squared error over the real columns of `logits` against `y` (both `(O, T*B)`), its
/// gradient into `d` (0 in padded columns). A result that overflows is `NonFinite`.
pub(crate) fn masked_mse<T: Float>(
    logits: &DMatrix<T>,
    y: &DMatrix<T>,
    lengths: Lengths<'_>,
    d: &mut DMatrix<T>,
) -> Result<T> {
    const OP: &str = "SeqModel StepMse target (O, T*B) on a variable-length batch";
    if y.shape() != logits.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: Shape::from(logits),
            got: Shape::from(y),
        }
        .into());
    }
    let real = (0..logits.ncols()).filter(|&c| !padded(lengths, c)).count();
    let scale = T::one() / T::cast((real * logits.nrows()) as f64);
    let two = T::cast(2.0);
    let mut sum = T::zero();
    for c in 0..logits.ncols() {
        let pad = padded(lengths, c);
        for r in 0..logits.nrows() {
            let target = y[(r, c)];
            if !pad && !target.is_finite() {
                return Err(Error::NonFinite {
                    op: OP,
                    index: c * y.nrows() + r,
                    value: target.as_f64(),
                }
                .into());
            }
            let e = logits[(r, c)] - target;
            d[(r, c)] = if pad { T::zero() } else { two * e * scale };
            if !pad {
                sum += e * e;
            }
        }
    }
    let loss = sum * scale;
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            op: "SeqModel StepMse loss (overflow)",
            index: 0,
            value: loss.as_f64(),
        }
        .into());
    }
    Ok(loss)
}
