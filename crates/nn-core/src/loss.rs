//! Losses, each a mean over the batch like PyTorch's default `reduction="mean"`, with backward.
//!
//! Shapes: predictions are `(C, N)` (one column per example); class targets are `N` indices.
//! - Softmax + cross-entropy, fused (`F.cross_entropy` on logits `z`):
//!   `L = (1/N) Σ_n [logΣ_c e^{z_cn} − z_{t_n n}]`, `∂L/∂z = (softmax(z) − onehot(t)) / N`.
//! - Cross-entropy on probabilities `p` (`F.nll_loss(log p)`): `L = −(1/N) Σ_n log p_{t_n n}`,
//!   `∂L/∂p_{t_n n} = −1/(N p_{t_n n})`, zero elsewhere.
//! - Mean squared error (`F.mse_loss`, mean over all `C·N` elements): `L = mean (y − t)²`,
//!   `∂L/∂y = 2 (y − t) / (C N)`.
//! - Binary cross-entropy with logits (`F.binary_cross_entropy_with_logits`), targets in `[0, 1]`:
//!   `L = mean [max(z,0) − z t + log(1 + e^{−|z|})]`, `∂L/∂z = (σ(z) − t) / (C N)`.
//!
//! Class targets may be [`IGNORE_INDEX`] (PyTorch's `ignore_index=-100`; targets here are
//! `usize`, so the sentinel is `usize::MAX`): such a position has no loss and a zero gradient,
//! and `N` above counts only the other positions (PyTorch's mean over the kept targets). When
//! every target is ignored the result is [`Error::AllTargetsIgnored`], not PyTorch's NaN.
//!
//! Backward functions *write* the prediction gradient (they do not add). Bad input — wrong
//! shapes, an empty batch, a target out of range, a NaN — is an [`Error`], never a panic.
//! Results are finite or an error: a loss (or an MSE gradient) that overflows from finite
//! inputs, e.g. logits of ±3e38 in `f32`, is [`Error::NonFinite`] (element 0 of the scalar loss).

use crate::activation::sigmoid;
use crate::kernels::thresholds::SPLIT_MIN_VALUES;
use crate::{Error, Float, Result, Shape, check_finite, check_shape};
use nalgebra::DMatrix;

/// `loss`, or [`Error::NonFinite`] naming `op` when finite inputs made it overflow.
fn finite_loss<T: Float>(op: &'static str, loss: T) -> Result<T> {
    if loss.finite() {
        Ok(loss)
    } else {
        Err(Error::NonFinite {
            op,
            index: 0,
            value: loss.as_f64(),
        })
    }
}

/// The class target of a position that gets no loss and a zero gradient: PyTorch's
/// `ignore_index` (its default `-100`; targets are `usize` here, so the sentinel is
/// `usize::MAX`). Means are over the other positions; when every target is ignored the losses
/// return [`Error::AllTargetsIgnored`].
pub const IGNORE_INDEX: usize = usize::MAX;

/// Checks logits (or probabilities) against class targets; returns how many targets are not
/// [`IGNORE_INDEX`] (at least one).
fn check_classes<T: Float>(op: &'static str, z: &DMatrix<T>, targets: &[usize]) -> Result<usize> {
    let (classes, n) = z.shape();
    if n == 0 {
        return Err(Error::Empty { op, what: "batch" });
    }
    if classes == 0 {
        return Err(Error::Empty {
            op,
            what: "classes",
        });
    }
    if targets.len() != n {
        return Err(Error::LengthMismatch {
            op,
            expected: n,
            got: targets.len(),
        });
    }
    if let Some((index, &target)) = targets
        .iter()
        .enumerate()
        .find(|(_, t)| **t >= classes && **t != IGNORE_INDEX)
    {
        return Err(Error::TargetOutOfRange {
            op,
            index,
            target,
            classes,
        });
    }
    let kept = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    if kept == 0 {
        return Err(Error::AllTargetsIgnored { op });
    }
    check_finite(op, z)?;
    Ok(kept)
}

