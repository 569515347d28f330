//! Dropout between stacked layers (`RecurrentConfig::dropout`, a forward given an `Rng`), tested
//! by its semantics, since PyTorch's random masks cannot be matched:
//!
//! - `p = 0`, one layer, or no rng: the bits of a pass without dropout, and no draws;
//! - the masks: exactly the documented draws (one `uniform() < p` per value, column-major, layer
//!   by layer bottom up), values either 0 or exactly `1/(1-p)` times the undropped output, a zero
//!   fraction close to `p`, fresh masks each pass, seeds that fix them;
//! - backward: the gradient is zero where the mask is zero, finite differences agree with dropout
//!   on (the rng re-seeded for every evaluation, so the masks are fixed), and a cache remembers
//!   whether its forward dropped;
//! - a `p` outside `[0, 1)` is a typed error; a warm training pass allocates no more than one
//!   without dropout.

use nalgebra::DMatrix;
use nn_core::gradcheck::{check_input, check_params};
use nn_core::{Error, Float, Module, Rng, lit};
use nn_recurrent::{
    CellKind, Lengths, Nonlinearity, Recurrent, RecurrentCache, RecurrentConfig, RecurrentState,
};
use nn_testutil::{CountingAlloc, allocations, param_grads, uniform_matrix};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const RELU: CellKind = CellKind::Rnn(Nonlinearity::Relu);

/// A training forward (`rng` given) or an evaluation one; the cache holds the results.
fn run<T: Float>(
    layer: &Recurrent<T>,
    x: &DMatrix<T>,
    batch: usize,
    initial: Option<&RecurrentState<T>>,
    cache: &mut RecurrentCache<T>,
    rng: Option<&mut Rng>,
) {
    layer
        .forward_with(x, Lengths::Full(batch), initial, cache, rng)
        .unwrap();
}

/// Forward then backward with upstream gradient `g`; the output, the gradients of the parameters
/// and of `x`, and the rng's state after the pass.
fn pass(
    layer: &mut Recurrent<f64>,
    x: &DMatrix<f64>,
    batch: usize,
    g: &DMatrix<f64>,
    rng: Option<&mut Rng>,
) -> (DMatrix<f64>, Vec<DMatrix<f64>>, DMatrix<f64>) {
    let mut cache = RecurrentCache::new();
    run(layer, x, batch, None, &mut cache, rng);
    layer.zero_grad();
    let mut dx = DMatrix::zeros(x.nrows(), x.ncols());
    layer
        .backward(x, &mut cache, g, None, Some(&mut dx))
        .unwrap();
    (cache.output().clone(), param_grads(layer), dx)
}

fn stacked(cell: CellKind, layers: usize, p: f64) -> RecurrentConfig {
    RecurrentConfig::new(cell, 3, 4)
        .with_num_layers(layers)
        .with_bidirectional(true)
        .with_dropout(p)
}

#[test]
fn no_dropout_gives_the_plain_bits_and_draws_nothing() {
    let (steps, batch) = (4, 3);
    for cell in CellKind::ALL {
        let plain = stacked(cell, 2, 0.0);
        let mut rng = Rng::seed_from(5);
        let mut base = plain.init::<f64>(&mut rng).unwrap();
        let x = uniform_matrix(3, steps * batch, &mut rng);
        let g = uniform_matrix(base.output_size(), steps * batch, &mut rng);
        let want = pass(&mut base, &x, batch, &g, None);
        // The same weights (init draws do not depend on p) under each setting that must not drop.
        let cases = [
            (plain.clone(), true),                    // p = 0 with an rng
            (plain.clone().with_dropout(0.5), false), // p > 0, evaluation (no rng)
            (stacked(cell, 1, 0.5), true),            // one layer: no layer between
        ];
        for (config, with_rng) in cases {
            let mut layer = config.init::<f64>(&mut Rng::seed_from(5)).unwrap();
            let mut want = want.clone();
            if config.num_layers == 1 {
                let mut one = stacked(cell, 1, 0.0)
                    .init::<f64>(&mut Rng::seed_from(5))
                    .unwrap();
                want = pass(&mut one, &x, batch, &g, None);
            }
            let mut r = Rng::seed_from(9);
            let got = pass(&mut layer, &x, batch, &g, with_rng.then_some(&mut r));
            assert_eq!(got, want, "{cell:?} {config:?} rng: {with_rng}");
            assert_eq!(
                r,
                Rng::seed_from(9),
                "{cell:?} {config:?} drew from the rng"
            );
        }
    }
}

