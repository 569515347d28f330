//! `C += A · Bᵀ` for weight gradients: `dW += dG · Xᵀ` with `dG` `(m, k)` (the gate gradients
//! of `k = T·B` columns), `X` `(n, k)` (the layer's inputs or previous hidden states) and `dW`
//! `(m, n)`, all column-major and read in place.
//!
//! ```text
//! C[j, i] += Σ_k A[j, k] · B[i, k]        j < m (gate rows), i < n (features)
//! ```
//!
//! matrixmultiply packs both operands before its kernel runs, and a recurrent layer's two weight
//! gradients pack the same `dG` (8 MiB for `lstm-m`) twice. Here nothing is packed: a `16 x 16`
//! tile of `C` (sixteen 16-row columns, one AVX-512 register each) runs down `k`, and at each `k`
//! loads `A`'s 16 rows of column `k` (one cache line) and broadcasts `B`'s 16 values of column
//! `k` (another), sixteen fused multiply-adds in all. `k` runs in blocks of [`KC`]: each block's
//! sums start from zero and are then added to `C`, which is how matrixmultiply sums (its `k`
//! blocks are 256 on AVX-512), so on those machines both give the same bits. The loops keep a
//! block's 16 rows of `A` (16 KiB) in L2 or L1 across the `B` tiles, and `B`'s block
//! (`n x 256`) in L2 across the rows of `A`; that is why `n` is limited ([`ADD_A_BT_MAX_COLS`]).
//!
//! [`add_a_bt_row_sums`] also adds `A`'s row sums (a layer's bias gradient, `db += Σ_k dG`)
//! in the same pass: the first tile of each 16 rows adds `A`'s column into one more register
//! as it loads it, in the order of `k`, so the sums have [`add_row_sums`]' bits and `dG` is
//! not read once more for them (figures in PERF.md).
//!
//! On a core with two 512-bit FMA ports ([`has_avx512_two_ports`]) the tile is `48 x 8` instead
//! (then `32 x 8` and `16 x 8` for the last rows): 24 sums in flight, and three loads of `A` and
//! eight broadcasts of `B` per 24 multiply-adds rather than one and sixteen per 16. Each sum is
//! the same chain either way, so the bits do not depend on the tile.
//!
//! Used where it pays (f32 on a CPU with AVX-512F, `m` and `n` multiples of 16, `n` at most
//! [`ADD_A_BT_MAX_COLS`], every column contiguous); everything else goes to [`matmul`]. Large
//! products are cut into parts of rows at multiples of 16, one per thread of the pool, which
//! changes no sum. Faster than matrixmultiply on the medium layers' weight
//! gradients because `dG` is not packed twice; figures in PERF.md.

use crate::Float;
use crate::gemm::matmul;
use crate::kernels::row_sums::add_row_sums;
use crate::kernels::simd::has_avx512_two_ports;
use crate::kernels::thresholds::{ADD_A_BT_MAX_COLS, PARALLEL_MIN_MACS};
use crate::{Accum, Trans};
use nalgebra::{Dyn, Matrix, RawStorage, RawStorageMut};

/// The `k` block: each element's sum runs from zero over at most this many terms, then is added
/// to `C` (matrixmultiply's `k` block on AVX-512, so the two give the same bits there).
pub const KC: usize = 256;

/// `C += A · Bᵀ` (`A` `(m, k)`, `B` `(n, k)`, `C` `(m, n)`).
///
/// # Panics
/// When the shapes do not fit (an internal kernel, as [`matmul`]).
#[track_caller]
pub fn add_a_bt<T, SC, SA, SB>(
    c: &mut Matrix<T, Dyn, Dyn, SC>,
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
) where
    T: Float,
    SC: RawStorageMut<T, Dyn, Dyn>,
    SA: RawStorage<T, Dyn, Dyn>,
    SB: RawStorage<T, Dyn, Dyn>,
{
    product(c, a, b, None);
}

