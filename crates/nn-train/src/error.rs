//! The error type of nn-train: nn-core's errors (shapes, files, settings) plus training's own.
//!
//! Training stops with a typed error naming the step when a loss, a gradient or an input is not
//! finite; the parameters are then those of the last good step, because every check runs before
//! the optimizer touches them. Checkpoints that do not fit the model or the optimizer fail with
//! [`Error::CheckpointMismatch`] or [`Error::StateMismatch`] before anything is changed.

/// Everything that can go wrong in nn-train.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data, shape, setting or file error from nn-core or nn-recurrent.
    #[error(transparent)]
    Core(#[from] nn_core::Error),
    /// The loss of a step was NaN or infinite; that step's update was not applied.
    #[error("step {step}: loss is not finite ({loss})")]
    NonFiniteLoss {
        /// The step (1-based) whose loss it was.
        step: u64,
        /// The loss, as f64.
        loss: f64,
    },
    /// A gradient was NaN or infinite although the loss was finite; the update was not applied.
    #[error("step {step}: gradient of `{param}` is not finite")]
    NonFiniteGrad {
        /// The step (1-based).
        step: u64,
        /// The first parameter with a non-finite gradient.
        param: String,
    },
    /// The batch of a step held a NaN or infinite input value; nothing was computed.
    #[error("step {step}: input value {value} at element {index} is not finite")]
    NonFiniteInput {
        /// The step (1-based).
        step: u64,
        /// Element index (column-major) of the first bad value.
        index: usize,
        /// The value, as f64.
        value: f64,
    },
    /// The optimizer's per-parameter state does not fit the model it is asked to update
    /// (another model, or parameters added, removed, renamed or reshaped).
    #[error(
        "optimizer state does not match the model at parameter {index}: expected {expected}, got {got}"
    )]
    StateMismatch {
        /// Position in visiting order.
        index: usize,
        /// What the state was made for: `name (shape)`.
        expected: String,
        /// What the model has there, or `nothing`.
        got: String,
    },
    /// An optimizer step would have made a parameter or its optimizer state NaN or infinite (an
    /// overflow from a huge gradient or parameter). The step was refused: the parameters, the
    /// gradients, the optimizer state and its step count are as they were.
    #[error(
        "{optimizer} step {step}: the update of `{param}` is not finite; the step was not taken"
    )]
    NonFiniteUpdate {
        /// The optimizer kind (`"adam"`, `"sgd"`, ...).
        optimizer: &'static str,
        /// The optimizer step (1-based) that was refused.
        step: u64,
        /// The first parameter whose new value or state is not finite.
        param: String,
    },
    /// A checkpoint made for another model, optimizer or scalar type. For the model config,
    /// `got` and `expected` list only the settings that differ (`hidden 8` and `hidden 9`).
    #[error("checkpoint {path}: {what} differs: the checkpoint has {got}, this run has {expected}")]
    CheckpointMismatch {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What differs: `"optimizer kind"`, `"model config"`, `"dtype"`, ...
        what: &'static str,
        /// What the objects being loaded into have.
        expected: String,
        /// What the file has.
        got: String,
    },
    /// A [`SeqModel`](crate::SeqModel) given the other kind of input than it takes: token ids
    /// to a model without an embedding, or a dense `(I, T*B)` matrix to one with an embedding.
    #[error("{op}: the model takes {expected}, but was given {got}")]
    InputKind {
        /// The operation.
        op: &'static str,
        /// What the model takes: `"token ids"` or `"a dense (I, T*B) input"`.
        expected: &'static str,
        /// What it was given.
        got: &'static str,
    },
    /// A model file ([`crate::model_file`]) of another kind, or whose header has no usable
    /// model config.
    #[error("model file {path}: {reason}")]
    ModelFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// nn-train's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for an invalid-setting error.
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::Core(nn_core::Error::InvalidConfig(msg.into()))
}

/// `0 <= x < ∞` (PyTorch's `if not 0.0 <= x: raise ValueError`, and finite: an infinite setting
/// makes every update NaN or infinite).
pub(crate) fn non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}
