//! Forward only for a [`SeqModel`]: the layer's [`Recurrent::infer`](nn_recurrent::Recurrent::infer)
//! (no cache for backward) and the head, `logits (O, T*B)` or `(O, B)` as in
//! [`SeqModel::forward`], bit for bit. With an embedding, the ids' rows `(E, T*B)` are gathered
//! into a buffer allocated for the call, then read as the dense input is.

use super::{SeqInput, SeqModel, ensure};
use crate::error::Result;
use nalgebra::DMatrix;
use nn_core::Float;
use nn_recurrent::{InferScratch, Lengths, RecurrentState};

impl<T: Float> SeqModel<T> {
    /// The logits of [`SeqModel::forward`] (the same bits), without keeping what backward needs:
    /// the layer's output and final state stay in `scratch` ([`InferScratch::output`],
    /// [`InferScratch::final_state`]), the head's output goes into `logits` (resized to `(O, T*B)`,
    /// or `(O, B)` with `last_step_only`, when its shape differs). `x` is dense input or token
    /// ids, as in [`SeqModel::forward`]. Errors as [`SeqModel::forward`].
    pub fn infer<'x, 'l>(
        &self,
        x: impl Into<SeqInput<'x, T>>,
        batch: impl Into<Lengths<'l>>,
        initial: Option<&RecurrentState<T>>,
        last_step_only: bool,
        scratch: &mut InferScratch<T>,
        logits: &mut DMatrix<T>,
    ) -> Result<()> {
        let mut gathered = DMatrix::zeros(0, 0);
        let lengths: Lengths<'l> = batch.into();
        let batch = lengths.batch();
        let (x, steps) = self.layer_input(x.into(), batch, &mut gathered)?;
        let (first, cols) = if last_step_only {
            ((steps - 1) * batch, batch)
        } else {
            (0, steps * batch)
        };
        ensure(logits, "SeqModel logits", self.output_size(), cols)?;
        let (out, _) = self.rnn.infer_with(x, lengths, initial, scratch)?;
        if last_step_only && matches!(lengths, Lengths::Each(_)) {
            // Each sequence's own last step, gathered (as `SeqModel::forward` does).
            let mut last = DMatrix::zeros(out.nrows(), batch);
            for (j, c) in super::lengths::last_columns(lengths, steps).enumerate() {
                last.column_mut(j).copy_from(&out.column(c));
            }
            self.head.forward_to(&last, logits)?;
        } else if matches!(lengths, Lengths::Each(_)) {
            // The head on the real positions, the bias elsewhere (as `SeqModel::forward` does).
            let real: Vec<usize> = super::lengths::real_columns(lengths, steps).collect();
            let mut gathered = DMatrix::zeros(out.nrows(), real.len());
            for (j, &c) in real.iter().enumerate() {
                gathered.column_mut(j).copy_from(&out.column(c));
            }
            let mut packed = DMatrix::zeros(self.output_size(), real.len());
            self.head.forward_to(&gathered, &mut packed)?;
            for c in 0..cols {
                logits
                    .column_mut(c)
                    .copy_from(&self.head.bias.value.column(0));
            }
            for (j, &c) in real.iter().enumerate() {
                logits.column_mut(c).copy_from(&packed.column(j));
            }
        } else {
            self.head.forward_to(&out.columns(first, cols), logits)?;
        }
        Ok(())
    }
}
