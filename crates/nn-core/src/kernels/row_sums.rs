//! `db[i] += Σ_j m[i, j]`: the row sums of a matrix `m` (`rows x cols`, any nalgebra matrix or
//! view) added to `db` (`rows` values), a layer's bias gradient from its output gradient.
//!
//! Each row's sum runs over the columns in order, vectorized across rows (the columns of a view
//! with unit row stride are read as slices, through [`simd::dispatch`]);
//! large matrices are summed as parts of rows at once on the [`pool`] (one per thread), which
//! does not change any sum: each row is summed by one thread, over all columns in order.

use super::thresholds::SPLIT_MIN_VALUES;
use super::{SPLIT_ALIGN, pool, simd};
use crate::Float;
use nalgebra::{Dyn, Matrix, RawStorage};

/// `db[i] += Σ_j m[i, j]`: the bias gradient of a product whose output gradient is `m` (a
/// matrix or a view). Each row's sum runs over the columns in order (vectorized across rows);
/// large matrices are summed as parts of rows at once, which does not change any sum.
pub fn add_row_sums<T: Float, S: RawStorage<T, Dyn, Dyn>>(
    db: &mut [T],
    m: &Matrix<T, Dyn, Dyn, S>,
) {
    let (rows, cols) = m.shape();
    assert_eq!(
        db.len(),
        rows,
        "add_row_sums: {} sums for {rows} rows",
        db.len()
    );
    if rows == 0 || cols == 0 {
        return;
    }
    let (rs, cs) = m.strides();
    if rs != 1 {
        for j in 0..cols {
            for (i, g) in db.iter_mut().enumerate() {
                *g += m[(i, j)];
            }
        }
        return;
    }
    /// The columns of a view with contiguous columns, shareable with the pool's helper.
    struct Cols<T> {
        first: *const T,
        stride: usize,
        rows: usize,
    }
    // SAFETY: `Cols` only reads, through `col`, the elements of a view borrowed for the call.
    unsafe impl<T: Sync> Sync for Cols<T> {}
    impl<T> Cols<T> {
        /// Rows `r0 .. r0 + n` of column `j`.
        ///
        /// # Safety
        /// `j` is below the view's column count and `r0 + n <= rows`.
        unsafe fn col(&self, j: usize, r0: usize, n: usize) -> &[T] {
            debug_assert!(r0 + n <= self.rows);
            // SAFETY: column `j` of the view holds `rows` contiguous elements from
            // `first + j*stride` (row stride 1, checked above), and `r0 + n <= rows`.
            unsafe { std::slice::from_raw_parts(self.first.add(j * self.stride + r0), n) }
        }
    }
    /// Rows `r0 .. r0 + part.len()` of `m` into `part`.
    fn sum_rows<T: Float>(part: &mut [T], m: &Cols<T>, cols: usize, r0: usize) {
        simd::dispatch(
            #[inline(always)]
            || {
                let n = part.len();
                for j in 0..cols {
                    // SAFETY: `j < cols`, and the callers pass `r0 + part.len() <= rows`.
                    for (g, &v) in part.iter_mut().zip(unsafe { m.col(j, r0, n) }) {
                        *g += v;
                    }
                }
            },
        );
    }
    let view = Cols {
        first: m.as_ptr(),
        stride: cs,
        rows,
    };
    let parts = pool::threads().min(rows / SPLIT_ALIGN);
    if rows * cols >= SPLIT_MIN_VALUES && parts >= 2 {
        /// The sums, written by the parts, each its own rows.
        struct Sums<T>(*mut T);
        // SAFETY: the parts write disjoint ranges of `db`, borrowed mutably for the call.
        unsafe impl<T: Send> Sync for Sums<T> {}
        let sums = Sums(db.as_mut_ptr());
        let (sums, view) = (&sums, &view);
        pool::for_each_part(parts, |i| {
            let r = pool::part_range(rows, parts, SPLIT_ALIGN, i);
            // SAFETY: `r` is within `0..rows` (the length of `db`), and the parts' ranges do not
            // overlap, so this slice is the only access to these sums during the call.
            let part = unsafe { std::slice::from_raw_parts_mut(sums.0.add(r.start), r.len()) };
            sum_rows(part, view, cols, r.start);
        });
    } else {
        sum_rows(db, &view, cols, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::tests::rand_mat;
    use nalgebra::DMatrix;

    #[test]
    fn row_sums_add_each_row_in_column_order() {
        // 4x3 by hand, then a matrix large enough to be summed as two halves of rows.
        let m = DMatrix::from_fn(4, 3, |i, j| (i * 3 + j) as f64);
        let mut db = vec![1.0; 4];
        add_row_sums(&mut db, &m);
        assert_eq!(db, [4.0, 13.0, 22.0, 31.0]);
        let (rows, cols) = if cfg!(miri) { (130, 8) } else { (300, 4000) };
        let m = rand_mat(rows, cols, 9);
        let mut db = vec![0.5; rows];
        add_row_sums(&mut db, &m);
        for (i, &got) in db.iter().enumerate() {
            let want = m.row(i).iter().fold(0.5, |s, &v| s + v);
            assert_eq!(got.to_bits(), want.to_bits(), "row {i}");
        }
        // Views: a row range (columns not contiguous with one another) and a transpose-like
        // view whose rows are strided.
        let part = m.rows(7, rows - 20);
        let mut db = vec![0.25; rows - 20];
        add_row_sums(&mut db, &part);
        for (i, &got) in db.iter().enumerate() {
            let want = m.row(7 + i).iter().fold(0.25, |s, &v| s + v);
            assert_eq!(got.to_bits(), want.to_bits(), "view row {i}");
        }
        let small = DMatrix::from_fn(3, 5, |i, j| (i * 5 + j) as f64);
        let strided = small.as_slice();
        let t = nalgebra::DMatrixView::from_slice_with_strides_generic(
            strided,
            Dyn(5),
            Dyn(3),
            Dyn(3),
            Dyn(1),
        );
        let mut db = vec![0.0; 5];
        add_row_sums(&mut db, &t);
        assert_eq!(db, [15.0, 18.0, 21.0, 24.0, 27.0]);
    }
}
