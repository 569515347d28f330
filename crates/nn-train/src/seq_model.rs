//! The sequence model the trainer, fixtures, demos and benchmarks use: a recurrent layer, then a
//! Dense head on its outputs.
//!
//! Shapes (`I` input features, `H` hidden, `D` directions, `O` outputs, `T` steps, `B` batch,
//! `V` vocabulary, `E` embedding size):
//! ```text
//! x      (I, T*B)      column t*B + b = step t of sequence b          (no embedding)
//! ids    [T*B]         index t*B + b; x = W_emb[ids]ᵀ (E, T*B), I = E  (with an embedding)
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
//! Class targets may be [`loss::IGNORE_INDEX`] (PyTorch's `ignore_index`, e.g. padded
//! positions): no loss there, and the mean is over the other positions.
//!
//! Input ([`SeqInput`], `input.rs`): a model without an embedding reads a dense `x`; one with an
//! embedding (PyTorch's `nn.Embedding(V, E, padding_idx)` first) reads token ids, the layer reads
//! the gathered rows (no one-hot product), and backward adds `dx` (the layer's input gradient)
//! into the rows the ids used. The other kind of input is [`crate::Error::InputKind`].
//!
//! Variable-length batches (PyTorch's packed sequences): every pass takes `batch` as `B` or as
//! each sequence's length ([`Lengths`]; `lengths.rs`). The layer runs only the real steps
//! ([`Recurrent::forward_with`]); the losses cover the real positions only (`NextToken` ignores
//! the padded positions' targets whatever they hold, `StepMse` is the mean over the real
//! columns), and the last-step objectives read each sequence's own last step. The ids of a
//! padded position must still be in the vocabulary (PyTorch pads with `padding_idx`).
//!
//! Dropout (the layer's `dropout` setting, between stacked layers) applies only in
//! [`SeqModel::forward_backward_with_dropout`] given an [`Rng`]; every other pass runs without
//! it (PyTorch's `eval()`).
//!
//! Backward: `dW += dlogits · outᵀ`, `db += Σ_columns dlogits`, `d_out = Wᵀ · dlogits` (zero in
//! the columns without a loss), then BPTT through the recurrent layer with a zero gradient for
//! the final state, which is where truncated BPTT cuts the graph.
//!
//! Parameter names: `embed.weight` (with an embedding), `rnn.<PyTorch name>`
//! (`rnn.weight_ih_l0`, ...), `head.weight`, `head.bias`, in that order, so `torch.nn.Module`s
//! with attributes `embed`, `rnn` and `head` load the same `state_dict`.
//! All buffers live in a [`SeqWorkspace`], sized on first use for a `(T, B)` and then reused.
//! One step at a time (streaming): [`SeqModel::step`] (`seq_step.rs`); model files:
//! [`SeqModel::save`], [`SeqModel::load`] (`model_file.rs`).

use crate::error::{Result, invalid};
use nalgebra::DMatrix;
use nn_core::{
    Dense, Embedding, Float, Module, Param, Rng, loss, visit_prefixed, visit_prefixed_mut,
};
use nn_recurrent::{Lengths, Recurrent, RecurrentCache, RecurrentConfig, RecurrentState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod infer;
mod input;
mod lengths;

pub use input::SeqInput;

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

/// Settings of a [`SeqModel`]'s token embedding: PyTorch's
/// `nn.Embedding(vocab, dim, padding_idx=padding_idx)`. As JSON
/// `{"vocab":V,"dim":E}` (and `"padding_idx"` when set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingConfig {
    /// Tokens `V`.
    pub vocab: usize,
    /// Vector size `E` (the recurrent layer's input size).
    pub dim: usize,
    /// The row that stays zero and gets no gradient, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding_idx: Option<usize>,
}

impl EmbeddingConfig {
    /// `vocab` vectors of size `dim`, no padding row.
    pub fn new(vocab: usize, dim: usize) -> Self {
        EmbeddingConfig {
            vocab,
            dim,
            padding_idx: None,
        }
    }

    /// Sets the padding row.
    pub fn with_padding_idx(mut self, padding_idx: usize) -> Self {
        self.padding_idx = Some(padding_idx);
        self
    }
}

