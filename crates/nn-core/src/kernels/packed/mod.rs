//! A matrix product with a pre-packed left operand, for recurrent time loops.
//!
//! # What it computes
//!
//! [`packed_matmul`] computes `C = op(A) · B` ([`Accum::Replace`]) or `C += op(A) · B`
//! ([`Accum::Add`]), where `op(A)` is `m x k` (`A` or `Aᵀ`, fixed when packing), `B` is
//! `k x n` and `C` is `m x n`. `B` and `C` may be any nalgebra matrix or view (a column range of
//! a bigger sequence matrix, say); column-major with unit row stride is the fast path, other
//! strides are handled correctly, a little slower.
//!
//! # Why
//!
//! A recurrent layer runs, at every step `t`, `G_t += W_hh · h_{t-1}` (`W_hh` is `(G·H) x H`,
//! `h` is `H x B` with a batch `B` of 1 to 64 columns) and, backwards, `dh = W_hhᵀ · dG_t`. The
//! weight is the same for all `T` steps. `matrixmultiply` re-packs both operands and allocates
//! a packing buffer on every call, which dominates for small `B`. Here `op(A)` is packed once per
//! pass into a [`PackedMatrix`] that owns (and reuses) its buffer; each step then runs with no
//! heap allocation and no packing of `A`. `B` is not packed at all: it is read in place.
//!
//! # Layout
//!
//! `op(A)` is cut into row panels of `MR` rows (`MR` = 16 for `f32`, 8 for `f64`: two 256-bit
//! vectors). Panel `p` holds rows `p·MR .. p·MR + MR`, stored k-major: element `(p·MR + i, kk)`
//! is at `buf[p·MR·k + kk·MR + i]`. The last panel is zero-padded to `MR` rows. The kernel thus
//! reads one panel front to back as contiguous vectors while broadcasting `B` scalars.
//!
//! Packing `A` (column-major) copies contiguous runs of each column. Packing `Aᵀ` (the backward
//! loop's `W_hhᵀ`) is a transpose: full `f32` panels go through 8x8 AVX register transposes when
//! the kernel's AVX2/FMA copy is in use (several times faster than the scalar loop; figures in
//! PERF.md), the rest through a loop blocked so that the part of the panel it writes stays in L1.
//! Both copy bits, so the layout is the same either way
//! (`packing_gives_the_documented_layout_whatever_the_buffer_held`).
//!
//! # Kernel
//!
//! A register-blocked micro-kernel keeps an `MR x NR` tile of `C` (`NR` ≤ 6 columns of `B`) in
//! fixed-size local arrays that LLVM keeps in vector registers, with the `k` loop innermost over
//! the packed panel. For very narrow `B` (1 to 3 columns, the matrix-vector case) it works on
//! several panels at once instead, so that enough independent accumulators hide the latency of
//! the multiply-adds. The body is compiled three times from one `#[inline(always)]` generic
//! function, and the copy is chosen at run time: inside a
//! `#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]` wrapper where the CPU has AVX-512
//! (a 16-row `f32` panel is then one 512-bit register, so a tile takes half the instructions),
//! inside an `avx2,fma` wrapper where it has AVX2 and FMA (two 256-bit registers per panel), both
//! with fused multiply-adds, and plainly (separate multiply and add) for other CPUs. On a core
//! with two 512-bit FMA ports (Intel's AVX-512 cores,
//! [`has_avx512_two_ports`](crate::kernels::simd::has_avx512_two_ports)) the AVX-512 copy takes
//! four panels per tile (`4·MR x 6`, 24 independent sums: two ports of latency 4 need at least
//! 8 in flight); elsewhere (Zen 4: one 512-bit operation per cycle) one panel (`MR x 6`, 6 sums).
//! The packing is the same for both.
//!
//! Every element of `C` is the same sum in the same order whatever the tile shape or the thread
//! split: `acc = 0; for kk in 0..k { acc = acc + op(A)[i, kk] · B[kk, j] }` (fused on the AVX2
//! and AVX-512 paths, which therefore give the same bits), then `C = acc` or `C = C + acc`. So
//! the result does not depend on `n`, on the column offset, or on how many threads ran, only on
//! whether the multiply-adds are fused.
//!
//! # Two terms
//!
//! [`packed_matmul_pair`] computes `C (=|+=) op(A1) · B1 + op(A2) · B2` for two packings of the
//! same rows: each tile runs its chain of multiply-adds over `op(A1)`'s `k1` columns, then on over
//! `op(A2)`'s `k2`, so the result has the bits of the concatenated `[op(A1) op(A2)] · [B1; B2]`
//! without building either concatenation. A recurrent layer's forward step
//! `W_ih x_t + W_hh h_{t-1}` uses it, `x_t` and `h_{t-1}` read in place.
//!
//! # Threads
//!
//! [`packed_matmul`] runs on the calling thread. [`packed_matmul_threaded`] (opt-in) shares the
//! panels (chunks of rows of `C`) of large products (`m·k·n` ≥ [`PARALLEL_MIN_MACS`]) between
//! the threads of [`pool`](crate::kernels::pool), without allocating.
//! Splitting rows does not change any sum, so the results are bit-identical to
//! [`packed_matmul`]'s.
//!
//! # Files
//!
//! This file holds the entry points and the problem they describe; `pack.rs` the packing
//! ([`PackedMatrix`]), `kernel.rs` the micro-kernel and its per-ISA copies, `threaded.rs` the
//! sharing of panels with the pool's threads, `tests.rs` the tests.

