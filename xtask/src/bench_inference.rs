//! `cargo xtask bench --inference [--only a,b] [--seconds S]`: the inference workloads of
//! `benches/inference.json` (a copy of the shared file), in f32, one JSON line each:
//! `{"name","cpu","threads","tokens_per_s","us_per_token","runs"}`.
//!
//! - `gen-*` (`kind: generate`): a char model (vocab `V`, one-hot input) generating at batch 1,
//!   a whole token per iteration ([`Generator::token`]): the `L` recurrent layers step once
//!   (`Recurrent::step`), the Dense head `H -> V` gives the logits, `nn_train::sample_logits`
//!   draws a token at temperature 0.8 from a seeded `Rng`, and that token is the next input.
//!   After 50 warm-up tokens, tokens run until `--seconds` have passed (and at least 100 ran):
//!   `tokens_per_s` = tokens / time, as `inference_reference.py` measures ONNX Runtime.
//! - `fwd-*` (`kind: forward`): one forward-only pass (`Recurrent::infer`) of one layer over
//!   `B` random sequences of `T` steps; after 3 warm-up passes, passes run until `--seconds`
//!   have passed (and at least 5 ran): `tokens_per_s = B*T / median pass`, as the PyTorch
//!   `inference_mode` anchor.
//!
//! Weights use PyTorch's default initialization (`U(-1/√H, 1/√H)` for the recurrent layers,
//! `U(-1/√in, 1/√in)` for the head), seeded; `us_per_token = 1e6 / tokens_per_s`.

use crate::bench::{cpu_model, peak_rss_mib};
use crate::cli;
use nalgebra::DMatrix;
use nn_core::{Dense, Rng};
use nn_recurrent::{
    CellKind, InferScratch, Recurrent, RecurrentConfig, RecurrentState, StepScratch,
};
use nn_train::{SampleConfig, sample_logits};
use serde::Deserialize;
use serde_json::json;
use std::time::Instant;

/// One workload of `benches/inference.json` (serde: the file's field names).
#[derive(Clone, Debug, Deserialize)]
pub struct InferenceWorkload {
    /// Its name (`gen-lstm-2x256`, `fwd-lstm-m`, ...).
    pub name: String,
    /// `generate` or `forward`.
    pub kind: String,
    /// The cell (`rnn`, `lstm` or `gru`).
    pub cell: CellKind,
    /// `H`.
    pub hidden: usize,
    /// `generate`: the vocabulary `V` (the one-hot input size and the head's outputs).
    pub vocab: Option<usize>,
    /// `generate`: the stacked layers `L` (1 when absent).
    pub layers: Option<usize>,
    /// `forward`: `I`.
    pub input: Option<usize>,
    /// `forward`: `B`.
    pub batch: Option<usize>,
    /// `forward`: `T`.
    pub steps: Option<usize>,
}

/// The part of the workloads file read here.
#[derive(Deserialize)]
struct InferenceFile {
    workloads: Vec<InferenceWorkload>,
}

/// Reads the `workloads` array of `benches/inference.json`.
pub fn parse_all(text: &str) -> Result<Vec<InferenceWorkload>, String> {
    serde_json::from_str::<InferenceFile>(text)
        .map(|f| f.workloads)
        .map_err(|e| format!("inference workloads: {e}"))
}

/// A size of the workload, present and positive.
fn size(v: Option<usize>, what: &str, name: &str) -> Result<usize, String> {
    match v {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "inference workload `{name}`: `{what}` must be a positive size"
        )),
    }
}

fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A char model generating one token at a time at batch 1 (the `gen-*` workloads).
#[derive(Debug)]
pub struct Generator {
    rnn: Recurrent<f32>,
    head: Dense<f32>,
    state: RecurrentState<f32>,
    scratch: StepScratch<f32>,
    /// `(V, 1)`.
    logits: DMatrix<f32>,
    sampling: SampleConfig,
    rng: Rng,
    order: Vec<(f64, usize)>,
    token: usize,
}

impl Generator {
    /// The model of `w` (PyTorch default init from `seed`), a zero state, token 0 first.
    pub fn new(w: &InferenceWorkload, seed: u64) -> Result<Generator, String> {
        let vocab = size(w.vocab, "vocab", &w.name)?;
        let hidden = size(Some(w.hidden), "hidden", &w.name)?;
        let layers = size(w.layers.or(Some(1)), "layers", &w.name)?;
        let mut rng = Rng::seed_from(seed);
        let rnn = RecurrentConfig::new(w.cell, vocab, hidden)
            .with_num_layers(layers)
            .init::<f32>(&mut rng)
            .map_err(text)?;
        let head = Dense::new(hidden, vocab, &mut rng).map_err(text)?;
        let state = rnn.try_zero_state(1).map_err(text)?;
        Ok(Generator {
            rnn,
            head,
            state,
            scratch: StepScratch::new(),
            logits: DMatrix::zeros(vocab, 1),
            sampling: SampleConfig::new().with_temperature(0.8),
            rng: Rng::seed_from(seed ^ 0x5eed),
            order: Vec::with_capacity(vocab),
            token: 0,
        })
    }

