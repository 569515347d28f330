//! `cargo xtask demo charlm`: a character language model on any text file.
//!
//! Data: the text's characters form the vocabulary (`V`), inputs are one-hot `(V, T*B)` and the
//! targets are the next characters ([`super::text`]). With `--embed N` the model starts with an
//! embedding `(V, N)` (`embed.weight`) and reads the `T*B` character ids instead (default: the
//! one-hot input, bit for bit as before). `--dropout P` (with `--layers` 2 or more) drops each
//! value between stacked layers with probability `P` in training steps (masks drawn from the
//! trainer's checkpointed generator); validation and sampling run without it. The last 10% of
//! the text is validation.
//!
//! Training (f32): each step takes `B` windows of `T = --seq` characters at random positions of
//! the training text, each started from a zero state, and makes one update on the mean
//! cross-entropy of all `T*B` next-character predictions (BPTT through the whole window, so
//! training sees exactly what validation measures). With `--carry`, the windows are instead the
//! next `T` characters of `B` streams laid evenly over the training text and the final state is
//! carried into the next step (truncated BPTT, char-rnn style).
//!
//! Validation loss: mean cross-entropy in nats per character over the validation text cut into
//! non-overlapping windows of `T` characters, each started from a zero state. During training it
//! is estimated every `--val-every` steps on 128 of those windows, evenly spaced; the final
//! `val_loss` is over all of them.
//!
//! Time: `--seconds` counts training steps only (batch, forward, backward, update), not
//! validation, checkpoints or sampling; `train_s` and `tokens_per_s` are measured the same way.
//! `train_loss` is the mean loss of the last 50 steps.
//!
//! Outputs: a progress bar (step, loss, tokens/s), a line per validation, a generated sample
//! (`--sample N` characters at `--temperature`, primed with a newline or the text's first
//! character) with its generation speed (`Recurrent::step`, the head and the draw per character;
//! tokens/s over the whole sample), `loss.svg` (training and validation loss) in `--out`, and
//! the JSON line `{"demo":"charlm","steps":…,"train_s":…,"tokens_per_s":…,"train_loss":…,
//! "val_loss":…,"sample_tokens_per_s":…}` (`null` for what the run did not measure).
//!
//! Generation only: when the step budget is already spent before training (`--steps 0`, or a
//! `--resume` whose checkpoint has reached `--steps`), nothing trains: no validation, no plot,
//! no checkpoint written; the run prints the sample and its speed
//! (`--resume CHECKPOINT --steps 0 --sample N`).
//!
//! Checkpoints: with `--checkpoint PATH` (checked to be writable before training starts), the
//! model, optimizer, step, RNG, carried state and the text's vocabulary are saved every
//! `--checkpoint-every` steps and at the end; `--resume` continues from the file bit for bit
//! (`--steps N` is then the total step count; `--seconds S` is S more seconds). A resumed run
//! keeps the checkpoint's optimizer settings (the banner shows them, and says when `--lr` is
//! not used), and refuses a text whose vocabulary is not the checkpoint's.

use super::checkpoint::{self, VOCAB_KEY};
use super::json::JsonLine;
use super::limits;
use super::options::{self, OptimizerName, Output, err};
use super::plot::{self, Series};
use super::progress::{Bar, Budget};
use super::text::{Corpus, DEFAULT_CORPUS, one_hot_windows, read_text_file, token_windows};
use crate::cli;
use clap::Parser;
use nalgebra::DMatrix;
use nn_core::Rng;
use nn_core::tensor_io::TensorFile;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    Batch, Clip, EmbeddingConfig, Objective, Optimizer, OptimizerConfig, SampleConfig, SeqModel,
    SeqModelConfig, SeqWorkspace, Target, Targets, Trainer, TrainerConfig, batch_fn,
};
use plotters::style::{BLUE, RED};
use std::path::PathBuf;
use std::time::Instant;

