//! Fork-join on persistent helper threads: [`for_each_part`]`(parts, f)` runs `f(0) .. f(parts-1)`
//! on the calling thread and up to [`threads`]` - 1` helpers, and [`join`]`(a, b)` runs `a` on the
//! calling thread and `b` on a helper.
//!
//! # The thread count
//!
//! [`threads`] is, in this order of precedence: what [`set_threads`] last set (also re-exported as
//! `nn_core::set_threads`; callable at any time, it applies to forks that start afterwards), the
//! environment variable `NN_NUM_THREADS` (a positive integer), `MATMUL_NUM_THREADS=1` (the name
//! matrixmultiply uses for its thread count, kept for compatibility: one thread), else
//! [`std::thread::available_parallelism`]. The environment is read once per process.
//!
//! # Why not a thread per call, or matrixmultiply's pool
//!
//! A training step forks about ten times (each large matrix product, each time loop) with short
//! gaps of serial work between. Spawning a thread per fork costs tens of microseconds, and a
//! helper that sleeps between forks must be woken through the kernel, which on a virtual
//! machine takes as long and sometimes far longer: with matrixmultiply's own pool (which sleeps,
//! and forks once per `kc` block) the calling thread spent a large share of its time yielding
//! while it waited for its helper (figures in PERF.md). Here the helpers **spin** for [`SPIN`]
//! after each job before they sleep, so forks during a training step reach them at once. After a
//! short run of pause instructions the spin yields the core between checks: on an idle machine a
//! yield returns at once, while on a loaded one a helper that only waits gives way to the threads
//! that work (with a pure spin the time loops ran about a fifth slower there). When
//! there are more threads than cores, helpers do not spin (they would take the cores from the
//! threads doing the work): they sleep at once.
//!
//! # Contract
//!
//! - Part `i` of `parts` is one call `f(i)`, whichever thread runs it: callers make each part
//!   cover the same data whatever the thread count or the thread running it, so results are
//!   bit-identical for any thread count. Parts are claimed from a shared counter, the caller
//!   included: a helper that is slow to wake simply runs fewer parts (or none), and the caller
//!   takes back every part not started.
//! - One fork at a time uses the helpers. A fork from inside a forked part (nested), or from
//!   another user thread while the helpers are busy, or with one thread, runs its parts in order
//!   on the calling thread.
//! - A panic in a part is re-raised on the caller after every part has finished (or, inline, at
//!   once).
//! - No allocation per fork: the closure lives on the caller's stack, and the job's state in the
//!   pool. Helpers are spawned on the first fork that wants them.

use crate::{Error, Result};
use std::any::Any;
use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a helper spins waiting for the next job before it sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

/// Pause instructions a waiting helper spins through before it yields its core between checks.
const SPIN_PAUSES: u32 = 1 << 10;

/// The largest thread count [`set_threads`] accepts.
pub const MAX_THREADS: usize = 256;

/// The thread count set by [`set_threads`], 0 when never set.
static SET_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets the number of threads forks use from now on (the calling thread included): 1 runs
/// everything on the calling thread. It overrides `NN_NUM_THREADS` and the default (the machine's
/// available parallelism). Results do not depend on it, bit for bit; more threads than cores work,
/// only slower. Helpers already started stay (asleep) when the count is lowered.
///
/// # Errors
/// [`Error::InvalidConfig`] for 0 or more than [`MAX_THREADS`].
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 || n > MAX_THREADS {
        return Err(Error::InvalidConfig(format!(
            "threads: {n} (must be 1 to {MAX_THREADS})"
        )));
    }
    SET_THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// The thread count from the environment or the machine (see the [module docs](self)).
fn default_threads() -> usize {
    static DEFAULT: OnceLock<usize> = OnceLock::new();
    *DEFAULT.get_or_init(|| {
        let var = |name| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
        };
        if let Some(n) = var("NN_NUM_THREADS") {
            n.min(MAX_THREADS)
        } else if var("MATMUL_NUM_THREADS") == Some(1) {
            1
        } else {
            cores()
        }
    })
}

