//! Wall time of the parts of one training step of a workload, to see where a step's time goes.
//!
//! First the parts of whole steps (zero_grad, the recurrent layer's forward, the head, the loss,
//! the backwards, clipping, SGD), each timed inside the step as `SeqModel::forward_backward`
//! runs them, so that each part finds the caches the step leaves it. Then the recurrent layer's
//! forward and backward alone and its whole-sequence products alone (the weight gradients as
//! the backward runs them: `dW_ih` with the bias gradient through `add_a_bt_row_sums`, `dW_hh`
//! through `add_a_bt`), in turn, round after round. A figure is the median over rounds; the
//! backward time loop, which cannot run alone, is the median of its per-round difference (the
//! layer's backward minus its two weight-gradient products, timed on their own in the same
//! round), so that a drift of the machine weighs on both sides. Such a difference can still come out negative when the part is
//! smaller than the noise.
//!
//! ```text
//! cargo run --release -p benches --example phases -- lstm-m
//! STEPS=lstm-m cargo run --release -p benches --example phases   # step times in order, deciles
//! ```
use nalgebra::DMatrix;
use nn_core::kernels::wgrad::{add_a_bt, add_a_bt_row_sums};
use nn_core::{Accum, Init, Module, Rng, Trans, matmul};
use nn_recurrent::{RecurrentCache, RecurrentConfig};
use std::time::Instant;

/// Runs `f(0)`, ..., `f(parts - 1)` in turn, round after round (three rounds of warm-up, then
/// at least one second and five rounds); returns each round's times in ms, `[round][part]`.
fn rounds(parts: usize, mut f: impl FnMut(usize)) -> Vec<Vec<f64>> {
    let mut round = || {
        (0..parts)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        round();
    }
    let mut v = Vec::new();
    let s = Instant::now();
    while s.elapsed().as_secs_f64() < 1.0 || v.len() < 5 {
        v.push(round());
    }
    v
}

