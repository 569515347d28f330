//! Optimizers with PyTorch's exact update rules, for any [`Module`] through its parameter visitor.
//!
//! [`Optimizer`] holds one [`OptimizerConfig`] (SGD, Adagrad, RMSprop, Adam or AdamW; the math of
//! each is in its own file), the current learning rate (which a schedule may change), the step
//! count `t` and one [`ParamState`] per parameter, in the model's visiting order. The state is
//! created at the first [`Optimizer::step`] from the parameters' names and shapes, and every
//! later step checks that the model still has exactly those parameters.
//!
//! A step is all or nothing. It computes every parameter's new value and state into a second
//! set of buffers shaped like them (made at the first step, reused after), checking on the way
//! that each new value is finite; only when all are does it swap the new buffers in (no copy),
//! so a step that would make any value NaN or infinite leaves the parameters, the gradients, the
//! state and the step count exactly as they were. Valid steps compute the same values as an
//! update in place, bit for bit.
//!
//! Per-parameter state is exported under `<prefix>.<param name>.<buffer>` with PyTorch's buffer
//! names (`momentum_buffer`, `sum`, `square_avg`, `grad_avg`, `exp_avg`, `exp_avg_sq`) and the
//! parameter's PyTorch shape; `<prefix>.step`, `<prefix>.lr` and `<prefix>.hparams` hold the step
//! count, the current learning rate and the exact settings.

mod adagrad;
mod adam;
mod rmsprop;
mod sgd;

pub use adagrad::AdagradConfig;
pub use adam::AdamConfig;
pub use rmsprop::RmsPropConfig;
pub use sgd::SgdConfig;

mod config;

pub use config::OptimizerConfig;

use crate::error::{Error, Result, invalid};
use nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Float, Module, Param};

/// The optimizer's state for one parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamState<T: Float> {
    /// The parameter's name when the state was made.
    pub name: String,
    /// The parameter's PyTorch shape (`[n]` or `[rows, cols]`).
    pub shape: Vec<usize>,
    /// One matrix per [`OptimizerConfig::buffer_names`], shaped like the parameter.
    pub buffers: Vec<DMatrix<T>>,
}

/// An optimizer: settings, current learning rate, step count and per-parameter state.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer<T: Float> {
    config: OptimizerConfig,
    lr: f64,
    step: u64,
    state: Vec<ParamState<T>>,
    scratch: Scratch<T>,
}

/// Where a step writes the new values before it keeps them: per parameter, a value and one
/// matrix per state buffer, shaped like them. Holds nothing of the optimizer's meaning, so a
/// clone starts empty and every two compare equal.
#[derive(Debug, Default)]
struct Scratch<T: Float>(Vec<NewValues<T>>);

#[derive(Debug)]
struct NewValues<T: Float> {
    value: DMatrix<T>,
    buffers: Vec<DMatrix<T>>,
}

impl<T: Float> Clone for Scratch<T> {
    fn clone(&self) -> Self {
        Scratch(Vec::new())
    }
}

impl<T: Float> PartialEq for Scratch<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T: Float> Scratch<T> {
    /// Makes one [`NewValues`] per parameter of `state`, shaped like it, unless they already
    /// are (no allocation then). A size that cannot be allocated is [`nn_core::Error::TooLarge`].
    fn fit(&mut self, state: &[ParamState<T>]) -> Result<()> {
        let fits = |n: &NewValues<T>, s: &ParamState<T>| {
            n.buffers.len() == s.buffers.len()
                && n.value.shape() == dims(&s.shape)
                && n.buffers.iter().all(|b| b.shape() == dims(&s.shape))
        };
        if self.0.len() == state.len() && self.0.iter().zip(state).all(|(n, s)| fits(n, s)) {
            return Ok(());
        }
        let mut fresh = Vec::new();
        for s in state {
            let (r, c) = dims(&s.shape);
            let zeros = || nn_core::try_zeros("optimizer step buffer", r, c);
            fresh.push(NewValues {
                value: zeros()?,
                buffers: s
                    .buffers
                    .iter()
                    .map(|_| zeros())
                    .collect::<nn_core::Result<_>>()?,
            });
        }
        self.0 = fresh;
        Ok(())
    }
}

