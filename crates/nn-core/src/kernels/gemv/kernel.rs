//! The kernel of [`gemv`](super): for each block of rows, the `k` loop with the block's
//! accumulators in registers (two panels at once on AVX-512, one on AVX2, half of one on the
//! baseline copy; the last, partial block by whole vectors, then single rows), each element one
//! chain over `k` in order; one `#[inline(always)]` body compiled per [`Isa`].

use super::{Layout, Term, panel_rows};
use crate::Float;
use crate::kernels::simd::Isa;

/// Row blocks `u0..u1` of one term.
///
/// # Safety
/// As [`run`] for those rows.
pub(super) unsafe fn run_term<T: Float>(t: &Term<T>, u0: usize, u1: usize, isa: Isa) {
    if t.n == 0 || t.m == 0 {
        return;
    }
    if t.k == 0 {
        // `acc` would be `+0` for every element: write it, or leave `y` (`y + 0` could turn a
        // `-0` into `+0`; the packed kernel leaves it too).
        if !t.add {
            let p = panel_rows::<T>();
            for j in 0..t.n as isize {
                for i in (u0 * p)..(u1 * p).min(t.m) {
                    // SAFETY: inside `y`.
                    unsafe { *t.y.offset(i as isize * t.rsy + j * t.csy) = T::zero() };
                }
            }
        }
        return;
    }
    // SAFETY: forwarded; the copy matches the CPU (`best_isa`, or the tests' `available_isas`).
    unsafe {
        match isa {
            Isa::Generic => drive::<T, 0>(t, u0, u1),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => drive_avx2::<T>(t, u0, u1),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512TwoPorts => drive_avx512::<T>(t, u0, u1),
        }
    }
}

/// [`drive`] compiled with AVX-512.
///
/// # Safety
/// The CPU has avx512f, avx512vl, avx2 and fma; otherwise as [`run_term`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn drive_avx512<T: Float>(t: &Term<T>, u0: usize, u1: usize) {
    // SAFETY: forwarded.
    unsafe { drive::<T, 2>(t, u0, u1) }
}

/// [`drive`] compiled with AVX2 and FMA.
///
/// # Safety
/// The CPU has avx2 and fma; otherwise as [`run_term`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn drive_avx2<T: Float>(t: &Term<T>, u0: usize, u1: usize) {
    // SAFETY: forwarded.
    unsafe { drive::<T, 1>(t, u0, u1) }
}

/// Picks the panel geometry of `T` (const generics, so the tiles have fixed sizes). `W`: 0
/// baseline, 1 AVX2 + FMA, 2 AVX-512.
///
/// # Safety
/// As [`run_term`].
#[inline(always)]
unsafe fn drive<T: Float, const W: u8>(t: &Term<T>, u0: usize, u1: usize) {
    // SAFETY: forwarded; the geometry is `panel_rows` / `lane_rows` of `T`.
    unsafe {
        match T::BYTES {
            4 => drive_p::<T, W, 64, 32, 16>(t, u0, u1),
            _ => drive_p::<T, W, 32, 16, 8>(t, u0, u1),
        }
    }
}

/// Column blocks of at most three.
///
/// # Safety
/// As [`run_term`]; `P` is `panel_rows::<T>()`, `P2` half of it, `V` `lane_rows::<T>()`.
#[inline(always)]
unsafe fn drive_p<T: Float, const W: u8, const P: usize, const P2: usize, const V: usize>(
    t: &Term<T>,
    u0: usize,
    u1: usize,
) {
    let mut j = 0;
    while j < t.n {
        let nr = (t.n - j).min(3);
        // SAFETY: columns `j .. j + nr` lie inside `0..n`; the rest forwarded.
        unsafe {
            match nr {
                1 => units::<T, W, P, P2, V, 1>(t, u0, u1, j),
                2 => units::<T, W, P, P2, V, 2>(t, u0, u1, j),
                _ => units::<T, W, P, P2, V, 3>(t, u0, u1, j),
            }
        }
        j += nr;
    }
}

/// Row blocks `u0..u1` for columns `j0 .. j0 + NR`.
///
/// # Safety
/// As [`drive_p`], with those columns inside `0..n`.
#[inline(always)]
unsafe fn units<
    T: Float,
    const W: u8,
    const P: usize,
    const P2: usize,
    const V: usize,
    const NR: usize,