/// A character language model on a text file; prints a sample, plots the losses.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "charlm",
    bin_name = "cargo xtask demo charlm",
    after_help = "The last 10% of the text is validation; the loss is in nats per character."
)]
pub struct Args {
    /// Text file, UTF-8, a regular file of at most 256 MiB [default: this project's own
    /// sources, built in].
    #[arg(long, value_name = "PATH")]
    pub text: Option<PathBuf>,
    /// lstm, gru, rnn (tanh) or rnn_relu.
    #[arg(long, value_name = "C", default_value = "lstm")]
    pub cell: CellKind,
    /// Hidden units per layer.
    #[arg(long, value_name = "H", default_value_t = 256, value_parser = cli::positive_usize)]
    pub hidden: usize,
    /// Stacked layers.
    #[arg(long, value_name = "L", default_value_t = 2, value_parser = cli::positive_usize)]
    pub layers: usize,
    /// Start with an embedding of N values per character (the layer reads N features instead
    /// of the one-hot V) [default: one-hot input].
    #[arg(long, value_name = "N", value_parser = cli::positive_usize)]
    pub embed: Option<usize>,
    /// Dropout probability between stacked layers, in training steps (needs --layers 2 or more).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = cli::dropout_probability)]
    pub dropout: f64,
    /// Characters per training window.
    #[arg(long, value_name = "T", default_value_t = 64, value_parser = cli::positive_usize)]
    pub seq: usize,
    /// Windows per step.
    #[arg(long, value_name = "B", default_value_t = 32, value_parser = cli::positive_usize)]
    pub batch: usize,
    /// The optimizer.
    #[arg(long, value_name = "NAME", value_enum, default_value_t = OptimizerName::Adam)]
    pub optimizer: OptimizerName,
    /// Learning rate.
    #[arg(long, value_name = "RATE", default_value_t = 0.002, value_parser = cli::positive_f64)]
    pub lr: f64,
    /// Clip the global gradient norm.
    #[arg(long, value_name = "NORM", default_value_t = 5.0, value_parser = cli::positive_f64)]
    pub clip: f64,
    /// Step budget (total, counting resumed steps); 0 (or a budget the checkpoint has reached)
    /// trains nothing: generation only.
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Training-time budget [default: 60, with --steps: none].
    #[arg(long, value_name = "S", value_parser = cli::positive_f64)]
    pub seconds: Option<f64>,
    /// Random seed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Train on B continuous streams, state carried between steps.
    #[arg(long)]
    pub carry: bool,
    /// Estimate the validation loss every N steps.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = cli::positive_u64)]
    pub val_every: u64,
    /// Characters to generate at the end (0 for none).
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub sample: usize,
    /// Sampling temperature (0 is greedy).
    #[arg(long, value_name = "X", default_value_t = 0.8, value_parser = cli::non_negative_f64)]
    pub temperature: f64,
    /// Save a checkpoint there every --checkpoint-every steps and at the end.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Steps between checkpoints.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = cli::positive_u64)]
    pub checkpoint_every: u64,
    /// Continue from a checkpoint: `--resume CHECKPOINT`, or `--resume` with --checkpoint PATH
    /// (the same file). With --steps 0: generate only.
    #[arg(long, value_name = "CHECKPOINT", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Where loss.svg goes [default: target/demo/charlm].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `--seconds` when neither budget is given.
const DEFAULT_SECONDS: f64 = 60.0;

/// Validation windows used for the estimates during training.
const VAL_ESTIMATE_WINDOWS: usize = 128;
/// Windows per forward pass in validation.
const VAL_CHUNK: usize = 64;
/// Steps averaged into `train_loss`.
const TRAIN_LOSS_STEPS: usize = 50;

/// Settings of the char-model demo.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The text file (`None`: [`DEFAULT_CORPUS`]).
    pub text: Option<PathBuf>,
    /// The recurrent cell.
    pub cell: CellKind,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Stacked layers.
    pub layers: usize,
    /// Embedding size (`None`: one-hot input).
    pub embed: Option<usize>,
    /// Dropout between stacked layers.
    pub dropout: f64,
    /// Window length `T`.
    pub seq: usize,
    /// Windows per step `B`.
    pub batch: usize,
    /// Optimizer and learning rate.
    pub optimizer: OptimizerConfig,
    /// Global-norm clipping threshold.
    pub clip: f64,
    /// Steps (total) and seconds (this run).
    pub budget: Budget,
    /// Random seed.
    pub seed: u64,
    /// Continuous streams with carried state instead of random windows.
    pub carry: bool,
    /// Steps between validation estimates.
    pub val_every: u64,
    /// Characters to sample at the end.
    pub sample: usize,
    /// Sampling temperature.
    pub temperature: f64,
    /// Checkpoint file.
    pub checkpoint: Option<PathBuf>,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Start from the checkpoint.
    pub resume: bool,
    /// The path given as `--resume CHECKPOINT`, if any (it must be `checkpoint`).
    pub resume_path: Option<PathBuf>,
    /// Folder of `loss.svg`.
    pub out: PathBuf,
}

