//! Heap allocations of a warm `Recurrent::infer` (same sizes as the call before), counted by
//! `nn_testutil::CountingAlloc`: none, except matrixmultiply's packing buffer in each window of a
//! large input product `W_ih · X` (as in the training forward's whole-sequence product), whose
//! count does not depend on anything but the shapes.

use nalgebra::DMatrix;
use nn_core::{Accum, Rng, Trans, matmul};
use nn_recurrent::{CellKind, InferScratch, Nonlinearity, RecurrentConfig};
use nn_testutil::{CountingAlloc, allocations};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// One test at a time, on one thread: a product split between two threads allocates on each,
/// and runs both halves on the calling thread when the pool's helper is busy, so the count would
/// depend on timing.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_thread() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: set before the first product of the process (it is read once), while no other
    // test of this file runs (the lock).
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", "1") };
    guard
}

fn warm_count(config: &RecurrentConfig, steps: usize, batch: usize) -> usize {
    let layer = config.init::<f32>(&mut Rng::seed_from(1)).unwrap();
    let x = DMatrix::from_fn(config.input_size, steps * batch, |i, j| {
        ((i * 3 + j * 5) as f32 * 0.1).sin()
    });
    let init = layer.zero_state(batch);
    let mut scratch = InferScratch::new();
    layer.infer(&x, batch, Some(&init), &mut scratch).unwrap();
    allocations(|| {
        layer.infer(&x, batch, Some(&init), &mut scratch).unwrap();
    })
}

#[test]
fn a_warm_infer_allocates_nothing() {
    let _one = one_thread();
    for cell in [
        CellKind::Rnn(Nonlinearity::Tanh),
        CellKind::Lstm,
        CellKind::Gru,
    ] {
        let config = RecurrentConfig::new(cell, 3, 8)
            .with_num_layers(2)
            .with_bidirectional(true);
        // Batch 1 and 3: the input product before the loop (small: the packed kernel);
        // batch 24: inside the steps.
        for (steps, batch) in [(7, 1), (5, 3), (4, 24)] {
            assert_eq!(warm_count(&config, steps, batch), 0, "{cell:?} B={batch}");
        }
    }
}

#[test]
fn a_warm_infer_allocates_only_matrixmultiplys_buffer_per_window() {
    let _one = one_thread();
    // One matrixmultiply product's allocations (shape above its threshold).
    let w = DMatrix::<f32>::from_element(256, 300, 0.01);
    let x = DMatrix::<f32>::from_element(300, 64, 0.5);
    let mut out = DMatrix::<f32>::zeros(256, 64);
    matmul(&mut out, Accum::Replace, &w, Trans::No, &x, Trans::No);
    let per = allocations(|| matmul(&mut out, Accum::Replace, &w, Trans::No, &x, Trans::No));
    // LSTM I=300 B=16: windows of 256 steps (4096 columns), so T=600 has two.
    let config = RecurrentConfig::new(CellKind::Lstm, 300, 16);
    assert_eq!(warm_count(&config, 600, 16), 2 * per, "{per} per product");
}