/// The `(rows, cols)` of a parameter of PyTorch shape `shape` (`[n]` is an `(n, 1)` column).
fn dims(shape: &[usize]) -> (usize, usize) {
    match shape {
        [n] => (*n, 1),
        [r, c] => (*r, *c),
        _ => (0, 0),
    }
}

fn describe<T: Float>(name: &str, p: &Param<T>) -> String {
    format!("{name} {:?}", p.torch_shape())
}

impl<T: Float> Optimizer<T> {
    /// A new optimizer (no state yet; the first step creates it). Invalid settings, and settings
    /// unusable in `T` ([`OptimizerConfig::validate_for`]), are errors.
    pub fn new(config: impl Into<OptimizerConfig>) -> Result<Self> {
        let config = config.into();
        config.validate_for::<T>()?;
        Ok(Optimizer {
            lr: config.lr(),
            config,
            step: 0,
            state: Vec::new(),
            scratch: Scratch::default(),
        })
    }

    /// The settings (with the base learning rate).
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// The learning rate the next step uses.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the following steps (what a schedule does).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Steps taken so far (`t` of the last step).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The per-parameter state in visiting order (empty before the first step).
    pub fn state(&self) -> &[ParamState<T>] {
        &self.state
    }

    /// Makes `self` equal to `other`, reusing `self`'s buffers where the shapes allow (how the
    /// trainer keeps a copy to undo a step without allocating every step). The step buffers
    /// are not copied: they hold nothing between steps.
    pub(crate) fn copy_from(&mut self, other: &Optimizer<T>) {
        self.config = other.config;
        self.lr = other.lr;
        self.step = other.step;
        self.state.truncate(other.state.len());
        for (i, s) in other.state.iter().enumerate() {
            match self.state.get_mut(i) {
                Some(d)
                    if d.buffers.len() == s.buffers.len()
                        && d.buffers
                            .iter()
                            .zip(&s.buffers)
                            .all(|(a, b)| a.shape() == b.shape()) =>
                {
                    for (a, b) in d.buffers.iter_mut().zip(&s.buffers) {
                        a.copy_from(b);
                    }
                    d.name.clone_from(&s.name);
                    d.shape.clone_from(&s.shape);
                }
                Some(d) => *d = s.clone(),
                None => self.state.push(s.clone()),
            }
        }
    }

    /// Forgets the state and the step count (as a freshly built optimizer); keeps the settings and lr.
    pub fn reset(&mut self) {
        self.step = 0;
        self.state.clear();
    }

    fn init_state<M: Module<T> + ?Sized>(&mut self, model: &M) {
        let n = self.config.buffer_names().len();
        let init: T = T::cast(self.config.initial_buffer_value());
        let state = &mut self.state;
        model.visit(&mut |name, p| {
            let (r, c) = p.value.shape();
            state.push(ParamState {
                name: name.to_string(),
                shape: p.torch_shape(),
                buffers: (0..n).map(|_| DMatrix::from_element(r, c, init)).collect(),
            });
        });
    }

    /// Checks that `model` has the parameters the state was made for, in order (no allocation
    /// unless there is a mismatch).
    pub fn check_model<M: Module<T> + ?Sized>(&self, model: &M) -> Result<()> {
        let mut i = 0;
        let mut err = None;
        model.visit(&mut |name, p| {
            if err.is_none() {
                err = mismatch(i, self.state.get(i), name, p);
            }
            i += 1;
        });
        match err {
            Some(e) => Err(e),
            None => missing(i, &self.state),
        }
    }

