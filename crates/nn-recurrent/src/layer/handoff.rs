//! Hand-offs of work between the parts of a split time loop.
//!
//! A split time loop runs its batch cut into parts (one per thread), each part's sequences for
//! all `T` steps on one thread, without meeting. When one core is slowed (machines share their
//! cores), the others finish early and wait. With a [`Handoff`], a side (part) that finishes
//! asks a side still running for half of its remaining sequences: the asked side, at its next
//! step boundary, keeps the first half of its sequences and gives the rest, from the next step
//! on; the asker runs them to the end, then asks another side. Each side is asked at most once
//! (at most one hand-off per side and loop), and polling costs one relaxed load per step when
//! nobody asks.
//!
//! Every column is still computed by the same operations (the sequences are independent and the
//! step product gives each column the same sum whatever the tile), so results stay bit-identical.
//!
//! # Protocol
//!
//! Each side `y` has a request slot that goes `IDLE → ASKED_BY[x] → GRANTED | DECLINED`, once.
//! A side that has finished its own work marks itself `FINISHED`, declines any request addressed
//! to it, then, for each other side `y` that is `RUNNING`, claims `y`'s slot (`IDLE → ASKED_BY`)
//! and waits: `y` answers at its next step boundary, or declines when it finishes. With
//! sequentially consistent operations on `state` and `request`, an asker never waits for a side
//! that has finished without answering (see [`Handoff::finish`]). A side that has not started
//! (its part not yet claimed by a thread) is never asked. A side asks only once it has finished
//! its own work and runs handed-over sequences without polling, so no two sides wait for each
//! other.

use std::ops::Range;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// The most sides (parts) a split loop has.
pub(crate) const MAX_SIDES: usize = 64;

const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const FINISHED: u8 = 2;

const IDLE: usize = 0;
const GRANTED: usize = 1;
const DECLINED: usize = 2;
/// `ASKED + x`: side `x` asks.
const ASKED: usize = 3;

/// Tests: hand-offs granted so far in this process.
#[cfg(test)]
pub(crate) static GRANTS: AtomicUsize = AtomicUsize::new(0);

/// What a split loop's steps function gets: the hand-off and its side while it runs its own
/// sequences (it must call [`Handoff::poll`] after every step), `None` for handed-over ones.
pub(crate) type Poll<'a> = Option<(&'a Handoff, usize)>;

/// One side's state and request slot, on a cache line of its own: its thread reads `request`
/// after every step, and other sides' writes should not share that line.
#[derive(Debug)]
#[repr(align(64))]
struct Side {
    state: AtomicU8,
    request: AtomicUsize,
    seqs_start: AtomicUsize,
    seqs_end: AtomicUsize,
    first_step: AtomicUsize,
}

/// The shared state of one split loop's possible hand-offs. The sequences' running state (the
/// backward's `dh`, `dc`) lives in buffers all sides address by sequence, so a hand-off passes
/// only which sequences, from which step.
#[derive(Debug)]
pub(crate) struct Handoff {
    sides: [Side; MAX_SIDES],
    n: usize,
}

impl Handoff {
    /// The hand-offs of a loop of `n` sides (at most [`MAX_SIDES`]).
    pub(crate) fn new(n: usize) -> Self {
        assert!(n <= MAX_SIDES, "Handoff: {n} sides");
        Handoff {
            sides: std::array::from_fn(|_| Side {
                state: AtomicU8::new(NOT_STARTED),
                request: AtomicUsize::new(IDLE),
                seqs_start: AtomicUsize::new(0),
                seqs_end: AtomicUsize::new(0),
                first_step: AtomicUsize::new(0),
            }),
            n,
        }
    }

    /// Runs side `side` of a split loop: its own sequences `seqs` through `steps(seqs, first,
    /// poll)` (`first` a step index in the loop's order), then the sequences other sides hand
    /// over, from the step they give them on.
    pub(crate) fn run_side(
        &self,
        side: usize,
        seqs: Range<usize>,
        steps: impl Fn(Range<usize>, usize, Poll<'_>),
    ) {
        self.start(side);
        steps(seqs, 0, Some((self, side)));
        self.finish(side);
        for other in (1..self.n).map(|d| (side + d) % self.n) {
            if let Some((given, first)) = self.ask(side, other) {
                steps(given, first, None);
            }
        }
    }

    /// Tests: waits until side `side` has started, or `timeout` has passed.
    #[cfg(test)]
    pub(crate) fn wait_started(&self, side: usize, timeout: std::time::Duration) {
        let t = std::time::Instant::now();
        while side < self.n
            && self.sides[side].state.load(Ordering::SeqCst) == NOT_STARTED
            && t.elapsed() < timeout
        {
            std::thread::yield_now();
        }
    }

    /// Side `side` starts its own work.
    fn start(&self, side: usize) {
        self.sides[side].state.store(RUNNING, Ordering::SeqCst);
    }

    /// Called by side `side` after finishing step index `done` (so steps `done + 1 .. steps` are
    /// left) with sequences `seqs`: when another side asks and at least two sequences and two
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
        let me = &self.sides[side];
        let asked = me.request.load(Ordering::Relaxed);
        if asked < ASKED {
            return seqs;
        }
        let left = steps - done - 1;
        if seqs.len() < 2 || left < 2 {
            // Too little to share: let the asker go.
            let _ =
                me.request
                    .compare_exchange(asked, DECLINED, Ordering::SeqCst, Ordering::SeqCst);
            return seqs;
        }
        let cut = seqs.start + seqs.len() / 2;
        #[cfg(test)]
        GRANTS.fetch_add(1, Ordering::Relaxed);
        me.seqs_start.store(cut, Ordering::Relaxed);
        me.seqs_end.store(seqs.end, Ordering::Relaxed);
        me.first_step.store(done + 1, Ordering::Relaxed);
        // Only the asker could change `request` now, and it does not while it waits for us.
        me.request.store(GRANTED, Ordering::SeqCst);
        seqs.start..cut
    }

