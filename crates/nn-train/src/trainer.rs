//! A trainer for sequence tasks: mini-batches from a caller's [`BatchSource`], full or truncated
//! BPTT, clipping, a learning-rate schedule, validation and progress reporting.
//!
//! One training step `s = 1, 2, …` takes one batch `x` `(I, T*B)` (or, for a model with an
//! embedding, `T*B` token ids) with its targets and:
//! 1. sets the learning rate to `schedule.lr_at(base_lr, s − 1)`;
//! 2. splits the `T` steps into windows: one window of `T` (full BPTT) or windows of `k` steps
//!    (truncated BPTT; the last may be shorter). Each window runs from the previous window's final
//!    state, copied (the gradient stops at the window edge: no `d h_n` flows back), and for
//!    [`Objective::NextToken`] and [`Objective::StepMse`] each window is one update:
//!    `zero_grad → forward → loss → backward → check → clip → optimizer step`.
//!    For the last-step objectives only the last window has a loss; earlier windows only run
//!    forward to carry the state, and the step makes one update;
//! 3. with `carry_state`, the final state becomes the next step's initial state (a stream of
//!    consecutive chunks, as in char-rnn); otherwise each step starts from zeros.
//!
//! The step's loss is the mean over all its loss terms (for NextToken, the mean cross-entropy
//! over all `T*B` targets, whatever the windows; for StepMse the mean of the windows' mean
//! squared errors weighted by their steps, the mean over all `O·T·B` values). A step is all or nothing: the whole batch —
//! shapes, every window's inputs (finite) and targets (in range; values of the right shape and
//! finite) — is checked before the first update, and when a later truncated-BPTT window fails
//! anyway (an overflow), the earlier windows' updates are undone from a copy of the parameters
//! and optimizer taken before the first. A NaN or infinite input, loss or gradient stops
//! training with [`Error::NonFiniteInput`], [`Error::NonFiniteLoss`] or [`Error::NonFiniteGrad`]
//! naming the step (a forward or loss that overflows, with `nn_core`'s `NonFinite`), and the
//! parameters, the optimizer (state and step count) and the trainer's step count stay those of
//! the last good step. An update that would overflow from finite gradients is
//! [`Error::NonFiniteUpdate`]: the optimizer refuses it with nothing changed
//! ([`Optimizer::step`] is all or nothing), and with truncated BPTT the earlier windows'
//! updates are undone from that copy, so here too the step leaves everything as it was.
//!
//! Class targets may be [`IGNORE_INDEX`] (padding): the loss is the mean over the other
//! positions, a truncated-BPTT window with none only carries the state, and a batch with none
//! at all is [`nn_core::Error::AllTargetsIgnored`]. Training passes draw the dropout masks of a
//! layer with `dropout > 0` from the trainer's [`Rng`] (after the batch source's draws);
//! validation runs without dropout.
//!
//! The trainer owns the model, the optimizer and the [`Rng`] the batch source draws from, so a
//! checkpoint ([`Trainer::save_checkpoint`]) captures everything a resumed run needs to continue
//! bit for bit.

mod check;

use crate::clip::{clip_grad_norm, clip_grad_value, first_non_finite_grad, grad_norm};
use crate::error::{Error, Result, invalid};
use crate::optim::Optimizer;
use crate::schedule::LrSchedule;
use crate::seq_model::{Objective, SeqInput, SeqModel, SeqWorkspace, Target};
use nalgebra::DMatrix;
use nn_core::loss::IGNORE_INDEX;
use nn_core::{Float, Module, Rng};
use nn_recurrent::{Lengths, RecurrentState};
use std::time::Instant;

/// How far back gradients flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Bptt {
    /// Through the whole batch of `T` steps.
    #[default]
    Full,
    /// Through windows of `window` steps, the state carried (detached) from window to window.
    Truncated {
        /// Steps per window (> 0).
        window: usize,
    },
}

/// Gradient clipping applied before each update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clip {
    /// Clamp every gradient element into `[-v, v]`.
    Value(f64),
    /// Rescale all gradients so their joint L2 norm is at most `max_norm`.
    Norm(f64),
}

/// Settings of a [`Trainer`]: `TrainerConfig::new(Objective::NextToken).with_clip(Clip::Norm(5.0))`.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerConfig {
    /// What is minimized.
    pub objective: Objective,
    /// Full or truncated BPTT (default full).
    pub bptt: Bptt,
    /// Clipping (default none).
    pub clip: Option<Clip>,
    /// Learning-rate schedule, stepped once per training step (default constant).
    pub schedule: LrSchedule,
    /// Run the validation closure every this many steps (0: never; the default).
    pub validate_every: u64,
    /// Carry the final state of a step into the next step (default false: start from zeros).
    pub carry_state: bool,
}

