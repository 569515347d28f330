//! Heap allocations during forward and backward of a warmed-up layer, counted by a global
//! allocator that counts only on the thread that asks it to (`nn_testutil::CountingAlloc`).
//!
//! Every buffer lives in the cache, sized by the first pass, and the one product per time step
//! runs on a pre-packed weight matrix (`nn_core::kernels::packed::packed_matmul`), which allocates nothing. What
//! still allocates are the few whole-sequence products outside the time loops (input projection,
//! weight gradients, input gradient): `nn_core::matmul` (matrixmultiply) allocates a packing
//! buffer per call. So the count of a warm pass is exactly (whole-sequence products) ×
//! (allocations of one product), the same for every `T`: the time loops allocate nothing.

use nalgebra::DMatrix;
use nn_core::{Accum, Module, Rng, Trans, matmul};
use nn_recurrent::{
    CellKind, Nonlinearity, Recurrent, RecurrentCache, RecurrentConfig, StepScratch,
};
use nn_testutil::{CountingAlloc, allocations};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const CELLS: [CellKind; 3] = [
    CellKind::Rnn(Nonlinearity::Tanh),
    CellKind::Lstm,
    CellKind::Gru,
];

/// A layer with a cache and buffers warmed up by one forward and backward of `steps`.
struct Warm {
    layer: Recurrent<f32>,
    cache: RecurrentCache<f32>,
    x: DMatrix<f32>,
    d_out: DMatrix<f32>,
    d_x: DMatrix<f32>,
    batch: usize,
}

impl Warm {
    fn new(config: RecurrentConfig, steps: usize, batch: usize) -> Warm {
        let mut rng = Rng::seed_from(1);
        let mut layer = config.init::<f32>(&mut rng).unwrap();
        let cols = steps * batch;
        let x = DMatrix::from_fn(config.input_size, cols, |_, _| rng.uniform() as f32 - 0.5);
        let d_out = DMatrix::from_element(layer.output_size(), cols, 0.1);
        let d_x = DMatrix::zeros(config.input_size, cols);
        let mut w = Warm {
            layer: layer.clone(),
            cache: RecurrentCache::new(),
            x,
            d_out,
            d_x,
            batch,
        };
        w.pass();
        layer.zero_grad();
        w
    }

    fn pass(&mut self) {
        self.layer
            .forward(&self.x, self.batch, None, &mut self.cache)
            .unwrap();
        self.layer
            .backward(
                &self.x,
                &mut self.cache,
                &self.d_out,
                None,
                Some(&mut self.d_x),
            )
            .unwrap();
    }
}

/// Allocations of one warm matrix product of a time step's shape.
fn allocations_per_product() -> usize {
    let w = DMatrix::<f32>::from_element(12, 4, 0.5);
    let h = DMatrix::<f32>::from_element(4, 3, 0.5);
    let mut out = DMatrix::<f32>::zeros(12, 3);
    // The first product of the process sets matrixmultiply up (threads, CPU features).
    matmul(&mut out, Accum::Add, &w, Trans::No, &h, Trans::No);
    let n = allocations(|| matmul(&mut out, Accum::Add, &w, Trans::No, &h, Trans::No));
    assert!(n <= 2, "one product allocated {n} times");
    n
}

#[test]
fn the_time_loops_allocate_nothing() {
    let per = allocations_per_product();
    for cell in CELLS {
        let config = RecurrentConfig::new(cell, 3, 4)
            .with_num_layers(2)
            .with_bidirectional(true);
        let (layers_dirs, batch) = (4, 3);
        for steps in [2, 5, 12] {
            let mut warm = Warm::new(config.clone(), steps, batch);
            let n = allocations(|| warm.pass());
            // Per layer-direction, none inside a time loop: forward's input product; backward's
            // dW_ih, dW_hh (over the shifted sequence; the initial state's product is skipped,
            // as that state is zero) and dX.
            let products = layers_dirs * (1 + 1 + 1 + 1);
            assert_eq!(n, products * per, "{cell:?} T={steps}: {n} allocations");
        }
    }
}

#[test]
fn a_warm_step_allocates_nothing() {
    for cell in CELLS {
        let layer = RecurrentConfig::new(cell, 3, 4)
            .with_num_layers(2)
            .init::<f32>(&mut Rng::seed_from(2))
            .unwrap();
        let x = DMatrix::from_element(3, 2, 0.3f32);
        let mut state = layer.zero_state(2);
        let mut scratch = StepScratch::new();
        layer.step(&x, &mut state, &mut scratch).unwrap();
        let n = allocations(|| {
            layer.step(&x, &mut state, &mut scratch).unwrap();
        });
        // Both products of each layer run on weights packed into the scratch.
        assert_eq!(n, 0, "{cell:?}");
    }
}
