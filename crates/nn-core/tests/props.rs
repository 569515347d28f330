//! Property tests: for random shapes (including 0 and 1), sizes and values (including NaN and
//! infinity), every public layer and loss of nn-core returns either a result of the right shape
//! with finite values, or a typed error. A panic fails the test. In f32, values also reach the
//! edges of the range (inputs and weights near 3.4e38, as loaded from a file), where a result
//! that overflows must be a `NonFinite` error, not `Ok(inf)`.

use nn_core::nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Activation, Dense, Error, Param, Rng, loss};
use nn_testutil::{all_finite, proptest_cases};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -10.0..10.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
    ]
}

fn matrix(max_r: usize, max_c: usize) -> impl Strategy<Value = DMatrix<f64>> {
    (0..=max_r, 0..=max_c).prop_flat_map(|(r, c)| {
        proptest::collection::vec(value(), r * c).prop_map(move |v| DMatrix::from_vec(r, c, v))
    })
}

/// An f32 at the edges: ordinary, huge (products overflow), the largest, NaN or infinite.
fn edge_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -4.0..4.0f32,
        1 => Just(0.0),
        1 => Just(3e38),
        1 => Just(-f32::MAX),
        1 => Just(1e20),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
    ]
}

fn edge_matrix(rows: usize, cols: usize) -> impl Strategy<Value = DMatrix<f32>> {
    proptest::collection::vec(edge_f32(), rows * cols)
        .prop_map(move |v| DMatrix::from_vec(rows, cols, v))
}

fn f32_finite(m: &DMatrix<f32>) -> bool {
    m.iter().all(|v| v.is_finite())
}

