//! Matrix products through `matrixmultiply`, with transposes as free stride swaps.
//!
//! `gemm(alpha, a, ta, b, tb, beta, c)` computes `C = alpha * op(A) * op(B) + beta * C`, where
//! `op(X)` is `X` or `Xᵀ` as [`Trans`] says. nalgebra's own `gemm` reaches the fast kernel
//! only for `A * B`; its `tr_mul`/`gemm_tr` run a slow loop (figures in PERF.md).
//! Calling the kernel with swapped strides gives every transposed product the fast path, with no
//! copy. The operands may be any nalgebra matrix or view (column ranges of a sequence batch, say).
//!
//! With `beta = 0` the old contents of `C` are not read ([`Accum::Replace`]); with `beta = 1`
//! the product is added ([`Accum::Add`]), which is how backward passes accumulate gradients.
//!
//! Large products are cut into parts (by rows or columns of `C`, one per thread) that run at once
//! on the [`pool`]'s threads, each a single-threaded matrixmultiply call; the results are the
//! same bits as one call on one thread, for any thread count. [`matmul_bias`] is a layer's
//! bias broadcast before a product, split the same way (its gradient, the row sums, is
//! [`add_row_sums`](crate::kernels::row_sums::add_row_sums)).
//!
//! Products under [`PARALLEL_MIN_MACS`] multiply-adds skip matrixmultiply: they run on the
//! calling thread through the [`packed`] kernel.
//!
//! [`gemm_naive`] is the slow, obvious reference the tests compare against.

use crate::kernels::packed::{self, PackedMatrix};
use crate::kernels::thresholds::PARALLEL_MIN_MACS;
use crate::kernels::{SPLIT_ALIGN, pool};
use crate::{Accum, Float, Trans};
use nalgebra::{Dim, Matrix, RawStorage, RawStorageMut};

/// Shape and strides of `op(X)`: `(rows, cols, row_stride, col_stride)`.
fn op_layout<T, R: Dim, C: Dim, S: RawStorage<T, R, C>>(
    x: &Matrix<T, R, C, S>,
    t: Trans,
) -> (usize, usize, isize, isize) {
    let (r, c) = x.shape();
    let (rs, cs) = x.strides();
    match t {
        Trans::No => (r, c, rs as isize, cs as isize),
        Trans::Yes => (c, r, cs as isize, rs as isize),
    }
}

