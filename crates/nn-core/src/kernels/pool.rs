//! Two-way fork-join on one persistent helper thread: [`join`]`(a, b)` runs `a` on the calling
//! thread and `b` on the helper, and returns both results.
//!
//! # Why not a thread per call, or matrixmultiply's pool
//!
//! A training step forks about ten times (each large matrix product, each time loop) with short
//! gaps of serial work between. Spawning a thread per fork costs tens of microseconds, and a
//! helper that sleeps between forks must be woken through the kernel, which on a virtual
//! machine takes as long and sometimes far longer: with matrixmultiply's own pool (which sleeps,
//! and forks once per `kc` block) the calling thread spent a large share of its time yielding
//! while it waited for its helper (figures in PERF.md). Here the helper **spins** for [`SPIN`]
//! after each job before it sleeps, so forks during a training step reach it at once.
//!
//! # Contract
//!
//! - At most two threads: the caller and one helper, spawned on the first fork. If the helper is
//!   busy (a fork from inside a forked job, or from another user thread), or threads are off,
//!   `join` runs `a` then `b` on the calling thread. Callers must therefore give the same results
//!   either way; every user in this workspace splits work into parts that do not depend on which
//!   thread runs them, so results are bit-identical for any thread count.
//! - If the helper has not started `b` by the time `a` is done, the caller takes `b` back and
//!   runs it itself: a helper that is slow to wake costs at most the time of `b`.
//! - A panic in `a` or `b` is re-raised on the caller after both have finished.
//! - No allocation per call: the job lives on the caller's stack.
//!
//! Threads are off when `MATMUL_NUM_THREADS=1` (the name matrixmultiply uses for its thread
//! count, kept for compatibility) or on a one-core machine; read once per process.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the helper spins waiting for the next job before it sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const POSTED: u8 = 2;
const RUNNING: u8 = 3;
const DONE: u8 = 4;

/// A type-erased pointer to a [`StackJob`] on the posting caller's stack.
#[derive(Clone, Copy, Debug)]
struct JobRef {
    run: unsafe fn(*const ()),
    data: *const (),
}

/// A closure and, once run, its result (or panic).
struct StackJob<F, R> {
    f: UnsafeCell<Option<F>>,
    result: UnsafeCell<Option<std::thread::Result<R>>>,
}

impl<F: FnOnce() -> R, R> StackJob<F, R> {
    fn new(f: F) -> Self {
        StackJob {
            f: UnsafeCell::new(Some(f)),
            result: UnsafeCell::new(None),
        }
    }

    /// Runs the closure and stores its result.
    ///
    /// # Safety
    /// `data` points to a live `StackJob<F, R>` that no other thread accesses during the call.
    unsafe fn execute(data: *const ()) {
        // SAFETY: from the caller: live, and ours alone for the call.
        let job = unsafe { &*(data as *const Self) };
        // SAFETY: as above; the cells are touched by one thread at a time.
        let f = unsafe { (*job.f.get()).take() };
        if let Some(f) = f {
            let r = catch_unwind(AssertUnwindSafe(f));
            // SAFETY: as above.
            unsafe { *job.result.get() = Some(r) };
        }
    }

    /// Runs the job on this thread (one the helper never took).
    fn run_here(&self) {
        // SAFETY: `self` is live, and the helper does not hold the job (the caller took it
        // back), so no other thread accesses it.
        unsafe { Self::execute(self as *const Self as *const ()) };
    }

    fn job_ref(&self) -> JobRef {
        JobRef {
            run: Self::execute,
            data: self as *const Self as *const (),
        }
    }

    fn into_result(self) -> std::thread::Result<R> {
        self.result
            .into_inner()
            .expect("pool: a forked job finished without a result")
    }
}

/// The helper's mailbox: a state machine `FREE → CLAIMED → POSTED → RUNNING → DONE → FREE`
/// (or `POSTED → CLAIMED` when the caller takes the job back).
struct Pool {
    state: AtomicU8,
    job: UnsafeCell<JobRef>,
    sleeping: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller that moved `state` from FREE to CLAIMED, before it
// publishes POSTED (release), and read only by the helper after it moved POSTED to RUNNING
// (acquire); the other fields are atomics or sync primitives.
unsafe impl Sync for Pool {}

unsafe fn noop(_: *const ()) {}

/// Whether forks may use a second thread (see the [module docs](self)).
pub fn threads_allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| {
        let one = std::env::var("MATMUL_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            == Some(1);
        !one && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
    })
}

/// How many threads forks use: 2, or 1 when threads are off.
pub fn threads() -> usize {
    if threads_allowed() { 2 } else { 1 }
}

