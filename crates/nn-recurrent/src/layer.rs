//! The stacked, optionally bidirectional recurrent layer: forward over a sequence batch and BPTT.
//!
//! Shapes (key in [`crate::config`]): input `X` `(I, T*B)`, column `t*B + b` = step `t` of
//! sequence `b`; output `Y` `(D*H, T*B)`, rows `0..H` the forward direction and `H..2H` the
//! reverse one; states `(H, L*D*B)`, column `(l*D + d)*B + b`. Layer `l > 0` reads layer `l-1`'s
//! output, so its input size is `D*H`.
//!
//! Forward, per layer and direction:
//! 1. `G_x = W_ih · X`: one product over all `T*B` columns into the gate buffer, except with a
//!    batch of at least 24 and a `W_ih` of at most 2^18 values, whose steps compute it
//!    ([`input_in_loop`]: the gate buffer is then written once per step, not filled before the
//!    loop and read back at every step).
//! 2. For each step (in reverse order for `d = 1`): `G_t += W_hh · h_{t-1}` (one product,
//!    [`step_product`]; the GRU's into a scratch, since its `n` gate keeps `W_hn h` apart), or
//!    when the steps compute the input part, `G_t = W_ih · x_t + W_hh · h_{t-1}` (RNN, LSTM: one
//!    product of two packed weights, [`packed_matmul_pair`], each gate's sum running on from
//!    `W_ih x_t` into `W_hh h_{t-1}`; GRU: `W_ih · x_t` as a product of its own); then the cell
//!    adds the bias `b_ih + b_hh` ([`bias_column`]) and its elementwise math writes `h_t` into
//!    the output.
//!
//! Backward, per layer (top first) and direction:
//! 1. The time loop (forward order reversed) only computes `dG_t` from `dh_t` (the upstream `dY`
//!    column plus what step `t+1` sent back) and `dh_{t-1} = W_hhᵀ · dG_t` (one product per step).
//! 2. Then once over the whole sequence: `dW_ih += dG · Xᵀ`, `dW_hh += dG · H_prevᵀ` (`H_prev` is
//!    the hidden sequence shifted by one step, starting at `h0`, read from the output without a
//!    copy; both through [`add_a_bt`], which reads `dG` in place), `db += Σ_columns dG` (summed
//!    by `dW_ih`'s pass over `dG`, [`add_a_bt_row_sums`]), and `dX = W_ihᵀ · dG`, skipped when
//!    no input gradient is wanted.
//!
//! Nothing is allocated inside the time loops; all buffers live in the [`RecurrentCache`].
//!
//! Threads: when a step has enough work ([`split_point`]: `B ≥ 8`, `G·H·H·B` ≥ 2^17
//! multiply-adds, and not `MATMUL_NUM_THREADS=1`), each time loop runs sequences `0..B/2` on the
//! calling thread and `B/2..B` on the helper thread of [`nn_core::kernels::pool`]. The
//! sequences are independent, so the halves do not meet at each step, and every column
//! is computed by the same operations: results are bit-identical to the serial loop. The side
//! that finishes first takes over half of the other side's remaining sequences once
//! ([`crate::handoff`]), so a core slowed by the machine costs less waiting.

use crate::cache::{DirectionCache, LayerCache, Saved};
use crate::cell::{fold_bias, gru, lstm, rnn};
use crate::handoff::{Handoff, Poll};
use crate::weights::DirectionWeights;
use crate::{CellKind, RecurrentCache, RecurrentConfig, RecurrentState};
use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, Dyn, U1};
use nn_core::kernels::packed::{PackedMatrix, packed_matmul, packed_matmul_pair};
use nn_core::kernels::row_sums::add_row_sums;
use nn_core::kernels::wgrad::{add_a_bt, add_a_bt_row_sums};
use nn_core::{Accum, Error, Float, Result, Shape, Trans, check_finite, check_shape, matmul};

/// A stacked, optionally bidirectional recurrent layer (PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU`).
///
/// With input `x_t` and, per layer and direction, `h_{t-1}` (`c_{t-1}`) the state of the
/// previous step in that direction's order (step `t+1` for the reverse direction):
/// - RNN: `h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`, `act` = tanh or ReLU;
/// - LSTM: `[i, f, g, o] = [σ, σ, tanh, σ](W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`,
///   `c_t = f ⊙ c_{t-1} + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`;
/// - GRU: `[r, z] = σ(W_i[rz] x_t + b_i[rz] + W_h[rz] h_{t-1} + b_h[rz])`,
///   `n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))`, `h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}`.
///
/// Shapes: `x` `(I, T*B)` (column `t*B + b`), output `(D*H, T*B)` (forward direction in rows
/// `0..H`, reverse in `H..2H`), states `h`, `c` `(H, L*D*B)` (column `(l*D + d)*B + b`),
/// `weight_ih_l{k}` `(G*H, I or D*H)`, `weight_hh_l{k}` `(G*H, H)`, biases `[G*H]`.
///
/// ```
/// use nn_core::{Module, Rng};
/// use nn_recurrent::{CellKind, RecurrentCache, RecurrentConfig};
/// use nalgebra::DMatrix;
///
/// let (input, hidden, steps, batch) = (3, 4, 5, 2);
/// for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn(nn_recurrent::Nonlinearity::Tanh)] {
///     let config = RecurrentConfig::new(cell, input, hidden).with_num_layers(2).with_bidirectional(true);
///     let mut layer = config.init::<f64>(&mut Rng::seed_from(0)).unwrap();
///     let x = DMatrix::from_fn(input, steps * batch, |i, j| ((i + 2 * j) as f64).sin());
///     let mut cache = RecurrentCache::new();
///     layer.forward(&x, batch, None, &mut cache).unwrap();
///     assert_eq!(cache.output().shape(), (2 * hidden, steps * batch));
///     assert_eq!(cache.final_state().h.shape(), (hidden, 2 * 2 * batch));
///
///     // L = sum of the outputs: dL/dY is all ones.
///     let d_output = DMatrix::from_element(2 * hidden, steps * batch, 1.0);
///     let mut d_x = DMatrix::zeros(input, steps * batch);
///     layer.zero_grad();
///     layer.backward(&x, &mut cache, &d_output, None, Some(&mut d_x)).unwrap();
///     assert!(d_x.iter().all(|v| v.is_finite()));
///     assert_eq!(cache.d_initial().h.shape(), (hidden, 2 * 2 * batch));
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Recurrent<T: Float> {
    config: RecurrentConfig,
    /// Layer `l`, direction `d` at `l*D + d`.
    directions: Vec<DirectionWeights<T>>,
}

/// The sizes one layer-direction pass works with.
#[derive(Clone, Copy, Debug)]
struct Dims {
    hidden: usize,
    steps: usize,
    batch: usize,
    /// 0 forward, 1 reverse.
    dir: usize,
    /// `l*D + d`: the block of columns of this layer-direction in a state.
    slot: usize,
}

