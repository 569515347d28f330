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
    ($t:ty, $name:literal, $dtype:ident, $gemm:ident) => {
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

impl_float!(f32, "f32", F32, sgemm);
impl_float!(f64, "f64", F64, dgemm);

/// Converts an `f64` constant into `T`; shorthand used throughout the crates.
#[inline(always)]
pub fn lit<T: Float>(x: f64) -> T {
    T::cast(x)
}
