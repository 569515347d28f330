//! Packing `op(A)` (`m x k`) into zero-padded, k-major row panels of `MR` rows: element
//! `(p·MR + i, kk)` at `buf[p·MR·k + kk·MR + i]` (see the [`packed`](super) docs). `A` itself
//! is a run of contiguous copies per column; `Aᵀ` a transpose, by 8x8 AVX register transposes
//! for full `f32` panels where the CPU has AVX2 and FMA, else a loop blocked for L1. Large
//! packings are cut into parts of whole panels on the pool (one per thread).

use crate::kernels::thresholds::PACK_SPLIT_MIN_VALUES;
use crate::{Float, Trans};
use nalgebra::{Dim, Matrix, RawStorage};

/// Rows per packed panel for `T`: two 256-bit vectors (16 `f32` or 8 `f64`).
pub(super) const fn panel_rows<T: Float>() -> usize {
    64 / T::BYTES
}

/// A pointer to the matrix being packed, shared by the parts of a packing (which only read
/// through it).
#[derive(Clone, Copy)]
struct SendPtr<T>(*const T);

// SAFETY: only used by `pack`, whose `&` borrow of the matrix outlives every part; nothing
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

/// `op(A)` packed into zero-padded, k-major row panels (see the [module docs](super)).
///
/// Pack once with [`pack`](Self::pack), then run [`packed_matmul`](super::packed_matmul) as often
/// as needed. Re-packing reuses the buffer and allocates only when it must grow.
#[derive(Clone, Debug, Default)]
pub struct PackedMatrix<T: Float> {
    pub(super) buf: Vec<T>,
    pub(super) rows: usize,
    pub(super) cols: usize,
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
        let parts = crate::kernels::pool::threads().min(panels);
        if self.buf.len() >= PACK_SPLIT_MIN_VALUES && parts >= 2 {
            // Parts of the panels at once, on the pool's threads.
            /// The packed buffer, written by the parts, each its own panels.
            struct Dst<T>(*mut T);
            // SAFETY: the parts write disjoint ranges of panels of `self.buf`, borrowed mutably
            // for the call.
            unsafe impl<T: Send> Sync for Dst<T> {}
            let dst = Dst(self.buf.as_mut_ptr());
            let dst = &dst;
            crate::kernels::pool::for_each_part(parts, |i| {
                let r = crate::kernels::pool::part_range(panels, parts, 1, i);
                // SAFETY: panels `r` lie inside the buffer (`panels * panel_len` values), and
                // the parts' ranges do not overlap.
                let part = unsafe {
                    std::slice::from_raw_parts_mut(
                        dst.0.add(r.start * panel_len),
                        r.len() * panel_len,
                    )
                };
                pack_panels(part, r.start);
            });
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
