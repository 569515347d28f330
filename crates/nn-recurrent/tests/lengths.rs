//! Variable-length batches (`Lengths::Each`, PyTorch's `pack_padded_sequence(enforce_sorted=False)`):
//! each sequence of a batch gives what it gives run alone on its own length (output, final state,
//! every gradient), the output and input gradient past its end are 0, padded inputs are never
//! read, the forward-only pass gives the training forward's bits, and bad lengths are errors.
//! For every cell, stacked and bidirectional, with an initial state.

use nalgebra::DMatrix;
use nn_core::{Error, Module, Rng};
use nn_recurrent::{
    CellKind, InferScratch, Lengths, Nonlinearity, Recurrent, RecurrentCache, RecurrentConfig,
    RecurrentState,
};

const CELLS: [CellKind; 3] = [
    CellKind::Rnn(Nonlinearity::Tanh),
    CellKind::Lstm,
    CellKind::Gru,
];

fn fill(rows: usize, cols: usize, seed: usize) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |i, j| {
        ((i * 7 + j * 13 + seed * 31) as f64 * 0.37).sin() * 0.9
    })
}

/// Columns `t*B + b` for `t < len` of a padded `(R, T*B)` matrix: sequence `b` alone, `(R, len)`.
fn sequence(m: &DMatrix<f64>, batch: usize, b: usize, len: usize) -> DMatrix<f64> {
    DMatrix::from_fn(m.nrows(), len, |i, t| m[(i, t * batch + b)])
}

/// Column block `b` of each of the `slots` slots of a state `(H, S*B)`: sequence `b`'s `(H, S)`.
fn state_of(s: &RecurrentState<f64>, batch: usize, b: usize) -> RecurrentState<f64> {
    let pick = |m: &DMatrix<f64>| {
        DMatrix::from_fn(m.nrows(), m.ncols() / batch, |i, k| m[(i, k * batch + b)])
    };
    RecurrentState {
        h: pick(&s.h),
        c: s.c.as_ref().map(pick),
    }
}

fn close(a: &DMatrix<f64>, b: &DMatrix<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let err = (a - b).amax();
    assert!(err < 1e-12, "{what}: max difference {err:e}");
}

struct Case {
    layer: Recurrent<f64>,
    x: DMatrix<f64>,
    initial: RecurrentState<f64>,
    d_out: DMatrix<f64>,
    d_final: RecurrentState<f64>,
}

fn case(config: &RecurrentConfig, steps: usize, batch: usize) -> Case {
    let layer = config.init::<f64>(&mut Rng::seed_from(3)).unwrap();
    let (h, slots) = (
        config.hidden_size,
        config.num_layers * config.num_directions(),
    );
    let lstm = config.cell.has_cell_state();
    Case {
        x: fill(config.input_size, steps * batch, 1),
        initial: RecurrentState {
            h: fill(h, slots * batch, 2),
            c: lstm.then(|| fill(h, slots * batch, 3)),
        },
        d_out: fill(layer.output_size(), steps * batch, 4),
        d_final: RecurrentState {
            h: fill(h, slots * batch, 5),
            c: lstm.then(|| fill(h, slots * batch, 6)),
        },
        layer,
    }
}

