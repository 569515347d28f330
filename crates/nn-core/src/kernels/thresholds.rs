//! The kernels' size thresholds, in one table: from what size work is split over the
//! [`pool`](super::pool)'s threads or sent to another kernel. Each is a measured size (figures
//! in PERF.md); none changes a result, only where it is computed.
//!
//! Under Miri the splitting sizes are lowered, so that its runs of the tests reach the split
//! paths at sizes it can interpret (the same code, only taken earlier; see RELIABILITY.md).

/// Products of at least this many multiply-adds (`m·k·n`) are shared with the pool's threads
/// (parts in [`gemm`](mod@crate::gemm), panels in
/// [`packed_matmul_threaded`](super::packed::packed_matmul_threaded), rows in
/// [`add_a_bt`](super::wgrad::add_a_bt)); smaller ones run on the calling thread
/// ([`matmul`](crate::matmul) sends them to the packed kernel), where waking a thread costs more
/// than the product. Figures in PERF.md.
pub const PARALLEL_MIN_MACS: usize = if cfg!(miri) { 1 << 12 } else { 1 << 21 };

/// Elementwise passes over at least this many values (1 MiB of `f32`) are cut into parts:
/// the bias-gradient sums, the softmax cross-entropy, the finiteness checks; a fork costs
/// microseconds, such a pass tens of them. Figures in PERF.md.
pub const SPLIT_MIN_VALUES: usize = if cfg!(miri) { 1 << 9 } else { 1 << 18 };

/// Packings of at least this many values are cut into parts of whole panels: half of
/// [`SPLIT_MIN_VALUES`], as a packing is serial work right before a time loop and reads a weight
/// often no longer in cache. Figures in PERF.md.
pub const PACK_SPLIT_MIN_VALUES: usize = SPLIT_MIN_VALUES / 2;

/// Widest `C` (columns) on [`add_a_bt`](super::wgrad::add_a_bt)'s AVX-512 path: `B`'s block of
/// `n x KC` `f32` then stays in a 1 MiB L2 beside the rest; wider ran slower than matrixmultiply.
/// Figures in PERF.md.
pub const ADD_A_BT_MAX_COLS: usize = 384;

/// Matrix–vector products ([`gemv`](super::gemv)) of at least this many multiply-adds (all
/// terms of one call) are cut into two static halves of rows on two threads; smaller ones run on
/// the calling thread (at `2^16`, `small`'s `512x128` step product lost 2-3% to the fork).
pub const GEMV_SPLIT_MIN_MACS: usize = if cfg!(miri) { 1 << 10 } else { 1 << 17 };