/// The machine's available parallelism (1 when unknown).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many threads forks use, the calling thread included (see the [module docs](self)).
pub fn threads() -> usize {
    match SET_THREADS.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// Whether forks may use more than one thread.
pub fn threads_allowed() -> bool {
    threads() > 1
}

/// Part `i` of `len` items cut into `parts` parts whose bounds are multiples of `align` (but the
/// last): `⌊i·u/parts⌋·align` with `u = ⌈len/align⌉` units, clamped to `len`. The parts cover
/// `0..len` in order, without overlap; a part may be empty when `parts > u`.
pub fn part_range(len: usize, parts: usize, align: usize, i: usize) -> Range<usize> {
    let align = align.max(1);
    let parts = parts.max(1);
    let units = len.div_ceil(align);
    let bound = |i: usize| (units * i / parts * align).min(len);
    bound(i)..bound(i + 1)
}

/// A type-erased `&F` where `F: Fn(usize) + Sync`, on the forking caller's stack.
#[derive(Clone, Copy, Debug)]
struct JobRef {
    run: unsafe fn(*const (), usize),
    data: *const (),
}

/// Calls the `F` behind `data` on part `i`.
///
/// # Safety
/// `data` points to a live `F`.
unsafe fn call<F: Fn(usize) + Sync>(data: *const (), i: usize) {
    // SAFETY: from the caller.
    unsafe { (*(data as *const F))(i) }
}

unsafe fn noop(_: *const (), _: usize) {}

/// The pool: one job slot shared by all helpers.
///
/// A job is open while `generation` is odd. The forking caller (holding `busy`) writes `job`,
/// `parts`, `next` and `wanted`, then makes `generation` odd; helpers enter by incrementing
/// `active` and checking that `generation` has not moved, claim parts from `next`, and leave by
/// decrementing `active`. The caller closes the job (`generation` even) once every part is
/// claimed, then waits for `active` to reach 0 before its closure goes out of scope: a helper
/// that enters after the close sees the new generation and leaves without touching the job.
struct Pool {
    busy: AtomicBool,
    generation: AtomicUsize,
    job: UnsafeCell<JobRef>,
    parts: AtomicUsize,
    next: AtomicUsize,
    /// How many helpers (by index) may take part in the open job.
    wanted: AtomicUsize,
    active: AtomicUsize,
    panicked: AtomicBool,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Whether helper `i` sleeps (or is about to), so that a fork wakes only when a helper it
    /// wants sleeps.
    sleeping: [AtomicBool; MAX_THREADS],
    lock: Mutex<()>,
    wake: Condvar,
    /// Helpers spawned so far (they never exit); the mutex serializes spawning.
    spawned: AtomicUsize,
    spawning: Mutex<()>,
}

// SAFETY: `job` is written only by the caller holding `busy`, while no job is open and no helper
// is inside one (`active == 0`), before it publishes the job through `generation` (SeqCst); it is
// read only by helpers that entered that job (see `Pool`). The other fields are atomics or sync
// primitives.
unsafe impl Sync for Pool {}
// SAFETY: as for `Sync`: the raw pointer in `job` is only a published address.
unsafe impl Send for Pool {}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        busy: AtomicBool::new(false),
        generation: AtomicUsize::new(0),
        job: UnsafeCell::new(JobRef {
            run: noop,
            data: std::ptr::null(),
        }),
        parts: AtomicUsize::new(0),
        next: AtomicUsize::new(0),
        wanted: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        panic: Mutex::new(None),
        sleeping: std::array::from_fn(|_| AtomicBool::new(false)),
        lock: Mutex::new(()),
        wake: Condvar::new(),
        spawned: AtomicUsize::new(0),
        spawning: Mutex::new(()),
    })
}

/// Spawns helpers until `n` exist (or spawning fails); returns how many exist.
fn ensure_helpers(p: &'static Pool, n: usize) -> usize {
    let have = p.spawned.load(Ordering::Acquire);
    if have >= n {
        return have;
    }
    let _g = p.spawning.lock().unwrap_or_else(|e| e.into_inner());
    let mut have = p.spawned.load(Ordering::Acquire);
    while have < n {
        let index = have;
        let spawned = std::thread::Builder::new()
            .name(format!("nn-core pool {}", index + 1))
            .spawn(move || helper_loop(p, index));
        if spawned.is_err() {
            break;
        }
        have += 1;
        p.spawned.store(have, Ordering::Release);
    }
    have
}

fn helper_loop(p: &'static Pool, index: usize) {
    let mut seen = 0usize;
    loop {
        let g = wait_for_job(p, index, seen);
        seen = g;
        p.active.fetch_add(1, Ordering::SeqCst);
        if p.generation.load(Ordering::SeqCst) == g && index < p.wanted.load(Ordering::Relaxed) {
            // SAFETY: we entered job `g` while it was open, so the caller waits for us to leave
            // before its closure goes away, and `job` is not rewritten until then (see `Pool`).
            let job = unsafe { *p.job.get() };
            work(p, job);
        }
        p.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Claims and runs parts of the open job until none is left; a panic is kept for the caller.
fn work(p: &Pool, job: JobRef) {
    let parts = p.parts.load(Ordering::Relaxed);
    loop {
        let i = p.next.fetch_add(1, Ordering::Relaxed);
        if i >= parts {
            return;
        }
        // SAFETY: the job is live while we are inside it (see `Pool`), and part `i` was
        // claimed by us alone.
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { (job.run)(job.data, i) }));
        if let Err(e) = r {
            let mut slot = p.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(e);
            p.panicked.store(true, Ordering::Release);
        }
    }
}

