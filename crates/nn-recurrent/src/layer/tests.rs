//! Unit tests of the layer's time loops: split and handed-over loops give the serial bits.

use super::handoff::GRANTS;
use super::split::{SLOW_SIDE, force_split};
use crate::{CellKind, Lengths, RecurrentCache, RecurrentConfig, RecurrentState};
use nalgebra::DMatrix;
use nn_core::kernels::pool;
use nn_core::{Float, Module, Rng};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// The split-loop tests run one at a time: `SLOW_SIDE` and `GRANTS` are process-wide, so a
/// hand-off counted by one test is its own, and neither test takes the pool's helper from
/// the other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn fill<T: Float>(rows: usize, cols: usize, seed: usize) -> DMatrix<T> {
    DMatrix::from_fn(rows, cols, |i, j| {
        T::cast(((i * 7 + j * 13 + seed * 31) as f64 * 0.37).sin() * 0.9)
    })
}

/// Every result of one forward and backward, as bits.
fn run<T: Float>(config: &RecurrentConfig, steps: usize, batch: usize, split: bool) -> Vec<u64> {
    run_lengths::<T>(config, steps, Lengths::Full(batch), split)
}

/// [`run`] on a batch of these lengths.
fn run_lengths<T: Float>(
    config: &RecurrentConfig,
    steps: usize,
    lengths: Lengths<'_>,
    split: bool,
) -> Vec<u64> {
    let batch = lengths.batch();
    force_split(Some(split));
    let mut layer = config.init::<T>(&mut Rng::seed_from(3)).unwrap();
    let (i, h) = (config.input_size, config.hidden_size);
    let slots = config.num_layers * config.num_directions();
    let with_c = config.cell.has_cell_state();
    let state = |seed| RecurrentState {
        h: fill::<T>(h, slots * batch, seed),
        c: with_c.then(|| fill::<T>(h, slots * batch, seed + 1)),
    };
    let x = fill::<T>(i, steps * batch, 0);
    let mut cache = RecurrentCache::new();
    layer
        .forward_with(&x, lengths, Some(&state(1)), &mut cache, None)
        .unwrap();
    let d_out = fill::<T>(layer.output_size(), steps * batch, 5);
    let mut d_x = DMatrix::zeros(i, steps * batch);
    layer.zero_grad();
    layer
        .backward(&x, &mut cache, &d_out, Some(&state(7)), Some(&mut d_x))
        .unwrap();
    force_split(None);
    let mut all: Vec<&DMatrix<T>> = vec![cache.output(), &cache.final_state().h, &d_x];
    all.extend(&cache.final_state().c);
    all.push(&cache.d_initial().h);
    all.extend(&cache.d_initial().c);
    for w in layer.directions() {
        all.extend([
            &w.weight_ih.grad,
            &w.weight_hh.grad,
            &w.bias_ih.grad,
            &w.bias_hh.grad,
        ]);
    }
    all.iter()
        .flat_map(|m| m.iter().map(|v| v.as_f64().to_bits()))
        .collect()
}

#[test]
fn split_time_loops_give_the_serial_results_bit_for_bit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for cell in CellKind::ALL {
        for (layers, bidi) in [(1, false), (2, true)] {
            // B = 24: the steps compute `W_ih x_t` ([`input_in_loop`]).
            for (steps, batch) in [(5, 5), (1, 2), (3, 8), (3, 24)] {
                let config = RecurrentConfig::new(cell, 3, 6)
                    .with_num_layers(layers)
                    .with_bidirectional(bidi);
                let what = format!("{cell:?} L={layers} bidi={bidi} T={steps} B={batch}");
                let serial = run::<f64>(&config, steps, batch, false);
                assert_eq!(
                    serial,
                    run::<f64>(&config, steps, batch, true),
                    "f64 {what}"
                );
                let serial = run::<f32>(&config, steps, batch, false);
                assert_eq!(
                    serial,
                    run::<f32>(&config, steps, batch, true),
                    "f32 {what}"
                );
            }
        }
    }
}

/// Variable-length batches: split loops, where a part's sequences finish at different steps
/// (and a part may have none left running), give the serial bits; so do hand-offs.
#[test]
fn split_time_loops_on_variable_lengths_give_the_serial_bits() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let steps = 6;
    // B = 24: the steps compute `W_ih x_t` ([`input_in_loop`]).
    let long: Vec<usize> = (0..24).map(|b| 1 + (b * 7) % steps).collect();
    for cell in CellKind::ALL {
        let config = RecurrentConfig::new(cell, 3, 6)
            .with_num_layers(2)
            .with_bidirectional(true);
        for lengths in [&[2, 6, 1, 3, 6, 5, 1, 4][..], &long] {
            let l = Lengths::Each(lengths);
            let serial = run_lengths::<f64>(&config, steps, l, false);
            assert_eq!(
                serial,
                run_lengths::<f64>(&config, steps, l, true),
                "{cell:?}"
            );
            SLOW_SIDE.store(1, Ordering::Relaxed);
            let handed = run_lengths::<f64>(&config, steps, l, true);
            SLOW_SIDE.store(0, Ordering::Relaxed);
            assert_eq!(serial, handed, "{cell:?} with side 0 slow");
        }
    }
}

/// Split loops cut into 2 to 8 parts (as many as threads, at most `B`) give the serial bits.
#[test]
fn split_time_loops_in_any_number_of_parts_give_the_serial_bits() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = pool::threads();
    for cell in CellKind::ALL {
        let config = RecurrentConfig::new(cell, 3, 6)
            .with_num_layers(2)
            .with_bidirectional(true);
        let (steps, batch) = (4, 24);
        let serial = run::<f64>(&config, steps, batch, false);
        for threads in [3, 4, 8] {
            nn_core::set_threads(threads).unwrap();
            let split = run::<f64>(&config, steps, batch, true);
            nn_core::set_threads(before).unwrap();
            assert_eq!(serial, split, "{cell:?}, {threads} threads");
        }
    }
}

/// With one side of every split loop slowed, the other finishes first and takes over half
/// of its remaining sequences ([`super::handoff`]); the results keep the serial bits.
#[test]
fn handed_over_sequences_give_the_serial_results_bit_for_bit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for slow in [2, 1] {
        // B = 24: the steps compute `W_ih x_t` ([`input_in_loop`]).
        for (cell, batch) in CellKind::ALL.into_iter().flat_map(|c| [(c, 8), (c, 24)]) {
            let config = RecurrentConfig::new(cell, 3, 6)
                .with_num_layers(2)
                .with_bidirectional(true);
            let steps = 6;
            let serial = run::<f64>(&config, steps, batch, false);
            // The pool runs both sides on one thread when its helper is busy (tests of other
            // modules): then nothing is handed over, so try a few times.
            let mut handed = false;
            for _ in 0..20 {
                let before = GRANTS.load(Ordering::Relaxed);
                SLOW_SIDE.store(slow, Ordering::Relaxed);
                let split = run::<f64>(&config, steps, batch, true);
                SLOW_SIDE.store(0, Ordering::Relaxed);
                assert_eq!(serial, split, "{cell:?} B={batch}, side {} slow", slow - 1);
                if GRANTS.load(Ordering::Relaxed) > before {
                    handed = true;
                    break;
                }
            }
            // With threads off (`MATMUL_NUM_THREADS=1`, one core) both sides run on this
            // thread, one after the other, and nothing can be handed over.
            assert!(
                handed || !pool::threads_allowed(),
                "{cell:?} B={batch}: no hand-off in 20 tries"
            );
        }
    }
}