/// Mean softmax cross-entropy of logits `(C, N)` against class indices; an overflow (logits
/// spread over more than the type's range) is [`Error::NonFinite`].
pub fn softmax_cross_entropy<T: Float>(logits: &DMatrix<T>, targets: &[usize]) -> Result<T> {
    let kept = check_classes("softmax_cross_entropy", logits, targets)?;
    let c = logits.nrows();
    let mut total = T::zero();
    for (col, &t) in logits.as_slice().chunks_exact(c).zip(targets) {
        if t == IGNORE_INDEX {
            continue;
        }
        let max = col.iter().copied().fold(col[0], |a, b| a.max(b));
        let sum = col.iter().fold(T::zero(), |s, &v| s + (v - max).exp());
        total += sum.ln() + max - col[t];
    }
    finite_loss(
        "softmax_cross_entropy loss (overflow)",
        total / T::cast(kept as f64),
    )
}

/// The largest value of a non-empty column, with eight running maxima so that it vectorizes.
#[inline(always)]
fn col_max<T: Float>(col: &[T]) -> T {
    let mut lanes = [col[0]; 8];
    let chunks = col.chunks_exact(8);
    let tail = chunks.remainder();
    for ch in chunks {
        for (m, &v) in lanes.iter_mut().zip(ch) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut max = lanes
        .iter()
        .copied()
        .fold(col[0], |a, b| if b > a { b } else { a });
    for &v in tail {
        max = if v > max { v } else { max };
    }
    max
}

/// `d = e^(col - max(col))`, returning `(max(col), Σ d)` (summed in eight lanes, so that it
/// vectorizes).
#[inline(always)]
fn exp_shifted<T: Float>(col: &[T], d: &mut [T]) -> (T, T) {
    let max = col_max(col);
    for (di, &v) in d.iter_mut().zip(col) {
        *di = (v - max).act_exp();
    }
    let mut lanes = [T::zero(); 8];
    let chunks = d.chunks_exact(8);
    let tail = chunks.remainder();
    for ch in chunks {
        for (s, &v) in lanes.iter_mut().zip(ch) {
            *s += v;
        }
    }
    let mut sum = lanes.iter().fold(T::zero(), |a, &b| a + b);
    for &v in tail {
        sum += v;
    }
    (max, sum)
}

/// The fused forward and backward: returns the mean loss and writes `∂L/∂logits` into `d_logits`
/// `(C, N)`. No allocation; this is what training loops call.
pub fn softmax_cross_entropy_to<T: Float>(
    logits: &DMatrix<T>,
    targets: &[usize],
    d_logits: &mut DMatrix<T>,
) -> Result<T> {
    let kept = check_classes("softmax_cross_entropy", logits, targets)?;
    check_shape(
        "softmax_cross_entropy d_logits",
        d_logits,
        Shape::from(logits),
    )?;
    let c = logits.nrows();
    let n = targets.len();
    let inv_n = T::one() / T::cast(kept as f64);
    let (l, d) = (logits.as_slice(), d_logits.as_mut_slice());
    let parts = crate::kernels::pool::threads().min(n);
    let total = if l.len() >= SPLIT_MIN_VALUES && n >= 2 {
        // Always the sum of two halves of columns for such sizes, each summed in column order,
        // whatever the thread count: the loss is the same sum for any number of parts.
        let h = n / 2;
        if parts < 2 {
            let (l0, l1) = l.split_at(h * c);
            let (d0, d1) = d.split_at_mut(h * c);
            let (t0, t1) = targets.split_at(h);
            cross_entropy_columns(l0, d0, t0, c, inv_n, &mut [])
                + cross_entropy_columns(l1, d1, t1, c, inv_n, &mut [])
        } else {
            with_column_losses(n, |losses| {
                cross_entropy_parts(l, d, targets, c, inv_n, parts, losses);
                let sum = |ls: &[f64]| ls.iter().fold(T::zero(), |s, &v| s + T::cast(v));
                sum(&losses[..h]) + sum(&losses[h..])
            })
        }
    } else {
        cross_entropy_columns(l, d, targets, c, inv_n, &mut [])
    };
    finite_loss("softmax_cross_entropy loss (overflow)", total * inv_n)
}

/// Runs `f` with a reused buffer of `n` values (this thread's, or a fresh one when it is in use).
fn with_column_losses<R>(n: usize, f: impl FnOnce(&mut [f64]) -> R) -> R {
    use std::cell::RefCell;
    thread_local! {
        static LOSSES: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    }
    LOSSES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.resize(n, 0.0);
            f(&mut buf[..n])
        }
        Err(_) => f(&mut vec![0.0; n]),
    })
}

