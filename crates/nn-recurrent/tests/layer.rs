//! The layer's public behavior: float64 gradient checks of every cell in both directions and
//! stacked (parameters, input, `h0`, `c0`), the single-step API against the sequence forward,
//! cache reuse, the typed errors, and PyTorch weight files in and out.

use nalgebra::DMatrix;
use nn_core::gradcheck::{check_input, check_params};
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Error, Module, Rng};
use nn_recurrent::{
    CellKind, Nonlinearity, Recurrent, RecurrentCache, RecurrentConfig, RecurrentState, StepScratch,
};
use nn_testutil::{param_grads, uniform_matrix};

/// A layer, data and fixed upstream gradients `G`, for `L = Σ Y⊙G_y + Σ h_n⊙G_h + Σ c_n⊙G_c`.
struct Setup {
    layer: Recurrent<f64>,
    batch: usize,
    x: DMatrix<f64>,
    initial: RecurrentState<f64>,
    g_out: DMatrix<f64>,
    g_final: RecurrentState<f64>,
}

impl Setup {
    fn new(config: RecurrentConfig, steps: usize, batch: usize, seed: u64) -> Setup {
        let mut rng = Rng::seed_from(seed);
        let layer = config.init::<f64>(&mut rng).unwrap();
        let slots = config.num_layers * config.num_directions();
        let h = config.hidden_size;
        let with_c = config.cell.has_cell_state();
        let state = |rng: &mut Rng| RecurrentState {
            h: uniform_matrix(h, slots * batch, rng),
            c: with_c.then(|| uniform_matrix(h, slots * batch, rng)),
        };
        let initial = state(&mut rng);
        let g_final = state(&mut rng);
        Setup {
            x: uniform_matrix(config.input_size, steps * batch, &mut rng),
            g_out: uniform_matrix(layer.output_size(), steps * batch, &mut rng),
            layer,
            batch,
            initial,
            g_final,
        }
    }

    fn loss(&self, cache: &RecurrentCache<f64>) -> f64 {
        let fin = cache.final_state();
        let mut l = cache.output().dot(&self.g_out) + fin.h.dot(&self.g_final.h);
        if let (Some(c), Some(g)) = (&fin.c, &self.g_final.c) {
            l += c.dot(g);
        }
        l
    }

    fn loss_at(&self, x: &DMatrix<f64>, initial: &RecurrentState<f64>) -> nn_core::Result<f64> {
        let mut cache = RecurrentCache::new();
        self.layer
            .forward(x, self.batch, Some(initial), &mut cache)?;
        Ok(self.loss(&cache))
    }
}

fn gradcheck(config: RecurrentConfig, steps: usize, batch: usize) {
    let what = format!("{config:?} T={steps} B={batch}");
    let mut s = Setup::new(config, steps, batch, 7);
    let mut cache = RecurrentCache::new();
    let (x, initial, g_out, g_final, b) = (&s.x, &s.initial, &s.g_out, &s.g_final, s.batch);
    let report = check_params(&mut s.layer, |layer| {
        layer.forward(x, b, Some(initial), &mut cache)?;
        let fin = cache.final_state();
        let mut l = cache.output().dot(g_out) + fin.h.dot(&g_final.h);
        if let (Some(c), Some(g)) = (&fin.c, &g_final.c) {
            l += c.dot(g);
        }
        layer.backward(x, &mut cache, g_out, Some(g_final), None)?;
        Ok(l)
    })
    .unwrap();
    assert!(report.max_rel_error <= 1e-6, "params of {what}: {report:?}");
    assert_eq!(report.checked, s.layer.num_params());

    let mut cache = RecurrentCache::new();
    let mut dx = DMatrix::from_element(x.nrows(), x.ncols(), f64::NAN);
    s.layer
        .forward(&s.x, b, Some(&s.initial), &mut cache)
        .unwrap();
    s.layer
        .backward(&s.x, &mut cache, &s.g_out, Some(&s.g_final), Some(&mut dx))
        .unwrap();
    let d_init = cache.d_initial().clone();
    let r = check_input(&s.x, &dx, |xp| s.loss_at(xp, &s.initial)).unwrap();
    assert!(r.max_rel_error <= 1e-6, "input of {what}: {r:?}");
    let r = check_input(&s.initial.h, &d_init.h, |hp| {
        let st = RecurrentState {
            h: hp.clone(),
            c: s.initial.c.clone(),
        };
        s.loss_at(&s.x, &st)
    })
    .unwrap();
    assert!(r.max_rel_error <= 1e-6, "h0 of {what}: {r:?}");
    if let Some(c0) = &s.initial.c {
        let r = check_input(c0, d_init.c.as_ref().unwrap(), |cp| {
            let st = RecurrentState {
                h: s.initial.h.clone(),
                c: Some(cp.clone()),
            };
            s.loss_at(&s.x, &st)
        })
        .unwrap();
        assert!(r.max_rel_error <= 1e-6, "c0 of {what}: {r:?}");
    }
}

