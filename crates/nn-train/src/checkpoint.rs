//! Checkpoints: model, optimizer state, step counter and RNG state in one safetensors file.
//!
//! Layout (every name a tensor, PyTorch shapes, the model's dtype unless noted):
//! ```text
//! <param name>                    the model's parameters as it visits them (rnn.weight_ih_l0, head.bias, …)
//! optim.<param name>.<buffer>     optimizer state (exp_avg, exp_avg_sq, momentum_buffer, sum, …)
//! optim.step  U64 [1]             optimizer steps taken
//! optim.lr    F64 [1]             the current learning rate
//! optim.hparams F64 [n]           the optimizer settings, exact (order: OptimizerConfig::to_values)
//! step        U64 [1]             training steps taken
//! rng         U64 [4]             Rng::state()
//! state.h, state.c                (trainer, when carrying state) the state carried into the next step
//! ```
//! Header metadata: `format` ([`FORMAT`]), `dtype` (`f32`/`f64`), `model` (JSON, e.g.
//! [`SeqModelConfig::to_json`](crate::SeqModelConfig::to_json)) and `optimizer`
//! (`{"kind": "adam", "kwargs": {PyTorch constructor arguments}}`, the serde form of
//! [`OptimizerConfig`](crate::OptimizerConfig)). The JSON is only compared or shown: the
//! settings a loaded optimizer takes are the exact F64 `optim.hparams`.
//!
//! The file is written through [`TensorWriter::write`] (temporary file in the same folder,
//! fsync, rename). Reading checks the format, dtype, model config and optimizer kind, then every
//! tensor's name and shape, and changes nothing unless all of it fits.

use crate::error::{Error, Result, invalid};
use crate::optim::Optimizer;
use crate::trainer::Trainer;
use nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Float, Module, Rng};
use nn_recurrent::RecurrentState;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;

/// The `format` metadata value of this layout.
pub const FORMAT: &str = "nn-train-checkpoint-1";

/// What goes into a checkpoint besides its fixed parts.
#[derive(Debug)]
pub struct CheckpointParts<'a, T: Float, M: Module<T> + ?Sized> {
    /// The model.
    pub model: &'a M,
    /// The model's settings, compared on load.
    pub model_config: Value,
    /// The optimizer.
    pub optimizer: &'a Optimizer<T>,
    /// Training steps taken.
    pub step: u64,
    /// The generator's state.
    pub rng: &'a Rng,
    /// Further named matrices (PyTorch `[r, c]` layout).
    pub extra: Vec<(&'a str, &'a DMatrix<T>)>,
}

/// Writes a checkpoint atomically.
pub fn save<T: Float, M: Module<T> + ?Sized>(
    path: impl AsRef<Path>,
    parts: &CheckpointParts<'_, T, M>,
) -> Result<()> {
    let mut w = TensorWriter::new();
    w.module(parts.model);
    parts.optimizer.write_state(&mut w, "optim");
    w.u64s("step", &[parts.step]);
    w.u64s("rng", &parts.rng.state());
    for (name, m) in &parts.extra {
        w.matrix(name, m, false);
    }
    let optimizer = serde_json::to_string(parts.optimizer.config())
        .map_err(|e| invalid(format!("optimizer settings as JSON: {e}")))?;
    w.metadata("format", FORMAT)
        .metadata("dtype", T::NAME)
        .metadata("model", &parts.model_config.to_string())
        .metadata("optimizer", &optimizer);
    w.write(path)?;
    Ok(())
}

/// What a loaded checkpoint gives back besides the model and optimizer it filled.
#[derive(Debug)]
pub struct Restored {
    /// Training steps taken.
    pub step: u64,
    /// The generator, continuing where it was.
    pub rng: Rng,
    /// The file, for extra tensors.
    pub file: TensorFile,
}