mod kernel;
mod pack;
mod threaded;

#[cfg(test)]
pub(crate) mod tests;

pub use pack::PackedMatrix;

use crate::Accum;
use crate::Float;
use crate::kernels::simd::Isa;
use crate::kernels::thresholds::PARALLEL_MIN_MACS;
use kernel::run_panels;
use nalgebra::{Dim, Matrix, RawStorage, RawStorageMut};
use pack::panel_rows;

/// One product, as raw parts. `a` is the packed buffer (`panels · MR · k` values), `b` is
/// `k x n` and `c` is `m x n`, each with its element strides. `second` is the optional second
/// term of [`packed_matmul_pair`], whose sums continue each element's chain of `a · b`.
#[derive(Clone, Copy, Debug)]
struct Problem<T> {
    m: usize,
    k: usize,
    n: usize,
    a: *const T,
    b: *const T,
    rsb: isize,
    csb: isize,
    second: Segment<T>,
    c: *mut T,
    rsc: isize,
    csc: isize,
    add: bool,
}

/// A second `op(A2) · B2` term: `a` the packed buffer (`panels · MR · k`, the same panels as the
/// first term's), `b` the `k x n` block with element strides `(rsb, csb)`. `k == 0`: no term.
#[derive(Clone, Copy, Debug)]
struct Segment<T> {
    k: usize,
    a: *const T,
    b: *const T,
    rsb: isize,
    csb: isize,
}

impl<T: Float> Segment<T> {
    /// The term `op(a) · b`, `b` read in place at its strides.
    fn of<R: Dim, C: Dim, S: RawStorage<T, R, C>>(
        a: &PackedMatrix<T>,
        b: &Matrix<T, R, C, S>,
    ) -> Self {
        let (rsb, csb) = b.strides();
        Segment {
            k: a.cols,
            a: a.buf.as_ptr(),
            b: b.data.ptr(),
            rsb: rsb as isize,
            csb: csb as isize,
        }
    }

    /// No second term.
    fn none() -> Self {
        Segment {
            k: 0,
            a: std::ptr::null(),
            b: std::ptr::null(),
            rsb: 0,
            csb: 0,
        }
    }
}