#[test]
fn gradients_of_one_layer_match_finite_differences() {
    for cell in CellKind::ALL {
        gradcheck(RecurrentConfig::new(cell, 3, 4), 4, 2);
    }
}

#[test]
fn gradients_of_stacked_bidirectional_layers_match_finite_differences() {
    for cell in CellKind::ALL {
        let config = RecurrentConfig::new(cell, 3, 3)
            .with_num_layers(2)
            .with_bidirectional(true);
        gradcheck(config, 3, 2);
    }
}

#[test]
fn gradients_of_a_single_step_and_a_single_sequence() {
    for cell in CellKind::ALL {
        gradcheck(
            RecurrentConfig::new(cell, 2, 3).with_bidirectional(true),
            1,
            1,
        );
        gradcheck(RecurrentConfig::new(cell, 2, 2).with_num_layers(3), 2, 1);
    }
}

#[test]
fn gradients_with_the_input_product_in_the_time_loop_match_finite_differences() {
    // From a batch of 24 (and a small `W_ih`) the steps compute `W_ih x_t` themselves
    // (`layer::INPUT_IN_LOOP_MIN_BATCH`); the fixtures and the checks above use smaller ones.
    for cell in CellKind::ALL {
        gradcheck(
            RecurrentConfig::new(cell, 3, 4).with_bidirectional(true),
            3,
            24,
        );
    }
}

/// Columns `t*B + b` (`t < steps`) of `m`, or `slot*B + b` for states: sequence `b` alone.
fn sequence(m: &DMatrix<f64>, batch: usize, b: usize) -> DMatrix<f64> {
    let n = m.ncols() / batch;
    DMatrix::from_fn(m.nrows(), n, |r, c| m[(r, c * batch + b)])
}

