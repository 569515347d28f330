//! Which steps of a sequence batch are real: all `T` of every sequence ([`Lengths::Full`]), or
//! `lengths[b]` of sequence `b` ([`Lengths::Each`], PyTorch's
//! `pack_padded_sequence(x, lengths, enforce_sorted=False)` followed by
//! `pad_packed_sequence(..., total_length=T)`).
//!
//! The input stays padded, `(I, T*B)` with column `t*B + b`; columns `t*B + b` with
//! `t >= lengths[b]` are padding: never read, their output is 0 and their input gradient 0.

use nn_core::{Error, Result};

/// The real steps of each sequence of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lengths<'a> {
    /// `B` sequences, each running all `T` steps.
    Full(usize),
    /// Sequence `b` runs steps `0..lengths[b]`, each length in `1..=T`, in any order;
    /// `B = lengths.len()`.
    Each(&'a [usize]),
}

impl Lengths<'_> {
    /// `B`.
    pub fn batch(&self) -> usize {
        match self {
            Lengths::Full(b) => *b,
            Lengths::Each(l) => l.len(),
        }
    }

    /// Checks every length against `steps` (`1..=T`); `Ok(true)` when every sequence runs all
    /// `T` steps (the batch is then a full one).
    pub(crate) fn check(&self, op: &'static str, steps: usize) -> Result<bool> {
        let Lengths::Each(lengths) = self else {
            return Ok(true);
        };
        if let Some((b, &len)) = lengths
            .iter()
            .enumerate()
            .find(|&(_, &len)| len == 0 || len > steps)
        {
            return Err(Error::InvalidConfig(format!(
                "{op}: sequence {b} has length {len}; every length must be in 1..={steps} (T)"
            )));
        }
        Ok(lengths.iter().all(|&len| len == steps))
    }
}