/// `C (=|+=) op(A) · B` with a packed `op(A)`, on the calling thread, allocating nothing.
///
/// `c` is `m x n`, `a` holds `op(A)` (`m x k`), `b` is `k x n`. With [`Accum::Replace`] the old
/// contents of `c` are not read (they may be NaN); with [`Accum::Add`] the product is added.
///
/// # Panics
/// When the shapes do not fit; this is an internal kernel, and callers check shapes first.
#[track_caller]
pub fn packed_matmul<T, R1, C1, SC, R2, C2, SB>(
    c: &mut Matrix<T, R1, C1, SC>,
    accum: Accum,
    a: &PackedMatrix<T>,
    b: &Matrix<T, R2, C2, SB>,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SC: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
{
    packed_matmul_with(c, accum, a, b, crate::kernels::simd::best_isa(), false);
}

/// [`packed_matmul`], sharing products of at least [`PARALLEL_MIN_MACS`] multiply-adds with a
/// the pool's helper threads (see [Threads](self#threads)); the result is the same, bit for bit.
///
/// Opt-in: on an idle two-core machine it runs the large shapes faster (figures in PERF.md), but
/// when the other core is busy (other processes, or the caller's own threads) the helper may be
/// descheduled while holding rows, and the call can be slower than [`packed_matmul`].
///
/// # Panics
/// As [`packed_matmul`].
#[track_caller]
pub fn packed_matmul_threaded<T, R1, C1, SC, R2, C2, SB>(
    c: &mut Matrix<T, R1, C1, SC>,
    accum: Accum,
    a: &PackedMatrix<T>,
    b: &Matrix<T, R2, C2, SB>,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SC: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
{
    packed_matmul_with(c, accum, a, b, crate::kernels::simd::best_isa(), true);
}

/// `C (=|+=) op(A1) · B1 + op(A2) · B2` with two packed left operands of the same rows, on the
/// calling thread, allocating nothing: the product of `[op(A1) op(A2)]` and `[B1; B2]` without
/// building either. Each element is one chain of multiply-adds over `op(A1)`'s `k1` columns,
/// then on over `op(A2)`'s `k2`, so the result has the bits of [`packed_matmul`] of the two
/// concatenations (test `pair_has_the_bits_of_the_concatenated_product`).
///
/// A recurrent layer's forward step is `G_t = W_ih x_t + W_hh h_{t-1}`: with the pair, the input
/// projection is computed inside the time loop and the gates are written once, instead of a
/// whole-sequence product writing the `(G·H, T·B)` gate buffer and every step reading it back.
///
/// # Panics
/// When the shapes do not fit (`op(A1)` is `m x k1`, `op(A2)` `m x k2`, `B1` `k1 x n`, `B2`
/// `k2 x n`, `C` `m x n`); this is an internal kernel, and callers check shapes first.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn packed_matmul_pair<T, R1, C1, SC, R2, C2, SB, R3, C3, SB2>(
    c: &mut Matrix<T, R1, C1, SC>,
    accum: Accum,
    a1: &PackedMatrix<T>,
    b1: &Matrix<T, R2, C2, SB>,
    a2: &PackedMatrix<T>,
    b2: &Matrix<T, R3, C3, SB2>,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SC: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
    R3: Dim,
    C3: Dim,
    SB2: RawStorage<T, R3, C3>,
{
    let (k2, n2) = b2.shape();
    assert!(
        a2.rows == a1.rows && a2.cols == k2 && n2 == b1.ncols(),
        "packed_matmul_pair: second term ({}x{}) * ({k2}x{n2}) beside ({}x{}) * ({}x{})",
        a2.rows,
        a2.cols,
        a1.rows,
        a1.cols,
        b1.nrows(),
        b1.ncols()
    );
    let second = Segment::of(a2, b2);
    packed_matmul_terms(
        c,
        accum,
        a1,
        b1,
        second,
        crate::kernels::simd::best_isa(),
        false,
    );
}

/// [`packed_matmul`] on the given kernel copy, on the pool's threads when `allow_threads`
/// (the one-term form of [`packed_matmul_terms`], which the tests call on every copy).
#[track_caller]
fn packed_matmul_with<T, R1, C1, SC, R2, C2, SB>(
    c: &mut Matrix<T, R1, C1, SC>,
    accum: Accum,
    a: &PackedMatrix<T>,
    b: &Matrix<T, R2, C2, SB>,
    isa: Isa,
    allow_threads: bool,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SC: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
{
    packed_matmul_terms(c, accum, a, b, Segment::none(), isa, allow_threads);
}

/// [`packed_matmul_with`] with an optional `second` term ([`packed_matmul_pair`]).
#[track_caller]
fn packed_matmul_terms<T, R1, C1, SC, R2, C2, SB>(
    c: &mut Matrix<T, R1, C1, SC>,
    accum: Accum,
    a: &PackedMatrix<T>,
    b: &Matrix<T, R2, C2, SB>,
    second: Segment<T>,
    isa: Isa,
    allow_threads: bool,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SC: RawStorageMut<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
{
    let (m, k) = (a.rows, a.cols);
    let (k2, n) = b.shape();
    let (cm, cn) = c.shape();
    assert!(
        k == k2 && cm == m && cn == n,
        "packed_matmul: ({m}x{k}) * ({k2}x{n}) into ({cm}x{cn})"
    );
    let (rsb, csb) = b.strides();
    let (rsc, csc) = c.strides();
    // SAFETY: the shapes were checked above; `b` and `c` are nalgebra storages holding every
    // element their shape and strides describe, and `c` is a unique borrow, so it overlaps
    // neither `a` nor `b`.
    unsafe {
        run_parts(
            accum,
            a,
            b.data.ptr(),
            (rsb as isize, csb as isize),
            n,
            c.data.ptr_mut(),
            (rsc as isize, csc as isize),
            second,
            isa,
            allow_threads,
        )
    }
}

/// [`packed_matmul`] on raw parts: `C (=|+=) op(A) · B` with `op(A)` in `a` (`m x k`), `B` the
/// `k x n` block at `b` with element strides `(rsb, csb)` and `C` the `m x n` block at `c` with
/// strides `(rsc, csc)`; on the calling thread, allocating nothing.
///
/// # Safety
/// `b` must point to `k x n` readable elements and `c` to `m x n` writable elements at the given
/// strides, and `C` must not overlap `B` or be accessed otherwise during the call.
pub(crate) unsafe fn packed_matmul_raw<T: Float>(
    accum: Accum,
    a: &PackedMatrix<T>,
    b: *const T,
    b_strides: (isize, isize),
    n: usize,
    c: *mut T,
    c_strides: (isize, isize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        run_parts(
            accum,
            a,
            b,
            b_strides,
            n,
            c,
            c_strides,
            Segment::none(),
            crate::kernels::simd::best_isa(),
            false,
        )
    }
}

/// The product on raw parts, shared by [`packed_matmul`] (and its threaded and paired forms) and
/// [`packed_matmul_raw`]: handles the empty cases, then runs the panels on the calling thread,
/// or shares them with the pool's threads when `allow_threads` and the product is large.
///
/// # Safety
/// As [`packed_matmul_raw`], and a `second` term's `b` must point to `second.k x n` readable
/// elements at its strides, its `a` to a packing of `a`'s rows with `second.k` columns.
#[allow(clippy::too_many_arguments)]
unsafe fn run_parts<T: Float>(
    accum: Accum,
    a: &PackedMatrix<T>,
    b: *const T,
    (rsb, csb): (isize, isize),
    n: usize,
    c: *mut T,
    (rsc, csc): (isize, isize),
    second: Segment<T>,
    isa: Isa,
    allow_threads: bool,
) {
    let (m, k) = (a.rows, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k + second.k == 0 {
        if accum == Accum::Replace {
            for j in 0..n as isize {
                for i in 0..m as isize {
                    // SAFETY: inside the `m x n` block the caller vouches for.
                    unsafe { *c.offset(i * rsc + j * csc) = T::zero() };
                }
            }
        }
        return;
    }
    let prob = Problem {
        m,
        k,
        n,
        a: a.buf.as_ptr(),
        b,
        rsb,
        csb,
        second,
        c,
        rsc,
        csc,
        add: accum == Accum::Add,
    };
    let panels = m.div_ceil(panel_rows::<T>());
    // SAFETY: `a.buf` holds `panels · MR · k` values (pack's invariant); `b` and `c` as the
    // caller vouches.
    unsafe {
        if allow_threads && m * (k + second.k) * n >= PARALLEL_MIN_MACS && panels >= 4 {
            threaded::run(&prob, panels, isa);
        } else {
            run_panels(&prob, 0, panels, isa);
        }
    }
}
