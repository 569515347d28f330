//! [`SeqInput`]: what a [`SeqModel`] reads, a dense `(I, T*B)` matrix or `T*B` token ids (index
//! `t*B + b`, step `t` of sequence `b`), and the recurrent layer's input made from it.
//!
//! A model without an embedding takes dense input; one with an embedding takes token ids, and
//! its layer reads the embedding rows `E` `(E, T*B)`, gathered into a buffer (no one-hot
//! product). Every `&DMatrix`, matrix view (`x.columns(t0 * b, n * b)`), `&[usize]` and
//! `&Vec<usize>` converts into a `SeqInput`, so `model.forward(&x, ...)` and
//! `model.forward(&ids, ...)` both read naturally.

use super::SeqModel;
use crate::error::{Error, Result};
use nalgebra::{DMatrix, DMatrixView, Dim, Matrix, RawStorage};
use nn_core::{Float, Shape};

/// The input of a [`SeqModel`] pass: dense features or token ids.
#[derive(Debug)]
pub enum SeqInput<'x, T: Float> {
    /// `(I, T*B)`, column `t*B + b` (a model without an embedding).
    Dense(DMatrixView<'x, T>),
    /// `T*B` token ids, index `t*B + b` (a model with an embedding).
    Tokens(&'x [usize]),
}

impl<T: Float> Clone for SeqInput<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Float> Copy for SeqInput<'_, T> {}

impl<'x, T: Float> From<DMatrixView<'x, T>> for SeqInput<'x, T> {
    fn from(x: DMatrixView<'x, T>) -> Self {
        SeqInput::Dense(x)
    }
}

/// `&x` for a matrix, or a reference to a view: whatever converted into the dense view the
/// passes took before token input existed.
impl<'x, T, R, C, S> From<&'x Matrix<T, R, C, S>> for SeqInput<'x, T>
where
    T: Float,
    R: Dim,
    C: Dim,
    S: RawStorage<T, R, C>,
    DMatrixView<'x, T>: From<&'x Matrix<T, R, C, S>>,
{
    fn from(x: &'x Matrix<T, R, C, S>) -> Self {
        SeqInput::Dense(x.into())
    }
}

impl<'x, T: Float> From<&'x [usize]> for SeqInput<'x, T> {
    fn from(ids: &'x [usize]) -> Self {
        SeqInput::Tokens(ids)
    }
}

impl<'x, T: Float> From<&'x Vec<usize>> for SeqInput<'x, T> {
    fn from(ids: &'x Vec<usize>) -> Self {
        SeqInput::Tokens(ids)
    }
}

impl<'x, T: Float, const N: usize> From<&'x [usize; N]> for SeqInput<'x, T> {
    fn from(ids: &'x [usize; N]) -> Self {
        SeqInput::Tokens(ids)
    }
}

impl<T: Float> SeqInput<'_, T> {
    /// The number of columns `T*B` (ids for token input).
    pub fn columns(&self) -> usize {
        match self {
            SeqInput::Dense(x) => x.ncols(),
            SeqInput::Tokens(ids) => ids.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            SeqInput::Dense(_) => DENSE,
            SeqInput::Tokens(_) => TOKENS,
        }
    }
}

const DENSE: &str = "a dense (I, T*B) input";
const TOKENS: &str = "token ids";

impl<T: Float> SeqModel<T> {
    /// Checks that `x` is the kind of input this model takes, of `T*B` columns for `batch`;
    /// returns `T`.
    pub(crate) fn steps(&self, x: &SeqInput<'_, T>, batch: usize) -> Result<usize> {
        const OP: &str = "SeqModel";
        self.check_kind(x)?;
        let cols = x.columns();
        if batch == 0 || cols == 0 {
            return Err(nn_core::Error::Empty {
                op: OP,
                what: if batch == 0 { "batch" } else { "steps" },
            }
            .into());
        }
        match x {
            SeqInput::Dense(x) => {
                if !cols.is_multiple_of(batch) || x.nrows() != self.input_size() {
                    return Err(nn_core::Error::ShapeMismatch {
                        op: "SeqModel input (rows: I features; columns: T*B, step t of sequence b at t*B + b)",
                        expected: Shape(self.input_size(), cols.div_ceil(batch) * batch),
                        got: Shape::from(x),
                    }
                    .into());
                }
            }
            SeqInput::Tokens(_) => {
                if !cols.is_multiple_of(batch) {
                    return Err(nn_core::Error::LengthMismatch {
                        op: "SeqModel token ids (T*B, step t of sequence b at t*B + b)",
                        expected: cols.div_ceil(batch) * batch,
                        got: cols,
                    }
                    .into());
                }
            }
        }
        Ok(cols / batch)
    }

    /// [`SeqModel::steps`], and for token ids that every id is in the vocabulary
    /// ([`nn_core::Error::TokenOutOfRange`]); returns `T`.
    pub(crate) fn check_input(&self, x: &SeqInput<'_, T>, batch: usize) -> Result<usize> {
        let steps = self.steps(x, batch)?;
        if let (SeqInput::Tokens(ids), Some(embed)) = (x, &self.embed) {
            let vocab = embed.vocab_size();
            if let Some((index, &token)) = ids.iter().enumerate().find(|(_, t)| **t >= vocab) {
                return Err(nn_core::Error::TokenOutOfRange {
                    op: "SeqModel token ids",
                    index,
                    token,
                    vocab,
                }
                .into());
            }
        }
        Ok(steps)
    }

    /// [`Error::InputKind`] unless `x` is token ids for a model with an embedding or a dense
    /// input for one without.
    pub(crate) fn check_kind(&self, x: &SeqInput<'_, T>) -> Result<()> {
        let expected = if self.embed.is_some() { TOKENS } else { DENSE };
        if x.kind() != expected {
            return Err(Error::InputKind {
                op: "SeqModel",
                expected,
                got: x.kind(),
            });
        }
        Ok(())
    }

    /// The recurrent layer's input for `x` and `T`: the dense matrix itself, or the embedding
    /// rows of the ids gathered into `gathered` (resized to `(E, T*B)` when its shape differs).
    pub(crate) fn layer_input<'a>(
        &self,
        x: SeqInput<'a, T>,
        batch: usize,
        gathered: &'a mut DMatrix<T>,
    ) -> Result<(DMatrixView<'a, T>, usize)> {
        let steps = self.steps(&x, batch)?;
        match (x, &self.embed) {
            (SeqInput::Dense(x), _) => Ok((x, steps)),
            (SeqInput::Tokens(ids), Some(embed)) => {
                embed.forward_into(ids, gathered)?;
                let gathered: &'a DMatrix<T> = gathered;
                Ok((gathered.columns(0, gathered.ncols()), steps))
            }
            // `steps` refused token ids without an embedding.
            (SeqInput::Tokens(_), None) => Err(Error::InputKind {
                op: "SeqModel",
                expected: DENSE,
                got: TOKENS,
            }),
        }
    }
}
