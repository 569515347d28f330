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
//! with fused multiply-adds, and plainly (separate multiply and add) for other CPUs.
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
//! the calling thread and the helper thread of [`pool`](crate::kernels::pool), without allocating.
//! Splitting rows does not change any sum, so the results are bit-identical to
//! [`packed_matmul`]'s.

use crate::Float;
use crate::kernels::simd::Isa;
use crate::kernels::thresholds::{PACK_SPLIT_MIN_VALUES, PARALLEL_MIN_MACS};
use crate::{Accum, Trans};
use nalgebra::{Dim, Matrix, RawStorage, RawStorageMut};

/// Widest column block of the micro-kernel (columns of `B` per tile).
const NR: usize = 6;

/// Rows per packed panel for `T`: two 256-bit vectors (16 `f32` or 8 `f64`).
const fn panel_rows<T: Float>() -> usize {
    64 / T::BYTES
}

/// A pointer to the matrix being packed, shared by the two halves of a packing (which only
/// read through it).
#[derive(Clone, Copy)]
struct SendPtr<T>(*const T);

// SAFETY: only used by `pack`, whose `&` borrow of the matrix outlives both halves; nothing
// writes through it.
unsafe impl<T: Sync> Send for SendPtr<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Sync> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole `SendPtr`, not its field).
    fn get(self) -> *const T {
        self.0
    }
}

/// `op(A)` packed into zero-padded, k-major row panels (see the [module docs](self)).
///
/// Pack once with [`pack`](Self::pack), then run [`packed_matmul`] as often as needed. Re-packing
/// reuses the buffer and allocates only when it must grow.
#[derive(Clone, Debug, Default)]
pub struct PackedMatrix<T: Float> {
    buf: Vec<T>,
    rows: usize,
    cols: usize,
}

impl<T: Float> PackedMatrix<T> {
    /// Rows per panel for this scalar type.
    pub const MR: usize = panel_rows::<T>();