    /// Side `side` has finished its own work: declines a request addressed to it (none comes
    /// after this, or it is withdrawn, see [`ask`](Self::ask)).
    fn finish(&self, side: usize) {
        let me = &self.sides[side];
        me.state.store(FINISHED, Ordering::SeqCst);
        let r = me.request.load(Ordering::SeqCst);
        if r >= ASKED {
            let _ = me
                .request
                .compare_exchange(r, DECLINED, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// Side `side` (finished with its own work) asks side `other`, if it is running and nobody
    /// asked it yet, for work, and waits for the answer. Returns the sequences given and the
    /// step index they start from, if any (the granting side's writes before the grant are
    /// visible: release/acquire on `request`).
    fn ask(&self, side: usize, other: usize) -> Option<(Range<usize>, usize)> {
        let me = ASKED + side;
        let o = &self.sides[other];
        if o.state.load(Ordering::SeqCst) != RUNNING
            || o.request
                .compare_exchange(IDLE, me, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return None;
        }
        // The other side may have finished between our check and our request: then it may not
        // have seen the request (it declines what it sees after marking itself finished), so
        // withdraw it. Otherwise it answers at its next step boundary or when it finishes.
        if o.state.load(Ordering::SeqCst) == FINISHED {
            let _ = o
                .request
                .compare_exchange(me, DECLINED, Ordering::SeqCst, Ordering::SeqCst);
        }
        let mut spins = 0u32;
        loop {
            match o.request.load(Ordering::SeqCst) {
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
            o.seqs_start.load(Ordering::Relaxed)..o.seqs_end.load(Ordering::Relaxed),
            o.first_step.load(Ordering::Relaxed),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `sides` threads, the last one slow: the others finish, ask, and take over parts of its
    /// sequences (each side is asked once); every (sequence, step) is done exactly once.
    fn run_sides(sides: usize, batch: usize) -> Vec<(usize, Range<usize>)> {
        let steps = 12usize;
        let h = Handoff::new(sides);
        let done: Vec<AtomicU8> = (0..steps * batch).map(|_| AtomicU8::new(0)).collect();
        let run = |side: usize, seqs: Range<usize>, from: usize, poll: bool| {
            let mut seqs = seqs;
            for s in from..steps {
                for b in seqs.clone() {
                    done[s * batch + b].fetch_add(1, Ordering::Relaxed);
                }
                if side == sides - 1 {
                    std::thread::sleep(Duration::from_millis(4));
                }
                if poll {
                    seqs = h.poll(side, seqs, s, steps);
                }
            }
        };
        // All sides start before any works (a side not yet started is never asked).
        let started = std::sync::Barrier::new(sides);
        let grants = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..sides)
                .map(|side| {
                    let (run, h, started) = (&run, &h, &started);
                    sc.spawn(move || {
                        h.start(side);
                        started.wait();
                        let own = side * batch / sides..(side + 1) * batch / sides;
                        run(side, own, 0, true);
                        h.finish(side);
                        let mut got = Vec::new();
                        for other in (1..sides).map(|d| (side + d) % sides) {
                            if let Some((seqs, first)) = h.ask(side, other) {
                                assert!(first >= 1 && first < steps - 1);
                                run(side, seqs.clone(), first, false);
                                got.push((side, seqs));
                            }
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|j| j.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(done.iter().all(|d| d.load(Ordering::Relaxed) == 1));
        grants
    }

    #[test]
    fn a_fast_side_takes_half_of_the_slow_sides_rest_once() {
        let grants = run_sides(2, 8);
        assert_eq!(grants, [(0, 6..8)]);
        // Four sides, the last slow: it is asked once, and gives the second half of its rest.
        // (Fast sides may also give each other work.)
        let grants = run_sides(4, 16);
        let from_slow: Vec<_> = grants.iter().filter(|g| g.1.start >= 12).collect();
        assert_eq!(from_slow.len(), 1, "{grants:?}");
        assert_eq!(from_slow[0].1, 14..16);
    }

    /// A side that has not started is never asked (its part not yet claimed by a thread), nor
    /// one that has finished.
    #[test]
    fn no_request_to_a_side_that_has_not_started_or_has_finished() {
        let h = Handoff::new(3);
        h.start(0);
        h.finish(0);
        assert!(h.ask(0, 1).is_none());
        h.start(1);
        h.finish(1);
        assert!(h.ask(0, 1).is_none() && h.ask(1, 0).is_none());
    }
}
