//! `loss::IGNORE_INDEX` (PyTorch's `ignore_index`): ignored positions get no loss and a zero
//! gradient, the mean is over the kept ones, every path agrees, and all-ignored is an error.

use nalgebra::DMatrix;
use nn_core::loss::{self, IGNORE_INDEX};
use nn_core::{Activation, Error, Init, Rng, gradcheck, kernels::thresholds::SPLIT_MIN_VALUES};

/// The mean over the kept columns of `lse(z) − z_t`, computed plainly.
fn by_hand(z: &DMatrix<f64>, targets: &[usize]) -> f64 {
    let (mut sum, mut kept) = (0.0, 0);
    for (j, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        let col = z.column(j);
        let m = col.max();
        sum += col.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m - col[t];
        kept += 1;
    }
    sum / kept as f64
}

#[test]
fn ignored_positions_have_no_loss_and_no_gradient() {
    let z = Init::Normal { std: 2.0 }
        .matrix::<f64>(5, 6, &mut Rng::seed_from(3))
        .unwrap();
    let targets = [1, IGNORE_INDEX, 4, 0, IGNORE_INDEX, 2];
    let want = by_hand(&z, &targets);
    let loss = loss::softmax_cross_entropy(&z, &targets).unwrap();
    assert!((loss - want).abs() < 1e-14, "{loss} vs {want}");
    let (fused, d) = loss::softmax_cross_entropy_with_grad(&z, &targets).unwrap();
    assert!((fused - want).abs() < 1e-14);
    let mut d2 = DMatrix::from_element(5, 6, 7.0);
    loss::softmax_cross_entropy_backward(&z, &targets, &mut d2).unwrap();
    assert_eq!(d, d2);
    for j in [1, 4] {
        assert!(d.column(j).iter().all(|&v| v == 0.0), "column {j}");
    }
    // The gradient is the finite difference of the loss with the same ignored positions.
    let r = gradcheck::check_input(&z, &d, |z| loss::softmax_cross_entropy(z, &targets)).unwrap();
    assert!(r.max_rel_error <= 1e-6, "{r:?}");
    // The kept columns alone give the same loss (the mean over 4, not 6).
    let kept: Vec<usize> = vec![0, 2, 3, 5];
    let sub = DMatrix::from_fn(5, 4, |i, j| z[(i, kept[j])]);
    let sub_t: Vec<usize> = kept.iter().map(|&j| targets[j]).collect();
    let sub_loss = loss::softmax_cross_entropy(&sub, &sub_t).unwrap();
    assert!((sub_loss - loss).abs() < 1e-14);

    // Probabilities: the same rule.
    let p = Activation::Softmax.forward(&z).unwrap();
    let ce = loss::cross_entropy(&p, &targets).unwrap();
    assert!((ce - want).abs() < 1e-12);
    let mut dp = DMatrix::zeros(5, 6);
    loss::cross_entropy_backward(&p, &targets, &mut dp).unwrap();
    assert!(dp.column(1).iter().all(|&v| v == 0.0));
    let r = gradcheck::check_input(&p, &dp, |p| loss::cross_entropy(p, &targets)).unwrap();
    assert!(r.max_rel_error <= 1e-6, "{r:?}");
}

#[test]
fn large_batches_with_ignored_columns_match_by_hand_for_any_thread_count() {
    let (c, n) = (64, 4200);
    assert!(c * n >= SPLIT_MIN_VALUES);
    let z = Init::Normal { std: 3.0 }
        .matrix::<f64>(c, n, &mut Rng::seed_from(8))
        .unwrap();
    let targets: Vec<usize> = (0..n)
        .map(|j| {
            if j % 5 == 2 {
                IGNORE_INDEX
            } else {
                (j * 7) % c
            }
        })
        .collect();
    let want = by_hand(&z, &targets);
    let mut bits = Vec::new();
    for threads in [1, 2] {
        nn_core::set_threads(threads).unwrap();
        let (loss, d) = loss::softmax_cross_entropy_with_grad(&z, &targets).unwrap();
        assert!((loss - want).abs() < 1e-12);
        assert!(d.column(2).iter().all(|&v| v == 0.0));
        bits.push((loss.to_bits(), d));
    }
    assert_eq!(bits[0], bits[1]);
}

#[test]
fn no_ignored_target_keeps_the_bits() {
    // IGNORE_INDEX support must not change a loss without it: the same value as the plain
    // formula summed in column order and divided by N.
    let z = Init::Normal { std: 1.0 }
        .matrix::<f32>(7, 9, &mut Rng::seed_from(1))
        .unwrap();
    let targets: Vec<usize> = (0..9).map(|j| j % 7).collect();
    let a = loss::softmax_cross_entropy(&z, &targets).unwrap();
    let mut total = 0.0f32;
    for (j, &t) in targets.iter().enumerate() {
        let col = z.column(j);
        let max = col.iter().copied().fold(col[0], f32::max);
        let sum = col.iter().fold(0.0f32, |s, &v| s + (v - max).exp());
        total += sum.ln() + max - col[t];
    }
    assert_eq!(a.to_bits(), (total / 9.0).to_bits());
}

#[test]
fn all_ignored_is_an_error_and_other_targets_stay_checked() {
    let z = DMatrix::<f64>::zeros(3, 2);
    let all = [IGNORE_INDEX, IGNORE_INDEX];
    let mut d = DMatrix::zeros(3, 2);
    for r in [
        loss::softmax_cross_entropy(&z, &all),
        loss::softmax_cross_entropy_to(&z, &all, &mut d),
        loss::cross_entropy(&DMatrix::from_element(3, 2, 1.0 / 3.0), &all),
    ] {
        assert!(matches!(r, Err(Error::AllTargetsIgnored { .. })), "{r:?}");
    }
    assert!(matches!(
        loss::softmax_cross_entropy(&z, &[IGNORE_INDEX, 3]),
        Err(Error::TargetOutOfRange {
            index: 1,
            target: 3,
            ..
        })
    ));
    assert!(matches!(
        loss::softmax_cross_entropy(&z, &[IGNORE_INDEX - 1, 0]),
        Err(Error::TargetOutOfRange { index: 0, .. })
    ));
}