/// Runs `lengths` through a layer with `config` and each sequence alone, and compares.
fn check(config: &RecurrentConfig, steps: usize, lengths: &[usize]) {
    let (batch, cell, input) = (lengths.len(), config.cell, config.input_size);
    {
        let Case {
            mut layer,
            mut x,
            initial,
            d_out,
            d_final,
        } = case(config, steps, batch);
        // Padded inputs are never read: NaN there changes nothing.
        for (b, &len) in lengths.iter().enumerate() {
            for t in len..steps {
                x.column_mut(t * batch + b).fill(f64::NAN);
            }
        }
        let mut cache = RecurrentCache::new();
        layer
            .forward_with(&x, Lengths::Each(lengths), Some(&initial), &mut cache, None)
            .unwrap();
        let (out, fin) = (cache.output().clone(), cache.final_state().clone());
        layer.zero_grad();
        let mut d_x = DMatrix::from_element(input, steps * batch, 7.0);
        layer
            .backward(&x, &mut cache, &d_out, Some(&d_final), Some(&mut d_x))
            .unwrap();
        let grads: Vec<DMatrix<f64>> = nn_testutil::param_grads(&layer);
        let d_init = cache.d_initial().clone();

        // Each sequence alone, its gradients summed.
        let mut sum: Vec<DMatrix<f64>> = grads.iter().map(|g| g.map(|_| 0.0)).collect();
        for (b, &len) in lengths.iter().enumerate() {
            let xb = sequence(&x, batch, b, len);
            let mut alone = RecurrentCache::new();
            layer
                .forward(&xb, 1, Some(&state_of(&initial, batch, b)), &mut alone)
                .unwrap();
            close(alone.output(), &sequence(&out, batch, b, len), "output");
            for t in len..steps {
                assert!(
                    out.column(t * batch + b).iter().all(|&v| v == 0.0),
                    "padded output"
                );
            }
            let fin_b = state_of(&fin, batch, b);
            close(&alone.final_state().h, &fin_b.h, "final h");
            if let (Some(a), Some(f)) = (&alone.final_state().c, &fin_b.c) {
                close(a, f, "final c");
            }
            layer.zero_grad();
            let mut dxb = DMatrix::zeros(input, len);
            let d_out_b = sequence(&d_out, batch, b, len);
            layer
                .backward(
                    &xb,
                    &mut alone,
                    &d_out_b,
                    Some(&state_of(&d_final, batch, b)),
                    Some(&mut dxb),
                )
                .unwrap();
            close(&dxb, &sequence(&d_x, batch, b, len), "input gradient");
            for t in len..steps {
                assert!(
                    d_x.column(t * batch + b).iter().all(|&v| v == 0.0),
                    "padded d_x"
                );
            }
            let di = state_of(&d_init, batch, b);
            close(&alone.d_initial().h, &di.h, "d h0");
            if let (Some(a), Some(f)) = (&alone.d_initial().c, &di.c) {
                close(a, f, "d c0");
            }
            for (s, g) in sum.iter_mut().zip(nn_testutil::param_grads(&layer)) {
                *s += g;
            }
        }
        for (s, g) in sum.iter().zip(&grads) {
            close(s, g, "parameter gradient");
        }

        // The forward-only pass: the same bits.
        let mut scratch = InferScratch::new();
        let (o, f) = layer
            .infer_with(&x, Lengths::Each(lengths), Some(&initial), &mut scratch)
            .unwrap();
        assert_eq!(o, &out, "{cell:?} infer output");
        assert_eq!(f, &fin, "{cell:?} infer final state");
    }
}

#[test]
fn each_sequence_gives_what_it_gives_alone() {
    for cell in CELLS {
        let config = |i, h| RecurrentConfig::new(cell, i, h).with_bidirectional(true);
        // Stacked, unsorted lengths with ties, 1 and T.
        check(&config(3, 4).with_num_layers(2), 7, &[3, 7, 1, 7, 5]);
        // B = 24: the steps compute `W_ih x_t`.
        let long: Vec<usize> = (0..24).map(|b| 1 + (b * 5) % 6).collect();
        check(&config(3, 6), 6, &long);
        // B <= 3 and a large enough `W_hh`: the matrix-vector kernel.
        check(&config(5, 74), 5, &[2, 5, 4]);
    }
}

/// The forward-only pass cuts the input product into windows of columns: on a variable-length
/// batch too, it gives the training forward's bits.
#[test]
fn windows_of_the_forward_only_pass_keep_the_forward_bits() {
    let (steps, batch) = (600, 16);
    let lengths: Vec<usize> = (0..batch).map(|b| 1 + (b * 241) % steps).collect();
    let config = RecurrentConfig::new(CellKind::Lstm, 300, 16).with_bidirectional(true);
    let Case {
        layer, x, initial, ..
    } = case(&config, steps, batch);
    let mut cache = RecurrentCache::new();
    layer
        .forward_with(
            &x,
            Lengths::Each(&lengths),
            Some(&initial),
            &mut cache,
            None,
        )
        .unwrap();
    let mut scratch = InferScratch::new();
    let (o, f) = layer
        .infer_with(&x, Lengths::Each(&lengths), Some(&initial), &mut scratch)
        .unwrap();
    assert_eq!(o, cache.output());
    assert_eq!(f, cache.final_state());
}

#[test]
fn full_lengths_give_the_full_batch_bits_and_bad_lengths_are_errors() {
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 4).with_bidirectional(true);
    let Case { layer, x, .. } = case(&config, 4, 3);
    let (mut a, mut b) = (RecurrentCache::new(), RecurrentCache::new());
    layer.forward(&x, 3, None, &mut a).unwrap();
    layer
        .forward_with(&x, Lengths::Each(&[4, 4, 4]), None, &mut b, None)
        .unwrap();
    assert_eq!(a.output(), b.output());
    for bad in [&[4, 0, 4][..], &[4, 5, 4], &[4, 4, 4, 4, 4]] {
        let err = layer
            .forward_with(&x, Lengths::Each(bad), None, &mut b, None)
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig(_) | Error::LengthMismatch { .. }),
            "{bad:?}: {err}"
        );
        assert!(b.output().is_empty(), "a failed forward leaves no output");
        let mut scratch = InferScratch::new();
        assert!(
            layer
                .infer_with(&x, Lengths::Each(bad), None, &mut scratch)
                .is_err()
        );
    }
    // NaN in a real position is still an error.
    let mut x = x;
    x[(0, 3)] = f64::NAN;
    assert!(matches!(
        layer.forward_with(&x, Lengths::Each(&[2, 2, 1]), None, &mut b, None),
        Err(Error::NonFinite { .. })
    ));
}

