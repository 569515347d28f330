//! Generation speed of the four `gen-*` inference workloads (a char model, vocab 65, batch 1):
//! per token, `Recurrent::step_tokens` on the fed-back token, the `Dense` head `H -> 65`
//! (`Dense::forward_into`), and a token sampled at temperature 0.8 (a softmax draw from a
//! small seeded generator, as `nn_train::sample_logits` does it). Prints µs per token (the
//! minimum and median of several timed runs), the same loop fed one-hot matrices through
//! `Recurrent::step`, and the time to stream the weight bytes once at the read bandwidth
//! measured by a probe over a buffer of the same size split in two halves, one per core.
//!
//! `cargo run --release -p nn-recurrent --example gen_speed [-- NAME_FILTER [TOKENS]]`

use nalgebra::DMatrix;
use nn_core::{Dense, Module, Rng};
use nn_recurrent::{CellKind, Recurrent, RecurrentConfig, StepScratch};
use std::time::Instant;

const VOCAB: usize = 65;
/// Timed runs per workload: short runs, so that the minimum finds quiet moments on a shared
/// machine.
const RUNS: usize = 41;

/// `(name, cell, hidden, layers)`, as in `inference.json`.
const WORKLOADS: [(&str, CellKind, usize, usize); 4] = [
    ("gen-lstm-2x256", CellKind::Lstm, 256, 2),
    ("gen-lstm-1x512", CellKind::Lstm, 512, 1),
    ("gen-gru-2x256", CellKind::Gru, 256, 2),
    ("gen-lstm-1x64", CellKind::Lstm, 64, 1),
];

/// A softmax draw at `temperature` from `logits` (one column), with a uniform `u` in `[0, 1)`.
fn sample(logits: &DMatrix<f32>, temperature: f32, u: f64) -> usize {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut probs = [0f64; VOCAB];
    let mut total = 0.0;
    for (p, &v) in probs.iter_mut().zip(logits.iter()) {
        *p = (((v - max) / temperature) as f64).exp();
        total += *p;
    }
    let mut target = u * total;
    for (i, &p) in probs.iter().enumerate() {
        target -= p;
        if target < 0.0 {
            return i;
        }
    }
    VOCAB - 1
}

/// `tokens` tokens of the generation loop, each timed (µs, pushed to `times`); returns the
/// last token (so nothing is optimized out).
fn generate(
    rnn: &Recurrent<f32>,
    head: &Dense<f32>,
    tokens: usize,
    one_hot: bool,
    rng: &mut Rng,
    times: &mut Vec<f64>,
) -> usize {
    let mut state = rnn.zero_state(1);
    let mut scratch = StepScratch::new();
    let mut logits = DMatrix::zeros(VOCAB, 1);
    let mut x = DMatrix::zeros(VOCAB, 1);
    let mut tok = 0;
    for _ in 0..tokens {
        let start = Instant::now();
        let h = if one_hot {
            x.fill(0.0);
            x[(tok, 0)] = 1.0;
            rnn.step(&x, &mut state, &mut scratch)
        } else {
            rnn.step_tokens(&[tok], &mut state, &mut scratch)
        }
        .expect("step");
        head.forward_into(h, &mut logits).expect("head");
        tok = sample(&logits, 0.8, rng.uniform());
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    tok
}

/// µs per token over [`RUNS`] runs of `tokens` (after one warm-up run): the best run's mean,
/// and the 10th percentile and median of the single tokens' times (a shared machine's other
/// work lands on some tokens; the low percentiles show the loop itself).
fn time(rnn: &Recurrent<f32>, head: &Dense<f32>, tokens: usize, one_hot: bool) -> [f64; 3] {
    let mut rng = Rng::seed_from(3);
    let mut times = Vec::new();
    generate(rnn, head, tokens, one_hot, &mut rng, &mut times);
    times.clear();
    let mut best = f64::INFINITY;
    for _ in 0..RUNS {
        let start = Instant::now();
        std::hint::black_box(generate(rnn, head, tokens, one_hot, &mut rng, &mut times));
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / tokens as f64);
    }
    times.sort_by(f64::total_cmp);
    [best, times[times.len() / 10], times[times.len() / 2]]
}

/// Sums `v` with 128 independent lanes (8 AVX-512 registers), compiled for the widest vectors.
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 128];
    for c in v.chunks_exact(128) {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum()
}

/// Read bandwidth (GB/s) over `bytes` split in two halves read at once by the two threads
/// (best of many passes, each half staying in its core's cache when it fits).
fn bandwidth(bytes: usize) -> f64 {
    let n = (bytes / 4).next_multiple_of(256);
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let (lo, hi) = buf.split_at(n / 2);
    let pass = || {
        nn_core::kernels::pool::join(
            || nn_core::kernels::simd::dispatch(|| sum(lo)),
            || nn_core::kernels::simd::dispatch(|| sum(hi)),
        )
    };
    let mut best = f64::INFINITY;
    for _ in 0..2000 {
        let start = Instant::now();
        std::hint::black_box(pass());
        best = best.min(start.elapsed().as_secs_f64());
    }
    (n * 4) as f64 / best / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.first().cloned().unwrap_or_default();
    let tokens: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    for (name, cell, hidden, layers) in WORKLOADS {
        if !name.contains(&filter) {
            continue;
        }
        let mut rng = Rng::seed_from(1);
        let rnn = RecurrentConfig::new(cell, VOCAB, hidden)
            .with_num_layers(layers)
            .init::<f32>(&mut rng)
            .expect("init");
        let head = Dense::<f32>::new(hidden, VOCAB, &mut rng).expect("head");
        let mut all = 0;
        rnn.visit(&mut |_, p| all += p.value.len() * 4);
        head.visit(&mut |_, p| all += p.value.len() * 4);
        // Bytes read per token: all but the first layer's `W_ih`, of which one column is read.
        let gh = rnn.weights(0, 0).map_or(0, |w| w.weight_ih.value.nrows());
        let streamed = all - gh * (VOCAB - 1) * 4;
        let [best, p10, med] = time(&rnn, &head, tokens, false);
        let [_, hot_p10, hot_med] = time(&rnn, &head, tokens, true);
        let gbs = bandwidth(streamed);
        let stream_us = streamed as f64 / (gbs * 1e3);
        println!(
            "{{\"name\":\"{name}\",\"us_per_token\":{best:.2},\"tokens_per_s\":{:.0},\
             \"token_p10_us\":{p10:.2},\"token_median_us\":{med:.2},\
             \"one_hot_p10_us\":{hot_p10:.2},\"one_hot_median_us\":{hot_med:.2},\
             \"weight_bytes\":{all},\"streamed_bytes\":{streamed},\"read_gb_s\":{gbs:.1},\
             \"stream_us\":{stream_us:.2}}}",
            1e6 / best
        );
    }
}
