//! The compute kernels under [`gemm`](mod@crate::gemm), the layers and the losses. Internal
//! machinery, public for the crates above (`nn-recurrent`'s time loops, benchmarks); none of it
//! is re-exported at the crate root. Shapes are column-major; `op(X)` is `X` or `Xᵀ`
//! ([`Trans`](crate::Trans)).
//!
//! - [`packed`]: `C (=|+=) op(A)·B` with `op(A)` (`m x k`) packed once into zero-padded row
//!   panels ([`PackedMatrix`](packed::PackedMatrix)) and `B` (`k x n`) read in place; a
//!   register-blocked micro-kernel allocating nothing, for the recurrent time loops (one product
//!   per step with the same weight). [`packed_matmul_pair`](packed::packed_matmul_pair) runs
//!   `op(A1)·B1 + op(A2)·B2` as one chain of multiply-adds per element.
//! - [`gemv`]: `y (=|+=) A·x` for one to three columns (batch-1 inference), `A` packed once
//!   into panels read as sequential streams ([`GemvMatrix`](gemv::GemvMatrix)) or a column-major
//!   matrix read in place; each element the packed kernel's chain; large products on two static
//!   halves of rows.
//! - [`wgrad`]: `C += A·Bᵀ` (`A` `m x k`, `B` `n x k`, `C` `m x n`) read in place, for weight
//!   gradients `dW += dG·Xᵀ`, optionally with `A`'s row sums (the bias gradient) in the same
//!   pass.
//! - [`peak`]: one core's measured `f32` multiply-add peak, the ceiling kernels are compared to.
//! - [`row_sums`]: `db[i] += Σ_j M[i, j]`, the bias gradient of a product.
//! - [`simd`]: runs elementwise loops compiled for AVX-512 or AVX2 + FMA when the CPU has them,
//!   with the same bits on every path.
//! - [`pool`]: fork-join on persistent helper threads (as many as [`pool::threads`] says), which
//!   the kernels split large work with (always into parts whose results depend neither on the
//!   thread that runs them nor on how many parts there are).
//! - [`thresholds`]: the one table of sizes from which work is split or sent to another kernel.
//!
//! Every kernel gives the same bits whatever the thread count or the split, and the fused copies
//! (AVX2 + FMA, AVX-512) give the same bits as each other.

pub mod gemv;
pub mod packed;
pub mod peak;
pub mod pool;
pub mod row_sums;
pub mod simd;
pub mod thresholds;
pub mod wgrad;

/// Where a split product is cut: a multiple of this many rows (or columns). matrixmultiply's
/// cache blocks (`mc` = 64 rows) and register tiles (8 rows or columns) then fall on the same
/// elements in each part as in the whole product, so every element is the same sum computed by
/// the same kernel: the results are bit-identical for any number of parts and threads.
pub(crate) const SPLIT_ALIGN: usize = 64;
