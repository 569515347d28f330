//! Wall time of the parts of one training step of a workload, to see where a step's time goes
//! (median of repeated calls of each part; the "time loop" figures are the layer's forward or
//! backward minus its whole-sequence products, timed on their own).
//!
//! ```text
//! cargo run --release -p benches --example phases -- lstm-m
//! STEPS=lstm-m cargo run --release -p benches --example phases   # step times in order, deciles
//! ```
use nalgebra::DMatrix;
use nn_core::{Accum, Init, Module, Rng, Trans, matmul};
use nn_recurrent::{RecurrentCache, RecurrentConfig};
use std::time::Instant;

fn time(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut v = Vec::new();
    let s = Instant::now();
    while s.elapsed().as_secs_f64() < 1.0 || v.len() < 5 {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
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
    let total = time(|| {
        step.run().unwrap();
    });
    let mut model =
        nn_train::SeqModelConfig::new(RecurrentConfig::new(w.cell, w.input, w.hidden), w.vocab)
            .init::<f32>(&mut Rng::seed_from(3))
            .unwrap();
    let mut ws = nn_train::SeqWorkspace::new();
    let xs = Init::Normal { std: 1.0 }
        .matrix(w.input, w.steps * w.batch, &mut Rng::seed_from(4))
        .unwrap();
    let tg: Vec<usize> = (0..w.steps * w.batch).map(|i| i % w.vocab).collect();
    let m_fwd = time(|| model.forward(&xs, w.batch, None, false, &mut ws).unwrap());
    let target = nn_train::Target::NextToken(&tg);
    let m_loss = time(|| {
        model.loss(&xs, w.batch, None, target, &mut ws).unwrap();
    });
    let m_fb = time(|| {
        model
            .forward_backward(&xs, w.batch, None, target, &mut ws)
            .unwrap();
    });
    let zg = time(|| model.zero_grad());
    let clip = time(|| {
        nn_train::clip_grad_norm(&mut model, 5.0);
    });
    let mut opt = nn_train::Optimizer::new(nn_train::SgdConfig::new(0.0)).unwrap();
    let sgd = time(|| opt.step(&mut model).unwrap());
    println!(
        "model forward {m_fwd:.3}, loss {:.3}, backward {:.3}, zero_grad {zg:.3}, clip {clip:.3}, sgd {sgd:.3}",
        m_loss - m_fwd,
        m_fb - m_loss
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
    let fwd = time(|| layer.forward(&x, w.batch, None, &mut cache).unwrap());
    let bwd = time(|| {
        layer.zero_grad();
        layer.backward(&x, &mut cache, &dy, None, None).unwrap()
    });
    let gh = cell.gate_count() * w.hidden;
    let f = |m: usize, k: usize, n: usize, ms: f64| 2.0 * (m * k * n) as f64 / ms * 1e-6;
    let wih = DMatrix::<f32>::from_element(gh, w.input, 0.1);
    let mut g = DMatrix::<f32>::zeros(gh, cols);
    let proj = time(|| matmul(&mut g, Accum::Replace, &wih, Trans::No, &x, Trans::No));
    let mut dwih = DMatrix::<f32>::zeros(gh, w.input);
    let dw_ih = time(|| matmul(&mut dwih, Accum::Add, &g, Trans::No, &x, Trans::Yes));
    let hs = DMatrix::<f32>::from_element(w.hidden, cols, 0.1);
    let mut dwhh = DMatrix::<f32>::zeros(gh, w.hidden);
    let dw_hh = time(|| matmul(&mut dwhh, Accum::Add, &g, Trans::No, &hs, Trans::Yes));
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
    let loops_f = fwd - proj;
    let loops_b = bwd - dw_ih - dw_hh;
    println!(
        "  forward time loop ~{loops_f:.3} ms ({:.0} GF/s), backward loop ~{loops_b:.3} ms ({:.0} GF/s)",
        f(gh, w.hidden, cols, loops_f),
        f(gh, w.hidden, cols, loops_b)
    );
    println!(
        "  rest of step (head, loss, clip, sgd) ~{:.3} ms",
        total - fwd - bwd
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