#[test]
fn the_input_product_in_the_time_loop_gives_what_the_sequence_projection_gives() {
    // A batch of 24 (its steps compute `W_ih x_t`) against each of its sequences run alone (a
    // batch of 1, projected over the whole sequence first): the same values up to rounding.
    let batch = 24;
    for cell in CellKind::ALL {
        let config = RecurrentConfig::new(cell, 3, 4)
            .with_num_layers(2)
            .with_bidirectional(true);
        let mut s = Setup::new(config, 3, batch, 11);
        let mut cache = RecurrentCache::new();
        let mut dx = DMatrix::zeros(s.x.nrows(), s.x.ncols());
        s.layer.zero_grad();
        s.layer
            .forward(&s.x, batch, Some(&s.initial), &mut cache)
            .unwrap();
        let out = cache.output().clone();
        let fin = cache.final_state().clone();
        s.layer
            .backward(&s.x, &mut cache, &s.g_out, Some(&s.g_final), Some(&mut dx))
            .unwrap();
        let d_init = cache.d_initial().clone();
        let together = param_grads(&s.layer);

        s.layer.zero_grad();
        let state = |st: &RecurrentState<f64>, b| RecurrentState {
            h: sequence(&st.h, batch, b),
            c: st.c.as_ref().map(|c| sequence(c, batch, b)),
        };
        let close = |a: &DMatrix<f64>, b: &DMatrix<f64>| (a - b).amax() <= 1e-12;
        for b in 0..batch {
            let x = sequence(&s.x, batch, b);
            let mut dx_b = DMatrix::zeros(x.nrows(), x.ncols());
            s.layer
                .forward(&x, 1, Some(&state(&s.initial, b)), &mut cache)
                .unwrap();
            assert!(
                close(cache.output(), &sequence(&out, batch, b)),
                "{cell:?} output {b}"
            );
            let f = state(&fin, b);
            assert!(close(&cache.final_state().h, &f.h), "{cell:?} h_n {b}");
            if let (Some(c), Some(want)) = (&cache.final_state().c, &f.c) {
                assert!(close(c, want), "{cell:?} c_n {b}");
            }
            let (g_out, g_final) = (sequence(&s.g_out, batch, b), state(&s.g_final, b));
            s.layer
                .backward(&x, &mut cache, &g_out, Some(&g_final), Some(&mut dx_b))
                .unwrap();
            assert!(close(&dx_b, &sequence(&dx, batch, b)), "{cell:?} dx {b}");
            let want = state(&d_init, b);
            assert!(close(&cache.d_initial().h, &want.h), "{cell:?} dh0 {b}");
            if let (Some(c), Some(want)) = (&cache.d_initial().c, &want.c) {
                assert!(close(c, want), "{cell:?} dc0 {b}");
            }
        }
        for (alone, together) in param_grads(&s.layer).iter().zip(&together) {
            assert!(close(alone, together), "{cell:?} parameter gradients");
        }
    }
}

/// The f32 weight gradients, which run on `nn_core::kernels::wgrad::add_a_bt`'s AVX-512 tile
/// where the CPU has it (sizes that are multiples of 16), against the same layer in f64.
#[test]
fn f32_weight_gradients_agree_with_f64() {
    for cell in CellKind::ALL {
        let config = RecurrentConfig::new(cell, 16, 16)
            .with_num_layers(2)
            .with_bidirectional(true);
        let (steps, batch) = (4, 8);
        let mut s = Setup::new(config.clone(), steps, batch, 5);
        let mut l32 = config.init::<f32>(&mut Rng::seed_from(0)).unwrap();
        let mut values = Vec::new();
        s.layer
            .visit(&mut |_, p| values.push(p.value.clone().cast::<f32>()));
        let mut it = values.into_iter();
        l32.visit_mut(&mut |_, p| p.value = it.next().unwrap());
        let c32 = |m: &DMatrix<f64>| m.clone().cast::<f32>();
        let s32 = |st: &RecurrentState<f64>| RecurrentState {
            h: c32(&st.h),
            c: st.c.as_ref().map(c32),
        };
        s.layer.zero_grad();
        l32.zero_grad();
        let mut cache = RecurrentCache::new();
        s.layer
            .forward(&s.x, batch, Some(&s.initial), &mut cache)
            .unwrap();
        s.layer
            .backward(&s.x, &mut cache, &s.g_out, Some(&s.g_final), None)
            .unwrap();
        let mut cache32 = RecurrentCache::new();
        let x32 = c32(&s.x);
        l32.forward(&x32, batch, Some(&s32(&s.initial)), &mut cache32)
            .unwrap();
        let (g_out, g_final) = (c32(&s.g_out), s32(&s.g_final));
        l32.backward(&x32, &mut cache32, &g_out, Some(&g_final), None)
            .unwrap();
        let mut g32 = Vec::new();
        l32.visit(&mut |_, p| g32.push(p.grad.clone().cast::<f64>()));
        for (i, (want, got)) in param_grads(&s.layer).iter().zip(&g32).enumerate() {
            let err = (want - got).amax();
            assert!(
                err <= 1e-4 * (1.0 + want.amax()),
                "{cell:?} parameter {i}: {err}"
            );
        }
    }
}