impl TrainerConfig {
    /// Full BPTT, no clipping, constant rate, no validation, no state carried between steps.
    pub fn new(objective: Objective) -> Self {
        TrainerConfig {
            objective,
            bptt: Bptt::Full,
            clip: None,
            schedule: LrSchedule::Constant,
            validate_every: 0,
            carry_state: false,
        }
    }
    /// Sets full or truncated BPTT.
    pub fn with_bptt(mut self, bptt: Bptt) -> Self {
        self.bptt = bptt;
        self
    }
    /// Sets the clipping.
    pub fn with_clip(mut self, clip: Clip) -> Self {
        self.clip = Some(clip);
        self
    }
    /// Sets the learning-rate schedule.
    pub fn with_schedule(mut self, schedule: LrSchedule) -> Self {
        self.schedule = schedule;
        self
    }
    /// Validates every `n` steps (0: never).
    pub fn with_validate_every(mut self, n: u64) -> Self {
        self.validate_every = n;
        self
    }
    /// Carries the final state across steps.
    pub fn with_carry_state(mut self, carry: bool) -> Self {
        self.carry_state = carry;
        self
    }
}

/// Targets of a batch, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets<T: Float> {
    /// Class indices: `T*B` for NextToken (index `t*B + b`), `B` for LastStepClass; a position
    /// without a loss (padding) holds [`IGNORE_INDEX`].
    Classes(Vec<usize>),
    /// `(O, B)` values for LastStepMse, `(O, T*B)` for StepMse (column `t*B + b`).
    Values(DMatrix<T>),
}

/// One mini-batch, filled in place by a [`BatchSource`] (so its buffers are reused).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T: Float> {
    /// `(I, T*B)`, column `t*B + b`; empty (no columns) for a model with an embedding.
    pub x: DMatrix<T>,
    /// For a model with an embedding: `T*B` token ids, index `t*B + b` (empty otherwise).
    pub ids: Vec<usize>,
    /// `B`.
    pub batch: usize,
    /// Each sequence's length, for a variable-length batch (`B` of them, each in `1..=T`;
    /// PyTorch's packed sequences, see [`nn_recurrent::Lengths`]): the steps past a sequence's
    /// end are padding, never read, and have no loss. Empty: every sequence has `T` steps.
    /// Variable-length batches train with full BPTT.
    pub lengths: Vec<usize>,
    /// The targets.
    pub targets: Targets<T>,
}

impl<T: Float> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            x: DMatrix::zeros(0, 0),
            ids: Vec::new(),
            batch: 0,
            lengths: Vec::new(),
            targets: Targets::Classes(Vec::new()),
        }
    }
}

impl<T: Float> Batch<T> {
    /// Number of time steps `T`.
    pub fn steps(&self) -> usize {
        self.columns().checked_div(self.batch).unwrap_or(0)
    }

    /// `T*B`: the ids when there are any, else the columns of `x`.
    pub fn columns(&self) -> usize {
        if self.ids.is_empty() {
            self.x.ncols()
        } else {
            self.ids.len()
        }
    }
}

/// Where mini-batches come from.
pub trait BatchSource<T: Float> {
    /// Fills `batch` for training step `step` (1-based), drawing any randomness from `rng`
    /// (the trainer's, which checkpoints save, so a resumed run draws the same batches).
    fn fill(&mut self, step: u64, rng: &mut Rng, batch: &mut Batch<T>) -> Result<()>;
}

/// A [`BatchSource`] from a closure; see [`batch_fn`].
#[derive(Debug)]
pub struct FnSource<F>(pub F);

impl<T: Float, F: FnMut(u64, &mut Rng, &mut Batch<T>) -> Result<()>> BatchSource<T>
    for FnSource<F>
{
    fn fill(&mut self, step: u64, rng: &mut Rng, batch: &mut Batch<T>) -> Result<()> {
        (self.0)(step, rng, batch)
    }
}

/// Wraps a closure `|step, rng, batch| -> Result<()>` as a [`BatchSource`].
pub fn batch_fn<T: Float, F: FnMut(u64, &mut Rng, &mut Batch<T>) -> Result<()>>(
    f: F,
) -> FnSource<F> {
    FnSource(f)
}

/// A validation closure: given the model, returns a loss.
pub type Validate<'a, T> = &'a mut dyn FnMut(&SeqModel<T>) -> Result<f64>;

