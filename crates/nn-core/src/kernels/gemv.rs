//! Matrix–vector products for batch-1 (to 3-column) inference: `y (=|+=) A · x`, with `A`
//! `m x k`, `x` `k x n` (`n` small: one to three columns; more run in blocks of three) and `y`
//! `m x n`.
//!
//! # Sums
//!
//! Every element is one chain over `k` in order, as [`packed_matmul`] sums it:
//! `acc = 0; for kk in 0..k { acc = acc + A[i, kk] · x[kk, j] }` (fused multiply-adds on the
//! AVX2 and AVX-512 copies, separate multiply and add on the baseline copy, as the packed
//! kernel), then `y = acc` ([`Accum::Replace`]) or `y = y + acc` ([`Accum::Add`]). So a
//! recurrent step run here has the bits of the sequence forward's products, whatever the
//! thread split. [`gemv_sum`] runs two such products into one `y` (`y = y? + acc1`, then
//! `y = y + acc2`: two chains, as two calls would), [`gemv_two`] two products of the same rows
//! into two outputs (a GRU's `W_ih x` and `W_hh h`), each in one fork.
//!
//! # Layout
//!
//! [`GemvMatrix`] packs `A` once into k-major row panels of `P` rows (256 bytes: 64 `f32` or 32
//! `f64`): element `(p·P + i, kk)` at `p·P·k + kk·P + i`, so that a panel is read front to back
//! as one sequential stream. The last panel holds the remaining rows rounded up to a whole
//! 512-bit vector (16 `f32`, 8 `f64`), zero-padded, with that height as its stride. The buffer
//! starts on a 64-byte boundary, so every vector load is aligned. [`gemv_col_major`] reads an
//! unpacked column-major `A` in place (a `Dense` head's weight, which is a public field and
//! cannot be packed once): the same kernel, with stride `m` between `k`-slices.
//!
//! # Kernel
//!
//! For each block of rows the `k` loop keeps the block's accumulators in registers: on
//! AVX-512 two panels at once (8 independent 512-bit chains per column, enough for two FMA
//! ports at a latency of four cycles), on AVX2 one panel (8 chains of 256 bits), on the
//! baseline copy a half panel. One `#[inline(always)]` body compiled per copy, chosen by
//! `simd::Isa` as in the packed kernel.
//!
//! # Threads
//!
//! Products of at least [`GEMV_SPLIT_MIN_MACS`] multiply-adds are cut into two halves of
//! panels, the first on the calling thread and the second on the [`pool`]'s helper. The cut is
//! static (the same rows on the same side at every call), so each core streams the same half of
//! the weights from its own L2 at every step. Splitting rows changes no sum.
//!
//! [`packed_matmul`]: crate::kernels::packed::packed_matmul
//! [`pool`]: crate::kernels::pool

mod kernel;
#[cfg(test)]
mod tests;

use kernel::run_term;

use crate::kernels::simd::Isa;
use crate::kernels::thresholds::GEMV_SPLIT_MIN_MACS;
use crate::{Accum, Float};
use nalgebra::{Dim, Matrix, RawStorage, RawStorageMut};

/// Rows per packed panel: 256 bytes of `T`.
const fn panel_rows<T: Float>() -> usize {
    256 / T::BYTES
}

/// Rows per 512-bit vector: the last panel's height is a multiple of it.
const fn lane_rows<T: Float>() -> usize {
    64 / T::BYTES
}

/// `A` (`m x k`) packed into k-major row panels for [`gemv`] (see the [module docs](self)).
/// Pack once, run many times; re-packing reuses the buffer and allocates only to grow it.
#[derive(Clone, Debug, Default)]
pub struct GemvMatrix<T: Float> {
    /// The panels, from `buf[offset]` (64-byte aligned).
    buf: Vec<T>,
    offset: usize,
    rows: usize,
    cols: usize,
}

impl<T: Float> GemvMatrix<T> {
    /// An empty (`0 x 0`) packing; allocates nothing.
    pub fn new() -> Self {
        GemvMatrix {
            buf: Vec::new(),
            offset: 0,
            rows: 0,
            cols: 0,
        }
    }