/// A ReLU RNN of `layers` layers (`I = H`) whose layers above the first are the identity on
/// non-negative inputs (`W_ih = I`, `W_hh = 0`, biases 0): its output is what the top layer
/// reads, so the masks show through.
fn identity_stack<T: Float>(hidden: usize, layers: usize, p: f64) -> Recurrent<T> {
    let config = RecurrentConfig::new(RELU, hidden, hidden)
        .with_num_layers(layers)
        .with_dropout(p);
    let mut layer = config.init::<T>(&mut Rng::seed_from(11)).unwrap();
    for l in 1..layers {
        let w = layer.weights_mut(l, 0).unwrap();
        w.weight_ih.value = DMatrix::identity(hidden, hidden);
        w.weight_hh.value.fill(T::zero());
        w.bias_ih.value.fill(T::zero());
        w.bias_hh.value.fill(T::zero());
    }
    layer
}

/// Undropped output `y` and dropped `got` agree value by value: `got` is 0 or exactly `y·s`;
/// returns the fraction of zeros among the values where `y ≠ 0`.
fn zero_fraction<T: Float>(y: &DMatrix<T>, got: &DMatrix<T>, p: f64) -> f64 {
    let s: T = lit(1.0 / (1.0 - p));
    let (mut zeros, mut live) = (0usize, 0usize);
    for (&y, &v) in y.iter().zip(got.iter()) {
        assert!(
            v == T::zero() || v == y * s,
            "{v:?} is neither 0 nor {y:?}·{s:?}"
        );
        if y != T::zero() {
            live += 1;
            zeros += usize::from(v == T::zero());
        }
    }
    assert!(
        live > 1000,
        "too few non-zero values ({live}) for statistics"
    );
    zeros as f64 / live as f64
}

fn mask_statistics<T: Float>() {
    let (h, steps, batch) = (64, 16, 8);
    let x = uniform_matrix(h, steps * batch, &mut Rng::seed_from(12)).map(lit::<T>);
    for p in [0.1, 0.5, 0.8] {
        let layer = identity_stack::<T>(h, 2, p);
        let mut cache = RecurrentCache::new();
        run(&layer, &x, batch, None, &mut cache, None);
        let y = cache.output().clone();
        let mut rng = Rng::seed_from(13);
        run(&layer, &x, batch, None, &mut cache, Some(&mut rng));
        let first = cache.output().clone();
        let f = zero_fraction(&y, &first, p);
        // n ≥ 1000 live values: the standard deviation of the fraction is at most 0.016.
        assert!((f - p).abs() < 0.06, "p = {p}: zero fraction {f}");
        // Each row and each column gets its own draws (no mask repeated along either).
        let rows_differ = (1..h).any(|i| first.row(i) != first.row(0));
        let cols_differ = (1..first.ncols()).any(|j| first.column(j) != first.column(0));
        assert!(rows_differ && cols_differ, "p = {p}");
        // The next training pass draws a new mask from where the rng now stands.
        run(&layer, &x, batch, None, &mut cache, Some(&mut rng));
        zero_fraction(&y, cache.output(), p);
        assert_ne!(cache.output(), &first, "p = {p}: the same mask twice");
    }
}

#[test]
fn masks_zero_about_p_of_the_values_and_scale_the_rest_by_one_over_one_minus_p() {
    mask_statistics::<f64>();
    mask_statistics::<f32>();
}

