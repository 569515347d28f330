//! Vanilla RNN step: `h_t = act(a_t)`, `a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`, `act` = tanh or ReLU.
//!
//! Backward from `dh_t` (the gradient from the next step plus the output's, `dy_t`):
//! `da_t = dh_t ⊙ act'(a_t)`, with `act'` written through the output: `1 - h_t²` (tanh) or `[h_t > 0]` (ReLU).
//! `G = 1`; slices have length `H`.

use crate::Nonlinearity;
use nn_core::Float;

/// `h = act(pre + bias)` (`pre = W_ih x + W_hh h_{t-1}`, `bias = b_ih + b_hh`).
#[inline]
pub(crate) fn forward<T: Float>(act: Nonlinearity, pre: &[T], bias: &[T], h: &mut [T]) {
    match act {
        Nonlinearity::Tanh => nn_core::kernels::simd::dispatch(
            #[inline(always)]
            || {
                for ((h, &a), &b) in h.iter_mut().zip(pre).zip(bias) {
                    *h = nn_core::activation::tanh(a + b);
                }
            },
        ),
        Nonlinearity::Relu => {
            for ((h, &a), &b) in h.iter_mut().zip(pre).zip(bias) {
                let a = a + b;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_and_relu_by_hand() {
        let mut h = [0.0; 3];
        forward(Nonlinearity::Tanh, &[0.0, 0.5, -1.0], &[0.0; 3], &mut h);
        assert_eq!(h, [0.0, 0.5f64.tanh(), (-1.0f64).tanh()]);
        forward(Nonlinearity::Relu, &[0.0, 0.5, -1.0], &[0.0; 3], &mut h);
        assert_eq!(h, [0.0, 0.5, 0.0]);
        // ReLU: the gradient passes where h > 0; dh + dy = 1 + 2 = 3.
        let mut d = [9.0; 3];
        backward(Nonlinearity::Relu, &h, &[1.0; 3], &[2.0; 3], &mut d);
        assert_eq!(d, [0.0, 3.0, 0.0]);
        // tanh: 3 · (1 - 0.5²) = 2.25 at h = 0.5.
        backward(Nonlinearity::Tanh, &[0.5], &[1.0], &[2.0], &mut d);
        assert_eq!(d[0], 2.25);
    }
}