    /// An empty (`0 x 0`) packed matrix; allocates nothing.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            rows: 0,
            cols: 0,
        }
    }

    /// Packs `op(a)` (`a` or `aᵀ`, as `trans` says), replacing the previous contents. Allocates
    /// only when the buffer must grow.
    pub fn pack<R: Dim, C: Dim, S: RawStorage<T, R, C>>(
        &mut self,
        a: &Matrix<T, R, C, S>,
        trans: Trans,
    ) {
        let mr = Self::MR;
        let (m, k) = match trans {
            Trans::No => a.shape(),
            Trans::Yes => (a.ncols(), a.nrows()),
        };
        let panels = m.div_ceil(mr);
        let panel_len = mr * k;
        // Every value is written below (the last panel's padding rows as zeros), so the old
        // contents need no clearing: `resize` only grows or truncates.
        self.buf.resize(panels * panel_len, T::zero());
        self.rows = m;
        self.cols = k;
        if k == 0 {
            return;
        }
        // op(A)[r, kk] is at `r·rs + kk·cs` from `a`'s first element.
        let (rs, cs) = match trans {
            Trans::No => a.strides(),
            Trans::Yes => (a.strides().1, a.strides().0),
        };
        let src = SendPtr(a.data.ptr());
        let use_avx = cfg!(target_arch = "x86_64") && crate::kernels::simd::has_avx2_fma();
        // Panels `p0..` into `panels`.
        let pack_panels = move |panels: &mut [T], p0: usize| {
            for (p, panel) in panels.chunks_exact_mut(panel_len).enumerate() {
                let row0 = (p0 + p) * mr;
                let rows = mr.min(m - row0);
                let src = src.get();
                if rs == 1 {
                    // Each k-slice of the panel is a contiguous run of rows of `op(A)`'s column
                    // `kk`.
                    for (kk, dst) in panel.chunks_exact_mut(mr).enumerate() {
                        // SAFETY: rows `row0 .. row0 + rows` and column `kk` of `op(A)` are
                        // inside `a` (`m x k` as `op(A)`), and they are contiguous (`rs == 1`).
                        let col =
                            unsafe { std::slice::from_raw_parts(src.add(row0 + kk * cs), rows) };
                        dst[..rows].copy_from_slice(col);
                    }
                } else if cs == 1 && rows == mr && T::BYTES == 4 && use_avx {
                    // SAFETY: AVX is there (`use_avx`); rows `row0 .. row0 + 16` of `op(A)` are
                    // inside `a`, each `k` contiguous values (`cs == 1`) `rs` apart; `T` is
                    // `f32` (4 bytes), and the panel holds `16 · k` values.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        transpose_panel_f32(
                            src.add(row0 * rs) as *const f32,
                            rs,
                            k,
                            panel.as_mut_ptr() as *mut f32,
                        )
                    };
                } else {
                    // A transpose (`op(A) = Aᵀ` of a column-major `A`: row `i` of `op(A)` is a
                    // contiguous column of `A` when `cs == 1`). Blocks of `KB` k-slices, so that
                    // the part of the panel being written (`KB · MR` values) stays in L1 while
                    // the panel's rows are read one after the other.
                    const KB: usize = 64;
                    for k0 in (0..k).step_by(KB) {
                        let k1 = (k0 + KB).min(k);
                        for i in 0..rows {
                            for kk in k0..k1 {
                                // SAFETY: `row0 + i < m` and `kk < k`: an element of `op(A)`.
                                panel[kk * mr + i] = unsafe { *src.add((row0 + i) * rs + kk * cs) };
                            }
                        }
                    }
                }
                if rows < mr {
                    for dst in panel.chunks_exact_mut(mr) {
                        dst[rows..].fill(T::zero());
                    }
                }
            }
        };
        if self.buf.len() >= PACK_SPLIT_MIN_VALUES && panels >= 2 {
            // Two halves of the panels at once (the pool's helper packs the second).
            let half = panels / 2;
            let (lo, hi) = self.buf.split_at_mut(half * panel_len);
            crate::kernels::pool::join(|| pack_panels(lo, 0), || pack_panels(hi, half));
        } else {
            pack_panels(&mut self.buf, 0);
        }
    }

    /// Rows of `op(A)` (`m`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of `op(A)` (`k`).
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// `dst[kk·16 + i] = src[i·rs + kk]` for `i < 16`, `kk < k`: one full `f32` panel of a
/// transposed packing (sixteen rows of `op(A)`, each `k` contiguous values, `rs` apart), by 8x8
/// transposes in registers, eight k-slices at a time. It copies bits, so it gives the same
/// layout as the scalar loop in [`PackedMatrix::pack`] (both are tested against the layout's
/// definition, `packing_gives_the_documented_layout_whatever_the_buffer_held`).
///
/// # Safety
/// The CPU has AVX; `src[i·rs + kk]` is readable and `dst[0 .. 16·k]` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_panel_f32(src: *const f32, rs: usize, k: usize, dst: *mut f32) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): AVX is enabled (the caller's promise); every load reads
    // `src[i·rs + kk .. + 8]` with `i < 16`, `kk + 8 ≤ k`, every store writes
    // `dst[kk·16 .. + 16·8]`, both inside what the caller promised.
    unsafe {
        let mut kk = 0;
        while kk + 8 <= k {
            for half in 0..2 {
                let s = src.add(half * 8 * rs + kk);
                let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * rs)));
                // Rows a..h (r[0..8]) of eight values each; after the three stages, `o[j]`
                // holds value `j` of every row.
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let o = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (j, v) in o.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((kk + j) * 16 + half * 8), v);
                }
            }
            kk += 8;
        }
        for kk in kk..k {
            for i in 0..16 {
                *dst.add(kk * 16 + i) = *src.add(i * rs + kk);
            }
        }
    }
}

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
/// helper thread (see [Threads](self#threads)); the result is the same, bit for bit.
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

/// [`packed_matmul`] on the given kernel copy, on the pool's two threads when `allow_threads`
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
/// or shares them with the helper thread when `allow_threads` and the product is large.
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
            parallel::run(&prob, panels, isa);
        } else {
            run_panels(&prob, 0, panels, isa);
        }
    }
}

/// Panels per unit of work claimed by a thread: one panel, or four for very narrow `B` (where
/// the kernel works on four panels at once).
fn chunk_panels(n: usize) -> usize {
    if n <= 3 { 4 } else { 1 }
}

/// Large products shared with the [`pool`](crate::kernels::pool)'s helper thread.
///
/// Both threads claim chunks of panels from a shared counter until none is left, so a helper
/// that is slow to start simply takes fewer (or none: [`pool::join`](crate::kernels::pool::join) then
/// runs its side on the caller, where it finds nothing left to do). Each panel is computed the
/// same way by either thread, so results are bit-identical to the single-thread ones.
mod parallel {
    use super::{Isa, Problem, chunk_panels, run_panels};
    use crate::Float;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Job<T> {
        prob: Problem<T>,
        isa: Isa,
        panels: usize,
        next: AtomicUsize,
    }

    // SAFETY: the job's raw pointers describe storage the caller of [`run`] vouches for until
    // both sides have returned; each chunk of rows of `C` is claimed by exactly one thread.
    unsafe impl<T: Send> Sync for Job<T> {}