/// Settings of a [`SeqModel`]: the optional embedding, the recurrent layer and the head's output
/// size. As JSON, the layer's fields, `output` and (only when there is one) `embedding` in one
/// object ([`SeqModelConfig::to_json`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeqModelConfig {
    /// A token embedding before the layer (`None`: dense input). Absent from the JSON when
    /// `None`, so configs without one keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
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
        SeqModelConfig {
            embedding: None,
            rnn,
            output_size,
        }
    }

    /// Puts a token embedding before the layer; its `dim` must be the layer's input size.
    pub fn with_embedding(mut self, embedding: EmbeddingConfig) -> Self {
        self.embedding = Some(embedding);
        self
    }

    /// Builds the model: the embedding (if any) with PyTorch's `N(0, 1)`, the layer with
    /// PyTorch's init, then the head with `nn.Linear`'s (`U(-1/√(D*H), 1/√(D*H))`), all drawn
    /// from `rng` in that order. An embedding whose `dim` is not the layer's input size, or
    /// whose `padding_idx` is outside its vocabulary, is an error.
    pub fn init<T: Float>(&self, rng: &mut Rng) -> Result<SeqModel<T>> {
        let embed = match &self.embedding {
            Some(e) => {
                check_embedding_dim(e.dim, &self.rnn)?;
                Some(Embedding::new(e.vocab, e.dim, e.padding_idx, rng)?)
            }
            None => None,
        };
        let rnn = self.rnn.init::<T>(rng)?;
        let head = Dense::new(rnn.output_size(), self.output_size, rng)?;
        let model = SeqModel::new(rnn, head)?;
        match embed {
            Some(e) => model.with_embedding(e),
            None => Ok(model),
        }
    }

    /// The settings as JSON, as stored in checkpoints: the layer's fields (`cell`, `input`,
    /// `hidden`, `layers`, `bidirectional`, and `dropout` when not 0), `output`, and
    /// `embedding` when there is one, e.g.
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

/// The embedding's size must be what the layer reads.
fn check_embedding_dim(dim: usize, rnn: &RecurrentConfig) -> Result<()> {
    if dim != rnn.input_size {
        return Err(invalid(format!(
            "embedding dim {dim} must be the recurrent layer's input size {}",
            rnn.input_size
        )));
    }
    Ok(())
}

