//! Property tests: for random shapes (including 0 and 1), sizes and values (including NaN and
//! infinity), every public layer and loss of nn-core returns either a result of the right shape
//! with finite values, or a typed error. A panic fails the test.

use nn_core::nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Activation, Dense, Param, Rng, loss};
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
}
