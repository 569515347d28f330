//! nn-train: optimizers, clipping, schedules, a sequence trainer, checkpoints and sampling.
//!
//! - [`optim`]: SGD, Adagrad, RMSprop, Adam, AdamW with PyTorch's exact update rules, for any
//!   [`nn_core::Module`]; [`schedule`]: StepLR, ExponentialLR, CosineAnnealingLR.
//! - [`clip`]: clipping by value and by global norm.

pub mod clip;
pub mod error;
pub mod optim;
pub mod schedule;

pub use clip::{clip_grad_norm, clip_grad_value, grad_norm};
pub use error::{Error, Result};
pub use optim::{
    AdagradConfig, AdamConfig, Optimizer, OptimizerConfig, ParamState, RmsPropConfig, SgdConfig,
};
pub use schedule::LrSchedule;
pub mod seq_model;
pub mod trainer;
pub use seq_model::{Objective, SeqModel, SeqModelConfig, SeqWorkspace, Target};
pub use trainer::{
    Batch, BatchSource, Bptt, Clip, Progress, StepReport, Targets, TrainReport, Trainer,
    TrainerConfig, Validate, batch_fn,
};
pub mod checkpoint;
pub mod sample;
pub use sample::{SampleConfig, sample, sample_logits};
