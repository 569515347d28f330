//! Optimizers with PyTorch's exact update rules, for any [`Module`] through its parameter visitor.
//!
//! [`Optimizer`] holds one [`OptimizerConfig`] (SGD, Adagrad, RMSprop, Adam or AdamW; the math of
//! each is in its own file), the current learning rate (which a schedule may change), the step
//! count `t` and one [`ParamState`] per parameter, in the model's visiting order. The state is
//! created at the first [`Optimizer::step`] from the parameters' names and shapes, and every
//! later step checks that the model still has exactly those parameters.
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

use crate::error::{Error, Result, invalid};
use nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Float, Module, Param};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// PyTorch constructor switches this crate does not implement: accepted only when off.
const UNIMPLEMENTED_SWITCHES: &[&str] = &[
    "amsgrad",
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "fused",
];

/// PyTorch's default settings, which serde fills in for the arguments a kwargs object leaves
/// out (SGD has no default learning rate; its other settings default to zero).
mod torch_defaults {
    use super::{AdagradConfig, AdamConfig, RmsPropConfig};
    pub(super) fn adagrad() -> AdagradConfig {
        AdagradConfig::new(1e-2)
    }
    pub(super) fn rmsprop() -> RmsPropConfig {
        RmsPropConfig::new(1e-2)
    }
    pub(super) fn adam() -> AdamConfig {
        AdamConfig::new(1e-3)
    }
}

/// Which optimizer, with its settings. As JSON (serde, checkpoint metadata):
/// `{"kind": "adam", "kwargs": {PyTorch constructor arguments}}`
/// ([`OptimizerConfig::to_torch_kwargs`], read back by [`OptimizerConfig::from_torch_kwargs`]).
/// JSON numbers are not promised to round-trip every bit; checkpoints keep the exact settings
/// as F64 ([`OptimizerConfig::to_values`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd(SgdConfig),
    /// `torch.optim.Adagrad`.
    Adagrad(AdagradConfig),
    /// `torch.optim.RMSprop`.
    RmsProp(RmsPropConfig),
    /// `torch.optim.Adam`, or `torch.optim.AdamW` when `decoupled_weight_decay`.
    Adam(AdamConfig),
}

impl From<SgdConfig> for OptimizerConfig {
    fn from(c: SgdConfig) -> Self {
        OptimizerConfig::Sgd(c)
    }
}
impl From<AdagradConfig> for OptimizerConfig {
    fn from(c: AdagradConfig) -> Self {
        OptimizerConfig::Adagrad(c)
    }
}
impl From<RmsPropConfig> for OptimizerConfig {
    fn from(c: RmsPropConfig) -> Self {
        OptimizerConfig::RmsProp(c)
    }
}
impl From<AdamConfig> for OptimizerConfig {
    fn from(c: AdamConfig) -> Self {
        OptimizerConfig::Adam(c)
    }
}

