//! The sequence model the trainer, fixtures, demos and benchmarks use: a recurrent layer, then a
//! Dense head on its outputs.
//!
//! Shapes (`I` input features, `H` hidden, `D` directions, `O` outputs, `T` steps, `B` batch):
//! ```text
//! x      (I, T*B)      column t*B + b = step t of sequence b
//! out    (D*H, T*B)    = Recurrent(x, h0)            (also the final state h_n, c_n)
//! logits (O, T*B)      = W · out + b                 (objective NextToken: every step)
//! logits (O, B)        = W · out[:, (T-1)B..TB] + b  (LastStepClass, LastStepMse: last step only)
//! logits (O, T*B)      = W · out + b                 (objective StepMse: every step)
//! ```
//! Objectives ([`Target`]), each a mean like PyTorch's default reduction:
//! - `NextToken(targets)`: softmax cross-entropy over all `T*B` columns, `targets[t*B + b]`;
//! - `LastStepClass(targets)`: softmax cross-entropy of the last step's `B` columns;
//! - `LastStepMse(y)`: mean squared error of the last step's head output against `y` `(O, B)`;
//! - `StepMse(y)`: mean squared error of every step's head output against `y` `(O, T*B)`
//!   (column `t*B + b`; per-step regression, e.g. the next value of a series at every step):
//!   `L = Σ (logits − y)² / (O·T·B)`.
//!
//! Backward: `dW += dlogits · outᵀ`, `db += Σ_columns dlogits`, `d_out = Wᵀ · dlogits` (zero in
//! the columns without a loss), then BPTT through the recurrent layer with a zero gradient for
//! the final state, which is where truncated BPTT cuts the graph.
//!
//! Parameter names: `rnn.<PyTorch name>` (`rnn.weight_ih_l0`, ...), `head.weight`, `head.bias`,
//! so `torch.nn.Module`s with attributes `rnn` and `head` load the same `state_dict`.
//! All buffers live in a [`SeqWorkspace`], sized on first use for a `(T, B)` and then reused.
//! One step at a time (streaming): [`SeqModel::step`] (`seq_step.rs`); model files:
//! [`SeqModel::save`], [`SeqModel::load`] (`model_file.rs`).

use crate::error::{Error, Result, invalid};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::{Dense, Float, Module, Param, Rng, Shape, loss, visit_prefixed, visit_prefixed_mut};
use nn_recurrent::{Recurrent, RecurrentCache, RecurrentConfig, RecurrentState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod infer;

/// What a training step minimizes, without the targets themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Softmax cross-entropy at every step (many-to-many, e.g. next-character prediction).
    NextToken,
    /// Softmax cross-entropy at the last step (many-to-one classification).
    LastStepClass,
    /// Mean squared error at the last step (many-to-one regression).
    LastStepMse,
    /// Mean squared error at every step (many-to-many regression, e.g. forecasting the next
    /// value of a series at each step).
    StepMse,
}

impl Objective {
    /// `true` when only the last step's output enters the loss.
    pub fn last_step_only(self) -> bool {
        matches!(self, Objective::LastStepClass | Objective::LastStepMse)
    }
}

