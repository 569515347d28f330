//! `Recurrent::step` and `Recurrent::step_tokens` for generation: weights packed once and
//! re-packed after any change (`visit_mut`, `weights_mut`, a weight file), the batch-1 kernels
//! against the sequence forward bit for bit (sizes that reach several panels and the two-thread
//! split), tokens against one-hot inputs, and the typed errors.

use nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Error, Module, Rng};
use nn_recurrent::{
    CellKind, Nonlinearity, Recurrent, RecurrentCache, RecurrentConfig, StepScratch,
};
use nn_testutil::uniform_matrix;

const CELLS: [CellKind; 3] = [
    CellKind::Rnn(Nonlinearity::Tanh),
    CellKind::Lstm,
    CellKind::Gru,
];

fn layer(cell: CellKind, input: usize, hidden: usize, layers: usize, seed: u64) -> Recurrent<f32> {
    RecurrentConfig::new(cell, input, hidden)
        .with_num_layers(layers)
        .init::<f32>(&mut Rng::seed_from(seed))
        .unwrap()
}

/// One-hot columns for `ids` over `vocab` rows.
fn one_hot(vocab: usize, ids: &[usize]) -> DMatrix<f32> {
    DMatrix::from_fn(vocab, ids.len(), |i, b| if ids[b] == i { 1.0 } else { 0.0 })
}

/// `steps` steps of `x` (columns `t*B..`) through `layer` with `scratch`, from a zero state:
/// the top `h` of each step, and the final state's `h`.
fn run(
    layer: &Recurrent<f32>,
    scratch: &mut StepScratch<f32>,
    x: &DMatrix<f32>,
    batch: usize,
) -> Vec<DMatrix<f32>> {
    let mut state = layer.zero_state(batch);
    let mut out = Vec::new();
    for t in 0..x.ncols() / batch {
        let h = layer
            .step(x.columns(t * batch, batch), &mut state, scratch)
            .unwrap();
        out.push(h.clone());
    }
    out.push(state.h.clone());
    out
}

/// Batch 1 to 3 (the matrix-vector kernel) with sizes reaching several panels, a partial last
/// panel and the two-thread split, against the sequence forward, bit for bit.
#[test]
fn small_batches_give_the_forward_bits_at_every_size() {
    for cell in CELLS {
        for (input, hidden) in [(5, 3), (65, 40), (65, 128), (130, 96)] {
            let layer = layer(cell, input, hidden, 2, 4);
            for batch in [1, 2, 3] {
                let steps = 4;
                let mut rng = Rng::seed_from(9);
                let x = uniform_matrix(input, steps * batch, &mut rng).map(|v| v as f32);
                let mut cache = RecurrentCache::new();
                layer.forward(&x, batch, None, &mut cache).unwrap();
                let got = run(&layer, &mut StepScratch::new(), &x, batch);
                for t in 0..steps {
                    let want = cache.output().columns(t * batch, batch);
                    assert_eq!(got[t], want, "{cell:?} {input}x{hidden} B={batch} t={t}");
                }
                assert_eq!(
                    got[steps],
                    cache.final_state().h,
                    "{cell:?} {hidden} B={batch}"
                );
            }
        }
    }
}

/// Tokens give the one-hot step's bits: batch 1 to 3 (gather and matrix-vector kernel), 5
/// (gather and packed kernel) and 24 (the one-hot matrix, as the forward's steps sum it). A `-0` weight in
/// the token's column gives the product's `+0`.
#[test]
fn tokens_give_the_one_hot_bits() {
    for cell in CELLS {
        let vocab = 11;
        let mut layer = layer(cell, vocab, 20, 2, 5);
        layer
            .weights_mut(0, 0)
            .unwrap()
            .weight_ih
            .value
            .column_mut(3)
            .fill(-0.0);
        for batch in [1, 2, 3, 5, 24] {
            let (mut s_tok, mut s_hot) = (StepScratch::new(), StepScratch::new());
            let mut st_tok = layer.zero_state(batch);
            let mut st_hot = layer.zero_state(batch);
            for t in 0..4 {
                let ids: Vec<usize> = (0..batch).map(|b| (b * 7 + t * 3) % vocab).collect();
                let x = one_hot(vocab, &ids);
                let want = layer.step(&x, &mut st_hot, &mut s_hot).unwrap().clone();
                let got = layer.step_tokens(&ids, &mut st_tok, &mut s_tok).unwrap();
                assert_eq!(got, &want, "{cell:?} B={batch} t={t}");
                let bits = |m: &DMatrix<f32>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&st_tok.h), bits(&st_hot.h), "{cell:?} B={batch} t={t}");
            }
        }
    }
}