/// An optional token embedding, a recurrent layer and a Dense head applied to every step's
/// output.
#[derive(Clone, Debug)]
pub struct SeqModel<T: Float> {
    /// The token embedding, if the model reads token ids (parameter name `embed.weight`).
    pub embed: Option<Embedding<T>>,
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
    /// With an embedding: the gathered rows `(E, T*B)`, the layer's input.
    embedded: DMatrix<T>,
    /// With an embedding: the layer's input gradient `(E, T*B)`.
    d_embedded: DMatrix<T>,
    /// A variable-length batch: the padded columns the head reads at every real position (in
    /// the layer's packed order), each sequence's last output `(D*H, B)` and its gradient (or,
    /// for every step, the packed output's gradient `(D*H, N)`), the head's logits on the real
    /// positions `(O, N)` and their gradient, and the targets gathered in the packed order.
    gathered: Vec<usize>,
    last_out: DMatrix<T>,
    d_last_out: DMatrix<T>,
    packed_logits: DMatrix<T>,
    d_packed_logits: DMatrix<T>,
    targets: Vec<usize>,
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

/// Gives `m` the shape `(rows, cols)`, keeping its memory when it is large enough (the
/// gathered buffers of variable-length batches change width from batch to batch).
fn reuse<T: Float>(m: &mut DMatrix<T>, rows: usize, cols: usize) {
    if m.shape() != (rows, cols) {
        let mut v: Vec<T> = std::mem::replace(m, DMatrix::zeros(0, 0)).data.into();
        v.resize(rows * cols, T::zero());
        *m = DMatrix::from_vec(rows, cols, v);
    }
}

impl<T: Float> SeqWorkspace<T> {
    /// An empty workspace; the first step sizes it.
    pub fn new() -> Self {
        SeqWorkspace {
            cache: RecurrentCache::new(),
            logits: DMatrix::zeros(0, 0),
            d_logits: DMatrix::zeros(0, 0),
            d_output: DMatrix::zeros(0, 0),
            embedded: DMatrix::zeros(0, 0),
            d_embedded: DMatrix::zeros(0, 0),
            gathered: Vec::new(),
            last_out: DMatrix::zeros(0, 0),
            d_last_out: DMatrix::zeros(0, 0),
            packed_logits: DMatrix::zeros(0, 0),
            d_packed_logits: DMatrix::zeros(0, 0),
            targets: Vec::new(),
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
        Ok(SeqModel {
            embed: None,
            rnn,
            head,
        })
    }

    /// Puts `embed` before the layer: the model then reads token ids. Its vector size `E` must
    /// be the layer's input size.
    pub fn with_embedding(mut self, embed: Embedding<T>) -> Result<Self> {
        check_embedding_dim(embed.dim(), self.rnn.config())?;
        self.embed = Some(embed);
        Ok(self)
    }

    /// The settings of this model.
    pub fn config(&self) -> SeqModelConfig {
        SeqModelConfig {
            embedding: self.embed.as_ref().map(|e| EmbeddingConfig {
                vocab: e.vocab_size(),
                dim: e.dim(),
                padding_idx: e.padding_idx(),
            }),
            ..SeqModelConfig::new(self.rnn.config().clone(), self.head.output_size())
        }
    }

    /// The layer's input features `I` (`E` with an embedding).
    pub fn input_size(&self) -> usize {
        self.rnn.config().input_size
    }

    /// The vocabulary `V` of the embedding, or `None` for a model of dense input.
    pub fn vocab_size(&self) -> Option<usize> {
        self.embed.as_ref().map(Embedding::vocab_size)
    }

    /// Outputs `O`.
    pub fn output_size(&self) -> usize {
        self.head.output_size()
    }

    /// Runs the layer from `initial` (zeros when `None`) and the head on every step
    /// (`last_step_only = false`, logits `(O, T*B)`) or on the last step (`(O, B)`).
    /// Results in `ws.logits()`, `ws.output()`, `ws.final_state()`. `x` is a matrix (`&x`), a
    /// view (a window of a longer batch, `x.columns(t0 * b, n * b)`, with no copy), or, for a
    /// model with an embedding, the `T*B` token ids (`&ids`, `&ids[t0 * b..(t0 + n) * b]`).
    /// `batch` is `B` (`32`), or each sequence's length (`&lengths[..]`,
    /// [`Lengths::Each`]: a variable-length batch, see the module doc). No dropout (evaluation).
    pub fn forward<'x, 'l>(
        &self,
        x: impl Into<SeqInput<'x, T>>,
        batch: impl Into<Lengths<'l>>,
        initial: Option<&RecurrentState<T>>,
        last_step_only: bool,
        ws: &mut SeqWorkspace<T>,
    ) -> Result<()> {
        self.forward_dropout(x.into(), batch.into(), initial, last_step_only, ws, None)
            .map(|_| ())
    }

    /// [`SeqModel::forward`], with dropout masks drawn from `dropout` when the layer's `dropout`
    /// is above 0 (with 0 the generator is not touched). Returns `T`.
    pub(crate) fn forward_dropout(
        &self,
        x: SeqInput<'_, T>,
        lengths: Lengths<'_>,
        initial: Option<&RecurrentState<T>>,
        last_step_only: bool,
        ws: &mut SeqWorkspace<T>,
        dropout: Option<&mut Rng>,
    ) -> Result<usize> {
        let batch = lengths.batch();
        let SeqWorkspace {
            cache,
            logits,
            d_logits,
            embedded,
            gathered,
            last_out,
            packed_logits,
            ..
        } = ws;
        let (input, steps) = self.layer_input(x, batch, embedded)?;
        let (first, cols) = if last_step_only {
            ((steps - 1) * batch, batch)
        } else {
            (0, steps * batch)
        };
        // Before the layer runs, so that a batch whose logits cannot be held fails at once.
        ensure(logits, "SeqModel logits", self.output_size(), cols)?;
        ensure(
            d_logits,
            "SeqModel logit gradient",
            self.output_size(),
            cols,
        )?;
        let dropout = dropout.filter(|_| self.rnn.config().dropout > 0.0);
        self.rnn
            .forward_with(input, lengths, initial, cache, dropout)?;
        let out = cache.output();
        if last_step_only && matches!(lengths, Lengths::Each(_)) {
            // Each sequence's own last step.
            ensure(last_out, "SeqModel last outputs", out.nrows(), batch)?;
            for (j, c) in lengths::last_columns(lengths, steps).enumerate() {
                last_out.column_mut(j).copy_from(&out.column(c));
            }
            self.head.forward_to(&*last_out, logits)?;
        } else if matches!(lengths, Lengths::Each(_)) {
            // The head on the real positions only (`lengths.rs`), read packed from the layer;
            // the padded columns of the logits are the head's output for the zero output there,
            // its bias.
            gathered.clear();
            gathered.extend(cache.packed_columns());
            let k = gathered.len();
            reuse(packed_logits, self.output_size(), k);
            self.head
                .forward_to(&cache.packed_output(), packed_logits)?;
            for c in 0..cols {
                logits
                    .column_mut(c)
                    .copy_from(&self.head.bias.value.column(0));
            }
            for (j, &c) in gathered.iter().enumerate() {
                logits.column_mut(c).copy_from(&packed_logits.column(j));
            }
        } else {
            self.head.forward_to(&out.columns(first, cols), logits)?;
        }
        Ok(steps)
    }

    /// Writes the loss gradient into `ws.d_logits` and returns the loss, finite (the logits are,
    /// as [`Dense::forward_to`] checks; a loss that overflows is `NonFinite`).
    fn loss_to(target: Target<'_, T>, lengths: Lengths<'_>, ws: &mut SeqWorkspace<T>) -> Result<T> {
        Ok(match target {
            Target::NextToken(t) if matches!(lengths, Lengths::Each(_)) => {
                // On the real positions the forward gathered.
                lengths::gather_targets(t, &ws.gathered, ws.logits.ncols(), &mut ws.targets)?;
                let (rows, k) = ws.packed_logits.shape();
                reuse(&mut ws.d_packed_logits, rows, k);
                loss::softmax_cross_entropy_to(
                    &ws.packed_logits,
                    &ws.targets,
                    &mut ws.d_packed_logits,
                )?
            }
            Target::NextToken(t) => {
                loss::softmax_cross_entropy_to(&ws.logits, t, &mut ws.d_logits)?
            }
            Target::LastStepClass(t) => {
                loss::softmax_cross_entropy_to(&ws.logits, t, &mut ws.d_logits)?
            }
            Target::StepMse(y) if matches!(lengths, Lengths::Each(_)) => {
                lengths::masked_mse(&ws.logits, y, lengths, &mut ws.d_logits)?
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
    pub fn loss<'x, 'l>(
        &self,
        x: impl Into<SeqInput<'x, T>>,
        batch: impl Into<Lengths<'l>>,
        initial: Option<&RecurrentState<T>>,
        target: Target<'_, T>,
        ws: &mut SeqWorkspace<T>,
    ) -> Result<T> {
        let lengths = batch.into();
        self.forward(x, lengths, initial, target.objective().last_step_only(), ws)?;
        Self::loss_to(target, lengths, ws)
    }

    /// One training step's forward, loss and backward: adds the gradients of the loss into
    /// every parameter (zero them first; nothing else is changed) and returns the loss. The
    /// final state is in `ws.final_state()`. The loss is finite: when the forward or the loss
    /// overflows, the result is [`nn_core::Error::NonFinite`] and the gradients are left
    /// untouched. No dropout: see [`SeqModel::forward_backward_with_dropout`].
    pub fn forward_backward<'x, 'l>(
        &mut self,
        x: impl Into<SeqInput<'x, T>>,
        batch: impl Into<Lengths<'l>>,
        initial: Option<&RecurrentState<T>>,
        target: Target<'_, T>,
        ws: &mut SeqWorkspace<T>,
    ) -> Result<T> {
        self.forward_backward_with_dropout(x, batch, initial, target, ws, None)
    }

    /// [`SeqModel::forward_backward`] as a training pass: with `dropout = Some(rng)` and the
    /// layer's `dropout` setting `p > 0`, the masks between stacked layers are drawn from `rng`
    /// (what [`crate::Trainer`] passes: its own generator, saved in checkpoints). With `None`,
    /// or `p = 0` (the generator is then not touched), the bits of
    /// [`SeqModel::forward_backward`].
    pub fn forward_backward_with_dropout<'x, 'l>(
        &mut self,
        x: impl Into<SeqInput<'x, T>>,
        batch: impl Into<Lengths<'l>>,
        initial: Option<&RecurrentState<T>>,
        target: Target<'_, T>,
        ws: &mut SeqWorkspace<T>,
        dropout: Option<&mut Rng>,
    ) -> Result<T> {
        let x: SeqInput<'x, T> = x.into();
        let lengths: Lengths<'l> = batch.into();
        let batch = lengths.batch();
        let last_only = target.objective().last_step_only();
        let steps = self.forward_dropout(x, lengths, initial, last_only, ws, dropout)?;
        let loss = Self::loss_to(target, lengths, ws)?;
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
        if last_only && matches!(lengths, Lengths::Each(_)) {
            // Each sequence's own last step (gathered by the forward).
            let rows = ws.last_out.nrows();
            ensure(&mut ws.d_last_out, "SeqModel last outputs", rows, batch)?;
            self.head
                .backward_to(&ws.last_out, &ws.d_logits, Some(&mut ws.d_last_out))?;
            for (j, c) in lengths::last_columns(lengths, steps).enumerate() {
                ws.d_output
                    .column_mut(c)
                    .copy_from(&ws.d_last_out.column(j));
            }
        } else if matches!(lengths, Lengths::Each(_)) {
            // The head's gradient on the real positions (NextToken's loss wrote it there;
            // StepMse's is gathered from its padded gradient).
            if !matches!(target, Target::NextToken(_)) {
                let (rows, k) = ws.packed_logits.shape();
                reuse(&mut ws.d_packed_logits, rows, k);
                for (j, &c) in ws.gathered.iter().enumerate() {
                    ws.d_packed_logits
                        .column_mut(j)
                        .copy_from(&ws.d_logits.column(c));
                }
            }
            // Its gradient stays packed: the layer's backward takes it so
            // (`Recurrent::backward_packed`).
            let (rows, k) = (self.rnn.output_size(), ws.gathered.len());
            reuse(&mut ws.d_last_out, rows, k);
            self.head.backward_to(
                &ws.cache.packed_output(),
                &ws.d_packed_logits,
                Some(&mut ws.d_last_out),
            )?;
        } else {
            self.head.backward_to(
                &ws.cache.output().columns(first, cols),
                &ws.d_logits,
                Some(&mut ws.d_output.columns_mut(first, cols)),
            )?;
        }
        // All steps of a variable-length batch: the output gradient is packed.
        let packed = !last_only && matches!(lengths, Lengths::Each(_));
        let d_out = if packed { &ws.d_last_out } else { &ws.d_output };
        match (x, &mut self.embed) {
            (SeqInput::Dense(x), _) if packed => {
                self.rnn
                    .backward_packed(x, &mut ws.cache, d_out, None, None)?;
            }
            (SeqInput::Dense(x), _) => {
                self.rnn.backward(x, &mut ws.cache, d_out, None, None)?;
            }
            (SeqInput::Tokens(ids), Some(embed)) => {
                // The layer's input gradient, added into the rows the ids read.
                ensure(
                    &mut ws.d_embedded,
                    "SeqModel embedding gradient",
                    embed.dim(),
                    steps * batch,
                )?;
                let backward = if packed {
                    Recurrent::backward_packed
                } else {
                    Recurrent::backward
                };
                backward(
                    &mut self.rnn,
                    &ws.embedded,
                    &mut ws.cache,
                    d_out,
                    None,
                    Some(&mut ws.d_embedded),
                )?;
                embed.backward(ids, &ws.d_embedded)?;
            }
            // The forward refused token ids without an embedding.
            (SeqInput::Tokens(_), None) => {
                return Err(invalid("SeqModel: token ids need an embedding"));
            }
        }
        Ok(loss)
    }
}

impl<T: Float> Module<T> for SeqModel<T> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>)) {
        if let Some(e) = &self.embed {
            visit_prefixed("embed", e, f);
        }
        visit_prefixed("rnn", &self.rnn, f);
        visit_prefixed("head", &self.head, f);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>)) {
        if let Some(e) = &mut self.embed {
            visit_prefixed_mut("embed", e, f);
        }
        visit_prefixed_mut("rnn", &mut self.rnn, f);
        visit_prefixed_mut("head", &mut self.head, f);
    }
}
