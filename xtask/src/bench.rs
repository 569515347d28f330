//! `cargo xtask bench [--only a,b] [--seconds S] [--threads N]`: the reference workloads.
//!
//! Each workload of `benches/workloads.json` (a copy of the shared `configs.json`) is one
//! training step as PyTorch's `torch_reference.py` runs it: a one-layer recurrent layer over `T`
//! steps of `B` random `I`-feature sequences (f32), a Dense head `H -> V` on every step, mean
//! softmax cross-entropy over all `T*B` random targets, full backward, clipping by global norm
//! 5, and a plain SGD update (lr 0.1). Weights use PyTorch's default initialization.
//!
//! After 5 warm-up steps, steps are timed one by one until `--seconds` have passed (and at least
//! 5 ran); the median step time gives `tokens_per_s = B*T / median`. One JSON line per workload,
//! in the PyTorch script's form, plus `peak_rss_mib`: the process's peak resident memory so far
//! (meaningful per workload when run alone with `--only`).
//!
//! Threads: the matrix products split over `--threads` cores (matrixmultiply's
//! `MATMUL_NUM_THREADS`, read once per process, so it is set before the first product); the time
//! loop's per-step products and the elementwise math run on the calling thread.

use crate::flags::Flags;
use nalgebra::DMatrix;
use nn_core::{Init, Module, Rng};
use nn_recurrent::RecurrentConfig;
use nn_train::seq_model::parse_cell;
use nn_train::{
    Optimizer, SeqModel, SeqModelConfig, SeqWorkspace, SgdConfig, Target, clip_grad_norm,
};
use serde_json::{Value, json};
use std::time::Instant;

/// One workload of `benches/workloads.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Its name (`lstm-m`, ...).
    pub name: String,
    /// `rnn`, `lstm` or `gru`.
    pub cell: String,
    /// `I`.
    pub input: usize,
    /// `H`.
    pub hidden: usize,
    /// `V`.
    pub vocab: usize,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub steps: usize,
}

impl Workload {
    /// Reads the `workloads` array of a configs file.
    pub fn parse_all(text: &str) -> Result<Vec<Workload>, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("workloads: {e}"))?;
        let list = v
            .get("workloads")
            .and_then(Value::as_array)
            .ok_or("workloads: no `workloads` array")?;
        list.iter()
            .map(|w| {
                let n = |k: &str| {
                    w.get(k)
                        .and_then(Value::as_u64)
                        .map(|v| v as usize)
                        .filter(|&v| v > 0)
                        .ok_or_else(|| format!("workload: `{k}` missing or not a positive integer"))
                };
                let s = |k: &str| {
                    w.get(k)
                        .and_then(Value::as_str)
                        .map(String::from)
                        .ok_or_else(|| format!("workload: `{k}` missing or not a string"))
                };
                Ok(Workload {
                    name: s("name")?,
                    cell: s("cell")?,
                    input: n("input")?,
                    hidden: n("hidden")?,
                    vocab: n("vocab")?,
                    batch: n("batch")?,
                    steps: n("steps")?,
                })
            })
            .collect()
    }

    /// Multiply-adds ×2 of the matrix products of one training step, per token: forward
    /// (`G·H·I` input projection, `G·H·H` recurrence, `V·H` head) and backward (twice each:
    /// weight and input/hidden gradients; the input gradient of the first layer is skipped).
    pub fn flops_per_token(&self) -> f64 {
        let g = match self.cell.as_str() {
            "lstm" => 4.0,
            "gru" => 3.0,
            _ => 1.0,
        };
        let (i, h, v) = (self.input as f64, self.hidden as f64, self.vocab as f64);
        let forward = g * h * i + g * h * h + v * h;
        let backward = g * h * i + 2.0 * g * h * h + 2.0 * v * h;
        2.0 * (forward + backward)
    }
}

/// A ready-to-run training step of one workload.
pub struct Step {
    model: SeqModel<f32>,
    optimizer: Optimizer<f32>,
    ws: SeqWorkspace<f32>,
    x: DMatrix<f32>,
    targets: Vec<usize>,
    batch: usize,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step").field("batch", &self.batch).finish()
    }
}