    impl<T: Float> Job<T> {
        /// Claims chunks of panels until none is left.
        ///
        /// # Safety
        /// As [`run`].
        unsafe fn work(&self) {
            let chunk = chunk_panels(self.prob.n);
            loop {
                let p0 = self.next.fetch_add(chunk, Ordering::Relaxed);
                if p0 >= self.panels {
                    return;
                }
                let p1 = (p0 + chunk).min(self.panels);
                // SAFETY: each chunk is claimed by exactly one thread, so the rows of `C` it
                // writes are written by no one else; the rest is as `run_panels` requires.
                unsafe { run_panels(&self.prob, p0, p1, self.isa) };
            }
        }
    }

    /// Runs all `panels` of `prob`, sharing them with the pool's helper thread.
    ///
    /// # Safety
    /// As [`super::run_panels`] for the whole panel range.
    pub(super) unsafe fn run<T: Float>(prob: &Problem<T>, panels: usize, isa: Isa) {
        let job = Job {
            prob: *prob,
            isa,
            panels,
            next: AtomicUsize::new(0),
        };
        let job = &job;
        // SAFETY: from the caller, for both sides.
        crate::kernels::pool::join(|| unsafe { job.work() }, move || unsafe { job.work() });
    }
}

/// Runs panels `p0..p1` of the product on the given kernel.
///
/// # Safety
/// `prob` must describe valid storage as [`packed_matmul`] sets it up, with `p1` at most the
/// number of panels; no other thread may write the same rows of `C` meanwhile.
unsafe fn run_panels<T: Float>(prob: &Problem<T>, p0: usize, p1: usize, isa: Isa) {
    match isa {
        // SAFETY: forwarded from the caller.
        Isa::Generic => unsafe { drive::<T, false>(prob, p0, p1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` is only chosen after run-time detection of avx2 and fma
        // (`simd::best_isa`, or `simd::available_isas` in tests); the rest is forwarded from the caller.
        Isa::Avx2Fma => unsafe { drive_avx2_fma::<T>(prob, p0, p1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only chosen after run-time detection of avx512f, avx512vl, avx2
        // and fma (as `Avx2Fma`); the rest is forwarded from the caller.
        Isa::Avx512 => unsafe { drive_avx512::<T>(prob, p0, p1) },
    }
}

/// [`drive`] compiled with AVX-512F and VL enabled. The kernel has its own `target_feature`
/// wrappers rather than [`simd::run_on`](crate::kernels::simd::run_on)'s: LLVM does not inline a closure
/// this large into those, and the kernel would then run as compiled for the baseline CPU.
///
/// # Safety
/// The CPU must support avx512f, avx512vl, avx2 and fma; otherwise as [`run_panels`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn drive_avx512<T: Float>(prob: &Problem<T>, p0: usize, p1: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { drive::<T, true>(prob, p0, p1) }
}

/// [`drive`] compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support avx2 and fma; otherwise as [`run_panels`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn drive_avx2_fma<T: Float>(prob: &Problem<T>, p0: usize, p1: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { drive::<T, true>(prob, p0, p1) }
}

/// Picks the panel height for `T` (a const generic, so tile arrays have fixed sizes).
///
/// # Safety
/// As [`run_panels`].
#[inline(always)]
unsafe fn drive<T: Float, const FMA: bool>(prob: &Problem<T>, p0: usize, p1: usize) {
    // SAFETY: forwarded from the caller; the panel height matches `panel_rows::<T>()`.
    unsafe {
        match T::BYTES {
            4 => drive_mr::<T, 16, FMA>(prob, p0, p1),
            _ => drive_mr::<T, 8, FMA>(prob, p0, p1),
        }
    }
}

/// Width of the next column block when `rem` columns are left: blocks of 6, with the tail
/// balanced so that no block narrower than 3 follows wide ones (7 = 3 + 4, 8 = 4 + 4, 9 = 5 + 4).
#[inline(always)]
fn block_width(rem: usize) -> usize {
    if rem <= NR || rem >= NR + 4 {
        rem.min(NR)
    } else {
        rem - 4
    }
}

/// The loop over panels and column blocks, for panels `p0..p1`.
///
/// # Safety
/// As [`run_panels`], and `MR` must be the packing's panel height.
#[inline(always)]
unsafe fn drive_mr<T: Float, const MR: usize, const FMA: bool>(
    prob: &Problem<T>,
    p0: usize,
    p1: usize,
) {
    let k = prob.k;
    let n = prob.n;
    let panel_len = MR * k;
    // SAFETY (whole body): each tile call gets a panel index below the panel count, a column
    // block inside `0..n` and the number of valid rows of its panel(s), so every pointer formed
    // stays inside the storages `prob` describes.
    unsafe {
        if n <= 3 {
            // Matrix-vector-like: several panels at once, for enough independent accumulators.
            let mut p = p0;
            macro_rules! groups {
                ($pm:literal, $nr:literal) => {{
                    while p + $pm <= p1 {
                        tile::<T, MR, $pm, $nr, FMA>(prob, p, 0, panel_len);
                        p += $pm;
                    }
                    while p < p1 {
                        tile::<T, MR, 1, $nr, FMA>(prob, p, 0, panel_len);
                        p += 1;
                    }
                }};
            }
            match n {
                1 => groups!(4, 1),
                2 => groups!(3, 2),
                _ => groups!(2, 3),
            }
            return;
        }
        for p in p0..p1 {
            let mut j = 0;
            while j < n {
                let w = block_width(n - j);
                match w {
                    6 => tile::<T, MR, 1, 6, FMA>(prob, p, j, panel_len),
                    5 => tile::<T, MR, 1, 5, FMA>(prob, p, j, panel_len),
                    4 => tile::<T, MR, 1, 4, FMA>(prob, p, j, panel_len),
                    3 => tile::<T, MR, 1, 3, FMA>(prob, p, j, panel_len),
                    2 => tile::<T, MR, 1, 2, FMA>(prob, p, j, panel_len),
                    _ => tile::<T, MR, 1, 1, FMA>(prob, p, j, panel_len),
                }
                j += w;
            }
        }
    }
}

/// `acc + a·b`, fused or not.
#[inline(always)]
fn madd<T: Float, const FMA: bool>(a: T, b: T, acc: T) -> T {
    if FMA { a.mul_add(b, acc) } else { acc + a * b }
}

/// Continues each of the tile's sums `acc[j][q][i]` over `k` steps: `+= A[q][kk][i] · B[kk][j]`,
/// `A` the tile's first panel at `a0` (panel `q` at `q · panel_len`), `B` its first column at
/// `b0` (element `(kk, j)` at `kk · rsb + j · csb`).
///
/// # Safety
/// The `PM` panels from `a0` hold `k · MR` values each, and `B`'s `k x NR` elements are readable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn chain<T: Float, const MR: usize, const PM: usize, const NR: usize, const FMA: bool>(
    acc: &mut [[[T; MR]; PM]; NR],
    a0: *const T,
    panel_len: usize,
    b0: *const T,
    rsb: isize,
    csb: isize,
    k: usize,
) {
    for kk in 0..k {
        let mut av = [[T::zero(); MR]; PM];
        for q in 0..PM {
            for i in 0..MR {
                // SAFETY: `kk < k` and `i < MR`, so the index is inside panel `q`.
                av[q][i] = unsafe { *a0.add(q * panel_len + kk * MR + i) };
            }
        }
        for j in 0..NR {
            // SAFETY: `kk < k` and `j < NR`, an element of `B`.
            let bv = unsafe { *b0.offset(kk as isize * rsb + j as isize * csb) };
            for q in 0..PM {
                for i in 0..MR {
                    acc[j][q][i] = madd::<T, FMA>(av[q][i], bv, acc[j][q][i]);
                }
            }
        }
    }
}

/// One micro-tile: rows of panels `p .. p + PM` times columns `j0 .. j0 + NR` of `C`.
///
/// # Safety
/// Panels `p .. p + PM` must exist and columns `j0 .. j0 + NR` must lie inside `0..n`; otherwise
/// as [`run_panels`].
#[inline(always)]
unsafe fn tile<T: Float, const MR: usize, const PM: usize, const NR: usize, const FMA: bool>(
    prob: &Problem<T>,
    p: usize,
    j0: usize,
    panel_len: usize,
) {
    let mut acc = [[[T::zero(); MR]; PM]; NR];
    // SAFETY: panel `p` starts at `p · panel_len` in the packed buffer, and panels up to
    // `p + PM` exist; column `j0 + j < n` of `B` starts at `(j0 + j) · csb`. The same holds
    // for a second term's buffer (`MR · k` values per panel) and its `B`.
    unsafe {
        let a0 = prob.a.add(p * panel_len);
        let b0 = prob.b.offset(j0 as isize * prob.csb);
        chain::<T, MR, PM, NR, FMA>(&mut acc, a0, panel_len, b0, prob.rsb, prob.csb, prob.k);
        let s = prob.second;
        if s.k > 0 {
            let a0 = s.a.add(p * MR * s.k);
            let b0 = s.b.offset(j0 as isize * s.csb);
            chain::<T, MR, PM, NR, FMA>(&mut acc, a0, MR * s.k, b0, s.rsb, s.csb, s.k);
        }
    }
    let row0 = p * MR;
    let rows = (PM * MR).min(prob.m - row0);
    let add = prob.add;
    // SAFETY: rows `row0 + r` with `r < rows` lie inside `0..m`, columns `j0 + j` inside `0..n`.
    let c0 = unsafe {
        prob.c
            .offset(row0 as isize * prob.rsc + j0 as isize * prob.csc)
    };
    let (rsc, csc) = (prob.rsc, prob.csc);
    // Only constant indices into `acc` (after unrolling `j` and `q`), so that it stays in
    // registers during the k loop; a row of it is copied out before any variable indexing.
    if rows == PM * MR && rsc == 1 {
        for j in 0..NR {
            for q in 0..PM {
                let v = acc[j][q];
                // SAFETY: rows `row0 + q·MR .. + MR` and column `j0 + j` lie inside `C`, whose
                // rows are contiguous (`rsc == 1`).
                let dst = unsafe { c0.offset((q * MR) as isize + j as isize * csc) };
                for i in 0..MR {
                    // SAFETY: as above; `c` is not read when replacing.
                    unsafe { *dst.add(i) = if add { *dst.add(i) + v[i] } else { v[i] } };
                }
            }
        }
    } else {
        for j in 0..NR {
            for q in 0..PM {
                let v = acc[j][q];
                let lim = rows.saturating_sub(q * MR).min(MR);
                for i in 0..lim {
                    // SAFETY: row `row0 + q·MR + i < m`, column `j0 + j < n`; `c` is not read
                    // when replacing.
                    unsafe {
                        let dst = c0.offset((q * MR + i) as isize * rsc + j as isize * csc);
                        *dst = if add { *dst + v[i] } else { v[i] };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gemm::gemm_naive;
    use nalgebra::DMatrix;

    /// A seeded matrix of values in `[-0.5, 0.5)` (also used by `wgrad`'s tests).
    pub(crate) fn rand_mat<T: Float>(r: usize, c: usize, seed: u64) -> DMatrix<T> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        DMatrix::from_fn(r, c, |_, _| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            T::cast(((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5)
        })
    }

    /// Whether `a` and `b` hold the same values bit for bit.
    fn same_bits<T: Float>(a: &DMatrix<T>, b: &DMatrix<T>) -> bool {
        a.shape() == b.shape()
            && a.iter()
                .zip(b.iter())
                .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits())
    }

    /// Every copy of the kernel this CPU can run.
    fn isas() -> Vec<Isa> {
        crate::kernels::simd::available_isas()
    }

    fn tol<T: Float>(k: usize) -> f64 {
        (k as f64 + 1.0) * if T::BYTES == 4 { 1e-6 } else { 1e-15 }
    }

    /// `op(A)` from `a` stored as given (`a` is `op(A)ᵀ` when `trans` is `Yes`).
    fn a_for<T: Float>(m: usize, k: usize, trans: Trans, seed: u64) -> DMatrix<T> {
        match trans {
            Trans::No => rand_mat(m, k, seed),
            Trans::Yes => rand_mat(k, m, seed),
        }
    }

    fn check_all_sizes<T: Float>() {
        let mut packed = PackedMatrix::<T>::new();
        // Fewer sizes under Miri (still a partial panel, every narrow-`B` grouping and tile
        // width): Miri interprets every operation.
        let (ms, ks, ns): (&[usize], &[usize], &[usize]) = if cfg!(miri) {
            (&[0, 1, 17, 33], &[0, 3, 17], &[0, 1, 2, 3, 4, 5, 6, 7, 13])
        } else {
            (
                &[0, 1, 5, 8, 16, 17, 33, 70],
                &[0, 1, 3, 17],
                &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13],
            )
        };
        for isa in isas() {
            for trans in [Trans::No, Trans::Yes] {
                for &m in ms {
                    for &k in ks {
                        let a = a_for::<T>(m, k, trans, (m * 31 + k) as u64);
                        packed.pack(&a, trans);
                        assert_eq!((packed.rows(), packed.cols()), (m, k));
                        for &n in ns {
                            let b = rand_mat::<T>(k, n, 7 + n as u64);
                            let c0 = rand_mat::<T>(m, n, 11);
                            for accum in [Accum::Replace, Accum::Add] {
                                let beta = if accum == Accum::Add {
                                    T::one()
                                } else {
                                    T::zero()
                                };
                                let mut want = c0.clone();
                                gemm_naive(T::one(), &a, trans, &b, Trans::No, beta, &mut want);
                                let mut got = match accum {
                                    Accum::Add => c0.clone(),
                                    Accum::Replace => {
                                        DMatrix::from_element(m, n, T::cast(f64::NAN))
                                    }
                                };
                                packed_matmul_with(&mut got, accum, &packed, &b, isa, true);
                                let err = (got - want).amax().as_f64();
                                assert!(
                                    err <= tol::<T>(k),
                                    "{isa:?} {trans:?} {accum:?} m={m} k={k} n={n}: err {err}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn f32_matches_naive_on_all_edge_sizes() {
        check_all_sizes::<f32>();
    }

    #[test]
    fn f64_matches_naive_on_all_edge_sizes() {
        check_all_sizes::<f64>();
    }

    #[test]
    fn column_views_and_replace_ignores_nan() {
        let (m, k, n) = (19, 9, 7);
        for isa in isas() {
            for trans in [Trans::No, Trans::Yes] {
                let a = a_for::<f64>(m, k, trans, 3);
                let mut packed = PackedMatrix::new();
                packed.pack(&a.columns(0, a.ncols()), trans);
                let x = rand_mat::<f64>(k, 20, 4);
                let mut y = DMatrix::from_element(m, 20, f64::NAN);
                packed_matmul_with(
                    &mut y.columns_mut(5, n),
                    Accum::Replace,
                    &packed,
                    &x.columns(3, n),
                    isa,
                    true,
                );
                let b = x.columns(3, n).into_owned();
                let mut want = DMatrix::zeros(m, n);
                gemm_naive(1.0, &a, trans, &b, Trans::No, 0.0, &mut want);
                assert!((y.columns(5, n) - &want).amax() < 1e-13);
                assert!(y.columns(0, 5).iter().all(|v| v.is_nan()));
                assert!(y.columns(5 + n, 20 - 5 - n).iter().all(|v| v.is_nan()));
                // Accumulate a second time into the same view.
                packed_matmul_with(
                    &mut y.columns_mut(5, n),
                    Accum::Add,
                    &packed,
                    &x.columns(3, n),
                    isa,
                    true,
                );
                assert!((y.columns(5, n) - &want * 2.0).amax() < 1e-13);
            }
        }
    }

    /// The pair's bits are the concatenated product's, on every kernel copy, for full and
    /// partial panels, every tile width, either term empty, `A2` packed transposed, `B2` a
    /// column view, Replace and Add.
    fn pair_matches_concatenation<T: Float>() {
        let sizes = [(16, 7, 5), (35, 0, 9), (3, 4, 0), (20, 12, 1), (33, 5, 16)];
        for isa in isas() {
            for &(m, k1, k2) in &sizes {
                for n in [1, 2, 3, 4, 6, 7, 13] {
                    let a1 = rand_mat::<T>(m, k1, 1);
                    let a2t = rand_mat::<T>(k2, m, 2); // A2 = a2tᵀ, packed transposed
                    let b1 = rand_mat::<T>(k1, n, 3);
                    let x2 = rand_mat::<T>(k2, n + 3, 4);
                    let b2 = x2.columns(2, n);
                    let (mut p1, mut p2, mut pc) = (
                        PackedMatrix::new(),
                        PackedMatrix::new(),
                        PackedMatrix::new(),
                    );
                    p1.pack(&a1, Trans::No);
                    p2.pack(&a2t, Trans::Yes);
                    let mut cat = DMatrix::zeros(m, k1 + k2);
                    cat.columns_mut(0, k1).copy_from(&a1);
                    cat.columns_mut(k1, k2).copy_from(&a2t.transpose());
                    pc.pack(&cat, Trans::No);
                    let mut bcat = DMatrix::zeros(k1 + k2, n);
                    bcat.rows_mut(0, k1).copy_from(&b1);
                    bcat.rows_mut(k1, k2).copy_from(&b2);
                    for accum in [Accum::Replace, Accum::Add] {
                        let c0 = rand_mat::<T>(m, n, 5);
                        let (mut got, mut want) = (c0.clone(), c0.clone());
                        let second = Segment::of(&p2, &b2);
                        packed_matmul_terms(&mut got, accum, &p1, &b1, second, isa, false);
                        packed_matmul_with(&mut want, accum, &pc, &bcat, isa, false);
                        let same = same_bits(&got, &want);
                        assert!(same, "{isa:?} m {m} k1 {k1} k2 {k2} n {n} {accum:?}");
                        if isa == crate::kernels::simd::best_isa() {
                            let mut public = c0.clone();
                            packed_matmul_pair(&mut public, accum, &p1, &b1, &p2, &b2);
                            assert_eq!(public, got);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pair_has_the_bits_of_the_concatenated_product() {
        pair_matches_concatenation::<f32>();
        pair_matches_concatenation::<f64>();
    }

    #[test]
    fn general_strides_of_b_and_c() {
        // B with row stride 2 (every other row of x), C with row stride 3.
        let (m, k, n) = (21, 6, 5);
        for isa in isas() {
            let a = rand_mat::<f32>(m, k, 5);
            let mut packed = PackedMatrix::new();
            packed.pack(&a, Trans::No);
            let x = rand_mat::<f32>(2 * k, n + 1, 6);
            let bview = x.view_with_steps((1, 1), (k, n), (1, 0));
            let b = bview.into_owned();
            let c0 = rand_mat::<f32>(3 * m, n, 8);
            let mut want = c0.view_with_steps((0, 0), (m, n), (2, 0)).into_owned();
            gemm_naive(1.0, &a, Trans::No, &b, Trans::No, 1.0, &mut want);
            let mut c = c0.clone();
            packed_matmul_with(
                &mut c.view_with_steps_mut((0, 0), (m, n), (2, 0)),
                Accum::Add,
                &packed,
                &bview,
                isa,
                true,
            );
            assert!((c.view_with_steps((0, 0), (m, n), (2, 0)) - want).amax() < 1e-5);
            // Rows not in the view are untouched.
            assert_eq!(c.row(1), c0.row(1));
            // A transposed B (k x n view of an n x k matrix's transpose layout).
            let bt = rand_mat::<f32>(n, k, 9);
            let btv = bt.transpose();
            let mut got = DMatrix::zeros(m, n);
            let view = nalgebra::DMatrixView::from_slice_with_strides_generic(
                bt.as_slice(),
                nalgebra::Dyn(k),
                nalgebra::Dyn(n),
                nalgebra::Dyn(n),
                nalgebra::Dyn(1),
            );
            packed_matmul_with(&mut got, Accum::Replace, &packed, &view, isa, true);
            assert!((got - &a * btv).amax() < 1e-5);
        }
    }

    #[test]
    fn columns_do_not_depend_on_batch_width_or_threads() {
        let (m, k) = (37, 29);
        let a = rand_mat::<f32>(m, k, 12);
        let mut packed = PackedMatrix::new();
        packed.pack(&a, Trans::No);
        let b = rand_mat::<f32>(k, 13, 13);
        for isa in isas() {
            let mut full = DMatrix::zeros(m, 13);
            packed_matmul_with(&mut full, Accum::Replace, &packed, &b, isa, true);
            for j in 0..13 {
                for w in 1..=(13 - j).min(4) {
                    let mut part = DMatrix::zeros(m, w);
                    packed_matmul_with(
                        &mut part,
                        Accum::Replace,
                        &packed,
                        &b.columns(j, w),
                        isa,
                        false,
                    );
                    assert_eq!(part, full.columns(j, w), "isa {isa:?} j {j} w {w}");
                }
            }
        }
    }

    /// The AVX2 and AVX-512 copies run the same fused sums in the same order, so they must agree
    /// bit for bit (the AVX-512 one is chosen where the CPU has it; checkpoints written on
    /// either kind of machine are the same).
    fn fused_copies_agree<T: Float>() {
        let fused: Vec<Isa> = isas().into_iter().filter(|&i| i != Isa::Generic).collect();
        let mut packed = PackedMatrix::<T>::new();
        for (m, k) in [(1, 1), (17, 5), (40, 33), (64, 256), (100, 7)] {
            for trans in [Trans::No, Trans::Yes] {
                packed.pack(&a_for::<T>(m, k, trans, 31), trans);
                for n in [1, 2, 3, 4, 5, 6, 7, 9, 13, 16] {
                    let b = rand_mat::<T>(k, n, 32);
                    let c0 = rand_mat::<T>(m, n, 33);
                    for accum in [Accum::Replace, Accum::Add] {
                        let results: Vec<DMatrix<T>> = fused
                            .iter()
                            .map(|&isa| {
                                let mut c = c0.clone();
                                packed_matmul_with(&mut c, accum, &packed, &b, isa, false);
                                c
                            })
                            .collect();
                        for (isa, c) in fused.iter().zip(&results) {
                            let same = same_bits(c, &results[0]);
                            assert!(
                                same,
                                "{isa:?} differs from {:?}: m={m} k={k} n={n}",
                                fused[0]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn avx2_and_avx512_copies_give_the_same_bits() {
        fused_copies_agree::<f32>();
        fused_copies_agree::<f64>();
    }

    #[test]
    fn threaded_products_are_bit_identical_to_single_thread() {
        // Just above the threshold; repeated so that the helper both takes and misses jobs.
        let sizes = if cfg!(miri) {
            [(41, 16, 8), (70, 64, 2)]
        } else {
            [(257, 128, 64), (1030, 512, 4)]
        };
        for (m, k, n) in sizes {
            assert!(m * k * n >= PARALLEL_MIN_MACS);
            let a = rand_mat::<f32>(k, m, 21);
            let mut packed = PackedMatrix::new();
            packed.pack(&a, Trans::Yes);
            let b = rand_mat::<f32>(k, n + 2, 22);
            let b = b.columns(1, n);
            let mut want = DMatrix::zeros(m, n);
            packed_matmul(&mut want, Accum::Replace, &packed, &b);
            let mut naive = DMatrix::zeros(m, n);
            gemm_naive(
                1.0,
                &a,
                Trans::Yes,
                &b.into_owned(),
                Trans::No,
                0.0,
                &mut naive,
            );
            assert!((&want - naive).amax() < 1e-4);
            for _ in 0..10 {
                let mut got = DMatrix::from_element(m, n, f32::NAN);
                packed_matmul_threaded(&mut got, Accum::Replace, &packed, &b);
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn large_packings_split_over_two_threads_keep_the_layout() {
        // 530 x 500 values (above PACK_SPLIT_MIN_VALUES; 40 x 30 under Miri, which lowers it),
        // an odd number of panels, both ways.
        let (m, k) = if cfg!(miri) { (40, 30) } else { (530, 500) };
        for trans in [Trans::No, Trans::Yes] {
            let a = a_for::<f64>(m, k, trans, 3);
            let mut packed = PackedMatrix::new();
            packed.pack(&a, trans);
            assert!(packed.buf.len() >= PACK_SPLIT_MIN_VALUES);
            let b = rand_mat::<f64>(k, 3, 4);
            let mut got = DMatrix::zeros(m, 3);
            packed_matmul(&mut got, Accum::Replace, &packed, &b);
            let mut want = DMatrix::zeros(m, 3);
            gemm_naive(1.0, &a, trans, &b, Trans::No, 0.0, &mut want);
            assert!((got - want).amax() < 1e-12, "{trans:?}");
        }
    }

    /// The layout `pack` promises (module docs), element by element: the naive reference for
    /// its copying loops and the AVX transposition.
    fn layout_by_definition<T: Float>(a: &DMatrix<T>, trans: Trans) -> Vec<T> {
        let mr = PackedMatrix::<T>::MR;
        let (m, k) = match trans {
            Trans::No => a.shape(),
            Trans::Yes => (a.ncols(), a.nrows()),
        };
        let mut v = Vec::new();
        for p in 0..m.div_ceil(mr) {
            for kk in 0..k {
                for i in 0..mr {
                    let r = p * mr + i;
                    v.push(match (r < m, trans) {
                        (false, _) => T::zero(),
                        (true, Trans::No) => a[(r, kk)],
                        (true, Trans::Yes) => a[(kk, r)],
                    });
                }
            }
        }
        v
    }

    fn check_layouts<T: Float>() {
        // One buffer for all, so each packing starts from the previous one's values (including
        // padding rows that must come out as zeros).
        let mut packed = PackedMatrix::<T>::new();
        // 530 x 500 crosses PACK_SPLIT_MIN_VALUES; under Miri, which lowers it, 40 x 65 does.
        let (ms, ks): (&[usize], &[usize]) = if cfg!(miri) {
            (&[1, 15, 16, 17, 40], &[1, 7, 8, 9, 64, 65])
        } else {
            (&[1, 15, 16, 17, 40, 530], &[1, 7, 8, 9, 64, 65, 500])
        };
        for trans in [Trans::No, Trans::Yes] {
            for &m in ms {
                for &k in ks {
                    let a = a_for::<T>(m, k, trans, (m * 1000 + k) as u64);
                    packed.pack(&a, trans);
                    let want = layout_by_definition(&a, trans);
                    assert!(packed.buf == want, "{trans:?} m {m} k {k}");
                }
            }
        }
    }

    #[test]
    fn packing_gives_the_documented_layout_whatever_the_buffer_held() {
        check_layouts::<f32>();
        check_layouts::<f64>();
    }

    #[test]
    fn repacking_reuses_the_buffer() {
        let mut packed = PackedMatrix::<f64>::new();
        assert_eq!((packed.rows(), packed.cols()), (0, 0));
        let big = rand_mat::<f64>(40, 30, 1);
        packed.pack(&big, Trans::No);
        let cap = packed.buf.capacity();
        let small = rand_mat::<f64>(9, 5, 2);
        packed.pack(&small, Trans::Yes);
        assert_eq!(packed.buf.capacity(), cap);
        assert_eq!((packed.rows(), packed.cols()), (5, 9));
        let b = rand_mat::<f64>(9, 3, 3);
        let mut c = DMatrix::zeros(5, 3);
        packed_matmul(&mut c, Accum::Replace, &packed, &b);
        assert!((c - small.transpose() * b).amax() < 1e-14);
    }

    #[test]
    #[should_panic(expected = "packed_matmul: (4x3) * (2x1) into (4x1)")]
    fn shape_mismatch_panics() {
        let mut packed = PackedMatrix::<f32>::new();
        packed.pack(&DMatrix::<f32>::zeros(4, 3), Trans::No);
        let mut c = DMatrix::zeros(4, 1);
        packed_matmul(&mut c, Accum::Add, &packed, &DMatrix::zeros(2, 1));
    }
}
