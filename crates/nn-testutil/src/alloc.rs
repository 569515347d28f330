//! A global allocator that forwards every call to the system allocator and counts the
//! allocations (`alloc`, `alloc_zeroed`, `realloc`; not `dealloc`) made on the calling thread
//! while [`allocations`] runs its closure.
//!
//! A test binary installs it as its `#[global_allocator]` (a
//! `static GLOBAL: CountingAlloc = CountingAlloc;`) and asks `allocations(|| work())`. Only the
//! calling thread counts: the test harness's own threads (and a thread pool's one-time
//! start-up) allocate at moments of their own choosing, which makes a process-wide count flaky.
//! Work handed to other threads is therefore not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: a thread being torn down has lost its thread-locals; it counts nothing.
    let _ = ON.try_with(|on| {
        if on.get() {
            COUNT.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; counting touches only
// const-initialized thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The number of allocations `f` makes on this thread. Counts only where [`CountingAlloc`] is
/// the binary's global allocator (elsewhere 0).
pub fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|n| n.set(0));
    ON.with(|on| on.set(true));
    f();
    ON.with(|on| on.set(false));
    COUNT.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    /// The counter counts: a count of 0 in the tests that use it means no allocation, not a
    /// counter that never ran.
    #[test]
    fn counts_the_allocations_of_the_closure() {
        let n = allocations(|| {
            let v = std::hint::black_box(vec![1u8; 64]);
            let w = std::hint::black_box(Box::new(v.len()));
            drop((v, w));
        });
        assert_eq!(n, 2);
        assert_eq!(allocations(|| {}), 0);
    }
}