/// `C = alpha * op(A) * op(B) + beta * C`.
///
/// # Panics
/// When the shapes do not fit; callers at the public boundary check shapes first and return an
/// [`Error`](crate::Error) instead.
#[track_caller]
pub fn gemm<T, R1, C1, SA, R2, C2, SB, R3, C3, SC>(
    alpha: T,
    a: &Matrix<T, R1, C1, SA>,
    ta: Trans,
    b: &Matrix<T, R2, C2, SB>,
    tb: Trans,
    beta: T,
    c: &mut Matrix<T, R3, C3, SC>,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SA: RawStorage<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
    R3: Dim,
    C3: Dim,
    SC: RawStorageMut<T, R3, C3>,
{
    let raw = RawGemm::of("gemm", alpha, a, ta, b, tb, beta, c);
    let (m, k, n) = (raw.m, raw.k, raw.n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // matrixmultiply handles k = 0 as a scale by beta; keep the Replace contract explicit.
        if beta == T::zero() {
            c.fill(T::zero());
        } else {
            for v in c.iter_mut() {
                *v *= beta;
            }
        }
        return;
    }
    // SAFETY: `of` checked the shapes; the strides come from nalgebra storages holding at least
    // the described elements; `c` is a unique borrow so it cannot overlap `a` or `b`.
    unsafe { raw.run_split(None) };
}

/// One product `C = alpha·op(A)·op(B) + beta·C` as raw parts (`op` already applied to the
/// strides), so that halves of it can be handed to another thread.
#[derive(Clone, Copy, Debug)]
struct RawGemm<T> {
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
}

// SAFETY: a `RawGemm` is only shared with the pool's helpers by `run_split`, whose caller vouches
// for the storage for the whole call; the parts write disjoint blocks of `C`.
unsafe impl<T: Send> Send for RawGemm<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Sync> Sync for RawGemm<T> {}

impl<T: Float> RawGemm<T> {
    /// The parts of `C = alpha·op(A)·op(B) + beta·C`.
    ///
    /// # Panics
    /// When the shapes do not fit (the message names `op`).
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    fn of<R1, C1, SA, R2, C2, SB, R3, C3, SC>(
        op: &str,
        alpha: T,
        a: &Matrix<T, R1, C1, SA>,
        ta: Trans,
        b: &Matrix<T, R2, C2, SB>,
        tb: Trans,
        beta: T,
        c: &mut Matrix<T, R3, C3, SC>,
    ) -> Self
    where
        R1: Dim,
        C1: Dim,
        SA: RawStorage<T, R1, C1>,
        R2: Dim,
        C2: Dim,
        SB: RawStorage<T, R2, C2>,
        R3: Dim,
        C3: Dim,
        SC: RawStorageMut<T, R3, C3>,
    {
        let (m, k, rsa, csa) = op_layout(a, ta);
        let (k2, n, rsb, csb) = op_layout(b, tb);
        let (cm, cn) = c.shape();
        assert!(
            k == k2 && cm == m && cn == n,
            "{op}: ({m}x{k}) * ({k2}x{n}) into ({cm}x{cn})"
        );
        let (rsc, csc) = c.strides();
        RawGemm {
            m,
            k,
            n,
            alpha,
            a: a.data.ptr(),
            rsa,
            csa,
            b: b.data.ptr(),
            rsb,
            csb,
            beta,
            c: c.data.ptr_mut(),
            rsc: rsc as isize,
            csc: csc as isize,
        }
    }

    /// Rows `r0 .. r0 + rows` of `C` (and of `op(A)`).
    fn rows(mut self, r0: usize, rows: usize) -> Self {
        self.a = self.a.wrapping_offset(r0 as isize * self.rsa);
        self.c = self.c.wrapping_offset(r0 as isize * self.rsc);
        self.m = rows;
        self
    }

    /// Columns `c0 .. c0 + cols` of `C` (and of `op(B)`).
    fn cols(mut self, c0: usize, cols: usize) -> Self {
        self.b = self.b.wrapping_offset(c0 as isize * self.csb);
        self.c = self.c.wrapping_offset(c0 as isize * self.csc);
        self.n = cols;
        self
    }

    /// The whole product on the calling thread.
    ///
    /// # Safety
    /// The parts must describe valid, non-overlapping (`C` against `A`, `B`) storage.
    unsafe fn run(self) {
        // SAFETY: from the caller.
        unsafe {
            T::gemm_raw(
                self.m, self.k, self.n, self.alpha, self.a, self.rsa, self.csa, self.b, self.rsb,
                self.csb, self.beta, self.c, self.rsc, self.csc,
            )
        }
    }

    /// Writes `bias` (one value per row) into every column of `C`, then runs the product
    /// (`beta = 1` adds it to the bias); without a bias, just runs it.
    ///
    /// # Safety
    /// As [`run`](Self::run); `bias` has `m` values.
    unsafe fn fill_then_run(self, bias: Option<&[T]>) {
        if let Some(bias) = bias {
            for j in 0..self.n as isize {
                let col = self.c.wrapping_offset(j * self.csc);
                if self.rsc == 1 {
                    // SAFETY: rows `0..m` of column `j < n` of the block of `C`, contiguous.
                    unsafe { std::slice::from_raw_parts_mut(col, self.m) }.copy_from_slice(bias);
                } else {
                    for (i, &v) in bias.iter().enumerate() {
                        // SAFETY: row `i < m`, column `j < n` of the block of `C`.
                        unsafe { *col.offset(i as isize * self.rsc) = v };
                    }
                }
            }
        }
        // SAFETY: from the caller.
        unsafe { self.run() };
    }

    /// The product (after `bias`, see [`fill_then_run`](Self::fill_then_run)), cut into parts
    /// (one per thread, each at least [`SPLIT_ALIGN`] wide, bounds multiples of it) run at once
    /// on the [`pool`] when it is large. Rows are cut when `op(B)` is the smaller operand (each
    /// part packs all of it), columns otherwise; each part writes its own part of the bias. Each
    /// element of `C` gets the same sum whatever the part count.
    ///
    /// # Safety
    /// As [`fill_then_run`](Self::fill_then_run).
    unsafe fn run_split(self, bias: Option<&[T]>) {
        let (m, n) = (self.m, self.n);
        let big = m.saturating_mul(self.k).saturating_mul(n) >= PARALLEL_MIN_MACS;
        let threads = pool::threads();
        let by_rows = n <= m && m >= 2 * SPLIT_ALIGN;
        let len = if by_rows { m } else { n };
        let parts = threads.min(len / SPLIT_ALIGN);
        if !big || parts < 2 {
            // SAFETY: from the caller.
            return unsafe { self.fill_then_run(bias) };
        }
        let whole = self;
        pool::for_each_part(parts, |i| {
            let r = pool::part_range(len, parts, SPLIT_ALIGN, i);
            if r.is_empty() {
                return;
            }
            // SAFETY: from the caller; the parts cover `C` once, without overlap.
            unsafe {
                if by_rows {
                    let b = bias.map(|b| &b[r.clone()]);
                    whole.rows(r.start, r.len()).fill_then_run(b);
                } else {
                    whole.cols(r.start, r.len()).fill_then_run(bias);
                }
            }
        });
    }
}

/// `C (=|+=) op(A) op(B)`, the common case of [`gemm`] with `alpha = 1`. Products under
/// [`PARALLEL_MIN_MACS`] multiply-adds skip matrixmultiply: they run on the calling thread
/// through the packed kernel (`op(A)` packed per call into a reused per-thread buffer, `op(B)`
/// read in place). matrixmultiply would split some of them over threads (it decides by
/// `m·k + k·n`), where waking and waiting for a thread costs more than the product.
#[track_caller]
pub fn matmul<T, R1, C1, SA, R2, C2, SB, R3, C3, SC>(
    c: &mut Matrix<T, R3, C3, SC>,
    accum: Accum,
    a: &Matrix<T, R1, C1, SA>,
    ta: Trans,
    b: &Matrix<T, R2, C2, SB>,
    tb: Trans,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SA: RawStorage<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
    R3: Dim,
    C3: Dim,
    SC: RawStorageMut<T, R3, C3>,
{
    let (m, k, _, _) = op_layout(a, ta);
    let (k2, n, rsb, csb) = op_layout(b, tb);
    let (cm, cn) = c.shape();
    if k == k2 && cm == m && cn == n && m.saturating_mul(k).saturating_mul(n) < PARALLEL_MIN_MACS {
        with_small_packing(|packed: &mut PackedMatrix<T>| {
            packed.pack(a, ta);
            let (rsc, csc) = c.strides();
            // SAFETY: shapes were checked just above; `b` and `c` are nalgebra storages holding
            // the elements their shapes and strides describe; `c` is a unique borrow, so it
            // overlaps neither `a` nor `b`.
            unsafe {
                packed::packed_matmul_raw(
                    accum,
                    packed,
                    b.data.ptr(),
                    (rsb, csb),
                    n,
                    c.data.ptr_mut(),
                    (rsc as isize, csc as isize),
                )
            };
        });
        return;
    }
    gemm(T::one(), a, ta, b, tb, accum.beta(), c);
}

/// Runs `f` on this thread's packing buffer for [`matmul`]'s small products, so that they
/// allocate only while the buffer grows (it keeps the largest `op(A)` packed so far, under
/// [`PARALLEL_MIN_MACS`] values). A fresh buffer if this thread's is in use.
fn with_small_packing<T: Float, R>(f: impl FnOnce(&mut PackedMatrix<T>) -> R) -> R {
    use std::any::Any;
    use std::cell::RefCell;
    thread_local! {
        static SCRATCH: RefCell<(PackedMatrix<f32>, PackedMatrix<f64>)> =
            RefCell::new((PackedMatrix::new(), PackedMatrix::new()));
    }
    SCRATCH.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return f(&mut PackedMatrix::new());
        };
        let (p32, p64) = &mut *s;
        let any: &mut dyn Any = if T::BYTES == 4 { p32 } else { p64 };
        match any.downcast_mut::<PackedMatrix<T>>() {
            Some(p) => f(p),
            None => f(&mut PackedMatrix::new()),
        }
    })
}

