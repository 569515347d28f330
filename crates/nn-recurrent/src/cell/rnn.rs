//! Vanilla RNN step: `h_t = act(a_t)`, `a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`, `act` = tanh or ReLU.
//!
//! Backward from `dh_t` (the gradient from the next step plus the output's, `dy_t`):
//! `da_t = dh_t ⊙ act'(a_t)`, with `act'` written through the output: `1 - h_t²` (tanh) or `[h_t > 0]` (ReLU).
//! `G = 1`; slices have length `H`.

use crate::Nonlinearity;
use nn_core::Float;

/// `h = act(pre)`.
#[inline]
pub(crate) fn forward<T: Float>(act: Nonlinearity, pre: &[T], h: &mut [T]) {
    match act {
        Nonlinearity::Tanh => {
            for (h, &a) in h.iter_mut().zip(pre) {
                *h = a.tanh();
            }
        }
        Nonlinearity::Relu => {
            for (h, &a) in h.iter_mut().zip(pre) {
                *h = if a > T::zero() { a } else { T::zero() };
            }
        }
    }
}

/// `d_pre = (dh + dy) ⊙ act'`, from the step's output `h`.
#[inline]
pub(crate) fn backward<T: Float>(act: Nonlinearity, h: &[T], dh: &[T], dy: &[T], d_pre: &mut [T]) {
    let n = h.len();
    let (dh, dy, d_pre) = (&dh[..n], &dy[..n], &mut d_pre[..n]);
    match act {
        Nonlinearity::Tanh => {
            for j in 0..n {
                d_pre[j] = (dh[j] + dy[j]) * (T::one() - h[j] * h[j]);
            }
        }
        Nonlinearity::Relu => {
            for j in 0..n {
                d_pre[j] = if h[j] > T::zero() {
                    dh[j] + dy[j]
                } else {
                    T::zero()
                };
            }
        }
    }
}
