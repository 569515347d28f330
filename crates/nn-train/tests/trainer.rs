//! The trainer: learning, truncated BPTT, clipping, schedules, validation, progress, and
//! stopping on non-finite values with the parameters of the last good step.

mod common;

use common::{next_token_batch, next_token_trainer};
use nalgebra::DMatrix;
use nn_core::{Module, Param, Rng};
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, Bptt, Clip, Error, LrSchedule, Objective, Optimizer, Progress, SeqModel,
    SeqModelConfig, SeqWorkspace, SgdConfig, Target, Targets, Trainer, TrainerConfig, batch_fn,
};

const TEXT: [usize; 6] = [0, 1, 2, 3, 1, 2];

fn model(cell: CellKind, v: usize, h: usize, seed: u64) -> SeqModel<f64> {
    SeqModelConfig::new(RecurrentConfig::new(cell, v, h), v)
        .init(&mut Rng::seed_from(seed))
        .unwrap()
}

fn params(m: &impl Module<f64>) -> Vec<Param<f64>> {
    let mut v = Vec::new();
    m.visit(&mut |_, p| v.push(p.clone()));
    v
}

#[test]
fn learns_a_repeating_sequence_with_truncated_bptt() {
    let m = model(CellKind::Gru, 4, 12, 1);
    let opt = Optimizer::new(AdamConfig::new(0.03)).unwrap();
    let config = TrainerConfig::new(Objective::NextToken)
        .with_bptt(Bptt::Truncated { window: 4 })
        .with_clip(Clip::Norm(5.0));
    let mut trainer = Trainer::new(m, opt, Rng::seed_from(2), config).unwrap();
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f64>| {
        next_token_batch(&TEXT, 4, 12, 4, rng, b);
        Ok(())
    });
    let report = trainer.run(80, &mut source, None, &mut |_| {}).unwrap();
    let first = report.losses[0];
    let last = report.losses[report.losses.len() - 1];
    // "1 2" is followed by 3 or 0, so one token in six stays uncertain: the floor is ln(2)/3.
    assert!(first > 1.2 && last < 0.4, "first {first}, last {last}");
    assert_eq!(trainer.step(), 80);
    // 12 steps in windows of 4: three updates per training step.
    assert_eq!(trainer.optimizer.steps(), 240);
}

#[test]
fn truncated_windows_carry_the_state_so_the_loss_is_the_full_sequence_loss() {
    // With lr = 0 nothing changes, so the step loss over windows of 3 (last one 2) must equal the
    // full forward's mean cross-entropy over all T*B targets.
    let m = model(CellKind::Lstm, 4, 5, 3);
    let mut batch = Batch::<f64>::default();
    next_token_batch(&TEXT, 4, 8, 3, &mut Rng::seed_from(5), &mut batch);
    let Targets::Classes(targets) = &batch.targets else {
        unreachable!()
    };
    let mut ws = SeqWorkspace::new();
    let want = m
        .loss(&batch.x, 3, None, Target::NextToken(targets), &mut ws)
        .unwrap();
    let config = TrainerConfig::new(Objective::NextToken).with_bptt(Bptt::Truncated { window: 3 });
    let opt = Optimizer::new(SgdConfig::new(0.0)).unwrap();
    let mut trainer = Trainer::new(m, opt, Rng::seed_from(0), config).unwrap();
    let b2 = batch.clone();
    let mut source = batch_fn(move |_, _: &mut Rng, b: &mut Batch<f64>| {
        b.clone_from(&b2);
        Ok(())
    });
    let r = trainer.train_step(&mut source).unwrap();
    assert_eq!(r.updates, 3);
    assert!((r.loss - want).abs() < 1e-14, "{} vs {want}", r.loss);
    // Without carry_state the next step starts from zeros again: same loss.
    let r2 = trainer.train_step(&mut source).unwrap();
    assert!((r2.loss - want).abs() < 1e-14);
}