    /// Rows of `A` (`m`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of `A` (`k`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Packs `a` (`m x k`, any strides), replacing the previous contents. Allocates only when
    /// the buffer must grow.
    pub fn pack<R: Dim, C: Dim, S: RawStorage<T, R, C>>(&mut self, a: &Matrix<T, R, C, S>) {
        let (m, k) = a.shape();
        let (p, v) = (panel_rows::<T>(), lane_rows::<T>());
        let full = m / p;
        let tail = (m - full * p).next_multiple_of(v);
        let len = (full * p + tail) * k;
        // Room to start on a 64-byte boundary wherever the allocator put the buffer.
        let need = len + v;
        if self.buf.len() < need {
            self.buf.resize(need, T::zero());
        }
        let off = self.buf.as_ptr().align_offset(64);
        self.offset = if off < v { off } else { 0 };
        self.rows = m;
        self.cols = k;
        let dst = &mut self.buf[self.offset..self.offset + len];
        for kk in 0..k {
            let col = a.column(kk);
            for panel in 0..=full {
                let (row0, height) = if panel < full {
                    (panel * p, p)
                } else {
                    (full * p, tail)
                };
                if height == 0 {
                    continue;
                }
                let start = row0 * k + kk * height;
                let out = &mut dst[start..start + height];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = if row0 + i < m {
                        col[row0 + i]
                    } else {
                        T::zero()
                    };
                }
            }
        }
    }

    /// The first packed value (64-byte aligned).
    fn ptr(&self) -> *const T {
        self.buf[self.offset..].as_ptr()
    }
}

/// Where a term's `A` lies: packed panels, or a column-major matrix read in place.
#[derive(Clone, Copy, Debug)]
pub(super) enum Layout {
    /// [`GemvMatrix`]'s panels.
    Packed,
    /// Column-major with `ld` values between columns (unit row stride).
    ColMajor { ld: usize },
}

/// One product `y (=|+=) A x` as raw parts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Term<T> {
    pub(super) a: *const T,
    pub(super) layout: Layout,
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) n: usize,
    pub(super) x: *const T,
    pub(super) rsx: isize,
    pub(super) csx: isize,
    pub(super) y: *mut T,
    pub(super) rsy: isize,
    pub(super) csy: isize,
    pub(super) add: bool,
}

/// Up to two terms over the same rows, run in order on each row block.
#[derive(Clone, Copy, Debug)]
struct Job<T> {
    terms: [Option<Term<T>>; 2],
    isa: Isa,
}

// SAFETY: the raw pointers describe storage the public entry points borrow for the whole call
// (outputs uniquely); the two halves of a split write disjoint rows.
unsafe impl<T: Send> Send for Job<T> {}
// SAFETY: as for `Send`; nothing is written through a shared `Job`.
unsafe impl<T: Sync> Sync for Job<T> {}

/// The raw parts of `x` (`k x n`) and `y` (`m x n`) after the shape checks.
#[track_caller]
fn term<T, R1, C1, SY, R2, C2, SX>(
    y: &mut Matrix<T, R1, C1, SY>,
    accum: Accum,
    a: *const T,
    layout: Layout,
    (m, k): (usize, usize),
    x: &Matrix<T, R2, C2, SX>,
) -> Term<T>
where
    T: Float,
    R1: Dim,
    C1: Dim,
    SY: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SX: RawStorage<T, R2, C2>,
{
    let (xk, n) = x.shape();
    assert!(
        xk == k && y.shape() == (m, n),
        "gemv: ({m}x{k}) * ({xk}x{n}) into {:?}",
        y.shape()
    );
    let (rsx, csx) = x.strides();
    let (rsy, csy) = y.strides();
    Term {
        a,
        layout,
        m,
        k,
        n,
        x: x.data.ptr(),
        rsx: rsx as isize,
        csx: csx as isize,
        y: y.data.ptr_mut(),
        rsy: rsy as isize,
        csy: csy as isize,
        add: accum == Accum::Add,
    }
}

fn packed_term<T, R1, C1, SY, R2, C2, SX>(
    y: &mut Matrix<T, R1, C1, SY>,
    accum: Accum,
    a: &GemvMatrix<T>,
    x: &Matrix<T, R2, C2, SX>,
) -> Term<T>
where
    T: Float,
    R1: Dim,
    C1: Dim,
    SY: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SX: RawStorage<T, R2, C2>,
{
    term(y, accum, a.ptr(), Layout::Packed, (a.rows, a.cols), x)
}