/// The masks `replay` gives for `n` values: `uniform() < p` drops, else `1/(1-p)`.
fn replay_mask(replay: &mut Rng, p: f64, rows: usize, cols: usize) -> DMatrix<f64> {
    let s = 1.0 / (1.0 - p);
    // `from_fn` visits column-major, as the draws are made.
    DMatrix::from_fn(
        rows,
        cols,
        |_, _| if replay.uniform() < p { 0.0 } else { s },
    )
}

#[test]
fn masks_are_the_documented_draws_layer_by_layer_bottom_up() {
    let (h, steps, batch, p) = (5, 3, 2, 0.3);
    let x = uniform_matrix(h, steps * batch, &mut Rng::seed_from(1));
    let layer = identity_stack::<f64>(h, 3, p);
    let mut cache = RecurrentCache::new();
    run(&layer, &x, batch, None, &mut cache, None);
    let y = cache.output().clone();
    let mut rng = Rng::seed_from(2);
    run(&layer, &x, batch, None, &mut cache, Some(&mut rng));
    let mut replay = Rng::seed_from(2);
    let m0 = replay_mask(&mut replay, p, h, steps * batch);
    let m1 = replay_mask(&mut replay, p, h, steps * batch);
    // Layer 1 reads y⊙m0 and passes it on; layer 2 reads (y⊙m0)⊙m1: the same bits.
    let want = y.zip_zip_map(&m0, &m1, |y, a, b| (y * a) * b);
    assert_eq!(cache.output(), &want);
    assert_eq!(
        rng, replay,
        "two masks of H·T·B draws each, and nothing more"
    );
    assert!(m0.iter().chain(m1.iter()).any(|&m| m == 0.0));
}

#[test]
fn the_gradient_is_zero_where_the_mask_is_zero() {
    // Layer 0 is `tanh(x)` value by value (`W_ih = I`, `W_hh = 0`, no bias), so the input
    // gradient is `tanh'(x) ⊙ mask ⊙ ∂L/∂(what layer 1 reads)`: zero exactly where the mask is.
    let (h, steps, batch, p) = (6, 4, 3, 0.5);
    let cols = steps * batch;
    let config = RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Tanh), h, h)
        .with_num_layers(2)
        .with_dropout(p);
    let mut rng = Rng::seed_from(3);
    let mut layer = config.init::<f64>(&mut rng).unwrap();
    {
        let w = layer.weights_mut(0, 0).unwrap();
        w.weight_ih.value = DMatrix::identity(h, h);
        w.weight_hh.value.fill(0.0);
        w.bias_ih.value.fill(0.0);
        w.bias_hh.value.fill(0.0);
    }
    let x = uniform_matrix(h, cols, &mut rng);
    let g = uniform_matrix(h, cols, &mut rng);
    let (_, _, dx) = pass(&mut layer, &x, batch, &g, Some(&mut Rng::seed_from(4)));
    let mask = replay_mask(&mut Rng::seed_from(4), p, h, cols);
    let (_, _, dx_eval) = pass(&mut layer, &x, batch, &g, None);
    let mut zeros = 0;
    for k in 0..dx.len() {
        if mask[k] == 0.0 {
            assert_eq!(dx[k], 0.0, "value {k}: dropped but has a gradient");
            zeros += 1;
        } else {
            assert!(dx[k] != 0.0, "value {k}: kept but has no gradient");
        }
        assert!(dx_eval[k] != 0.0);
    }
    assert!(zeros > 0 && zeros < dx.len());
}