/// `C = bias·1ᵀ + op(A)·op(B)`: every column of `C` (`m x n`) starts as `bias` (`m` values),
/// then the product is added, the way a layer adds its bias. Large products run as parts
/// at once (see [`gemm`]), each writing its own part of the bias first, so the broadcast is not
/// a serial pass over `C`. The same bits as a fill followed by `matmul(c, Accum::Add, ..)`.
///
/// # Panics
/// When the shapes do not fit (as [`gemm`]) or `bias.len() != m`.
#[track_caller]
pub fn matmul_bias<T, R1, C1, SA, R2, C2, SB, R3, C3, SC>(
    c: &mut Matrix<T, R3, C3, SC>,
    bias: &[T],
    a: &Matrix<T, R1, C1, SA>,
    ta: Trans,
    b: &Matrix<T, R2, C2, SB>,
    tb: Trans,
) where
    T: Float,
    R1: Dim,
    C1: Dim,
    SA: RawStorage<T, R1, C1>,
    R2: Dim,
    C2: Dim,
    SB: RawStorage<T, R2, C2>,
    R3: Dim,
    C3: Dim,
    SC: RawStorageMut<T, R3, C3>,
{
    let m = c.nrows();
    assert!(
        bias.len() == m,
        "matmul_bias: {} bias values for {m} rows",
        bias.len()
    );
    let raw = RawGemm::of("matmul_bias", T::one(), a, ta, b, tb, T::one(), c);
    if raw.m.saturating_mul(raw.k).saturating_mul(raw.n) < PARALLEL_MIN_MACS {
        // The packed kernel on this thread (see `matmul`), after the fill.
        for mut col in c.column_iter_mut() {
            col.copy_from_slice(bias);
        }
        matmul(c, Accum::Add, a, ta, b, tb);
        return;
    }
    // SAFETY: `of` checked the shapes; the storages hold the described elements; `c` is a
    // unique borrow, so it overlaps neither `a` nor `b`; `bias` has `m` values.
    unsafe { raw.run_split(Some(bias)) };
}

