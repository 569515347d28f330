//! `cargo xtask demo adding`: the adding problem ([`super::adding`]), a test of long-range
//! memory.
//!
//! Each of `T` steps is a pair (value from `U[0, 1]`, marker); exactly two markers are set, one
//! in each half, and the target is the sum of the two marked values, read from the head at the
//! last step (objective `LastStepMse`, full BPTT over all `T` steps). Always predicting 1 gives
//! MSE = 1/6 ≈ 0.167, the baseline a model that learned nothing stays at.
//!
//! Training draws a fresh batch every step (from the trainer's RNG) and, every 100 steps,
//! measures the MSE on a fixed test set of 1000 sequences (drawn once from its own generator);
//! it stops when that MSE is under `--target-mse`, or when the budget ends. `train_s` is the
//! wall time of the whole loop, test checks included. f32 throughout.

use super::adding;
use super::json::JsonLine;
use super::limits;
use super::options::{self, OptimizerName, Output, err};
use super::progress::{Bar, Budget};
use crate::cli;
use clap::Parser;
use nalgebra::DMatrix;
use nn_core::Rng;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    Batch, Clip, Objective, Optimizer, OptimizerConfig, SeqModel, SeqModelConfig, SeqWorkspace,
    Target, Targets, Trainer, TrainerConfig, batch_fn,
};
use std::time::Instant;

/// The adding problem: sum the two marked values of a long sequence.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "adding",
    bin_name = "cargo xtask demo adding",
    after_help = "Each step is (value from U[0,1], marker); two markers, one in each half; the target
is the sum of the marked values, read at the last step. Predicting 1 always gives MSE 0.167.
Trains until the MSE on 1000 fixed test sequences (checked every 100 steps) is under
--target-mse, or the budget ends.

exit status 0 when solved, 1 when the budget ended first."
)]
pub struct Args {
    /// Sequence length.
    #[arg(long, value_name = "T", default_value_t = 100, value_parser = length)]
    pub len: usize,
    /// lstm, gru, rnn (tanh) or rnn_relu.
    #[arg(long, value_name = "C", default_value = "lstm")]
    pub cell: CellKind,
    /// Hidden units.
    #[arg(long, value_name = "H", default_value_t = 64, value_parser = cli::positive_usize)]
    pub hidden: usize,
    /// Sequences per step.
    #[arg(long, value_name = "B", default_value_t = 32, value_parser = cli::positive_usize)]
    pub batch: usize,
    /// The optimizer.
    #[arg(long, value_name = "NAME", value_enum, default_value_t = OptimizerName::Adam)]
    pub optimizer: OptimizerName,
    /// Learning rate.
    #[arg(long, value_name = "RATE", default_value_t = 0.005, value_parser = cli::positive_f64)]
    pub lr: f64,
    /// Clip the global gradient norm.
    #[arg(long, value_name = "NORM", default_value_t = 1.0, value_parser = cli::positive_f64)]
    pub clip: f64,
    /// Stop when the test MSE is under X.
    #[arg(long, value_name = "X", default_value_t = 0.01, value_parser = cli::positive_f64)]
    pub target_mse: f64,
    /// Time budget [default: 120, with --steps: none].
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
const DEFAULT_SECONDS: f64 = 120.0;

/// `--len`: at least 2, one marker in each half.
fn length(s: &str) -> Result<usize, String> {
    match cli::positive_usize(s)? {
        1 => Err("must be at least 2 (one marker in each half)".into()),
        n => Ok(n),
    }
}

/// Test sequences.
pub const TEST_SIZE: usize = 1000;
/// Steps between test checks.
pub const CHECK_EVERY: u64 = 100;
/// The MSE of always predicting 1: `Var(U₁ + U₂) = 1/6`.
pub const BASELINE_MSE: f64 = 1.0 / 6.0;

/// Settings of the adding demo.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Sequence length `T` (≥ 2).
    pub len: usize,
    /// The recurrent cell.
    pub cell: CellKind,
    /// Hidden units.
    pub hidden: usize,
    /// Batch size.
    pub batch: usize,
    /// Optimizer and learning rate.
    pub optimizer: OptimizerConfig,
    /// Global-norm clipping threshold.
    pub clip: f64,
    /// Stop when the test MSE is under this.
    pub target_mse: f64,
    /// Steps and seconds.
    pub budget: Budget,
    /// Random seed.
    pub seed: u64,
}

impl Default for Options {
    /// The flags' defaults.
    fn default() -> Self {
        Args::parse_from(["adding"]).into()
    }
}

impl From<Args> for Options {
    fn from(a: Args) -> Options {
        Options {
            len: a.len,
            cell: a.cell,
            hidden: a.hidden,
            batch: a.batch,
            optimizer: a.optimizer.config(a.lr),
            clip: a.clip,
            target_mse: a.target_mse,
            budget: options::budget(a.steps, a.seconds, DEFAULT_SECONDS),
            seed: a.seed,
        }
    }
}