#[test]
fn backward_adds_into_gradients_and_skips_the_input_gradient_on_request() {
    for cell in CellKind::ALL {
        let config = RecurrentConfig::new(cell, 3, 4)
            .with_num_layers(2)
            .with_bidirectional(true);
        let mut s = Setup::new(config, 3, 2, 1);
        let mut cache = RecurrentCache::new();
        s.layer
            .forward(&s.x, 2, Some(&s.initial), &mut cache)
            .unwrap();
        let mut dx = DMatrix::zeros(3, 6);
        s.layer.zero_grad();
        s.layer
            .backward(&s.x, &mut cache, &s.g_out, Some(&s.g_final), Some(&mut dx))
            .unwrap();
        let once: Vec<DMatrix<f64>> = param_grads(&s.layer);
        let d_init = cache.d_initial().clone();
        // A second backward needs its own forward (the first used up the saved gates).
        s.layer
            .forward(&s.x, 2, Some(&s.initial), &mut cache)
            .unwrap();
        s.layer
            .backward(&s.x, &mut cache, &s.g_out, Some(&s.g_final), None)
            .unwrap();
        for (twice, once) in param_grads(&s.layer).iter().zip(&once) {
            assert!((twice - once * 2.0).amax() < 1e-12);
        }
        assert_eq!(cache.d_initial(), &d_init);
    }
}

/// Step by step gives the sequence forward's bits (inputs of at most 256 features): at a batch of
/// 3, and of 24, where the forward's steps compute `W_ih x_t` themselves.
#[test]
fn step_by_step_gives_the_bits_of_the_sequence_forward() {
    for cell in CellKind::ALL {
        for batch in [3, 24] {
            let config = RecurrentConfig::new(cell, 3, 4).with_num_layers(2);
            let steps = 5;
            let s = Setup::new(config, steps, batch, 3);
            let mut cache = RecurrentCache::new();
            s.layer
                .forward(&s.x, batch, Some(&s.initial), &mut cache)
                .unwrap();
            let mut state = s.initial.clone();
            let mut scratch = StepScratch::new();
            for t in 0..steps {
                // A view of the step's columns, no copy (the test below steps owned copies).
                let x_t = s.x.columns(t * batch, batch);
                let h = s.layer.step(x_t, &mut state, &mut scratch).unwrap();
                let want = cache.output().columns(t * batch, batch);
                assert_eq!(h, &want, "{cell:?} batch {batch} step {t}");
            }
            assert_eq!(state.h, cache.final_state().h, "{cell:?} batch {batch}");
            assert_eq!(state.c, cache.final_state().c, "{cell:?} batch {batch}");
        }
    }
}

/// From a zero initial state the first step skips `W_hh h0` (a GRU zeroes its step scratch
/// instead): after a forward from a nonzero state, whose products fill that scratch, the same
/// cache gives a fresh cache's bits, and step by step gives them too.
#[test]
fn a_zero_initial_state_after_a_nonzero_one_gives_the_fresh_results() {
    for cell in CellKind::ALL {
        for batch in [3, 24] {
            let config = RecurrentConfig::new(cell, 3, 4).with_num_layers(2);
            let s = Setup::new(config, 4, batch, 11);
            let mut shared = RecurrentCache::new();
            let mut fresh = RecurrentCache::new();
            s.layer
                .forward(&s.x, batch, Some(&s.initial), &mut shared)
                .unwrap();
            s.layer.forward(&s.x, batch, None, &mut shared).unwrap();
            s.layer.forward(&s.x, batch, None, &mut fresh).unwrap();
            assert_eq!(shared.output(), fresh.output(), "{cell:?} batch {batch}");
            let mut state = s.layer.zero_state(batch);
            let mut scratch = StepScratch::new();
            s.layer
                .step(
                    &s.x.columns(0, batch).into_owned(),
                    &mut s.initial.clone(),
                    &mut scratch,
                )
                .unwrap();
            for t in 0..4 {
                let x_t = s.x.columns(t * batch, batch).into_owned();
                let h = s.layer.step(&x_t, &mut state, &mut scratch).unwrap();
                let want = fresh.output().columns(t * batch, batch);
                assert_eq!(h, &want, "{cell:?} batch {batch} step {t}");
            }
        }
    }
}

