//! Property tests: for random cells, sizes (including 0 and 1), depths, directions, `T = 1`,
//! `B = 1`, and values (including NaN, infinity and large magnitudes), `Recurrent`'s forward,
//! backward and step return either results of the right shape with finite values, or a typed
//! error. A panic fails the test.
//!
//! 512 cases per property by default (a few seconds in the dev profile); `PROPTEST_CASES=N`
//! runs more.

use nalgebra::DMatrix;
use nn_core::{Error, Float, Rng};
use nn_recurrent::{
    CellKind, Recurrent, RecurrentCache, RecurrentConfig, RecurrentState, StepScratch,
};
use nn_testutil::{all_finite, cycled, grads_finite, proptest_cases};
use proptest::prelude::*;

/// Mostly ordinary values, sometimes zero, large, NaN or infinite.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        12 => -3.0..3.0f64,
        1 => Just(0.0),
        1 => prop_oneof![Just(1e30), Just(-1e30)],
        1 => Just(f64::NAN),
        1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
    ]
}

/// One random situation: a layer's settings, a sequence batch and what goes with it. Sizes are
/// usually the right ones and sometimes off by one, so both paths are exercised.
#[derive(Clone, Debug)]
struct Case {
    cell: CellKind,
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    steps: usize,
    batch: usize,
    /// Added to the right input rows / batch columns: 0 most of the time.
    x_rows_off: usize,
    x_cols_off: usize,
    /// 0 no initial state, 1 the right shape, 2 a wrong shape.
    initial: u8,
    /// Whether the initial state (when given) and the input may hold special values.
    special: bool,
    values: Vec<f64>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (0usize..4, 0usize..4, 0usize..4, 0usize..3, any::<bool>()),
        (0usize..4, 0usize..4),
        (
            prop_oneof![6 => Just(0usize), 1 => Just(1usize)],
            prop_oneof![6 => Just(0usize), 1 => Just(1usize)],
        ),
        (0u8..3, any::<bool>()),
        proptest::collection::vec(value(), 1..40),
        any::<u64>(),
    )
        .prop_map(
            |(
                (cell, input, hidden, layers, bidirectional),
                (steps, batch),
                (x_rows_off, x_cols_off),
                (initial, special),
                values,
                seed,
            )| Case {
                cell: CellKind::ALL[cell],
                input,
                hidden,
                layers,
                bidirectional,
                steps,
                batch,
                x_rows_off,
                x_cols_off,
                initial,
                special,
                values,
                seed,
            },
        )
}

impl Case {
    fn config(&self) -> RecurrentConfig {
        RecurrentConfig::new(self.cell, self.input, self.hidden)
            .with_num_layers(self.layers)
            .with_bidirectional(self.bidirectional)
    }

    fn slots(&self) -> usize {
        self.layers * if self.bidirectional { 2 } else { 1 }
    }

    /// The values to use, with the special ones replaced unless `special`.
    fn data(&self, rows: usize, cols: usize) -> DMatrix<f64> {
        let m = cycled(rows, cols, &self.values);
        if self.special {
            m
        } else {
            m.map(|v| {
                if v.is_finite() && v.abs() < 1e3 {
                    v
                } else {
                    0.5
                }
            })
        }
    }

    fn x(&self) -> DMatrix<f64> {
        self.data(
            self.input + self.x_rows_off,
            self.steps * self.batch + self.x_cols_off,
        )
    }

    fn state(&self, hidden: usize, cols: usize) -> RecurrentState<f64> {
        RecurrentState {
            h: self.data(hidden, cols),
            c: self
                .cell
                .has_cell_state()
                .then(|| self.data(hidden, cols).map(|v| -v)),
        }
    }

    fn initial_state(&self) -> Option<RecurrentState<f64>> {
        match self.initial {
            0 => None,
            1 => Some(self.state(self.hidden, self.slots() * self.batch)),
            _ => Some(self.state(self.hidden + 1, self.slots() * self.batch)),
        }
    }
}

fn state_finite<T: Float>(s: &RecurrentState<T>) -> bool {
    all_finite(&s.h) && s.c.as_ref().is_none_or(all_finite)
}

fn cast<T: Float>(m: &DMatrix<f64>) -> DMatrix<T> {
    m.map(T::cast)
}

fn cast_state<T: Float>(s: &RecurrentState<f64>) -> RecurrentState<T> {
    RecurrentState {
        h: cast(&s.h),
        c: s.c.as_ref().map(cast),
    }
}