/// [`cross_entropy_columns`] over all `n` columns cut into `parts` parts run at once on the
/// [`pool`](crate::kernels::pool): writes the gradients and each column's loss into `losses`
/// (exact: an `f32` or `f64` loss converts to `f64` and back unchanged).
fn cross_entropy_parts<T: Float>(
    logits: &[T],
    d_logits: &mut [T],
    targets: &[usize],
    c: usize,
    inv_n: T,
    parts: usize,
    losses: &mut [f64],
) {
    /// The gradient and the losses, written by the parts, each its own columns.
    struct Out<T>(*mut T, *mut f64);
    // SAFETY: the parts write disjoint columns of both, borrowed mutably for the call.
    unsafe impl<T: Send> Sync for Out<T> {}
    let n = targets.len();
    assert!(logits.len() == n * c && d_logits.len() == n * c && losses.len() == n);
    let out = Out(d_logits.as_mut_ptr(), losses.as_mut_ptr());
    let out = &out;
    crate::kernels::pool::for_each_part(parts, |i| {
        let r = crate::kernels::pool::part_range(n, parts, 1, i);
        // SAFETY: columns `r` (within `0..n`, checked lengths above) of the gradient and the
        // losses; the parts' ranges do not overlap.
        let (d, ls) = unsafe {
            (
                std::slice::from_raw_parts_mut(out.0.add(r.start * c), r.len() * c),
                std::slice::from_raw_parts_mut(out.1.add(r.start), r.len()),
            )
        };
        let l = &logits[r.start * c..r.end * c];
        cross_entropy_columns(l, d, &targets[r], c, inv_n, ls);
    });
}

/// The columns of [`softmax_cross_entropy_to`] (`c` classes each): writes their gradients
/// (scaled by `inv_n`) and returns the sum of their losses, in column order; each column's loss
/// also goes to `losses` unless it is empty. A column whose target is [`IGNORE_INDEX`] gets a
/// zero gradient and a loss of 0, not added.
fn cross_entropy_columns<T: Float>(
    logits: &[T],
    d_logits: &mut [T],
    targets: &[usize],
    c: usize,
    inv_n: T,
    losses: &mut [f64],
) -> T {
    let mut total = T::zero();
    for (j, ((col, d), &t)) in logits
        .chunks_exact(c)
        .zip(d_logits.chunks_exact_mut(c))
        .zip(targets)
        .enumerate()
    {
        if t == IGNORE_INDEX {
            d.fill(T::zero());
            if let Some(slot) = losses.get_mut(j) {
                *slot = 0.0;
            }
            continue;
        }
        let (max, sum) = crate::kernels::simd::dispatch(
            #[inline(always)]
            || exp_shifted(col, d),
        );
        let loss = sum.ln() + max - col[t];
        if let Some(slot) = losses.get_mut(j) {
            *slot = loss.as_f64();
        }
        total += loss;
        let scale = inv_n / sum;
        crate::kernels::simd::dispatch(
            #[inline(always)]
            || {
                for di in d.iter_mut() {
                    *di *= scale;
                }
            },
        );
        d[t] -= inv_n;
    }
    total
}

/// `(loss, ∂L/∂logits)`, allocating the gradient.
pub fn softmax_cross_entropy_with_grad<T: Float>(
    logits: &DMatrix<T>,
    targets: &[usize],
) -> Result<(T, DMatrix<T>)> {
    let mut d = DMatrix::zeros(logits.nrows(), logits.ncols());
    let loss = softmax_cross_entropy_to(logits, targets, &mut d)?;
    Ok((loss, d))
}

