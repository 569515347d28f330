//! Shared test helpers: one-hot token batches and a default next-token trainer.
#![allow(dead_code)]

use nalgebra::DMatrix;
use nn_core::{Float, Rng};
use nn_train::{Batch, Objective, Optimizer, SeqModel, Targets, Trainer, TrainerConfig};

/// Fills `batch` with `b` windows of `t + 1` tokens drawn from the repeating `text` at random
/// offsets (from `rng`): inputs one-hot `(V, t*b)`, targets the next tokens (`t*B + b`).
pub fn next_token_batch<T: Float>(
    text: &[usize],
    vocab: usize,
    t: usize,
    b: usize,
    rng: &mut Rng,
    batch: &mut Batch<T>,
) {
    if batch.x.shape() != (vocab, t * b) {
        batch.x = DMatrix::zeros(vocab, t * b);
    }
    batch.x.fill(T::zero());
    batch.batch = b;
    let mut targets = match std::mem::replace(&mut batch.targets, Targets::Classes(Vec::new())) {
        Targets::Classes(v) => v,
        Targets::Values(_) => Vec::new(),
    };
    targets.clear();
    targets.resize(t * b, 0);
    for j in 0..b {
        let start = rng.below(text.len());
        for s in 0..t {
            let tok = text[(start + s) % text.len()];
            batch.x[(tok, s * b + j)] = T::one();
            targets[s * b + j] = text[(start + s + 1) % text.len()];
        }
    }
    batch.targets = Targets::Classes(targets);
}

/// A next-token trainer of `model` with the default settings (full BPTT, no clipping) and the
/// trainer's `Rng` seeded with `seed`.
pub fn next_token_trainer<T: Float>(
    model: SeqModel<T>,
    opt: Optimizer<T>,
    seed: u64,
) -> Trainer<T> {
    Trainer::new(
        model,
        opt,
        Rng::seed_from(seed),
        TrainerConfig::new(Objective::NextToken),
    )
    .unwrap()
}
