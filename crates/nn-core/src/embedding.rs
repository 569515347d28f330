//! A lookup table of token vectors: `y[:, i] = W[ids[i], :]ᵀ`, as PyTorch's `nn.Embedding`.
//!
//! Shapes: `W` is `(V, E)` (vocabulary × embedding size, PyTorch's `weight [V, E]`), the input is
//! `N` token ids (for a sequence batch, `N = T*B` in the usual order: id `t*B + b` is step `t` of
//! sequence `b`), the output `y` is `(E, N)`: one column per id, ready to be a recurrent layer's
//! input.
//!
//! Backward, given `dy = ∂L/∂y` `(E, N)`: `dW[v, :] += Σ_{i: ids[i] = v} dy[:, i]ᵀ`, in the order
//! of `i`. The row `padding_idx`, if set, gets no gradient (PyTorch's `padding_idx`), and it is
//! initialized to zeros; its value is otherwise a parameter like any other (a file may load a
//! non-zero one, as in PyTorch). There is no input gradient: ids are not differentiable.
//!
//! Init: `N(0, 1)`, PyTorch's. Parameter name: `weight`.
//!
//! Memory layout: `W` is stored column-major like every [`Param`], so a row (one token's vector)
//! is strided by `V`. The forward reads `E` values per id; for the sizes this library targets
//! (`V` up to tens of thousands, `E` in the hundreds) that is a small part of a step next to the
//! recurrent layer's products.

use crate::{Error, Float, Init, Module, Param, Result, Rng, Shape, check_finite, try_zeros};
use nalgebra::DMatrix;

/// `y[:, i] = W[ids[i], :]ᵀ`.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding<T: Float> {
    /// `(V, E)`.
    pub weight: Param<T>,
    padding_idx: Option<usize>,
}

impl<T: Float> Embedding<T> {
    /// A table of `vocab` vectors of size `dim`, drawn from `N(0, 1)` (PyTorch's init), with the
    /// row `padding_idx` (if any) zeroed. Errors on a zero size or a `padding_idx` outside the
    /// vocabulary.
    pub fn new(
        vocab: usize,
        dim: usize,
        padding_idx: Option<usize>,
        rng: &mut Rng,
    ) -> Result<Self> {
        Self::check_config(vocab, dim, padding_idx)?;
        let mut w = Init::Normal { std: 1.0 }.matrix::<T>(vocab, dim, rng)?;
        if let Some(p) = padding_idx {
            w.row_mut(p).fill(T::zero());
        }
        Ok(Embedding {
            weight: Param::try_matrix(w)?,
            padding_idx,
        })
    }

    /// A table with the given weight `(V, E)` (loaded from a file, say), used as is.
    pub fn from_weight(weight: DMatrix<T>, padding_idx: Option<usize>) -> Result<Self> {
        Self::check_config(weight.nrows(), weight.ncols(), padding_idx)?;
        Ok(Embedding {
            weight: Param::try_matrix(weight)?,
            padding_idx,
        })
    }

    fn check_config(vocab: usize, dim: usize, padding_idx: Option<usize>) -> Result<()> {
        if vocab == 0 || dim == 0 {
            return Err(Error::InvalidConfig(format!(
                "Embedding needs non-zero sizes, got vocab={vocab}, dim={dim}"
            )));
        }
        match padding_idx {
            Some(p) if p >= vocab => Err(Error::InvalidConfig(format!(
                "Embedding padding_idx {p} is outside the vocabulary of {vocab}"
            ))),
            _ => Ok(()),
        }
    }

    /// Number of tokens `V`.
    pub fn vocab_size(&self) -> usize {
        self.weight.value.nrows()
    }

    /// Size `E` of each vector.
    pub fn dim(&self) -> usize {
        self.weight.value.ncols()
    }

    /// The row that gets no gradient, if any.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    /// Checks that every id is in the vocabulary.
    fn check_ids(&self, op: &'static str, ids: &[usize]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Empty { op, what: "ids" });
        }
        let vocab = self.vocab_size();
        match ids.iter().position(|&id| id >= vocab) {
            Some(index) => Err(Error::TokenOutOfRange {
                op,
                index,
                token: ids[index],
                vocab,
            }),
            None => Ok(()),
        }
    }

    /// `y = W[ids]ᵀ` into `out`, which is resized to `(E, N)` if needed (no allocation when it
    /// already has that shape). Errors on an empty `ids`, an id outside the vocabulary, or a
    /// non-finite row read (a NaN loaded from a file).
    pub fn forward_into(&self, ids: &[usize], out: &mut DMatrix<T>) -> Result<()> {
        const OP: &str = "Embedding::forward";
        self.check_ids(OP, ids)?;
        let (e, n) = (self.dim(), ids.len());
        if out.shape() != (e, n) {
            *out = try_zeros(OP, e, n)?;
        }
        let vocab = self.vocab_size();
        let w = self.weight.value.as_slice();
        for (col, &id) in out.as_mut_slice().chunks_exact_mut(e).zip(ids) {
            for (k, y) in col.iter_mut().enumerate() {
                *y = w[k * vocab + id];
            }
        }
        check_finite("Embedding::forward output (a non-finite weight row)", out)
    }

    /// [`Embedding::forward_into`] into a new matrix.
    pub fn forward(&self, ids: &[usize]) -> Result<DMatrix<T>> {
        let mut out = DMatrix::zeros(0, 0);
        self.forward_into(ids, &mut out)?;
        Ok(out)
    }

    /// Adds `dy` `(E, N)` into the rows of `weight.grad` that `ids` read (in the order of the
    /// ids), skipping `padding_idx`. Errors on a shape mismatch, a bad id or a non-finite `dy`.
    pub fn backward(&mut self, ids: &[usize], dy: &DMatrix<T>) -> Result<()> {
        const OP: &str = "Embedding::backward";
        self.check_ids(OP, ids)?;
        let e = self.dim();
        if dy.shape() != (e, ids.len()) {
            return Err(Error::ShapeMismatch {
                op: "Embedding::backward dy (rows: embedding size; columns: one per id)",
                expected: Shape(e, ids.len()),
                got: Shape::from(dy),
            });
        }
        check_finite("Embedding::backward dy", dy)?;
        let vocab = self.vocab_size();
        let g = self.weight.grad.as_mut_slice();
        for (col, &id) in dy.as_slice().chunks_exact(e).zip(ids) {
            if Some(id) == self.padding_idx {
                continue;
            }
            for (k, &d) in col.iter().enumerate() {
                g[k * vocab + id] += d;
            }
        }
        Ok(())
    }
}

impl<T: Float> Module<T> for Embedding<T> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>)) {
        f("weight", &self.weight);
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>)) {
        f("weight", &mut self.weight);
    }
}

#[cfg(test)]
mod tests;