/// [`add_a_bt`] and `sums[j] += Σ_k A[j, k]` (a layer's bias gradient, the row sums of `dG`)
/// in the same pass over `A`. Each row's sum runs over `k` in order, as [`add_row_sums`]'s do,
/// so the bits are that function's. On the fast path the first tile of each row
/// block adds `A`'s column into one more register per 16 rows as it loads it, which saves
/// reading the whole of `A` once more.
///
/// # Panics
/// When the shapes do not fit, or `sums.len() != m`.
#[track_caller]
pub fn add_a_bt_row_sums<T, SC, SA, SB>(
    c: &mut Matrix<T, Dyn, Dyn, SC>,
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
    sums: &mut [T],
) where
    T: Float,
    SC: RawStorageMut<T, Dyn, Dyn>,
    SA: RawStorage<T, Dyn, Dyn>,
    SB: RawStorage<T, Dyn, Dyn>,
{
    assert_eq!(
        sums.len(),
        a.nrows(),
        "add_a_bt_row_sums: {} sums for {} rows",
        sums.len(),
        a.nrows()
    );
    product(c, a, b, Some(sums));
}

#[track_caller]
fn product<T, SC, SA, SB>(
    c: &mut Matrix<T, Dyn, Dyn, SC>,
    a: &Matrix<T, Dyn, Dyn, SA>,
    b: &Matrix<T, Dyn, Dyn, SB>,
    sums: Option<&mut [T]>,
) where
    T: Float,
    SC: RawStorageMut<T, Dyn, Dyn>,
    SA: RawStorage<T, Dyn, Dyn>,
    SB: RawStorage<T, Dyn, Dyn>,
{
    let (m, n, k) = (c.nrows(), c.ncols(), a.ncols());
    assert!(
        a.nrows() == m && b.nrows() == n && b.ncols() == k,
        "add_a_bt: C {:?} += A {:?} · Bᵀ of {:?}",
        c.shape(),
        a.shape(),
        b.shape()
    );
    let fast = T::BYTES == 4
        && crate::kernels::simd::has_avx512()
        && m % 16 == 0
        && n % 16 == 0
        && n <= ADD_A_BT_MAX_COLS
        && k > 0
        && a.strides().0 == 1
        && b.strides().0 == 1
        && c.strides().0 == 1;
    if !fast {
        matmul(c, Accum::Add, a, Trans::No, b, Trans::Yes);
        if let Some(sums) = sums {
            add_row_sums(sums, a);
        }
        return;
    }
    let problem = Problem {
        two_ports: has_avx512_two_ports(),
        a: a.as_ptr() as *const f32,
        lda: a.strides().1,
        b: b.as_ptr() as *const f32,
        ldb: b.strides().1,
        c: c.as_mut_ptr() as *mut f32,
        ldc: c.strides().1,
        n,
        k,
        sums: sums.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr() as *mut f32),
    };
    let big = m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS;
    let parts = crate::kernels::pool::threads().min(m / 16);
    if big && parts >= 2 {
        let p = &problem;
        // SAFETY: `fast` checked AVX-512 and the layout `Problem::rows` needs; the parts write
        // rows of `C` (and of `sums`) in ranges whose bounds are multiples of 16, disjoint.
        crate::kernels::pool::for_each_part(parts, |i| {
            let r = crate::kernels::pool::part_range(m, parts, 16, i);
            unsafe { p.rows(r.start, r.end) }
        });
    } else {
        // SAFETY: as above, one thread.
        unsafe { problem.rows(0, m) };
    }
}

/// The raw operands of one [`add_a_bt`] on the fast path (`f32`, columns contiguous).
struct Problem {
    /// Tiles for a core with two 512-bit FMA ports (see [`Problem::rows`]).
    two_ports: bool,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    n: usize,
    k: usize,
    /// `m` row sums of `A` to add to, or null.
    sums: *mut f32,
}

// SAFETY: the pointers describe storage borrowed by `add_a_bt` for the whole call; the two
// threads write disjoint rows of `C` (and of `sums`) and only read `A` and `B`.
unsafe impl Sync for Problem {}

