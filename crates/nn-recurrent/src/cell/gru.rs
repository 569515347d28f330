//! GRU step (PyTorch's `nn.GRU`), gate blocks `r, z, n` of `H` rows each (`G = 3`):
//!
//! ```text
//! r = σ(W_ir x + b_ir + W_hr h_{t-1} + b_hr)
//! z = σ(W_iz x + b_iz + W_hz h_{t-1} + b_hz)
//! n = tanh(W_in x + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
//! h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
//! ```
//!
//! The reset gate acts after the hidden product, so the input side `gx = W_ih x + b_ih (+ b_hr, b_hz)`
//! and the hidden side `gh = W_hh h_{t-1}` are kept apart; `ĝ_n = gh_n + b_hn` is stored for backward.
//!
//! Backward, with `dh = dh_t + dy_t`: `dn = dh(1-z)`, `dz = dh(h_{t-1} - n)`, `dh_{t-1} = dh·z + W_hhᵀ dgh`;
//! `da_n = dn(1-n²)` gives `dgx_n = da_n`, `dgh_n = da_n·r`, `dr = da_n·ĝ_n`;
//! `dgx_r = dgh_r = dr·r(1-r)`, `dgx_z = dgh_z = dz·z(1-z)`.
//!
//! The two sides share their `r` and `z` blocks, so backward writes one `4H` column
//! `[dgx_n; dg_r; dg_z; dgh_n]`: rows `0..3H` are the input side (its `n` block first) and rows
//! `H..4H` the hidden side `[r; z; n]`, in `W_hh`'s order, so the step product `W_hhᵀ dgh` reads
//! it in place.

use nn_core::Float;
use nn_core::activation::{sigmoid, tanh};

/// `gates` (`3H`) holds `W_ih x`; with `bias` (`3H`: `b_ir + b_hr`, `b_iz + b_hz`, `b_in`) it is
/// the input side `gx`, and becomes `r, z, n`; `hidden` (`3H`) holds `W_hh h_prev`; writes
/// `ĝ_n = W_hn h_prev + b_hn` into `hn` and `h` (each `H`).
#[inline]
pub(crate) fn forward<T: Float>(
    gates: &mut [T],
    bias: &[T],
    hidden: &[T],
    b_hn: &[T],
    hn: &mut [T],
    h_prev: &[T],
    h: &mut [T],
) {
    let n = h.len();
    let (r, rest) = gates[..3 * n].split_at_mut(n);
    let (z, nn) = rest.split_at_mut(n);
    let (hr, hz, whn) = (&hidden[..n], &hidden[n..2 * n], &hidden[2 * n..3 * n]);
    nn_core::kernels::simd::dispatch(
        #[inline(always)]
        || {
            forward_lanes(
                r,
                z,
                nn,
                [&bias[..n], &bias[n..2 * n], &bias[2 * n..3 * n]],
                [hr, hz, whn],
                b_hn,
                hn,
                h_prev,
                h,
            )
        },
    );
}

/// The loop of [`forward`], over separate slices so LLVM knows they do not overlap and
/// vectorizes it.
#[inline(always)]
fn forward_lanes<T: Float>(
    r: &mut [T],
    z: &mut [T],
    nn: &mut [T],
    [br, bz, bn]: [&[T]; 3],
    [hr, hz, whn]: [&[T]; 3],
    b_hn: &[T],
    hn: &mut [T],
    h_prev: &[T],
    h: &mut [T],
) {
    let n = h.len();
    let (r, z, nn, hn) = (&mut r[..n], &mut z[..n], &mut nn[..n], &mut hn[..n]);
    let (hr, hz, whn, b_hn, h_prev) = (&hr[..n], &hz[..n], &whn[..n], &b_hn[..n], &h_prev[..n]);
    let (br, bz, bn) = (&br[..n], &bz[..n], &bn[..n]);
    for j in 0..n {
        r[j] = sigmoid(r[j] + br[j] + hr[j]);
        z[j] = sigmoid(z[j] + bz[j] + hz[j]);
        hn[j] = whn[j] + b_hn[j];
        nn[j] = tanh(nn[j] + bn[j] + r[j] * hn[j]);
        h[j] = (T::one() - z[j]) * nn[j] + z[j] * h_prev[j];
    }
}

