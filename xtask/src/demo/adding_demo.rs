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
use super::options::{self, Output, cell_name, err};
use super::progress::{Bar, Budget};
use crate::flags::Flags;
use nalgebra::DMatrix;
use nn_core::Rng;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, Clip, Objective, Optimizer, OptimizerConfig, SeqModel, SeqModelConfig,
    SeqWorkspace, Target, Targets, Trainer, TrainerConfig, batch_fn,
};
use std::time::Instant;

/// `--help` text.
pub const HELP: &str =
    "cargo xtask demo adding [FLAGS]: the adding problem. Each step is (value from U[0,1],
marker); two markers, one in each half; the target is the sum of the marked values, read at the
last step. Predicting 1 always gives MSE 0.167. Trains until the MSE on 1000 fixed test
sequences (checked every 100 steps) is under --target-mse, or the budget ends.

flags:
  --len T             sequence length (default 100)
  --cell C            lstm, gru or rnn (default lstm)
  --hidden H          hidden units (default 64)
  --batch B           sequences per step (default 32)
  --optimizer NAME    sgd, adam, adagrad or rmsprop (default adam)
  --lr RATE           learning rate (default 0.005)
  --clip NORM         clip the global gradient norm (default 1)
  --target-mse X      stop when the test MSE is under X (default 0.01)
  --seconds S         time budget (default 120)
  --steps N           step budget (default: none; with --seconds, whichever ends first)
  --seed N            random seed (default 0)

exit status 0 when solved, 1 when the budget ended first.";

/// Flags taking a value.
pub const FLAGS: &[&str] = &[
    "len",
    "cell",
    "hidden",
    "batch",
    "optimizer",
    "lr",
    "clip",
    "target-mse",
    "seconds",
    "steps",
    "seed",
];

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
    fn default() -> Self {
        Options {
            len: 100,
            cell: CellKind::Lstm,
            hidden: 64,
            batch: 32,
            optimizer: AdamConfig::new(0.005).into(),
            clip: 1.0,
            target_mse: 0.01,
            budget: Budget {
                steps: None,
                seconds: Some(120.0),
            },
            seed: 0,
        }
    }
}

impl Options {
    /// Reads the flags listed in [`HELP`].
    pub fn from_flags(flags: &Flags) -> Result<Options, String> {
        let d = Options::default();
        let len = flags.positive("len", d.len)?;
        if len < 2 {
            return Err("--len must be at least 2 (one marker in each half)".into());
        }
        Ok(Options {
            len,
            cell: options::cell(flags, d.cell)?,
            hidden: flags.positive("hidden", d.hidden)?,
            batch: flags.positive("batch", d.batch)?,
            optimizer: options::optimizer(flags, "adam", 0.005)?,
            clip: options::clip(flags, d.clip)?,
            target_mse: flags.positive_f64("target-mse", d.target_mse)?,
            budget: options::budget(flags, 120.0)?,
            seed: flags.get("seed", d.seed)?,
        })
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

    let cell = cell_name(options.cell);
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
            .str("cell", cell)
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