impl Default for Options {
    /// The flags' defaults.
    fn default() -> Self {
        Args::parse_from(["charlm"]).into()
    }
}

impl From<Args> for Options {
    fn from(a: Args) -> Options {
        Options {
            text: a.text,
            cell: a.cell,
            hidden: a.hidden,
            layers: a.layers,
            embed: a.embed,
            dropout: a.dropout,
            seq: a.seq,
            batch: a.batch,
            optimizer: a.optimizer.config(a.lr),
            clip: a.clip,
            budget: options::budget(a.steps, a.seconds, DEFAULT_SECONDS),
            seed: a.seed,
            carry: a.carry,
            val_every: a.val_every,
            sample: a.sample,
            temperature: a.temperature,
            // `--resume PATH` names the checkpoint when --checkpoint does not (with both, run
            // refuses two different paths through `resume_path`).
            checkpoint: a.checkpoint.or_else(|| a.resume.clone().flatten()),
            resume_path: a.resume.clone().flatten(),
            checkpoint_every: a.checkpoint_every,
            resume: a.resume.is_some(),
            out: a
                .out
                .unwrap_or_else(|| crate::project_root().join("target/demo/charlm")),
        }
    }
}

/// What the char-model demo measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Training steps completed (total, counting resumed ones).
    pub steps: u64,
    /// Seconds spent in this run's training steps.
    pub train_s: f64,
    /// Training tokens (characters predicted) per second in this run.
    pub tokens_per_s: f64,
    /// Mean loss of the last 50 steps of this run (NaN when it made none).
    pub train_loss: f64,
    /// Validation loss over the whole validation text, nats per character.
    pub val_loss: f64,
    /// The generated text (without the prime).
    pub sample: String,
    /// Generation speed: sampled characters per second (`None` without a sample).
    pub sample_tokens_per_s: Option<f64>,
    /// Whether the run trained (`false`: generation only, the budget was spent at the start).
    pub trained: bool,
    /// The plot file.
    pub plot: PathBuf,
}

/// Reads `--text` (or the built-in corpus) as a [`Corpus`], with one-line errors.
fn load_text(options: &Options) -> Result<(Corpus, String), String> {
    let (text, name) = match &options.text {
        None => (
            DEFAULT_CORPUS.to_string(),
            "the project's own sources (built in)".to_string(),
        ),
        Some(path) => {
            let text =
                read_text_file(path).map_err(|e| format!("--text {}: {e}", path.display()))?;
            if text.is_empty() {
                return Err(format!("--text {}: the file is empty", path.display()));
            }
            (text, path.display().to_string())
        }
    };
    let corpus = Corpus::new(&text, options.seq).map_err(|e| match &options.text {
        Some(path) => format!("--text {}: {e}", path.display()),
        None => e,
    })?;
    Ok((corpus, name))
}

/// Validation windows: start of each non-overlapping window of `seq` characters (with its
/// `seq` next-character targets) in the validation part.
fn validation_starts(corpus: &Corpus, seq: usize) -> Vec<usize> {
    let count = (corpus.ids.len() - corpus.split - 1) / seq;
    (0..count).map(|k| corpus.split + k * seq).collect()
}

