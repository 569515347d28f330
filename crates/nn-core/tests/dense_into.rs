//! `Dense::forward_into`, the generation head: the bits of `Dense::forward` for one to a few
//! columns (the matrix-vector kernel up to three), no allocation once `out` has its shape, and
//! the same typed errors.

use nalgebra::DMatrix;
use nn_core::{Dense, Error, Rng};
use nn_testutil::{CountingAlloc, allocations, uniform_matrix};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn forward_into_gives_the_forward_bits() {
    for (input, output) in [(256, 65), (3, 7), (64, 130), (512, 65), (1, 1)] {
        let mut rng = Rng::seed_from(input as u64);
        let d32 = Dense::<f32>::new(input, output, &mut rng).unwrap();
        let d64 = Dense::<f64>::new(input, output, &mut rng).unwrap();
        let mut out32 = DMatrix::zeros(0, 0);
        let mut out64 = DMatrix::zeros(0, 0);
        for n in 1..=5 {
            let x = uniform_matrix(input, n, &mut rng);
            let x32 = x.map(|v| v as f32);
            d32.forward_into(&x32, &mut out32).unwrap();
            assert_eq!(
                out32,
                d32.forward(&x32).unwrap(),
                "f32 {output}x{input} n={n}"
            );
            d64.forward_into(x.columns(0, n), &mut out64).unwrap();
            assert_eq!(
                out64,
                d64.forward(&x).unwrap(),
                "f64 {output}x{input} n={n}"
            );
        }
    }
}

#[test]
fn a_warm_forward_into_allocates_nothing() {
    let mut rng = Rng::seed_from(1);
    let dense = Dense::<f32>::new(256, 65, &mut rng).unwrap();
    let x = uniform_matrix(256, 1, &mut rng).map(|v| v as f32);
    let mut out = DMatrix::zeros(65, 1);
    dense.forward_into(&x, &mut out).unwrap();
    let n = allocations(|| dense.forward_into(&x, &mut out).unwrap());
    assert_eq!(n, 0);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let dense = Dense::<f32>::new(4, 3, &mut Rng::seed_from(2)).unwrap();
    let mut out = DMatrix::zeros(3, 1);
    assert!(matches!(
        dense.forward_into(&DMatrix::zeros(5, 1), &mut out),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        dense.forward_into(&DMatrix::zeros(4, 0), &mut out),
        Err(Error::Empty { .. })
    ));
    let mut x = DMatrix::zeros(4, 1);
    x[(2, 0)] = f32::NAN;
    assert!(matches!(
        dense.forward_into(&x, &mut out),
        Err(Error::NonFinite { .. })
    ));
    let mut huge = dense.clone();
    huge.weight.value.fill(3e38);
    assert!(matches!(
        huge.forward_into(&DMatrix::from_element(4, 1, 2.0f32), &mut out),
        Err(Error::NonFinite { .. })
    ));
}
