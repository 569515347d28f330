//! `cargo xtask bench`: the reference workloads (being written).

/// Runs the workloads; `Ok(true)` on success.
pub fn command(args: &[String]) -> Result<bool, String> {
    let _ = args;
    Err("bench is not written yet".into())
}