/// The median over rounds of `g(round)`.
fn median(rounds: &[Vec<f64>], g: impl Fn(&[f64]) -> f64) -> f64 {
    let mut v: Vec<f64> = rounds.iter().map(|r| g(r)).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median time of `f` in ms.
fn time(mut f: impl FnMut()) -> f64 {
    median(&rounds(1, |_| f()), |r| r[0])
}

fn main() {
    if let Ok(n) = std::env::var("STEPS") {
        deciles(&n);
        return;
    }
    let name = std::env::args().nth(1).unwrap_or("lstm-m".into());
    let all = benches::Workload::parse_all(benches::WORKLOADS_JSON).unwrap();
    let w = all.iter().find(|w| w.name == name).unwrap();
    let cell = w.cell;
    let cols = w.steps * w.batch;
    let gh = cell.gate_count() * w.hidden;
    let f = |m: usize, k: usize, n: usize, ms: f64| 2.0 * (m * k * n) as f64 / ms * 1e-6;

    // The parts of whole steps, each timed inside the step (as `SeqModel::forward_backward`
    // runs them), so that every part sees the caches the step leaves it.
    let mut rng = Rng::seed_from(1);
    let mut model =
        nn_train::SeqModelConfig::new(RecurrentConfig::new(cell, w.input, w.hidden), w.vocab)
            .init::<f32>(&mut rng)
            .unwrap();
    let x = Init::Normal { std: 1.0 }
        .matrix(w.input, cols, &mut rng)
        .unwrap();
    let targets: Vec<usize> = (0..cols).map(|_| rng.below(w.vocab)).collect();
    let mut cache = RecurrentCache::new();
    let mut logits = DMatrix::<f32>::zeros(w.vocab, cols);
    let mut d_logits = DMatrix::<f32>::zeros(w.vocab, cols);
    let mut d_out = DMatrix::<f32>::zeros(w.hidden, cols);
    let mut opt = nn_train::Optimizer::new(nn_train::SgdConfig::new(0.1)).unwrap();
    let names = [
        "zero_grad",
        "recurrent forward",
        "head forward",
        "loss",
        "head backward",
        "recurrent backward",
        "clip",
        "sgd",
    ];
    let steps = rounds(names.len(), |i| match i {
        0 => model.zero_grad(),
        1 => model.rnn.forward(&x, w.batch, None, &mut cache).unwrap(),
        2 => model
            .head
            .forward_to(&cache.output().columns(0, cols), &mut logits)
            .unwrap(),
        3 => {
            assert!(nn_core::error::all_finite(logits.as_slice()));
            nn_core::loss::softmax_cross_entropy_to(&logits, &targets, &mut d_logits).unwrap();
        }
        4 => model
            .head
            .backward_to(
                &cache.output().columns(0, cols),
                &d_logits,
                Some(&mut d_out.columns_mut(0, cols)),
            )
            .unwrap(),
        5 => model
            .rnn
            .backward(&x, &mut cache, &d_out, None, None)
            .unwrap(),
        6 => {
            nn_train::clip_grad_norm(&mut model, 5.0);
        }
        _ => opt.step(&mut model).unwrap(),
    });
    let step = median(&steps, |r| r.iter().sum());
    println!("{name}: step {step:.3} ms; inside the step:");
    println!(
        "  {}",
        names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n} {:.3}", median(&steps, |r| r[i])))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // The layer's forward and backward alone, and its whole-sequence products alone, in the
    // same rounds.
    let mut layer = RecurrentConfig::new(cell, w.input, w.hidden)
        .init::<f32>(&mut rng)
        .unwrap();
    let dy = Init::Normal { std: 0.01 }
        .matrix(w.hidden, cols, &mut rng)
        .unwrap();
    let wih = DMatrix::<f32>::from_element(gh, w.input, 0.1);
    let mut g = DMatrix::<f32>::zeros(gh, cols);
    let mut dwih = DMatrix::<f32>::zeros(gh, w.input);
    let mut db = vec![0f32; gh];
    let hs = DMatrix::<f32>::from_element(w.hidden, cols, 0.1);
    let mut dwhh = DMatrix::<f32>::zeros(gh, w.hidden);
    let p = rounds(5, |i| match i {
        0 => layer.forward(&x, w.batch, None, &mut cache).unwrap(),
        1 => {
            layer.zero_grad();
            layer.backward(&x, &mut cache, &dy, None, None).unwrap()
        }
        2 => matmul(&mut g, Accum::Replace, &wih, Trans::No, &x, Trans::No),
        // The weight gradients as the layer's backward runs them (`dW_ih` summing the bias).
        3 => add_a_bt_row_sums(&mut dwih, &g, &x, &mut db),
        _ => add_a_bt(&mut dwhh, &g, &hs),
    });
    let [fwd, bwd, proj, dw_ih, dw_hh] = [0, 1, 2, 3, 4].map(|i| median(&p, |r| r[i]));
    // Every product of the forward: `W_ih x` (before or inside the loop) and `W_hh h`.
    println!(
        "  recurrent forward alone {fwd:.3} ms ({:.0} GF/s over its W_ih and W_hh products)",
        f(gh, w.input + w.hidden, cols, fwd)
    );
    let loop_b = median(&p, |r| r[1] - r[3] - r[4]);
    println!(
        "  recurrent backward alone {bwd:.3} ms: dW_ih {dw_ih:.3} ms ({:.0} GF/s), dW_hh \
         {dw_hh:.3} ms ({:.0} GF/s), the time loop ~{loop_b:.3} ms ({:.0} GF/s)",
        f(gh, cols, w.input, dw_ih),
        f(gh, cols, w.hidden, dw_hh),
        f(gh, w.hidden, cols, loop_b)
    );
    println!(
        "  W_ih X as one whole-sequence product alone {proj:.3} ms ({:.0} GF/s; the forward \
         runs it before the loop unless the steps compute W_ih x_t)",
        f(gh, w.input, cols, proj)
    );
    let wv = DMatrix::<f32>::from_element(w.vocab, w.hidden, 0.1);
    let head = time(|| matmul(&mut logits, Accum::Replace, &wv, Trans::No, &hs, Trans::No));
    let mut dh = DMatrix::<f32>::zeros(w.hidden, cols);
    let head_dx = time(|| matmul(&mut dh, Accum::Replace, &wv, Trans::Yes, &logits, Trans::No));
    let mut dwv = DMatrix::<f32>::zeros(w.vocab, w.hidden);
    let head_dw = time(|| matmul(&mut dwv, Accum::Add, &logits, Trans::No, &hs, Trans::Yes));
    println!(
        "  head products alone: forward {head:.3} ms ({:.0} GF/s), dx {head_dx:.3} ms ({:.0}), \
         dW {head_dw:.3} ms ({:.0})",
        f(w.vocab, w.hidden, cols, head),
        f(w.vocab, w.hidden, cols, head_dx),
        f(w.vocab, w.hidden, cols, head_dw)
    );
}

/// Deciles of the step times (`STEPS=name`).
fn deciles(name: &str) {
    let all = benches::Workload::parse_all(benches::WORKLOADS_JSON).unwrap();
    let w = all.iter().find(|w| w.name == name).unwrap();
    let mut step = benches::Step::new(w, 0).unwrap();
    for _ in 0..5 {
        step.run().unwrap();
    }
    let mut v: Vec<f64> = (0..100)
        .map(|_| {
            let t = Instant::now();
            step.run().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!(
        "in order: {:?}",
        v.iter().map(|x| x.round() as i64).collect::<Vec<_>>()
    );
    v.sort_by(f64::total_cmp);
    println!(
        "deciles: {:?}",
        (0..=10)
            .map(|i| (v[(i * 99) / 10] * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
}
