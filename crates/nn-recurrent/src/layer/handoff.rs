//! One hand-off of work between the two halves of a split time loop.
//!
//! A split time loop runs sequences `0..mid` on the calling thread and `mid..B` on the pool's
//! helper, each for all `T` steps, without meeting. When one core is slowed (this machine shares
//! its cores), the other finishes early and waits. With a [`Handoff`], the side that finishes
//! first asks the other for half of its remaining sequences: the other, at its next step
//! boundary, keeps the first half of its sequences and gives the rest, from the next step on;
//! the asker runs them to the end. At most one hand-off per loop, and it costs one relaxed load
//! per step when nobody asks.
//!
//! Every column is still computed by the same operations (the sequences are independent and the
//! step product gives each column the same sum whatever the tile), so results stay bit-identical.
//!
//! # Protocol
//!
//! `request` goes `IDLE → ASKED_BY[x] → GRANTED | DECLINED`, once. A side that has finished its
//! own work marks itself `FINISHED`, declines any request addressed to it, then (if the other side
//! is `RUNNING`) asks and waits: the other side answers at its next step boundary, or declines
//! when it finishes. With sequentially consistent operations on `state` and `request`, an asker
//! never waits for a side that has finished without answering (see [`Handoff::finish`]). A side
//! that has not started (the pool ran both halves on one thread) is never asked.

use std::ops::Range;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const FINISHED: u8 = 2;

const IDLE: u8 = 0;
/// `ASKED + x`: side `x` asks the other side.
const ASKED: u8 = 1;
const GRANTED: u8 = 3;
const DECLINED: u8 = 4;

/// Tests: hand-offs granted so far in this process.
#[cfg(test)]
pub(crate) static GRANTS: AtomicUsize = AtomicUsize::new(0);

/// What a split loop's steps function gets: the hand-off and its side while it runs its own
/// sequences (it must call [`Handoff::poll`] after every step), `None` for handed-over ones.
pub(crate) type Poll<'a> = Option<(&'a Handoff, usize)>;

/// The shared state of one split loop's possible hand-off. The sequences' running state (the
/// backward's `dh`, `dc`) lives in buffers both sides address by sequence, so a hand-off passes
/// only which sequences, from which step.
///
/// Aligned to a cache line of its own: both threads read `request` after every step, and nothing
/// else on the stack should share that line.
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Handoff {
    state: [AtomicU8; 2],
    request: AtomicU8,
    seqs_start: AtomicUsize,
    seqs_end: AtomicUsize,
    first_step: AtomicUsize,
}

impl Handoff {
    pub(crate) fn new() -> Self {
        Handoff {
            state: [AtomicU8::new(NOT_STARTED), AtomicU8::new(NOT_STARTED)],
            request: AtomicU8::new(IDLE),
            seqs_start: AtomicUsize::new(0),
            seqs_end: AtomicUsize::new(0),
            first_step: AtomicUsize::new(0),
        }
    }