impl Problem {
    /// Rows `j0..j1` of `C` (both multiples of 16), in tiles of `16·R` rows by `C` columns:
    /// `16 x 16` (16 sums, one `A` load and 16 broadcasts of `B` per `k`), or with `two_ports`
    /// `48 x 8` while 48 rows are left, then `32 x 8` and `16 x 8` (24 sums, three loads and 8
    /// broadcasts per `k`: fewer loads per multiply-add, and more sums in flight).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a`, `b`, `c` hold `(m, k)`, `(n, k)`, `(m, n)` column-major with
    /// the given column strides and contiguous columns, `j1 <= m`, `n` a multiple of 16;
    /// `sums` is null or holds `m` values; no other thread writes rows `j0..j1` of `C` or of
    /// `sums` meanwhile.
    #[cfg(target_arch = "x86_64")]
    unsafe fn rows(&self, j0: usize, j1: usize) {
        let mut k0 = 0;
        while k0 < self.k {
            let kn = KC.min(self.k - k0);
            let mut j = j0;
            while j < j1 {
                let left = (j1 - j) / 16;
                let r = if self.two_ports { left.min(3) } else { 1 };
                let cols = if self.two_ports { 8 } else { 16 };
                for i in (0..self.n).step_by(cols) {
                    // SAFETY: rows `j..j+16·r` of `A` and `C` (`j + 16·r <= j1 <= m`), rows
                    // `i..i+cols` of `B` (`i + cols <= n`, `n` a multiple of 16), columns
                    // `k0..k0+kn` of `A` and `B` (`k0 + kn <= k`), columns `i..i+cols` of `C`,
                    // sums `j..j+16·r`: all inside their storage. The `k` blocks run in order,
                    // so each row's sum does too.
                    unsafe {
                        let args = (
                            self.a.add(k0 * self.lda + j),
                            self.lda,
                            self.b.add(k0 * self.ldb + i),
                            self.ldb,
                            kn,
                            self.c.add(i * self.ldc + j),
                            self.ldc,
                        );
                        let with_sums = i == 0 && !self.sums.is_null();
                        let sums = if with_sums {
                            self.sums.add(j)
                        } else {
                            std::ptr::null_mut()
                        };
                        match (r, cols, with_sums) {
                            (1, 16, true) => tile::<1, 16, true>(args, sums),
                            (1, 16, false) => tile::<1, 16, false>(args, sums),
                            (3, _, true) => tile::<3, 8, true>(args, sums),
                            (3, _, false) => tile::<3, 8, false>(args, sums),
                            (2, _, true) => tile::<2, 8, true>(args, sums),
                            (2, _, false) => tile::<2, 8, false>(args, sums),
                            (_, _, true) => tile::<1, 8, true>(args, sums),
                            (_, _, false) => tile::<1, 8, false>(args, sums),
                        }
                    };
                }
                j += 16 * r;
            }
            k0 += kn;
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn rows(&self, _: usize, _: usize) {
        unreachable!("add_a_bt: the fast path needs AVX-512");
    }
}

/// The operands of one tile: `A`'s first value and column stride, `B`'s likewise, the `k`
/// count, `C`'s first value and column stride.
type TileArgs = (*const f32, usize, *const f32, usize, usize, *mut f32, usize);

/// `C[0..16·R, i] += Σ_{k < kn} A[0..16·R, k] · B[i, k]` for `i < C`: sixteen sums per register,
/// each a chain of fused multiply-adds from zero in the order of `k`, added to `C` at the end.
/// With `SUMS`, also `sums[0..16·R] += A[0..16·R, k]` for each `k` in order, as `A`'s column is
/// loaded anyway.
///
/// # Safety
/// The CPU has AVX-512F; `a` holds `16·R` contiguous values in each of `kn` columns `lda` apart,
/// `b` `C` contiguous values in each of `kn` columns `ldb` apart, `c` `16·R` contiguous values
/// in each of `C` columns `ldc` apart, and with `SUMS` `sums` `16·R` contiguous values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const C: usize, const SUMS: bool>(
    (a, lda, b, ldb, kn, c, ldc): TileArgs,
    sums: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); R]; C];
    let mut row_sums = [_mm512_setzero_ps(); R];
    if SUMS {
        for (r, v) in row_sums.iter_mut().enumerate() {
            // SAFETY: `sums` holds `16·R` values when `SUMS` (the caller).
            *v = unsafe { _mm512_loadu_ps(sums.add(16 * r)) };
        }
    }
    let (mut ap, mut bp) = (a, b);
    for _ in 0..kn {
        // SAFETY: column `k` of the tile's `A` and `B`, inside the caller's storage.
        unsafe {
            let mut av = [_mm512_setzero_ps(); R];
            for (r, v) in av.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(ap.add(16 * r));
            }
            if SUMS {
                for r in 0..R {
                    row_sums[r] = _mm512_add_ps(row_sums[r], av[r]);
                }
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let bv = _mm512_set1_ps(*bp.add(i));
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(av[r], bv, acc[r]);
                }
            }
            ap = ap.add(lda);
            bp = bp.add(ldb);
        }
    }
    for (i, col) in acc.iter().enumerate() {
        for (r, v) in col.iter().enumerate() {
            // SAFETY: rows `16·r ..` of column `i` of the tile of `C`.
            unsafe {
                let cp = c.add(i * ldc + 16 * r);
                _mm512_storeu_ps(cp, _mm512_add_ps(_mm512_loadu_ps(cp), *v));
            }
        }
    }
    if SUMS {
        for (r, v) in row_sums.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(sums.add(16 * r), *v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{DMatrix, DMatrixView};

    fn rand(r: usize, c: usize, seed: u64) -> DMatrix<f32> {
        crate::kernels::packed::tests::rand_mat(r, c, seed)
    }

    /// The documented order: per block of `KC` terms, a chain of fused multiply-adds from zero,
    /// then added to `C`.
    fn blocked_reference(c: &mut DMatrix<f32>, a: &DMatrixView<f32>, b: &DMatrix<f32>) {
        let k = a.ncols();
        for j in 0..c.nrows() {
            for i in 0..c.ncols() {
                let mut k0 = 0;
                while k0 < k {
                    let mut acc = 0.0f32;
                    for kk in k0..(k0 + KC).min(k) {
                        acc = a[(j, kk)].mul_add(b[(i, kk)], acc);
                    }
                    c[(j, i)] += acc;
                    k0 += KC;
                }
            }
        }
    }

    /// Every shape (the fast path's and the fallback's) against a plain f64 sum; on a CPU with
    /// AVX-512, the fast path's shapes against the blocked reference bit for bit. `A` is a
    /// row range of a taller matrix (columns not contiguous with one another, as the gate
    /// buffer's are).
    #[test]
    fn matches_the_references() {
        for (m, n, k) in [
            (16, 16, 1),
            (32, 128, 300),
            (64, 48, 513),
            (1024, 16, 40),
            (48, 384, 256),
            (20, 16, 70),
            (32, 20, 70),
            (32, 400, 20),
        ] {
            let tall = rand(m + 16, k, 1);
            let a = tall.rows(8, m);
            let b = rand(n, k, 2);
            let c0 = rand(m, n, 3);
            let mut c = c0.clone();
            add_a_bt(&mut c, &a, &b);
            for j in 0..m {
                for i in 0..n {
                    let want = c0[(j, i)] as f64
                        + (0..k)
                            .map(|kk| a[(j, kk)] as f64 * b[(i, kk)] as f64)
                            .sum::<f64>();
                    let got = c[(j, i)] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4,
                        "{m}x{n}x{k} ({j},{i}): {got} vs {want}"
                    );
                }
            }
            let fast = m % 16 == 0 && n % 16 == 0 && n <= ADD_A_BT_MAX_COLS;
            if fast && crate::kernels::simd::has_avx512() {
                let mut r = c0.clone();
                blocked_reference(&mut r, &a, &b);
                assert_eq!(c, r, "{m}x{n}x{k}: not the blocked sums' bits");
            }
            // With the row sums: the same product, and each row's sum in the order of `k`
            // from the sums' old values (`add_row_sums`' bits).
            let mut c2 = c0.clone();
            let old: Vec<f32> = (0..m).map(|j| j as f32 * 0.5 - 3.0).collect();
            let mut sums = old.clone();
            add_a_bt_row_sums(&mut c2, &a, &b, &mut sums);
            assert_eq!(c2, c, "{m}x{n}x{k}: the product with row sums");
            for (j, &got) in sums.iter().enumerate() {
                let want = a.row(j).iter().fold(old[j], |s, &v| s + v);
                assert_eq!(got.to_bits(), want.to_bits(), "{m}x{n}x{k}: row sum {j}");
            }
        }
    }

    /// Both tile choices (`16 x 16`, and the two-port `48/32/16 x 8`) give the blocked sums'
    /// bits, with and without the row sums, on row counts that take every tile height.
    #[test]
    #[cfg_attr(not(host_avx512), ignore = "needs AVX-512 on this CPU")]
    fn both_tile_choices_give_the_blocked_bits() {
        assert!(
            crate::kernels::simd::has_avx512(),
            "built on a CPU with AVX-512, run on one without"
        );
        for (m, n, k) in [(16, 16, 3), (80, 32, 300), (96, 16, 20), (112, 48, 257)] {
            let tall = rand(m + 16, k, 9);
            let a = tall.rows(8, m);
            let b = rand(n, k, 10);
            let c0 = rand(m, n, 11);
            let mut want = c0.clone();
            blocked_reference(&mut want, &a, &b);
            let old: Vec<f32> = (0..m).map(|j| j as f32 * 0.25 - 1.0).collect();
            let mut want_sums = old.clone();
            add_row_sums(&mut want_sums, &a);
            for two_ports in [false, true] {
                for with_sums in [false, true] {
                    let mut c = c0.clone();
                    let mut sums = old.clone();
                    let problem = Problem {
                        two_ports,
                        a: a.as_ptr(),
                        lda: a.strides().1,
                        b: b.as_ptr(),
                        ldb: n,
                        c: c.as_mut_ptr(),
                        ldc: m,
                        n,
                        k,
                        sums: if with_sums {
                            sums.as_mut_ptr()
                        } else {
                            std::ptr::null_mut()
                        },
                    };
                    // SAFETY: AVX-512 checked; `a` has contiguous columns, `b` and `c` are
                    // whole matrices, `sums` holds `m` values.
                    unsafe { problem.rows(0, m) };
                    assert_eq!(
                        c, want,
                        "{m}x{n}x{k} two_ports {two_ports} sums {with_sums}"
                    );
                    if with_sums {
                        assert_eq!(sums, want_sums, "{m}x{n}x{k} two_ports {two_ports}");
                    }
                }
            }
        }
    }

    /// Large enough to be cut in two halves: the same bits as on one thread. Without AVX-512
    /// both sides would be the same `matmul` call (whose own split is tested in `gemm`), so
    /// there is nothing to compare: ignored on such CPUs.
    #[test]
    #[cfg_attr(not(host_avx512), ignore = "needs AVX-512 on this CPU")]
    fn halves_give_the_bits_of_one_thread() {
        assert!(
            crate::kernels::simd::has_avx512(),
            "built on a CPU with AVX-512, run on one without"
        );
        let (m, n, k) = (96, 64, PARALLEL_MIN_MACS / (96 * 64) + 1);
        let (a, b) = (rand(m, k, 4), rand(n, k, 5));
        let mut whole = DMatrix::zeros(m, n);
        let problem = Problem {
            two_ports: has_avx512_two_ports(),
            a: a.as_ptr(),
            lda: m,
            b: b.as_ptr(),
            ldb: n,
            c: whole.as_mut_ptr(),
            ldc: m,
            n,
            k,
            sums: std::ptr::null_mut(),
        };
        // SAFETY: AVX-512 checked; the operands are whole contiguous matrices.
        unsafe { problem.rows(0, m) };
        let mut split = DMatrix::zeros(m, n);
        add_a_bt(&mut split, &a, &b);
        assert_eq!(whole, split);
        let mut with_sums = DMatrix::zeros(m, n);
        let mut sums = vec![0.0; m];
        add_a_bt_row_sums(&mut with_sums, &a, &b, &mut sums);
        assert_eq!(whole, with_sums);
        let mut want = vec![0.0; m];
        add_row_sums(&mut want, &a);
        assert_eq!(sums, want);
    }
}