#[test]
fn a_cache_is_resized_for_new_lengths_and_gives_the_same_results() {
    let config = RecurrentConfig::new(CellKind::Lstm, 2, 3).with_bidirectional(true);
    let layer = config.init::<f64>(&mut Rng::seed_from(5)).unwrap();
    let mut rng = Rng::seed_from(6);
    let mut shared = RecurrentCache::new();
    for (steps, batch) in [(3, 2), (5, 2), (3, 1), (3, 2)] {
        let x = uniform_matrix(2, steps * batch, &mut rng);
        let mut fresh = RecurrentCache::new();
        layer.forward(&x, batch, None, &mut shared).unwrap();
        layer.forward(&x, batch, None, &mut fresh).unwrap();
        assert_eq!(shared.output(), fresh.output());
        assert_eq!(shared.final_state(), fresh.final_state());
        assert_eq!(shared.steps_and_batch(), Some((steps, batch)));
    }
}

#[test]
fn the_initial_state_defaults_to_zeros_and_the_layout_is_pytorchs() {
    let config = RecurrentConfig::new(CellKind::Gru, 2, 3)
        .with_num_layers(2)
        .with_bidirectional(true);
    let layer = config.init::<f64>(&mut Rng::seed_from(8)).unwrap();
    assert_eq!(
        layer.param_names()[..5],
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_ih_l0_reverse"
        ]
    );
    assert_eq!(layer.param_names().len(), 16);
    let w = layer.weights(1, 1).unwrap();
    assert_eq!(w.weight_ih.value.shape(), (9, 6));
    assert_eq!(w.bias_hh.torch_shape(), vec![9]);
    let bound = 1.0 / 3f64.sqrt();
    layer.visit(&mut |_, p| assert!(p.value.amax() <= bound));

    let x = uniform_matrix(2, 8, &mut Rng::seed_from(9));
    let (mut a, mut b) = (RecurrentCache::new(), RecurrentCache::new());
    layer.forward(&x, 2, None, &mut a).unwrap();
    layer
        .forward(&x, 2, Some(&layer.zero_state(2)), &mut b)
        .unwrap();
    assert_eq!(a.output(), b.output());
    // h_n of the top layer: forward direction = last step, reverse direction = first step.
    let (out, fin) = (a.output(), &a.final_state().h);
    assert_eq!(fin.columns(4, 2), out.view((0, 6), (3, 2)));
    assert_eq!(fin.columns(6, 2), out.view((3, 0), (3, 2)));
}

/// Sizes no machine can hold are errors, not an abort, a panic or (as `G·H·I` wrapped around in
/// release builds) a layer whose tensors are smaller than its sizes say.
#[test]
fn sizes_too_large_to_allocate_are_errors() {
    let init = |cell, input: usize, hidden: usize| {
        RecurrentConfig::new(cell, input, hidden)
            .init::<f32>(&mut Rng::seed_from(0))
            .map(|_| ())
    };
    let too_large = |r: nn_core::Result<()>| matches!(r, Err(Error::TooLarge { .. }));
    // `G·H·I` overflows usize (8 · 2^62 values).
    assert!(too_large(init(CellKind::Lstm, 1 << 62, 2)));
    // `G·H` itself overflows.
    assert!(matches!(
        init(CellKind::Lstm, 1, 1 << 62),
        Err(Error::InvalidConfig(_))
    ));
    // More than isize::MAX bytes (2^63 rows of one column).
    assert!(too_large(init(CellKind::Lstm, 1, 1 << 61)));
    // Addressable, but 2^50 bytes (1 PiB) for `W_hh`: more than the address space, refused by
    // the allocator (`W_ih` and its gradient, 128 MiB each, are allocated and freed first).
    assert!(too_large(init(CellKind::Lstm, 1, 1 << 23)));
    // Layer counts: refused before any weight is made.
    let layers = RecurrentConfig::new(CellKind::Gru, 2, 2)
        .with_num_layers(usize::MAX)
        .init::<f32>(&mut Rng::seed_from(0));
    assert!(matches!(layers, Err(Error::TooLarge { .. })));
}