/// The pool, with its helper started, or `None` when threads are off or the helper could not
/// be spawned.
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        if !threads_allowed() {
            return None;
        }
        let p: &'static Pool = Box::leak(Box::new(Pool {
            state: AtomicU8::new(FREE),
            job: UnsafeCell::new(JobRef {
                run: noop,
                data: std::ptr::null(),
            }),
            sleeping: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("nn-core pool".into())
            .spawn(move || helper_loop(p))
            .ok()
            .map(|_| p)
    })
}

fn helper_loop(p: &'static Pool) {
    loop {
        wait_for_post(p);
        // SAFETY: we moved POSTED to RUNNING, so the caller has written `job` and waits for DONE
        // (it cannot take the job back any more); the job stays live until then.
        unsafe {
            let job = *p.job.get();
            (job.run)(job.data);
        }
        p.state.store(DONE, Ordering::Release);
    }
}

/// Spins (then sleeps) until a job is posted, and takes it (POSTED → RUNNING).
fn wait_for_post(p: &Pool) {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if p.state.load(Ordering::Relaxed) == POSTED
            && p.state
                .compare_exchange(POSTED, RUNNING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) && start.elapsed() > SPIN {
            let mut g = p.lock.lock().unwrap_or_else(|e| e.into_inner());
            p.sleeping.store(true, Ordering::SeqCst);
            while p.state.load(Ordering::SeqCst) != POSTED {
                g = p.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            p.sleeping.store(false, Ordering::SeqCst);
            drop(g);
        }
    }
}

/// Runs `a` on the calling thread and `b` on the helper thread (or both here, see the
/// [module docs](self)), and returns both results.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> RB + Send,
    RB: Send,
{
    let Some(p) = pool() else {
        return (a(), b());
    };
    if p.state
        .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return (a(), b());
    }
    let job = StackJob::new(b);
    // SAFETY: we hold CLAIMED, so the helper does not read `job` now (see `Pool`).
    unsafe { *p.job.get() = job.job_ref() };
    p.state.store(POSTED, Ordering::SeqCst);
    if p.sleeping.load(Ordering::SeqCst) {
        let _g = p.lock.lock().unwrap_or_else(|e| e.into_inner());
        p.wake.notify_one();
    }
    let ra = catch_unwind(AssertUnwindSafe(a));
    if p.state
        .compare_exchange(POSTED, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        // The helper never took `b`: run it here.
        job.run_here();
    } else {
        let mut spins = 0u32;
        while p.state.load(Ordering::Acquire) != DONE {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins > 1 << 16 {
                std::thread::yield_now();
            }
        }
    }
    p.state.store(FREE, Ordering::Release);
    match (ra, job.into_result()) {
        (Ok(ra), Ok(rb)) => (ra, rb),
        (Err(e), _) | (_, Err(e)) => resume_unwind(e),
    }
}

#[cfg(test)]
mod tests {
    use super::join;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
                            || count.fetch_add(1, Ordering::Relaxed),
                        );
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 3 * 200 * 3);
    }

    #[test]
    fn a_panic_on_either_side_reaches_the_caller_and_the_pool_recovers() {
        let r = std::panic::catch_unwind(|| join(|| 1, || -> i32 { panic!("right side") }));
        assert!(r.is_err());
        let r = std::panic::catch_unwind(|| join(|| -> i32 { panic!("left side") }, || 2));
        assert!(r.is_err());
        assert_eq!(join(|| 3, || 4), (3, 4));
    }

    #[test]
    fn the_helper_wakes_after_sleeping() {
        if !super::threads_allowed() {
            return;
        }
        // After sleeping past the spin, the helper must wake and run `b` itself: `a` waits (up
        // to 200 ms) for `b` to start, so `b` is not simply taken back by the caller. Other
        // tests use the pool at the same time, and a fork that finds it busy runs inline, so a
        // few attempts are allowed; a helper that never wakes fails every one.
        let caller = std::thread::current().id();
        join(|| (), || ()); // starts the helper, if no test has yet
        let on_helper = (0..20).any(|_| {
            std::thread::sleep(super::SPIN * 3);
            let started = std::sync::atomic::AtomicBool::new(false);
            let (_, b_thread) = join(
                || {
                    let t = std::time::Instant::now();
                    while !started.load(Ordering::Acquire)
                        && t.elapsed() < std::time::Duration::from_millis(200)
                    {
                        std::hint::spin_loop();
                    }
                },
                || {
                    started.store(true, Ordering::Release);
                    std::thread::current().id()
                },
            );
            b_thread != caller
        });
        assert!(on_helper, "the helper never ran a job after sleeping");
    }
}