/// An objective with its targets, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a, T: Float> {
    /// `T*B` class indices, index `t*B + b`.
    NextToken(&'a [usize]),
    /// `B` class indices.
    LastStepClass(&'a [usize]),
    /// `(O, B)` values.
    LastStepMse(&'a DMatrix<T>),
    /// `(O, T*B)` values, column `t*B + b`.
    StepMse(&'a DMatrix<T>),
}

impl<T: Float> Target<'_, T> {
    /// The objective kind.
    pub fn objective(&self) -> Objective {
        match self {
            Target::NextToken(_) => Objective::NextToken,
            Target::LastStepClass(_) => Objective::LastStepClass,
            Target::LastStepMse(_) => Objective::LastStepMse,
            Target::StepMse(_) => Objective::StepMse,
        }
    }
}

/// Settings of a [`SeqModel`]: the recurrent layer's and the head's output size. As JSON, the
/// layer's fields and `output` in one object ([`SeqModelConfig::to_json`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeqModelConfig {
    /// The recurrent layer.
    #[serde(flatten)]
    pub rnn: RecurrentConfig,
    /// Outputs `O` of the head (classes or regression targets).
    #[serde(rename = "output")]
    pub output_size: usize,
}

impl SeqModelConfig {
    /// A recurrent layer `rnn` followed by a head with `output_size` outputs.
    pub fn new(rnn: RecurrentConfig, output_size: usize) -> Self {
        SeqModelConfig { rnn, output_size }
    }

    /// Builds the model: the layer with PyTorch's init, then the head with `nn.Linear`'s
    /// (`U(-1/√(D*H), 1/√(D*H))`), both drawn from `rng` in that order.
    pub fn init<T: Float>(&self, rng: &mut Rng) -> Result<SeqModel<T>> {
        let rnn = self.rnn.init::<T>(rng)?;
        let head = Dense::new(rnn.output_size(), self.output_size, rng)?;
        SeqModel::new(rnn, head)
    }

    /// The settings as JSON, as stored in checkpoints: the layer's fields (`cell`, `input`,
    /// `hidden`, `layers`, `bidirectional`) and `output`, e.g.
    /// `{"bidirectional":false,"cell":"lstm","hidden":8,"input":4,"layers":1,"output":4}`.
    pub fn to_json(&self) -> Value {
        // A struct of integers, booleans and a name: serializing it cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Inverse of [`SeqModelConfig::to_json`]; unknown fields are ignored.
    pub fn from_json(v: &Value) -> Result<Self> {
        Self::deserialize(v).map_err(|e| invalid(format!("model config: {e}")))
    }
}

/// A recurrent layer and a Dense head applied to every step's output.
#[derive(Clone, Debug)]
pub struct SeqModel<T: Float> {
    /// The recurrent layer (parameter names prefixed `rnn.`).
    pub rnn: Recurrent<T>,
    /// The head `D*H -> O` (names `head.weight`, `head.bias`).
    pub head: Dense<T>,
}

/// Buffers of one [`SeqModel`] training or evaluation step, sized on first use and reused
/// while `(T, B)` stays the same.
#[derive(Debug)]
pub struct SeqWorkspace<T: Float> {
    cache: RecurrentCache<T>,
    /// `(O, T*B)` or `(O, B)`.
    logits: DMatrix<T>,
    /// Same shape as `logits`.
    d_logits: DMatrix<T>,
    /// `(D*H, T*B)`.
    d_output: DMatrix<T>,
}

impl<T: Float> Default for SeqWorkspace<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Resizes a workspace buffer to `(rows, cols)` when its shape differs; a size that cannot be
/// allocated (the head's outputs times a very long sequence batch, say) is `TooLarge`.
fn ensure<T: Float>(
    m: &mut DMatrix<T>,
    op: &'static str,
    rows: usize,
    cols: usize,
) -> nn_core::Result<()> {
    if m.shape() != (rows, cols) {
        // Free the old buffer first, so that both are never held at once.
        *m = DMatrix::zeros(0, 0);
        *m = nn_core::try_zeros(op, rows, cols)?;
    }
    Ok(())
}

impl<T: Float> SeqWorkspace<T> {
    /// An empty workspace; the first step sizes it.
    pub fn new() -> Self {
        SeqWorkspace {
            cache: RecurrentCache::new(),
            logits: DMatrix::zeros(0, 0),
            d_logits: DMatrix::zeros(0, 0),
            d_output: DMatrix::zeros(0, 0),
        }
    }
    /// The head's output of the last forward: `(O, T*B)` (NextToken) or `(O, B)` (last step).
    pub fn logits(&self) -> &DMatrix<T> {
        &self.logits
    }
    /// The recurrent layer's output `(D*H, T*B)` of the last forward.
    pub fn output(&self) -> &DMatrix<T> {
        self.cache.output()
    }
    /// The final state (`h_n`, `c_n`) of the last forward: the next window's initial state.
    pub fn final_state(&self) -> &RecurrentState<T> {
        self.cache.final_state()
    }
    /// The recurrent layer's cache.
    pub fn cache(&self) -> &RecurrentCache<T> {
        &self.cache
    }
    pub(crate) fn cache_mut(&mut self) -> &mut RecurrentCache<T> {
        &mut self.cache
    }
}

impl<T: Float> SeqModel<T> {
    /// Joins a layer and a head; the head's input size must be the layer's `D*H`.
    pub fn new(rnn: Recurrent<T>, head: Dense<T>) -> Result<Self> {
        if head.input_size() != rnn.output_size() {
            return Err(invalid(format!(
                "head takes {} inputs but the recurrent layer gives {}",
                head.input_size(),
                rnn.output_size()
            )));
        }
        Ok(SeqModel { rnn, head })
    }

    /// The settings of this model.
    pub fn config(&self) -> SeqModelConfig {
        SeqModelConfig::new(self.rnn.config().clone(), self.head.output_size())
    }

    /// Input features `I`.
    pub fn input_size(&self) -> usize {
        self.rnn.config().input_size
    }

    /// Outputs `O`.
    pub fn output_size(&self) -> usize {
        self.head.output_size()
    }

    pub(crate) fn steps(&self, x: &DMatrixView<'_, T>, batch: usize) -> Result<usize> {
        if batch == 0 || x.ncols() == 0 {
            return Err(nn_core::Error::Empty {
                op: "SeqModel",
                what: if batch == 0 { "batch" } else { "steps" },
            }
            .into());
        }
        if !x.ncols().is_multiple_of(batch) || x.nrows() != self.input_size() {
            return Err(nn_core::Error::ShapeMismatch {
                op: "SeqModel input (rows: I features; columns: T*B, step t of sequence b at t*B + b)",
                expected: Shape(self.input_size(), x.ncols().div_ceil(batch) * batch),
                got: Shape::from(x),
            }
            .into());
        }
        Ok(x.ncols() / batch)
    }

    /// Runs the layer from `initial` (zeros when `None`) and the head on every step
    /// (`last_step_only = false`, logits `(O, T*B)`) or on the last step (`(O, B)`).
    /// Results in `ws.logits()`, `ws.output()`, `ws.final_state()`. `x` is a matrix (`&x`) or a
    /// view (a window of a longer batch, `x.columns(t0 * b, n * b)`, with no copy).
    pub fn forward<'x>(
        &self,
        x: impl Into<DMatrixView<'x, T>>,
        batch: usize,
        initial: Option<&RecurrentState<T>>,
        last_step_only: bool,
        ws: &mut SeqWorkspace<T>,
    ) -> Result<()> {
        let x: DMatrixView<'x, T> = x.into();
        let steps = self.steps(&x, batch)?;
        let (first, cols) = if last_step_only {
            ((steps - 1) * batch, batch)
        } else {
            (0, steps * batch)
        };
        // Before the layer runs, so that a batch whose logits cannot be held fails at once.
        ensure(&mut ws.logits, "SeqModel logits", self.output_size(), cols)?;
        ensure(
            &mut ws.d_logits,
            "SeqModel logit gradient",
            self.output_size(),
            cols,
        )?;
        self.rnn.forward(x, batch, initial, &mut ws.cache)?;
        let out = ws.cache.output();
        self.head
            .forward_to(&out.columns(first, cols), &mut ws.logits)?;
        Ok(())
    }

    /// Writes the loss gradient into `ws.d_logits` and returns the loss, finite (the logits are,
    /// as [`Dense::forward_to`] checks; a loss that overflows is `NonFinite`).
    fn loss_to(target: Target<'_, T>, ws: &mut SeqWorkspace<T>) -> Result<T> {
        Ok(match target {
            Target::NextToken(t) | Target::LastStepClass(t) => {
                loss::softmax_cross_entropy_to(&ws.logits, t, &mut ws.d_logits)?
            }
            Target::LastStepMse(y) | Target::StepMse(y) => {
                let l = loss::mse(&ws.logits, y)?;
                loss::mse_backward(&ws.logits, y, &mut ws.d_logits)?;
                l
            }
        })
    }

    /// Forward and loss, without gradients (validation). The loss is finite: a forward or a loss
    /// that overflows (or weights that are not finite) is [`nn_core::Error::NonFinite`]. Targets
    /// of the wrong shape (`StepMse`: `(O, T*B)`) are [`nn_core::Error::ShapeMismatch`].
    pub fn loss<'x>(
        &self,
        x: impl Into<DMatrixView<'x, T>>,
        batch: usize,
        initial: Option<&RecurrentState<T>>,
        target: Target<'_, T>,
        ws: &mut SeqWorkspace<T>,
    ) -> Result<T> {
        self.forward(x, batch, initial, target.objective().last_step_only(), ws)?;
        Self::loss_to(target, ws)
    }

    /// One training step's forward, loss and backward: adds the gradients of the loss into
    /// every parameter (zero them first; nothing else is changed) and returns the loss. The
    /// final state is in `ws.final_state()`. The loss is finite: when the forward or the loss
    /// overflows, the result is [`nn_core::Error::NonFinite`] and the gradients are left
    /// untouched.
    pub fn forward_backward<'x>(
        &mut self,
        x: impl Into<DMatrixView<'x, T>>,
        batch: usize,
        initial: Option<&RecurrentState<T>>,
        target: Target<'_, T>,
        ws: &mut SeqWorkspace<T>,
    ) -> Result<T> {
        let x: DMatrixView<'x, T> = x.into();
        let loss = self.loss(x, batch, initial, target, ws)?;
        let steps = x.ncols() / batch;
        let last_only = target.objective().last_step_only();
        let first = if last_only { (steps - 1) * batch } else { 0 };
        let cols = ws.logits.ncols();
        ensure(
            &mut ws.d_output,
            "SeqModel output gradient",
            self.rnn.output_size(),
            steps * batch,
        )?;
        if last_only {
            ws.d_output.fill(T::zero());
        }
        self.head.backward_to(
            &ws.cache.output().columns(first, cols),
            &ws.d_logits,
            Some(&mut ws.d_output.columns_mut(first, cols)),
        )?;
        self.rnn
            .backward(x, &mut ws.cache, &ws.d_output, None, None)
            .map_err(Error::from)?;
        Ok(loss)
    }
}

impl<T: Float> Module<T> for SeqModel<T> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>)) {
        visit_prefixed("rnn", &self.rnn, f);
        visit_prefixed("head", &self.head, f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>)) {
        visit_prefixed_mut("rnn", &mut self.rnn, f);
        visit_prefixed_mut("head", &mut self.head, f);
    }
}
