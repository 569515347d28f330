//! The micro-kernel of [`packed`](super): an `MR x NR` tile of `C` (`NR` ≤ 6 columns of `B`)
//! in fixed-size arrays that LLVM keeps in vector registers, `k` innermost over the packed
//! panel; for 1 to 3 columns of `B`, several panels at once, and on a core with two 512-bit FMA
//! ports ([`Isa::Avx512TwoPorts`]) four panels per tile (`4·MR x 6`, 24 independent sums). Each element is one chain
//! `acc = acc + op(A)[i, kk]·B[kk, j]` over `kk` in order (fused where the copy allows), then
//! `C = acc` or `C = C + acc`, whatever the tile. One `#[inline(always)]` body, compiled for
//! AVX-512, for AVX2 + FMA and plainly, chosen by [`Isa`].

use super::Problem;
use crate::Float;
use crate::kernels::simd::Isa;

/// Widest column block of the micro-kernel (columns of `B` per tile).
const NR: usize = 6;

/// Runs panels `p0..p1` of the product on the given kernel.
///
/// # Safety
/// `prob` must describe valid storage as [`packed_matmul`](super::packed_matmul) sets it up,
/// with `p1` at most the number of panels; no other thread may write the same rows of `C` meanwhile.
pub(super) unsafe fn run_panels<T: Float>(prob: &Problem<T>, p0: usize, p1: usize, isa: Isa) {
    match isa {
        // SAFETY: forwarded from the caller.
        Isa::Generic => unsafe { drive::<T, false, false>(prob, p0, p1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2Fma` is only chosen after run-time detection of avx2 and fma
        // (`simd::best_isa`, or `simd::available_isas` in tests); the rest is forwarded from the
        // caller.
        Isa::Avx2Fma => unsafe { drive_avx2_fma::<T>(prob, p0, p1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only chosen after run-time detection of avx512f, avx512vl, avx2
        // and fma (as `Avx2Fma`); the rest is forwarded from the caller.
        Isa::Avx512 => unsafe { drive_avx512::<T, false>(prob, p0, p1) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as `Avx512` (the same features; only the tiles differ).
        Isa::Avx512TwoPorts => unsafe { drive_avx512::<T, true>(prob, p0, p1) },
    }
}

/// [`drive`] compiled with AVX-512F and VL enabled. The kernel has its own `target_feature`
/// wrappers rather than [`simd::run_on`](crate::kernels::simd::run_on)'s: LLVM does not inline a
/// closure this large into those, and the kernel would then run as compiled for the baseline CPU.
///
/// # Safety
/// The CPU must support avx512f, avx512vl, avx2 and fma; otherwise as [`run_panels`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn drive_avx512<T: Float, const TWO_PORTS: bool>(prob: &Problem<T>, p0: usize, p1: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { drive::<T, true, TWO_PORTS>(prob, p0, p1) }
}

/// [`drive`] compiled with AVX2 and FMA enabled.
///
/// # Safety
/// The CPU must support avx2 and fma; otherwise as [`run_panels`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn drive_avx2_fma<T: Float>(prob: &Problem<T>, p0: usize, p1: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { drive::<T, true, false>(prob, p0, p1) }
}

/// Picks the panel height for `T` (a const generic, so tile arrays have fixed sizes).
///
/// # Safety
/// As [`run_panels`].
#[inline(always)]
unsafe fn drive<T: Float, const FMA: bool, const TWO_PORTS: bool>(
    prob: &Problem<T>,
    p0: usize,
    p1: usize,
) {
    // SAFETY: forwarded from the caller; the panel height matches `panel_rows::<T>()`.
    unsafe {
        match T::BYTES {
            4 => drive_mr::<T, 16, FMA, TWO_PORTS>(prob, p0, p1),
            _ => drive_mr::<T, 8, FMA, TWO_PORTS>(prob, p0, p1),
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

/// The loop over panels and column blocks, for panels `p0..p1`. With `TWO_PORTS` (a core with
/// two 512-bit FMA ports, which needs at least 8 independent sums in flight) a tile spans four
/// panels (`4·MR x 6`: 24 sums in 24 of the 32 registers, each `B` value broadcast once for
/// four loads of `A`; the last panels in twos and ones), and narrow `B` takes 4 panels at once
/// for 1, 2 or 3 columns; otherwise a tile is one panel (`MR x 6`: 6 sums, which Zen 4's one
/// 512-bit operation per cycle keeps busy) and narrow `B` takes 4, 3 or 2 panels.
///
/// # Safety
/// As [`run_panels`], and `MR` must be the packing's panel height.
#[inline(always)]
unsafe fn drive_mr<T: Float, const MR: usize, const FMA: bool, const TWO_PORTS: bool>(
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
            // Matrix-vector-like: several panels at once, for enough independent accumulators;
            // the panels left over in smaller groups.
            let mut p = p0;
            macro_rules! groups {
                ($nr:literal; $($pm:literal)*) => {{
                    $(
                        while p1 - p >= $pm {
                            tile::<T, MR, $pm, $nr, FMA>(prob, p, 0, panel_len);
                            p += $pm;
                        }
                    )*
                }};
            }
            match (n, TWO_PORTS) {
                (1, true) => groups!(1; 4 2 1),
                (2, true) => groups!(2; 4 2 1),
                (_, true) => groups!(3; 4 2 1),
                (1, false) => groups!(1; 4 1),
                (2, false) => groups!(2; 3 1),
                _ => groups!(3; 2 1),
            }
            return;
        }
        let mut p = p0;
        while p < p1 {
            // Panels per tile: 4 on two ports while 4 are left, then 2, then 1.
            let pm = match p1 - p {
                r if TWO_PORTS && r >= 4 => 4,
                r if TWO_PORTS && r >= 2 => 2,
                _ => 1,
            };
            let mut j = 0;
            while j < n {
                let w = block_width(n - j);
                macro_rules! widths {
                    ($pm:literal) => {
                        match w {
                            6 => tile::<T, MR, $pm, 6, FMA>(prob, p, j, panel_len),
                            5 => tile::<T, MR, $pm, 5, FMA>(prob, p, j, panel_len),
                            4 => tile::<T, MR, $pm, 4, FMA>(prob, p, j, panel_len),
                            3 => tile::<T, MR, $pm, 3, FMA>(prob, p, j, panel_len),
                            2 => tile::<T, MR, $pm, 2, FMA>(prob, p, j, panel_len),
                            _ => tile::<T, MR, $pm, 1, FMA>(prob, p, j, panel_len),
                        }
                    };
                }
                match pm {
                    4 => widths!(4),
                    2 => widths!(2),
                    _ => widths!(1),
                }
                j += w;
            }
            p += pm;
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
