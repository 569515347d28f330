//! `SeqModel::infer`: the logits of `SeqModel::forward`, bit for bit, with no cache.

use nalgebra::DMatrix;
use nn_core::Rng;
use nn_recurrent::{CellKind, InferScratch, RecurrentConfig};
use nn_train::{SeqModelConfig, SeqWorkspace};

#[test]
fn seq_model_infer_gives_the_forwards_logits() {
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let rnn = RecurrentConfig::new(cell, 5, 6)
            .with_num_layers(2)
            .with_bidirectional(true);
        let model = SeqModelConfig::new(rnn, 4)
            .init::<f32>(&mut Rng::seed_from(2))
            .unwrap();
        let (steps, batch) = (7, 3);
        let x = DMatrix::from_fn(5, steps * batch, |i, j| ((i * 3 + j) as f32 * 0.3).sin());
        let init = model.rnn.zero_state(batch);
        for last in [false, true] {
            let mut ws = SeqWorkspace::new();
            model
                .forward(&x, batch, Some(&init), last, &mut ws)
                .unwrap();
            let (mut scratch, mut logits) = (InferScratch::new(), DMatrix::zeros(0, 0));
            model
                .infer(&x, batch, Some(&init), last, &mut scratch, &mut logits)
                .unwrap();
            let bits = |m: &DMatrix<f32>| m.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&logits), bits(ws.logits()), "{cell:?} last={last}");
            assert_eq!(bits(&scratch.final_state().h), bits(&ws.final_state().h));
        }
        let mut logits = DMatrix::zeros(0, 0);
        let bad = DMatrix::<f32>::zeros(4, 6);
        assert!(
            model
                .infer(&bad, 2, None, false, &mut InferScratch::new(), &mut logits)
                .is_err()
        );
    }
}