/// Writes `∂L/∂logits = (softmax − onehot)/N` of the mean softmax cross-entropy (zero in the
/// columns of ignored targets).
pub fn softmax_cross_entropy_backward<T: Float>(
    logits: &DMatrix<T>,
    targets: &[usize],
    d_logits: &mut DMatrix<T>,
) -> Result<()> {
    softmax_cross_entropy_to(logits, targets, d_logits).map(|_| ())
}

fn check_probs<T: Float>(op: &'static str, p: &DMatrix<T>, targets: &[usize]) -> Result<usize> {
    let kept = check_classes(op, p, targets)?;
    let c = p.nrows();
    for (n, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        let v = p[(t, n)];
        if v.partial_cmp(&T::zero()) != Some(std::cmp::Ordering::Greater) {
            return Err(Error::NonFinite {
                op,
                index: n * c + t,
                value: v.as_f64(),
            });
        }
    }
    Ok(kept)
}

/// Mean cross-entropy of probabilities `(C, N)` (each column a distribution) against class
/// indices ([`IGNORE_INDEX`] skipped). A target probability that is not positive is an error
/// (its log is not finite).
pub fn cross_entropy<T: Float>(probs: &DMatrix<T>, targets: &[usize]) -> Result<T> {
    let kept = check_probs("cross_entropy", probs, targets)?;
    let total = targets
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t != IGNORE_INDEX)
        .fold(T::zero(), |s, (n, &t)| s - probs[(t, n)].ln());
    Ok(total / T::cast(kept as f64))
}

/// Writes `∂L/∂p` of [`cross_entropy`]: `−1/(N p)` at each target, zero elsewhere (and in the
/// columns of ignored targets).
pub fn cross_entropy_backward<T: Float>(
    probs: &DMatrix<T>,
    targets: &[usize],
    d_probs: &mut DMatrix<T>,
) -> Result<()> {
    let kept = check_probs("cross_entropy", probs, targets)?;
    check_shape("cross_entropy d_probs", d_probs, Shape::from(probs))?;
    d_probs.fill(T::zero());
    let n = T::cast(kept as f64);
    for (j, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        d_probs[(t, j)] = -T::one() / (n * probs[(t, j)]);
    }
    Ok(())
}

fn check_pair<T: Float>(op: &'static str, y: &DMatrix<T>, t: &DMatrix<T>) -> Result<()> {
    check_shape(op, t, Shape::from(y))?;
    if y.is_empty() {
        return Err(Error::Empty { op, what: "batch" });
    }
    check_finite(op, y)?;
    check_finite(op, t)
}

/// Mean squared error over all elements; an overflow (`|y − t|` above ~1.8e19 in `f32`) is
/// [`Error::NonFinite`].
pub fn mse<T: Float>(pred: &DMatrix<T>, target: &DMatrix<T>) -> Result<T> {
    check_pair("mse", pred, target)?;
    let s = pred
        .iter()
        .zip(target.iter())
        .fold(T::zero(), |s, (&y, &t)| s + (y - t) * (y - t));
    finite_loss("mse loss (overflow)", s / T::cast(pred.len() as f64))
}

/// `(loss, ∂L/∂pred)` of the mean squared error, allocating the gradient (the bits of [`mse`]
/// and [`mse_backward`]).
pub fn mse_with_grad<T: Float>(pred: &DMatrix<T>, target: &DMatrix<T>) -> Result<(T, DMatrix<T>)> {
    let loss = mse(pred, target)?;
    let mut d = crate::try_zeros("mse gradient", pred.nrows(), pred.ncols())?;
    mse_backward(pred, target, &mut d)?;
    Ok((loss, d))
}

/// Writes `∂L/∂pred = 2 (pred − target) / numel`; an overflow is [`Error::NonFinite`].
pub fn mse_backward<T: Float>(
    pred: &DMatrix<T>,
    target: &DMatrix<T>,
    d_pred: &mut DMatrix<T>,
) -> Result<()> {
    check_pair("mse", pred, target)?;
    check_shape("mse d_pred", d_pred, Shape::from(pred))?;
    let scale = T::cast(2.0 / pred.len() as f64);
    for ((d, &y), &t) in d_pred.iter_mut().zip(pred.iter()).zip(target.iter()) {
        *d = scale * (y - t);
    }
    // `y − t` overflows when both are huge and of opposite signs.
    check_finite("mse gradient (overflow)", d_pred)
}

