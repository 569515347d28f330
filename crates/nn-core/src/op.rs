//! How a matrix product reads its operands and meets its output: [`Trans`] says whether an
//! operand `X` enters as `X` or `Xᵀ` (written `op(X)`), [`Accum`] whether `C = op(A)·op(B)`
//! replaces `C` or is added to it (`beta` = 0 or 1 in `C = alpha·op(A)·op(B) + beta·C`).
//!
//! Shared by [`gemm`](mod@crate::gemm) and the [`kernels`](crate::kernels), which both take them.

use crate::Float;

/// Whether an operand enters the product as is or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// `X`
    No,
    /// `Xᵀ`
    Yes,
}

/// Whether a product replaces the output or is added to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accum {
    /// `C = op(A) op(B)`; the old `C` is not read.
    Replace,
    /// `C += op(A) op(B)`.
    Add,
}

impl Accum {
    /// `beta` of `C = alpha·op(A)·op(B) + beta·C`: 0 for [`Accum::Replace`], 1 for
    /// [`Accum::Add`].
    pub(crate) fn beta<T: Float>(self) -> T {
        match self {
            Accum::Replace => T::zero(),
            Accum::Add => T::one(),
        }
    }
}