/// Forward then backward on one case in `T`'s precision; checks every promise.
fn forward_backward<T: Float>(c: &Case) -> Result<(), TestCaseError> {
    let config = c.config();
    let mut rng = Rng::seed_from(c.seed);
    let layer: Result<Recurrent<T>, _> = config.init(&mut rng);
    let Ok(mut layer) = layer else {
        prop_assert!(c.input == 0 || c.hidden == 0 || c.layers == 0);
        return Ok(());
    };
    prop_assert!(c.input > 0 && c.hidden > 0 && c.layers > 0);
    let (d, h) = (config.num_directions(), c.hidden);
    let x: DMatrix<T> = cast(&c.x());
    let initial = c.initial_state().map(|s| cast_state::<T>(&s));
    let mut cache = RecurrentCache::new();

    // Backward before any forward is an error, not a panic.
    let d_out0 = DMatrix::<T>::zeros(layer.output_size(), x.ncols());
    prop_assert!(layer.backward(&x, &mut cache, &d_out0, None, None).is_err());

    match layer.forward(&x, c.batch, initial.as_ref(), &mut cache) {
        Ok(()) => {
            prop_assert!(c.x_rows_off == 0 && c.batch > 0 && x.ncols() > 0);
            prop_assert_eq!(x.ncols() % c.batch, 0);
            prop_assert!(all_finite(&x));
            prop_assert!(initial.as_ref().is_none_or(state_finite));
            prop_assert_eq!(cache.output().shape(), (d * h, x.ncols()));
            prop_assert!(
                all_finite(cache.output()),
                "non-finite output {}",
                cache.output()
            );
            let fin = cache.final_state();
            prop_assert_eq!(fin.h.shape(), (h, c.slots() * c.batch));
            prop_assert!(state_finite(fin));
            prop_assert_eq!(fin.c.is_some(), c.cell.has_cell_state());
        }
        Err(e) => {
            let explained = match e {
                Error::ShapeMismatch { .. } => c.x_rows_off > 0 || c.initial == 2,
                Error::Empty { .. } => c.batch == 0 || x.ncols() == 0,
                Error::LengthMismatch { .. } => c.batch > 0 && !x.ncols().is_multiple_of(c.batch),
                Error::NonFinite { op, .. } => {
                    !all_finite(&x)
                        || initial.as_ref().is_some_and(|s| !state_finite(s))
                        || op.contains("overflow") && c.special
                }
                _ => false,
            };
            prop_assert!(explained, "unexpected forward error {e}");
            return Ok(());
        }
    }

    // Backward: upstream gradients from the same values, sometimes of a wrong shape.
    let cols = x.ncols();
    let d_output: DMatrix<T> = cast(&c.data(d * h + c.x_cols_off, cols));
    let d_final = (c.initial != 0).then(|| cast_state::<T>(&c.state(h, c.slots() * c.batch)));
    let mut d_x = DMatrix::<T>::zeros(c.input, cols);
    nn_core::Module::zero_grad(&mut layer);
    match layer.backward(&x, &mut cache, &d_output, d_final.as_ref(), Some(&mut d_x)) {
        Ok(()) => {
            prop_assert_eq!(c.x_cols_off, 0);
            let d_init = cache.d_initial();
            prop_assert_eq!(d_init.h.shape(), (h, c.slots() * c.batch));
            prop_assert!(all_finite(&d_output) && d_final.as_ref().is_none_or(state_finite));
            prop_assert!(all_finite(&d_x), "non-finite input gradient");
            prop_assert!(state_finite(d_init));
            prop_assert!(grads_finite(&layer), "non-finite parameter gradient");
        }
        Err(e) => {
            let explained = match e {
                Error::ShapeMismatch { .. } => c.x_cols_off > 0,
                Error::NonFinite { op, .. } => {
                    !all_finite(&d_output)
                        || d_final.as_ref().is_some_and(|s| !state_finite(s))
                        || op.contains("overflow") && c.special
                }
                _ => false,
            };
            prop_assert!(explained, "unexpected backward error {e}");
        }
    }
    Ok(())
}

/// Steps a unidirectional layer a few times; bidirectional layers must refuse.
fn steps<T: Float>(c: &Case) -> Result<(), TestCaseError> {
    let Ok(layer) = c.config().init::<T>(&mut Rng::seed_from(c.seed)) else {
        return Ok(());
    };
    let mut scratch = StepScratch::new();
    let mut state = match c.initial_state() {
        Some(s) => cast_state::<T>(&s),
        None => layer.zero_state(c.batch),
    };
    let x_t: DMatrix<T> = cast(&c.data(c.input + c.x_rows_off, c.batch));
    for _ in 0..c.steps.max(1) {
        let before_finite = state_finite(&state);
        match layer.step(&x_t, &mut state, &mut scratch) {
            Ok(h) => {
                prop_assert!(!c.bidirectional && c.x_rows_off == 0 && c.batch > 0);
                prop_assert!(all_finite(&x_t) && before_finite);
                prop_assert_eq!(h.shape(), (c.hidden, c.batch));
                prop_assert!(all_finite(h));
                prop_assert!(state_finite(&state));
            }
            Err(e) => {
                let explained = match e {
                    Error::InvalidConfig(_) => c.bidirectional,
                    Error::ShapeMismatch { .. } => c.x_rows_off > 0 || c.initial == 2,
                    Error::Empty { .. } => c.batch == 0,
                    Error::NonFinite { op, .. } => {
                        !all_finite(&x_t) || !before_finite || op.contains("overflow") && c.special
                    }
                    _ => false,
                };
                prop_assert!(explained, "unexpected step error {e}");
                break;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(512)))]

    #[test]
    fn forward_backward_f64(c in case()) {
        forward_backward::<f64>(&c)?;
    }

    #[test]
    fn forward_backward_f32(c in case()) {
        forward_backward::<f32>(&c)?;
    }

    #[test]
    fn step_never_panics(c in case()) {
        steps::<f64>(&c)?;
        steps::<f32>(&c)?;
    }
}

#[test]
fn edge_sizes_run() {
    // T = 1, B = 1, H = 1, I = 1 for every cell, stacked and bidirectional.
    for cell in CellKind::ALL {
        for (layers, bidirectional) in [(1, false), (2, true)] {
            let config = RecurrentConfig::new(cell, 1, 1)
                .with_num_layers(layers)
                .with_bidirectional(bidirectional);
            let mut layer = config.init::<f64>(&mut Rng::seed_from(3)).unwrap();
            let x = DMatrix::from_element(1, 1, 0.3);
            let mut cache = RecurrentCache::new();
            layer.forward(&x, 1, None, &mut cache).unwrap();
            let d = DMatrix::from_element(layer.output_size(), 1, 1.0);
            layer.backward(&x, &mut cache, &d, None, None).unwrap();
            assert!(all_finite(cache.output()));
        }
    }
}