fn mismatch(path: &Path, what: &'static str, expected: impl ToString, got: impl ToString) -> Error {
    Error::CheckpointMismatch {
        path: path.to_path_buf(),
        what,
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

fn read_u64s(file: &TensorFile, name: &str, n: usize) -> Result<Vec<u64>> {
    let v = file.integers(name)?;
    if v.len() != n {
        return Err(invalid(format!(
            "checkpoint tensor `{name}` holds {} values, expected {n}",
            v.len()
        )));
    }
    v.into_iter()
        .map(|x| {
            u64::try_from(x).map_err(|_| invalid(format!("checkpoint tensor `{name}` holds {x}")))
        })
        .collect()
}

/// Reads a checkpoint into `model` and `optimizer`, which must be of the same config and
/// optimizer kind as those saved. The optimizer takes the file's settings, learning rate, step
/// count and state. On any error neither is changed.
pub fn load<T: Float, M: Module<T> + ?Sized>(
    path: impl AsRef<Path>,
    model: &mut M,
    model_config: &Value,
    optimizer: &mut Optimizer<T>,
) -> Result<Restored> {
    let file = TensorFile::open(path)?;
    let (step, rng) = load_from(&file, model, model_config, optimizer)?;
    Ok(Restored { step, rng, file })
}

/// [`load`] from a file already read; returns the step count and the generator.
pub fn load_from<T: Float, M: Module<T> + ?Sized>(
    file: &TensorFile,
    model: &mut M,
    model_config: &Value,
    optimizer: &mut Optimizer<T>,
) -> Result<(u64, Rng)> {
    let path = file.path();
    let meta = |key: &str| file.metadata(key).unwrap_or("<missing>");
    if meta("format") != FORMAT {
        return Err(mismatch(path, "format", FORMAT, meta("format")));
    }
    if meta("dtype") != T::NAME {
        return Err(mismatch(path, "dtype", T::NAME, meta("dtype")));
    }
    let saved_model: Value = serde_json::from_str(meta("model")).unwrap_or(Value::Null);
    if &saved_model != model_config {
        return Err(mismatch(path, "model config", model_config, meta("model")));
    }
    /// The part of the `optimizer` metadata that is checked on load.
    #[derive(Deserialize)]
    struct SavedOptimizer {
        kind: String,
    }
    let kind = serde_json::from_str::<SavedOptimizer>(meta("optimizer"))
        .map_or_else(|_| "<missing>".to_string(), |saved| saved.kind);
    if kind != optimizer.config().kind() {
        return Err(mismatch(
            path,
            "optimizer kind",
            optimizer.config().kind(),
            kind,
        ));
    }
    let step = read_u64s(file, "step", 1)?[0];
    let s = read_u64s(file, "rng", 4)?;
    let rng = Rng::from_state([s[0], s[1], s[2], s[3]]);
    let mut opt = optimizer.clone();
    opt.read_state(file, "optim", model)?;
    file.load_module(model)?;
    *optimizer = opt;
    Ok((step, rng))
}

impl<T: Float> Trainer<T> {
    /// Saves model, optimizer, step, RNG and the carried state (if any) to `path`, atomically.
    pub fn save_checkpoint(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut extra = Vec::new();
        if let Some(s) = self.carried_state() {
            extra.push(("state.h", &s.h));
            if let Some(c) = &s.c {
                extra.push(("state.c", c));
            }
        }
        save(
            path,
            &CheckpointParts {
                model: &self.model,
                model_config: self.model.config().to_json(),
                optimizer: &self.optimizer,
                step: self.step,
                rng: &self.rng,
                extra,
            },
        )
    }

    /// Restores a checkpoint written by [`Trainer::save_checkpoint`] for a model of the same
    /// config and an optimizer of the same kind; training then continues exactly as the saved
    /// run would have. On error nothing is changed.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_checkpoint_file(&TensorFile::open(path)?)
    }

    /// [`Trainer::load_checkpoint`] from a file already read (e.g. with
    /// [`TensorFile::from_bytes`]). On error nothing is changed.
    pub fn load_checkpoint_file(&mut self, file: &TensorFile) -> Result<()> {
        let state = if file.contains("state.h") {
            let h = read_matrix::<T>(file, "state.h", self.model.rnn.config().hidden_size)?;
            let c = if file.contains("state.c") {
                Some(read_matrix::<T>(file, "state.c", h.nrows())?)
            } else {
                None
            };
            Some(RecurrentState { h, c })
        } else {
            None
        };
        let config = self.model.config().to_json();
        let (step, rng) = load_from(file, &mut self.model, &config, &mut self.optimizer)?;
        self.step = step;
        self.rng = rng;
        self.state_valid = state.is_some();
        if state.is_some() {
            self.state = state;
        }
        Ok(())
    }
}

/// A `[rows, cols]` tensor written by [`TensorWriter::matrix`] of a `(rows, cols)` matrix.
fn read_matrix<T: Float>(file: &TensorFile, name: &str, rows: usize) -> Result<DMatrix<T>> {
    let shape = file.shape(name)?.to_vec();
    match shape[..] {
        [r, c] if r == rows => Ok(file.matrix(name, &[r, c])?),
        _ => Err(nn_core::Error::TensorShape {
            name: name.to_string(),
            expected: vec![rows, 0],
            got: shape,
        }
        .into()),
    }
}