/// Mean cross-entropy (nats per character) of `model` over the windows at `starts`, each from
/// a zero state, in chunks of [`VAL_CHUNK`] windows.
fn mean_loss(
    model: &SeqModel<f32>,
    corpus: &Corpus,
    starts: &[usize],
    seq: usize,
    ws: &mut SeqWorkspace<f32>,
) -> Result<f64, String> {
    let mut x = DMatrix::zeros(0, 0);
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    let (mut sum, mut count) = (0.0, 0usize);
    for chunk in starts.chunks(VAL_CHUNK) {
        let cols = seq * chunk.len();
        let loss = if model.embed.is_some() {
            token_windows(&corpus.ids, chunk, seq, &mut ids, &mut targets);
            model.loss(&ids, chunk.len(), None, Target::NextToken(&targets), ws)
        } else {
            if x.shape() != (corpus.vocab_size(), cols) {
                x = DMatrix::zeros(corpus.vocab_size(), cols);
            }
            one_hot_windows(&corpus.ids, chunk, seq, &mut x, &mut targets);
            model.loss(&x, chunk.len(), None, Target::NextToken(&targets), ws)
        }
        .map_err(err)?;
        sum += f64::from(loss) * cols as f64;
        count += cols;
    }
    Ok(sum / count as f64)
}

/// Shows a sample with control characters other than newline and tab made visible.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '·'
            } else {
                c
            }
        })
        .collect()
}