/// A zero state for a batch no machine holds is an error from `try_zero_state`; a possible
/// batch gives the state `zero_state` gives.
#[test]
fn zero_states_too_large_to_allocate_are_errors() {
    let layer = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_num_layers(2)
        .with_bidirectional(true)
        .init::<f32>(&mut Rng::seed_from(0))
        .unwrap();
    assert_eq!(layer.try_zero_state(5).unwrap(), layer.zero_state(5));
    assert_eq!(layer.try_zero_state(5).unwrap().h.shape(), (4, 20));
    // `L*D*B` overflows usize: the error names the two factors.
    let e = layer.try_zero_state(usize::MAX / 2).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                op: "recurrent state (L*D slots, B columns each)",
                rows: 4,
                cols,
            } if cols == usize::MAX / 2
        ),
        "{e}"
    );
    // 2^62 values (2^64 bytes), more than isize::MAX bytes; then 2^50 bytes (1 PiB), more than
    // the address space, refused by the allocator.
    for batch in [1 << 58, 1 << 44] {
        let e = layer.try_zero_state(batch).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooLarge {
                    op: "recurrent state",
                    rows: 4,
                    ..
                }
            ),
            "batch {batch}: {e}"
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 4);
    let mut layer = config.init::<f32>(&mut Rng::seed_from(0)).unwrap();
    let mut cache = RecurrentCache::new();
    let x = DMatrix::<f32>::zeros(3, 6);
    let shape = |r: nn_core::Result<()>| matches!(r, Err(Error::ShapeMismatch { .. }));

    assert!(shape(layer.forward(
        &DMatrix::zeros(2, 6),
        2,
        None,
        &mut cache
    )));
    assert!(matches!(
        layer.forward(&x, 4, None, &mut cache),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        layer.forward(&x, 0, None, &mut cache),
        Err(Error::Empty { what: "batch", .. })
    ));
    assert!(matches!(
        layer.forward(&DMatrix::zeros(3, 0), 2, None, &mut cache),
        Err(Error::Empty { what: "steps", .. })
    ));
    let mut bad = x.clone();
    bad[(1, 4)] = f32::NAN;
    assert!(matches!(
        layer.forward(&bad, 2, None, &mut cache),
        Err(Error::NonFinite { index: 13, .. })
    ));
    let mut wrong = layer.zero_state(3);
    assert!(shape(layer.forward(&x, 2, Some(&wrong), &mut cache)));
    wrong = layer.zero_state(2);
    wrong.c = Some(DMatrix::zeros(4, 1));
    assert!(shape(layer.forward(&x, 2, Some(&wrong), &mut cache)));

    // Backward needs a forward of this layer, with the same x.
    let d_out = DMatrix::<f32>::zeros(4, 6);
    assert!(matches!(
        layer.backward(&x, &mut RecurrentCache::new(), &d_out, None, None),
        Err(Error::InvalidConfig(_))
    ));
    let other = RecurrentConfig::new(CellKind::Gru, 3, 4)
        .init::<f32>(&mut Rng::seed_from(0))
        .unwrap();
    other.forward(&x, 2, None, &mut cache).unwrap();
    assert!(matches!(
        layer.backward(&x, &mut cache, &d_out, None, None),
        Err(Error::InvalidConfig(_))
    ));
    layer.forward(&x, 2, None, &mut cache).unwrap();
    assert!(shape(layer.backward(
        &DMatrix::zeros(3, 4),
        &mut cache,
        &d_out,
        None,
        None
    )));
    assert!(shape(layer.backward(
        &x,
        &mut cache,
        &DMatrix::zeros(4, 5),
        None,
        None
    )));
    let d_fin = layer.zero_state(1);
    assert!(shape(layer.backward(
        &x,
        &mut cache,
        &d_out,
        Some(&d_fin),
        None
    )));
    let mut dx = DMatrix::zeros(3, 5);
    assert!(shape(layer.backward(
        &x,
        &mut cache,
        &d_out,
        None,
        Some(&mut dx)
    )));
    layer.backward(&x, &mut cache, &d_out, None, None).unwrap();
    // One backward per forward: the first wrote its gate gradients over the saved gates.
    assert!(matches!(
        layer.backward(&x, &mut cache, &d_out, None, None),
        Err(Error::InvalidConfig(_))
    ));
    layer.forward(&x, 2, None, &mut cache).unwrap();
    layer.backward(&x, &mut cache, &d_out, None, None).unwrap();
    // A failed forward leaves no forward behind, even after a forward a backward could use.
    layer.forward(&x, 2, None, &mut cache).unwrap();
    assert!(layer.forward(&bad, 2, None, &mut cache).is_err());
    assert!(layer.backward(&x, &mut cache, &d_out, None, None).is_err());

    // A parameter replaced by one of another shape (reachable through `visit_mut`).
    let mut broken = layer.clone();
    broken.weights_mut(0, 0).unwrap().weight_hh = nn_core::Param::matrix(DMatrix::zeros(16, 3));
    assert!(shape(broken.forward(&x, 2, None, &mut cache)));
    let mut st = broken.zero_state(2);
    assert!(
        broken
            .step(&DMatrix::zeros(3, 2), &mut st, &mut StepScratch::new())
            .is_err()
    );

    // A cell state for a cell that has none.
    let rnn = RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Tanh), 3, 4)
        .init::<f32>(&mut Rng::seed_from(0))
        .unwrap();
    let mut st = rnn.zero_state(2);
    st.c = Some(DMatrix::zeros(4, 2));
    assert!(matches!(
        rnn.forward(&x, 2, Some(&st), &mut cache),
        Err(Error::InvalidConfig(_))
    ));

    // Zero sizes.
    for config in [
        RecurrentConfig::new(CellKind::Lstm, 0, 4),
        RecurrentConfig::new(CellKind::Lstm, 3, 0),
        RecurrentConfig::new(CellKind::Lstm, 3, 4).with_num_layers(0),
    ] {
        assert!(matches!(
            config.init::<f32>(&mut Rng::seed_from(0)),
            Err(Error::InvalidConfig(_))
        ));
    }

    // step: unidirectional only, shapes checked.
    let mut scratch = StepScratch::new();
    let mut st = layer.zero_state(2);
    assert!(
        layer
            .step(&DMatrix::zeros(2, 2), &mut st, &mut scratch)
            .is_err()
    );
    assert!(
        layer
            .step(&DMatrix::zeros(3, 0), &mut st, &mut scratch)
            .is_err()
    );
    assert!(
        layer
            .step(&DMatrix::zeros(3, 3), &mut st, &mut scratch)
            .is_err()
    );
    st.c = None;
    assert!(
        layer
            .step(&DMatrix::zeros(3, 2), &mut st, &mut scratch)
            .is_err()
    );
    let bidir = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_bidirectional(true)
        .init::<f32>(&mut Rng::seed_from(0))
        .unwrap();
    let mut st = bidir.zero_state(2);
    assert!(matches!(
        bidir.step(&DMatrix::zeros(3, 2), &mut st, &mut scratch),
        Err(Error::InvalidConfig(_))
    ));
}

