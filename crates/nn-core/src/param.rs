//! Parameters (a value and its gradient) and the visitor over a model's parameters by name.
//!
//! Names follow PyTorch's `state_dict`: a layer calls its own tensors `weight`, `bias`,
//! `weight_ih_l0`, ...; a model that holds layers prefixes theirs (`head.weight`). Optimizers,
//! clipping, checkpoints and weight import/export work through [`Module`], so they serve any
//! model. A parameter is stored as a column-major `(rows, cols)` matrix; a PyTorch vector
//! (a bias, `[n]`) is an `(n, 1)` matrix marked as a vector so files get the right shape.

use crate::{Float, Result, try_zeros};
use nalgebra::DMatrix;

/// A trainable tensor: its value and the gradient of the loss with respect to it (same shape).
#[derive(Clone, Debug, PartialEq)]
pub struct Param<T: Float> {
    /// The value.
    pub value: DMatrix<T>,
    /// The accumulated gradient; backward passes add into it, [`Param::zero_grad`] clears it.
    pub grad: DMatrix<T>,
    vector: bool,
}

impl<T: Float> Param<T> {
    /// [`Param::matrix`], with [`Error::TooLarge`](crate::Error::TooLarge) instead of an abort
    /// when the gradient cannot be allocated.
    pub fn try_matrix(value: DMatrix<T>) -> Result<Self> {
        let grad = try_zeros("Param gradient", value.nrows(), value.ncols())?;
        Ok(Param {
            value,
            grad,
            vector: false,
        })
    }

    /// [`Param::vector`], with [`Error::TooLarge`](crate::Error::TooLarge) instead of an abort
    /// when it cannot be allocated.
    pub fn try_vector(n: usize) -> Result<Self> {
        Ok(Param {
            value: try_zeros("Param value", n, 1)?,
            grad: try_zeros("Param gradient", n, 1)?,
            vector: true,
        })
    }

    /// A matrix parameter (`[rows, cols]` in PyTorch), with a zero gradient. Like a `Vec`, it
    /// aborts when memory runs out; [`Param::try_matrix`] returns an error instead.
    pub fn matrix(value: DMatrix<T>) -> Self {
        let grad = DMatrix::zeros(value.nrows(), value.ncols());
        Param {
            value,
            grad,
            vector: false,
        }
    }

    /// A vector parameter (`[n]` in PyTorch) held as an `(n, 1)` matrix, with a zero gradient.
    /// Aborts when memory runs out, like a `Vec`; see [`Param::try_vector`].
    pub fn vector(n: usize) -> Self {
        Param {
            value: DMatrix::zeros(n, 1),
            grad: DMatrix::zeros(n, 1),
            vector: true,
        }
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        // On the contiguous slice: a memset, where nalgebra's `fill` walks element by element.
        self.grad.as_mut_slice().fill(T::zero());
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// `true` for a parameter with no values.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// `true` for a PyTorch vector (`[n]`).
    pub fn is_vector(&self) -> bool {
        self.vector
    }

    /// The shape PyTorch gives this tensor: `[n]` for a vector, `[rows, cols]` otherwise.
    pub fn torch_shape(&self) -> Vec<usize> {
        if self.vector {
            vec![self.value.nrows()]
        } else {
            vec![self.value.nrows(), self.value.ncols()]
        }
    }
}

/// A model, or part of one, that owns named parameters.
pub trait Module<T: Float> {
    /// Calls `f` with each parameter and its PyTorch name, always in the same order.
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>));
    /// Calls `f` with each parameter mutably, in the same order as [`Module::visit`].
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>));

    /// Sets every gradient to zero.
    fn zero_grad(&mut self) {
        self.visit_mut(&mut |_, p| p.zero_grad());
    }

    /// Total number of parameter values.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |_, p| n += p.len());
        n
    }

    /// The parameter names in visiting order.
    fn param_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.visit(&mut |name, _| names.push(name.to_string()));
        names
    }
}

/// Visits `module`'s parameters with names prefixed by `prefix.` (PyTorch's submodule naming).
pub fn visit_prefixed<T: Float, M: Module<T> + ?Sized>(
    prefix: &str,
    module: &M,
    f: &mut dyn FnMut(&str, &Param<T>),
) {
    let mut name = String::with_capacity(prefix.len() + 24);
    module.visit(&mut |n, p| {
        name.clear();
        name.push_str(prefix);
        name.push('.');
        name.push_str(n);
        f(&name, p)
    });
}

/// Mutable counterpart of [`visit_prefixed`].
pub fn visit_prefixed_mut<T: Float, M: Module<T> + ?Sized>(
    prefix: &str,
    module: &mut M,
    f: &mut dyn FnMut(&str, &mut Param<T>),
) {
    let mut name = String::with_capacity(prefix.len() + 24);
    module.visit_mut(&mut |n, p| {
        name.clear();
        name.push_str(prefix);
        name.push('.');
        name.push_str(n);
        f(&name, p)
    });
}