#[test]
fn carry_state_feeds_the_final_state_into_the_next_step() {
    let m = model(CellKind::Lstm, 4, 5, 3);
    let mut batch = Batch::<f64>::default();
    next_token_batch(&TEXT, 4, 6, 2, &mut Rng::seed_from(5), &mut batch);
    let Targets::Classes(targets) = batch.targets.clone() else {
        unreachable!()
    };
    let mut ws = SeqWorkspace::new();
    m.loss(&batch.x, 2, None, Target::NextToken(&targets), &mut ws)
        .unwrap();
    let state = ws.final_state().clone();
    let want = m
        .loss(
            &batch.x,
            2,
            Some(&state),
            Target::NextToken(&targets),
            &mut ws,
        )
        .unwrap();
    let config = TrainerConfig::new(Objective::NextToken).with_carry_state(true);
    let opt = Optimizer::new(SgdConfig::new(0.0)).unwrap();
    let mut trainer = Trainer::new(m, opt, Rng::seed_from(0), config).unwrap();
    let mut source = batch_fn(move |_, _: &mut Rng, b: &mut Batch<f64>| {
        b.clone_from(&batch);
        Ok(())
    });
    trainer.train_step(&mut source).unwrap();
    assert_eq!(trainer.carried_state().unwrap(), &state);
    let r = trainer.train_step(&mut source).unwrap();
    assert!((r.loss - want).abs() < 1e-14);
    // Bidirectional layers cannot carry state.
    let bi = SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Gru, 4, 3).with_bidirectional(true),
        4,
    )
    .init::<f64>(&mut Rng::seed_from(0))
    .unwrap();
    let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
    let config = TrainerConfig::new(Objective::NextToken).with_carry_state(true);
    assert!(Trainer::new(bi, opt, Rng::seed_from(0), config).is_err());
}

#[test]
fn many_to_one_classification_and_regression_learn() {
    // Class = the first token of the sequence; it must be remembered over 5 steps.
    let source = |mse: bool| {
        batch_fn(move |_, rng: &mut Rng, b: &mut Batch<f64>| {
            let (t, n) = (5, 8);
            b.x = DMatrix::zeros(3, t * n);
            b.batch = n;
            let mut classes = vec![0; n];
            for j in 0..n {
                classes[j] = rng.below(2);
                b.x[(classes[j], j)] = 1.0;
                for s in 1..t {
                    b.x[(2, s * n + j)] = 1.0;
                }
            }
            b.targets = if mse {
                Targets::Values(DMatrix::from_fn(2, n, |i, j| {
                    if classes[j] == i { 1.0 } else { 0.0 }
                }))
            } else {
                Targets::Classes(classes)
            };
            Ok(())
        })
    };
    for (objective, mse) in [
        (Objective::LastStepClass, false),
        (Objective::LastStepMse, true),
    ] {
        let m = SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, 3, 8), 2)
            .init::<f64>(&mut Rng::seed_from(4))
            .unwrap();
        let opt = Optimizer::new(AdamConfig::new(0.05)).unwrap();
        let config = TrainerConfig::new(objective);
        let mut trainer = Trainer::new(m.clone(), opt.clone(), Rng::seed_from(9), config).unwrap();
        let r = trainer
            .run(60, &mut source(mse), None, &mut |_| {})
            .unwrap();
        assert_eq!(trainer.optimizer.steps(), 60);
        let last = r.losses[r.losses.len() - 1];
        let limit = if mse { 0.05 } else { 0.1 };
        assert!(last < limit, "{objective:?}: {} -> {last}", r.losses[0]);
        // Truncated windows of 2: only the last window has a loss (one update per step); the
        // earlier windows only run forward to carry the state. With lr = 0 the loss must be
        // the full-BPTT loss of the same batch.
        let config = TrainerConfig::new(objective).with_bptt(Bptt::Truncated { window: 2 });
        let frozen = Optimizer::new(SgdConfig::new(0.0)).unwrap();
        let mut full = Trainer::new(
            m.clone(),
            frozen.clone(),
            Rng::seed_from(9),
            TrainerConfig::new(objective),
        )
        .unwrap();
        let mut trunc = Trainer::new(m, frozen, Rng::seed_from(9), config).unwrap();
        let a = full.train_step(&mut source(mse)).unwrap();
        let b = trunc.train_step(&mut source(mse)).unwrap();
        assert_eq!(b.updates, 1);
        assert!((a.loss - b.loss).abs() < 1e-14, "{} vs {}", a.loss, b.loss);
    }
}

