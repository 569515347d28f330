//! `cargo xtask demo reber`: next-symbol prediction on the embedded Reber grammar
//! ([`super::reber`]).
//!
//! The model reads a string one-hot over the 7 symbols and predicts the next symbol at every
//! step (objective `NextToken`, full BPTT). A string succeeds when, at every step, every legal
//! next symbol scores above every illegal one (the largest illegal logit is below the smallest
//! legal one); the second-to-last step, where only the symbol seen at position 1 is legal, needs
//! memory across the whole string.
//!
//! Lengths: strings in a batch have different lengths. The batch is a variable-length one
//! (`Batch::lengths`, PyTorch's packed sequences): string `j` of `n` symbols runs `n - 1` steps,
//! the columns past them are padding that the layer never reads, and the loss covers the real
//! positions only. Evaluation runs the held-out strings the same way and looks at their real
//! positions (`0 .. len - 1` of each string).
//!
//! Training draws 32 fresh strings per step; every 50 steps the 256 held-out strings (drawn
//! once from their own generator) are checked, and training stops when all succeed or the
//! budget ends. `train_s` is the wall time of the whole loop, checks included. f32 throughout.

use super::json::JsonLine;
use super::limits;
use super::options::{self, Output, err};
use super::progress::{Bar, Budget};
use super::reber::{self, SYMBOLS};
use crate::cli;
use clap::Parser;
use nalgebra::DMatrix;
use nn_core::Rng;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, Objective, Optimizer, SeqModel, SeqModelConfig, SeqWorkspace, Targets,
    Trainer, TrainerConfig, batch_fn,
};
use std::time::Instant;

/// The embedded Reber grammar: predict every legal next symbol.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "reber",
    bin_name = "cargo xtask demo reber",
    after_help = "A string succeeds when, at every step, every legal next symbol scores above every
illegal one. Trains until all 256 held-out strings succeed (checked every 50 steps) or the
budget ends.

exit status 0 when all held-out strings succeed, 1 when the budget ended first."
)]
pub struct Args {
    /// lstm, gru, rnn (tanh) or rnn_relu.
    #[arg(long, value_name = "C", default_value = "lstm")]
    pub cell: CellKind,
    /// Hidden units.
    #[arg(long, value_name = "H", default_value_t = 16, value_parser = cli::positive_usize)]
    pub hidden: usize,
    /// Strings per step.
    #[arg(long, value_name = "B", default_value_t = 32, value_parser = cli::positive_usize)]
    pub batch: usize,
    /// Adam learning rate.
    #[arg(long, value_name = "RATE", default_value_t = 0.01, value_parser = cli::positive_f64)]
    pub lr: f64,
    /// Time budget [default: 60, with --steps: none].
    #[arg(long, value_name = "S", value_parser = cli::positive_f64)]
    pub seconds: Option<f64>,
    /// Step budget (with --seconds, whichever ends first).
    #[arg(long, value_name = "N", value_parser = cli::positive_u64)]
    pub steps: Option<u64>,
    /// Random seed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

/// `--seconds` when neither budget is given.
const DEFAULT_SECONDS: f64 = 60.0;

/// Held-out strings.
pub const TEST_SIZE: usize = 256;
/// Steps between checks.
pub const CHECK_EVERY: u64 = 50;
/// The length the memory estimate assumes for a batch's longest string (most are under 30).
const STEPS_ESTIMATE: usize = 64;

/// Settings of the Reber demo.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The recurrent cell.
    pub cell: CellKind,
    /// Hidden units.
    pub hidden: usize,
    /// Strings per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Steps and seconds.
    pub budget: Budget,
    /// Random seed.
    pub seed: u64,
}

impl Default for Options {
    /// The flags' defaults.
    fn default() -> Self {
        Args::parse_from(["reber"]).into()
    }
}

impl From<Args> for Options {
    fn from(a: Args) -> Options {
        Options {
            cell: a.cell,
            hidden: a.hidden,
            batch: a.batch,
            lr: a.lr,
            budget: options::budget(a.steps, a.seconds, DEFAULT_SECONDS),
            seed: a.seed,
        }
    }
}

/// What the Reber demo reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Training steps taken.
    pub steps: u64,
    /// Fraction of held-out strings that succeed.
    pub test_string_accuracy: f64,
    /// `true` when all succeed.
    pub solved: bool,
    /// Wall time of the training loop (checks included), seconds.
    pub train_s: f64,
}

/// One-hot inputs `(7, T*B)`, targets and lengths of `strings` (`T` = longest length − 1;
/// string `j` runs `len − 1` steps, and the columns after them are padding, left 0).
fn encode(
    strings: &[Vec<usize>],
    x: &mut DMatrix<f32>,
    targets: &mut Vec<usize>,
    lengths: &mut Vec<usize>,
) {
    let b = strings.len();
    let steps = strings.iter().map(Vec::len).max().unwrap_or(1) - 1;
    *x = DMatrix::zeros(SYMBOLS.len(), steps * b);
    targets.clear();
    targets.resize(steps * b, nn_core::loss::IGNORE_INDEX);
    lengths.clear();
    for (j, s) in strings.iter().enumerate() {
        lengths.push(s.len() - 1);
        for t in 0..s.len() - 1 {
            x[(s[t], t * b + j)] = 1.0;
            targets[t * b + j] = s[t + 1];
        }
    }
}

/// The held-out strings, encoded once, with their legal-next masks.
#[derive(Debug)]
struct TestSet {
    strings: Vec<Vec<usize>>,
    legal: Vec<Vec<u8>>,
    x: DMatrix<f32>,
    lengths: Vec<usize>,
}

