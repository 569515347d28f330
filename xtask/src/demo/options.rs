//! Flag values the demos share: the cell (`lstm|gru|rnn`), the optimizer
//! (`sgd|adam|adagrad|rmsprop` with `--lr`), the step/second budget, and the output sink.

use super::progress::Budget;
use crate::flags::Flags;
use nn_recurrent::{CellKind, Nonlinearity};
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

/// `--cell lstm|gru|rnn` (`rnn` is the tanh RNN).
pub fn cell(flags: &Flags, default: CellKind) -> Result<CellKind, String> {
    match flags.opt::<String>("cell")?.as_deref() {
        None => Ok(default),
        Some("lstm") => Ok(CellKind::Lstm),
        Some("gru") => Ok(CellKind::Gru),
        Some("rnn") => Ok(CellKind::Rnn(Nonlinearity::Tanh)),
        Some(other) => Err(format!("--cell: unknown cell `{other}` (lstm, gru or rnn)")),
    }
}

/// The name `--cell` takes for `cell`.
pub fn cell_name(cell: CellKind) -> &'static str {
    match cell {
        CellKind::Lstm => "lstm",
        CellKind::Gru => "gru",
        CellKind::Rnn(Nonlinearity::Tanh) => "rnn",
        CellKind::Rnn(Nonlinearity::Relu) => "rnn_relu",
    }
}

/// An optimizer by name with PyTorch's defaults besides `lr`.
pub fn optimizer_by_name(name: &str, lr: f64) -> Result<OptimizerConfig, String> {
    Ok(match name {
        "sgd" => SgdConfig::new(lr).into(),
        "adam" => AdamConfig::new(lr).into(),
        "adagrad" => AdagradConfig::new(lr).into(),
        "rmsprop" => RmsPropConfig::new(lr).into(),
        other => {
            return Err(format!(
                "--optimizer: unknown optimizer `{other}` (sgd, adam, adagrad or rmsprop)"
            ));
        }
    })
}

/// `--optimizer NAME` (when `allow_choice`) and `--lr RATE`.
pub fn optimizer(
    flags: &Flags,
    default_name: &str,
    default_lr: f64,
) -> Result<OptimizerConfig, String> {
    let name: String = flags.get("optimizer", default_name.to_string())?;
    let lr = flags.positive_f64("lr", default_lr)?;
    optimizer_by_name(&name, lr)
}

/// `--steps N` and `--seconds S` (each optional; when neither is given, `default_seconds`).
pub fn budget(flags: &Flags, default_seconds: f64) -> Result<Budget, String> {
    let steps = match flags.opt::<u64>("steps")? {
        Some(0) => return Err("--steps must be at least 1".into()),
        s => s,
    };
    let seconds = if flags.opt::<f64>("seconds")?.is_some() {
        Some(flags.positive_f64("seconds", default_seconds)?)
    } else if steps.is_none() {
        Some(default_seconds)
    } else {
        None
    };
    Ok(Budget { steps, seconds })
}

/// `--clip NORM` (global L2 norm), positive.
pub fn clip(flags: &Flags, default: f64) -> Result<f64, String> {
    flags.positive_f64("clip", default)
}