/// A change of the weights between two steps is picked up: the step after it equals a fresh
/// scratch's, through `visit_mut` (an optimizer), `weights_mut`, and a weight file.
#[test]
fn weight_changes_between_steps_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    for cell in CELLS {
        for batch in [1, 5] {
            let mut layer = layer(cell, 6, 24, 2, 6);
            let mut rng = Rng::seed_from(7);
            let x = uniform_matrix(6, batch, &mut rng).map(|v| v as f32);
            let mut scratch = StepScratch::new();
            let mut state = layer.zero_state(batch);
            layer.step(&x, &mut state, &mut scratch).unwrap();
            let check = |layer: &Recurrent<f32>, scratch: &mut StepScratch<f32>, what: &str| {
                let s0 = state.clone();
                let (mut a, mut b) = (s0.clone(), s0.clone());
                let warm = layer.step(&x, &mut a, scratch).unwrap().clone();
                let fresh = layer
                    .step(&x, &mut b, &mut StepScratch::new())
                    .unwrap()
                    .clone();
                assert_eq!(warm, fresh, "{cell:?} B={batch} after {what}");
                assert_eq!(a.h, b.h, "{cell:?} B={batch} after {what}");
            };
            let before = layer
                .step(&x, &mut state.clone(), &mut scratch)
                .unwrap()
                .clone();
            // An optimizer step: every parameter moves.
            layer.visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v = *v * 0.9 + 0.01));
            check(&layer, &mut scratch, "visit_mut");
            let after = layer
                .step(&x, &mut state.clone(), &mut scratch)
                .unwrap()
                .clone();
            assert_ne!(before, after, "{cell:?} the change must show");
            for l in 0..2 {
                let w = layer.weights_mut(l, 0).unwrap();
                w.weight_hh.value[(1, 2)] += 0.5;
                w.weight_ih.value[(0, 1)] -= 0.5;
            }
            check(&layer, &mut scratch, "weights_mut");
            let path = dir.path().join("w.safetensors");
            let other = self::layer(cell, 6, 24, 2, 99);
            let mut out = TensorWriter::new();
            out.module(&other);
            out.write(&path).unwrap();
            TensorFile::open(&path)
                .unwrap()
                .load_module(&mut layer)
                .unwrap();
            check(&layer, &mut scratch, "load_module");
            // A clone keeps its version and its weights: the same scratch serves it.
            let clone = layer.clone();
            check(&clone, &mut scratch, "clone");
            // Another layer of the same shapes through the same scratch.
            check(&other, &mut scratch, "another layer");
        }
    }
}

/// The typed errors of a step: a state of the wrong shape or batch, a token outside the
/// vocabulary, a bidirectional layer, a NaN in the input, the state or a weight.
#[test]
fn bad_steps_are_typed_errors() {
    let lstm = layer(CellKind::Lstm, 7, 5, 2, 1);
    let mut scratch = StepScratch::new();
    let mut st = lstm.zero_state(2);
    match lstm.step_tokens(&[1, 7], &mut st, &mut scratch) {
        Err(Error::TokenOutOfRange {
            index: 1,
            token: 7,
            vocab: 7,
            ..
        }) => {}
        other => panic!("token out of range: {other:?}"),
    }
    let msg = lstm
        .step_tokens(&[9], &mut lstm.zero_state(1), &mut scratch)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("token 9") && msg.contains("vocabulary of 7"),
        "{msg}"
    );
    // The state is left as it was by a refused step.
    assert_eq!(st, lstm.zero_state(2));
    // A state for another batch, or of another width.
    assert!(matches!(
        lstm.step_tokens(&[1, 2, 3], &mut st, &mut scratch),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        lstm.step(&DMatrix::zeros(7, 1), &mut st, &mut scratch),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut narrow = lstm.zero_state(2);
    narrow.h = DMatrix::zeros(4, 4);
    assert!(matches!(
        lstm.step_tokens(&[1, 2], &mut narrow, &mut scratch),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        lstm.step_tokens(&[], &mut st, &mut scratch),
        Err(Error::Empty { .. })
    ));
    // NaN in the input, the state, a weight.
    let mut x = DMatrix::zeros(7, 2);
    x[(3, 1)] = f32::NAN;
    assert!(matches!(
        lstm.step(&x, &mut st, &mut scratch),
        Err(Error::NonFinite { .. })
    ));
    let mut bad = lstm.zero_state(2);
    bad.h[(0, 0)] = f32::NAN;
    assert!(matches!(
        lstm.step_tokens(&[0, 1], &mut bad, &mut scratch),
        Err(Error::NonFinite { .. })
    ));
    let mut nan_w = lstm.clone();
    // In a column no token reads: the one-hot product would still be NaN.
    nan_w.weights_mut(0, 0).unwrap().weight_ih.value[(0, 6)] = f32::NAN;
    let r = nan_w.step_tokens(&[0, 1], &mut st, &mut scratch);
    assert!(matches!(r, Err(Error::NonFinite { .. })), "{r:?}");
    let r = nan_w.step(&one_hot(7, &[0, 1]), &mut st, &mut scratch);
    assert!(matches!(r, Err(Error::NonFinite { .. })), "{r:?}");
    // Bidirectional.
    let bidir = RecurrentConfig::new(CellKind::Gru, 7, 5)
        .with_bidirectional(true)
        .init::<f32>(&mut Rng::seed_from(0))
        .unwrap();
    let mut st = bidir.zero_state(1);
    assert!(matches!(
        bidir.step_tokens(&[0], &mut st, &mut scratch),
        Err(Error::InvalidConfig(_))
    ));
}