impl Step {
    /// Builds the model, data and optimizer of `w` from `seed`.
    pub fn new(w: &Workload, seed: u64) -> Result<Step, String> {
        let e = |e: nn_train::Error| e.to_string();
        let mut rng = Rng::seed_from(seed);
        let cell = parse_cell(&w.cell).map_err(e)?;
        let model = SeqModelConfig::new(RecurrentConfig::new(cell, w.input, w.hidden), w.vocab)
            .init::<f32>(&mut rng)
            .map_err(e)?;
        let x = Init::Normal { std: 1.0 }
            .matrix(w.input, w.steps * w.batch, &mut rng)
            .map_err(|e| e.to_string())?;
        let targets = (0..w.steps * w.batch).map(|_| rng.below(w.vocab)).collect();
        Ok(Step {
            model,
            optimizer: Optimizer::new(SgdConfig::new(0.1)).map_err(e)?,
            ws: SeqWorkspace::new(),
            x,
            targets,
            batch: w.batch,
        })
    }

    /// One whole training step; returns the loss.
    pub fn run(&mut self) -> Result<f32, String> {
        let e = |e: nn_train::Error| e.to_string();
        self.model.zero_grad();
        let loss = self
            .model
            .forward_backward(
                &self.x,
                self.batch,
                None,
                Target::NextToken(&self.targets),
                &mut self.ws,
            )
            .map_err(e)?;
        clip_grad_norm(&mut self.model, 5.0);
        self.optimizer.step(&mut self.model).map_err(e)?;
        Ok(loss)
    }

    /// The model, for inspection.
    pub fn model(&self) -> &SeqModel<f32> {
        &self.model
    }
}

/// Median of the step times of `w` over at least `seconds` (and 5 steps), after 5 warm-up steps.
pub fn measure(w: &Workload, seconds: f64) -> Result<(f64, usize), String> {
    let mut step = Step::new(w, 0)?;
    for _ in 0..5 {
        step.run()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || times.len() < 5 {
        let t0 = Instant::now();
        step.run()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times.len()))
}

/// Peak resident memory of this process in MiB (`VmHWM`), when the OS tells it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

const HELP: &str = "usage: cargo xtask bench [--only a,b] [--seconds S] [--threads N]

Runs the training-step workloads of benches/workloads.json and prints one JSON line each:
{\"name\",\"threads\",\"tokens_per_s\",\"step_ms\",\"runs\",\"gflops\",\"peak_rss_mib\"}.
  --only a,b     only these workloads (names from the file)
  --seconds S    time each workload for at least S seconds (default 3)
  --threads N    cores for the matrix products (default: all)";

/// The command.
pub fn command(args: &[String]) -> Result<bool, String> {
    let flags = Flags::parse(args, &["only", "seconds", "threads"], &[])?;
    if flags.help {
        println!("{HELP}");
        return Ok(true);
    }
    if let Some(p) = flags.positional.first() {
        return Err(format!("unexpected argument `{p}` (see --help)"));
    }
    let seconds = flags.positive_f64("seconds", 3.0)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = flags.positive("threads", cores)?;
    // SAFETY: nothing else runs yet: set before any thread is started or any product is made.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
    let path = crate::project_root().join("benches/workloads.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let all = Workload::parse_all(&text)?;
    let only: Vec<String> = flags
        .opt::<String>("only")?
        .map(|s| {
            s.split(',')
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(unknown) = only.iter().find(|n| !all.iter().any(|w| &&w.name == n)) {
        return Err(format!("--only: no workload named `{unknown}`"));
    }
    for w in all
        .iter()
        .filter(|w| only.is_empty() || only.contains(&w.name))
    {
        let (median, runs) = measure(w, seconds)?;
        let tokens = (w.batch * w.steps) as f64;
        println!(
            "{}",
            json!({
                "name": w.name,
                "threads": threads,
                "tokens_per_s": tokens / median,
                "step_ms": median * 1e3,
                "runs": runs,
                "gflops": w.flops_per_token() * tokens / median / 1e9,
                "peak_rss_mib": peak_rss_mib(),
            })
        );
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workloads_file_parses_and_a_step_trains() {
        let text =
            std::fs::read_to_string(crate::project_root().join("benches/workloads.json")).unwrap();
        let all = Workload::parse_all(&text).unwrap();
        assert_eq!(all.len(), 6);
        let seed = &all[0];
        assert_eq!((seed.name.as_str(), seed.hidden), ("seed", 16));
        let mut step = Step::new(seed, 1).unwrap();
        let first = step.run().unwrap();
        let mut last = first;
        for _ in 0..30 {
            last = step.run().unwrap();
        }
        assert!(last < first, "{first} -> {last}");
        assert!(Workload::parse_all("{}").is_err());
        assert!(Workload::parse_all(r#"{"workloads":[{"name":"x"}]}"#).is_err());
    }
}
