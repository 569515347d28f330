//! The parameters of one layer-direction, under PyTorch's names, and weight files in and out.
//!
//! Layer `k`, direction `d` holds (`G` gate blocks, `I_k = I` for `k = 0`, else `D*H`):
//! - `weight_ih_l{k}` `(G*H, I_k)`, `weight_hh_l{k}` `(G*H, H)`,
//! - `bias_ih_l{k}` `[G*H]`, `bias_hh_l{k}` `[G*H]` (vectors, held as `(G*H, 1)`),
//!
//! with the suffix `_reverse` for `d = 1`. The visiting order is PyTorch's `state_dict` order: for
//! each layer, for each direction: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`. Weight files
//! are safetensors with those names (`safetensors.torch.save_file(lstm.state_dict(), path)`),
//! read as f32 or f64 and written in the layer's own dtype.

use crate::{CellKind, Recurrent};
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Float, Init, Module, Param, Result, Rng};
use std::path::Path;

/// The four tensors of one layer-direction, with their PyTorch names.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectionWeights<T: Float> {
    /// `weight_ih_l{k}[_reverse]` `(G*H, I_k)`.
    pub weight_ih: Param<T>,
    /// `weight_hh_l{k}[_reverse]` `(G*H, H)`.
    pub weight_hh: Param<T>,
    /// `bias_ih_l{k}[_reverse]` `[G*H]`.
    pub bias_ih: Param<T>,
    /// `bias_hh_l{k}[_reverse]` `[G*H]`.
    pub bias_hh: Param<T>,
    /// The names above, in visiting order.
    names: [String; 4],
}

impl<T: Float> DirectionWeights<T> {
    /// Zero tensors for layer `layer`, forward or reverse, with `input` features in; sizes too
    /// large to allocate are [`nn_core::Error::TooLarge`]. The sizes come from a validated
    /// [`crate::RecurrentConfig`], so `G·H` fits.
    pub(crate) fn zeros(
        cell: CellKind,
        input: usize,
        hidden: usize,
        layer: usize,
        reverse: bool,
    ) -> Result<Self> {
        let rows = cell.gate_count() * hidden;
        let suffix = if reverse { "_reverse" } else { "" };
        let name = |what: &str| format!("{what}_l{layer}{suffix}");
        let zeros = |cols| nn_core::try_zeros("RecurrentConfig::init weights", rows, cols);
        Ok(DirectionWeights {
            weight_ih: Param::try_matrix(zeros(input)?)?,
            weight_hh: Param::try_matrix(zeros(hidden)?)?,
            bias_ih: Param::try_vector(rows)?,
            bias_hh: Param::try_vector(rows)?,
            names: [
                name("weight_ih"),
                name("weight_hh"),
                name("bias_ih"),
                name("bias_hh"),
            ],
        })
    }

    /// Draws every tensor from `init` (fans are irrelevant for `Init::Uniform`).
    pub(crate) fn fill(&mut self, init: &Init, rng: &mut Rng) -> Result<()> {
        for p in [
            &mut self.weight_ih,
            &mut self.weight_hh,
            &mut self.bias_ih,
            &mut self.bias_hh,
        ] {
            let (rows, cols) = p.value.shape();
            init.fill(&mut p.value, cols, rows, rng)?;
        }
        Ok(())
    }

    /// The PyTorch names, in visiting order: `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
    pub fn names(&self) -> &[String; 4] {
        &self.names
    }

    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>)) {
        f(&self.names[0], &self.weight_ih);
        f(&self.names[1], &self.weight_hh);
        f(&self.names[2], &self.bias_ih);
        f(&self.names[3], &self.bias_hh);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>)) {
        f(&self.names[0], &mut self.weight_ih);
        f(&self.names[1], &mut self.weight_hh);
        f(&self.names[2], &mut self.bias_ih);
        f(&self.names[3], &mut self.bias_hh);
    }
}

impl<T: Float> Recurrent<T> {
    /// Loads PyTorch weights (a `state_dict` saved with `safetensors.torch.save_file`, f32 or f64).
    ///
    /// Every parameter name must be present with its PyTorch shape and a float dtype; otherwise
    /// the error names the tensor (or the file, when it is not valid safetensors) and no weight
    /// is changed. Extra tensors in the file are ignored. Gradients are left as they are.
    ///
    /// The names are the layer's own (`weight_ih_l0`, …). A whole model's `state_dict` names
    /// them under its attribute (`rnn.weight_ih_l0`): load those with
    /// [`Recurrent::load_safetensors_with`]; the error of a missing tensor names the file and the
    /// closest names present, and says which prefix map reads them.
    pub fn load_safetensors(&mut self, path: impl AsRef<Path>) -> Result<()> {
        TensorFile::open(path)?.load_module(self)
    }

    /// [`Recurrent::load_safetensors`] with a map from the layer's names to the file's:
    /// `load_safetensors_with(path, rename_prefixes(&[("", "lstm.")]))` reads the layer out of a
    /// model whose LSTM attribute is `lstm` (see [`nn_core::tensor_io::rename_prefixes`]).
    pub fn load_safetensors_with(
        &mut self,
        path: impl AsRef<Path>,
        map: impl Fn(&str) -> String,
    ) -> Result<()> {
        TensorFile::open(path)?.load_module_with(self, map)
    }

    /// Saves the weights under PyTorch's names, atomically, in `T`'s dtype.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut out = TensorWriter::new();
        out.module(self);
        out.write(path)
    }
}

impl<T: Float> Module<T> for Recurrent<T> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>)) {
        for w in self.directions() {
            w.visit(f);
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>)) {
        for w in self.directions_mut() {
            w.visit_mut(f);
        }
    }
}
