//! Child processes that run one test of the current test binary, for tests that need a fresh
//! process: one to kill at a random moment, or one that reads a per-process setting (an
//! environment variable read once) differently from the parent.
//!
//! The child's entry is an ordinary `#[test]` marked
//! `#[ignore = "child process of <parent>; run by it"]`, so that a normal run lists it as
//! ignored rather than as a test that passed without checking anything. The parent starts it
//! with [`child_test`] (`--ignored --exact <name>`) and hands it its work through an
//! environment variable, which the child reads with [`child_env`]: run without it, the child
//! fails, saying which test runs it.

use std::ffi::OsString;
use std::process::Command;

/// A command that runs this test binary again with only the ignored test `name` (matched
/// exactly), on one test thread. Add the environment the child needs, then spawn it.
pub fn child_test(name: &str) -> Command {
    let exe = std::env::current_exe().expect("the path of the running test binary");
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--exact", name, "--test-threads=1"]);
    cmd
}

/// In a child started by [`child_test`], the value of `var`, which `parent` (the test that
/// starts this child) sets. Panics when `var` is unset: the child checks nothing on its own.
pub fn child_env(var: &str, parent: &str) -> OsString {
    std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: this is a child process of the test `{parent}`, which runs it")
    })
}