impl OptimizerConfig {
    /// `"sgd"`, `"adagrad"`, `"rmsprop"`, `"adam"` or `"adamw"`.
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adagrad(_) => "adagrad",
            OptimizerConfig::RmsProp(_) => "rmsprop",
            OptimizerConfig::Adam(c) => c.kind(),
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::Adagrad(c) => c.lr,
            OptimizerConfig::RmsProp(c) => c.lr,
            OptimizerConfig::Adam(c) => c.lr,
        }
    }

    /// Checks the settings as PyTorch's constructors do.
    pub fn validate(&self) -> Result<()> {
        match self {
            OptimizerConfig::Sgd(c) => c.validate(),
            OptimizerConfig::Adagrad(c) => c.validate(),
            OptimizerConfig::RmsProp(c) => c.validate(),
            OptimizerConfig::Adam(c) => c.validate(),
        }
    }

    /// [`OptimizerConfig::validate`], and that the settings work in `T`: each is a finite `T`
    /// (an `f32` cannot hold 1e39), and the `eps` that keeps a denominator away from zero is not
    /// 0 in `T` (Adam, RMSprop; Adagrad unless its accumulator starts above 0), since a
    /// parameter whose gradient is 0 would otherwise get `0 / 0`.
    pub fn validate_for<T: Float>(&self) -> Result<()> {
        self.validate()?;
        let kind = self.kind();
        if let Some(v) = self.to_values().into_iter().find(|&v| !T::cast(v).finite()) {
            return Err(invalid(format!(
                "{kind}: setting {v} is not a finite {}",
                T::NAME
            )));
        }
        let (eps, floor) = match self {
            OptimizerConfig::Sgd(_) => return Ok(()),
            OptimizerConfig::Adagrad(c) => (c.eps, c.initial_accumulator_value),
            OptimizerConfig::RmsProp(c) => (c.eps, 0.0),
            OptimizerConfig::Adam(c) => (c.eps, 0.0),
        };
        if T::cast(eps) == T::zero() && T::cast(floor) == T::zero() {
            return Err(invalid(format!(
                "{kind}: eps {eps} is 0 in {} (a zero gradient would give 0 / 0)",
                T::NAME
            )));
        }
        Ok(())
    }

    /// The update of one parameter (see [`SgdConfig::apply`] and the others): with `WRITE`,
    /// applied; without, only whether its results would all be finite.
    fn apply<T: Float, const WRITE: bool>(
        &self,
        lr: f64,
        t: u64,
        p: &mut Param<T>,
        bufs: &mut [DMatrix<T>],
    ) -> bool {
        let (v, g) = (p.value.as_mut_slice(), p.grad.as_slice());
        match self {
            OptimizerConfig::Sgd(c) => c.apply::<T, WRITE>(lr, t, v, g, bufs),
            OptimizerConfig::Adagrad(c) => c.apply::<T, WRITE>(lr, t, v, g, bufs),
            OptimizerConfig::RmsProp(c) => c.apply::<T, WRITE>(lr, v, g, bufs),
            OptimizerConfig::Adam(c) => c.apply::<T, WRITE>(lr, t, v, g, bufs),
        }
    }

    /// Names of the per-parameter state buffers, in order.
    pub fn buffer_names(&self) -> &'static [&'static str] {
        match self {
            OptimizerConfig::Sgd(c) => c.buffers(),
            OptimizerConfig::Adagrad(c) => c.buffers(),
            OptimizerConfig::RmsProp(c) => c.buffers(),
            OptimizerConfig::Adam(c) => c.buffers(),
        }
    }

    fn initial_buffer_value(&self) -> f64 {
        match self {
            OptimizerConfig::Adagrad(c) => c.initial_accumulator_value,
            _ => 0.0,
        }
    }

    /// The PyTorch constructor keyword arguments, e.g. `{"lr": 0.001, "betas": [0.9, 0.999], ...}`
    /// (each config's serde form).
    pub fn to_torch_kwargs(&self) -> Value {
        let kwargs = match self {
            OptimizerConfig::Sgd(c) => serde_json::to_value(c),
            OptimizerConfig::Adagrad(c) => serde_json::to_value(c),
            OptimizerConfig::RmsProp(c) => serde_json::to_value(c),
            OptimizerConfig::Adam(c) => serde_json::to_value(c),
        };
        // Structs of numbers and booleans: serializing them cannot fail.
        kwargs.unwrap_or(Value::Null)
    }

    /// Builds a config from an optimizer name and PyTorch constructor keyword arguments.
    ///
    /// `kind` is `sgd` (also `sgd_momentum`), `adagrad`, `rmsprop`, `adam` or `adamw`; missing
    /// (or `null`) arguments take PyTorch's defaults (`lr` too, except for SGD, where it is
    /// required). Unknown arguments, and options this crate does not implement (`amsgrad`,
    /// `maximize`, `foreach`-style switches set to a non-default value), are errors.
    pub fn from_torch_kwargs(kind: &str, kwargs: &Value) -> Result<Self> {
        let mut obj = match kwargs {
            Value::Object(m) => m.clone(),
            Value::Null => Default::default(),
            other => {
                return Err(invalid(format!(
                    "optimizer kwargs must be an object, got {other}"
                )));
            }
        };
        if !matches!(
            kind,
            "sgd" | "sgd_momentum" | "adagrad" | "rmsprop" | "adam" | "adamw"
        ) {
            return Err(invalid(format!("unknown optimizer `{kind}`")));
        }
        for key in UNIMPLEMENTED_SWITCHES {
            match obj.get(*key) {
                None | Some(Value::Null | Value::Bool(false)) => {
                    obj.remove(*key);
                }
                Some(v) => {
                    return Err(invalid(format!(
                        "{kind}: unsupported argument `{key}` = {v}"
                    )));
                }
            }
        }
        obj.retain(|_, v| !v.is_null());
        let adam_decoupled = match kind {
            "adamw" => true,
            "adam" => obj.get("decoupled_weight_decay") == Some(&Value::Bool(true)),
            _ => false,
        };
        if adam_decoupled {
            obj.insert("decoupled_weight_decay".into(), Value::Bool(true));
            if !obj.contains_key("weight_decay") {
                obj.insert(
                    "weight_decay".into(),
                    AdamConfig::adamw(0.0).weight_decay.into(),
                );
            }
        }
        let obj = Value::Object(obj);
        let read = |e: serde_json::Error| invalid(format!("{kind}: {e}"));
        let config = match kind {
            "sgd" | "sgd_momentum" => {
                OptimizerConfig::Sgd(SgdConfig::deserialize(&obj).map_err(read)?)
            }
            "adagrad" => OptimizerConfig::Adagrad(AdagradConfig::deserialize(&obj).map_err(read)?),
            "rmsprop" => OptimizerConfig::RmsProp(RmsPropConfig::deserialize(&obj).map_err(read)?),
            _ => OptimizerConfig::Adam(AdamConfig::deserialize(&obj).map_err(read)?),
        };
        config.validate()?;
        Ok(config)
    }

    /// The settings as numbers in a fixed order (booleans as 0/1), stored exactly in checkpoints.
    pub fn to_values(&self) -> Vec<f64> {
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        match *self {
            OptimizerConfig::Sgd(c) => {
                vec![c.lr, c.momentum, c.dampening, b(c.nesterov), c.weight_decay]
            }
            OptimizerConfig::Adagrad(c) => {
                vec![
                    c.lr,
                    c.lr_decay,
                    c.weight_decay,
                    c.initial_accumulator_value,
                    c.eps,
                ]
            }
            OptimizerConfig::RmsProp(c) => {
                vec![
                    c.lr,
                    c.alpha,
                    c.eps,
                    c.weight_decay,
                    c.momentum,
                    b(c.centered),
                ]
            }
            OptimizerConfig::Adam(c) => {
                vec![
                    c.lr,
                    c.betas.0,
                    c.betas.1,
                    c.eps,
                    c.weight_decay,
                    b(c.decoupled_weight_decay),
                ]
            }
        }
    }

    /// Inverse of [`OptimizerConfig::to_values`] for the given kind.
    pub fn from_values(kind: &str, v: &[f64]) -> Result<Self> {
        let want = match kind {
            "sgd" | "adagrad" => 5,
            "rmsprop" | "adam" | "adamw" => 6,
            other => return Err(invalid(format!("unknown optimizer `{other}`"))),
        };
        if v.len() != want {
            return Err(invalid(format!(
                "{kind}: {} settings, expected {want}",
                v.len()
            )));
        }
        let config = match kind {
            "sgd" => OptimizerConfig::Sgd(SgdConfig {
                lr: v[0],
                momentum: v[1],
                dampening: v[2],
                nesterov: v[3] != 0.0,
                weight_decay: v[4],
            }),
            "adagrad" => OptimizerConfig::Adagrad(AdagradConfig {
                lr: v[0],
                lr_decay: v[1],
                weight_decay: v[2],
                initial_accumulator_value: v[3],
                eps: v[4],
            }),
            "rmsprop" => OptimizerConfig::RmsProp(RmsPropConfig {
                lr: v[0],
                alpha: v[1],
                eps: v[2],
                weight_decay: v[3],
                momentum: v[4],
                centered: v[5] != 0.0,
            }),
            _ => OptimizerConfig::Adam(AdamConfig {
                lr: v[0],
                betas: (v[1], v[2]),
                eps: v[3],
                weight_decay: v[4],
                decoupled_weight_decay: v[5] != 0.0,
            }),
        };
        if config.kind() != kind {
            return Err(invalid(format!(
                "settings are for {}, not {kind}",
                config.kind()
            )));
        }
        config.validate()?;
        Ok(config)
    }
}