/// Finite differences of `L = Σ Y⊙G_y + Σ h_n⊙G_h (+ Σ c_n⊙G_c)` with dropout on: every
/// evaluation re-seeds the rng, so the masks stay fixed and `L` is smooth in every input.
fn gradcheck_with_dropout(config: RecurrentConfig, steps: usize, batch: usize) {
    let what = format!("{config:?}");
    let seed = 21;
    let mut rng = Rng::seed_from(7);
    let mut layer = config.init::<f64>(&mut rng).unwrap();
    let slots = config.num_layers * config.num_directions();
    let h = config.hidden_size;
    let with_c = config.cell.has_cell_state();
    let mut state = || RecurrentState {
        h: uniform_matrix(h, slots * batch, &mut rng),
        c: with_c.then(|| uniform_matrix(h, slots * batch, &mut rng)),
    };
    let (initial, g_final) = (state(), state());
    let x = uniform_matrix(config.input_size, steps * batch, &mut rng);
    let g_out = uniform_matrix(layer.output_size(), steps * batch, &mut rng);
    let loss = |cache: &RecurrentCache<f64>| {
        let fin = cache.final_state();
        let mut l = cache.output().dot(&g_out) + fin.h.dot(&g_final.h);
        if let (Some(c), Some(g)) = (&fin.c, &g_final.c) {
            l += c.dot(g);
        }
        l
    };
    let mut cache = RecurrentCache::new();
    let r = check_params(&mut layer, |layer| {
        let rng = &mut Rng::seed_from(seed);
        run(layer, &x, batch, Some(&initial), &mut cache, Some(rng));
        let l = loss(&cache);
        layer.backward(&x, &mut cache, &g_out, Some(&g_final), None)?;
        Ok(l)
    })
    .unwrap();
    assert!(r.max_rel_error <= 1e-6, "params of {what}: {r:?}");
    assert_eq!(r.checked, layer.num_params());

    let loss_at = |x: &DMatrix<f64>, initial: &RecurrentState<f64>| {
        let mut cache = RecurrentCache::new();
        let rng = &mut Rng::seed_from(seed);
        run(&layer, x, batch, Some(initial), &mut cache, Some(rng));
        Ok(loss(&cache))
    };
    // Dropout is on: the output differs from the evaluation pass's.
    run(&layer, &x, batch, Some(&initial), &mut cache, None);
    let eval = cache.output().clone();
    run(
        &layer,
        &x,
        batch,
        Some(&initial),
        &mut cache,
        Some(&mut Rng::seed_from(seed)),
    );
    assert_ne!(cache.output(), &eval, "{what}: nothing was dropped");
    let mut dx = DMatrix::from_element(x.nrows(), x.ncols(), f64::NAN);
    let mut l2 = layer.clone();
    l2.backward(&x, &mut cache, &g_out, Some(&g_final), Some(&mut dx))
        .unwrap();
    let d_init = cache.d_initial().clone();
    let r = check_input(&x, &dx, |xp| loss_at(xp, &initial)).unwrap();
    assert!(r.max_rel_error <= 1e-6, "input of {what}: {r:?}");
    let r = check_input(&initial.h, &d_init.h, |hp| {
        let st = RecurrentState {
            h: hp.clone(),
            c: initial.c.clone(),
        };
        loss_at(&x, &st)
    })
    .unwrap();
    assert!(r.max_rel_error <= 1e-6, "h0 of {what}: {r:?}");
    if let Some(c0) = &initial.c {
        let r = check_input(c0, d_init.c.as_ref().unwrap(), |cp| {
            let st = RecurrentState {
                h: initial.h.clone(),
                c: Some(cp.clone()),
            };
            loss_at(&x, &st)
        })
        .unwrap();
        assert!(r.max_rel_error <= 1e-6, "c0 of {what}: {r:?}");
    }
}

#[test]
fn gradients_with_dropout_match_finite_differences() {
    for cell in CellKind::ALL {
        gradcheck_with_dropout(stacked(cell, 2, 0.4), 3, 2);
        gradcheck_with_dropout(stacked(cell, 3, 0.25).with_bidirectional(false), 3, 2);
    }
    gradcheck_with_dropout(stacked(CellKind::Lstm, 3, 0.6), 2, 2);
}

