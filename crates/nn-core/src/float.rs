//! The scalar type: `f32` (the default, for speed) or `f64` (gradient checks, fixtures).
//!
//! Besides nalgebra's `RealField` arithmetic, a [`Float`] knows how to run the matrix-product
//! kernel for its own type (`matrixmultiply::sgemm` or `dgemm`) and how it is stored in a
//! safetensors file (its dtype and little-endian bytes).

use nalgebra::RealField;
use std::fmt::{Debug, Display};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point scalar the library computes in: `f32` or `f64`.
pub trait Float:
    RealField + Copy + Default + Send + Sync + Debug + Display + sealed::Sealed + 'static
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;
    /// Bytes per value.
    const BYTES: usize;
    /// The dtype this type is written with in a safetensors file.
    const DTYPE: safetensors::Dtype;

    /// Converts from `f64`, rounding to nearest for `f32`.
    fn cast(x: f64) -> Self;
    /// Widens to `f64` (exact).
    fn as_f64(self) -> f64;
    /// Converts from `f32` (exact).
    fn cast_f32(x: f32) -> Self;
    /// Appends the little-endian bytes of `self`.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads one value from exactly `Self::BYTES` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// `true` unless NaN or infinite.
    fn finite(self) -> bool;
    /// The logistic function `1/(1+e^{-x})`, as the cells and losses compute it.
    /// `f64`: from libm's `exp`, overflow-safe (the exact reference for fixtures and gradient
    /// checks). `f32`: from [`exp_f32`], branch-free so the gate loops vectorize.
    fn act_sigmoid(self) -> Self;
    /// `tanh x`, as the cells compute it. `f64`: libm. `f32`: [`tanh_f32`].
    fn act_tanh(self) -> Self;
    /// `e^x`, as the softmax computes it. `f64`: libm. `f32`: [`exp_f32`] (vectorizes).
    fn act_exp(self) -> Self;

    /// `c = alpha * a * b + beta * c` on raw strided storage (`a` is `m x k`, `b` is `k x n`).
    /// When `beta` is zero, `c` is not read, so it may hold NaN or garbage.
    ///
    /// # Safety
    /// The pointers and strides must describe valid, non-overlapping (for `c`) storage of the
    /// stated shapes, exactly as `matrixmultiply::sgemm` requires.
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $dtype:ident, $gemm:ident, $sigmoid:path, $tanh:path, $exp:path) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            const BYTES: usize = std::mem::size_of::<$t>();
            const DTYPE: safetensors::Dtype = safetensors::Dtype::$dtype;

            #[inline(always)]
            fn cast(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn as_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn cast_f32(x: f32) -> Self {
                x as $t
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(bytes);
                <$t>::from_le_bytes(buf)
            }
            #[inline(always)]
            fn finite(self) -> bool {
                self.is_finite()
            }
            #[inline(always)]
            fn act_sigmoid(self) -> Self {
                $sigmoid(self)
            }
            #[inline(always)]
            fn act_tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn act_exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded from the caller's contract.
                unsafe {
                    matrixmultiply::$gemm(
                        m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc,
                    )
                }
            }
        }
    };
}

impl_float!(f32, "f32", F32, sgemm, sigmoid_f32, tanh_f32, exp_f32);
impl_float!(f64, "f64", F64, dgemm, sigmoid_f64, f64::tanh, f64::exp);

#[inline(always)]
fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `e^x` for `f32` without branches, so loops over it vectorize.
///
/// Cephes' `expf`: `x = n ln2 + r` with `n = round(x / ln2)` (by the 1.5·2²³ rounding trick),
/// `|r| ≤ ln2/2`, `e^r` by a degree-7 polynomial, then `2^n` built in the exponent bits. The input
/// is clamped to `[-87, 88]` (outside, `e^x` is below `f32`'s normal range or above its max), so
/// the result is always a normal number; NaN passes through as NaN. Relative error ≤ 2e-7
/// (tested against `f64::exp` in this file's tests).
///
/// The multiply-adds are fused (`mul_add`): one instruction each in the loops compiled for
/// AVX-512 or AVX2 + FMA ([`simd::dispatch`](crate::kernels::simd::dispatch), where every hot
/// caller runs it), a call to libm's `fmaf` elsewhere, slower but giving the same bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    // Comparisons (not min/max) so that NaN stays NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((ni.wrapping_add(127) << 23) as u32);
    let p = 1.987_569_1e-4f32.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    (p.mul_add(r * r, r) + 1.0) * scale
}

/// `σ(x) = 1/(1+e^{-x})` for `f32` via [`exp_f32`]; absolute error below 1e-7.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh x` for `f32`: an odd Taylor polynomial for `|x| < 0.125` (where `1 - 2/(e^{2x}+1)`
/// would cancel), else `1 - 2/(e^{2x}+1)` via [`exp_f32`]. Both are computed and one selected,
/// so loops vectorize. Absolute error below 2e-7.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let x2 = x * x;
    let small = x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    let large = 1.0 - 2.0 / (exp_f32(2.0 * x) + 1.0);
    if x2 < 0.015_625 { small } else { large }
}

/// Converts an `f64` constant into `T`; shorthand used throughout the crates.
#[inline(always)]
pub fn lit<T: Float>(x: f64) -> T {
    T::cast(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_f32_activations_are_accurate_everywhere() {
        let mut worst = (0.0f64, 0.0f64, 0.0f64);
        let mut x = -100.0f32;
        while x < 100.0 {
            let e = exp_f32(x) as f64;
            let want = (x as f64).clamp(-87.0, 88.0).exp();
            worst.0 = worst.0.max((e - want).abs() / want);
            worst.1 = worst
                .1
                .max((sigmoid_f32(x) as f64 - sigmoid_f64(x as f64)).abs());
            worst.2 = worst.2.max((tanh_f32(x) as f64 - (x as f64).tanh()).abs());
            x += 0.0137;
        }
        assert!(
            worst.0 < 2e-7 && worst.1 < 1e-7 && worst.2 < 2e-7,
            "{worst:?}"
        );
        assert!(exp_f32(f32::NAN).is_nan() && sigmoid_f32(f32::NAN).is_nan());
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(
            (sigmoid_f32(-1e4), sigmoid_f32(1e4)),
            (0.0f32.max(sigmoid_f32(-1e4)), 1.0)
        );
        assert_eq!((tanh_f32(50.0), tanh_f32(-50.0)), (1.0, -1.0));
        assert_eq!(tanh_f32(0.0), 0.0);
    }
}