impl Dims {
    /// The step processed `s`-th (forward order for `dir = 0`, reversed for `dir = 1`).
    fn step(&self, s: usize) -> usize {
        if self.dir == 0 { s } else { self.steps - 1 - s }
    }

    /// The step whose state feeds step `t`, or `None` when it is the initial state.
    fn prev(&self, t: usize) -> Option<usize> {
        if self.dir == 0 {
            t.checked_sub(1)
        } else {
            (t + 1 < self.steps).then_some(t + 1)
        }
    }

    /// The step whose state is the final one.
    fn last(&self) -> usize {
        self.step(self.steps - 1)
    }
}

/// The gate products of one forward step, for the forward's time loop and [`Recurrent::step`]
/// alike, so that both compute the same sums. `g` is the step's `G·H` gate rows, `gru_hidden`
/// the GRU's scratch for `W_hh h_{t-1}` (`None` for the other cells). With `input` (`W_ih`
/// packed and `x_t`: the step computes the input part, [`input_in_loop`]) an RNN or LSTM writes
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
/// into every column of the gate buffer, then the product added): that saved writing the
/// `(G·H, T·B)` gate buffer once and reading it back inside the product, about 2.5% of a
/// `gru-m` step in paired runs (PERF.md). The GRU's sums are the same ones when the product's
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

/// The `(H*B)` values of slot `slot` of a state matrix (`(H, L*D*B)`), or `&[]` for no matrix.
fn slot_slice<T: Float>(m: Option<&DMatrix<T>>, slot: usize, dims: Dims) -> &[T] {
    let n = dims.hidden * dims.batch;
    m.map_or(&[][..], |m| &m.as_slice()[slot * n..(slot + 1) * n])
}

/// Where each side's gradient lies in the gate gradients (`d_gates`) of a layer-direction with
/// `h` units: the first of the hidden side's `G·H` rows (in `W_hh`'s row order), and the input
/// side as blocks `(first row of W_ih, first row of d_gates, rows)` (a block of no rows is to be
/// skipped). Both sides are the same `G·H` rows, but in a GRU, whose column is
/// `[dgx_n; dg_r; dg_z; dgh_n]` (see `cell::gru`): its input side is the `r, z` rows, then the
/// `n` block first in `d_gates`, which goes to `W_ih`'s last rows. The first value is also the
/// first row of the forward's gates in that buffer (a GRU's `H`, else 0).
pub(crate) fn gate_grad_rows(cell: CellKind, h: usize) -> (usize, [(usize, usize, usize); 2]) {
    match cell {
        CellKind::Gru => (h, [(0, h, 2 * h), (2 * h, 0, h)]),
        _ => (0, [(0, 0, cell.gate_count() * h), (0, 0, 0)]),
    }
}

/// Per-step multiply-adds of the step product (`G·H·H·B`) from which a time loop splits its
/// batch between the calling thread and the pool's helper thread (see [`split_point`]).
///
/// Measured with the pool's spinning helper (whole training steps, `T = 64`, f32, two cores,
/// three alternating runs of the bench's training step on these sizes): splitting at 2^17 and
/// 2^18 was faster for LSTMs with `H = 32, B = 32` (median 2.2–3.0 → 1.6–2.4 ms) and `H = 64, B = 16`
/// (3.4–4.0 → 1.9–3.1 ms), about even for a GRU with `H = 64, B = 16` and an RNN with
/// `H = 128, B = 16`, and slower for an LSTM with `H = 128, B = 4`, where each thread gets two
/// columns (hence [`SPLIT_MIN_BATCH`]). With a thread spawned per pass (before the pool) the
/// split had needed 2^19. Under Miri 1024 (see `nn_core::kernels::thresholds::SPLIT_MIN_VALUES`).
const SPLIT_MIN_MACS: usize = if cfg!(miri) { 1 << 10 } else { 1 << 17 };

/// The smallest batch whose time loops are split: each half then has at least four columns
/// for the micro-kernel's tiles.
const SPLIT_MIN_BATCH: usize = 8;

#[cfg(test)]
thread_local! {
    /// Tests: `Some(true)` forces the split time loops (for `B ≥ 2`), `Some(false)` the serial ones.
    static FORCE_SPLIT: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Tests: side `k - 1` of every split time loop sleeps after each step while this is `k > 0`,
/// so that the other side finishes first and takes over part of its work.
#[cfg(test)]
static SLOW_SIDE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(test)]
fn slow_down(side: usize) {
    if SLOW_SIDE.load(std::sync::atomic::Ordering::Relaxed) == side + 1 {
        // Under Miri a step takes about a quarter of a second to interpret, so the slow side
        // must sleep that long to be slower.
        let us = if cfg!(miri) { 250_000 } else { 300 };
        std::thread::sleep(std::time::Duration::from_micros(us));
    }
}

/// Tests: forces (`Some`) or stops forcing (`None`) the split time loops on this thread.
#[cfg(test)]
pub(crate) fn force_split(on: Option<bool>) {
    FORCE_SPLIT.with(|f| f.set(on));
}

/// Where a layer-direction's time loops split the batch: `Some(mid)` runs sequences `mid..B` on
/// a second thread and `0..mid` on the calling one; `None` runs them all on the calling thread.
///
/// The sequences of a batch are independent, so the halves need no synchronization per step (one
/// hand-off at most, [`crate::handoff`]), and each column is computed by exactly the same
/// operations either way, whichever thread runs it: the results are
/// bit-identical. Splitting pays only when a step has enough work to outweigh handing half of it
/// to the helper thread, so small layers stay serial.
fn split_point(cell: CellKind, hidden: usize, batch: usize) -> Option<usize> {
    if batch < 2 {
        return None;
    }
    #[cfg(test)]
    if let Some(on) = FORCE_SPLIT.with(std::cell::Cell::get) {
        return on.then_some(batch / 2);
    }
    let macs = (cell.gate_count() * hidden)
        .saturating_mul(hidden)
        .saturating_mul(batch);
    (macs >= SPLIT_MIN_MACS
        && batch >= SPLIT_MIN_BATCH
        && nn_core::kernels::pool::threads_allowed())
    .then_some(batch / 2)
}