proptest! {
    // 400 cases per property by default; `PROPTEST_CASES=N` runs more.
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(400)))]

    #[test]
    fn dense_never_panics(inp in 0usize..5, out in 0usize..5, x in matrix(5, 4), dy in matrix(5, 4), seed in any::<u64>()) {
        let mut rng = Rng::seed_from(seed);
        let Ok(mut dense) = Dense::<f64>::new(inp, out, &mut rng) else {
            prop_assert!(inp == 0 || out == 0);
            return Ok(());
        };
        match dense.forward(&x) {
            Ok(y) => {
                prop_assert_eq!(y.shape(), (out, x.ncols()));
                prop_assert!(all_finite(&y));
            }
            Err(_) => prop_assert!(x.nrows() != inp || x.ncols() == 0 || !all_finite(&x)),
        }
        if let Ok(dx) = dense.backward(&x, &dy) {
            prop_assert_eq!(dx.shape(), x.shape());
        }
    }

    #[test]
    fn activations_never_panic(x in matrix(4, 4), dy in matrix(4, 4), which in 0usize..6) {
        let act = [
            Activation::Identity,
            Activation::Relu,
            Activation::LeakyRelu { slope: 0.01 },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Softmax,
        ][which];
        if let Ok(y) = act.forward(&x) {
            prop_assert_eq!(y.shape(), x.shape());
            if let Ok(dx) = act.backward(&y, &dy) {
                prop_assert_eq!(dx.shape(), x.shape());
            }
        }
    }

    #[test]
    fn losses_never_panic(z in matrix(4, 4), t in matrix(4, 4), targets in proptest::collection::vec(0usize..6, 0..5)) {
        match loss::softmax_cross_entropy_with_grad(&z, &targets) {
            Ok((l, d)) => {
                prop_assert!(l.is_finite() && l >= 0.0);
                prop_assert_eq!(d.shape(), z.shape());
                prop_assert!(all_finite(&d));
            }
            Err(_) => prop_assert!(
                z.ncols() == 0 || z.nrows() == 0 || targets.len() != z.ncols()
                    || targets.iter().any(|&c| c >= z.nrows()) || !all_finite(&z)
            ),
        }
        if let Ok(l) = loss::mse(&z, &t) {
            prop_assert!(l.is_finite());
        }
        if let Ok(l) = loss::bce_with_logits(&z, &t) {
            prop_assert!(l.is_finite());
        }
        let _ = loss::cross_entropy(&z, &targets);
        let mut d = DMatrix::zeros(z.nrows(), z.ncols());
        let _ = loss::cross_entropy_backward(&z, &targets, &mut d);
        let _ = loss::mse_backward(&z, &t, &mut d);
        let _ = loss::bce_with_logits_backward(&z, &t, &mut d);
    }

    #[test]
    fn tensor_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = TensorFile::from_bytes(bytes, "random");
    }

    #[test]
    fn corrupted_weight_files_never_panic(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..6)) {
        let mut p = Param::<f32>::vector(3);
        p.value[(0, 0)] = 1.5;
        let mut w = TensorWriter::new();
        w.param("bias", &p).metadata("case", "{}");
        let mut bytes = w.to_bytes().unwrap();
        let n = bytes.len();
        for (i, b) in flips {
            bytes[i % n] = b;
        }
        if let Ok(file) = TensorFile::from_bytes(bytes, "flipped") {
            let mut q = Param::<f64>::vector(3);
            let _ = file.load_param("bias", &mut q);
            let _ = file.values::<f32>("bias");
            let _ = file.indices("bias");
            let _ = file.columns::<f64>("bias");
        }
    }

    /// f32 Dense with any weights (NaN or huge, as from a file) and inputs up to f32's range:
    /// every forward (`forward`, `forward_into` on 1-3 columns and more) and backward is finite
    /// or a typed error; a non-finite `dy` is refused before any gradient is touched.
    #[test]
    fn dense_at_the_edges_of_f32_is_finite_or_an_error(
        (w, b) in (edge_matrix(3, 4), edge_matrix(3, 1)),
        cols in 1usize..6,
        x in edge_matrix(4, 5),
        dy in edge_matrix(3, 5),
    ) {
        let mut dense = Dense::<f32>::new(4, 3, &mut Rng::seed_from(0)).unwrap();
        dense.weight.value = w;
        dense.bias.value = b;
        let x = x.columns(0, cols).into_owned();
        let dy = dy.columns(0, cols).into_owned();
        let forward = dense.forward(&x);
        match &forward {
            Ok(y) => prop_assert!(f32_finite(y)),
            Err(e) => prop_assert!(matches!(e, Error::NonFinite { .. }), "{}", e),
        }
        let mut out = DMatrix::zeros(0, 0);
        match dense.forward_into(&x, &mut out) {
            Ok(()) => {
                prop_assert!(f32_finite(&out));
                prop_assert_eq!(Some(&out), forward.as_ref().ok());
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::NonFinite { .. }), "{}", e);
                prop_assert!(forward.is_err());
            }
        }
        let grads = (dense.weight.grad.clone(), dense.bias.grad.clone());
        match dense.backward(&x, &dy) {
            Ok(dx) => {
                prop_assert!(f32_finite(&dx) && f32_finite(&dense.weight.grad) && f32_finite(&dense.bias.grad));
                prop_assert!(f32_finite(&dy) && f32_finite(&x));
            }
            Err(e) => {
                prop_assert!(matches!(e, Error::NonFinite { .. }), "{}", e);
                if !f32_finite(&dy) {
                    prop_assert_eq!((&dense.weight.grad, &dense.bias.grad), (&grads.0, &grads.1));
                }
            }
        }
    }

    /// f32 losses on logits and targets up to f32's range: a finite loss (and gradient), or an
    /// error; never `Ok(inf)` or `Ok(NaN)`.
    #[test]
    fn losses_at_the_edges_of_f32_are_finite_or_an_error(
        z in edge_matrix(3, 4),
        t in edge_matrix(3, 4),
        targets in proptest::collection::vec(0usize..3, 4),
    ) {
        match loss::softmax_cross_entropy_with_grad(&z, &targets) {
            Ok((l, d)) => prop_assert!(l.is_finite() && l >= 0.0 && f32_finite(&d)),
            Err(_) => prop_assert!(!f32_finite(&z) || loss::softmax_cross_entropy(&z, &targets).is_err()),
        }
        if let Ok(l) = loss::softmax_cross_entropy(&z, &targets) {
            prop_assert!(l.is_finite() && l >= 0.0);
        }
        if let Ok(l) = loss::mse(&z, &t) {
            prop_assert!(l.is_finite() && l >= 0.0);
        }
        if let Ok((l, d)) = loss::mse_with_grad(&z, &t) {
            prop_assert!(l.is_finite() && f32_finite(&d));
        }
        if let Ok(l) = loss::bce_with_logits(&z, &t) {
            prop_assert!(l.is_finite());
        }
    }
}
