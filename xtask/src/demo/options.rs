//! What the demos share: the optimizer names of `--optimizer` (`sgd|adam|adagrad|rmsprop`,
//! with `--lr`), the step/second budget of `--steps` and `--seconds`, and the output sink.
//! (The cell of `--cell` is a [`nn_recurrent::CellKind`], parsed and printed by its own
//! `FromStr` and `Display`; the demos print the tanh RNN as `rnn`, its flag spelling.)

use super::progress::Budget;
use nn_train::{AdagradConfig, AdamConfig, OptimizerConfig, RmsPropConfig, SgdConfig};
use std::fmt::Display;
use std::io::Write;

/// Where a demo writes: its text lines (stdout in the command, a buffer in tests) and whether
/// it may draw a progress bar on stderr.
pub struct Output<'a> {
    /// The demo's text; its last line is the JSON line.
    pub text: &'a mut dyn Write,
    /// Draw the progress bar (when stderr is a terminal).
    pub progress: bool,
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl Output<'_> {
    /// Writes `line` and a newline, and flushes, so piped output appears as it comes.
    pub fn line(&mut self, line: impl Display) -> Result<(), String> {
        writeln!(self.text, "{line}")
            .and_then(|()| self.text.flush())
            .map_err(|e| format!("writing the output: {e}"))
    }
}

/// Any displayable error as the one-line `String` the commands return.
pub fn err(e: impl Display) -> String {
    e.to_string()
}

/// `--optimizer NAME`: an optimizer with PyTorch's defaults besides `--lr`: `torch.optim.SGD`,
/// `Adam`, `Adagrad` or `RMSprop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerName {
    // No doc comments here: clap would show them, one per line, in a long `--help`.
    Sgd,
    Adam,
    Adagrad,
    Rmsprop,
}

impl OptimizerName {
    /// The optimizer with learning rate `lr`.
    pub fn config(self, lr: f64) -> OptimizerConfig {
        match self {
            OptimizerName::Sgd => SgdConfig::new(lr).into(),
            OptimizerName::Adam => AdamConfig::new(lr).into(),
            OptimizerName::Adagrad => AdagradConfig::new(lr).into(),
            OptimizerName::Rmsprop => RmsPropConfig::new(lr).into(),
        }
    }
}

/// `--steps N` and `--seconds S` (each optional; when neither is given, `default_seconds`).
pub fn budget(steps: Option<u64>, seconds: Option<f64>, default_seconds: f64) -> Budget {
    Budget {
        steps,
        seconds: match (steps, seconds) {
            (None, None) => Some(default_seconds),
            (_, s) => s,
        },
    }
}
