//! The time loops of one layer-direction, on the calling thread or split into parts of the batch
//! run by the threads of `nn_core`'s pool, with hand-offs of work between the parts
//! ([`super::handoff`]).
//!
//! The forward loop goes through the steps in the direction's order: the gates
//! `G_t (+)= W_ih x_t + W_hh h_{t-1}` ([`step_products`]; `(G·H, B)` columns `t*B + b` of the gate
//! buffer), then each sequence's cell writes `h_t` into the output (and `c_t`). The backward loop
//! goes the other way: each sequence's cell turns `dh_t` (the upstream `dY` column plus what step
//! `t+1` sent back) into `dG_t`, written over the gates, then `dh_{t-1} = W_hhᵀ · dG_t`
//! ([`step_product`]).
//!
//! Threads: when a step has enough work ([`split_parts`]: `B ≥ 8`, `G·H·H·B` ≥ 2^17
//! multiply-adds, and more than one thread), each time loop cuts the batch into parts of at least
//! four sequences, one per thread (`p = min(threads, B/4)`; part `i` holds sequences
//! `⌊iB/p⌋..⌊(i+1)B/p⌋`), each run for all steps by one thread of the pool. The sequences are
//! independent, so the parts do not meet at each step, and every column is computed by the same
//! operations whatever the part holding it: results are bit-identical to the serial loop for any
//! thread count. A part that finishes takes over half of the remaining sequences of a part still
//! running ([`super::handoff`]), so a core slowed by the machine costs less waiting.
//!
//! Variable-length batches (sorted longest first): a step runs the part's sequences that are
//! still running (a block of leading columns), and the parts are blocks of equal real steps
//! rather than equal counts ([`part_sequences`]).
//!
//! All parts write the same buffers, each only the columns of its own sequences: a
//! [`SharedCols`] holds a buffer's unique borrow and hands out columns. All the `unsafe` of the
//! split loops is in this file; callers build a [`ForwardLoop`] or [`BackwardLoop`] from their
//! buffers and give it to [`run_forward`] or [`run_backward`], which are safe.

use super::Dims;
use super::handoff::{Handoff, MAX_SIDES, Poll};
use super::products::{gemv_step_products, step_product, step_products};
use crate::CellKind;
use crate::cell::{gru, lstm, rnn};
use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, Dyn, U1};
use nn_core::kernels::gemv::GemvMatrix;
use nn_core::kernels::packed::PackedMatrix;
use nn_core::kernels::pool;
use nn_core::{Accum, Float};

/// Runs the forward time loop of `lp` over all its sequences and steps: on this thread, or
/// split into parts run by the pool's threads when [`split_parts`] says so.
pub(super) fn run_forward<T: Float>(lp: ForwardLoop<'_, T>) {
    let (cell, h, batch) = (lp.cell, lp.dims.hidden, lp.dims.batch);
    match split_parts(cell, h, batch) {
        // SAFETY: `lp` was moved in, so nothing else touches its buffers during the call.
        None => unsafe { forward_steps(&lp, 0..batch, 0, None) },
        Some(parts) => {
            let lp = &lp;
            let hand = &Handoff::new(parts);
            // SAFETY (the steps closure): the parts touch the columns `t*B + b` of their own
            // sequences `b` (see `forward_steps`): disjoint sets, a part running sequences
            // another handed over only from the step it stopped at, after the hand-off
            // ([`Handoff::run_side`]); `out`, `gates`, ... are borrowed mutably by `lp`, which
            // this call owns, until `for_each_part` has returned from all.
            let steps = |bs, first, poll: Poll<'_>| unsafe { forward_steps(lp, bs, first, poll) };
            pool::for_each_part(parts, |i| {
                hand.run_side(i, part_sequences(&lp.dims, parts, i), steps)
            });
        }
    }
}