/// Mean binary cross-entropy of logits against targets in `[0, 1]`, computed stably; an
/// overflow (huge logits times huge targets) is [`Error::NonFinite`].
pub fn bce_with_logits<T: Float>(logits: &DMatrix<T>, target: &DMatrix<T>) -> Result<T> {
    check_pair("bce_with_logits", logits, target)?;
    let s = logits
        .iter()
        .zip(target.iter())
        .fold(T::zero(), |s, (&z, &t)| {
            s + z.max(T::zero()) - z * t + (T::one() + (-z.abs()).exp()).ln()
        });
    finite_loss(
        "bce_with_logits loss (overflow)",
        s / T::cast(logits.len() as f64),
    )
}

/// Writes `∂L/∂z = (σ(z) − t) / numel`.
pub fn bce_with_logits_backward<T: Float>(
    logits: &DMatrix<T>,
    target: &DMatrix<T>,
    d_logits: &mut DMatrix<T>,
) -> Result<()> {
    check_pair("bce_with_logits", logits, target)?;
    check_shape("bce_with_logits d_logits", d_logits, Shape::from(logits))?;
    let inv = T::one() / T::cast(logits.len() as f64);
    for ((d, &z), &t) in d_logits.iter_mut().zip(logits.iter()).zip(target.iter()) {
        *d = (sigmoid(z) - t) * inv;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, Init, Rng, gradcheck};

    fn setup() -> (DMatrix<f64>, Vec<usize>, DMatrix<f64>) {
        let mut rng = Rng::seed_from(5);
        let z = Init::Normal { std: 2.0 }
            .matrix::<f64>(4, 3, &mut rng)
            .unwrap();
        let t = Init::Uniform { bound: 1.0 }
            .matrix::<f64>(4, 3, &mut rng)
            .unwrap()
            .map(|v| v.abs());
        (z, vec![2, 0, 3], t)
    }

    fn assert_check(
        name: &str,
        x: &DMatrix<f64>,
        dx: &DMatrix<f64>,
        f: impl FnMut(&DMatrix<f64>) -> Result<f64>,
    ) {
        let r = gradcheck::check_input(x, dx, f).unwrap();
        assert!(r.max_rel_error <= 1e-6, "{name}: {r:?}");
    }

    #[test]
    fn every_loss_passes_the_gradient_check() {
        let (z, targets, t) = setup();
        let (_, d) = softmax_cross_entropy_with_grad(&z, &targets).unwrap();
        assert_check("softmax_ce", &z, &d, |z| softmax_cross_entropy(z, &targets));

        let p = Activation::Softmax.forward(&z).unwrap();
        let mut d = DMatrix::zeros(4, 3);
        cross_entropy_backward(&p, &targets, &mut d).unwrap();
        assert_check("ce", &p, &d, |p| cross_entropy(p, &targets));

        mse_backward(&z, &t, &mut d).unwrap();
        assert_check("mse", &z, &d, |z| mse(z, &t));
        // The allocating form gives the same loss and gradient, bit for bit.
        let (loss, d2) = mse_with_grad(&z, &t).unwrap();
        assert_eq!((loss, &d2), (mse(&z, &t).unwrap(), &d));
        assert!(mse_with_grad(&z, &t.columns(0, 2).into_owned()).is_err());

        bce_with_logits_backward(&z, &t, &mut d).unwrap();
        assert_check("bce", &z, &d, |z| bce_with_logits(z, &t));
    }

    #[test]
    fn large_batches_done_in_two_halves_match_the_direct_formula() {
        // 64 classes x 4200 columns is above SPLIT_MIN_VALUES: two halves of columns (8 x 70
        // under Miri, which lowers it).
        let (c, n) = if cfg!(miri) { (8, 70) } else { (64, 4200) };
        assert!(c * n >= SPLIT_MIN_VALUES);
        let z = Init::Normal { std: 3.0 }
            .matrix::<f64>(c, n, &mut Rng::seed_from(8))
            .unwrap();
        let targets: Vec<usize> = (0..n).map(|j| (j * 7) % c).collect();
        let (loss, d) = softmax_cross_entropy_with_grad(&z, &targets).unwrap();
        let mut want_loss = 0.0;
        for (j, col) in z.column_iter().enumerate() {
            let m = col.max();
            let lse = col.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
            want_loss += lse - col[targets[j]];
            for i in 0..c {
                let p = (col[i] - lse).exp();
                let want = (p - f64::from(u8::from(i == targets[j]))) / n as f64;
                assert!((d[(i, j)] - want).abs() < 1e-15, "d[{i},{j}]");
            }
        }
        assert!((loss - want_loss / n as f64).abs() < 1e-12);
    }

    #[test]
    fn values_match_hand_arithmetic() {
        // Two equal logits: loss = ln 2.
        let z = DMatrix::from_column_slice(2, 1, &[3.0, 3.0]);
        assert!((softmax_cross_entropy(&z, &[1]).unwrap() - 2f64.ln()).abs() < 1e-15);
        // bce at z = 0: ln 2 whatever the target.
        let t = DMatrix::from_column_slice(1, 1, &[1.0]);
        assert!((bce_with_logits(&DMatrix::zeros(1, 1), &t).unwrap() - 2f64.ln()).abs() < 1e-15);
        assert_eq!(
            mse(
                &DMatrix::from_element(1, 2, 3.0),
                &DMatrix::from_element(1, 2, 1.0)
            )
            .unwrap(),
            4.0
        );
    }

    #[test]
    fn each_bad_input_has_its_error() {
        let (z, _, t) = setup();
        assert!(matches!(
            softmax_cross_entropy(&z, &[0, 4, 1]),
            Err(Error::TargetOutOfRange {
                index: 1,
                target: 4,
                classes: 4,
                ..
            })
        ));
        assert!(matches!(
            softmax_cross_entropy(&z, &[0]),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            softmax_cross_entropy(&DMatrix::<f64>::zeros(4, 0), &[]),
            Err(Error::Empty { what: "batch", .. })
        ));
        let mut bad = z.clone();
        bad[(0, 0)] = f64::INFINITY;
        assert!(matches!(
            softmax_cross_entropy(&bad, &[0, 0, 0]),
            Err(Error::NonFinite { .. })
        ));
        assert!(matches!(
            mse(&z, &t.columns(0, 2).into_owned()),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(cross_entropy(&DMatrix::<f64>::zeros(2, 1), &[0]).is_err());
    }

    #[test]
    fn finite_results_or_an_error() {
        // Finite logits 6e38 apart: the loss overflows f32.
        let z = DMatrix::from_column_slice(2, 1, &[3e38f32, -3e38]);
        let mut d = DMatrix::zeros(2, 1);
        for r in [
            softmax_cross_entropy(&z, &[1]),
            softmax_cross_entropy_to(&z, &[1], &mut d),
        ] {
            assert!(
                matches!(
                    r,
                    Err(Error::NonFinite {
                        op: "softmax_cross_entropy loss (overflow)",
                        ..
                    })
                ),
                "{r:?}"
            );
        }
        // Its gradient is finite: the other target is fine.
        assert!(softmax_cross_entropy(&z, &[0]).unwrap().is_finite());
        let y = DMatrix::from_element(1, 2, 3e38f32);
        let t = DMatrix::from_element(1, 2, -3e38f32);
        assert!(matches!(
            mse(&y, &t),
            Err(Error::NonFinite {
                op: "mse loss (overflow)",
                ..
            })
        ));
        let mut d = DMatrix::zeros(1, 2);
        assert!(matches!(
            mse_backward(&y, &t, &mut d),
            Err(Error::NonFinite {
                op: "mse gradient (overflow)",
                ..
            })
        ));
        assert!(matches!(
            bce_with_logits(&y, &t),
            Err(Error::NonFinite {
                op: "bce_with_logits loss (overflow)",
                ..
            })
        ));
    }
}