#[test]
fn a_cache_remembers_whether_its_forward_dropped() {
    let (steps, batch) = (3, 2);
    for cell in CellKind::ALL {
        let mut rng = Rng::seed_from(8);
        let mut layer = stacked(cell, 2, 0.5).init::<f64>(&mut rng).unwrap();
        let x = uniform_matrix(3, steps * batch, &mut rng);
        let g = uniform_matrix(layer.output_size(), steps * batch, &mut rng);
        let eval = pass(&mut layer, &x, batch, &g, None);
        let train = pass(&mut layer, &x, batch, &g, Some(&mut Rng::seed_from(1)));
        assert_ne!(eval.1, train.1, "{cell:?}");
        // A training forward, then an evaluation forward in the same cache: backward is the
        // evaluation's; and the other way round.
        for (first, second, want) in [(true, false, &eval), (false, true, &train)] {
            let mut cache = RecurrentCache::new();
            let mut r = Rng::seed_from(1);
            for dropping in [first, second] {
                run(
                    &layer,
                    &x,
                    batch,
                    None,
                    &mut cache,
                    dropping.then_some(&mut r),
                );
            }
            layer.zero_grad();
            let mut dx = DMatrix::zeros(x.nrows(), x.ncols());
            layer
                .backward(&x, &mut cache, &g, None, Some(&mut dx))
                .unwrap();
            let got = (cache.output().clone(), param_grads(&layer), dx);
            assert_eq!(&got, want, "{cell:?} {first} then {second}");
        }
    }
}

#[test]
fn one_seed_gives_one_result_and_another_seed_another() {
    for cell in CellKind::ALL {
        let mut rng = Rng::seed_from(6);
        let mut layer = stacked(cell, 3, 0.3).init::<f64>(&mut rng).unwrap();
        let x = uniform_matrix(3, 8, &mut rng);
        let g = uniform_matrix(layer.output_size(), 8, &mut rng);
        let a = pass(&mut layer, &x, 2, &g, Some(&mut Rng::seed_from(1)));
        let b = pass(&mut layer, &x, 2, &g, Some(&mut Rng::seed_from(1)));
        let c = pass(&mut layer, &x, 2, &g, Some(&mut Rng::seed_from(2)));
        assert_eq!(a, b, "{cell:?}");
        assert_ne!(a.0, c.0, "{cell:?}");
        assert_ne!(a.1, c.1, "{cell:?}");
    }
}

#[test]
fn a_probability_outside_zero_to_one_is_a_typed_error() {
    for p in [
        -0.1,
        -f64::MIN_POSITIVE,
        1.0,
        1.5,
        f64::NAN,
        f64::INFINITY,
        -f64::INFINITY,
    ] {
        let config = stacked(CellKind::Lstm, 2, p);
        assert!(
            matches!(config.validate(), Err(Error::InvalidConfig(_))),
            "p = {p}"
        );
        assert!(
            matches!(
                config.init::<f32>(&mut Rng::seed_from(0)),
                Err(Error::InvalidConfig(_))
            ),
            "p = {p}"
        );
    }
    for p in [0.0, -0.0, 0.5, 1.0 - f64::EPSILON] {
        stacked(CellKind::Gru, 2, p).validate().unwrap();
    }
}

#[test]
fn a_warm_training_pass_allocates_no_more_than_one_without_dropout() {
    let (steps, batch) = (5, 3);
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let mut counts = Vec::new();
        for p in [0.0, 0.5] {
            let mut rng = Rng::seed_from(4);
            let mut layer = stacked(cell, 3, p).init::<f32>(&mut rng).unwrap();
            let x = DMatrix::from_fn(3, steps * batch, |_, _| rng.uniform() as f32);
            let g = DMatrix::from_element(layer.output_size(), steps * batch, 0.1f32);
            let mut dx = DMatrix::zeros(3, steps * batch);
            let mut cache = RecurrentCache::new();
            let mut train = |layer: &mut Recurrent<f32>| {
                run(layer, &x, batch, None, &mut cache, Some(&mut rng));
                layer
                    .backward(&x, &mut cache, &g, None, Some(&mut dx))
                    .unwrap();
            };
            train(&mut layer);
            counts.push(allocations(|| train(&mut layer)));
        }
        assert_eq!(counts[0], counts[1], "{cell:?}: without, with dropout");
    }
}
