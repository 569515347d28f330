//! [`SeqModel::step`]: one time step of the model for streaming inference: `x_t` `(I, B)` (or,
//! with an embedding, `B` token ids) and the state `(H, L*B)` in, the state updated in place and
//! the head's logits `(O, B)` out.
//!
//! ```text
//! x_t    (E, B)  = W_emb[ids]ᵀ                     (with an embedding: the rows, gathered)
//! h_t    (H, B)  = Recurrent::step(x_t, state)     (the top layer's new h)
//! logits (O, B)  = W · h_t + b
//! ```
//! It is [`Recurrent::step`](nn_recurrent::Recurrent::step) followed by the head, so feeding a
//! sequence step by step gives the bits of [`SeqModel::forward`]'s logits (tested), under the
//! same condition as the layer's step (inputs of at most 256 features per layer). All buffers
//! live in a [`SeqStepScratch`]: a warm step allocates nothing.

use crate::error::Result;
use crate::seq_model::{SeqInput, SeqModel};
use nalgebra::DMatrix;
use nn_core::Float;
use nn_recurrent::{RecurrentState, StepScratch};

/// Buffers of [`SeqModel::step`], sized on first use (and again when `B` changes).
#[derive(Debug)]
pub struct SeqStepScratch<T: Float> {
    rnn: StepScratch<T>,
    /// `(O, B)`.
    logits: DMatrix<T>,
    /// With an embedding: the ids' rows `(E, B)`.
    embedded: DMatrix<T>,
}

impl<T: Float> Default for SeqStepScratch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> SeqStepScratch<T> {
    /// Empty buffers; the first step sizes them.
    pub fn new() -> Self {
        SeqStepScratch {
            rnn: StepScratch::new(),
            logits: DMatrix::zeros(0, 0),
            embedded: DMatrix::zeros(0, 0),
        }
    }
}

impl<T: Float> SeqModel<T> {
    /// One time step (unidirectional layers only): `x_t` `(I, B)`, a matrix or a view
    /// (`x.columns(t * b, b)`), or for a model with an embedding `B` token ids
    /// (`&ids[t * b..(t + 1) * b]`; the step reads their rows), `state` `(H, L*B)` updated in
    /// place (start from [`nn_recurrent::Recurrent::zero_state`] or a forward's final state);
    /// returns the logits `(O, B)`. Errors as [`nn_recurrent::Recurrent::step`]'s (a
    /// bidirectional layer, shapes, a non-finite input or state, an overflow), a head output
    /// that overflows, the other kind of input than the model takes
    /// ([`crate::Error::InputKind`]) and ids outside the vocabulary.
    pub fn step<'s, 'x>(
        &self,
        x_t: impl Into<SeqInput<'x, T>>,
        state: &mut RecurrentState<T>,
        scratch: &'s mut SeqStepScratch<T>,
    ) -> Result<&'s DMatrix<T>> {
        let x_t: SeqInput<'x, T> = x_t.into();
        self.check_kind(&x_t)?;
        let h = match (x_t, &self.embed) {
            (SeqInput::Tokens(ids), Some(embed)) => {
                embed.forward_into(ids, &mut scratch.embedded)?;
                self.rnn.step(&scratch.embedded, state, &mut scratch.rnn)?
            }
            (SeqInput::Dense(x), _) => self.rnn.step(x, state, &mut scratch.rnn)?,
            // `check_kind` refused token ids without an embedding.
            (SeqInput::Tokens(_), None) => {
                return Err(crate::error::invalid(
                    "SeqModel: token ids need an embedding",
                ));
            }
        };
        let shape = (self.output_size(), h.ncols());
        if scratch.logits.shape() != shape {
            scratch.logits = nn_core::try_zeros("SeqModel::step logits", shape.0, shape.1)?;
        }
        self.head.forward_to(h, &mut scratch.logits)?;
        Ok(&scratch.logits)
    }
}
