//! `Recurrent::infer`, the forward-only pass: the output and final state of the training
//! forward, bit for bit, for every cell, stacked and bidirectional, batch 1 and larger, with and
//! without an initial state, on every path of the forward (input product before the loop, in one
//! window or several, or inside the steps; serial or split time loops); typed errors on bad input.

use nalgebra::DMatrix;
use nn_core::{Error, Float, Rng};
use nn_recurrent::{
    CellKind, InferScratch, Nonlinearity, RecurrentCache, RecurrentConfig, RecurrentState,
};

const CELLS: [CellKind; 4] = [
    CellKind::Rnn(Nonlinearity::Tanh),
    CellKind::Rnn(Nonlinearity::Relu),
    CellKind::Lstm,
    CellKind::Gru,
];

fn fill<T: Float>(rows: usize, cols: usize, seed: usize) -> DMatrix<T> {
    DMatrix::from_fn(rows, cols, |i, j| {
        T::cast(((i * 7 + j * 13 + seed * 31) as f64 * 0.37).sin() * 0.9)
    })
}

fn bits<T: Float>(m: &DMatrix<T>) -> Vec<u64> {
    m.iter().map(|v| v.as_f64().to_bits()).collect()
}

/// Runs forward and infer (twice, the second on a warm scratch) and compares every bit.
fn same_bits<T: Float>(config: &RecurrentConfig, steps: usize, batch: usize, with_initial: bool) {
    let layer = config.init::<T>(&mut Rng::seed_from(5)).unwrap();
    let slots = config.num_layers * config.num_directions();
    let h = config.hidden_size;
    let initial = with_initial.then(|| RecurrentState {
        h: fill::<T>(h, slots * batch, 1),
        c: config
            .cell
            .has_cell_state()
            .then(|| fill::<T>(h, slots * batch, 2)),
    });
    let x = fill::<T>(config.input_size, steps * batch, 0);
    let mut cache = RecurrentCache::new();
    layer
        .forward(&x, batch, initial.as_ref(), &mut cache)
        .unwrap();
    let mut scratch = InferScratch::new();
    for round in 0..2 {
        let (out, fin) = layer
            .infer(&x, batch, initial.as_ref(), &mut scratch)
            .unwrap();
        let what = format!("{config:?} T={steps} B={batch} initial={with_initial} round {round}");
        assert_eq!(bits(out), bits(cache.output()), "output: {what}");
        assert_eq!(bits(&fin.h), bits(&cache.final_state().h), "h_n: {what}");
        match (&fin.c, &cache.final_state().c) {
            (Some(a), Some(b)) => assert_eq!(bits(a), bits(b), "c_n: {what}"),
            (None, None) => {}
            _ => panic!("c_n present in one only: {what}"),
        }
        assert_eq!(bits(scratch.output()), bits(cache.output()));
    }
}

#[test]
fn infer_gives_the_forwards_bits_on_small_layers() {
    for cell in CELLS {
        for (layers, bidi) in [(1, false), (2, true), (3, false)] {
            let config = RecurrentConfig::new(cell, 7, 12)
                .with_num_layers(layers)
                .with_bidirectional(bidi);
            // Batch 30: the steps compute the input part (`input_in_loop`).
            for batch in [1, 5, 30] {
                for with_initial in [false, true] {
                    same_bits::<f32>(&config, 9, batch, with_initial);
                }
            }
            same_bits::<f64>(&config, 4, 3, true);
        }
    }
}

#[test]
fn infer_gives_the_forwards_bits_with_windows_of_the_input_product() {
    // `W_ih · X` is large (above matrixmultiply's threshold) with `I > 256`, so the forward-only
    // pass computes it in windows of 4096 columns: here two windows of 300 steps of batch 16.
    for cell in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Rnn(Nonlinearity::Tanh),
    ] {
        let config = RecurrentConfig::new(cell, 300, 16)
            .with_num_layers(2)
            .with_bidirectional(true);
        same_bits::<f32>(&config, 600, 16, true);
    }
    // `H = 64` with batch 16: the time loops split between two threads, window by window.
    same_bits::<f32>(
        &RecurrentConfig::new(CellKind::Lstm, 300, 64),
        600,
        16,
        false,
    );
    // Batch 1 over a long sequence: three windows, serial loops.
    same_bits::<f32>(
        &RecurrentConfig::new(CellKind::Gru, 300, 16),
        12300,
        1,
        true,
    );
}

#[test]
fn infer_takes_a_view_and_lstm_c_none_means_zeros() {
    let config = RecurrentConfig::new(CellKind::Lstm, 4, 6).with_num_layers(2);
    let layer = config.init::<f32>(&mut Rng::seed_from(1)).unwrap();
    let (steps, batch) = (5, 3);
    let x = fill::<f32>(4, 2 * steps * batch, 3);
    let part = x.columns(steps * batch, steps * batch);
    let owned = part.clone_owned();
    let h0 = fill::<f32>(6, 2 * batch, 4);
    let only_h = RecurrentState {
        h: h0.clone(),
        c: None,
    };
    let with_zero_c = RecurrentState {
        h: h0,
        c: Some(DMatrix::zeros(6, 2 * batch)),
    };
    let mut a = InferScratch::new();
    let mut b = InferScratch::new();
    let (out_a, _) = layer.infer(part, batch, Some(&only_h), &mut a).unwrap();
    let (out_b, _) = layer
        .infer(&owned, batch, Some(&with_zero_c), &mut b)
        .unwrap();
    assert_eq!(bits(out_a), bits(out_b));
}

#[test]
fn bad_input_is_a_typed_error() {
    let config = RecurrentConfig::new(CellKind::Gru, 3, 4).with_num_layers(2);
    let layer = config.init::<f32>(&mut Rng::seed_from(1)).unwrap();
    let mut scratch = InferScratch::new();
    let x = fill::<f32>(3, 6, 0);
    let err = |r: nn_core::Result<()>| r.expect_err("an error");
    assert!(matches!(
        err(layer
            .infer(&fill::<f32>(2, 6, 0), 2, None, &mut scratch)
            .map(|_| ())),
        Error::ShapeMismatch { .. }
    ));
    assert!(matches!(
        err(layer.infer(&x, 4, None, &mut scratch).map(|_| ())),
        Error::LengthMismatch { .. }
    ));
    assert!(matches!(
        err(layer.infer(&x, 0, None, &mut scratch).map(|_| ())),
        Error::Empty { .. }
    ));
    let mut nan = x.clone();
    nan[(1, 4)] = f32::NAN;
    assert!(matches!(
        err(layer.infer(&nan, 2, None, &mut scratch).map(|_| ())),
        Error::NonFinite { .. }
    ));
    // A state for another batch, and a cell state for a GRU.
    let wrong = layer.zero_state(3);
    assert!(matches!(
        err(layer.infer(&x, 2, Some(&wrong), &mut scratch).map(|_| ())),
        Error::ShapeMismatch { .. }
    ));
    let mut with_c = layer.zero_state(2);
    with_c.c = Some(DMatrix::zeros(4, 4));
    assert!(matches!(
        err(layer.infer(&x, 2, Some(&with_c), &mut scratch).map(|_| ())),
        Error::InvalidConfig(_)
    ));
    // After an error the scratch shows no result; a good call works again.
    assert_eq!(scratch.output().len(), 0);
    layer.infer(&x, 2, None, &mut scratch).unwrap();
    assert_eq!(scratch.output().shape(), (4, 6));
}
