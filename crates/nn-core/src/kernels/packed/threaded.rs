//! Large products shared with the [`pool`](crate::kernels::pool)'s helper threads.
//!
//! Every thread claims chunks of panels from a shared counter until none is left, so a helper
//! that is slow to start simply takes fewer (or none: the caller takes back a part not started,
//! and finds nothing left to do in it). Each panel is computed the same way by any thread, so
//! results are bit-identical to the single-thread ones.

use super::Problem;
use super::kernel::run_panels;
use crate::Float;
use crate::kernels::simd::Isa;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Panels per unit of work claimed by a thread: one panel, or four for very narrow `B` (where
/// the kernel works on four panels at once).
fn chunk_panels(n: usize) -> usize {
    if n <= 3 { 4 } else { 1 }
}

struct Job<T> {
    prob: Problem<T>,
    isa: Isa,
    panels: usize,
    next: AtomicUsize,
}

// SAFETY: the job's raw pointers describe storage the caller of [`run`] vouches for until
// every part has returned; each chunk of rows of `C` is claimed by exactly one thread.
unsafe impl<T: Send> Sync for Job<T> {}

impl<T: Float> Job<T> {
    /// Claims chunks of panels until none is left.
    ///
    /// # Safety
    /// As [`run`].
    unsafe fn work(&self) {
        let chunk = chunk_panels(self.prob.n);
        loop {
            let p0 = self.next.fetch_add(chunk, Ordering::Relaxed);
            if p0 >= self.panels {
                return;
            }
            let p1 = (p0 + chunk).min(self.panels);
            // SAFETY: each chunk is claimed by exactly one thread, so the rows of `C` it
            // writes are written by no one else; the rest is as `run_panels` requires.
            unsafe { run_panels(&self.prob, p0, p1, self.isa) };
        }
    }
}

/// Runs all `panels` of `prob`, sharing them with the pool's helper threads.
///
/// # Safety
/// As [`run_panels`] for the whole panel range.
pub(super) unsafe fn run<T: Float>(prob: &Problem<T>, panels: usize, isa: Isa) {
    let job = Job {
        prob: *prob,
        isa,
        panels,
        next: AtomicUsize::new(0),
    };
    let job = &job;
    let threads = crate::kernels::pool::threads().min(panels.div_ceil(chunk_panels(prob.n)));
    // SAFETY: from the caller, for every part.
    crate::kernels::pool::for_each_part(threads, |_| unsafe { job.work() });
}
