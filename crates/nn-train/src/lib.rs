//! nn-train: optimizers, clipping, schedules, a sequence trainer, checkpoints and sampling.
//!
//! - [`optim`]: SGD (momentum, dampening, Nesterov, weight decay), Adagrad, RMSprop (centered,
//!   momentum), Adam and AdamW with PyTorch's exact update rules, for any [`nn_core::Module`];
//!   their state is kept per parameter in visiting order and exported by name.
//! - [`schedule`]: StepLR, ExponentialLR and CosineAnnealingLR closed forms.
//! - [`clip`]: clipping by value and by global L2 norm (PyTorch's `clip_grad_norm_`).
//! - [`seq_model`]: [`SeqModel`], a recurrent layer with a Dense head, and its objectives.
//! - [`trainer`]: [`Trainer`], mini-batches from a [`BatchSource`], full or truncated BPTT,
//!   validation, progress, and typed errors on NaN.
//! - [`checkpoint`]: model + optimizer + step + RNG in one safetensors file; resuming continues
//!   bit for bit.
//! - [`model_file`]: the model alone ([`SeqModel::save`], [`SeqModel::load`],
//!   [`SeqModel::from_checkpoint`]) with the caller's metadata; streaming with [`SeqModel::step`].
//! - The guide (`GUIDE.md`): the common tasks, each a tested example.
//! - [`sample`](mod@sample): text from a character model (temperature, top-k).
//!
//! ```
//! use nn_core::Rng;
//! use nn_recurrent::{CellKind, RecurrentConfig};
//! use nn_train::{
//!     AdamConfig, Batch, Clip, Objective, Optimizer, SeqModelConfig, Targets, Trainer,
//!     TrainerConfig, batch_fn,
//! };
//!
//! // Learn to predict the next token of 0 1 2 0 1 2 …, one-hot inputs, vocabulary 3.
//! let mut rng = Rng::seed_from(0);
//! let model = SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, 3, 8), 3)
//!     .init::<f32>(&mut rng)
//!     .unwrap();
//! let optimizer = Optimizer::new(AdamConfig::new(0.05)).unwrap();
//! let config = TrainerConfig::new(Objective::NextToken).with_clip(Clip::Norm(5.0));
//! let mut trainer = Trainer::new(model, optimizer, rng, config).unwrap();
//! let (t, b) = (6, 2);
//! let mut source = batch_fn(move |_step, rng: &mut Rng, batch: &mut Batch<f32>| {
//!     batch.x = nalgebra::DMatrix::zeros(3, t * b);
//!     batch.batch = b;
//!     let mut targets = vec![0; t * b];
//!     for j in 0..b {
//!         let start = rng.below(3);
//!         for s in 0..t {
//!             batch.x[((start + s) % 3, s * b + j)] = 1.0;
//!             targets[s * b + j] = (start + s + 1) % 3;
//!         }
//!     }
//!     batch.targets = Targets::Classes(targets);
//!     Ok(())
//! });
//! let report = trainer.run(60, &mut source, None, &mut |p| {
//!     let _ = (p.step, p.report.loss, p.tokens_per_sec); // draw a progress bar here
//! }).unwrap();
//! assert!(report.losses[59] < 0.1 * report.losses[0]);
//! ```

pub mod checkpoint;
pub mod clip;
pub mod error;
pub mod model_file;
pub mod optim;
pub mod sample;
pub mod schedule;
pub mod seq_model;
mod seq_step;
pub mod trainer;

pub use clip::{clip_grad_norm, clip_grad_value, grad_norm};
pub use error::{Error, Result};
pub use optim::{
    AdagradConfig, AdamConfig, Optimizer, OptimizerConfig, ParamState, RmsPropConfig, SgdConfig,
};
pub use sample::{SampleConfig, sample, sample_logits};
pub use schedule::LrSchedule;
pub use seq_model::{
    EmbeddingConfig, Objective, SeqInput, SeqModel, SeqModelConfig, SeqWorkspace, Target,
};
pub use seq_step::SeqStepScratch;
pub use trainer::{
    Batch, BatchSource, Bptt, Clip, Progress, StepReport, Targets, TrainReport, Trainer,
    TrainerConfig, Validate, batch_fn,
};

/// The README's examples (they use all three library crates), compiled and run as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The guide's examples, compiled and run as doctests.
#[doc = include_str!("../../../GUIDE.md")]
#[cfg(doctest)]
pub struct GuideDoctests;