/// Runs the demo, writing its text and JSON line to `out`.
pub fn run(options: &Options, out: &mut Output<'_>) -> Result<Report, String> {
    if options.resume && options.checkpoint.is_none() {
        return Err("--resume needs --checkpoint PATH".into());
    }
    if let (Some(r), Some(c)) = (&options.resume_path, &options.checkpoint)
        && r != c
    {
        return Err(format!(
            "--resume {} and --checkpoint {} name different files",
            r.display(),
            c.display()
        ));
    }
    let (corpus, text_name) = load_text(options)?;
    let (v, seq, batch) = (corpus.vocab_size(), options.seq, options.batch);
    let split = corpus.split;
    if options.dropout > 0.0 && options.layers < 2 {
        return Err(format!(
            "--dropout {} needs --layers 2 or more: it applies between stacked layers",
            options.dropout
        ));
    }
    limits::charlm(
        options.cell,
        v,
        options.embed,
        options.hidden,
        options.layers,
        seq,
        batch,
        VAL_CHUNK,
        corpus.ids.len(),
        options.sample,
    )?;
    let stream_len = split / batch;
    if options.carry && stream_len <= seq {
        return Err(format!(
            "--carry: the training text ({split} characters) is too short for {batch} streams of --seq {seq}"
        ));
    }
    if options.resume
        && let Some(path) = &options.checkpoint
        && !path.exists()
    {
        return Err(format!("--resume: {} does not exist", path.display()));
    }
    // The checkpoint may go into --out: make that first.
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("--out {}: {e}", options.out.display()))?;
    if let Some(path) = &options.checkpoint {
        checkpoint::check_path(path)?;
    }

    let mut rng = Rng::seed_from(options.seed);
    let rnn = RecurrentConfig::new(options.cell, options.embed.unwrap_or(v), options.hidden)
        .with_num_layers(options.layers)
        .with_dropout(options.dropout);
    let mut model_config = SeqModelConfig::new(rnn, v);
    if let Some(e) = options.embed {
        model_config = model_config.with_embedding(EmbeddingConfig::new(v, e));
    }
    let model = model_config.init::<f32>(&mut rng).map_err(err)?;
    let optimizer = Optimizer::new(options.optimizer).map_err(err)?;
    let config = TrainerConfig::new(Objective::NextToken)
        .with_clip(Clip::Norm(options.clip))
        .with_carry_state(options.carry);
    let mut trainer = Trainer::new(model, optimizer, rng, config).map_err(err)?;
    if options.resume
        && let Some(path) = &options.checkpoint
    {
        let file = TensorFile::open(path).map_err(|e| format!("--resume: {e}"))?;
        checkpoint::check_vocab(&file, &corpus.vocab)?;
        trainer
            .load_checkpoint_file(&file)
            .map_err(|e| format!("--resume: {e}"))?;
    }
    let vocab = checkpoint::vocab_text(&corpus.vocab);
    let save_metadata = [(VOCAB_KEY, vocab.as_str())];

    let ids = corpus.ids.clone();
    let carry = options.carry;
    let embedded = options.embed.is_some();
    let mut starts = vec![0; batch];
    let mut source = batch_fn(move |step: u64, rng: &mut Rng, b: &mut Batch<f32>| {
        for (j, s) in starts.iter_mut().enumerate() {
            *s = if carry {
                j * stream_len + ((step - 1) as usize * seq) % (stream_len - seq)
            } else {
                rng.below(split - seq)
            };
        }
        let mut targets = match std::mem::replace(&mut b.targets, Targets::Classes(Vec::new())) {
            Targets::Classes(t) => t,
            Targets::Values(_) => Vec::new(),
        };
        if embedded {
            token_windows(&ids, &starts, seq, &mut b.ids, &mut targets);
        } else {
            if b.x.shape() != (v, seq * batch) {
                b.x = DMatrix::zeros(v, seq * batch);
            }
            one_hot_windows(&ids, &starts, seq, &mut b.x, &mut targets);
        }
        b.batch = batch;
        b.targets = Targets::Classes(targets);
        Ok(())
    });

    let val_starts = validation_starts(&corpus, seq);
    let stride = (val_starts.len() / VAL_ESTIMATE_WINDOWS).max(1);
    let estimate_starts: Vec<usize> = val_starts
        .iter()
        .step_by(stride)
        .take(VAL_ESTIMATE_WINDOWS)
        .copied()
        .collect();

    out.line(format_args!(
        "charlm: {} characters of {text_name}, vocabulary {v}; validation = last {} characters",
        corpus.ids.len(),
        corpus.ids.len() - split
    ))?;
    out.line(format_args!(
        "model: {}{} layer(s) of {} {} units{} + Dense head; seq {seq}, batch {batch}, {} lr {}, clip {}{}",
        options
            .embed
            .map_or(String::new(), |e| format!("embedding {v}×{e}, ")),
        options.layers,
        options.hidden,
        format_args!("{:#}", options.cell),
        if options.dropout > 0.0 {
            format!(" (dropout {} between layers)", options.dropout)
        } else {
            String::new()
        },
        // The settings in force: a resumed run's are the checkpoint's.
        trainer.optimizer.config().kind(),
        trainer.optimizer.lr(),
        options.clip,
        if carry { ", streams with carried state" } else { ", random windows from a zero state" }
    ))?;
    if trainer.step() > 0 {
        out.line(format_args!(
            "resumed from {} at step {}",
            options
                .checkpoint
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            trainer.step()
        ))?;
        let saved_lr = trainer.optimizer.config().lr();
        if options.optimizer.lr() != saved_lr {
            out.line(format_args!(
                "--lr {} is not used: a resumed run continues with the checkpoint's lr {saved_lr}",
                options.optimizer.lr()
            ))?;
        }
    }

    let mut ws = SeqWorkspace::new();
    let first_step = trainer.step();
    let mut train_points: Vec<(f64, f64)> = Vec::new();
    let mut val_points: Vec<(f64, f64)> = Vec::new();
    // A budget spent before the first step (`--steps 0`, or reached by the checkpoint): generate
    // only, with no validation, plot or checkpoint.
    let trained = !options.budget.spent(first_step, 0.0);
    let estimate = if trained {
        let estimate = mean_loss(&trainer.model, &corpus, &estimate_starts, seq, &mut ws)?;
        val_points.push((first_step as f64, estimate));
        out.line(format_args!(
            "step {first_step:>6}  validation (estimate) {estimate:.4}"
        ))?;
        estimate
    } else {
        out.line(format_args!(
            "no training (the step budget is spent at step {first_step}): generation only"
        ))?;
        f64::NAN
    };

    let bar = Bar::new(out.progress);
    let (mut train_s, mut tokens) = (0.0f64, 0usize);
    let mut last_val = estimate;
    while !options.budget.spent(trainer.step(), train_s) {
        let r = trainer.train_step(&mut source).map_err(err)?;
        train_s += r.seconds;
        tokens += r.tokens;
        train_points.push((r.step as f64, r.loss));
        let tokens_per_s = tokens as f64 / train_s.max(1e-9);
        if r.step % options.val_every == 0 {
            last_val = mean_loss(&trainer.model, &corpus, &estimate_starts, seq, &mut ws)?;
            val_points.push((r.step as f64, last_val));
            bar.suspend(|| {
                out.line(format_args!(
                    "step {:>6}  {train_s:>6.1} s  loss {:.4}  validation (estimate) {last_val:.4}  {tokens_per_s:.0} tokens/s",
                    r.step, r.loss
                ))
            })?;
        }
        if let Some(path) = &options.checkpoint
            && r.step % options.checkpoint_every == 0
        {
            trainer
                .save_checkpoint_with(path, &save_metadata)
                .map_err(err)?;
        }
        bar.update(
            options.budget.fraction(trainer.step(), train_s),
            format!(
                "step {}  loss {:.4}  val {last_val:.4}  {tokens_per_s:.0} tok/s  {train_s:.0} s",
                r.step, r.loss
            ),
        );
    }
    bar.finish();
    if let Some(path) = &options.checkpoint
        && trained
    {
        trainer
            .save_checkpoint_with(path, &save_metadata)
            .map_err(err)?;
    }

    let steps = trainer.step();
    let recent = &train_points[train_points.len().saturating_sub(TRAIN_LOSS_STEPS)..];
    let train_loss = if recent.is_empty() {
        f64::NAN
    } else {
        recent.iter().map(|p| p.1).sum::<f64>() / recent.len() as f64
    };
    let tokens_per_s = if train_s > 0.0 {
        tokens as f64 / train_s
    } else {
        0.0
    };
    let val_loss = if trained {
        let val_loss = mean_loss(&trainer.model, &corpus, &val_starts, seq, &mut ws)?;
        out.line(format_args!(
            "done: {} steps in {train_s:.1} s of training ({tokens_per_s:.0} tokens/s); train loss {train_loss:.4}, validation loss {val_loss:.4} nats/char ({} windows)",
            steps - first_step,
            val_starts.len()
        ))?;
        val_loss
    } else {
        f64::NAN
    };

    let mut sample = String::new();
    let mut sample_tokens_per_s = None;
    if options.sample > 0 {
        let prime = corpus.index('\n').unwrap_or(corpus.ids[0]);
        let config = SampleConfig::new().with_temperature(options.temperature);
        let mut sample_rng = Rng::seed_from(options.seed ^ 0x005a_3b1e);
        let start = Instant::now();
        let ids = nn_train::sample(
            &trainer.model,
            &[prime],
            options.sample,
            &config,
            &mut sample_rng,
        )
        .map_err(err)?;
        let seconds = start.elapsed().as_secs_f64();
        let speed = ids.len() as f64 / seconds.max(1e-9);
        sample_tokens_per_s = Some(speed);
        sample = corpus.decode(&ids);
        out.line(format_args!(
            "sample ({} characters, temperature {}):",
            options.sample, options.temperature
        ))?;
        out.line("----")?;
        out.line(format_args!(
            "{}{}",
            corpus.vocab[prime],
            printable(&sample)
        ))?;
        out.line("----")?;
        out.line(format_args!(
            "generation: {} characters in {seconds:.3} s ({speed:.0} tokens/s; step, head and draw per character, batch 1)",
            ids.len()
        ))?;
    }

    let plot_path = options.out.join("loss.svg");
    if trained {
        plot::svg(
            &plot_path,
            &format!("charlm: validation loss {val_loss:.3} nats/char after {steps} steps"),
            "step",
            "loss (nats/char)",
            &[
                Series {
                    name: "training (per step)",
                    points: &train_points,
                    color: BLUE,
                },
                Series {
                    name: "validation (128-window estimate)",
                    points: &val_points,
                    color: RED,
                },
            ],
        )?;
        out.line(format_args!("loss plot: {}", plot_path.display()))?;
    }
    if let Some(path) = &options.checkpoint
        && trained
    {
        out.line(format_args!("checkpoint: {}", path.display()))?;
    }
    out.line(
        JsonLine::new("charlm")
            .int("steps", steps)
            .num("train_s", train_s)
            .num("tokens_per_s", tokens_per_s)
            .num("train_loss", train_loss)
            .num("val_loss", val_loss)
            .num(
                "sample_tokens_per_s",
                sample_tokens_per_s.unwrap_or(f64::NAN),
            )
            .finish(),
    )?;
    Ok(Report {
        steps,
        train_s,
        tokens_per_s,
        train_loss,
        val_loss,
        sample,
        sample_tokens_per_s,
        trained,
        plot: plot_path,
    })
}