/// `y (=|+=) A x` with a packed `A` (`m x k`), `x` `k x n`, `y` `m x n`; large products on
/// both threads (static halves of rows). Allocates nothing.
///
/// # Panics
/// When the shapes do not fit; an internal kernel, callers check shapes first.
#[track_caller]
pub fn gemv<T, R1, C1, SY, R2, C2, SX>(
    y: &mut Matrix<T, R1, C1, SY>,
    accum: Accum,
    a: &GemvMatrix<T>,
    x: &Matrix<T, R2, C2, SX>,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SY: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SX: RawStorage<T, R2, C2>,
{
    let t = packed_term(y, accum, a, x);
    // SAFETY: `term` checked the shapes; `x` and `y` are storages holding what their shapes and
    // strides describe, `y` a unique borrow (so it overlaps neither `a` nor `x`).
    unsafe { run(Job::of([Some(t), None]), true) };
}

/// `y (=|+=) A1 x1`, then `y += A2 x2` (two chains, the bits of two [`gemv`] calls), with `A1`
/// and `A2` of the same rows, in one pass per row block and one fork: a recurrent step's
/// `W_ih x_t + W_hh h_{t-1}` as the sequence forward sums it below a batch of 24.
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gemv_sum<T, R1, C1, SY, R2, C2, SX, R3, C3, SX2>(
    y: &mut Matrix<T, R1, C1, SY>,
    accum: Accum,
    a1: &GemvMatrix<T>,
    x1: &Matrix<T, R2, C2, SX>,
    a2: &GemvMatrix<T>,
    x2: &Matrix<T, R3, C3, SX2>,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SY: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SX: RawStorage<T, R2, C2>,
    R3: Dim,
    C3: Dim,
    SX2: RawStorage<T, R3, C3>,
{
    let t1 = packed_term(y, accum, a1, x1);
    let t2 = packed_term(y, Accum::Add, a2, x2);
    // SAFETY: as in `gemv`; both terms write the same rows of `y`, the second after the first
    // on each row block (one thread owns a block).
    unsafe { run(Job::of([Some(t1), Some(t2)]), true) };
}

/// `y1 = A1 x1` and `y2 = A2 x2` for `A1`, `A2` of the same rows, in one fork (a GRU step's
/// `W_ih x_t` and `W_hh h_{t-1}`, which it keeps apart).
///
/// # Panics
/// When the shapes do not fit.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn gemv_two<T, R1, C1, SY, R2, C2, SX, R4, C4, SY2, R3, C3, SX2>(
    y1: &mut Matrix<T, R1, C1, SY>,
    a1: &GemvMatrix<T>,
    x1: &Matrix<T, R2, C2, SX>,
    y2: &mut Matrix<T, R4, C4, SY2>,
    a2: &GemvMatrix<T>,
    x2: &Matrix<T, R3, C3, SX2>,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SY: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SX: RawStorage<T, R2, C2>,
    R4: Dim,
    C4: Dim,
    SY2: RawStorageMut<T, R4, C4>,
    R3: Dim,
    C3: Dim,
    SX2: RawStorage<T, R3, C3>,
{
    assert_eq!(a1.rows, a2.rows, "gemv_two: the terms' rows differ");
    let t1 = packed_term(y1, Accum::Replace, a1, x1);
    let t2 = packed_term(y2, Accum::Replace, a2, x2);
    // SAFETY: as in `gemv`; `y1` and `y2` are distinct unique borrows.
    unsafe { run(Job::of([Some(t1), Some(t2)]), true) };
}

/// `y (=|+=) A x` with `A` (`m x k`) column-major in place (unit row stride), e.g. a `Dense`
/// weight: the same sums as [`gemv`] on its packing.
///
/// # Panics
/// When the shapes do not fit, or `A`'s rows are not contiguous.
#[track_caller]
pub fn gemv_col_major<T, R0, C0, SA, R1, C1, SY, R2, C2, SX>(
    y: &mut Matrix<T, R1, C1, SY>,
    accum: Accum,
    a: &Matrix<T, R0, C0, SA>,
    x: &Matrix<T, R2, C2, SX>,
) where
    T: Float,
    R0: Dim,
    C0: Dim,
    SA: RawStorage<T, R0, C0>,
    R1: Dim,
    C1: Dim,
    SY: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SX: RawStorage<T, R2, C2>,
{
    let (rs, cs) = a.strides();
    assert!(
        rs == 1 || a.nrows() <= 1,
        "gemv_col_major: rows not contiguous"
    );
    let layout = Layout::ColMajor { ld: cs };
    let t = term(y, accum, a.data.ptr(), layout, a.shape(), x);
    // SAFETY: as in `gemv`; `a` holds `m x k` values at `i + kk·ld`.
    unsafe { run(Job::of([Some(t), None]), true) };
}

/// The obvious loops, the tests' reference: each element one chain over `k` in order, fused
/// (`mul_add`) or not, then written or added.
pub fn gemv_naive<T: Float>(
    y: &mut nalgebra::DMatrix<T>,
    accum: Accum,
    a: &nalgebra::DMatrix<T>,
    x: &nalgebra::DMatrix<T>,
    fused: bool,
) {
    for j in 0..x.ncols() {
        for i in 0..a.nrows() {
            if a.ncols() == 0 {
                if accum == Accum::Replace {
                    y[(i, j)] = T::zero();
                }
                continue;
            }
            let mut acc = T::zero();
            for kk in 0..a.ncols() {
                acc = if fused {
                    a[(i, kk)].mul_add(x[(kk, j)], acc)
                } else {
                    acc + a[(i, kk)] * x[(kk, j)]
                };
            }
            y[(i, j)] = if accum == Accum::Add {
                y[(i, j)] + acc
            } else {
                acc
            };
        }
    }
}

impl<T: Float> Job<T> {
    fn of(terms: [Option<Term<T>>; 2]) -> Self {
        Job {
            terms,
            isa: crate::kernels::simd::best_isa(),
        }
    }

    /// Row blocks (panels) of the rows, shared by every term.
    fn units(&self) -> usize {
        self.terms[0].map_or(0, |t| t.m.div_ceil(panel_rows::<T>()))
    }

    /// Multiply-adds of all terms.
    fn macs(&self) -> usize {
        self.terms
            .iter()
            .flatten()
            .map(|t| t.m.saturating_mul(t.k).saturating_mul(t.n))
            .fold(0, usize::saturating_add)
    }

    /// Row blocks `u0..u1` of every term, in order.
    ///
    /// # Safety
    /// As [`run`], and no other thread writes these rows meanwhile.
    unsafe fn run_units(&self, u0: usize, u1: usize) {
        for t in self.terms.iter().flatten() {
            // SAFETY: forwarded.
            unsafe { run_term(t, u0, u1, self.isa) };
        }
    }
}

/// Runs the job, on both threads when `allow_split` and it is large.
///
/// # Safety
/// Every term's pointers describe valid storage for the call (`A` as its layout, `x` `k x n`,
/// `y` `m x n` at their strides), outputs overlap no input, and terms writing the same `y` come
/// in the order they must run.
unsafe fn run<T: Float>(job: Job<T>, allow_split: bool) {
    let units = job.units();
    if units == 0 {
        return;
    }
    if allow_split && units >= 2 && job.macs() >= GEMV_SPLIT_MIN_MACS {
        // Static halves: the caller always takes the first panels, the helper the rest.
        let mid = units / 2;
        let job = &job;
        // SAFETY: disjoint rows on each side; the rest from the caller.
        crate::kernels::pool::join(
            || unsafe { job.run_units(0, mid) },
            move || unsafe { job.run_units(mid, units) },
        );
    } else {
        // SAFETY: from the caller.
        unsafe { job.run_units(0, units) };
    }
}

/// [`gemv`] and [`gemv_col_major`] on a chosen copy and split, for the tests.
#[cfg(test)]
pub(crate) fn gemv_with<T: Float>(
    y: &mut nalgebra::DMatrix<T>,
    accum: Accum,
    a: &nalgebra::DMatrix<T>,
    packed: Option<&GemvMatrix<T>>,
    x: &nalgebra::DMatrix<T>,
    isa: Isa,
    split: bool,
) {
    let t = match packed {
        Some(p) => packed_term(y, accum, p, x),
        None => term(
            y,
            accum,
            a.as_ptr(),
            Layout::ColMajor { ld: a.nrows() },
            a.shape(),
            x,
        ),
    };
    let job = Job {
        terms: [Some(t), None],
        isa,
    };
    let units = job.units();
    // SAFETY: as in `gemv`; with `split` the halves run one after the other here.
    unsafe {
        if split && units >= 2 {
            job.run_units(0, units / 2);
            job.run_units(units / 2, units);
        } else {
            job.run_units(0, units);
        }
    }
}