>(
    t: &Term<T>,
    u0: usize,
    u1: usize,
    j0: usize,
) {
    let (m, k) = (t.m, t.k);
    let full = m / P;
    // Block `u` starts at row `u·P`: its first value and the stride between its k-slices.
    let block = |u: usize| -> (*const T, usize) {
        match t.layout {
            // SAFETY (both arms): block `u` is inside `A`'s storage (`u < units`).
            Layout::Packed => {
                let stride = if u < full {
                    P
                } else {
                    (m - full * P).next_multiple_of(V)
                };
                (unsafe { t.a.add(u * P * k) }, stride)
            }
            Layout::ColMajor { ld } => (unsafe { t.a.add(u * P) }, ld),
        }
    };
    let mut u = u0;
    // SAFETY (whole loop): every tile gets bases of row blocks below `units`, rows inside
    // `0..m` (or zero padding of the packed tail, never written out) and columns inside `0..n`.
    unsafe {
        while u < u1 {
            let (a0, stride) = block(u);
            let row0 = u * P;
            if u < full {
                if W == 2 && u + 1 < u1.min(full) {
                    // Two full panels: 8 chains of 512 bits per column.
                    let (a1, _) = block(u + 1);
                    tile::<T, P, 2, NR, true>(t, [a0, a1], stride, [row0, row0 + P], j0);
                    u += 2;
                    continue;
                }
                match (W, NR) {
                    (2, _) | (1, 1) => tile::<T, P, 1, NR, true>(t, [a0], stride, [row0], j0),
                    (1, _) => {
                        tile::<T, P2, 1, NR, true>(t, [a0], stride, [row0], j0);
                        tile::<T, P2, 1, NR, true>(t, [a0.add(P2)], stride, [row0 + P2], j0);
                    }
                    _ => {
                        tile::<T, P2, 1, NR, false>(t, [a0], stride, [row0], j0);
                        tile::<T, P2, 1, NR, false>(t, [a0.add(P2)], stride, [row0 + P2], j0);
                    }
                }
            } else {
                // The last, partial block: whole vectors (the packed tail is padded to them),
                // then single rows (column-major only).
                let rem = m - row0;
                let vecs = match t.layout {
                    Layout::Packed => rem.div_ceil(V),
                    Layout::ColMajor { .. } => rem / V,
                };
                let at = |q: usize| a0.add(q * V);
                let r = |q: usize| row0 + q * V;
                macro_rules! vectors {
                    ($fma:literal) => {
                        match vecs {
                            0 => {}
                            1 => tile::<T, V, 1, NR, $fma>(t, [at(0)], stride, [r(0)], j0),
                            2 => tile::<T, V, 2, NR, $fma>(
                                t,
                                [at(0), at(1)],
                                stride,
                                [r(0), r(1)],
                                j0,
                            ),
                            3 => tile::<T, V, 3, NR, $fma>(
                                t,
                                [at(0), at(1), at(2)],
                                stride,
                                [r(0), r(1), r(2)],
                                j0,
                            ),
                            _ => {
                                for q in 0..vecs {
                                    tile::<T, V, 1, NR, $fma>(t, [at(q)], stride, [r(q)], j0);
                                }
                            }
                        }
                        for i in (vecs * V).min(rem)..rem {
                            tile::<T, 1, 1, NR, $fma>(t, [a0.add(i)], stride, [row0 + i], j0);
                        }
                    };
                }
                if W == 0 {
                    vectors!(false);
                } else {
                    vectors!(true);
                }
            }
            u += 1;
        }
    }
}

/// `acc + a·b`, fused or not.
#[inline(always)]
fn madd<T: Float, const FMA: bool>(a: T, b: T, acc: T) -> T {
    if FMA { a.mul_add(b, acc) } else { acc + a * b }
}

/// `PM` blocks of `R` rows (block `q` at `bases[q]`, k-slices `stride` apart, first row
/// `rows0[q]`) times columns `j0 .. j0 + NR`: one chain per element over `k`, then written or
/// added to `y` for the rows below `m`.
///
/// # Safety
/// `bases[q] + kk·stride + i` is readable for `kk < k`, `i < R`; columns `j0 .. j0 + NR` of `x`
/// and `y` exist; `rows0[q] + i` below `m` are rows of `y` this thread may write.
#[inline(always)]
unsafe fn tile<T: Float, const R: usize, const PM: usize, const NR: usize, const FMA: bool>(
    t: &Term<T>,
    bases: [*const T; PM],
    stride: usize,
    rows0: [usize; PM],
    j0: usize,
) {
    let mut acc = [[[T::zero(); R]; PM]; NR];
    // SAFETY: column `j0 + j` of `x` starts at `(j0 + j)·csx`.
    let x0 = unsafe { t.x.offset(j0 as isize * t.csx) };
    for kk in 0..t.k {
        let mut av = [[T::zero(); R]; PM];
        for q in 0..PM {
            for i in 0..R {
                // SAFETY: from the caller (`kk < k`, `i < R`).
                av[q][i] = unsafe { *bases[q].add(kk * stride + i) };
            }
        }
        for j in 0..NR {
            // SAFETY: element `(kk, j0 + j)` of `x`.
            let b = unsafe { *x0.offset(kk as isize * t.rsx + j as isize * t.csx) };
            for q in 0..PM {
                for i in 0..R {
                    acc[j][q][i] = madd::<T, FMA>(av[q][i], b, acc[j][q][i]);
                }
            }
        }
    }
    for j in 0..NR {
        for q in 0..PM {
            let v = acc[j][q];
            let rows = t.m.saturating_sub(rows0[q]).min(R);
            for (i, &v) in v.iter().enumerate().take(rows) {
                // SAFETY: row `rows0[q] + i < m`, column `j0 + j < n` of `y`.
                unsafe {
                    let dst =
                        t.y.offset((rows0[q] + i) as isize * t.rsy + (j0 + j) as isize * t.csy);
                    *dst = if t.add { *dst + v } else { v };
                }
            }
        }
    }
}