    /// One whole token: step on the last token (its id: a column of `W_ih`, as a one-hot input
    /// gives), head, sample; returns the new token, which the next call feeds back.
    pub fn token(&mut self) -> Result<usize, String> {
        let h = self
            .rnn
            .step_tokens(&[self.token], &mut self.state, &mut self.scratch)
            .map_err(text)?;
        self.head.forward_into(h, &mut self.logits).map_err(text)?;
        self.token = sample_logits(
            self.logits.as_slice(),
            &self.sampling,
            &mut self.rng,
            &mut self.order,
        )
        .map_err(text)?;
        Ok(self.token)
    }
}

/// One layer's forward-only pass over a random sequence batch (the `fwd-*` workloads).
#[derive(Debug)]
pub struct ForwardPass {
    rnn: Recurrent<f32>,
    x: DMatrix<f32>,
    batch: usize,
    scratch: InferScratch<f32>,
}

impl ForwardPass {
    /// The layer of `w` (PyTorch default init from `seed`) and a uniform `[-1, 1)` input.
    pub fn new(w: &InferenceWorkload, seed: u64) -> Result<ForwardPass, String> {
        let input = size(w.input, "input", &w.name)?;
        let hidden = size(Some(w.hidden), "hidden", &w.name)?;
        let batch = size(w.batch, "batch", &w.name)?;
        let steps = size(w.steps, "steps", &w.name)?;
        let mut rng = Rng::seed_from(seed);
        let rnn = RecurrentConfig::new(w.cell, input, hidden)
            .init::<f32>(&mut rng)
            .map_err(text)?;
        let cols = steps
            .checked_mul(batch)
            .ok_or_else(|| format!("inference workload `{}`: B*T overflows", w.name))?;
        let x = nn_core::try_zeros::<f32>("bench input", input, cols)
            .map_err(text)?
            .map(|_| rng.uniform() as f32 * 2.0 - 1.0);
        Ok(ForwardPass {
            rnn,
            x,
            batch,
            scratch: InferScratch::new(),
        })
    }

    /// One pass.
    pub fn run(&mut self) -> Result<(), String> {
        self.rnn
            .infer(&self.x, self.batch, None, &mut self.scratch)
            .map(|_| ())
            .map_err(text)
    }

    /// `B*T`.
    pub fn tokens(&self) -> usize {
        self.x.ncols()
    }
}

/// Tokens per second of `w` over at least `seconds`, and how many tokens or passes ran.
pub fn measure(w: &InferenceWorkload, seconds: f64) -> Result<(f64, usize), String> {
    match w.kind.as_str() {
        "generate" => {
            let mut g = Generator::new(w, 0)?;
            for _ in 0..50 {
                g.token()?;
            }
            let (mut n, start) = (0usize, Instant::now());
            while start.elapsed().as_secs_f64() < seconds || n < 100 {
                g.token()?;
                n += 1;
            }
            Ok((n as f64 / start.elapsed().as_secs_f64(), n))
        }
        "forward" => {
            let mut f = ForwardPass::new(w, 0)?;
            for _ in 0..3 {
                f.run()?;
            }
            let (mut times, start) = (Vec::new(), Instant::now());
            while start.elapsed().as_secs_f64() < seconds || times.len() < 5 {
                let t0 = Instant::now();
                f.run()?;
                times.push(t0.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            Ok((f.tokens() as f64 / times[times.len() / 2], times.len()))
        }
        other => Err(format!(
            "inference workload `{}`: unknown kind `{other}` (generate or forward)",
            w.name
        )),
    }
}

/// Runs the workloads of `benches/inference.json` named in `only` (all when empty).
pub fn run(only: &[String], seconds: f64) -> Result<bool, String> {
    let path = crate::project_root().join("benches/inference.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let all = parse_all(&text)?;
    let only: Vec<&String> = only.iter().filter(|n| !n.is_empty()).collect();
    if let Some(unknown) = only.iter().find(|n| !all.iter().any(|w| &&w.name == *n)) {
        return Err(format!("--only: no inference workload named `{unknown}`"));
    }
    let cpu = cpu_model();
    for w in all
        .iter()
        .filter(|w| only.is_empty() || only.contains(&&w.name))
    {
        let (tokens_per_s, runs) = measure(w, seconds)?;
        cli::print(format_args!(
            "{}\n",
            json!({
                "name": w.name,
                "cpu": cpu,
                "threads": nn_core::kernels::pool::threads(),
                "tokens_per_s": tokens_per_s,
                "us_per_token": 1e6 / tokens_per_s,
                "runs": runs,
                "peak_rss_mib": peak_rss_mib(),
            })
        ))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inference_workloads_parse_and_run() {
        let text =
            std::fs::read_to_string(crate::project_root().join("benches/inference.json")).unwrap();
        let all = parse_all(&text).unwrap();
        assert_eq!(all.len(), 7);
        let generate = all.iter().find(|w| w.name == "gen-lstm-1x64").unwrap();
        let mut g = Generator::new(generate, 1).unwrap();
        for _ in 0..5 {
            assert!(g.token().unwrap() < 65);
        }
        let small = InferenceWorkload {
            input: Some(3),
            hidden: 4,
            batch: Some(2),
            steps: Some(5),
            ..all.iter().find(|w| w.kind == "forward").unwrap().clone()
        };
        let mut f = ForwardPass::new(&small, 1).unwrap();
        f.run().unwrap();
        assert_eq!(f.tokens(), 10);
        let bad = InferenceWorkload {
            batch: Some(0),
            ..small
        };
        assert!(ForwardPass::new(&bad, 1).is_err());
    }
}
