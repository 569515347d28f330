//! Model files: a [`SeqModel`] alone (no optimizer, no training state) in one safetensors file,
//! for inference and for PyTorch.
//!
//! Layout: the parameters under PyTorch names (`rnn.weight_ih_l0`, …, `head.weight`,
//! `head.bias`; PyTorch shapes, the model's dtype), and header metadata `format`
//! ([`FORMAT`]), `dtype`, `model` (the [`SeqModelConfig`] as JSON,
//! [`SeqModelConfig::to_json`]), the data's checksum ([`nn_core::tensor_io::checksum`]) and the
//! caller's own entries as `user.<key>` (a vocabulary, say), read back with [`read_metadata`]
//! or [`user_metadata`]. The file is written atomically ([`TensorWriter::write`]: a temporary in
//! the same folder, fsync, rename), and its metadata sorted, so the same model gives the same
//! bytes.
//!
//! Loading ([`SeqModel::load`]) reads the config from the header, builds the model and reads
//! every tensor (f32 or f64 files load into either type); [`SeqModel::from_checkpoint`] does the
//! same with a training checkpoint ([`crate::checkpoint`]), ignoring its optimizer state. A
//! file that is damaged fails its checksum ([`nn_core::Error::Checksum`]); one of another kind,
//! or without a usable config, is [`Error::ModelFile`]; a tensor missing or of another shape is
//! [`nn_core::Error::MissingTensor`] / [`nn_core::Error::TensorShape`].

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::seq_model::{SeqModel, SeqModelConfig};
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Float, Rng};
use serde_json::Value;
use std::path::Path;

/// The `format` metadata value of a model file.
pub const FORMAT: &str = "nn-train-model-1";

/// A `user.<key>` entry saved with [`SeqModel::save`] (or in a checkpoint), read from the file
/// at `path` (whose data is checked against its checksum); `None` when it has no such entry.
pub fn read_metadata(path: impl AsRef<Path>, key: &str) -> Result<Option<String>> {
    checkpoint::read_metadata(path, key)
}

/// [`read_metadata`] from a file already read.
pub fn user_metadata<'f>(file: &'f TensorFile, key: &str) -> Option<&'f str> {
    checkpoint::user_metadata(file, key)
}

fn model_file_error(file: &TensorFile, reason: String) -> Error {
    Error::ModelFile {
        path: file.path().to_path_buf(),
        reason,
    }
}

impl<T: Float> SeqModel<T> {
    /// Writes the model (weights under PyTorch names, config) to `path` atomically, with the
    /// caller's own `(key, value)` metadata entries (e.g. `[("vocab", "abc…")]`; `&[]` for none).
    pub fn save(&self, path: impl AsRef<Path>, user_metadata: &[(&str, &str)]) -> Result<()> {
        let mut w = TensorWriter::new();
        for (key, value) in user_metadata {
            w.metadata(&format!("user.{key}"), value);
        }
        w.module(self);
        w.metadata("format", FORMAT)
            .metadata("dtype", T::NAME)
            .metadata("model", &self.config().to_json().to_string());
        w.write(path)?;
        Ok(())
    }

    /// Reads a model written by [`SeqModel::save`]: no optimizer and no JSON on the caller's
    /// side. Errors: see the module docs.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_file(&TensorFile::open(path)?)
    }

    /// [`SeqModel::load`] from a file already read (with [`TensorFile::open`] or
    /// [`TensorFile::from_bytes`]; its user metadata is then at hand through [`user_metadata`]).
    pub fn load_file(file: &TensorFile) -> Result<Self> {
        match file.metadata("format") {
            Some(FORMAT) => Self::from_file(file),
            Some(checkpoint::FORMAT) => Err(model_file_error(
                file,
                "this is a training checkpoint; read its model with SeqModel::from_checkpoint"
                    .into(),
            )),
            other => Err(model_file_error(
                file,
                format!(
                    "format is {}, expected {FORMAT}",
                    other.unwrap_or("<missing>")
                ),
            )),
        }
    }

    /// The model out of a training checkpoint ([`crate::Trainer::save_checkpoint`]), in one
    /// call: the optimizer state, step and generator in the file are not read.
    pub fn from_checkpoint(path: impl AsRef<Path>) -> Result<Self> {
        let file = TensorFile::open(path)?;
        match file.metadata("format") {
            Some(checkpoint::FORMAT) => Self::from_file(&file),
            Some(FORMAT) => Err(model_file_error(
                &file,
                "this is a model file; read it with SeqModel::load".into(),
            )),
            other => Err(model_file_error(
                &file,
                format!(
                    "format is {}, expected {}",
                    other.unwrap_or("<missing>"),
                    checkpoint::FORMAT
                ),
            )),
        }
    }

    /// The config in the header, the model it builds, and its tensors.
    fn from_file(file: &TensorFile) -> Result<Self> {
        let text = file
            .metadata("model")
            .ok_or_else(|| model_file_error(file, "no `model` config in the header".into()))?;
        let json: Value = serde_json::from_str(text)
            .map_err(|e| model_file_error(file, format!("`model` config: {e}")))?;
        let config = SeqModelConfig::from_json(&json)
            .map_err(|e| model_file_error(file, format!("`model` config: {e}")))?;
        // Every weight is read from the file; the generator only fills them first.
        let mut model = config
            .init::<T>(&mut Rng::seed_from(0))
            .map_err(|e| model_file_error(file, format!("`model` config: {e}")))?;
        file.load_module(&mut model)?;
        Ok(model)
    }
}