    /// One update of every parameter of `model` from its gradient (the gradients are read, not
    /// cleared). The first step creates the state; later steps check it still fits the model.
    ///
    /// All or nothing: a step that would make any parameter or state value NaN or infinite (an
    /// overflow; settings that cannot work are refused earlier, by [`Optimizer::new`] and when
    /// state is loaded) is [`Error::NonFiniteUpdate`] naming the optimizer and the first such
    /// parameter, and then the parameters, the gradients, the state and the step count are
    /// exactly as they were. So is every other error.
    pub fn step<M: Module<T> + ?Sized>(&mut self, model: &mut M) -> Result<()> {
        // A step count restored from a file may be anything; running out is an error, not a wrap.
        let t = self
            .step
            .checked_add(1)
            .ok_or_else(|| invalid(format!("optimizer step count {} cannot grow", self.step)))?;
        let fresh = self.state.is_empty();
        if fresh {
            self.init_state(model);
        }
        if let Err(e) = self.scratch.fit(&self.state) {
            if fresh {
                self.state.clear();
            }
            return Err(e);
        }
        let (lr, config) = (self.lr, self.config);
        // Every new value into the step buffers, the parameters and state only read; on the
        // way, the check that the state still fits the model ([`Optimizer::check_model`]).
        let mut bad = None;
        let mut i = 0;
        let (state, new) = (&self.state, &mut self.scratch.0);
        model.visit(&mut |name, p| {
            if bad.is_some() {
                return;
            }
            bad = mismatch(i, state.get(i), name, p);
            if let (None, Some(s), Some(n)) = (&bad, state.get(i), new.get_mut(i)) {
                if p.grad.shape() != p.value.shape() {
                    bad = Some(invalid(format!(
                        "{}: the gradient of `{name}` has shape {:?}, its value {:?}",
                        config.kind(),
                        p.grad.shape(),
                        p.value.shape()
                    )));
                } else if !config.apply(lr, t, p, &s.buffers, &mut n.value, &mut n.buffers) {
                    bad = Some(Error::NonFiniteUpdate {
                        optimizer: config.kind(),
                        step: t,
                        param: name.to_string(),
                    });
                }
            }
            i += 1;
        });
        let checked = match bad {
            Some(e) => Err(e),
            None => missing(i, state),
        };
        if let Err(e) = checked {
            if fresh {
                self.state.clear();
            }
            return Err(e);
        }
        // All finite: the new buffers take the old ones' places (the old become the next
        // step's buffers).
        let mut i = 0;
        let state = &mut self.state;
        model.visit_mut(&mut |_, p| {
            if let (Some(s), Some(n)) = (state.get_mut(i), new.get_mut(i)) {
                std::mem::swap(&mut p.value, &mut n.value);
                for (old, new) in s.buffers.iter_mut().zip(&mut n.buffers) {
                    std::mem::swap(old, new);
                }
            }
            i += 1;
        });
        self.step = t;
        Ok(())
    }

    /// Adds the state to `out`: `<prefix>.<param>.<buffer>` (PyTorch shapes), `<prefix>.step`
    /// (U64), `<prefix>.lr` and `<prefix>.hparams` (F64, exact).
    pub fn write_state(&self, out: &mut TensorWriter, prefix: &str) {
        let names = self.config.buffer_names();
        for s in &self.state {
            for (b, m) in names.iter().zip(&s.buffers) {
                out.matrix(&format!("{prefix}.{}.{b}", s.name), m, s.shape.len() == 1);
            }
        }
        out.u64s(&format!("{prefix}.step"), &[self.step]);
        out.values::<f64>(&format!("{prefix}.lr"), &[1], &[self.lr]);
        let hp = self.config.to_values();
        out.values::<f64>(&format!("{prefix}.hparams"), &[hp.len()], &hp);
    }

