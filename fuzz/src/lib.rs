//! Shared pieces of the fuzz targets: the small model and trainer a fuzzed checkpoint is loaded
//! into, and its one fixed batch. `examples/make_seeds.rs` writes the seed checkpoint with them.

use nn_core::Rng;
use nn_core::nalgebra::DMatrix;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, BatchSource, Bptt, Clip, Objective, Optimizer, SeqModel, SeqModelConfig,
    Targets, Trainer, TrainerConfig, batch_fn,
};

/// Vocabulary, steps and batch of the fixed batch.
pub const VOCAB: usize = 3;
const STEPS: usize = 4;
const BATCH: usize = 2;

/// An LSTM `3 -> 4` with a head to 3 tokens, Adam, truncated BPTT with carried state, so a
/// checkpoint has every kind of tensor (parameters, Adam buffers, step, RNG, `state.h`, `state.c`).
pub fn small_trainer() -> Trainer<f32> {
    let config = SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, VOCAB, 4), VOCAB);
    let model: SeqModel<f32> = config.init(&mut Rng::seed_from(1)).expect("valid config");
    let optimizer = Optimizer::new(AdamConfig::new(0.01)).expect("valid optimizer");
    let tc = TrainerConfig::new(Objective::NextToken)
        .with_bptt(Bptt::Truncated { window: 2 })
        .with_carry_state(true)
        .with_clip(Clip::Norm(1.0));
    Trainer::new(model, optimizer, Rng::seed_from(2), tc).expect("valid trainer")
}

/// One-hot tokens `0 1 2 0 …` and their successors, the same every step.
pub fn fixed_batches() -> impl BatchSource<f32> {
    batch_fn(|_, _: &mut Rng, b: &mut Batch<f32>| {
        b.x = DMatrix::zeros(VOCAB, STEPS * BATCH);
        b.batch = BATCH;
        let mut targets = vec![0; STEPS * BATCH];
        for s in 0..STEPS {
            for j in 0..BATCH {
                let tok = (s + j) % VOCAB;
                b.x[(tok, s * BATCH + j)] = 1.0;
                targets[s * BATCH + j] = (tok + 1) % VOCAB;
            }
        }
        b.targets = Targets::Classes(targets);
        Ok(())
    })
}
