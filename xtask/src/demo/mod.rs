//! `cargo xtask demo [NAME] [FLAGS]`: the demos. (Being written: hello, charlm, adding, reber.)
//! Shared parts: [`progress`] (bar and budget), [`json`] (the last line), [`plot`] (SVG loss
//! curves), [`options`] (flags the demos share); data: [`text`], [`adding`], [`reber`].

pub mod adding;
pub mod json;
pub mod options;
pub mod plot;
pub mod progress;
pub mod reber;
pub mod text;

/// Runs a demo; `Ok(true)` on success.
pub fn command(args: &[String]) -> Result<bool, String> {
    let _ = args;
    Err("the demos are not written yet".into())
}