impl TestSet {
    fn new(rng: &mut Rng) -> TestSet {
        let strings: Vec<_> = (0..TEST_SIZE).map(|_| reber::generate(rng)).collect();
        let legal = strings.iter().map(|s| reber::legal_next(s)).collect();
        let (mut x, mut lengths) = (DMatrix::zeros(0, 0), Vec::new());
        encode(&strings, &mut x, &mut Vec::new(), &mut lengths);
        TestSet {
            strings,
            legal,
            x,
            lengths,
        }
    }

    /// The number of strings whose every real step ranks all legal symbols above all illegal.
    fn successes(
        &self,
        model: &SeqModel<f32>,
        ws: &mut SeqWorkspace<f32>,
    ) -> Result<usize, String> {
        let b = self.strings.len();
        model
            .forward(&self.x, &self.lengths, None, false, ws)
            .map_err(err)?;
        let logits = ws.logits();
        let ok = |j: usize| {
            self.legal[j].iter().enumerate().all(|(t, &mask)| {
                let col = logits.column(t * b + j);
                let (mut lo_legal, mut hi_illegal) = (f32::INFINITY, f32::NEG_INFINITY);
                for (sym, &v) in col.iter().enumerate() {
                    if mask & (1 << sym) != 0 {
                        lo_legal = lo_legal.min(v);
                    } else {
                        hi_illegal = hi_illegal.max(v);
                    }
                }
                lo_legal > hi_illegal
            })
        };
        Ok((0..b).filter(|&j| ok(j)).count())
    }
}

/// Runs the demo, writing its text and JSON line to `out`.
pub fn run(options: &Options, out: &mut Output<'_>) -> Result<Report, String> {
    limits::reber(
        options.cell,
        options.hidden,
        options.batch,
        TEST_SIZE,
        STEPS_ESTIMATE,
    )?;
    let mut rng = Rng::seed_from(options.seed);
    let test = TestSet::new(&mut Rng::seed_from(options.seed ^ 0x05eb_e12e));
    let v = SYMBOLS.len();
    let model = SeqModelConfig::new(RecurrentConfig::new(options.cell, v, options.hidden), v)
        .init::<f32>(&mut rng)
        .map_err(err)?;
    let optimizer = Optimizer::new(AdamConfig::new(options.lr)).map_err(err)?;
    let mut trainer = Trainer::new(
        model,
        optimizer,
        rng,
        TrainerConfig::new(Objective::NextToken),
    )
    .map_err(err)?;
    let batch = options.batch;
    let mut strings = Vec::with_capacity(batch);
    let mut source = batch_fn(move |_, rng: &mut Rng, b: &mut Batch<f32>| {
        strings.clear();
        strings.extend((0..batch).map(|_| reber::generate(rng)));
        let mut targets = match std::mem::replace(&mut b.targets, Targets::Classes(Vec::new())) {
            Targets::Classes(t) => t,
            Targets::Values(_) => Vec::new(),
        };
        encode(&strings, &mut b.x, &mut targets, &mut b.lengths);
        b.batch = batch;
        b.targets = Targets::Classes(targets);
        Ok(())
    });

    let cell = format!("{:#}", options.cell);
    out.line(format_args!(
        "embedded Reber grammar: {cell} with {} hidden units, batch {batch}, Adam lr {}",
        options.hidden, options.lr
    ))?;
    out.line(format_args!(
        "target: all {TEST_SIZE} held-out strings right (every legal next symbol above every illegal one, at every step)"
    ))?;

    let mut ws = SeqWorkspace::new();
    let mut right = test.successes(&trainer.model, &mut ws)?;
    let bar = Bar::new(out.progress);
    let started = Instant::now();
    let mut last_print = 0.0;
    let mut recent = 0.0;
    loop {
        if options
            .budget
            .spent(trainer.step(), started.elapsed().as_secs_f64())
        {
            break;
        }
        let r = trainer.train_step(&mut source).map_err(err)?;
        recent = if r.step == 1 {
            r.loss
        } else {
            0.9 * recent + 0.1 * r.loss
        };
        if r.step % CHECK_EVERY == 0 {
            right = test.successes(&trainer.model, &mut ws)?;
            let seconds = started.elapsed().as_secs_f64();
            if right == TEST_SIZE || seconds - last_print >= 5.0 {
                last_print = seconds;
                bar.suspend(|| out.line(format_args!(
                    "step {:>6}  {seconds:>6.2} s  loss {recent:.4}  held-out strings right {right}/{TEST_SIZE}",
                    r.step
                )))?;
            }
            if right == TEST_SIZE {
                break;
            }
        }
        bar.update(
            options
                .budget
                .fraction(trainer.step(), started.elapsed().as_secs_f64()),
            format!(
                "step {}  loss {recent:.4}  right {right}/{TEST_SIZE}",
                r.step
            ),
        );
    }
    let train_s = started.elapsed().as_secs_f64();
    bar.finish();
    let steps = trainer.step();
    if steps % CHECK_EVERY != 0 {
        right = test.successes(&trainer.model, &mut ws)?;
    }
    let solved = right == TEST_SIZE;
    let accuracy = right as f64 / TEST_SIZE as f64;
    out.line(format_args!(
        "{} after {steps} steps in {train_s:.2} s: {right}/{TEST_SIZE} held-out strings right",
        if solved { "solved" } else { "not solved" }
    ))?;
    out.line(
        JsonLine::new("reber")
            .str("cell", &cell)
            .int("steps", steps)
            .num("test_string_accuracy", accuracy)
            .num("train_s", train_s)
            .finish(),
    )?;
    Ok(Report {
        steps,
        test_string_accuracy: accuracy,
        solved,
        train_s,
    })
}
