//! nn-core: the building blocks under the recurrent layers.
//!
//! What a user works with is at the crate root:
//!
//! - [`Dense`], [`Embedding`], [`Activation`], [`loss`]: layers and losses, each with forward
//!   and backward.
//! - [`Param`] and [`Module`]: parameters with gradients, visited by PyTorch `state_dict` name.
//! - [`init`] ([`Init`]): seeded initializers; [`Rng`]: the seeded generator they draw from.
//! - [`tensor_io`]: safetensors files (PyTorch weight files and the reference fixtures).
//! - [`gradcheck`]: finite-difference checks of any backward pass.
//! - [`gemm()`] and [`matmul`] (`C = alpha·op(A)·op(B) + beta·C`, transposes as [`Trans`],
//!   replace or add as [`Accum`]), [`matmul_bias`]: matrix products on any nalgebra matrix or
//!   view.
//! - [`Float`] (`f32` or `f64`), [`Error`] and [`Result`] with the shape checks, [`try_zeros`]
//!   (allocation as an error, not an abort).
//! - [`set_threads`]: how many threads the large products, time loops and losses use (default:
//!   the environment variable `NN_NUM_THREADS`, else the machine's available parallelism).
//!   Results are bit-identical for every thread count.
//!
//! [`kernels`] holds the machinery under them, public for the crates above but not re-exported
//! here: the packed time-loop product, the weight-gradient product, the bias-gradient sums, the
//! vector-width dispatch, the thread pool and the table of size thresholds.
//!
//! Shapes are `(features, batch)`: each column is one example.
//!
//! ```
//! use nn_core::{Dense, Module, Rng, loss};
//! use nalgebra::DMatrix;
//!
//! let mut rng = Rng::seed_from(0);
//! let mut dense = Dense::<f64>::new(3, 2, &mut rng).unwrap(); // 3 inputs -> 2 classes
//! let x = DMatrix::from_column_slice(3, 2, &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5]); // batch of 2
//! let logits = dense.forward(&x).unwrap(); // (2, 2)
//! let (loss, d_logits) = loss::softmax_cross_entropy_with_grad(&logits, &[0, 1]).unwrap();
//! dense.zero_grad();
//! let dx = dense.backward(&x, &d_logits).unwrap(); // fills dense.weight.grad, dense.bias.grad
//! assert!(loss > 0.0 && dx.shape() == (3, 2));
//! ```

pub mod activation;
pub mod alloc;
pub mod dense;
pub mod embedding;
pub mod error;
pub mod float;
pub mod gemm;
pub mod gradcheck;
pub mod init;
pub mod kernels;
pub mod loss;
mod op;
pub mod param;
pub mod rng;
pub mod tensor_io;

pub use activation::Activation;
pub use alloc::try_zeros;
pub use dense::Dense;
pub use embedding::Embedding;
pub use error::{Error, Result, Shape, check_finite, check_shape};
pub use float::{Float, lit};
pub use gemm::{gemm, matmul, matmul_bias};
pub use init::Init;
pub use kernels::pool::set_threads;
pub use op::{Accum, Trans};
pub use param::{Module, Param, visit_prefixed, visit_prefixed_mut};
pub use rng::Rng;

/// Re-exported so users need not pin the same nalgebra version themselves.
pub use nalgebra;