/// Writes every parameter of `layer`'s shape with values from `rng`, as f32 or f64.
fn write_random_file<T: nn_core::Float>(
    layer: &Recurrent<T>,
    path: &std::path::Path,
    f32s: bool,
    rng: &mut Rng,
) {
    let mut out = TensorWriter::new();
    layer.visit(&mut |name, p| {
        let shape = p.torch_shape();
        let n: usize = shape.iter().product();
        if f32s {
            let v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32 - 0.5).collect();
            out.values(name, &shape, &v);
        } else {
            let v: Vec<f64> = (0..n).map(|_| rng.uniform() - 0.5).collect();
            out.values(name, &shape, &v);
        }
    });
    out.write(path).unwrap();
}

#[test]
fn weight_files_round_trip_bit_for_bit_and_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_num_layers(2)
        .with_bidirectional(true);
    let mut rng = Rng::seed_from(11);
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));

    // f32 file -> f32 layer -> f32 file; and the f32 file into an f64 layer converts exactly.
    let mut l32 = config.init::<f32>(&mut rng).unwrap();
    write_random_file(&l32, &a, true, &mut rng);
    l32.load_safetensors(&a).unwrap();
    l32.save_safetensors(&b).unwrap();
    let (fa, fb) = (TensorFile::open(&a).unwrap(), TensorFile::open(&b).unwrap());
    assert_eq!(fa.names(), fb.names());
    for name in fa.names() {
        assert_eq!(fa.shape(name).unwrap(), fb.shape(name).unwrap());
        let (va, vb) = (
            fa.values::<f32>(name).unwrap(),
            fb.values::<f32>(name).unwrap(),
        );
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}"
        );
    }
    let mut l64 = config.init::<f64>(&mut rng).unwrap();
    l64.load_safetensors(&a).unwrap();
    let mut wide = Vec::new();
    l64.visit(&mut |_, p| wide.extend(p.value.iter().copied()));
    let mut narrow = Vec::new();
    l32.visit(&mut |_, p| narrow.extend(p.value.iter().map(|&v| v as f64)));
    assert_eq!(wide, narrow);

    // f64 file -> f64 layer -> f64 file.
    write_random_file(&l64, &a, false, &mut rng);
    l64.load_safetensors(&a).unwrap();
    l64.save_safetensors(&b).unwrap();
    let (fa, fb) = (TensorFile::open(&a).unwrap(), TensorFile::open(&b).unwrap());
    for name in fa.names() {
        let (va, vb) = (
            fa.values::<f64>(name).unwrap(),
            fb.values::<f64>(name).unwrap(),
        );
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}"
        );
    }
}

