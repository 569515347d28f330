//! Shared setup of the benchmarks: the reference workloads of `benches/workloads.json` and one
//! training step of each, used by the criterion benchmarks and by `cargo xtask bench`.
//!
//! A workload's step is what PyTorch's `torch_reference.py` times: a one-layer recurrent layer over
//! `T` steps of `B` random `I`-feature sequences (f32), a Dense head `H -> V` on every step, mean
//! softmax cross-entropy over all `T*B` random targets, full backward, clipping by global norm 5,
//! and a plain SGD update (lr 0.1), with PyTorch's default initialization.

use nalgebra::DMatrix;
use nn_core::{Init, Module, Rng};
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::seq_model::parse_cell;
use nn_train::{
    Optimizer, SeqModel, SeqModelConfig, SeqWorkspace, SgdConfig, Target, clip_grad_norm,
};
use serde_json::Value;

/// The workloads file as shipped, for benchmarks that need no path.
pub const WORKLOADS_JSON: &str = include_str!("../workloads.json");

/// One workload of `benches/workloads.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Its name (`lstm-m`, ...).
    pub name: String,
    /// The cell (`rnn`, `lstm` or `gru` in the file).
    pub cell: CellKind,
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
                    cell: parse_cell(&s("cell")?).map_err(|e| format!("workload: {e}"))?,
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
        let g = self.cell.gate_count() as f64;
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
        let model = SeqModelConfig::new(RecurrentConfig::new(w.cell, w.input, w.hidden), w.vocab)
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