    /// Reads an optimizer of kind `kind` written by [`Optimizer::write_state`] for `model`'s
    /// parameters. The file's settings and learning rate replace this optimizer's (as PyTorch's
    /// `load_state_dict` does); a different kind, settings unusable in `T`
    /// ([`OptimizerConfig::validate_for`]), a state value that is not finite, and a negative
    /// second moment (`exp_avg_sq`, `sum`, `square_avg`, whose square root a step takes) are
    /// errors. Nothing changes on error.
    pub fn read_state<M: Module<T> + ?Sized>(
        &mut self,
        file: &TensorFile,
        prefix: &str,
        model: &M,
    ) -> Result<()> {
        let hp = file.values::<f64>(&format!("{prefix}.hparams"))?;
        let config = OptimizerConfig::from_values(self.config.kind(), &hp)?;
        config.validate_for::<T>()?;
        let lr = file.values::<f64>(&format!("{prefix}.lr"))?;
        let [lr] = lr[..] else {
            return Err(invalid(format!("{prefix}.lr must hold one value")));
        };
        if !(lr.is_finite() && lr >= 0.0 && T::cast(lr).finite()) {
            return Err(invalid(format!("{prefix}.lr is {lr}, not a learning rate")));
        }
        let step = file.integers(&format!("{prefix}.step"))?;
        let [step] = step[..] else {
            return Err(invalid(format!("{prefix}.step must hold one value")));
        };
        let step = u64::try_from(step).map_err(|_| invalid(format!("{prefix}.step is {step}")))?;
        let mut state = Vec::new();
        if step > 0 {
            let mut err = None;
            model.visit(&mut |name, p| {
                if err.is_some() {
                    return;
                }
                let shape = p.torch_shape();
                let mut buffers = Vec::new();
                for b in config.buffer_names() {
                    let key = format!("{prefix}.{name}.{b}");
                    match file.matrix::<T>(&key, &shape) {
                        Ok(m) => match check_buffer(&key, b, &m) {
                            Ok(()) => buffers.push(m),
                            Err(e) => {
                                err = Some(e);
                                return;
                            }
                        },
                        Err(e) => {
                            err = Some(e.into());
                            return;
                        }
                    }
                }
                state.push(ParamState {
                    name: name.to_string(),
                    shape,
                    buffers,
                });
            });
            if let Some(e) = err {
                return Err(e);
            }
        }
        *self = Optimizer {
            config,
            lr,
            step,
            state,
            scratch: std::mem::take(&mut self.scratch),
        };
        Ok(())
    }
}

/// A state buffer read from a file: finite, and not negative when it is a second moment (a step
/// takes its square root).
fn check_buffer<T: Float>(key: &str, buffer: &str, m: &DMatrix<T>) -> Result<()> {
    let second_moment = matches!(buffer, "exp_avg_sq" | "sum" | "square_avg");
    let bad = |v: T| !v.finite() || (second_moment && v < T::zero());
    match m.iter().position(|&v| bad(v)) {
        None => Ok(()),
        Some(i) => Err(invalid(format!(
            "`{key}` holds {} at element {i}: optimizer state must be finite{}",
            m.as_slice()[i].as_f64(),
            if second_moment {
                ", and this second moment not negative"
            } else {
                ""
            }
        ))),
    }
}

/// The [`Error::StateMismatch`] of parameter `index` of a model, `name` `p`, against the state
/// made for it (`None` when it fits).
fn mismatch<T: Float>(
    index: usize,
    state: Option<&ParamState<T>>,
    name: &str,
    p: &Param<T>,
) -> Option<Error> {
    match state {
        Some(s) if s.name == name && shape_eq(&s.shape, p) => None,
        Some(s) => Some(Error::StateMismatch {
            index,
            expected: format!("{} {:?}", s.name, s.shape),
            got: describe(name, p),
        }),
        None => Some(Error::StateMismatch {
            index,
            expected: "nothing".into(),
            got: describe(name, p),
        }),
    }
}

/// The [`Error::StateMismatch`] of a model with `seen` parameters, when the state has more.
fn missing<T: Float>(seen: usize, state: &[ParamState<T>]) -> Result<()> {
    match state.get(seen) {
        None => Ok(()),
        Some(s) => Err(Error::StateMismatch {
            index: seen,
            expected: format!("{} {:?}", s.name, s.shape),
            got: "nothing".into(),
        }),
    }
}

fn shape_eq<T: Float>(shape: &[usize], p: &Param<T>) -> bool {
    match shape {
        [n] => p.is_vector() && p.value.nrows() == *n,
        [r, c] => !p.is_vector() && p.value.shape() == (*r, *c),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
