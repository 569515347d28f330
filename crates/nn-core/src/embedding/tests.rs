use super::*;
use crate::gradcheck::check_params;
use crate::{Accum, Trans, matmul};

/// The naive reference: `y = Wᵀ · onehot(ids)`, a full product.
fn one_hot_product(w: &DMatrix<f64>, ids: &[usize]) -> DMatrix<f64> {
    let onehot = DMatrix::from_fn(w.nrows(), ids.len(), |v, i| {
        f64::from(u8::from(ids[i] == v))
    });
    let mut y = DMatrix::zeros(w.ncols(), ids.len());
    matmul(&mut y, Accum::Replace, w, Trans::Yes, &onehot, Trans::No);
    y
}

#[test]
fn forward_reads_the_rows_the_one_hot_product_gives() {
    let emb = Embedding::<f64>::new(7, 5, None, &mut Rng::seed_from(1)).unwrap();
    let ids = [3, 0, 6, 3, 2];
    let y = emb.forward(&ids).unwrap();
    assert_eq!(y, one_hot_product(&emb.weight.value, &ids));
}

#[test]
fn forward_into_reuses_a_matrix_of_the_right_shape() {
    let emb = Embedding::<f32>::new(4, 3, None, &mut Rng::seed_from(2)).unwrap();
    let mut out = DMatrix::zeros(3, 2);
    let before = out.as_ptr();
    emb.forward_into(&[1, 2], &mut out).unwrap();
    assert_eq!(out.as_ptr(), before);
    assert_eq!(out.column(1), emb.weight.value.row(2).transpose());
}

#[test]
fn init_is_standard_normal_with_the_padding_row_zeroed() {
    let emb = Embedding::<f64>::new(200, 100, Some(7), &mut Rng::seed_from(3)).unwrap();
    assert!(emb.weight.value.row(7).iter().all(|&v| v == 0.0));
    let n = emb.weight.value.len() as f64;
    let mean = emb.weight.value.sum() / n;
    let var = emb
        .weight
        .value
        .iter()
        .map(|v| (v - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((var - 1.0).abs() < 0.03, "variance {var}");
}

#[test]
fn backward_passes_the_gradient_check_and_skips_the_padding_row() {
    let mut emb = Embedding::<f64>::new(6, 4, Some(0), &mut Rng::seed_from(4)).unwrap();
    // A non-zero padding row: its value is used, only its gradient is withheld.
    emb.weight.value.row_mut(0).fill(0.5);
    let ids = [2, 0, 5, 2, 2, 1];
    let dy = DMatrix::from_fn(4, ids.len(), |r, c| ((r * 7 + c * 3) as f64).sin());
    // L = sum(y ⊙ dy), so dL/dy = dy; the padding row is frozen, so its numerical gradient is
    // not 0: check the other rows, and the padding row's analytic gradient is exactly 0.
    emb.zero_grad();
    let y = emb.forward(&ids).unwrap();
    emb.backward(&ids, &dy).unwrap();
    assert!(emb.weight.grad.row(0).iter().all(|&g| g == 0.0));
    assert!(y.column(1).iter().all(|&v| v == 0.5));

    let mut free = Embedding::from_weight(emb.weight.value.clone(), None).unwrap();
    let report = check_params(&mut free, |m| {
        let y = m.forward(&ids)?;
        m.backward(&ids, &dy)?;
        Ok(y.component_mul(&dy).sum())
    })
    .unwrap();
    assert!(report.max_rel_error <= 1e-6, "{report:?}");
    // Row 2 is read three times: its gradient is the sum of the three columns.
    free.zero_grad();
    free.backward(&ids, &dy).unwrap();
    let want = dy.column(0) + dy.column(3) + dy.column(4);
    assert_eq!(free.weight.grad.row(2).transpose(), want);
}

#[test]
fn backward_adds_into_the_gradient() {
    let mut emb = Embedding::<f64>::new(3, 2, None, &mut Rng::seed_from(5)).unwrap();
    let dy = DMatrix::from_element(2, 1, 1.0);
    emb.backward(&[1], &dy).unwrap();
    emb.backward(&[1], &dy).unwrap();
    assert!(emb.weight.grad.row(1).iter().all(|&g| g == 2.0));
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut rng = Rng::seed_from(6);
    let mut emb = Embedding::<f64>::new(5, 3, None, &mut rng).unwrap();
    assert!(matches!(
        emb.forward(&[1, 5]),
        Err(Error::TokenOutOfRange {
            index: 1,
            token: 5,
            vocab: 5,
            ..
        })
    ));
    assert!(matches!(emb.forward(&[]), Err(Error::Empty { .. })));
    assert!(matches!(
        emb.backward(&[1, 2], &DMatrix::zeros(3, 3)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        emb.backward(&[9], &DMatrix::zeros(3, 1)),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        emb.backward(&[1], &DMatrix::from_element(3, 1, f64::NAN)),
        Err(Error::NonFinite { .. })
    ));
    assert!(emb.weight.grad.iter().all(|&g| g == 0.0));
    assert!(matches!(
        Embedding::<f64>::new(5, 3, Some(5), &mut rng),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        Embedding::<f64>::new(0, 3, None, &mut rng),
        Err(Error::InvalidConfig(_))
    ));
    emb.weight.value[(2, 1)] = f64::NAN;
    assert!(matches!(emb.forward(&[2]), Err(Error::NonFinite { .. })));
}

#[test]
fn the_weight_is_named_as_in_pytorch() {
    let emb = Embedding::<f32>::new(10, 4, None, &mut Rng::seed_from(7)).unwrap();
    assert_eq!(emb.param_names(), ["weight"]);
    assert_eq!(emb.weight.torch_shape(), [10, 4]);
}
