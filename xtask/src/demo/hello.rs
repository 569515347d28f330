//! `cargo xtask demo` / `cargo xtask demo hello`: the notebook's example, trained.
//!
//! Vocabulary `h e l o` (indices 0–3), one-hot inputs. The input is `hell` and the targets are
//! `ello` (one sequence, `T = 4`, `B = 1`): after the first `l` comes `l`, after the second `o`,
//! so the model must use its recurrent state. An LSTM with 16 hidden units and a Dense head
//! (`16 → 4` logits at every step) is trained on that one sequence with Adam (full BPTT, mean
//! cross-entropy over the 4 steps), in f32.
//!
//! Output: the untrained predictions as the notebook printed them (`Input: h -> Predicted Next:
//! e`, the largest logit at each step), the trained ones, the loss before and after, and the
//! line `{"demo":"hello","predicted":"ello","loss_before":…,"loss_after":…}`. Nothing in the
//! text depends on timing, so the same `--seed` prints the same output.

use super::json::JsonLine;
use super::options::{Output, err};
use super::progress::Bar;
use crate::cli;
use clap::Parser;
use nalgebra::DMatrix;
use nn_core::Rng;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, Objective, Optimizer, SeqModel, SeqModelConfig, SeqWorkspace, Target,
    Targets, Trainer, TrainerConfig, batch_fn,
};

const VOCAB: [char; 4] = ['h', 'e', 'l', 'o'];
const INPUT: [usize; 4] = [0, 1, 2, 2]; // h e l l
const TARGET: [usize; 4] = [1, 2, 2, 3]; // e l l o
const HIDDEN: usize = 16;

/// (default) an LSTM learns the next letter of "hello"; shows predictions before and after.
// The settings are the flags; one paragraph of doc above (more would make clap's `--help` long).
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "hello",
    bin_name = "cargo xtask demo hello",
    after_help = "An LSTM (16 hidden units) and a Dense head learn the next letter of \"hello\":
input \"hell\", targets \"ello\"."
)]
pub struct Options {
    /// Random seed of the initial weights; same seed, same output.
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: u64,
    /// Adam steps on the one sequence.
    #[arg(long, value_name = "N", default_value_t = 300, value_parser = cli::positive_u64)]
    pub steps: u64,
    /// Adam learning rate.
    #[arg(long, value_name = "RATE", default_value_t = 0.02, value_parser = cli::positive_f64)]
    pub lr: f64,
}

impl Default for Options {
    /// The flags' defaults.
    fn default() -> Self {
        Options::parse_from(["hello"])
    }
}

/// What the hello demo found.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The trained model's predicted next letters for `h e l l`.
    pub predicted: String,
    /// The untrained model's predictions.
    pub predicted_before: String,
    /// Mean cross-entropy (nats) before training.
    pub loss_before: f64,
    /// Mean cross-entropy (nats) after training.
    pub loss_after: f64,
}

impl Report {
    /// `true` when the model predicts `ello`.
    pub fn success(&self) -> bool {
        self.predicted == "ello"
    }
}

/// The one-hot `(4, 4)` input, column `t` = letter `t` of `hell`.
fn input() -> DMatrix<f32> {
    let mut x = DMatrix::zeros(VOCAB.len(), INPUT.len());
    for (t, &c) in INPUT.iter().enumerate() {
        x[(c, t)] = 1.0;
    }
    x
}

/// The loss and the predicted letter (largest logit) at each step.
fn evaluate(
    model: &SeqModel<f32>,
    x: &DMatrix<f32>,
    ws: &mut SeqWorkspace<f32>,
) -> Result<(f64, String), String> {
    let loss = model
        .loss(x, 1, None, Target::NextToken(&TARGET), ws)
        .map_err(err)?;
    let predicted = ws
        .logits()
        .column_iter()
        .map(|col| VOCAB[col.argmax().0])
        .collect();
    Ok((f64::from(loss), predicted))
}

fn print_predictions(out: &mut Output<'_>, predicted: &str) -> Result<(), String> {
    for (&c, p) in INPUT.iter().zip(predicted.chars()) {
        out.line(format_args!("Input: {} -> Predicted Next: {p}", VOCAB[c]))?;
    }
    Ok(())
}

/// Runs the demo, writing its text and JSON line to `out`.
pub fn run(options: &Options, out: &mut Output<'_>) -> Result<Report, String> {
    let mut rng = Rng::seed_from(options.seed);
    let config = SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Lstm, VOCAB.len(), HIDDEN),
        VOCAB.len(),
    );
    let model = config.init::<f32>(&mut rng).map_err(err)?;
    let x = input();
    let mut ws = SeqWorkspace::new();

    out.line(format_args!(
        "hello: an LSTM ({HIDDEN} hidden units) and a Dense head learn the next letter of \"hello\""
    ))?;
    out.line("vocabulary h e l o, one-hot; input \"hell\", targets \"ello\"")?;
    out.line("")?;
    let (loss_before, predicted_before) = evaluate(&model, &x, &mut ws)?;
    out.line(format_args!("Untrained (loss {loss_before:.4}):"))?;
    print_predictions(out, &predicted_before)?;

    let optimizer = Optimizer::new(AdamConfig::new(options.lr)).map_err(err)?;
    let mut trainer = Trainer::new(
        model,
        optimizer,
        rng,
        TrainerConfig::new(Objective::NextToken),
    )
    .map_err(err)?;
    let mut source = batch_fn(|_, _: &mut Rng, batch: &mut Batch<f32>| {
        if batch.x.shape() != x.shape() {
            batch.x = x.clone();
            batch.batch = 1;
            batch.targets = Targets::Classes(TARGET.to_vec());
        }
        Ok(())
    });
    out.line("")?;
    out.line(format_args!(
        "Training: {} steps of Adam (lr {}) on the one sequence, full BPTT",
        options.steps, options.lr
    ))?;
    let bar = Bar::new(out.progress);
    for step in 1..=options.steps {
        let r = trainer.train_step(&mut source).map_err(err)?;
        bar.update(
            step as f64 / options.steps as f64,
            format!("step {step}/{}  loss {:.4}", options.steps, r.loss),
        );
    }
    bar.finish();

    let (loss_after, predicted) = evaluate(&trainer.model, &x, &mut ws)?;
    out.line("")?;
    out.line(format_args!("Trained (loss {loss_after:.4}):"))?;
    print_predictions(out, &predicted)?;
    out.line("")?;
    out.line(format_args!(
        "loss {loss_before:.4} -> {loss_after:.4} nats; predictions {predicted_before} -> {predicted}{}",
        if predicted == "ello" { " (correct)" } else { " (expected ello)" }
    ))?;
    out.line(
        JsonLine::new("hello")
            .str("predicted", &predicted)
            .num("loss_before", loss_before)
            .num("loss_after", loss_after)
            .finish(),
    )?;
    Ok(Report {
        predicted,
        predicted_before,
        loss_before,
        loss_after,
    })
}
