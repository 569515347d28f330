//! Tests of the [`pool`](super): every part runs once whatever the thread count, nested and
//! concurrent forks, panics, sleeping helpers, the thread setting.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tests that change the thread count run one at a time (it is process-wide).
static SETTING: Mutex<()> = Mutex::new(());

fn with_threads(n: usize, f: impl FnOnce()) {
    let _g = SETTING.lock().unwrap_or_else(|e| e.into_inner());
    let before = SET_THREADS.load(Ordering::Relaxed);
    set_threads(n).unwrap();
    f();
    SET_THREADS.store(before, Ordering::Relaxed);
}

#[test]
fn both_sides_run_and_return() {
    for i in 0..1000usize {
        let mut left = [0usize; 8];
        let mut right = [0usize; 8];
        let (x, y) = join(
            || {
                left.iter_mut().for_each(|v| *v = i);
                i * 2
            },
            || {
                right.iter_mut().for_each(|v| *v = i + 1);
                i * 3
            },
        );
        assert_eq!((x, y), (i * 2, i * 3));
        assert!(left.iter().all(|&v| v == i) && right.iter().all(|&v| v == i + 1));
    }
}

#[test]
fn every_part_runs_once_for_any_thread_count() {
    for threads in [1, 2, 3, 4, 8] {
        with_threads(threads, || {
            for parts in [0usize, 1, 2, 3, 5, 8, 17] {
                for _ in 0..50 {
                    let runs: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                    for_each_part(parts, |i| {
                        runs[i].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
                }
            }
        });
    }
}

#[test]
fn several_threads_take_part() {
    with_threads(4, || {
        // Parts that wait a little, so that helpers (awake or not) get some. Other tests use the
        // pool at the same time (a fork that finds it busy runs inline), and a loaded machine may
        // not run a helper for a while, so a few rounds are allowed.
        let caller = std::thread::current().id();
        let on_helper = (0..20).any(|_| {
            let others = AtomicUsize::new(0);
            for_each_part(4, |_| {
                std::thread::sleep(Duration::from_millis(2));
                if std::thread::current().id() != caller {
                    others.fetch_add(1, Ordering::Relaxed);
                }
            });
            others.into_inner() > 0
        });
        assert!(on_helper, "no helper ran a part");
    });
}

#[test]
fn nested_and_concurrent_forks_each_run_once() {
    let count = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..200 {
                    join(
                        || {
                            join(
                                || count.fetch_add(1, Ordering::Relaxed),
                                || count.fetch_add(1, Ordering::Relaxed),
                            )
                        },
                        || {
                            for_each_part(3, |_| {
                                count.fetch_add(1, Ordering::Relaxed);
                            })
                        },
                    );
                }
            });
        }
    });
    assert_eq!(count.load(Ordering::Relaxed), 3 * 200 * 5);
}

#[test]
fn a_panic_in_any_part_reaches_the_caller_and_the_pool_recovers() {
    let r = std::panic::catch_unwind(|| join(|| 1, || -> i32 { panic!("right side") }));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(|| join(|| -> i32 { panic!("left side") }, || 2));
    assert!(r.is_err());
    assert_eq!(join(|| 3, || 4), (3, 4));
    with_threads(3, || {
        for bad in 0..3 {
            let ran = AtomicUsize::new(0);
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                for_each_part(3, |i| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    assert_ne!(i, bad, "part {bad}");
                })
            }));
            assert!(r.is_err());
        }
        let ran = AtomicUsize::new(0);
        for_each_part(3, |_| {
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 3);
    });
}

#[test]
fn the_helpers_wake_after_sleeping() {
    with_threads(2, || {
        // After sleeping past the spin, a helper must wake and run part 1 itself: part 0 (the
        // caller's, claimed first) waits up to 200 ms for part 1 to start, so the caller does
        // not simply run it. Other tests use the pool at the same time, and a fork that finds it
        // busy runs inline, so a few attempts are allowed.
        let caller = std::thread::current().id();
        for_each_part(2, |_| ()); // starts a helper, if no test has yet
        let on_helper = (0..20).any(|_| {
            std::thread::sleep(SPIN * 3);
            let started = AtomicBool::new(false);
            let other = Mutex::new(None);
            for_each_part(2, |_| {
                if std::thread::current().id() == caller {
                    let t = Instant::now();
                    while !started.load(Ordering::Acquire)
                        && t.elapsed() < Duration::from_millis(200)
                    {
                        std::hint::spin_loop();
                    }
                } else {
                    started.store(true, Ordering::Release);
                    *other.lock().unwrap() = Some(std::thread::current().id());
                }
            });
            other.into_inner().unwrap().is_some()
        });
        assert!(on_helper, "no helper ran a part after sleeping");
    });
}

#[test]
fn the_thread_setting_is_checked_and_applies() {
    assert!(set_threads(0).is_err());
    assert!(set_threads(MAX_THREADS + 1).is_err());
    with_threads(3, || assert_eq!(threads(), 3));
    with_threads(1, || {
        assert!(!threads_allowed());
        let caller = std::thread::current().id();
        for_each_part(4, |_| assert_eq!(std::thread::current().id(), caller));
    });
}

#[test]
fn parts_cover_the_range_in_aligned_pieces() {
    for (len, parts, align) in [
        (0, 3, 16),
        (10, 1, 1),
        (100, 3, 16),
        (1000, 8, 64),
        (5, 8, 1),
    ] {
        let mut end = 0;
        for i in 0..parts {
            let r = part_range(len, parts, align, i);
            assert_eq!(r.start, end);
            assert!(r.start <= r.end);
            assert!(r.end == len || r.end.is_multiple_of(align));
            end = r.end;
        }
        assert_eq!(end, len);
    }
}
