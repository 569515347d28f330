//! Criterion benchmarks: forward and forward + backward of each cell
//! at a small size (I=65, H=128, B=1, T=25: the char-model seed) and a medium one
//! (I=128, H=256, B=32, T=64), and a whole training step of every workload of `workloads.json`.
//! Run with `cargo bench` (or `cargo bench -- lstm` for one cell).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nalgebra::DMatrix;
use nn_core::{Init, Rng};
use nn_recurrent::{CellKind, Nonlinearity, RecurrentCache, RecurrentConfig};
use std::hint::black_box;

const SIZES: [(&str, usize, usize, usize, usize); 2] =
    [("small", 65, 128, 1, 25), ("medium", 128, 256, 32, 64)];
const CELLS: [(&str, CellKind); 3] = [
    ("rnn", CellKind::Rnn(Nonlinearity::Tanh)),
    ("lstm", CellKind::Lstm),
    ("gru", CellKind::Gru),
];

fn layers(c: &mut Criterion) {
    for (size, input, hidden, batch, steps) in SIZES {
        for (name, cell) in CELLS {
            let mut rng = Rng::seed_from(0);
            let mut layer = RecurrentConfig::new(cell, input, hidden)
                .init::<f32>(&mut rng)
                .unwrap();
            let x: DMatrix<f32> = Init::Normal { std: 1.0 }
                .matrix(input, steps * batch, &mut rng)
                .unwrap();
            let dy: DMatrix<f32> = Init::Normal { std: 1.0 }
                .matrix(hidden, steps * batch, &mut rng)
                .unwrap();
            let mut cache = RecurrentCache::new();
            let mut group = c.benchmark_group(format!("{name}-{size}"));
            group.throughput(Throughput::Elements((batch * steps) as u64));
            if size == "medium" {
                group.sample_size(10);
            }
            group.bench_function("forward", |bench| {
                bench.iter(|| {
                    layer
                        .forward(black_box(&x), batch, None, &mut cache)
                        .unwrap();
                })
            });
            group.bench_function("forward+backward", |bench| {
                bench.iter(|| {
                    layer
                        .forward(black_box(&x), batch, None, &mut cache)
                        .unwrap();
                    layer.backward(&x, &mut cache, &dy, None, None).unwrap();
                })
            });
            group.finish();
        }
    }
}

/// A whole training step (forward, loss, backward, clip, SGD) of every reference workload.
fn training_steps(c: &mut Criterion) {
    let workloads = benches::Workload::parse_all(benches::WORKLOADS_JSON).unwrap();
    let mut group = c.benchmark_group("train-step");
    group.sample_size(10);
    for w in &workloads {
        let mut step = benches::Step::new(w, 0).unwrap();
        group.throughput(Throughput::Elements((w.batch * w.steps) as u64));
        group.bench_function(&w.name, |bench| bench.iter(|| step.run().unwrap()));
    }
    group.finish();
}

criterion_group!(benches, layers, training_steps);
criterion_main!(benches);