/// Helper `index` spins (unless there are more threads than cores, or the thread count leaves it
/// out), then sleeps, until a job newer than `seen` is open; returns its generation.
fn wait_for_job(p: &Pool, index: usize, seen: usize) -> usize {
    let fresh = |g: usize| g % 2 == 1 && g != seen;
    let start = Instant::now();
    let threads = threads();
    let spin = index + 1 < threads && threads <= cores();
    let mut spins = 0u32;
    loop {
        let g = p.generation.load(Ordering::Acquire);
        if fresh(g) {
            return g;
        }
        spins = spins.wrapping_add(1);
        if spins < SPIN_PAUSES {
            std::hint::spin_loop();
        } else {
            // Past a short spin, give the core to any other runnable thread while waiting: on
            // an idle machine this returns at once, on a loaded one it keeps a waiting helper
            // from taking time from the threads doing the work.
            std::thread::yield_now();
        }
        if !spin || (spins.is_multiple_of(64) && start.elapsed() > SPIN) {
            let mut guard = p.lock.lock().unwrap_or_else(|e| e.into_inner());
            p.sleeping[index].store(true, Ordering::SeqCst);
            let mut g = p.generation.load(Ordering::SeqCst);
            while !fresh(g) {
                guard = p.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                g = p.generation.load(Ordering::SeqCst);
            }
            p.sleeping[index].store(false, Ordering::SeqCst);
            return g;
        }
    }
}

/// Runs `first` on the calling thread, then claims parts of `f` (`parts` of them) along with up
/// to `helpers` helper threads until every part has run. `Err(first)` (nothing run) when the
/// helpers are busy (or none could be spawned): the caller then runs everything itself.
fn fork<F: Fn(usize) + Sync, G: FnOnce()>(
    parts: usize,
    helpers: usize,
    f: &F,
    first: G,
) -> std::result::Result<(), G> {
    let p = pool();
    let helpers = helpers.min(ensure_helpers(p, helpers));
    if helpers == 0
        || p.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return Err(first);
    }
    // SAFETY: we hold `busy`, no job is open and no helper is inside one (the previous caller
    // waited for `active == 0`), so no helper reads `job` now (see `Pool`).
    unsafe {
        *p.job.get() = JobRef {
            run: call::<F>,
            data: f as *const F as *const (),
        }
    };
    p.parts.store(parts, Ordering::Relaxed);
    p.next.store(0, Ordering::Relaxed);
    p.wanted.store(helpers, Ordering::Relaxed);
    let g = p.generation.load(Ordering::Relaxed) + 1;
    p.generation.store(g, Ordering::SeqCst);
    if p.sleeping[..helpers]
        .iter()
        .any(|s| s.load(Ordering::SeqCst))
    {
        let _g = p.lock.lock().unwrap_or_else(|e| e.into_inner());
        p.wake.notify_all();
    }
    let first = catch_unwind(AssertUnwindSafe(first));
    let mut caller_panic = first.err();
    loop {
        let i = p.next.fetch_add(1, Ordering::Relaxed);
        if i >= parts {
            break;
        }
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(i))) {
            caller_panic.get_or_insert(e);
        }
    }
    // Every part is claimed: close the job and wait for the helpers inside it to finish theirs.
    p.generation.store(g + 1, Ordering::SeqCst);
    let mut spins = 0u32;
    while p.active.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins > 1 << 12 {
            std::thread::yield_now();
        }
    }
    let helper_panic = if p.panicked.swap(false, Ordering::Acquire) {
        p.panic.lock().unwrap_or_else(|e| e.into_inner()).take()
    } else {
        None
    };
    p.busy.store(false, Ordering::Release);
    if let Some(e) = caller_panic.or(helper_panic) {
        resume_unwind(e);
    }
    Ok(())
}

/// Runs `f(i)` for every part `i < parts`, on the calling thread and up to `threads() - 1`
/// helpers (at most one thread per part), and returns when all have run. Each part must do the
/// same work whichever thread runs it, and `f` must not assume an order between parts (inline,
/// they run in order `0, 1, ...`). See the [module docs](self).
pub fn for_each_part<F: Fn(usize) + Sync>(parts: usize, f: F) {
    let helpers = threads().min(parts).saturating_sub(1);
    if helpers == 0 || fork(parts, helpers, &f, || ()).is_err() {
        (0..parts).for_each(&f);
    }
}

/// Runs `a` on the calling thread and `b` on a helper thread (or both here, see the
/// [module docs](self)), and returns both results.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> RB + Send,
    RB: Send,
{
    if !threads_allowed() {
        return (a(), b());
    }
    /// `b` and, once run, its result; taken by whichever thread claims the one part.
    struct Slot<B, RB>(Mutex<(Option<B>, Option<RB>)>);
    let slot = Slot(Mutex::new((Some(b), None)));
    let run_b = |_: usize| {
        let b = slot.0.lock().unwrap_or_else(|e| e.into_inner()).0.take();
        if let Some(b) = b {
            let rb = b();
            slot.0.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(rb);
        }
    };
    let mut ra = None;
    if let Err(first) = fork(1, 1, &run_b, || ra = Some(a())) {
        first();
        run_b(0);
    }
    let (_, rb) = slot.0.into_inner().unwrap_or_else(|e| e.into_inner());
    match (ra, rb) {
        (Some(ra), Some(rb)) => (ra, rb),
        _ => unreachable!("pool::join: a side returned without a result"),
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
