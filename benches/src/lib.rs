//! Shared setup of the benchmarks: the reference workloads of `benches/workloads.json` and one
//! training step of each, used by the criterion benchmarks and by `cargo xtask bench`.
//!
//! A workload's step is what PyTorch's `torch_reference.py` times: a one-layer recurrent layer over
//! `T` steps of `B` random `I`-feature sequences (f32), a Dense head `H -> V` on every step, mean
//! softmax cross-entropy over all `T*B` random targets, full backward, clipping by global norm 5,
//! and a plain SGD update (lr 0.1), with PyTorch's default initialization. A workload with
//! `"lengths": "uniform"` is a variable-length batch (lengths uniform in `1..=T`, sequence 0 of
//! length `T`, the loss over the real positions only; PyTorch runs it packed); its tokens/s
//! still counts `B*T` per step.

use nalgebra::DMatrix;
use nn_core::{Init, Module, Rng};
use nn_recurrent::{CellKind, Lengths, RecurrentConfig};
use nn_train::{
    Optimizer, SeqModel, SeqModelConfig, SeqWorkspace, SgdConfig, Target, clip_grad_norm,
};
use serde::{Deserialize, Deserializer};

/// The workloads file as shipped, for benchmarks that need no path.
pub const WORKLOADS_JSON: &str = include_str!("../workloads.json");

/// One workload of `benches/workloads.json` (serde: the file's field names; sizes must be
/// positive).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Workload {
    /// Its name (`lstm-m`, ...).
    pub name: String,
    /// The cell (`rnn`, `lstm` or `gru` in the file).
    pub cell: CellKind,
    /// `I`.
    #[serde(deserialize_with = "positive")]
    pub input: usize,
    /// `H`.
    #[serde(deserialize_with = "positive")]
    pub hidden: usize,
    /// `V`.
    #[serde(deserialize_with = "positive")]
    pub vocab: usize,
    /// `B`.
    #[serde(deserialize_with = "positive")]
    pub batch: usize,
    /// `T`.
    #[serde(deserialize_with = "positive")]
    pub steps: usize,
    /// `"uniform"`: a variable-length batch (lengths drawn uniformly from `1..=T`, sequence 0 of
    /// length `T`; the loss over the real positions only). Absent: every sequence has `T` steps.
    #[serde(default)]
    pub lengths: Option<LengthDist>,
}

/// How a variable-length workload draws its lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LengthDist {
    /// Uniform in `1..=T`, the first sequence `T`.
    Uniform,
}

/// A size of at least 1.
fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("sizes must be at least 1, got 0")),
        n => Ok(n),
    }
}

/// The part of the configs file read here.
#[derive(Deserialize)]
struct WorkloadsFile {
    workloads: Vec<Workload>,
}

impl Workload {
    /// Reads the `workloads` array of a configs file.
    pub fn parse_all(text: &str) -> Result<Vec<Workload>, String> {
        serde_json::from_str::<WorkloadsFile>(text)
            .map(|file| file.workloads)
            .map_err(|e| format!("workloads: {e}"))
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
    /// Each sequence's length (a variable-length workload), else empty.
    lengths: Vec<usize>,
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
        let mut targets: Vec<usize> = (0..w.steps * w.batch).map(|_| rng.below(w.vocab)).collect();
        // As `torch_reference.py`: lengths uniform in 1..=T, the first sequence T, and the
        // padded positions' targets ignored.
        let lengths = match w.lengths {
            None => Vec::new(),
            Some(LengthDist::Uniform) => {
                let mut l: Vec<usize> = (0..w.batch).map(|_| 1 + rng.below(w.steps)).collect();
                l[0] = w.steps;
                for (c, t) in targets.iter_mut().enumerate() {
                    if c / w.batch >= l[c % w.batch] {
                        *t = nn_core::loss::IGNORE_INDEX;
                    }
                }
                l
            }
        };
        Ok(Step {
            model,
            optimizer: Optimizer::new(SgdConfig::new(0.1)).map_err(e)?,
            ws: SeqWorkspace::new(),
            x,
            targets,
            batch: w.batch,
            lengths,
        })
    }

    /// One whole training step; returns the loss.
    pub fn run(&mut self) -> Result<f32, String> {
        let e = |e: nn_train::Error| e.to_string();
        self.model.zero_grad();
        let lengths = if self.lengths.is_empty() {
            Lengths::Full(self.batch)
        } else {
            Lengths::Each(&self.lengths)
        };
        let loss = self
            .model
            .forward_backward(
                &self.x,
                lengths,
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