#[test]
fn bad_weight_files_are_errors_naming_the_tensor_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("w.safetensors");
    let config = RecurrentConfig::new(CellKind::Gru, 2, 3).with_bidirectional(true);
    let mut layer = config.init::<f64>(&mut Rng::seed_from(1)).unwrap();
    let before = layer.clone();
    let unchanged = |l: &Recurrent<f64>| {
        let mut same = true;
        let mut vals = Vec::new();
        before.visit(&mut |_, p| vals.push(p.value.clone()));
        let mut i = 0;
        l.visit(&mut |_, p| {
            same &= p.value == vals[i];
            i += 1;
        });
        same
    };
    let write = |skip: &str, change: &dyn Fn(&str, &mut TensorWriter) -> bool| {
        let mut out = TensorWriter::new();
        before.visit(&mut |name, p| {
            if name != skip && !change(name, &mut out) {
                out.param(name, p);
            }
        });
        out.write(&path).unwrap();
    };

    write("bias_hh_l0_reverse", &|_, _| false);
    let err = layer.clone().load_safetensors(&path).unwrap_err();
    assert!(matches!(&err, Error::MissingTensor { name, .. } if name == "bias_hh_l0_reverse"));
    assert!(err.to_string().contains("bias_hh_l0_reverse"));

    write("", &|name, out| {
        (name == "weight_hh_l0").then(|| out.values::<f64>(name, &[9, 2], &[0.0; 18]));
        name == "weight_hh_l0"
    });
    let err = layer.load_safetensors(&path).unwrap_err();
    assert!(
        matches!(&err, Error::TensorShape { name, expected, got }
            if name == "weight_hh_l0" && expected == &[9, 3] && got == &[9, 2]),
        "{err}"
    );
    assert!(unchanged(&layer));

    write("", &|name, out| {
        (name == "bias_ih_l0").then(|| out.u64s(name, &[0; 9]));
        name == "bias_ih_l0"
    });
    let err = layer.load_safetensors(&path).unwrap_err();
    assert!(
        matches!(&err, Error::TensorDtype { name, .. } if name == "bias_ih_l0"),
        "{err}"
    );
    assert!(unchanged(&layer));

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let err = layer.load_safetensors(&path).unwrap_err();
    assert!(matches!(&err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("w.safetensors"));
    assert!(matches!(
        layer.load_safetensors(dir.join("none.safetensors")),
        Err(Error::Io { .. })
    ));
    assert!(unchanged(&layer));
}