/// What the adding demo reached.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Training steps taken.
    pub steps: u64,
    /// The last test MSE measured.
    pub test_mse: f64,
    /// `true` when the test MSE got under the target.
    pub solved: bool,
    /// Wall time of the training loop (test checks included), seconds.
    pub train_s: f64,
}

/// Mean squared error of `model` on the test set, in chunks of 250 sequences.
fn test_mse(
    model: &SeqModel<f32>,
    test: &[(DMatrix<f32>, DMatrix<f32>)],
    ws: &mut SeqWorkspace<f32>,
) -> Result<f64, String> {
    let (mut sum, mut n) = (0.0, 0usize);
    for (x, y) in test {
        let b = y.ncols();
        let loss = model
            .loss(x, b, None, Target::LastStepMse(y), ws)
            .map_err(err)?;
        sum += f64::from(loss) * b as f64;
        n += b;
    }
    Ok(sum / n as f64)
}

/// Runs the demo, writing its text and JSON line to `out`.
pub fn run(options: &Options, out: &mut Output<'_>) -> Result<Report, String> {
    if options.len < 2 {
        return Err("--len must be at least 2 (one marker in each half)".into());
    }
    let (len, batch) = (options.len, options.batch);
    limits::adding(options.cell, options.hidden, len, batch, TEST_SIZE)?;
    let mut rng = Rng::seed_from(options.seed);
    let mut test_rng = Rng::seed_from(options.seed ^ 0x07e5_75e7);
    let test: Vec<_> = (0..TEST_SIZE / 250)
        .map(|_| adding::batch::<f32>(len, 250, &mut test_rng))
        .collect();
    let rnn = RecurrentConfig::new(options.cell, 2, options.hidden);
    let model = SeqModelConfig::new(rnn, 1)
        .init::<f32>(&mut rng)
        .map_err(err)?;
    let optimizer = Optimizer::new(options.optimizer).map_err(err)?;
    let config = TrainerConfig::new(Objective::LastStepMse).with_clip(Clip::Norm(options.clip));
    let mut trainer = Trainer::new(model, optimizer, rng, config).map_err(err)?;
    let mut source = batch_fn(move |_, rng: &mut Rng, b: &mut Batch<f32>| {
        let (x, y) = adding::batch(len, batch, rng);
        b.x = x;
        b.batch = batch;
        b.targets = Targets::Values(y);
        Ok(())
    });

    let cell = format!("{:#}", options.cell);
    out.line(format_args!(
        "adding problem, T = {len}: {cell} with {} hidden units, batch {batch}, {} lr {}, clip {}",
        options.hidden,
        options.optimizer.kind(),
        options.optimizer.lr(),
        options.clip
    ))?;
    out.line(format_args!(
        "baseline (always predict 1): MSE {BASELINE_MSE:.3}; target: test MSE < {}",
        options.target_mse
    ))?;

    let mut ws = SeqWorkspace::new();
    let mut mse = test_mse(&trainer.model, &test, &mut ws)?;
    let bar = Bar::new(out.progress);
    let started = Instant::now();
    let mut last_print = 0.0;
    let mut solved = false;
    let mut recent = 0.0;
    loop {
        let seconds = started.elapsed().as_secs_f64();
        if options.budget.spent(trainer.step(), seconds) {
            break;
        }
        let r = trainer.train_step(&mut source).map_err(err)?;
        recent = if r.step == 1 {
            r.loss
        } else {
            0.95 * recent + 0.05 * r.loss
        };
        if r.step % CHECK_EVERY == 0 {
            mse = test_mse(&trainer.model, &test, &mut ws)?;
            solved = mse < options.target_mse;
            let seconds = started.elapsed().as_secs_f64();
            if solved || seconds - last_print >= 5.0 {
                last_print = seconds;
                bar.suspend(|| {
                    out.line(format_args!(
                        "step {:>6}  {seconds:>6.1} s  train MSE {recent:.4}  test MSE {mse:.4}",
                        r.step
                    ))
                })?;
            }
            if solved {
                break;
            }
        }
        bar.update(
            options
                .budget
                .fraction(trainer.step(), started.elapsed().as_secs_f64()),
            format!("step {}  train MSE {recent:.4}  test MSE {mse:.4}", r.step),
        );
    }
    let train_s = started.elapsed().as_secs_f64();
    bar.finish();
    let steps = trainer.step();
    if !solved && steps % CHECK_EVERY != 0 {
        mse = test_mse(&trainer.model, &test, &mut ws)?;
        solved = mse < options.target_mse;
    }
    out.line(format_args!(
        "{} after {steps} steps in {train_s:.1} s: test MSE {mse:.4} (baseline {BASELINE_MSE:.3})",
        if solved { "solved" } else { "not solved" }
    ))?;
    out.line(
        JsonLine::new("adding")
            .str("cell", &cell)
            .int("len", len as u64)
            .int("steps", steps)
            .num("test_mse", mse)
            .num("baseline_mse", BASELINE_MSE)
            .bool("solved", solved)
            .num("train_s", train_s)
            .finish(),
    )?;
    Ok(Report {
        steps,
        test_mse: mse,
        solved,
        train_s,
    })
}