    /// Runs side `side` of a split loop: its own sequences `seqs` through `steps(seqs, first,
    /// poll)` (`first` a step index in the loop's order), then the sequences the other side
    /// hands over, from the step it gives them on.
    pub(crate) fn run_side(
        &self,
        side: usize,
        seqs: Range<usize>,
        steps: impl Fn(Range<usize>, usize, Poll<'_>),
    ) {
        self.start(side);
        steps(seqs, 0, Some((self, side)));
        if let Some((given, first)) = self.finish(side) {
            steps(given, first, None);
        }
    }

    /// Side `side` starts its own work.
    fn start(&self, side: usize) {
        self.state[side].store(RUNNING, Ordering::SeqCst);
    }

    /// Called by side `side` after finishing step index `done` (so steps `done + 1 .. steps` are
    /// left) with sequences `seqs`: when the other side asks and at least two sequences and two
    /// steps are left, gives it the second half of `seqs` and returns the sequences kept. The
    /// caller touches none of the given sequences' data from then on.
    #[inline]
    pub(crate) fn poll(
        &self,
        side: usize,
        seqs: Range<usize>,
        done: usize,
        steps: usize,
    ) -> Range<usize> {
        let asked_by_other = ASKED + (1 - side) as u8;
        if self.request.load(Ordering::Relaxed) != asked_by_other {
            return seqs;
        }
        let left = steps - done - 1;
        if seqs.len() < 2 || left < 2 {
            // Too little to share: let the asker go.
            let _ = self.request.compare_exchange(
                asked_by_other,
                DECLINED,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            return seqs;
        }
        let cut = seqs.start + seqs.len() / 2;
        #[cfg(test)]
        GRANTS.fetch_add(1, Ordering::Relaxed);
        self.seqs_start.store(cut, Ordering::Relaxed);
        self.seqs_end.store(seqs.end, Ordering::Relaxed);
        self.first_step.store(done + 1, Ordering::Relaxed);
        // Only the asker could change `request` now, and it does not while it waits for us.
        self.request.store(GRANTED, Ordering::SeqCst);
        seqs.start..cut
    }

    /// Side `side` has finished its own work: declines a request addressed to it, then, if the
    /// other side is still running and no hand-off happened yet, asks it for work and waits for
    /// the answer. Returns the sequences given and the step index they start from, if any (the
    /// granting side's writes before the grant are visible: release/acquire on `request`).
    fn finish(&self, side: usize) -> Option<(Range<usize>, usize)> {
        let me = ASKED + side as u8;
        let other = 1 - side;
        self.state[side].store(FINISHED, Ordering::SeqCst);
        let _ = self.request.compare_exchange(
            ASKED + other as u8,
            DECLINED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        if self.state[other].load(Ordering::SeqCst) != RUNNING
            || self
                .request
                .compare_exchange(IDLE, me, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return None;
        }
        // The other side may have finished between our check and our request: then it may not
        // have seen the request (it declines what it sees after marking itself finished), so
        // withdraw it. Otherwise it answers at its next step boundary or when it finishes.
        if self.state[other].load(Ordering::SeqCst) == FINISHED {
            let _ = self
                .request
                .compare_exchange(me, DECLINED, Ordering::SeqCst, Ordering::SeqCst);
        }
        let mut spins = 0u32;
        loop {
            match self.request.load(Ordering::SeqCst) {
                GRANTED => break,
                DECLINED => return None,
                _ => {
                    std::hint::spin_loop();
                    spins = spins.wrapping_add(1);
                    if spins > 1 << 16 {
                        std::thread::yield_now();
                    }
                }
            }
        }
        Some((
            self.seqs_start.load(Ordering::Relaxed)..self.seqs_end.load(Ordering::Relaxed),
            self.first_step.load(Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Two threads, side 1 slow: side 0 finishes, asks, and gets the second half of side 1's
    /// sequences from side 1's next step on; every (sequence, step) is done exactly once.
    #[test]
    fn the_fast_side_takes_half_of_the_slow_sides_rest_once() {
        let (steps, batch, mid) = (12usize, 8usize, 4usize);
        let h = Handoff::new();
        let done: Vec<AtomicU8> = (0..steps * batch).map(|_| AtomicU8::new(0)).collect();
        let run = |side: usize, seqs: Range<usize>, from: usize, poll: bool| {
            let mut seqs = seqs;
            for s in from..steps {
                for b in seqs.clone() {
                    done[s * batch + b].fetch_add(1, Ordering::Relaxed);
                }
                if side == 1 {
                    std::thread::sleep(Duration::from_millis(4));
                }
                if poll {
                    seqs = h.poll(side, seqs, s, steps);
                }
            }
        };
        // Both sides start before either works (a side not yet started is never asked).
        let started = std::sync::Barrier::new(2);
        let grants = std::thread::scope(|sc| {
            let mut handles = Vec::new();
            for side in 0..2 {
                let (run, h, started) = (&run, &h, &started);
                handles.push(sc.spawn(move || {
                    h.start(side);
                    started.wait();
                    let own = if side == 0 { 0..mid } else { mid..batch };
                    run(side, own, 0, true);
                    let g = h.finish(side);
                    if let Some((seqs, first)) = &g {
                        run(side, seqs.clone(), *first, false);
                    }
                    g.map(|(seqs, first)| (side, seqs, first))
                }));
            }
            handles
                .into_iter()
                .map(|j| j.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(done.iter().all(|d| d.load(Ordering::Relaxed) == 1));
        let (side, seqs, first) = grants.iter().flatten().next().cloned().unwrap();
        assert_eq!((side, seqs), (0, 6..8));
        assert!(first >= 1 && first < steps - 1);
        assert_eq!(grants.iter().flatten().count(), 1);
    }

    /// A side that has not started is never asked (the pool ran both halves on one thread).
    #[test]
    fn no_request_to_a_side_that_has_not_started_or_has_finished() {
        let h = Handoff::new();
        h.start(0);
        assert!(h.finish(0).is_none());
        h.start(1);
        assert!(h.finish(1).is_none());
    }
}