/// Turns `dg` (`4H`: `[_; r; z; n]`, the gates [`forward`] left in its rows `H..4H`) into
/// `[dgx_n; dg_r; dg_z; dgh_n]` (see the module docs) **in place**, from `dh + dy`, and sets `dh`
/// to the direct part of `dh_{t-1}`, `(dh + dy) ⊙ z` (the layer adds `W_hhᵀ dgh`). `hn` is the
/// forward's `ĝ_n` (`H`). In place, because nothing reads a step's gates after its backward.
#[inline]
pub(crate) fn backward<T: Float>(dg: &mut [T], hn: &[T], h_prev: &[T], dh: &mut [T], dy: &[T]) {
    let n = dh.len();
    let hn = &hn[..n];
    let (dxn, rest) = dg[..4 * n].split_at_mut(n);
    let (r, rest) = rest.split_at_mut(n);
    let (z, nn) = rest.split_at_mut(n);
    nn_core::kernels::simd::dispatch(
        #[inline(always)]
        || backward_lanes([r, z, nn], hn, h_prev, dh, dy, dxn),
    );
}

/// The loop of [`backward`], over separate slices (see [`forward_lanes`]): each lane reads its
/// three gates, then writes the gradients over them (`dgx_n` into `dxn`).
#[inline(always)]
fn backward_lanes<T: Float>(
    [r, z, nn]: [&mut [T]; 3],
    hn: &[T],
    h_prev: &[T],
    dh: &mut [T],
    dy: &[T],
    dxn: &mut [T],
) {
    let n = dh.len();
    let (r, z, nn, dxn) = (&mut r[..n], &mut z[..n], &mut nn[..n], &mut dxn[..n]);
    let (hn, h_prev, dy) = (&hn[..n], &h_prev[..n], &dy[..n]);
    let one = T::one();
    for j in 0..n {
        let (rj, zj, nj) = (r[j], z[j], nn[j]);
        let dh_j = dh[j] + dy[j];
        let da_n = dh_j * (one - zj) * (one - nj * nj);
        dxn[j] = da_n;
        r[j] = da_n * hn[j] * rj * (one - rj);
        z[j] = dh_j * (h_prev[j] - nj) * zj * (one - zj);
        nn[j] = da_n * rj;
        dh[j] = dh_j * zj;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bias_joins_the_input_side_before_the_reset_gate() {
        // W_ih x = 0 and bias (b_r, b_z, b_n) give what W_ih x = (b_r, b_z, b_n) does with no
        // bias: the bias belongs to the input side, outside `r ⊙ (W_hn h + b_hn)`.
        let bias = [0.3, -0.4, 0.8];
        let (mut g1, mut g2) = ([0.0; 3], bias);
        let hidden = [0.2, 0.1, -0.6];
        let (mut hn1, mut hn2, mut h1, mut h2) = ([0.0], [0.0], [0.0], [0.0]);
        forward(&mut g1, &bias, &hidden, &[0.5], &mut hn1, &[0.7], &mut h1);
        forward(
            &mut g2,
            &[0.0; 3],
            &hidden,
            &[0.5],
            &mut hn2,
            &[0.7],
            &mut h2,
        );
        assert_eq!((g1, hn1, h1), (g2, hn2, h2));
        assert_eq!(hn1[0], -0.6 + 0.5);
        let r = 1.0 / (1.0 + (-(0.3f64 + 0.2)).exp());
        assert!((g1[2] - (0.8 + r * (-0.6 + 0.5)).tanh()).abs() < 1e-15);
    }

    #[test]
    fn zero_gates_by_hand() {
        // gx = 0, W_hh h = 0, b_hn = 1: r = z = 1/2, ĝ_n = 1, n = tanh(1/2), h = n/2 + h_prev/2.
        let (mut gates, mut hn, mut h) = ([0.0; 3], [0.0], [0.0]);
        forward(
            &mut gates,
            &[0.0; 3],
            &[0.0; 3],
            &[1.0],
            &mut hn,
            &[4.0],
            &mut h,
        );
        let n = 0.5f64.tanh();
        assert_eq!(gates, [0.5, 0.5, n]);
        assert_eq!(hn[0], 1.0);
        assert_eq!(h[0], 0.5 * n + 2.0);
        // dh = 1: dz = h_prev - n, da_z = dz/4; da_n = (1/2)(1-n²); dgh_n = da_n/2; dr = da_n·1;
        // da_r = dr/4; the direct part of dh_prev is z = 1/2.
        // In place: the column `[_; r; z; n]` becomes `[dgx_n; dg_r; dg_z; dgh_n]`.
        let (mut dh, mut dg) = ([1.0], [9.0, gates[0], gates[1], gates[2]]);
        backward(&mut dg, &hn, &[4.0], &mut dh, &[0.0]);
        let da_n = 0.5 * (1.0 - n * n);
        // [dgx_n; dg_r; dg_z; dgh_n]
        assert_eq!(dg, [da_n, da_n * 0.25, (4.0 - n) * 0.25, da_n * 0.5]);
        assert_eq!(dh[0], 0.5);
    }
}
