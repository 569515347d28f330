//! The checks of a [`Trainer`]'s batch before a step changes anything: the input's kind and
//! shape, the lengths of a variable-length batch, finite inputs, and every window's targets (in
//! range, or of the right shape and finite).

use super::{Bptt, Targets, Trainer};
use crate::error::{Error, Result, invalid};
use crate::seq_model::{Objective, SeqInput};
use nn_core::Float;
use nn_core::loss::IGNORE_INDEX;

impl<T: Float> Trainer<T> {
    pub(super) fn check_batch(&self, step: u64) -> Result<()> {
        let b = &self.batch;
        let steps = b.steps();
        if b.batch == 0 || steps == 0 {
            return Err(nn_core::Error::Empty {
                op: "Trainer batch",
                what: if b.batch == 0 { "batch" } else { "steps" },
            }
            .into());
        }
        let cols = b.columns();
        if self.model.embed.is_some() && b.x.ncols() != 0 {
            return Err(Error::InputKind {
                op: "Trainer batch",
                expected: "token ids (Batch::ids, with x empty)",
                got: "a dense input (Batch::x)",
            });
        }
        // The kind of input, its shape, and every id in the vocabulary.
        let input = if b.ids.is_empty() {
            SeqInput::from(&b.x)
        } else {
            SeqInput::Tokens(&b.ids)
        };
        self.model.check_input(&input, b.batch)?;
        if !b.lengths.is_empty() {
            if b.lengths.len() != b.batch {
                return Err(nn_core::Error::LengthMismatch {
                    op: "Trainer batch lengths (one per sequence)",
                    expected: b.batch,
                    got: b.lengths.len(),
                }
                .into());
            }
            if let Some((i, &len)) = b
                .lengths
                .iter()
                .enumerate()
                .find(|&(_, &len)| len == 0 || len > steps)
            {
                return Err(invalid(format!(
                    "Trainer batch: sequence {i} has length {len}; every length must be in 1..={steps} (T)"
                )));
            }
            if matches!(self.config.bptt, Bptt::Truncated { window } if window < steps) {
                return Err(invalid(
                    "Trainer: a variable-length batch (Batch::lengths) trains with full BPTT, \
                     not truncated windows",
                ));
            }
        }
        let (len_ok, want) = match (&b.targets, self.config.objective) {
            (Targets::Classes(t), Objective::NextToken) => (t.len() == cols, cols),
            (Targets::Classes(t), Objective::LastStepClass) => (t.len() == b.batch, b.batch),
            (Targets::Values(_), Objective::LastStepMse | Objective::StepMse) => (true, 0),
            (_, obj) => {
                return Err(invalid(format!(
                    "batch targets do not fit objective {obj:?}"
                )));
            }
        };
        if !len_ok {
            let Targets::Classes(t) = &b.targets else {
                unreachable!()
            };
            return Err(nn_core::Error::LengthMismatch {
                op: "Trainer batch targets",
                expected: want,
                got: t.len(),
            }
            .into());
        }
        if let Some(index) = b.x.iter().position(|v| !v.finite()) {
            return Err(Error::NonFiniteInput {
                step,
                index,
                value: b.x.as_slice()[index].as_f64(),
            });
        }
        // Every window's targets, before any window makes its update.
        let classes = self.model.output_size();
        match &b.targets {
            Targets::Classes(t) => {
                let op = "Trainer batch targets";
                if let Some((index, &target)) = t
                    .iter()
                    .enumerate()
                    .find(|(_, c)| **c >= classes && **c != IGNORE_INDEX)
                {
                    return Err(nn_core::Error::TargetOutOfRange {
                        op,
                        index,
                        target,
                        classes,
                    }
                    .into());
                }
                if t.iter().all(|&c| c == IGNORE_INDEX) {
                    return Err(nn_core::Error::AllTargetsIgnored { op }.into());
                }
            }
            Targets::Values(y) => {
                let cols = if self.config.objective == Objective::StepMse {
                    cols
                } else {
                    b.batch
                };
                nn_core::check_shape("Trainer batch targets", y, nn_core::Shape(classes, cols))?;
                nn_core::check_finite("Trainer batch targets", y)?;
            }
        }
        Ok(())
    }
}
