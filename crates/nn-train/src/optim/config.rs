//! [`OptimizerConfig`]: which optimizer, with its settings; PyTorch constructor kwargs in and
//! out (JSON by serde), the exact settings as F64 values for checkpoints, and the checks that
//! settings are usable.

use super::{AdagradConfig, AdamConfig, RmsPropConfig, SgdConfig};
use crate::error::{Result, invalid};
use nalgebra::DMatrix;
use nn_core::{Float, Param};
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
pub(super) mod torch_defaults {
    use super::{AdagradConfig, AdamConfig, RmsPropConfig};
    pub(in crate::optim) fn adagrad() -> AdagradConfig {
        AdagradConfig::new(1e-2)
    }
    pub(in crate::optim) fn rmsprop() -> RmsPropConfig {
        RmsPropConfig::new(1e-2)
    }
    pub(in crate::optim) fn adam() -> AdamConfig {
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

    /// The update of one parameter (see [`SgdConfig::apply`] and the others): its new value
    /// into `value` and its new state into `buffers`, `p` and `state` left as they are. `true`
    /// when every new value is finite.
    pub(super) fn apply<T: Float>(
        &self,
        lr: f64,
        t: u64,
        p: &Param<T>,
        state: &[DMatrix<T>],
        value: &mut DMatrix<T>,
        buffers: &mut [DMatrix<T>],
    ) -> bool {
        let (v, g, out) = (p.value.as_slice(), p.grad.as_slice(), value.as_mut_slice());
        // The element loops compiled for the widest vectors the CPU has (same bits on every
        // path: no fast-math, no contraction); they pay for writing to other buffers and the
        // finiteness check.
        nn_core::kernels::simd::dispatch(
            #[inline(always)]
            || match self {
                OptimizerConfig::Sgd(c) => c.apply(lr, t, v, g, state, out, buffers),
                OptimizerConfig::Adagrad(c) => c.apply(lr, t, v, g, state, out, buffers),
                OptimizerConfig::RmsProp(c) => c.apply(lr, v, g, state, out, buffers),
                OptimizerConfig::Adam(c) => c.apply(lr, t, v, g, state, out, buffers),
            },
        )
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

    pub(super) fn initial_buffer_value(&self) -> f64 {
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
