//! `packed_matmul` allocates nothing once the weight is packed, and neither do `matmul`'s small
//! products once their per-thread packing buffer has grown: a counting global allocator watches
//! a recurrent-style time loop and repeated small products. It counts the calling thread's
//! allocations only: the test harness's own threads (and the opt-in helper thread's one-time
//! start-up) allocate at moments of their own choosing, which made a process-wide count flaky.

use nalgebra::DMatrix;
use nn_core::kernels::packed::{PackedMatrix, packed_matmul, packed_matmul_threaded};
use nn_core::{Accum, Trans};
use nn_testutil::{CountingAlloc, allocations};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn time_loop_makes_no_allocation_after_packing() {
    for (h, batches) in [(24, &[1usize, 3, 8, 13][..]), (128, &[1, 32][..])] {
        time_loop(h, batches);
    }
}

/// An LSTM-like loop (`4·h x h` weight), forward with `packed_matmul` and backward with
/// `packed_matmul_threaded`; the last case is large enough to share work with the helper thread.
fn time_loop(h: usize, batches: &[usize]) {
    let (g, t_steps) = (4, 5);
    let w_hh = DMatrix::<f32>::from_fn(g * h, h, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.01);
    let mut gates = DMatrix::<f32>::zeros(g * h, 0);
    let mut hs = DMatrix::<f32>::zeros(h, 0);
    let mut fwd = PackedMatrix::new();
    let mut bwd = PackedMatrix::new();
    for &batch in batches {
        gates.resize_mut(g * h, t_steps * batch, 0.0);
        hs.resize_mut(h, (t_steps + 1) * batch, 0.5);
        fwd.pack(&w_hh, Trans::No);
        bwd.pack(&w_hh, Trans::Yes);
        // Warm-up: anything lazily set up on a first call (CPU detection, the helper thread).
        packed_matmul_threaded(
            &mut gates.columns_mut(0, batch),
            Accum::Add,
            &fwd,
            &hs.columns(0, batch),
        );

        let n = allocations(|| {
            for t in 0..t_steps {
                let cols = t * batch..(t + 1) * batch;
                packed_matmul(
                    &mut gates.columns_mut(cols.start, batch),
                    Accum::Add,
                    &fwd,
                    &hs.columns(cols.start, batch),
                );
            }
            for t in (0..t_steps).rev() {
                let (dh, dg) = (&mut hs, &gates);
                packed_matmul_threaded(
                    &mut dh.columns_mut((t + 1) * batch, batch),
                    Accum::Replace,
                    &bwd,
                    &dg.columns(t * batch, batch),
                );
            }
            // Re-packing the same shape reuses the buffer.
            fwd.pack(&w_hh, Trans::No);
        });
        assert_eq!(n, 0, "h {h} batch {batch}: {n} allocations");
    }
}

#[test]
fn warm_small_matmuls_allocate_nothing() {
    // Below PARALLEL_MIN_MACS, `matmul` packs `op(A)` into a per-thread buffer: once it has
    // grown to the largest packing (the warm-up round), further products allocate nothing, in
    // either precision.
    fn check<T: nn_core::Float>() {
        let a = DMatrix::<T>::from_element(40, 30, T::one());
        let b = DMatrix::<T>::from_element(30, 7, T::one());
        let mut c = DMatrix::<T>::zeros(40, 7);
        let mut ct = DMatrix::<T>::zeros(30, 30);
        let mut round = || {
            nn_core::matmul(&mut c, Accum::Add, &a, Trans::No, &b, Trans::No);
            nn_core::matmul(&mut ct, Accum::Replace, &a, Trans::Yes, &a, Trans::No);
        };
        round();
        let n = allocations(|| {
            for _ in 0..3 {
                round();
            }
        });
        assert_eq!(n, 0, "{}", T::NAME);
    }
    check::<f32>();
    check::<f64>();
}
