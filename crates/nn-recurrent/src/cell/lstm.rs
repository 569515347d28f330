//! LSTM step (PyTorch's `nn.LSTM`), gate blocks `i, f, g, o` of `H` rows each (`G = 4`):
//!
//! ```text
//! i = σ(a_i)   f = σ(a_f)   g = tanh(a_g)   o = σ(a_o)     a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
//! c_t = f ⊙ c_{t-1} + i ⊙ g
//! h_t = o ⊙ tanh(c_t)
//! ```
//!
//! Backward, with `dh = dh_t + dy_t` and `dc` the gradient of `c_t` from step `t+1` (or of `c_n`):
//! `do = dh ⊙ tanh(c_t)`, `dc += dh ⊙ o ⊙ (1 - tanh²(c_t))`, `di = dc ⊙ g`, `dg = dc ⊙ i`,
//! `df = dc ⊙ c_{t-1}`, `dc_{t-1} = dc ⊙ f`; through the activations
//! `da_i = di·i(1-i)`, `da_f = df·f(1-f)`, `da_g = dg·(1-g²)`, `da_o = do·o(1-o)`.

use nn_core::Float;
use nn_core::activation::{sigmoid, tanh};

/// Adds `bias` (`4H`, `b_ih + b_hh`) to the pre-activations in `gates` (`4H`, `W_ih x + W_hh h`),
/// turns them into `i, f, g, o` in place and computes `c` and `h` (each `H`) from `c_prev`.
/// `tanh(c)` is not kept: backward computes it again from `c`, the same function of the same
/// value, so the same bits.
#[inline]
pub(crate) fn forward<T: Float>(
    gates: &mut [T],
    bias: &[T],
    c_prev: &[T],
    c: &mut [T],
    h: &mut [T],
) {
    let n = h.len();
    let (i, rest) = gates[..4 * n].split_at_mut(n);
    let (f, rest) = rest.split_at_mut(n);
    let (g, o) = rest.split_at_mut(n);
    let (bi, bf, bg, bo) = (
        &bias[..n],
        &bias[n..2 * n],
        &bias[2 * n..3 * n],
        &bias[3 * n..4 * n],
    );
    nn_core::kernels::simd::dispatch(
        #[inline(always)]
        || forward_lanes(i, f, g, o, [bi, bf, bg, bo], c_prev, c, h),
    );
}

/// The loop of [`forward`], over separate slices so LLVM knows they do not overlap and
/// vectorizes it.
#[inline(always)]
fn forward_lanes<T: Float>(
    i: &mut [T],
    f: &mut [T],
    g: &mut [T],
    o: &mut [T],
    [bi, bf, bg, bo]: [&[T]; 4],
    c_prev: &[T],
    c: &mut [T],
    h: &mut [T],
) {
    let n = h.len();
    let (i, f, g, o) = (&mut i[..n], &mut f[..n], &mut g[..n], &mut o[..n]);
    let (bi, bf, bg, bo) = (&bi[..n], &bf[..n], &bg[..n], &bo[..n]);
    let (c_prev, c) = (&c_prev[..n], &mut c[..n]);
    for j in 0..n {
        i[j] = sigmoid(i[j] + bi[j]);
        f[j] = sigmoid(f[j] + bf[j]);
        g[j] = tanh(g[j] + bg[j]);
        o[j] = sigmoid(o[j] + bo[j]);
        c[j] = f[j] * c_prev[j] + i[j] * g[j];
        h[j] = o[j] * tanh(c[j]);
    }
}

/// Turns `gates` (`4H`: the `i, f, g, o` that [`forward`] left) into the gate pre-activation
/// gradients `dG` **in place**, from `dh + dy` and `c` (`c_t`), and `dc` (the gradient of
/// `c_t`) into the gradient of `c_{t-1}`. In place, because nothing reads a step's gates after
/// its backward: the layer then needs no second `(4H, T*B)` buffer (memory, not speed: PERF.md).
#[inline]
pub(crate) fn backward<T: Float>(
    gates: &mut [T],
    c_prev: &[T],
    c: &[T],
    dh: &[T],
    dy: &[T],
    dc: &mut [T],
) {
    let n = dc.len();
    let (i, rest) = gates[..4 * n].split_at_mut(n);
    let (f, rest) = rest.split_at_mut(n);
    let (g, o) = rest.split_at_mut(n);
    nn_core::kernels::simd::dispatch(
        #[inline(always)]
        || backward_lanes([i, f, g, o], c_prev, c, dh, dy, dc),
    );
}

/// The loop of [`backward`], over separate slices (see [`forward_lanes`]): each lane reads its
/// four gates, then writes their gradients over them.
#[inline(always)]
fn backward_lanes<T: Float>(
    [i, f, g, o]: [&mut [T]; 4],
    c_prev: &[T],
    c: &[T],
    dh: &[T],
    dy: &[T],
    dc: &mut [T],
) {
    let n = dc.len();
    let (i, f, g, o) = (&mut i[..n], &mut f[..n], &mut g[..n], &mut o[..n]);
    let (c_prev, c, dh, dy) = (&c_prev[..n], &c[..n], &dh[..n], &dy[..n]);
    let one = T::one();
    for j in 0..n {
        let (ij, fj, gj, oj) = (i[j], f[j], g[j], o[j]);
        let tc = tanh(c[j]);
        let dh_j = dh[j] + dy[j];
        let dc_j = dc[j] + dh_j * oj * (one - tc * tc);
        i[j] = dc_j * gj * ij * (one - ij);
        f[j] = dc_j * c_prev[j] * fj * (one - fj);
        g[j] = dc_j * ij * (one - gj * gj);
        o[j] = dh_j * tc * oj * (one - oj);
        dc[j] = dc_j * fj;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_gates_by_hand() {
        // a = 0: i = f = o = 1/2, g = 0, so c = c_prev/2 and h = tanh(c)/2.
        let mut gates = [0.0; 4];
        let (mut c, mut h) = ([0.0], [0.0]);
        forward(&mut gates, &[0.0; 4], &[2.0], &mut c, &mut h);
        assert_eq!(gates, [0.5, 0.5, 0.0, 0.5]);
        assert_eq!((c[0], h[0]), (1.0, 0.5 * 1f64.tanh()));
        // Only c_n gets a gradient (dc = 1): di = dc·g·i(1-i) = 0, df = dc·c_prev·f(1-f) = 0.5,
        // dg = dc·i·(1-g²) = 0.5, do = 0, and dc_prev = dc·f = 0.5.
        // In place: the gates become their gradients.
        let mut dc = [1.0];
        backward(&mut gates, &[2.0], &c, &[0.0], &[0.0], &mut dc);
        assert_eq!(gates, [0.0, 0.5, 0.5, 0.0]);
        assert_eq!(dc[0], 0.5);
    }
}
