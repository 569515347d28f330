//! `SeqModel` and `Trainer` on variable-length batches (`Lengths::Each`, `Batch::lengths`): the
//! loss covers the real positions only, whatever the padded targets hold; every objective equals
//! the per-sequence results run alone, combined as PyTorch's mean over the real positions; the
//! forward-only pass gives the same logits; bad lengths are typed errors.

use nalgebra::DMatrix;
use nn_core::{Init, Module, Rng};
use nn_recurrent::{CellKind, InferScratch, Lengths, RecurrentConfig};
use nn_train::{
    Batch, Bptt, Objective, Optimizer, SeqModel, SeqModelConfig, SeqWorkspace, SgdConfig, Target,
    Targets, Trainer, TrainerConfig, batch_fn,
};

const LENGTHS: [usize; 4] = [3, 5, 1, 5];
const T: usize = 5;
const B: usize = 4;
const I: usize = 3;
const O: usize = 4;

fn model(cell: CellKind) -> SeqModel<f64> {
    model_with(cell, true)
}

fn model_with(cell: CellKind, bidirectional: bool) -> SeqModel<f64> {
    let rnn = RecurrentConfig::new(cell, I, 5)
        .with_num_layers(2)
        .with_bidirectional(bidirectional);
    SeqModelConfig::new(rnn, O)
        .init(&mut Rng::seed_from(4))
        .unwrap()
}

fn sequence(m: &DMatrix<f64>, b: usize, len: usize) -> DMatrix<f64> {
    DMatrix::from_fn(m.nrows(), len, |i, t| m[(i, t * B + b)])
}

fn grads(m: &SeqModel<f64>) -> Vec<DMatrix<f64>> {
    let mut v = Vec::new();
    m.visit(&mut |_, p| v.push(p.grad.clone()));
    v
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() < 1e-12 * (1.0 + b.abs()),
        "{what}: {a} vs {b}"
    );
}

/// Runs `target` on the whole batch and `alone(b)` for each sequence; the batch's loss and
/// gradients must be the real-position-weighted mean of the sequences'.
fn agrees_with_each_sequence_alone(
    cell: CellKind,
    x: &DMatrix<f64>,
    target: Target<'_, f64>,
    alone: &dyn Fn(usize) -> (DMatrix<f64>, Target<'static, f64>, f64),
) {
    let mut m = model(cell);
    let mut ws = SeqWorkspace::new();
    m.zero_grad();
    let loss = m
        .forward_backward(x, Lengths::Each(&LENGTHS), None, target, &mut ws)
        .unwrap();
    let got = grads(&m);
    let (mut want_loss, mut want) = (0.0, got.iter().map(|g| g * 0.0).collect::<Vec<_>>());
    for b in 0..B {
        let (xb, tb, weight) = alone(b);
        m.zero_grad();
        let mut ws = SeqWorkspace::new();
        let l = m.forward_backward(&xb, 1, None, tb, &mut ws).unwrap();
        want_loss += weight * l;
        for (w, g) in want.iter_mut().zip(grads(&m)) {
            *w += g * weight;
        }
    }
    close(loss, want_loss, &format!("{cell:?} loss"));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).amax() < 1e-12, "{cell:?} gradient");
    }
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

#[test]
fn every_objective_covers_the_real_positions_only() {
    let x = Init::Normal { std: 1.0 }
        .matrix::<f64>(I, T * B, &mut Rng::seed_from(1))
        .unwrap();
    let n: usize = LENGTHS.iter().sum();
    for cell in CellKind::ALL {
        // NextToken: padded targets hold classes, which must not count.
        let targets: Vec<usize> = (0..T * B).map(|c| (c * 7) % O).collect();
        agrees_with_each_sequence_alone(cell, &x, Target::NextToken(&targets), &|b| {
            let len = LENGTHS[b];
            let t: Vec<usize> = (0..len).map(|s| targets[s * B + b]).collect();
            (
                sequence(&x, b, len),
                Target::NextToken(leak(t)),
                len as f64 / n as f64,
            )
        });
        // LastStepClass: each sequence's own last step.
        let classes = [1, 3, 0, 2];
        agrees_with_each_sequence_alone(cell, &x, Target::LastStepClass(&classes), &|b| {
            let t: &'static Vec<usize> = leak(vec![classes[b]]);
            (
                sequence(&x, b, LENGTHS[b]),
                Target::LastStepClass(t),
                1.0 / B as f64,
            )
        });
        // StepMse over the real columns; padded targets are NaN and must not be read.
        let mut y = Init::Normal { std: 1.0 }
            .matrix::<f64>(O, T * B, &mut Rng::seed_from(2))
            .unwrap();
        for (b, &len) in LENGTHS.iter().enumerate() {
            for t in len..T {
                y.column_mut(t * B + b).fill(f64::NAN);
            }
        }
        agrees_with_each_sequence_alone(cell, &x, Target::StepMse(&y), &|b| {
            let len = LENGTHS[b];
            let yb: &'static DMatrix<f64> = leak(sequence(&y, b, len));
            (
                sequence(&x, b, len),
                Target::StepMse(yb),
                len as f64 / n as f64,
            )
        });
    }
}

#[test]
fn the_forward_only_pass_gives_the_forward_logits() {
    let m = model(CellKind::Lstm);
    let x = Init::Normal { std: 1.0 }
        .matrix::<f64>(I, T * B, &mut Rng::seed_from(1))
        .unwrap();
    for last in [false, true] {
        let mut ws = SeqWorkspace::new();
        m.forward(&x, Lengths::Each(&LENGTHS), None, last, &mut ws)
            .unwrap();
        let (mut scratch, mut logits) = (InferScratch::new(), DMatrix::zeros(0, 0));
        m.infer(&x, &LENGTHS[..], None, last, &mut scratch, &mut logits)
            .unwrap();
        assert_eq!(&logits, ws.logits(), "last step only: {last}");
    }
}

#[test]
fn the_trainer_takes_lengths_and_refuses_bad_ones() {
    let make = |bptt| {
        let config = TrainerConfig::new(Objective::NextToken).with_bptt(bptt);
        let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
        Trainer::new(
            model_with(CellKind::Gru, false),
            opt,
            Rng::seed_from(0),
            config,
        )
        .unwrap()
    };
    let source = |lengths: Vec<usize>| {
        batch_fn(move |_, rng: &mut Rng, b: &mut Batch<f64>| {
            b.x = Init::Normal { std: 1.0 }.matrix(I, T * B, rng)?;
            b.batch = B;
            b.lengths = lengths.clone();
            b.targets = Targets::Classes((0..T * B).map(|c| c % O).collect());
            Ok(())
        })
    };
    let mut trainer = make(Bptt::Full);
    let report = trainer.train_step(&mut source(LENGTHS.to_vec())).unwrap();
    assert!(report.loss.is_finite());
    for bad in [vec![3, 5, 0, 5], vec![3, 6, 1, 5], vec![3, 5]] {
        let before = trainer.step();
        assert!(
            trainer.train_step(&mut source(bad.clone())).is_err(),
            "{bad:?}"
        );
        assert_eq!(trainer.step(), before);
    }
    let mut truncated = make(Bptt::Truncated { window: 2 });
    let err = truncated
        .train_step(&mut source(LENGTHS.to_vec()))
        .unwrap_err();
    assert!(err.to_string().contains("full BPTT"), "{err}");
}