/// The serde form of an [`OptimizerConfig`].
#[derive(Serialize, Deserialize)]
struct TaggedConfig {
    kind: String,
    #[serde(default)]
    kwargs: Value,
}

impl Serialize for OptimizerConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        TaggedConfig {
            kind: self.kind().to_string(),
            kwargs: self.to_torch_kwargs(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for OptimizerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let tagged = TaggedConfig::deserialize(d)?;
        OptimizerConfig::from_torch_kwargs(&tagged.kind, &tagged.kwargs)
            .map_err(serde::de::Error::custom)
    }
}

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
    /// trainer keeps a copy to undo a step without allocating every step).
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
                match self.state.get(i) {
                    Some(s) if s.name == name && shape_eq(&s.shape, p) => {}
                    Some(s) => {
                        err = Some(Error::StateMismatch {
                            index: i,
                            expected: format!("{} {:?}", s.name, s.shape),
                            got: describe(name, p),
                        })
                    }
                    None => {
                        err = Some(Error::StateMismatch {
                            index: i,
                            expected: "nothing".into(),
                            got: describe(name, p),
                        })
                    }
                }
            }
            i += 1;
        });
        if let Some(e) = err {
            return Err(e);
        }
        if i != self.state.len() {
            let s = &self.state[i];
            return Err(Error::StateMismatch {
                index: i,
                expected: format!("{} {:?}", s.name, s.shape),
                got: "nothing".into(),
            });
        }
        Ok(())
    }

    /// One update of every parameter of `model` from its gradient (the gradients are read, not
    /// cleared). The first step creates the state; later steps check it still fits the model.
    ///
    /// All or nothing: a step that would make any parameter or state value NaN or infinite is
    /// [`Error::NonFiniteUpdate`] naming the first such parameter, and leaves the parameters,
    /// the state and the step count as they were. (Every update is first computed without being
    /// written and checked, then computed again and written: the same arithmetic, so the same
    /// bits, and no buffer to copy or allocate.)
    pub fn step<M: Module<T> + ?Sized>(&mut self, model: &mut M) -> Result<()> {
        // A step count restored from a file may be anything; running out is an error, not a wrap.
        let t = self
            .step
            .checked_add(1)
            .ok_or_else(|| invalid(format!("optimizer step count {} cannot grow", self.step)))?;
        let fresh = self.state.is_empty();
        if fresh {
            self.init_state(model);
        } else {
            self.check_model(model)?;
        }
        let (lr, config) = (self.lr, self.config);
        let mut bad = None;
        let mut i = 0;
        let state = &mut self.state;
        model.visit_mut(&mut |name, p| {
            if bad.is_none() && !config.apply::<T, false>(lr, t, p, &mut state[i].buffers) {
                bad = Some(name.to_string());
            }
            i += 1;
        });
        if let Some(param) = bad {
            if fresh {
                self.state.clear();
            }
            return Err(Error::NonFiniteUpdate {
                optimizer: config.kind(),
                step: t,
                param,
            });
        }
        let mut i = 0;
        let state = &mut self.state;
        model.visit_mut(&mut |_, p| {
            config.apply::<T, true>(lr, t, p, &mut state[i].buffers);
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

fn shape_eq<T: Float>(shape: &[usize], p: &Param<T>) -> bool {
    match shape {
        [n] => p.is_vector() && p.value.nrows() == *n,
        [r, c] => !p.is_vector() && p.value.shape() == (*r, *c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nn_core::{Dense, Rng};
    use serde_json::json;

    #[test]
    fn kwargs_round_trip_and_unknown_arguments_fail() {
        for c in [
            OptimizerConfig::from(SgdConfig::new(0.1).with_momentum(0.9).with_nesterov(true)),
            AdagradConfig::new(0.1).with_lr_decay(0.01).into(),
            RmsPropConfig::new(0.1)
                .with_centered(true)
                .with_momentum(0.5)
                .into(),
            AdamConfig::new(0.1).into(),
            AdamConfig::adamw(0.1).into(),
        ] {
            let back = OptimizerConfig::from_torch_kwargs(c.kind(), &c.to_torch_kwargs()).unwrap();
            assert_eq!(back, c);
            assert_eq!(
                OptimizerConfig::from_values(c.kind(), &c.to_values()).unwrap(),
                c
            );
            let tagged = serde_json::to_value(c).unwrap();
            assert_eq!(
                tagged,
                json!({"kind": c.kind(), "kwargs": c.to_torch_kwargs()})
            );
            assert_eq!(
                serde_json::from_value::<OptimizerConfig>(tagged).unwrap(),
                c
            );
        }
        let adamw: OptimizerConfig = serde_json::from_value(json!({"kind": "adamw"})).unwrap();
        assert_eq!(adamw, AdamConfig::adamw(1e-3).into());
        assert!(serde_json::from_value::<OptimizerConfig>(json!({"kind": "lbfgs"})).is_err());
        let sgd = OptimizerConfig::from_torch_kwargs(
            "sgd_momentum",
            &json!({"lr": 0.5, "momentum": 0.9}),
        )
        .unwrap();
        assert_eq!(sgd, SgdConfig::new(0.5).with_momentum(0.9).into());
        assert!(OptimizerConfig::from_torch_kwargs("adam", &json!({"amsgrad": true})).is_err());
        assert!(OptimizerConfig::from_torch_kwargs("adam", &json!({"amsgrad": false})).is_ok());
        assert!(OptimizerConfig::from_torch_kwargs("sgd", &json!({"momentum": 0.9})).is_err());
        assert!(OptimizerConfig::from_torch_kwargs("lbfgs", &json!({})).is_err());
    }

    #[test]
    fn state_follows_the_model_and_mismatch_is_an_error() {
        let mut rng = Rng::seed_from(0);
        let mut a = Dense::<f64>::new(3, 2, &mut rng).unwrap();
        let mut b = Dense::<f64>::new(3, 4, &mut rng).unwrap();
        let mut opt = Optimizer::new(AdamConfig::new(0.1)).unwrap();
        a.weight.grad.fill(1.0);
        let before = a.weight.value.clone();
        opt.step(&mut a).unwrap();
        assert_eq!(opt.state().len(), 2);
        assert_eq!(opt.state()[1].shape, vec![2]);
        // First Adam step moves every weight by lr * sign(g) (up to eps).
        assert!(((&before - &a.weight.value).add_scalar(-0.1)).amax() < 1e-8);
        let err = opt.step(&mut b).unwrap_err();
        assert!(
            matches!(err, Error::StateMismatch { index: 0, .. }),
            "{err}"
        );
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn state_round_trips_through_a_file() {
        let mut rng = Rng::seed_from(1);
        let mut a = Dense::<f32>::new(3, 2, &mut rng).unwrap();
        let mut opt = Optimizer::new(
            RmsPropConfig::new(0.01)
                .with_momentum(0.9)
                .with_centered(true),
        )
        .unwrap();
        a.weight.grad.fill(0.5);
        a.bias.grad.fill(-0.25);
        opt.step(&mut a).unwrap();
        opt.set_lr(0.005);
        let mut w = TensorWriter::new();
        opt.write_state(&mut w, "optim");
        let file = TensorFile::from_bytes(w.to_bytes().unwrap(), "mem").unwrap();
        assert_eq!(file.shape("optim.bias.grad_avg").unwrap(), &[2]);
        let mut back = Optimizer::<f32>::new(RmsPropConfig::new(1.0)).unwrap();
        back.read_state(&file, "optim", &a).unwrap();
        assert_eq!(back, opt);
        let mut wrong = Optimizer::<f32>::new(AdamConfig::new(1.0)).unwrap();
        assert!(wrong.read_state(&file, "optim", &a).is_err());
        assert_eq!(wrong.steps(), 0);
    }
}
