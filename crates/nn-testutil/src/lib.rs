//! Helpers shared by the integration tests of the workspace's crates (`crates/*/tests/`,
//! `xtask/tests/`): a dev-dependency only, never published.
//!
//! - [`alloc`]: a global allocator that counts the calling thread's allocations, for the tests
//!   that promise a warm pass allocates nothing (or a known number of times).
//! - [`cases`]: the number of cases of a property test, `PROPTEST_CASES` or a default.
//! - [`matrices`]: matrices of random values from [`nn_core::Rng`], of values repeated from a
//!   list, and a finiteness check.
//! - [`params`]: a module's parameter values, gradients and bits, gathered in visiting order.
//! - [`child`]: re-running the current test binary as a child process that runs one ignored
//!   test, for tests that need a fresh process (a kill, a per-process setting).

pub mod alloc;
pub mod cases;
pub mod child;
pub mod matrices;
pub mod params;

pub use alloc::{CountingAlloc, allocations};
pub use cases::proptest_cases;
pub use child::{child_env, child_test};
pub use matrices::{all_finite, cycled, uniform_matrix};
pub use params::{grads_finite, param_bits, param_grads, param_values};
