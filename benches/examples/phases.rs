//! Wall time of the parts of one training step of a workload, to see where a step's time goes.
//! The parts run in turn, round after round; a figure is the median over rounds, and a part
//! that cannot be run alone (the loss, the time loops, the rest of the step) is the median of
//! its per-round difference (for example the layer's forward minus its input projection, timed
//! on its own in the same round), so that a drift of the machine weighs on both sides. Such a
//! difference can still come out negative when the part is smaller than the noise.
//!
//! ```text
//! cargo run --release -p benches --example phases -- lstm-m
//! STEPS=lstm-m cargo run --release -p benches --example phases   # step times in order, deciles
//! ```
use nalgebra::DMatrix;
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
    let mut step = benches::Step::new(w, 0).unwrap();
    let mut model =
        nn_train::SeqModelConfig::new(RecurrentConfig::new(w.cell, w.input, w.hidden), w.vocab)
            .init::<f32>(&mut Rng::seed_from(3))
            .unwrap();
    let mut ws = nn_train::SeqWorkspace::new();
    let xs = Init::Normal { std: 1.0 }
        .matrix(w.input, w.steps * w.batch, &mut Rng::seed_from(4))
        .unwrap();
    let tg: Vec<usize> = (0..w.steps * w.batch).map(|i| i % w.vocab).collect();
    let target = nn_train::Target::NextToken(&tg);
    // Forward, forward + loss, forward + loss + backward.
    let m = rounds(3, |i| match i {
        0 => model.forward(&xs, w.batch, None, false, &mut ws).unwrap(),
        1 => {
            model.loss(&xs, w.batch, None, target, &mut ws).unwrap();
        }
        _ => {
            model
                .forward_backward(&xs, w.batch, None, target, &mut ws)
                .unwrap();
        }
    });
    let zg = time(|| model.zero_grad());
    let clip = time(|| {
        nn_train::clip_grad_norm(&mut model, 5.0);
    });
    let mut opt = nn_train::Optimizer::new(nn_train::SgdConfig::new(0.0)).unwrap();
    let sgd = time(|| opt.step(&mut model).unwrap());
    println!(
        "model forward {:.3}, loss {:.3}, backward {:.3}, zero_grad {zg:.3}, clip {clip:.3}, sgd {sgd:.3}",
        median(&m, |r| r[0]),
        median(&m, |r| r[1] - r[0]),
        median(&m, |r| r[2] - r[1]),
    );
    let mut rng = Rng::seed_from(1);
    let cell = w.cell;
    let mut layer = RecurrentConfig::new(cell, w.input, w.hidden)
        .init::<f32>(&mut rng)
        .unwrap();
    let cols = w.steps * w.batch;
    let x = Init::Normal { std: 1.0 }
        .matrix(w.input, cols, &mut rng)
        .unwrap();
    let dy = Init::Normal { std: 0.01 }
        .matrix(w.hidden, cols, &mut rng)
        .unwrap();
    let mut cache = RecurrentCache::new();
    let gh = cell.gate_count() * w.hidden;
    let f = |m: usize, k: usize, n: usize, ms: f64| 2.0 * (m * k * n) as f64 / ms * 1e-6;
    let wih = DMatrix::<f32>::from_element(gh, w.input, 0.1);
    let mut g = DMatrix::<f32>::zeros(gh, cols);
    let mut dwih = DMatrix::<f32>::zeros(gh, w.input);
    let hs = DMatrix::<f32>::from_element(w.hidden, cols, 0.1);
    let mut dwhh = DMatrix::<f32>::zeros(gh, w.hidden);
    // A whole step, the layer's forward and backward, and their whole-sequence products alone.
    let p = rounds(6, |i| match i {
        0 => {
            step.run().unwrap();
        }
        1 => layer.forward(&x, w.batch, None, &mut cache).unwrap(),
        2 => {
            layer.zero_grad();
            layer.backward(&x, &mut cache, &dy, None, None).unwrap()
        }
        3 => matmul(&mut g, Accum::Replace, &wih, Trans::No, &x, Trans::No),
        4 => matmul(&mut dwih, Accum::Add, &g, Trans::No, &x, Trans::Yes),
        _ => matmul(&mut dwhh, Accum::Add, &g, Trans::No, &hs, Trans::Yes),
    });
    let (total, fwd, bwd) = (
        median(&p, |r| r[0]),
        median(&p, |r| r[1]),
        median(&p, |r| r[2]),
    );
    let (proj, dw_ih, dw_hh) = (
        median(&p, |r| r[3]),
        median(&p, |r| r[4]),
        median(&p, |r| r[5]),
    );
    let wv = DMatrix::<f32>::from_element(w.vocab, w.hidden, 0.1);
    let mut logits = DMatrix::<f32>::zeros(w.vocab, cols);
    let head = time(|| matmul(&mut logits, Accum::Replace, &wv, Trans::No, &hs, Trans::No));
    let mut dh = DMatrix::<f32>::zeros(w.hidden, cols);
    let head_dx = time(|| matmul(&mut dh, Accum::Replace, &wv, Trans::Yes, &logits, Trans::No));
    let mut dwv = DMatrix::<f32>::zeros(w.vocab, w.hidden);
    let head_dw = time(|| matmul(&mut dwv, Accum::Add, &logits, Trans::No, &hs, Trans::Yes));
    println!("{name}: step {total:.3} ms");
    println!(
        "  recurrent forward {fwd:.3} ms (input projection {proj:.3} ms, {:.0} GF/s)",
        f(gh, w.input, cols, proj)
    );
    println!(
        "  recurrent backward {bwd:.3} ms (dW_ih {dw_ih:.3} ms {:.0} GF/s, dW_hh {dw_hh:.3} ms {:.0} GF/s)",
        f(gh, cols, w.input, dw_ih),
        f(gh, cols, w.hidden, dw_hh)
    );
    println!(
        "  head fwd {head:.3} ms ({:.0} GF/s), dx {head_dx:.3} ms ({:.0}), dW {head_dw:.3} ms ({:.0})",
        f(w.vocab, w.hidden, cols, head),
        f(w.vocab, w.hidden, cols, head_dx),
        f(w.vocab, w.hidden, cols, head_dw)
    );
    let loops_f = median(&p, |r| r[1] - r[3]);
    let loops_b = median(&p, |r| r[2] - r[4] - r[5]);
    println!(
        "  forward time loop ~{loops_f:.3} ms ({:.0} GF/s), backward loop ~{loops_b:.3} ms ({:.0} GF/s)",
        f(gh, w.hidden, cols, loops_f),
        f(gh, w.hidden, cols, loops_b)
    );
    println!(
        "  rest of step (head, loss, clip, sgd) ~{:.3} ms",
        median(&p, |r| r[0] - r[1] - r[2])
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