#[test]
fn schedule_validation_progress_and_value_clipping() {
    let m = model(CellKind::Rnn(nn_recurrent::Nonlinearity::Tanh), 4, 6, 8);
    let opt = Optimizer::new(SgdConfig::new(0.8)).unwrap();
    let config = TrainerConfig::new(Objective::NextToken)
        .with_schedule(LrSchedule::Step {
            step_size: 2,
            gamma: 0.5,
        })
        .with_validate_every(2)
        .with_clip(Clip::Value(1e-3));
    let mut trainer = Trainer::new(m, opt, Rng::seed_from(1), config).unwrap();
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f64>| {
        next_token_batch(&TEXT, 4, 5, 2, rng, b);
        Ok(())
    });
    let before = params(&trainer.model);
    let mut seen: Vec<Progress> = Vec::new();
    let mut validate = |m: &SeqModel<f64>| Ok(m.head.bias.value[0]);
    let report = trainer
        .run(5, &mut source, Some(&mut validate), &mut |p| seen.push(*p))
        .unwrap();
    let lrs: Vec<f64> = seen.iter().map(|p| p.report.lr).collect();
    assert_eq!(lrs, vec![0.8, 0.8, 0.4, 0.4, 0.2]);
    assert_eq!(
        seen.iter().map(|p| p.step).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(
        seen.iter()
            .all(|p| p.last_step == 5 && p.report.tokens == 10)
    );
    assert_eq!(
        report.validations.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![2, 4]
    );
    assert_eq!(seen[1].validation, Some(report.validations[0].1));
    assert!(seen[0].validation.is_none());
    // Each element moved at most Σ lr * 1e-3 = 2.6e-3.
    for (a, b) in before.iter().zip(params(&trainer.model)) {
        assert!((&a.value - &b.value).amax() <= 2.6e-3 + 1e-12);
    }
    assert_eq!(trainer.optimizer.lr(), 0.2);
}

#[test]
fn nan_input_stops_with_the_step_and_keeps_the_last_good_parameters() {
    let m = model(CellKind::Lstm, 4, 5, 6);
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let mut trainer = next_token_trainer(m, opt, 3);
    let mut source = batch_fn(|step, rng: &mut Rng, b: &mut Batch<f64>| {
        next_token_batch(&TEXT, 4, 4, 2, rng, b);
        if step == 3 {
            b.x[(1, 5)] = f64::NAN;
        }
        Ok(())
    });
    trainer.train_step(&mut source).unwrap();
    trainer.train_step(&mut source).unwrap();
    let good = params(&trainer.model);
    let good_opt = trainer.optimizer.clone();
    let err = trainer.train_step(&mut source).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFiniteInput {
                step: 3,
                index: 21,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("step 3:"), "{err}");
    assert_eq!(params(&trainer.model), good);
    assert_eq!(trainer.optimizer, good_opt);
    assert_eq!(trainer.step(), 2);
    // run() stops there too, after the two good steps.
    let m = model(CellKind::Lstm, 4, 5, 6);
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let mut fresh = next_token_trainer(m, opt, 3);
    let err = fresh.run(10, &mut source, None, &mut |_| {}).unwrap_err();
    assert!(matches!(err, Error::NonFiniteInput { step: 3, .. }));
    assert_eq!(params(&fresh.model), good);
}

#[test]
fn non_finite_loss_stops_before_the_update() {
    let mut m = model(CellKind::Gru, 4, 5, 6);
    m.head.bias.value[0] = f64::INFINITY;
    let before = params(&m);
    let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
    let mut trainer = next_token_trainer(m, opt, 3);
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f64>| {
        next_token_batch(&TEXT, 4, 4, 2, rng, b);
        Ok(())
    });
    // The head's output is infinite: the forward is refused before any loss or update.
    let err = trainer.train_step(&mut source).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Core(nn_core::Error::NonFinite {
                op: "Dense output (overflow, or weights not finite)",
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(params(&trainer.model), before);
    assert_eq!(trainer.optimizer.steps(), 0);
}

#[test]
fn bad_batches_are_errors() {
    let m = model(CellKind::Gru, 4, 5, 6);
    let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
    let mut trainer = next_token_trainer(m, opt, 3);
    let mut wrong_len = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f64>| {
        next_token_batch(&TEXT, 4, 4, 2, rng, b);
        b.targets = Targets::Classes(vec![0; 3]);
        Ok(())
    });
    assert!(matches!(
        trainer.train_step(&mut wrong_len),
        Err(Error::Core(nn_core::Error::LengthMismatch { .. }))
    ));
    let mut wrong_kind = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f64>| {
        next_token_batch(&TEXT, 4, 4, 2, rng, b);
        b.targets = Targets::Values(DMatrix::zeros(4, 2));
        Ok(())
    });
    assert!(trainer.train_step(&mut wrong_kind).is_err());
    assert_eq!(trainer.step(), 0);
}

#[test]
fn a_validation_without_an_interval_is_an_error() {
    let m = model(CellKind::Lstm, 4, 6, 8);
    let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
    let config = TrainerConfig::new(Objective::NextToken); // validate_every left at 0
    let mut trainer = Trainer::new(m, opt, Rng::seed_from(1), config).unwrap();
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f64>| {
        next_token_batch(&TEXT, 4, 5, 2, rng, b);
        Ok(())
    });
    let mut validate = |m: &SeqModel<f64>| Ok(m.head.bias.value[0]);
    let err = trainer
        .run(3, &mut source, Some(&mut validate), &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("validate_every is 0"), "{err}");
    assert_eq!(trainer.step(), 0, "no step ran");
}
