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
//! [`SeqModelConfig::to_json`](crate::SeqModelConfig::to_json)), `optimizer`
//! (`{"kind": "adam", "kwargs": {PyTorch constructor arguments}}`, the serde form of
//! [`OptimizerConfig`](crate::OptimizerConfig)), the data's checksum
//! ([`nn_core::tensor_io::checksum`]) and the caller's own entries as `user.<key>`
//! ([`save_with`], [`Trainer::save_checkpoint_with`], read back with [`read_metadata`]). The JSON
//! is only compared or shown: the settings a loaded optimizer takes are the exact F64
//! `optim.hparams`. The metadata is written sorted, so the same state gives the same bytes.
//!
//! The file is written through [`TensorWriter::write`] (temporary file in the same folder,
//! fsync, rename; never over anything but a regular file). Reading checks the data against its
//! checksum (files written before it have none and load as before), then the format, dtype,
//! model config (naming the settings that differ: `the checkpoint has hidden 8, this run has
//! hidden 9`) and optimizer kind, then every tensor's name and shape, and changes nothing unless
//! all of it fits.

use crate::error::{Error, Result, invalid};
use crate::optim::Optimizer;
use crate::trainer::Trainer;
use nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Float, Module, Rng};
use nn_recurrent::RecurrentState;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The `format` metadata value of this layout.
pub const FORMAT: &str = "nn-train-checkpoint-1";

/// What the header keys of the caller's own metadata start with.
const USER: &str = "user.";

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
    save_with(path, parts, &[])
}

/// [`save`], with the caller's own `(key, value)` metadata entries (e.g. a vocabulary), read
/// back with [`read_metadata`] or [`user_metadata`]. They are stored apart from the
/// checkpoint's own entries, so any key may be used.
pub fn save_with<T: Float, M: Module<T> + ?Sized>(
    path: impl AsRef<Path>,
    parts: &CheckpointParts<'_, T, M>,
    metadata: &[(&str, &str)],
) -> Result<()> {
    let mut w = TensorWriter::new();
    for (key, value) in metadata {
        w.metadata(&format!("{USER}{key}"), value);
    }
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

/// A metadata entry saved with [`save_with`] or [`Trainer::save_checkpoint_with`], read from
/// the checkpoint at `path` (whose data is checked against its checksum); `None` when the file
/// has no such entry.
pub fn read_metadata(path: impl AsRef<Path>, key: &str) -> Result<Option<String>> {
    let file = TensorFile::open(path)?;
    Ok(user_metadata(&file, key).map(str::to_string))
}

/// [`read_metadata`] from a file already read.
pub fn user_metadata<'f>(file: &'f TensorFile, key: &str) -> Option<&'f str> {
    file.metadata(&format!("{USER}{key}"))
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
    check_header(file, model_config, optimizer)?;
    load_tensors(file, model, optimizer)
}

/// The settings in which two model configs differ, as `key value` lists for the saved one and
/// the current one (`hidden 8` and `hidden 9`); whole values when they are not JSON objects.
fn differences(saved_text: &str, saved: &Value, current: &Value) -> (String, String) {
    let (Value::Object(a), Value::Object(b)) = (saved, current) else {
        return (saved_text.to_string(), current.to_string());
    };
    let show = |v: Option<&Value>| match v {
        None => "<none>".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let (mut got, mut expected) = (Vec::new(), Vec::new());
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            got.push(format!("{key} {}", show(x)));
            expected.push(format!("{key} {}", show(y)));
        }
    }
    (got.join(", "), expected.join(", "))
}

/// The header's checks: format, dtype, model config and optimizer kind.
fn check_header<T: Float>(
    file: &TensorFile,
    model_config: &Value,
    optimizer: &Optimizer<T>,
) -> Result<()> {
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
        let (got, expected) = differences(meta("model"), &saved_model, model_config);
        return Err(mismatch(path, "model config", expected, got));
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
    Ok(())
}

/// The tensors of a checkpoint whose header passed [`check_header`].
fn load_tensors<T: Float, M: Module<T> + ?Sized>(
    file: &TensorFile,
    model: &mut M,
    optimizer: &mut Optimizer<T>,
) -> Result<(u64, Rng)> {
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
        self.save_checkpoint_with(path, &[])
    }

    /// [`Trainer::save_checkpoint`], with the caller's own `(key, value)` metadata entries
    /// (e.g. the vocabulary of a character model), read back with [`read_metadata`].
    pub fn save_checkpoint_with(
        &self,
        path: impl AsRef<Path>,
        metadata: &[(&str, &str)],
    ) -> Result<()> {
        let mut extra = Vec::new();
        if let Some(s) = self.carried_state() {
            extra.push(("state.h", &s.h));
            if let Some(c) = &s.c {
                extra.push(("state.c", c));
            }
        }
        save_with(
            path,
            &CheckpointParts {
                model: &self.model,
                model_config: self.model.config().to_json(),
                optimizer: &self.optimizer,
                step: self.step,
                rng: &self.rng,
                extra,
            },
            metadata,
        )
    }

    /// Restores a checkpoint written by [`Trainer::save_checkpoint`] for a model of the same
    /// config and an optimizer of the same kind; training then continues exactly as the saved
    /// run would have. On error nothing is changed.
    pub fn load_checkpoint(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_checkpoint_file(&TensorFile::open(path)?)
    }

    /// [`Trainer::load_checkpoint`] from a file already read (e.g. with
    /// [`TensorFile::from_bytes`]). The header (model config, optimizer kind) is checked before
    /// any tensor, and a carried LSTM state must have its cell state `state.c`. On error
    /// nothing is changed.
    pub fn load_checkpoint_file(&mut self, file: &TensorFile) -> Result<()> {
        let config = self.model.config().to_json();
        check_header(file, &config, &self.optimizer)?;
        let state = self.read_state(file)?;
        let (step, rng) = load_tensors(file, &mut self.model, &mut self.optimizer)?;
        self.step = step;
        self.rng = rng;
        self.state_valid = state.is_some();
        if state.is_some() {
            self.state = state;
        }
        Ok(())
    }
}

impl<T: Float> Trainer<T> {
    /// The carried state in `file` (`None` when it has none): `state.h`, and `state.c` exactly
    /// when the cell has a cell state, of the same shape.
    fn read_state(&self, file: &TensorFile) -> Result<Option<RecurrentState<T>>> {
        if !file.contains("state.h") {
            return Ok(None);
        }
        let rnn = self.model.rnn.config();
        let h = read_matrix::<T>(file, "state.h", rnn.hidden_size)?;
        let c = match (rnn.cell.has_cell_state(), file.contains("state.c")) {
            (true, true) => Some(file.matrix::<T>("state.c", &[h.nrows(), h.ncols()])?),
            (true, false) => {
                return Err(nn_core::Error::MissingTensor {
                    name: "state.c".to_string(),
                    path: file.path().to_path_buf(),
                    closest: vec!["state.h".to_string()],
                }
                .into());
            }
            (false, true) => {
                return Err(invalid(format!(
                    "checkpoint {}: it holds a cell state `state.c`, which a {} does not have",
                    file.path().display(),
                    rnn.cell
                )));
            }
            (false, false) => None,
        };
        Ok(Some(RecurrentState { h, c }))
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