/// A column-major buffer whose columns are written by the threads of a split time loop, each
/// only its own columns (those of its sequences). Holds the buffer's unique borrow.
#[derive(Debug)]
struct SharedCols<'a, T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the pointer comes from a unique borrow held for `'a`; every access goes through the
// unsafe `cols`/`cols_mut`, whose callers guarantee that no column is written by one thread
// while another reads or writes it.
unsafe impl<T: Send> Send for SharedCols<'_, T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send + Sync> Sync for SharedCols<'_, T> {}

impl<'a, T> SharedCols<'a, T> {
    fn new(m: &'a mut DMatrix<T>) -> Self {
        SharedCols {
            ptr: m.as_mut_ptr(),
            rows: m.nrows(),
            cols: m.ncols(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// A `rows`-row column-major buffer held as a slice (its length a multiple of `rows`; an
    /// empty slice for a buffer that does not exist, such as `dc` without a cell state).
    fn from_slice(s: &'a mut [T], rows: usize) -> Self {
        SharedCols {
            ptr: s.as_mut_ptr(),
            rows,
            cols: s.len().checked_div(rows).unwrap_or(0),
            _borrow: std::marker::PhantomData,
        }
    }

    /// Columns `c..c+n`, read-only.
    ///
    /// # Safety
    /// No thread writes these columns while the slice lives.
    unsafe fn cols(&self, c: usize, n: usize) -> &[T] {
        assert!(c + n <= self.cols, "SharedCols: columns out of range");
        // SAFETY: in bounds (just checked; the buffer holds `rows * cols` values); no
        // concurrent writer (from the caller).
        unsafe { std::slice::from_raw_parts(self.ptr.add(c * self.rows), n * self.rows) }
    }

    /// Columns `c..c+n`, mutable.
    ///
    /// # Safety
    /// Nothing else (thread or slice) accesses these columns while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn cols_mut(&self, c: usize, n: usize) -> &mut [T] {
        assert!(c + n <= self.cols, "SharedCols: columns out of range");
        // SAFETY: in bounds (just checked); exclusive (from the caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(c * self.rows), n * self.rows) }
    }
}

/// What the forward time loop of one layer-direction works on, shared by the threads of a split
/// loop: the buffers it writes column by column, and read-only inputs.
#[derive(Debug)]
struct ForwardLoop<'a, T: Float> {
    cell: CellKind,
    dims: Dims,
    gh: usize,
    rows_out: usize,
    r0: usize,
    out: SharedCols<'a, T>,
    gates: SharedCols<'a, T>,
    /// The first row of the forward's gates in each column of `gates` (a GRU's `H`, else 0; see
    /// [`gate_grad_rows`] and `DirectionCache::gates`).
    gate_row: usize,
    /// GRU only `(3H, B)`: the step product `W_hh h_{t-1}`, column `b` for sequence `b`.
    hidden_gates: SharedCols<'a, T>,
    /// GRU only `(H, T*B)`: `ĝ_n = W_hn h_{t-1} + b_hn`, kept for backward.
    hidden_n: SharedCols<'a, T>,
    cells: SharedCols<'a, T>,
    /// This slot's initial `h` (and `c`, or empty), `(H, B)`.
    h0: &'a [T],
    /// Whether `h0` is all zeros, so that the first step skips `W_hh h0` ([`step_products`]).
    h0_zero: bool,
    c0: &'a [T],
    b_hn: &'a [T],
    bias: &'a [T],
    packed: &'a PackedMatrix<T>,
    /// The layer's input `X` `(I, T*B)` and `W_ih` packed, for the steps' `W_ih x_t` when they
    /// compute it (else unused: the gate buffer already holds `W_ih X`).
    x: DMatrixView<'a, T>,
    packed_ih: &'a PackedMatrix<T>,
    /// Whether the steps compute `W_ih x_t` ([`input_in_loop`]).
    input_in_loop: bool,
}

/// Smallest batch for which a layer computes `W_ih x_t` inside the forward time loop (an RNN or
/// LSTM in the step product, [`packed_matmul_pair`]; a GRU, whose `n` gate keeps `W_hn h` apart,
/// as a second product of the step) rather than as one product over the whole sequence before
/// it (see [`input_in_loop`]).
///
/// In the loop each step streams `W_ih` once more for only `B` columns (`B/2` per thread when
/// the loop is split), while the whole-sequence product reads it once for all `T·B` columns; what
/// the loop saves is writing the `(G·H, T·B)` gate buffer and reading it back at every step.
/// Measured on `I = 128`, `H = 256`, `T = 64` LSTM steps (one process alternating the two ways,
/// 20–30 rounds, new/old ratio of the median steps, PERF.md): `B = 1` 1.055, `2` 1.048, `4`
/// 1.090, `8` 1.018, `16` 0.996, `24` 0.984, `32` 0.977 (median of eight runs). The threshold is
/// on the batch alone, not on the columns per thread, so that the thread count never changes
/// which sums are computed.
const INPUT_IN_LOOP_MIN_BATCH: usize = 24;

/// Largest `W_ih` (`G·H x I` values) that the time loop streams at every step: `lstm-m`'s
/// (`1024 x 128`, 512 KiB of `f32`) gained about 2% as whole steps. `lstm-l`'s (`2048 x 512`,
/// 4 MiB) was not shown to gain: about 5% slower in two paired runs of two builds, 4% faster in
/// one in-process run, where an A/A run of one build showed 3% of noise (PERF.md); so a weight
/// that large keeps the whole-sequence product.
const INPUT_IN_LOOP_MAX_VALUES: usize = 1 << 18;

/// Whether a layer-direction's forward computes `W_ih x_t` in the time loop (`B ≥`
/// [`INPUT_IN_LOOP_MIN_BATCH`] and a `W_ih` of at most [`INPUT_IN_LOOP_MAX_VALUES`] values);
/// else `W_ih X` is one product before it. Shapes alone decide, so results never depend on the
/// threads.
pub(crate) fn input_in_loop(batch: usize, w_ih_values: usize) -> bool {
    batch >= INPUT_IN_LOOP_MIN_BATCH && w_ih_values <= INPUT_IN_LOOP_MAX_VALUES
}

/// The forward time loop for the sequences `bs`, from step index `first` (in the direction's
/// order) to the end. With `handoff` (the split loops), it may give the second half of its
/// sequences to the other side at a step boundary ([`Handoff::poll`]) and go on with the rest.
///
/// # Safety
/// No other thread accesses, during the call, the columns `t*B + b` (`b` in `bs`, any `t`) of
/// `out`, `gates`, `hidden_n`, `cells`, nor the columns `b` of `hidden_gates`,
/// except those of sequences given away, from the step they were given on (and the other side
/// reads the given sequences' columns of earlier steps only after the hand-off); those are the
/// only columns it touches. Columns of steps before `first` of `bs` hold that sequence's earlier
/// steps.
unsafe fn forward_steps<T: Float>(
    lp: &ForwardLoop<'_, T>,
    bs: std::ops::Range<usize>,
    first: usize,
    handoff: Poll<'_>,
) {
    let ForwardLoop {
        cell,
        dims,
        gh,
        rows_out,
        r0,
        ..
    } = *lp;
    let (h, steps, batch) = (dims.hidden, dims.steps, dims.batch);
    let mut bs = bs;
    for s in first..steps {
        let (b0, nb) = (bs.start, bs.len());
        let t = dims.step(s);
        let prev = dims.prev(t);
        // SAFETY (every `cols`/`cols_mut` below): the columns are `t*B + b` or `tp*B + b` (or
        // `b`, of the GRU's step scratch `hidden_gates`) with `b` in `bs`, this call's own (from
        // the caller); `tp != t`, so a shared slice of step `tp` never overlaps a mutable one of
        // step `t`, and each mutable slice is dropped before another one of the same columns is
        // made.
        {
            let h_prev = match prev {
                Some(tp) => {
                    let block = unsafe { lp.out.cols(tp * batch + b0, nb) };
                    Some(DMatrixView::from_slice_with_strides_generic(
                        &block[r0..],
                        Dyn(h),
                        Dyn(nb),
                        U1,
                        Dyn(rows_out),
                    ))
                }
                None if lp.h0_zero => None,
                None => Some(DMatrixView::from_slice(&lp.h0[b0 * h..][..nb * h], h, nb)),
            };
            let x_t = lp.x.columns(t * batch + b0, nb);
            // The step's gate rows (a GRU's from `gate_row`, columns `4H` apart) and the GRU's
            // scratch for `W_hh h_{t-1}`.
            let rows = lp.gates.rows;
            let cols = unsafe { lp.gates.cols_mut(t * batch + b0, nb) };
            let mut g_t = DMatrixViewMut::from_slice_with_strides_generic(
                &mut cols[lp.gate_row..],
                Dyn(gh),
                Dyn(nb),
                U1,
                Dyn(rows),
            );
            let mut hidden = (cell == CellKind::Gru).then(|| {
                DMatrixViewMut::from_slice(unsafe { lp.hidden_gates.cols_mut(b0, nb) }, gh, nb)
            });
            let input = lp.input_in_loop.then_some((lp.packed_ih, &x_t));
            step_products(&mut g_t, hidden.as_mut(), lp.packed, h_prev.as_ref(), input);
        }
        for b in bs.clone() {
            let col = t * batch + b;
            let h_prev = match prev {
                Some(tp) => unsafe { &lp.out.cols(tp * batch + b, 1)[r0..r0 + h] },
                None => &lp.h0[b * h..][..h],
            };
            let h_new = unsafe { &mut lp.out.cols_mut(col, 1)[r0..r0 + h] };
            let g = unsafe { lp.gates.cols_mut(col, 1) };
            match cell {
                CellKind::Rnn(act) => rnn::forward(act, g, lp.bias, h_new),
                CellKind::Lstm => {
                    let c_prev = match prev {
                        Some(tp) => unsafe { lp.cells.cols(tp * batch + b, 1) },
                        None => &lp.c0[b * h..][..h],
                    };
                    let c_new = unsafe { lp.cells.cols_mut(col, 1) };
                    lstm::forward(g, lp.bias, c_prev, c_new, h_new);
                }
                CellKind::Gru => {
                    let hg = unsafe { lp.hidden_gates.cols(b, 1) };
                    let hn = unsafe { lp.hidden_n.cols_mut(col, 1) };
                    let g = &mut g[lp.gate_row..];
                    gru::forward(g, lp.bias, hg, lp.b_hn, hn, h_prev, h_new);
                }
            }
        }
        if let Some((hand, side)) = handoff {
            #[cfg(test)]
            slow_down(side);
            bs = hand.poll(side, bs, s, steps);
        }
    }
}

/// What the backward time loop of one layer-direction works on, shared by the threads of a
/// split loop: the forward's results (read-only) and the gate gradients it writes.
#[derive(Debug)]
struct BackwardLoop<'a, T: Float> {
    cell: CellKind,
    dims: Dims,
    gh: usize,
    rows_out: usize,
    r0: usize,
    h0: &'a [T],
    c0: &'a [T],
    out: &'a [T],
    dy: &'a [T],
    hidden_n: &'a [T],
    cells: &'a [T],
    /// Rows per column of the gate buffer (`G·H`, a GRU's `4H`), and the first of its hidden
    /// side ([`gate_grad_rows`]).
    d_rows: usize,
    hidden_row: usize,
    /// The forward's gates, which the cells turn into the gate gradients `dG` step by step.
    d_gates: SharedCols<'a, T>,
    /// The running `dh` (and `dc`, empty without a cell state) of every sequence, `(H, B)`: this
    /// slot's columns of the state gradient, turned from `∂L/∂(h_n, c_n)` into `∂L/∂(h0, c0)`.
    dh: SharedCols<'a, T>,
    dc: SharedCols<'a, T>,
    packed: &'a PackedMatrix<T>,
}

/// The backward time loop for the sequences `bs`, from step index `first` (of the backward's
/// order) to the end, carrying their running `dh`, `dc` (columns `b` of `lp.dh`, `lp.dc`). With
/// `handoff`, it may give the second half of its sequences to the other side at a step boundary
/// ([`Handoff::poll`]).
///
/// # Safety
/// No other thread accesses, during the call, the columns `t*B + b` (`b` in `bs`, any `t`) of
/// `d_gates` nor the columns `b` of `dh` and `dc`, except those of sequences given away, from
/// the step they were given on; those are the only columns of theirs it touches.
unsafe fn backward_steps<T: Float>(
    lp: &BackwardLoop<'_, T>,
    bs: std::ops::Range<usize>,
    first: usize,
    handoff: Poll<'_>,
) {
    let BackwardLoop {
        cell,
        dims,
        gh,
        rows_out,
        r0,
        ..
    } = *lp;
    let (h, steps, batch) = (dims.hidden, dims.steps, dims.batch);
    let mut bs = bs;
    for s in first..steps {
        let (b0, nb) = (bs.start, bs.len());
        // Steps in the reverse of the forward's order.
        let t = dims.step(steps - 1 - s);
        let prev = dims.prev(t);
        // SAFETY (every `cols`/`cols_mut` below): the columns are `t*B + b` (or `b` of `dh`,
        // `dc`) with `b` in `bs`, this call's own (from the caller), and each slice is dropped
        // before another one of the same columns is made.
        for b in bs.clone() {
            let col = t * batch + b;
            let dh = unsafe { lp.dh.cols_mut(b, 1) };
            let dy_col = &lp.dy[col * rows_out + r0..][..h];
            let h_prev = match prev {
                Some(tp) => &lp.out[(tp * batch + b) * rows_out + r0..][..h],
                None => &lp.h0[b * h..][..h],
            };
            let dg = unsafe { lp.d_gates.cols_mut(col, 1) };
            match cell {
                CellKind::Rnn(act) => {
                    let h_t = &lp.out[col * rows_out + r0..][..h];
                    rnn::backward(act, h_t, dh, dy_col, dg);
                }
                CellKind::Lstm => {
                    let c_prev = match prev {
                        Some(tp) => &lp.cells[(tp * batch + b) * h..][..h],
                        None => &lp.c0[b * h..][..h],
                    };
                    // `dg` holds this step's gates until the cell turns them into `dG_t`.
                    lstm::backward(dg, c_prev, &lp.cells[col * h..][..h], dh, dy_col, unsafe {
                        lp.dc.cols_mut(b, 1)
                    });
                }
                CellKind::Gru => {
                    gru::backward(dg, &lp.hidden_n[col * h..][..h], h_prev, dh, dy_col)
                }
            }
        }
        // dh_{t-1} = W_hhᵀ dG_t (the GRU adds it to the direct part `dh ⊙ z`).
        let accum = match cell {
            CellKind::Gru => Accum::Add,
            _ => Accum::Replace,
        };
        let d_g = unsafe { lp.d_gates.cols(t * batch + b0, nb) };
        step_product(
            &mut DMatrixViewMut::from_slice(unsafe { lp.dh.cols_mut(b0, nb) }, h, nb),
            accum,
            lp.packed,
            &DMatrixView::from_slice_with_strides_generic(
                &d_g[lp.hidden_row..],
                Dyn(gh),
                Dyn(nb),
                U1,
                Dyn(lp.d_rows),
            ),
        );
        if let Some((hand, side)) = handoff {
            #[cfg(test)]
            slow_down(side);
            bs = hand.poll(side, bs, s, steps);
        }
    }
}

impl<T: Float> Recurrent<T> {
    pub(crate) fn from_parts(
        config: RecurrentConfig,
        directions: Vec<DirectionWeights<T>>,
    ) -> Self {
        Recurrent { config, directions }
    }

    pub(crate) fn directions(&self) -> &[DirectionWeights<T>] {
        &self.directions
    }

    pub(crate) fn directions_mut(&mut self) -> &mut [DirectionWeights<T>] {
        &mut self.directions
    }

    /// The settings it was built with.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// `D * H`, the output features.
    pub fn output_size(&self) -> usize {
        self.config.num_directions() * self.config.hidden_size
    }

    /// The tensors of layer `layer`, direction `direction` (0 forward, 1 reverse), if they exist.
    pub fn weights(&self, layer: usize, direction: usize) -> Option<&DirectionWeights<T>> {
        let d = self.config.num_directions();
        (layer < self.config.num_layers && direction < d)
            .then(|| &self.directions[layer * d + direction])
    }

    /// Mutable counterpart of [`Recurrent::weights`].
    pub fn weights_mut(
        &mut self,
        layer: usize,
        direction: usize,
    ) -> Option<&mut DirectionWeights<T>> {
        let d = self.config.num_directions();
        (layer < self.config.num_layers && direction < d)
            .then(|| &mut self.directions[layer * d + direction])
    }

    /// A zero state for batch `B`: `h` (and `c` for the LSTM) `(H, L*D*B)`.
    ///
    /// # Panics
    /// When the state cannot be allocated (a batch no machine holds); [`try_zero_state`]
    /// returns an error instead.
    ///
    /// [`try_zero_state`]: Self::try_zero_state
    pub fn zero_state(&self, batch: usize) -> RecurrentState<T> {
        match self.try_zero_state(batch) {
            Ok(state) => state,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`zero_state`](Self::zero_state), or [`Error::TooLarge`](nn_core::Error::TooLarge) when
    /// `L*D*B` columns cannot be allocated.
    pub fn try_zero_state(&self, batch: usize) -> Result<RecurrentState<T>> {
        let c = &self.config;
        RecurrentState::try_zeros(
            c.hidden_size,
            c.num_layers * c.num_directions(),
            batch,
            c.cell.has_cell_state(),
        )
    }

    /// Checks a sequence batch and returns `T`.
    fn check_sequence(&self, op: &'static str, x: &DMatrix<T>, batch: usize) -> Result<usize> {
        let input = self.config.input_size;
        if x.nrows() != input {
            return Err(Error::ShapeMismatch {
                op,
                expected: Shape(input, x.ncols()),
                got: Shape::from(x),
            });
        }
        if batch == 0 {
            return Err(Error::Empty { op, what: "batch" });
        }
        if x.ncols() == 0 {
            return Err(Error::Empty { op, what: "steps" });
        }
        if !x.ncols().is_multiple_of(batch) {
            return Err(Error::LengthMismatch {
                op: "Recurrent::forward input columns (T*B, a multiple of the batch)",
                expected: x.ncols().next_multiple_of(batch),
                got: x.ncols(),
            });
        }
        check_finite(op, x)?;
        Ok(x.ncols() / batch)
    }

    /// Checks a state for batch `batch`: `h` `(H, L*D*B)`, `c` the same for the LSTM (where
    /// `None` means zeros) and absent for the other cells; finite when `finite`.
    fn check_state(
        &self,
        op: &'static str,
        s: &RecurrentState<T>,
        batch: usize,
        slots: usize,
        finite: bool,
    ) -> Result<()> {
        let expected = Shape(self.config.hidden_size, slots * batch);
        check_shape(op, &s.h, expected)?;
        if finite {
            check_finite(op, &s.h)?;
        }
        match &s.c {
            Some(c) if self.config.cell.has_cell_state() => {
                check_shape(op, c, expected)?;
                if finite {
                    check_finite(op, c)?;
                }
                Ok(())
            }
            Some(_) => Err(Error::InvalidConfig(format!(
                "{op}: only an LSTM has a cell state `c`, this layer is {:?}",
                self.config.cell
            ))),
            None => Ok(()),
        }
    }

    /// Checks that every parameter still has its shape (they are reachable mutably through
    /// [`nn_core::Module::visit_mut`] and [`Recurrent::weights_mut`]).
    pub(crate) fn check_weights(&self, op: &'static str) -> Result<()> {
        let (cell, h, d) = (
            self.config.cell,
            self.config.hidden_size,
            self.config.num_directions(),
        );
        let gh = cell.gate_count() * h;
        for (k, w) in self.directions.iter().enumerate() {
            let input = if k < d { self.config.input_size } else { d * h };
            check_shape(op, &w.weight_ih.value, Shape(gh, input))?;
            check_shape(op, &w.weight_hh.value, Shape(gh, h))?;
            check_shape(op, &w.bias_ih.value, Shape(gh, 1))?;
            check_shape(op, &w.bias_hh.value, Shape(gh, 1))?;
            for p in [&w.weight_ih, &w.weight_hh, &w.bias_ih, &w.bias_hh] {
                check_shape(op, &p.grad, Shape::from(&p.value))?;
            }
        }
        Ok(())
    }

    fn slots(&self) -> usize {
        self.config.num_layers * self.config.num_directions()
    }

    /// Runs the whole sequence batch `x` `(I, T*B)` from `initial` (zeros when `None`);
    /// results in `cache.output()` and `cache.final_state()`.
    ///
    /// `batch` is `B`; `T = x.ncols() / B`. `initial` is `(H, L*D*B)` (an LSTM's `c: None` means
    /// zeros). Errors: wrong input rows, columns not a multiple of `B`, `B = 0` or `T = 0`, a
    /// NaN or infinite input or initial state, an initial state of the wrong shape, an output
    /// that overflowed to infinity.
    pub fn forward(
        &self,
        x: &DMatrix<T>,
        batch: usize,
        initial: Option<&RecurrentState<T>>,
        cache: &mut RecurrentCache<T>,
    ) -> Result<()> {
        cache.saved = Saved::Nothing;
        self.check_weights("Recurrent::forward parameter")?;
        let steps = self.check_sequence("Recurrent::forward input", x, batch)?;
        if let Some(s) = initial {
            self.check_state(
                "Recurrent::forward initial state",
                s,
                batch,
                self.slots(),
                true,
            )?;
        }
        cache.prepare(&self.config, steps, batch)?;
        match initial {
            Some(s) => {
                cache.initial.h.copy_from(&s.h);
                if let Some(c) = &mut cache.initial.c {
                    match &s.c {
                        Some(src) => c.copy_from(src),
                        None => c.fill(T::zero()),
                    }
                }
            }
            None => cache.initial.fill_zero(),
        }
        let (cell, hidden, dirs) = (
            self.config.cell,
            self.config.hidden_size,
            self.config.num_directions(),
        );
        let RecurrentCache {
            layers,
            initial,
            final_state,
            ..
        } = cache;
        for l in 0..self.config.num_layers {
            let (below, rest) = layers.split_at_mut(l);
            let LayerCache {
                output, directions, ..
            } = &mut rest[0];
            let input = match below.last() {
                None => x.columns(0, x.ncols()),
                Some(prev) => prev.output.columns(0, prev.output.ncols()),
            };
            for (d, dc) in directions.iter_mut().enumerate() {
                let dims = Dims {
                    hidden,
                    steps,
                    batch,
                    dir: d,
                    slot: l * dirs + d,
                };
                let w = &self.directions[dims.slot];
                forward_direction(cell, w, &input, dims, initial, output, dc, final_state);
            }
        }
        // Finite inputs can still overflow (a ReLU RNN fed huge values, loaded weights of any
        // size): such a result is refused, and the cache stays unusable for backward.
        if let Some(top) = layers.last() {
            check_finite("Recurrent::forward output (overflow)", &top.output)?;
        }
        check_finite("Recurrent::forward final h (overflow)", &final_state.h)?;
        if let Some(c) = &final_state.c {
            check_finite("Recurrent::forward final c (overflow)", c)?;
        }
        cache.saved = Saved::Forward;
        Ok(())
    }

    /// BPTT for the last forward on `x`: adds into every parameter's gradient, writes the input
    /// gradient into `d_input` `(I, T*B)` when given, and `cache.d_initial()`.
    /// `d_output` is `(D*H, T*B)`; `d_final` the gradient of `h_n`/`c_n` (zeros when `None`;
    /// an LSTM's `c: None` means zeros too).
    ///
    /// One backward per forward, as in PyTorch without `retain_graph`: backward writes the gate
    /// gradients over the gates the forward saved (one `(G·H, T·B)` buffer fewer per
    /// layer-direction), so a second backward needs a new forward. `cache.output()` and
    /// `cache.final_state()` stay.
    ///
    /// Errors: a cache without a forward of a layer with these settings, or whose forward a
    /// backward has already used, an `x`, `d_output`,
    /// `d_final` or `d_input` of the wrong shape, a NaN or infinite `d_output` or `d_final`, a
    /// gradient that overflowed to infinity (the gradients are then already partly added).
    pub fn backward(
        &mut self,
        x: &DMatrix<T>,
        cache: &mut RecurrentCache<T>,
        d_output: &DMatrix<T>,
        d_final: Option<&RecurrentState<T>>,
        mut d_input: Option<&mut DMatrix<T>>,
    ) -> Result<()> {
        let (steps, batch) = match cache.forward_shape() {
            Some((c, t, b)) if *c == self.config => (t, b),
            _ => {
                return Err(Error::InvalidConfig(
                    "Recurrent::backward: the cache holds no forward pass of a layer with these \
                     settings; run forward first"
                        .into(),
                ));
            }
        };
        if cache.saved == Saved::Used {
            return Err(Error::InvalidConfig(
                "Recurrent::backward: a backward has already used this forward pass (it \
                 overwrites the gates the forward saved); run forward again"
                    .into(),
            ));
        }
        self.check_weights("Recurrent::backward parameter")?;
        let cols = steps * batch;
        let input = self.config.input_size;
        check_shape(
            "Recurrent::backward input (must be the forward's)",
            x,
            Shape(input, cols),
        )?;
        check_shape(
            "Recurrent::backward d_output",
            d_output,
            Shape(self.output_size(), cols),
        )?;
        check_finite("Recurrent::backward d_output", d_output)?;
        if let Some(s) = d_final {
            self.check_state("Recurrent::backward d_final", s, batch, self.slots(), true)?;
        }
        if let Some(dx) = &d_input {
            check_shape("Recurrent::backward d_input", *dx, Shape(input, cols))?;
        }
        // From here on the saved gates are overwritten, whatever the outcome.
        cache.saved = Saved::Used;
        let RecurrentCache {
            layers,
            initial,
            d_initial,
            ..
        } = cache;
        // The running gradients dh (and dc) of each layer-direction live in `d_initial`: they
        // start as ∂L/∂h_n and end, after step 0 (forward order), as ∂L/∂h0.
        match d_final {
            Some(s) => {
                d_initial.h.copy_from(&s.h);
                if let Some(dc) = &mut d_initial.c {
                    match &s.c {
                        Some(src) => dc.copy_from(src),
                        None => dc.fill(T::zero()),
                    }
                }
            }
            None => d_initial.fill_zero(),
        }
        let (cell, hidden, dirs, num_layers) = (
            self.config.cell,
            self.config.hidden_size,
            self.config.num_directions(),
            self.config.num_layers,
        );
        for l in (0..num_layers).rev() {
            let (below, rest) = layers.split_at_mut(l);
            let LayerCache {
                output,
                d_output: d_out_here,
                directions,
            } = &mut rest[0];
            let dy: &DMatrix<T> = if l + 1 == num_layers {
                d_output
            } else {
                d_out_here
            };
            let (x_in, mut d_x) = match below.last_mut() {
                None => (x.columns(0, cols), d_input.as_deref_mut()),
                Some(LayerCache {
                    output: prev_out,
                    d_output: prev_d,
                    ..
                }) => (prev_out.columns(0, cols), Some(prev_d)),
            };
            for (d, dc) in directions.iter_mut().enumerate() {
                let dims = Dims {
                    hidden,
                    steps,
                    batch,
                    dir: d,
                    slot: l * dirs + d,
                };
                // Both directions feed the same input: the first writes dX, the second adds.
                let accum = if d == 0 { Accum::Replace } else { Accum::Add };
                backward_direction(
                    cell,
                    &mut self.directions[dims.slot],
                    &x_in,
                    dims,
                    initial,
                    output,
                    dy,
                    dc,
                    d_initial,
                    d_x.as_deref_mut().map(|m| (m, accum)),
                );
            }
        }
        // Finite upstream gradients can still overflow (huge inputs times huge gradients).
        let op = "Recurrent::backward gradient (overflow)";
        if let Some(dx) = &d_input {
            check_finite(op, *dx)?;
        }
        check_finite(op, &d_initial.h)?;
        if let Some(c) = &d_initial.c {
            check_finite(op, c)?;
        }
        for w in &self.directions {
            for p in [&w.weight_ih, &w.weight_hh, &w.bias_ih, &w.bias_hh] {
                check_finite(op, &p.grad)?;
            }
        }
        Ok(())
    }
}

/// Forward of one layer-direction over the whole sequence: fills `out`'s rows `dir*H..`, the
/// cache `dc`, and slot `dims.slot` of `final_state`.
#[allow(clippy::too_many_arguments)]
fn forward_direction<T: Float>(
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
    let (gh, rows_out, r0) = (cell.gate_count() * h, out.nrows(), dir * h);
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
    let gate_row = gate_grad_rows(cell, h).0;
    bias_column(cell, w, bias);
    let in_loop = input_in_loop(batch, gh * x.nrows());
    if in_loop {
        packed_ih.pack(&w.weight_ih.value, Trans::No);
    } else {
        // `G_x = W_ih · X` (large products in two halves at once, see [`matmul`]).
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
    match split_point(cell, h, batch) {
        // SAFETY: this thread is the only one touching the buffers for the call.
        None => unsafe { forward_steps(&lp, 0..batch, 0, None) },
        Some(mid) => {
            let lp = &lp;
            let hand = &Handoff::new();
            // SAFETY (both steps closures): the two sides touch the columns `t*B + b` of
            // sequences `b < mid` and `b >= mid` respectively (see `forward_steps`): disjoint
            // sets, a side running sequences the other handed over only from the step it stopped
            // at, after the hand-off ([`Handoff::run_side`]); `out`, `gates`, ... are borrowed
            // mutably by `lp` until `join` has returned from both.
            let steps = |bs, first, poll: Poll<'_>| unsafe { forward_steps(lp, bs, first, poll) };
            nn_core::kernels::pool::join(
                || hand.run_side(0, 0..mid, steps),
                move || hand.run_side(1, mid..batch, steps),
            );
        }
    }
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

/// Backward of one layer-direction: adds into `w`'s gradients, turns slot `dims.slot` of
/// `d_state` from `∂L/∂(h_n, c_n)` into `∂L/∂(h0, c0)`, and writes or adds `W_ihᵀ dG` into
/// `d_x` when given. `dy` is `∂L/∂out` (`(D*H, T*B)`, rows `dir*H..` are this direction's).
#[allow(clippy::too_many_arguments)]
fn backward_direction<T: Float>(
    cell: CellKind,
    w: &mut DirectionWeights<T>,
    x: &DMatrixView<'_, T>,
    dims: Dims,
    initial: &RecurrentState<T>,
    out: &DMatrix<T>,
    dy: &DMatrix<T>,
    dc: &mut DirectionCache<T>,
    d_state: &mut RecurrentState<T>,
    d_x: Option<(&mut DMatrix<T>, Accum)>,
) {
    let Dims {
        hidden: h,
        steps,
        batch,
        dir,
        slot,
    } = dims;
    let (gh, rows_out, r0) = (cell.gate_count() * h, out.nrows(), dir * h);
    // The gate gradients are written over the gates, which are dead once their step's backward
    // cell has read them; so a backward consumes its forward (`Saved::Used`).
    let DirectionCache {
        gates: d_gates,
        hidden_n,
        cells,
        packed_hh,
        bias,
        ..
    } = dc;
    packed_hh.pack(&w.weight_hh.value, Trans::Yes);
    let (hidden_row, input_blocks) = gate_grad_rows(cell, h);
    let input_blocks = input_blocks.into_iter().filter(|&(.., rows)| rows > 0);
    // The running dh (dc) of sequence `b` is column `slot*B + b` of `d_state`: one contiguous
    // span of `B` columns per layer-direction.
    let RecurrentState { h: dh_m, c: dc_m } = d_state;
    let span = slot * batch * h..(slot + 1) * batch * h;
    let mut no_cell = [];
    let dc_all = match dc_m {
        Some(m) => &mut m.as_mut_slice()[span.clone()],
        None => &mut no_cell[..],
    };
    let lp = BackwardLoop {
        cell,
        dims,
        gh,
        rows_out,
        r0,
        h0: slot_slice(Some(&initial.h), slot, dims),
        c0: slot_slice(initial.c.as_ref(), slot, dims),
        out: out.as_slice(),
        dy: dy.as_slice(),
        hidden_n: hidden_n.as_slice(),
        cells: cells.as_slice(),
        d_rows: d_gates.nrows(),
        hidden_row,
        d_gates: SharedCols::new(d_gates),
        dh: SharedCols::from_slice(&mut dh_m.as_mut_slice()[span], h),
        dc: SharedCols::from_slice(dc_all, h),
        packed: packed_hh,
    };
    match split_point(cell, h, batch) {
        // SAFETY: this thread is the only one touching the buffers for the call.
        None => unsafe { backward_steps(&lp, 0..batch, 0, None) },
        Some(mid) => {
            let lp = &lp;
            let hand = &Handoff::new();
            // SAFETY (both steps closures): the two sides write the columns `t*B + b` of
            // `d_gates`, and columns `b` of `dh` and `dc`, of sequences `b < mid` and `b >= mid`
            // respectively (disjoint), a side running sequences the other handed over only from
            // the step it stopped at ([`Handoff::run_side`]); all are borrowed mutably by `lp`
            // until `join` has returned from both.
            let steps = |bs, first, poll: Poll<'_>| unsafe { backward_steps(lp, bs, first, poll) };
            nn_core::kernels::pool::join(
                || hand.run_side(0, 0..mid, steps),
                move || hand.run_side(1, mid..batch, steps),
            );
        }
    }
    let d_gates = &*d_gates;
    // Whole-sequence products, each side on its rows of `d_gates`.
    let d_hidden = d_gates.rows(hidden_row, gh);
    // The weight gradients read `dG`, `X` and the hidden sequence in place ([`add_a_bt`]).
    // `W_ih`'s also sum `dG`'s rows of its blocks (every column) into `bias` as they go, from
    // zero in column order; the input blocks are rows `0..covered`, and a GRU's `dgh_n` rows
    // after them are summed apart.
    bias.fill(T::zero());
    let mut covered = 0;
    for (w_row, g_row, rows) in input_blocks.clone() {
        let dw = &mut w.weight_ih.grad.rows_mut(w_row, rows);
        add_a_bt_row_sums(
            dw,
            &d_gates.rows(g_row, rows),
            x,
            &mut bias[g_row..][..rows],
        );
        covered += rows;
    }
    debug_assert!(
        input_blocks
            .clone()
            .all(|(_, g_row, rows)| g_row + rows <= covered)
    );
    let rest = d_gates.nrows() - covered;
    if rest > 0 {
        add_row_sums(&mut bias[covered..], &d_gates.rows(covered, rest));
    }
    let shifted = (steps - 1) * batch;
    if shifted > 0 {
        // Step t's h_{t-1} is output column block t-1 (forward) or t+1 (reverse).
        let (g0, h0_col) = if dir == 0 { (batch, 0) } else { (0, batch) };
        let h_prev = out.view((r0, h0_col), (h, shifted));
        add_a_bt(
            &mut w.weight_hh.grad,
            &d_hidden.columns(g0, shifted),
            &h_prev,
        );
    }
    // The first step's h_{t-1} is the initial state: zeros unless the caller gave one, and a
    // zero product adds nothing.
    let h0 = initial.h.columns(slot * batch, batch);
    if h0.iter().any(|&v| v != T::zero()) {
        let first = dims.step(0) * batch;
        add_a_bt(&mut w.weight_hh.grad, &d_hidden.columns(first, batch), &h0);
    }
    // Each bias gradient takes its side's rows of the row sums.
    let add_rows = |db: &mut DMatrix<T>, (w_row, g_row, rows): (usize, usize, usize)| {
        for (g, &v) in db.as_mut_slice()[w_row..][..rows]
            .iter_mut()
            .zip(&bias[g_row..][..rows])
        {
            *g += v;
        }
    };
    for block in input_blocks.clone() {
        add_rows(&mut w.bias_ih.grad, block);
    }
    add_rows(&mut w.bias_hh.grad, (0, hidden_row, gh));
    if let Some((d_x, accum)) = d_x {
        // `W_ihᵀ dgx`, block by block: the first writes (or adds, as asked), the rest add.
        for (i, (w_row, g_row, rows)) in input_blocks.enumerate() {
            matmul(
                d_x,
                if i == 0 { accum } else { Accum::Add },
                &w.weight_ih.value.rows(w_row, rows),
                Trans::Yes,
                &d_gates.rows(g_row, rows),
                Trans::No,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SLOW_SIDE, force_split};
    use crate::handoff::GRANTS;
    use crate::{CellKind, RecurrentCache, RecurrentConfig, RecurrentState};
    use nalgebra::DMatrix;
    use nn_core::{Float, Module, Rng};
    use std::sync::Mutex;
    use std::sync::atomic::Ordering;

    /// The split-loop tests run one at a time: `SLOW_SIDE` and `GRANTS` are process-wide, so a
    /// hand-off counted by one test is its own, and neither test takes the pool's helper from
    /// the other.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn fill<T: Float>(rows: usize, cols: usize, seed: usize) -> DMatrix<T> {
        DMatrix::from_fn(rows, cols, |i, j| {
            T::cast(((i * 7 + j * 13 + seed * 31) as f64 * 0.37).sin() * 0.9)
        })
    }

    /// Every result of one forward and backward, as bits.
    fn run<T: Float>(
        config: &RecurrentConfig,
        steps: usize,
        batch: usize,
        split: bool,
    ) -> Vec<u64> {
        force_split(Some(split));
        let mut layer = config.init::<T>(&mut Rng::seed_from(3)).unwrap();
        let (i, h) = (config.input_size, config.hidden_size);
        let slots = config.num_layers * config.num_directions();
        let with_c = config.cell.has_cell_state();
        let state = |seed| RecurrentState {
            h: fill::<T>(h, slots * batch, seed),
            c: with_c.then(|| fill::<T>(h, slots * batch, seed + 1)),
        };
        let x = fill::<T>(i, steps * batch, 0);
        let mut cache = RecurrentCache::new();
        layer
            .forward(&x, batch, Some(&state(1)), &mut cache)
            .unwrap();
        let d_out = fill::<T>(layer.output_size(), steps * batch, 5);
        let mut d_x = DMatrix::zeros(i, steps * batch);
        layer.zero_grad();
        layer
            .backward(&x, &mut cache, &d_out, Some(&state(7)), Some(&mut d_x))
            .unwrap();
        force_split(None);
        let mut all: Vec<&DMatrix<T>> = vec![cache.output(), &cache.final_state().h, &d_x];
        all.extend(&cache.final_state().c);
        all.push(&cache.d_initial().h);
        all.extend(&cache.d_initial().c);
        for w in layer.directions() {
            all.extend([
                &w.weight_ih.grad,
                &w.weight_hh.grad,
                &w.bias_ih.grad,
                &w.bias_hh.grad,
            ]);
        }
        all.iter()
            .flat_map(|m| m.iter().map(|v| v.as_f64().to_bits()))
            .collect()
    }

    #[test]
    fn split_time_loops_give_the_serial_results_bit_for_bit() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        for cell in CellKind::ALL {
            for (layers, bidi) in [(1, false), (2, true)] {
                // B = 24: the steps compute `W_ih x_t` ([`input_in_loop`]).
                for (steps, batch) in [(5, 5), (1, 2), (3, 8), (3, 24)] {
                    let config = RecurrentConfig::new(cell, 3, 6)
                        .with_num_layers(layers)
                        .with_bidirectional(bidi);
                    let what = format!("{cell:?} L={layers} bidi={bidi} T={steps} B={batch}");
                    let serial = run::<f64>(&config, steps, batch, false);
                    assert_eq!(
                        serial,
                        run::<f64>(&config, steps, batch, true),
                        "f64 {what}"
                    );
                    let serial = run::<f32>(&config, steps, batch, false);
                    assert_eq!(
                        serial,
                        run::<f32>(&config, steps, batch, true),
                        "f32 {what}"
                    );
                }
            }
        }
    }

    /// With one side of every split loop slowed, the other finishes first and takes over half
    /// of its remaining sequences ([`crate::handoff`]); the results keep the serial bits.
    #[test]
    fn handed_over_sequences_give_the_serial_results_bit_for_bit() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        for slow in [2, 1] {
            // B = 24: the steps compute `W_ih x_t` ([`input_in_loop`]).
            for (cell, batch) in CellKind::ALL.into_iter().flat_map(|c| [(c, 8), (c, 24)]) {
                let config = RecurrentConfig::new(cell, 3, 6)
                    .with_num_layers(2)
                    .with_bidirectional(true);
                let steps = 6;
                let serial = run::<f64>(&config, steps, batch, false);
                // The pool runs both sides on one thread when its helper is busy (tests of other
                // modules): then nothing is handed over, so try a few times.
                let mut handed = false;
                for _ in 0..20 {
                    let before = GRANTS.load(Ordering::Relaxed);
                    SLOW_SIDE.store(slow, Ordering::Relaxed);
                    let split = run::<f64>(&config, steps, batch, true);
                    SLOW_SIDE.store(0, Ordering::Relaxed);
                    assert_eq!(serial, split, "{cell:?} B={batch}, side {} slow", slow - 1);
                    if GRANTS.load(Ordering::Relaxed) > before {
                        handed = true;
                        break;
                    }
                }
                // With threads off (`MATMUL_NUM_THREADS=1`, one core) both sides run on this
                // thread, one after the other, and nothing can be handed over.
                assert!(
                    handed || !nn_core::kernels::pool::threads_allowed(),
                    "{cell:?} B={batch}: no hand-off in 20 tries"
                );
            }
        }
    }
}
