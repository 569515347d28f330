//! The project's task runner, as a library so its pieces are tested like any other code.
//!
//! `cargo xtask <command>` (the alias in `.cargo/config.toml` builds it in release mode):
//! - `demo [NAME]`: the demos (`hello` by default);
//! - `bench`: the reference workloads of `benches/workloads.json` (`--inference`: those of
//!   `benches/inference.json`);
//! - `check-fixtures DIR`: every PyTorch fixture in DIR against our code.

pub mod bench;
pub mod bench_inference;
pub mod cli;
pub mod demo;
pub mod fixtures;
pub mod memory;

use std::path::PathBuf;

/// The workspace root (the folder above `xtask/`), so paths work from any working directory.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