/// What one training step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step (1-based).
    pub step: u64,
    /// Its loss (mean over its loss terms).
    pub loss: f64,
    /// The largest gradient norm before clipping over its updates.
    pub grad_norm: f64,
    /// The learning rate used.
    pub lr: f64,
    /// Input columns processed (`T*B`).
    pub tokens: usize,
    /// Optimizer updates made (windows with a loss).
    pub updates: usize,
    /// Wall time of the step, seconds.
    pub seconds: f64,
}

/// What the progress callback receives after every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// The step just done (1-based, counted over the trainer's life).
    pub step: u64,
    /// The step this run ends at.
    pub last_step: u64,
    /// The step's report.
    pub report: StepReport,
    /// Tokens per second over this run so far.
    pub tokens_per_sec: f64,
    /// The validation loss, when validation ran after this step.
    pub validation: Option<f64>,
}

/// The losses of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainReport {
    /// Each step's loss.
    pub losses: Vec<f64>,
    /// `(step, validation loss)`.
    pub validations: Vec<(u64, f64)>,
}

/// Owns a model, its optimizer, the RNG batches are drawn from, and the step's buffers.
#[derive(Debug)]
pub struct Trainer<T: Float> {
    /// The model being trained.
    pub model: SeqModel<T>,
    /// Its optimizer (its configured lr is the schedule's base rate).
    pub optimizer: Optimizer<T>,
    /// The generator the batch source draws from.
    pub rng: Rng,
    pub(crate) config: TrainerConfig,
    pub(crate) step: u64,
    batch: Batch<T>,
    /// `(I, k*B)`, the current truncated-BPTT window.
    window_x: DMatrix<T>,
    /// A truncated-BPTT window's `StepMse` targets, copied out of the batch's.
    window_y: DMatrix<T>,
    /// Workspaces for full-length windows and for the shorter last window.
    ws: [SeqWorkspace<T>; 2],
    /// The state carried between windows (and steps, with `carry_state`).
    pub(crate) state: Option<RecurrentState<T>>,
    pub(crate) state_valid: bool,
    /// The parameters and optimizer before a step of several updates, to undo it on error.
    undo_params: Vec<DMatrix<T>>,
    undo_optimizer: Option<Optimizer<T>>,
}

/// Copies the value of every parameter of `model` into `saved`, reusing its buffers.
fn save_params<T: Float>(model: &SeqModel<T>, saved: &mut Vec<DMatrix<T>>) {
    let mut i = 0;
    model.visit(&mut |_, p| {
        match saved.get_mut(i) {
            Some(m) if m.shape() == p.value.shape() => m.copy_from(&p.value),
            Some(m) => *m = p.value.clone(),
            None => saved.push(p.value.clone()),
        }
        i += 1;
    });
    saved.truncate(i);
}

/// Puts back the values [`save_params`] copied.
fn restore_params<T: Float>(model: &mut SeqModel<T>, saved: &[DMatrix<T>]) {
    let mut i = 0;
    model.visit_mut(&mut |_, p| {
        p.value.copy_from(&saved[i]);
        i += 1;
    });
}

fn copy_state<T: Float>(dst: &mut Option<RecurrentState<T>>, src: &RecurrentState<T>) {
    match dst {
        Some(d)
            if d.h.shape() == src.h.shape()
                && d.c.as_ref().map(|c| c.shape()) == src.c.as_ref().map(|c| c.shape()) =>
        {
            d.h.copy_from(&src.h);
            if let (Some(c), Some(sc)) = (d.c.as_mut(), src.c.as_ref()) {
                c.copy_from(sc);
            }
        }
        _ => *dst = Some(src.clone()),
    }
}

impl<T: Float> Trainer<T> {
    /// A trainer at step 0. Bidirectional layers cannot carry state (truncated BPTT or
    /// `carry_state`), and a truncated window of 0 steps is an error.
    pub fn new(
        model: SeqModel<T>,
        optimizer: Optimizer<T>,
        rng: Rng,
        config: TrainerConfig,
    ) -> Result<Self> {
        config.schedule.validate()?;
        let carries = config.carry_state || matches!(config.bptt, Bptt::Truncated { .. });
        if carries && model.rnn.config().bidirectional {
            return Err(invalid(
                "truncated BPTT and carried state need a unidirectional layer",
            ));
        }
        if config.bptt == (Bptt::Truncated { window: 0 }) {
            return Err(invalid("truncated BPTT window must be at least 1 step"));
        }
        match config.clip {
            Some(Clip::Value(v) | Clip::Norm(v)) if v.is_nan() || v <= 0.0 => {
                return Err(invalid(format!("clip threshold must be positive, got {v}")));
            }
            _ => {}
        }
        Ok(Trainer {
            model,
            optimizer,
            rng,
            config,
            step: 0,
            batch: Batch::default(),
            window_x: DMatrix::zeros(0, 0),
            window_y: DMatrix::zeros(0, 0),
            ws: [SeqWorkspace::new(), SeqWorkspace::new()],
            state: None,
            state_valid: false,
            undo_params: Vec::new(),
            undo_optimizer: None,
        })
    }

