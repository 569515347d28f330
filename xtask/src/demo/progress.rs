//! The demos' progress bar: one line on stderr, redrawn in place, hidden when stderr is not a
//! terminal (pipes, CI, tests) so that only the demo's text and final JSON line remain.
//!
//! A run's budget is a number of steps, a number of seconds, or both (whichever ends first);
//! the bar shows the fraction of the budget used and a message the demo writes (step, loss,
//! tokens per second, …).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// How long a training run may go on: until `steps` steps or `seconds` seconds, whichever
/// comes first (`None`: no limit of that kind; at least one is set).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Stop after this many steps.
    pub steps: Option<u64>,
    /// Stop after this many seconds.
    pub seconds: Option<f64>,
}

impl Budget {
    /// The fraction used after `steps` steps and `seconds` seconds, in `[0, 1]`.
    pub fn fraction(&self, steps: u64, seconds: f64) -> f64 {
        let by_steps = self.steps.map_or(0.0, |n| steps as f64 / n.max(1) as f64);
        let by_time = self.seconds.map_or(0.0, |s| seconds / s);
        by_steps.max(by_time).clamp(0.0, 1.0)
    }

    /// `true` once either limit is reached.
    pub fn spent(&self, steps: u64, seconds: f64) -> bool {
        self.steps.is_some_and(|n| steps >= n) || self.seconds.is_some_and(|s| seconds >= s)
    }
}

/// A progress bar over a [`Budget`], or nothing when hidden.
#[derive(Debug)]
pub struct Bar {
    bar: ProgressBar,
}

/// Positions of the bar: per mille of the budget.
const SCALE: u64 = 1000;

impl Bar {
    /// A bar on stderr when `show` and stderr is a terminal; otherwise a hidden one.
    pub fn new(show: bool) -> Bar {
        let target = if show && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(SCALE), target);
        if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {percent:>3}% {wide_msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(250));
        Bar { bar }
    }

    /// Moves the bar to `fraction` of the budget and shows `message`.
    pub fn update(&self, fraction: f64, message: String) {
        self.bar
            .set_position((fraction.clamp(0.0, 1.0) * SCALE as f64) as u64);
        self.bar.set_message(message);
    }

    /// Runs `f` (which prints a line) with the bar cleared, then redraws the bar.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // An error return mid-run must not leave a half-drawn bar behind.
        self.bar.finish_and_clear();
    }
}
