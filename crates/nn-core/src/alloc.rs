//! Fallible allocation of matrices, for buffers whose size the caller chooses (a layer's sizes,
//! a sequence's length): `rows · cols` values that overflow `usize`, exceed `isize::MAX` bytes
//! or that the allocator refuses become [`Error::TooLarge`] instead of a panic or an abort.
//!
//! The values are then written (zeros), so memory the system promised but cannot deliver still
//! ends the process the way any program's would; what this catches is a size no machine has.

use crate::{Error, Float, Result};
use nalgebra::DMatrix;

/// A `(rows, cols)` matrix of zeros, or [`Error::TooLarge`] naming `op` when it cannot be
/// allocated.
pub fn try_zeros<T: Float>(op: &'static str, rows: usize, cols: usize) -> Result<DMatrix<T>> {
    let too_large = || Error::TooLarge { op, rows, cols };
    let n = rows
        .checked_mul(cols)
        .filter(|&n| n <= isize::MAX as usize / std::mem::size_of::<T>())
        .ok_or_else(too_large)?;
    let mut values = Vec::new();
    values.try_reserve_exact(n).map_err(|_| too_large())?;
    values.resize(n, T::zero());
    Ok(DMatrix::from_vec(rows, cols, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri stops at an allocation it cannot hold instead of failing it"
    )]
    fn sizes_no_machine_has_are_errors() {
        let m = try_zeros::<f32>("test", 3, 2).unwrap();
        assert_eq!(m, DMatrix::zeros(3, 2));
        assert_eq!(try_zeros::<f64>("test", 0, 5).unwrap().shape(), (0, 5));
        // rows · cols overflows usize; then more than isize::MAX bytes; then 2^62 bytes, more
        // than a 64-bit address space offers (48 bits on x86_64 and aarch64), refused by the
        // allocator.
        for (r, c) in [(1 << 33, 1 << 31), (1 << 31, 1 << 31), (1 << 30, 1 << 30)] {
            let e = try_zeros::<f32>("test", r, c).unwrap_err();
            assert!(
                matches!(e, Error::TooLarge { op: "test", rows, cols } if rows == r && cols == c),
                "{e}"
            );
        }
    }
}
