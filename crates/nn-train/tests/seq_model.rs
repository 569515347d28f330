//! SeqModel's backward agrees with central differences (f64) for every objective and cell,
//! starting from a non-zero initial state.

use nalgebra::DMatrix;
use nn_core::{Init, Module, Rng, gradcheck};
use nn_recurrent::{CellKind, Nonlinearity, RecurrentConfig, RecurrentState};
use nn_train::{Error, SeqModel, SeqModelConfig, SeqWorkspace, Target};

const I: usize = 3;
const H: usize = 4;
const O: usize = 3;
const T: usize = 4;
const B: usize = 2;

fn core(e: Error) -> nn_core::Error {
    match e {
        Error::Core(c) => c,
        other => panic!("{other}"),
    }
}

fn check(cell: CellKind, layers: usize, target: Target<'_, f64>) {
    let mut rng = Rng::seed_from(11);
    let rnn = RecurrentConfig::new(cell, I, H).with_num_layers(layers);
    let mut model: SeqModel<f64> = SeqModelConfig::new(rnn, O).init(&mut rng).unwrap();
    let x = Init::Normal { std: 1.0 }
        .matrix::<f64>(I, T * B, &mut rng)
        .unwrap();
    let mut h0 = model.rnn.zero_state(B);
    h0.h = Init::Normal { std: 0.5 }
        .matrix(H, layers * B, &mut rng)
        .unwrap();
    if let Some(c) = &mut h0.c {
        *c = Init::Normal { std: 0.5 }
            .matrix(H, layers * B, &mut rng)
            .unwrap();
    }
    let mut ws = SeqWorkspace::new();
    let report = gradcheck::check_params(&mut model, |m| {
        m.forward_backward(&x, B, Some(&h0), target, &mut ws)
            .map_err(core)
    })
    .unwrap();
    assert!(
        report.max_rel_error <= 1e-6,
        "{cell:?} {:?}: {report:?}",
        target.objective()
    );
    // The workspace holds the head output of the right shape.
    let cols = if target.objective().last_step_only() {
        B
    } else {
        T * B
    };
    assert_eq!(ws.logits().shape(), (O, cols));
    assert_eq!(ws.final_state().h.shape(), (H, layers * B));
}

#[test]
fn next_token_gradients() {
    let targets: Vec<usize> = (0..T * B).map(|i| (i * 7 + 1) % O).collect();
    for cell in [
        CellKind::Rnn(Nonlinearity::Tanh),
        CellKind::Lstm,
        CellKind::Gru,
    ] {
        check(cell, 1, Target::NextToken(&targets));
    }
    check(CellKind::Lstm, 2, Target::NextToken(&targets));
}

#[test]
fn last_step_gradients() {
    let classes = [2, 0];
    let y = DMatrix::from_fn(O, B, |i, j| (i as f64 - j as f64) * 0.3);
    for cell in [
        CellKind::Rnn(Nonlinearity::Relu),
        CellKind::Lstm,
        CellKind::Gru,
    ] {
        check(cell, 1, Target::LastStepClass(&classes));
        check(cell, 1, Target::LastStepMse(&y));
    }
}

#[test]
fn step_mse_gradients() {
    let y = DMatrix::from_fn(O, T * B, |i, j| ((i * 5 + j) as f64 * 0.7).sin());
    for cell in [
        CellKind::Rnn(Nonlinearity::Tanh),
        CellKind::Lstm,
        CellKind::Gru,
    ] {
        check(cell, 1, Target::StepMse(&y));
    }
    check(CellKind::Gru, 2, Target::StepMse(&y));
}

#[test]
fn bidirectional_head_takes_both_directions_and_bad_input_is_an_error() {
    let mut rng = Rng::seed_from(3);
    let rnn = RecurrentConfig::new(CellKind::Gru, I, H).with_bidirectional(true);
    let mut model: SeqModel<f64> = SeqModelConfig::new(rnn, O).init(&mut rng).unwrap();
    assert_eq!(model.head.input_size(), 2 * H);
    let names = model.param_names();
    assert_eq!(names[0], "rnn.weight_ih_l0");
    assert_eq!(&names[names.len() - 2..], ["head.weight", "head.bias"]);
    let mut ws = SeqWorkspace::new();
    let x = DMatrix::<f64>::zeros(I, 5);
    let err = model.forward_backward(&x, B, None, Target::LastStepClass(&[0, 1]), &mut ws);
    assert!(matches!(
        err,
        Err(Error::Core(nn_core::Error::ShapeMismatch { .. }))
    ));
    let x = DMatrix::<f64>::zeros(I, T * B);
    let err = model.forward_backward(&x, B, None, Target::NextToken(&[0; 3]), &mut ws);
    assert!(matches!(
        err,
        Err(Error::Core(nn_core::Error::LengthMismatch { .. }))
    ));
    let wrong_state = RecurrentState {
        h: DMatrix::zeros(H, 1),
        c: None,
    };
    assert!(
        model
            .forward(&x, B, Some(&wrong_state), false, &mut ws)
            .is_err()
    );
}

#[test]
fn logits_too_large_to_allocate_are_an_error() {
    // A valid model (a head of 2^24 outputs on one hidden unit, 64 MiB) and a valid batch (2^24
    // one-value steps, 64 MiB) whose logits would take 2^48 values (1 PiB, more than the address
    // space): `TooLarge` from the workspace, not an abort.
    let rnn = RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Tanh), 1, 1);
    let model: SeqModel<f32> = SeqModelConfig::new(rnn, 1 << 24)
        .init(&mut Rng::seed_from(0))
        .unwrap();
    let batch = 1 << 12;
    let x = DMatrix::<f32>::zeros(1, 1 << 24);
    let mut ws = SeqWorkspace::new();
    let err = model.forward(&x, batch, None, false, &mut ws).unwrap_err();
    assert!(
        matches!(
            core(err),
            nn_core::Error::TooLarge {
                op: "SeqModel logits",
                ..
            }
        ),
        "expected TooLarge"
    );
    // The workspace still works for a batch that fits.
    let x = DMatrix::<f32>::zeros(1, 2);
    assert!(model.forward(&x, 1, None, true, &mut ws).is_ok());
}

#[test]
fn a_transposed_batch_names_what_rows_and_columns_mean() {
    let mut rng = Rng::seed_from(3);
    let model: SeqModel<f64> = SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, I, H), O)
        .init(&mut rng)
        .unwrap();
    // `(T*B, I)` instead of `(I, T*B)`, as a `[T*B, F]` array read row by row would give.
    let x = DMatrix::<f64>::zeros(T * B, I);
    let targets = vec![0; T * B];
    let mut ws = SeqWorkspace::new();
    let err = model
        .loss(&x, B, None, Target::NextToken(&targets), &mut ws)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("rows: I features") && msg.contains("T*B"),
        "{msg}"
    );
    let rnn = model.rnn.clone();
    let err = rnn
        .forward(&x, B, None, &mut nn_recurrent::RecurrentCache::new())
        .unwrap_err();
    assert!(err.to_string().contains("rows: I features"), "{err}");
}