/// The obvious triple loop for `C = alpha * op(A) * op(B) + beta * C`; the tests' reference.
pub fn gemm_naive<T: Float>(
    alpha: T,
    a: &nalgebra::DMatrix<T>,
    ta: Trans,
    b: &nalgebra::DMatrix<T>,
    tb: Trans,
    beta: T,
    c: &mut nalgebra::DMatrix<T>,
) {
    let get = |x: &nalgebra::DMatrix<T>, t: Trans, i: usize, j: usize| match t {
        Trans::No => x[(i, j)],
        Trans::Yes => x[(j, i)],
    };
    let (m, n) = c.shape();
    let k = match ta {
        Trans::No => a.ncols(),
        Trans::Yes => a.nrows(),
    };
    for i in 0..m {
        for j in 0..n {
            let mut s = T::zero();
            for p in 0..k {
                s += get(a, ta, i, p) * get(b, tb, p, j);
            }
            c[(i, j)] = if beta == T::zero() {
                alpha * s
            } else {
                alpha * s + beta * c[(i, j)]
            };
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use nalgebra::DMatrix;

    /// A seeded matrix of values in `[-0.5, 0.5)` (also used by `kernels::row_sums`' tests).
    pub(crate) fn rand_mat(r: usize, c: usize, seed: u64) -> DMatrix<f64> {
        let mut s = seed;
        DMatrix::from_fn(r, c, |_, _| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        })
    }

    /// `A` and `B` stored so that `op(A)` is `m x k` and `op(B)` is `k x n`.
    fn operands(
        (m, k, n): (usize, usize, usize),
        ta: Trans,
        tb: Trans,
    ) -> (DMatrix<f64>, DMatrix<f64>) {
        let a = match ta {
            Trans::No => rand_mat(m, k, 1),
            Trans::Yes => rand_mat(k, m, 1),
        };
        let b = match tb {
            Trans::No => rand_mat(k, n, 2),
            Trans::Yes => rand_mat(n, k, 2),
        };
        (a, b)
    }

    #[test]
    fn every_transpose_matches_naive() {
        for (ta, tb) in [
            (Trans::No, Trans::No),
            (Trans::Yes, Trans::No),
            (Trans::No, Trans::Yes),
            (Trans::Yes, Trans::Yes),
        ] {
            let (m, k, n) = (7, 5, 3);
            let (a, b) = operands((m, k, n), ta, tb);
            let mut c = rand_mat(m, n, 3);
            let mut want = c.clone();
            gemm(0.5, &a, ta, &b, tb, 2.0, &mut c);
            gemm_naive(0.5, &a, ta, &b, tb, 2.0, &mut want);
            assert!((c - want).amax() < 1e-12);
        }
    }

    #[test]
    fn matmul_matches_naive_on_both_paths_and_every_transpose() {
        // 4·6·5 runs through the packed kernel, 130³ (above PARALLEL_MIN_MACS; 20·15·16 under
        // Miri, which lowers it) matrixmultiply.
        let big = if cfg!(miri) {
            (20, 15, 16)
        } else {
            (130, 130, 130)
        };
        for (m, k, n) in [(4, 6, 5), big] {
            for (ta, tb) in [
                (Trans::No, Trans::No),
                (Trans::Yes, Trans::No),
                (Trans::No, Trans::Yes),
                (Trans::Yes, Trans::Yes),
            ] {
                let (a, b) = operands((m, k, n), ta, tb);
                for accum in [Accum::Replace, Accum::Add] {
                    let mut c = rand_mat(m, n, 3);
                    let mut want = c.clone();
                    matmul(&mut c, accum, &a, ta, &b, tb);
                    gemm_naive(1.0, &a, ta, &b, tb, accum.beta(), &mut want);
                    assert!(
                        (c - want).amax() < 1e-11,
                        "{m}x{k}x{n} {ta:?} {tb:?} {accum:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_products_give_the_bits_of_one_call() {
        // Above PARALLEL_MIN_MACS, cut by rows (n <= m) or columns, at sizes that are not
        // multiples of the tiles; `run_split` must match the single call bit for bit. Miri
        // lowers the threshold, so its sizes are smaller.
        let sizes = if cfg!(miri) {
            [(130, 4, 9), (9, 5, 131), (200, 3, 7), (7, 3, 200)]
        } else {
            [
                (200, 90, 130),
                (130, 100, 250),
                (1030, 70, 40),
                (40, 70, 1030),
            ]
        };
        for (m, k, n) in sizes {
            for (ta, tb) in [(Trans::No, Trans::No), (Trans::Yes, Trans::Yes)] {
                let (a, b) = operands((m, k, n), ta, tb);
                let c0 = rand_mat(m, n, 3);
                let (mut whole, mut split) = (c0.clone(), c0.clone());
                let raw = |c: &mut DMatrix<f64>| RawGemm::of("test", 0.75, &a, ta, &b, tb, 1.0, c);
                // SAFETY: the parts describe `a`, `b` and `c` as allocated above.
                unsafe {
                    raw(&mut whole).run();
                    raw(&mut split).run_split(None);
                }
                assert!(m * k * n >= PARALLEL_MIN_MACS);
                let bits = |c: &DMatrix<f64>| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&whole), bits(&split), "{m}x{k}x{n} {ta:?} {tb:?}");
            }
        }
    }

    #[test]
    fn matmul_bias_is_a_fill_then_an_added_product_bit_for_bit() {
        // Small (one thread), and large enough to run as two halves of columns (n = 300) or of
        // rows (m = 300, each half with its part of the bias). Smaller under Miri, which lowers
        // the threshold.
        let sizes = if cfg!(miri) {
            [(5, 4, 3), (9, 4, 130), (130, 4, 9)]
        } else {
            [(5, 4, 3), (90, 80, 300), (300, 80, 90)]
        };
        for (m, k, n) in sizes {
            let (a, b) = operands((m, k, n), Trans::No, Trans::Yes);
            let bias: Vec<f64> = (0..m).map(|i| i as f64 * 0.37 - 3.0).collect();
            let mut got = DMatrix::from_element(m, n, f64::NAN);
            matmul_bias(&mut got, &bias, &a, Trans::No, &b, Trans::Yes);
            let mut want = DMatrix::from_fn(m, n, |i, _| bias[i]);
            let mut whole = want.clone();
            let whole_raw =
                RawGemm::of("test", 1.0, &a, Trans::No, &b, Trans::Yes, 1.0, &mut whole);
            // SAFETY: the parts describe `a`, `b` and `whole` as allocated above.
            unsafe { whole_raw.run() };
            gemm_naive(1.0, &a, Trans::No, &b, Trans::Yes, 1.0, &mut want);
            assert!((&got - &want).amax() < 1e-12, "{m}x{k}x{n}");
            let bits = |c: &DMatrix<f64>| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&whole), "{m}x{k}x{n}");
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros_or_leaves_c() {
        let (a, b) = (DMatrix::<f64>::zeros(3, 0), DMatrix::<f64>::zeros(0, 4));
        let mut c = DMatrix::from_element(3, 4, f64::NAN);
        matmul(&mut c, Accum::Replace, &a, Trans::No, &b, Trans::No);
        assert_eq!(c, DMatrix::zeros(3, 4));
        let mut c = DMatrix::from_element(3, 4, 2.5);
        matmul(&mut c, Accum::Add, &a, Trans::No, &b, Trans::No);
        assert_eq!(c, DMatrix::from_element(3, 4, 2.5));
        gemm(1.0, &a, Trans::No, &b, Trans::No, 0.0, &mut c);
        assert_eq!(c, DMatrix::zeros(3, 4));
    }

    #[test]
    fn works_on_column_views_and_replace_ignores_nan() {
        let a = rand_mat(4, 6, 4);
        let x = rand_mat(6, 10, 5);
        let mut y = DMatrix::from_element(4, 10, f64::NAN);
        matmul(
            &mut y.columns_mut(2, 3),
            Accum::Replace,
            &a,
            Trans::No,
            &x.columns(2, 3),
            Trans::No,
        );
        let want = &a * x.columns(2, 3);
        assert!((y.columns(2, 3) - want).amax() < 1e-12);
        assert!(y[(0, 0)].is_nan());
    }
}