/// Finite differences of `L = Σ Y⊙G_y + Σ h_n⊙G_h (+ Σ c_n⊙G_c)` on a variable-length batch, with
/// dropout between the two layers (the rng re-seeded for every evaluation, so the masks are
/// fixed): every parameter, the input's real positions and the initial state.
#[test]
fn gradients_on_variable_lengths_match_finite_differences() {
    use nn_core::gradcheck::{check_input, check_params};
    let lengths = [2, 4, 1];
    let (steps, batch) = (4, lengths.len());
    for cell in CELLS {
        let config = RecurrentConfig::new(cell, 2, 3)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_dropout(0.3);
        let Case {
            mut layer,
            x,
            initial,
            d_out,
            d_final,
        } = case(&config, steps, batch);
        let forward = |layer: &Recurrent<f64>,
                       x: &DMatrix<f64>,
                       init: &RecurrentState<f64>,
                       cache: &mut RecurrentCache<f64>| {
            let rng = &mut Rng::seed_from(9);
            layer.forward_with(x, Lengths::Each(&lengths), Some(init), cache, Some(rng))?;
            let fin = cache.final_state();
            let mut l = cache.output().dot(&d_out) + fin.h.dot(&d_final.h);
            if let (Some(c), Some(g)) = (&fin.c, &d_final.c) {
                l += c.dot(g);
            }
            Ok(l)
        };
        let mut cache = RecurrentCache::new();
        let r = check_params(&mut layer, |layer| {
            let l = forward(layer, &x, &initial, &mut cache)?;
            layer.backward(&x, &mut cache, &d_out, Some(&d_final), None)?;
            Ok(l)
        })
        .unwrap();
        assert!(r.max_rel_error <= 1e-6, "{cell:?} params: {r:?}");
        forward(&layer, &x, &initial, &mut cache).unwrap();
        let mut dx = DMatrix::zeros(x.nrows(), x.ncols());
        layer
            .backward(&x, &mut cache, &d_out, Some(&d_final), Some(&mut dx))
            .unwrap();
        let d_init = cache.d_initial().clone();
        let r = check_input(&x, &dx, |xp| {
            forward(&layer, xp, &initial, &mut RecurrentCache::new())
        })
        .unwrap();
        assert!(r.max_rel_error <= 1e-6, "{cell:?} input: {r:?}");
        let r = check_input(&initial.h, &d_init.h, |hp| {
            let st = RecurrentState {
                h: hp.clone(),
                c: initial.c.clone(),
            };
            forward(&layer, &x, &st, &mut RecurrentCache::new())
        })
        .unwrap();
        assert!(r.max_rel_error <= 1e-6, "{cell:?} h0: {r:?}");
    }
}

/// `backward_packed` on the output gradient at the real positions gives `backward`'s bits, and
/// `packed_output` holds the output's real columns in `packed_columns` order.
#[test]
fn the_packed_output_and_backward_are_the_padded_ones() {
    let lengths = [3, 7, 1, 7, 5];
    let config = RecurrentConfig::new(CellKind::Lstm, 3, 4)
        .with_num_layers(2)
        .with_bidirectional(true);
    let Case {
        mut layer,
        x,
        initial,
        d_out,
        d_final,
    } = case(&config, 7, lengths.len());
    let run = |layer: &mut Recurrent<f64>, packed: bool| {
        let mut cache = RecurrentCache::new();
        layer
            .forward_with(
                &x,
                Lengths::Each(&lengths),
                Some(&initial),
                &mut cache,
                None,
            )
            .unwrap();
        let cols: Vec<usize> = cache.packed_columns().collect();
        let out = cache.packed_output().clone_owned();
        for (k, &c) in cols.iter().enumerate() {
            assert_eq!(out.column(k), cache.output().column(c));
        }
        layer.zero_grad();
        let mut d_x = DMatrix::zeros(3, x.ncols());
        if packed {
            let d = DMatrix::from_fn(d_out.nrows(), cols.len(), |i, k| d_out[(i, cols[k])]);
            layer.backward_packed(&x, &mut cache, &d, Some(&d_final), Some(&mut d_x))
        } else {
            layer.backward(&x, &mut cache, &d_out, Some(&d_final), Some(&mut d_x))
        }
        .unwrap();
        (
            nn_testutil::param_grads(layer),
            d_x,
            cache.d_initial().clone(),
        )
    };
    assert_eq!(run(&mut layer, false), run(&mut layer, true));
}