    /// Training steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The state carried into the next step (with `carry_state`), if any.
    pub fn carried_state(&self) -> Option<&RecurrentState<T>> {
        self.state.as_ref().filter(|_| self.state_valid)
    }

    /// Forgets the carried state: the next step starts from zeros.
    pub fn reset_state(&mut self) {
        self.state_valid = false;
    }

    /// Runs one training step with a batch from `source`. All or nothing: on error the
    /// parameters, the optimizer (state, learning rate and step count) and the step counter are
    /// those from before the step, also when a later truncated-BPTT window fails after earlier
    /// ones made their updates; the carried state is dropped (the next step starts from zeros),
    /// and what the batch source and the dropout masks drew from the trainer's [`Rng`] stays drawn.
    pub fn train_step<S: BatchSource<T> + ?Sized>(&mut self, source: &mut S) -> Result<StepReport> {
        let result = self.try_step(source);
        if result.is_err() {
            self.state_valid = false;
        }
        result
    }

    fn try_step<S: BatchSource<T> + ?Sized>(&mut self, source: &mut S) -> Result<StepReport> {
        let started = Instant::now();
        let step = self
            .step
            .checked_add(1)
            .ok_or_else(|| invalid(format!("step count {} cannot grow", self.step)))?;
        source.fill(step, &mut self.rng, &mut self.batch)?;
        self.check_batch(step)?;
        let lr = self
            .config
            .schedule
            .lr_at(self.optimizer.config().lr(), step - 1);
        self.optimizer.set_lr(lr);

        let Trainer {
            model,
            optimizer,
            rng,
            config,
            batch,
            window_x,
            window_y,
            ws,
            state,
            state_valid,
            undo_params,
            undo_optimizer,
            ..
        } = self;
        let (b, steps) = (batch.batch, batch.steps());
        let window = match config.bptt {
            Bptt::Full => steps,
            Bptt::Truncated { window } => window.min(steps),
        };
        let dims = model.rnn.config();
        let state_cols = dims.num_layers * if dims.bidirectional { 2 } else { 1 } * b;
        let mut carry = config.carry_state
            && *state_valid
            && state.as_ref().is_some_and(|s| s.h.ncols() == state_cols);
        let objective = config.objective;
        // With more than one update (NextToken in truncated windows), a later window whose
        // forward, loss or gradient fails must not leave the earlier windows' updates: the
        // parameters and the optimizer are copied first (into buffers kept between steps) and
        // put back on error. A copy, so valid steps keep their bits.
        let guard = !objective.last_step_only() && window < steps;
        if guard {
            save_params(model, undo_params);
            match undo_optimizer {
                Some(u) => u.copy_from(optimizer),
                None => *undo_optimizer = Some(optimizer.clone()),
            }
        }
        let (mut loss_sum, mut weight_sum, mut max_norm, mut updates) = (0.0, 0.0, 0.0f64, 0);
        let lengths = if batch.lengths.is_empty() {
            Lengths::Full(b)
        } else {
            Lengths::Each(&batch.lengths)
        };
        let mut windows = || -> Result<()> {
            let mut t0 = 0;
            while t0 < steps {
                let n = window.min(steps - t0);
                let last = t0 + n == steps;
                let x: SeqInput<'_, T> = if !batch.ids.is_empty() {
                    SeqInput::Tokens(&batch.ids[t0 * b..(t0 + n) * b])
                } else if n == steps {
                    (&batch.x).into()
                } else {
                    if window_x.shape() != (batch.x.nrows(), n * b) {
                        *window_x = DMatrix::zeros(batch.x.nrows(), n * b);
                    }
                    window_x.copy_from(&batch.x.columns(t0 * b, n * b));
                    (&*window_x).into()
                };
                let w = &mut ws[usize::from(n != window)];
                let initial = if carry { state.as_ref() } else { None };
                // A NextToken window whose targets are all IGNORE_INDEX has no loss term.
                let no_loss = match (&batch.targets, objective) {
                    (Targets::Classes(t), Objective::NextToken) => {
                        t[t0 * b..(t0 + n) * b].iter().all(|&c| c == IGNORE_INDEX)
                    }
                    _ => false,
                };
                if (objective.last_step_only() && !last) || no_loss {
                    // Forward only, to carry the state (a training pass: dropout applies).
                    model.forward_dropout(x, lengths, initial, true, w, Some(&mut *rng))?;
                } else {
                    let target = match (&batch.targets, objective) {
                        (Targets::Classes(t), Objective::NextToken) => {
                            Target::NextToken(&t[t0 * b..(t0 + n) * b])
                        }
                        (Targets::Classes(t), _) => Target::LastStepClass(t),
                        (Targets::Values(y), Objective::StepMse) if n == steps => {
                            Target::StepMse(y)
                        }
                        (Targets::Values(y), Objective::StepMse) => {
                            if window_y.shape() != (y.nrows(), n * b) {
                                *window_y = DMatrix::zeros(y.nrows(), n * b);
                            }
                            window_y.copy_from(&y.columns(t0 * b, n * b));
                            Target::StepMse(&*window_y)
                        }
                        (Targets::Values(y), _) => Target::LastStepMse(y),
                    };
                    model.zero_grad();
                    let loss = model.forward_backward_with_dropout(
                        x,
                        lengths,
                        initial,
                        target,
                        w,
                        Some(&mut *rng),
                    )?;
                    if !loss.finite() {
                        return Err(Error::NonFiniteLoss {
                            step,
                            loss: loss.as_f64(),
                        });
                    }
                    let norm = match config.clip {
                        Some(Clip::Norm(m)) => clip_grad_norm(model, m),
                        _ => grad_norm(model),
                    };
                    if !norm.is_finite() {
                        return Err(Error::NonFiniteGrad {
                            step,
                            param: first_non_finite_grad(model).unwrap_or_default(),
                        });
                    }
                    if let Some(Clip::Value(v)) = config.clip {
                        clip_grad_value(model, v);
                    }
                    optimizer.step(model)?;
                    // The window's loss terms over B (n when no target is ignored).
                    let weight = match (target, objective.last_step_only()) {
                        (Target::NextToken(t), _) => {
                            let kept = t.iter().filter(|&&c| c != IGNORE_INDEX).count();
                            kept as f64 / b as f64
                        }
                        (_, false) => n as f64,
                        (_, true) => 1.0,
                    };
                    loss_sum += loss.as_f64() * weight;
                    weight_sum += weight;
                    max_norm = max_norm.max(norm);
                    updates += 1;
                }
                copy_state(state, w.final_state());
                carry = true;
                t0 += n;
            }
            Ok(())
        };
        if let Err(e) = windows() {
            if let (true, Some(u)) = (guard, undo_optimizer.as_ref()) {
                restore_params(model, undo_params);
                optimizer.copy_from(u);
            }
            return Err(e);
        }
        *state_valid = true;
        self.step = step;
        Ok(StepReport {
            step,
            loss: loss_sum / weight_sum,
            grad_norm: max_norm,
            lr,
            tokens: steps * b,
            updates,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Runs `steps` training steps, validating every `validate_every` steps with `validate`
    /// (given the model; returns a loss) and calling `progress` after every step.
    /// Stops at the first error (see the module docs for what stays in place). `steps` is capped
    /// at what the step counter can still count, so `run(u64::MAX, ..)` trains until an error
    /// or until the counter is full. A `validate` with no interval (`validate_every` 0, the
    /// default) is an error, not a validation that never runs.
    pub fn run<S: BatchSource<T> + ?Sized>(
        &mut self,
        steps: u64,
        source: &mut S,
        mut validate: Option<Validate<'_, T>>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<TrainReport> {
        if validate.is_some() && self.config.validate_every == 0 {
            return Err(invalid(
                "Trainer::run: a validation was given but validate_every is 0 \
                 (set TrainerConfig::with_validate_every)",
            ));
        }
        let mut report = TrainReport::default();
        let last_step = self.step.saturating_add(steps);
        let (mut tokens, mut seconds) = (0usize, 0.0f64);
        for _ in self.step..last_step {
            let r = self.train_step(source)?;
            tokens = tokens.saturating_add(r.tokens);
            seconds += r.seconds;
            report.losses.push(r.loss);
            let mut validation = None;
            let every = self.config.validate_every;
            if let Some(v) = validate.as_deref_mut()
                && every > 0
                && r.step % every == 0
            {
                let loss = v(&self.model)?;
                report.validations.push((r.step, loss));
                validation = Some(loss);
            }
            progress(&Progress {
                step: r.step,
                last_step,
                report: r,
                tokens_per_sec: if seconds > 0.0 {
                    tokens as f64 / seconds
                } else {
                    0.0
                },
                validation,
            });
        }
        Ok(report)
    }
}