/// Runs the backward time loop of `lp` over all its sequences and steps: on this thread, or
/// split into parts run by the pool's threads when [`split_parts`] says so.
pub(super) fn run_backward<T: Float>(lp: BackwardLoop<'_, T>) {
    let (cell, h, batch) = (lp.cell, lp.dims.hidden, lp.dims.batch);
    match split_parts(cell, h, batch) {
        // SAFETY: `lp` was moved in, so nothing else touches its buffers during the call.
        None => unsafe { backward_steps(&lp, 0..batch, 0, None) },
        Some(parts) => {
            let lp = &lp;
            let hand = &Handoff::new(parts);
            // SAFETY (the steps closure): the parts write the columns `t*B + b` of `d_gates`,
            // and columns `b` of `dh` and `dc`, of their own sequences `b` (disjoint), a part
            // running sequences another handed over only from the step it stopped at
            // ([`Handoff::run_side`]); all are borrowed mutably by `lp` (which this call owns)
            // until `for_each_part` has returned from all.
            let steps = |bs, first, poll: Poll<'_>| unsafe { backward_steps(lp, bs, first, poll) };
            pool::for_each_part(parts, |i| {
                hand.run_side(i, part_sequences(&lp.dims, parts, i), steps)
            });
        }
    }
}

/// The sequences of part `i` of `parts`: [`pool::part_range`] of a full batch; of a
/// variable-length one, blocks of the sorted sequences with about the same number of real steps
/// each (part 0 fewer, longer sequences), since a part's sequences each cost their length.
fn part_sequences(dims: &Dims<'_>, parts: usize, i: usize) -> std::ops::Range<usize> {
    let (batch, steps) = (dims.batch, dims.steps);
    let total = dims.col(steps);
    if total == steps * batch {
        return pool::part_range(batch, parts, 1, i);
    }
    // The real steps of the sorted sequences `0..k`: `Σ_t min(n_t, k)`.
    let steps_before = |k: usize| (0..steps).map(|t| dims.running(t).min(k)).sum::<usize>();
    // The first sequence of part `i`: the fewest sequences with `i/parts` of the real steps.
    let start = |i: usize| {
        if i >= parts {
            return batch;
        }
        let (mut lo, mut hi) = (0, batch);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if steps_before(mid) * parts >= i * total {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    };
    start(i)..start(i + 1)
}

/// Per-step multiply-adds of the step product (`G·H·H·B`) from which a time loop splits its
/// batch into parts run by the pool's threads (see [`split_parts`]).
///
/// Below it a step is too small for running half of it on a helper to pay for the fork
/// (figures in PERF.md). Under Miri 1024, as `nn_core::kernels::thresholds::SPLIT_MIN_VALUES`.
const SPLIT_MIN_MACS: usize = if cfg!(miri) { 1 << 10 } else { 1 << 17 };

/// The smallest batch whose time loops are split: each part has at least
/// `SPLIT_MIN_BATCH / 2 = 4` columns for the micro-kernel's tiles; with two per half a split was
/// slower (figures in PERF.md).
const SPLIT_MIN_BATCH: usize = 8;

#[cfg(test)]
thread_local! {
    /// Tests: `Some(true)` forces the split time loops (for `B ≥ 2`; as many parts as threads, at
    /// least two, at most `B`), `Some(false)` the serial ones.
    static FORCE_SPLIT: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Tests: side `k - 1` of every split time loop sleeps after each step while this is `k > 0`,
/// so that other sides finish first and take over part of its work; the other sides wait (up to
/// 200 ms) for side `k - 1` to start, so that a thread that runs them does not also claim it
/// before a helper does (on a loaded machine helpers can take long to run).
#[cfg(test)]
pub(super) static SLOW_SIDE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

#[cfg(test)]
fn slow_down(hand: &Handoff, side: usize) {
    let slow = SLOW_SIDE.load(std::sync::atomic::Ordering::Relaxed);
    if slow > 0 && slow != side + 1 {
        hand.wait_started(slow - 1, std::time::Duration::from_millis(200));
    }
    if slow == side + 1 {
        // Under Miri a step takes about a quarter of a second to interpret, so the slow side
        // must sleep that long to be slower.
        let us = if cfg!(miri) { 250_000 } else { 300 };
        std::thread::sleep(std::time::Duration::from_micros(us));
    }
}

/// Tests: forces (`Some`) or stops forcing (`None`) the split time loops on this thread.
#[cfg(test)]
pub(super) fn force_split(on: Option<bool>) {
    FORCE_SPLIT.with(|f| f.set(on));
}

/// How many parts a layer-direction's time loops cut the batch into: `Some(p)` runs part `i`
/// (sequences [`pool::part_range`]`(B, p, 1, i)`) on one of the pool's threads; `None` runs all
/// sequences on the calling thread.
///
/// The sequences of a batch are independent, so the parts need no synchronization per step
/// (hand-offs at most, [`super::handoff`]), and each column is computed by exactly the same
/// operations whichever part and thread runs it: the results are bit-identical for any part
/// count. Splitting pays only when a step has enough work to outweigh handing parts of it to
/// other threads, so small layers stay serial; each part has at least four sequences.
fn split_parts(cell: CellKind, hidden: usize, batch: usize) -> Option<usize> {
    if batch < 2 {
        return None;
    }
    #[cfg(test)]
    if let Some(on) = FORCE_SPLIT.with(std::cell::Cell::get) {
        return on.then(|| pool::threads().clamp(2, batch.min(MAX_SIDES)));
    }
    let macs = (cell.gate_count() * hidden)
        .saturating_mul(hidden)
        .saturating_mul(batch);
    let parts = pool::threads()
        .min(batch / (SPLIT_MIN_BATCH / 2))
        .min(MAX_SIDES);
    (macs >= SPLIT_MIN_MACS && batch >= SPLIT_MIN_BATCH && parts >= 2).then_some(parts)
}

/// A column-major buffer whose columns are written by the threads of a split time loop, each
/// only its own columns (those of its sequences). Holds the buffer's unique borrow.
#[derive(Debug)]
pub(super) struct SharedCols<'a, T> {
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
    pub(super) fn new(m: &'a mut DMatrix<T>) -> Self {
        SharedCols {
            ptr: m.as_mut_ptr(),
            rows: m.nrows(),
            cols: m.ncols(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// A `rows`-row column-major buffer held as a slice (its length a multiple of `rows`; an
    /// empty slice for a buffer that does not exist, such as `dc` without a cell state).
    pub(super) fn from_slice(s: &'a mut [T], rows: usize) -> Self {
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
pub(super) struct ForwardLoop<'a, T: Float> {
    pub(super) cell: CellKind,
    pub(super) dims: Dims<'a>,
    pub(super) gh: usize,
    pub(super) rows_out: usize,
    pub(super) r0: usize,
    pub(super) out: SharedCols<'a, T>,
    pub(super) gates: SharedCols<'a, T>,
    /// The first row of the forward's gates in each column of `gates` (a GRU's `H`, else 0;
    /// [`GateLayout::hidden_first_row`](crate::gates::GateLayout::hidden_first_row)).
    pub(super) gate_row: usize,
    /// GRU only `(3H, B)`: the step product `W_hh h_{t-1}`, column `b` for sequence `b`.
    pub(super) hidden_gates: SharedCols<'a, T>,
    /// GRU only `(H, T*B)`: `ĝ_n = W_hn h_{t-1} + b_hn`, kept for backward.
    pub(super) hidden_n: SharedCols<'a, T>,
    pub(super) cells: SharedCols<'a, T>,
    /// This slot's initial `h` (and `c`, or empty), `(H, B)`.
    pub(super) h0: &'a [T],
    /// Whether `h0` is all zeros, so that the first step skips `W_hh h0` ([`step_products`]).
    pub(super) h0_zero: bool,
    pub(super) c0: &'a [T],
    pub(super) b_hn: &'a [T],
    pub(super) bias: &'a [T],
    pub(super) packed: &'a PackedMatrix<T>,
    /// The layer's input `X` `(I, T*B)` and `W_ih` packed, for the steps' `W_ih x_t` when they
    /// compute it (else unused: the gate buffer already holds `W_ih X`).
    pub(super) x: DMatrixView<'a, T>,
    pub(super) packed_ih: &'a PackedMatrix<T>,
    /// `(W_hh, W_ih)` packed for the matrix-vector kernel, which runs the step products instead
    /// of the packed kernel when set (batches of at most 3 columns, never split).
    pub(super) gemv: Option<(&'a GemvMatrix<T>, &'a GemvMatrix<T>)>,
    /// Whether the steps compute `W_ih x_t` ([`input_in_loop`](super::products::input_in_loop)).
    pub(super) input_in_loop: bool,
    /// The steps this loop runs: indices `base..base + len` of the direction's order (all `T`
    /// for a training forward; a window of them for [`Recurrent::infer`](crate::Recurrent::infer)).
    pub(super) base: usize,
    pub(super) len: usize,
    /// Where each step's columns lie in `gates`, `cells` and `hidden_n` ([`StepCols`]).
    pub(super) gate_cols: StepCols,
    pub(super) cell_cols: StepCols,
    pub(super) hn_cols: StepCols,
}

/// Where step `t`'s columns start in a buffer: the training forward keeps every step
/// ([`StepCols::All`]: column `off[t]`, [`Dims`]), the forward-only pass one step or two in turn
/// ([`StepCols::Ring`]`(p)`: column `(t mod p)·B`; the LSTM's `c` keeps `c_{t-1}` and `c_t`), or the
/// window of steps of the input product that starts at step `t0` ([`StepCols::From`]`(t0)`:
/// column `off[t] - off[t0]`).
#[derive(Clone, Copy, Debug)]
pub(super) enum StepCols {
    All,
    Ring(usize),
    From(usize),
}

impl StepCols {
    /// The first column of step `t` (`t >= t0` for `From(t0)`).
    #[inline]
    pub(super) fn col(self, t: usize, dims: &Dims<'_>) -> usize {
        match self {
            StepCols::All => dims.col(t),
            StepCols::Ring(period) => (t % period) * dims.batch,
            StepCols::From(t0) => dims.col(t) - dims.col(t0),
        }
    }
}

/// The forward time loop for the sequences `bs`, from step index `base + first` (in the
/// direction's order) to `base + len`. With `handoff` (the split loops), it may give the second
/// half of its sequences to another side at a step boundary ([`Handoff::poll`]) and go on with
/// the rest.
///
/// # Safety
/// No other thread accesses, during the call, the columns of sequence `b` (`b` in `bs`, any
/// step: `t*B + b` of `out`, [`StepCols::col`]` + b` of `gates`, `hidden_n`, `cells`), nor the
/// columns `b` of `hidden_gates`,
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
    let h = dims.hidden;
    let steps = lp.len;
    let mut bs = bs;
    for s in first..steps {
        let t = dims.step(lp.base + s);
        // The running sequences of `bs` (sorted longest first: a block of leading columns), of
        // which `b0..mid` continue from step `tp` and `mid..end` start from the initial state.
        let (b0, end) = (bs.start, bs.end.min(dims.running(t)));
        let mid = dims.continuing(t).clamp(b0, end.max(b0));
        let (gcol, ccol, hcol) = (
            lp.gate_cols.col(t, &dims),
            lp.cell_cols.col(t, &dims),
            lp.hn_cols.col(t, &dims),
        );
        // SAFETY (every `cols`/`cols_mut` below): the columns are step `t`'s or `tp`'s column of
        // sequence `b` (`off[t] + b` in the output, `StepCols::col(t) + b` in the other buffers,
        // or `b` of the GRU's step scratch `hidden_gates`) with `b` in `bs`, this call's own (from
        // the caller); `tp != t`, and the one buffer read at step `tp` besides the output, `cells`,
        // keeps at least two steps (`Ring(2)` or `All`), so a shared slice of step `tp` never
        // overlaps a mutable one of step `t`; each mutable slice is dropped before another one of
        // the same columns is made.
        for (c0, c1, from_prev) in [(b0, mid, true), (mid, end, false)] {
            if c0 >= c1 {
                continue;
            }
            let nb = c1 - c0;
            let h_prev = match dims.prev(t) {
                Some(tp) if from_prev => {
                    let block = unsafe { lp.out.cols(dims.col(tp) + c0, nb) };
                    Some(DMatrixView::from_slice_with_strides_generic(
                        &block[r0..],
                        Dyn(h),
                        Dyn(nb),
                        U1,
                        Dyn(rows_out),
                    ))
                }
                _ if lp.h0_zero => None,
                _ => Some(DMatrixView::from_slice(&lp.h0[c0 * h..][..nb * h], h, nb)),
            };
            let x_t = lp.x.columns(dims.col(t) + c0, nb);
            // The step's gate rows (a GRU's from `gate_row`, columns `4H` apart) and the GRU's
            // scratch for `W_hh h_{t-1}`.
            let rows = lp.gates.rows;
            let cols = unsafe { lp.gates.cols_mut(gcol + c0, nb) };
            let mut g_t = DMatrixViewMut::from_slice_with_strides_generic(
                &mut cols[lp.gate_row..],
                Dyn(gh),
                Dyn(nb),
                U1,
                Dyn(rows),
            );
            let mut hidden = (cell == CellKind::Gru).then(|| {
                DMatrixViewMut::from_slice(unsafe { lp.hidden_gates.cols_mut(c0, nb) }, gh, nb)
            });
            match lp.gemv {
                Some((hh, ih)) => {
                    let input = lp.input_in_loop.then_some((ih, &x_t));
                    gemv_step_products(&mut g_t, hidden.as_mut(), hh, h_prev.as_ref(), input);
                }
                None => {
                    let input = lp.input_in_loop.then_some((lp.packed_ih, &x_t));
                    step_products(&mut g_t, hidden.as_mut(), lp.packed, h_prev.as_ref(), input);
                }
            }
        }
        for b in b0..end {
            let col = dims.col(t) + b;
            let prev = dims.prev_of(t, b);
            let h_prev = match prev {
                Some(tp) => unsafe { &lp.out.cols(dims.col(tp) + b, 1)[r0..r0 + h] },
                None => &lp.h0[b * h..][..h],
            };
            let h_new = unsafe { &mut lp.out.cols_mut(col, 1)[r0..r0 + h] };
            let g = unsafe { lp.gates.cols_mut(gcol + b, 1) };
            match cell {
                CellKind::Rnn(act) => rnn::forward(act, g, lp.bias, h_new),
                CellKind::Lstm => {
                    let c_prev = match prev {
                        Some(tp) => unsafe { lp.cells.cols(lp.cell_cols.col(tp, &dims) + b, 1) },
                        None => &lp.c0[b * h..][..h],
                    };
                    let c_new = unsafe { lp.cells.cols_mut(ccol + b, 1) };
                    lstm::forward(g, lp.bias, c_prev, c_new, h_new);
                }
                CellKind::Gru => {
                    let hg = unsafe { lp.hidden_gates.cols(b, 1) };
                    let hn = unsafe { lp.hidden_n.cols_mut(hcol + b, 1) };
                    let g = &mut g[lp.gate_row..];
                    gru::forward(g, lp.bias, hg, lp.b_hn, hn, h_prev, h_new);
                }
            }
        }
        if let Some((hand, side)) = handoff {
            #[cfg(test)]
            slow_down(hand, side);
            if s + 1 < steps {
                bs = still_running(&dims, bs, t, dims.step(lp.base + s + 1));
            }
            bs = hand.poll(side, bs, s, steps);
        }
    }
}

/// The sequences of `bs` that may still run after step `t`, the next step being `next`: when time
/// goes forward (`next > t`), lengths only shrink, so the sequences past `n_next` are done for
/// good and need not be kept (nor handed over); otherwise all of `bs`.
fn still_running(
    dims: &Dims<'_>,
    bs: std::ops::Range<usize>,
    t: usize,
    next: usize,
) -> std::ops::Range<usize> {
    if next > t {
        bs.start..bs.end.min(dims.running(next)).max(bs.start)
    } else {
        bs
    }
}

/// What the backward time loop of one layer-direction works on, shared by the threads of a
/// split loop: the forward's results (read-only) and the gate gradients it writes.
#[derive(Debug)]
pub(super) struct BackwardLoop<'a, T: Float> {
    pub(super) cell: CellKind,
    pub(super) dims: Dims<'a>,
    pub(super) gh: usize,
    pub(super) rows_out: usize,
    pub(super) r0: usize,
    pub(super) h0: &'a [T],
    pub(super) c0: &'a [T],
    pub(super) out: &'a [T],
    pub(super) dy: &'a [T],
    pub(super) hidden_n: &'a [T],
    pub(super) cells: &'a [T],
    /// Rows per column of the gate buffer (`G·H`, a GRU's `4H`), and the first of its hidden
    /// side ([`GateLayout`](crate::gates::GateLayout)).
    pub(super) d_rows: usize,
    pub(super) hidden_row: usize,
    /// The forward's gates, which the cells turn into the gate gradients `dG` step by step.
    pub(super) d_gates: SharedCols<'a, T>,
    /// The running `dh` (and `dc`, empty without a cell state) of every sequence, `(H, B)`: this
    /// slot's columns of the state gradient, turned from `∂L/∂(h_n, c_n)` into `∂L/∂(h0, c0)`.
    pub(super) dh: SharedCols<'a, T>,
    pub(super) dc: SharedCols<'a, T>,
    pub(super) packed: &'a PackedMatrix<T>,
}

/// The backward time loop for the sequences `bs`, from step index `first` (of the backward's
/// order) to the end, carrying their running `dh`, `dc` (columns `b` of `lp.dh`, `lp.dc`). With
/// `handoff`, it may give the second half of its sequences to another side at a step boundary
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
    let (h, steps) = (dims.hidden, dims.steps);
    let mut bs = bs;
    for s in first..steps {
        // Steps in the reverse of the forward's order; the running sequences of `bs`.
        let t = dims.step(steps - 1 - s);
        let (b0, end) = (bs.start, bs.end.min(dims.running(t)));
        let nb = end.saturating_sub(b0);
        // SAFETY (every `cols`/`cols_mut` below): the columns are `off[t] + b` (or `b` of `dh`,
        // `dc`) with `b` in `bs`, this call's own (from the caller), and each slice is dropped
        // before another one of the same columns is made.
        for b in b0..end {
            let col = dims.col(t) + b;
            let prev = dims.prev_of(t, b);
            let dh = unsafe { lp.dh.cols_mut(b, 1) };
            let dy_col = &lp.dy[col * rows_out + r0..][..h];
            let h_prev = match prev {
                Some(tp) => &lp.out[(dims.col(tp) + b) * rows_out + r0..][..h],
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
                        Some(tp) => &lp.cells[(dims.col(tp) + b) * h..][..h],
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
        if nb == 0 {
            if let Some((hand, side)) = handoff {
                if s + 1 < steps {
                    bs = still_running(&dims, bs, t, dims.step(steps - 2 - s));
                }
                bs = hand.poll(side, bs, s, steps);
            }
            continue;
        }
        let d_g = unsafe { lp.d_gates.cols(dims.col(t) + b0, nb) };
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
            slow_down(hand, side);
            if s + 1 < steps {
                bs = still_running(&dims, bs, t, dims.step(steps - 2 - s));
            }
            bs = hand.poll(side, bs, s, steps);
        }
    }
}
