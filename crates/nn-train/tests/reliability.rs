//! Reliability promises found missing by an adversarial pass, one test each:
//! - no optimizer step returns `Ok` with broken parameters (settings refused when built or
//!   loaded, a step that would make a value non-finite refused with nothing changed: the
//!   parameters, gradients, every state buffer and the step count keep their bits, for every
//!   optimizer);
//! - a training step is all or nothing, also with truncated BPTT (the whole batch is checked
//!   before the first update; a later window that overflows undoes the earlier updates);
//! - the sequence model's loss is finite or an error;
//! - huge sample counts and run lengths are errors or capped, never a panic or an abort.

use nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Dense, Module, Rng};
use nn_recurrent::{CellKind, Nonlinearity, RecurrentConfig};
use nn_testutil::{param_bits, param_values};
use nn_train::{
    AdagradConfig, AdamConfig, Batch, Bptt, Error, Objective, Optimizer, OptimizerConfig,
    RmsPropConfig, SampleConfig, SeqModel, SeqModelConfig, SeqWorkspace, SgdConfig, Target,
    Targets, Trainer, TrainerConfig, batch_fn, sample,
};

fn invalid(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::Core(nn_core::Error::InvalidConfig(msg))) => msg,
        other => panic!("expected an invalid setting, got {other:?}"),
    }
}

fn dense(seed: u64) -> Dense<f32> {
    Dense::new(3, 2, &mut Rng::seed_from(seed)).unwrap()
}

/// An optimizer state file for a `Dense(3, 2)` written by hand, with `exp_avg_sq` of the
/// weight replaced by `sq`.
fn adam_state_file(sq: &DMatrix<f32>, hparams: &[f64]) -> TensorFile {
    let mut w = TensorWriter::new();
    w.matrix("optim.weight.exp_avg", &DMatrix::<f32>::zeros(2, 3), false);
    w.matrix("optim.weight.exp_avg_sq", sq, false);
    w.matrix("optim.bias.exp_avg", &DMatrix::<f32>::zeros(2, 1), true);
    w.matrix("optim.bias.exp_avg_sq", &DMatrix::<f32>::zeros(2, 1), true);
    w.u64s("optim.step", &[1]);
    w.values::<f64>("optim.lr", &[1], &[hparams[0]]);
    w.values::<f64>("optim.hparams", &[hparams.len()], hparams);
    TensorFile::from_bytes(w.to_bytes().unwrap(), "mem").unwrap()
}

#[test]
fn no_step_returns_ok_with_broken_parameters() {
    // Settings that cannot work are refused when the optimizer is built.
    invalid(Optimizer::<f64>::new(SgdConfig::new(f64::INFINITY)));
    invalid(Optimizer::<f64>::new(AdamConfig::new(f64::INFINITY)));
    // An f32 cannot hold a learning rate (or a weight decay) above 3.4e38; an f64 can.
    let msg = invalid(Optimizer::<f32>::new(AdamConfig::new(1e39)));
    assert!(msg.contains("not a finite f32"), "{msg}");
    assert!(Optimizer::<f64>::new(AdamConfig::new(1e39)).is_ok());
    invalid(Optimizer::<f32>::new(
        AdamConfig::adamw(1e-3).with_weight_decay(1e39),
    ));
    // eps = 0 (or 0 once in f32) with a second moment that can be 0 gives 0 / 0.
    for config in [
        OptimizerConfig::from(AdamConfig::new(0.1).with_eps(0.0)),
        AdamConfig::new(0.1).with_eps(1e-50).into(),
        AdagradConfig::new(0.1).with_eps(0.0).into(),
        RmsPropConfig::new(0.1).with_eps(0.0).into(),
    ] {
        let msg = invalid(Optimizer::<f32>::new(config));
        assert!(msg.contains("eps"), "{msg}");
    }
    // Adagrad's accumulator starting above 0 keeps its denominator positive.
    assert!(
        Optimizer::<f32>::new(
            AdagradConfig::new(0.1)
                .with_eps(0.0)
                .with_initial_accumulator_value(0.1)
        )
        .is_ok()
    );

    // A step whose update overflows is an error naming the optimizer and the parameter, and is
    // not taken (every optimizer: `an_overflowing_step_is_refused_with_nothing_changed`).
    let mut d = dense(0);
    let before = param_values(&d);
    let mut opt = Optimizer::<f32>::new(SgdConfig::new(1e30)).unwrap();
    d.weight.grad.fill(1e10);
    let err = opt.step(&mut d).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NonFiniteUpdate { optimizer: "sgd", step: 1, param } if param == "weight"
        ),
        "{err}"
    );
    assert_eq!(param_values(&d), before);
    assert_eq!(opt.steps(), 0);

    // A later step names the parameter that overflowed, not the first one visited.
    let mut d = dense(1);
    let mut opt = Optimizer::<f32>::new(AdamConfig::new(0.01)).unwrap();
    d.weight.grad.fill(0.5);
    d.bias.grad.fill(0.5);
    opt.step(&mut d).unwrap();
    // g² overflows f32 in the bias's second moment (the weight's update alone is fine).
    d.bias.grad.fill(1e30);
    let err = opt.step(&mut d).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::NonFiniteUpdate { optimizer: "adam", step: 2, param } if param == "bias"
        ),
        "{err}"
    );

    // AdamW whose decay factor 1 - lr * weight_decay overflows at the step's learning rate.
    let mut d = Dense::<f64>::new(3, 2, &mut Rng::seed_from(2)).unwrap();
    let mut opt = Optimizer::<f64>::new(AdamConfig::adamw(1e10).with_weight_decay(1e300)).unwrap();
    assert!(matches!(
        opt.step(&mut d),
        Err(Error::NonFiniteUpdate {
            optimizer: "adamw",
            ..
        })
    ));

    // The same check with every optimizer: a NaN gradient is an error, not Ok.
    for config in [
        OptimizerConfig::from(SgdConfig::new(0.1)),
        SgdConfig::new(0.1).with_momentum(0.9).into(),
        AdagradConfig::new(0.1).into(),
        RmsPropConfig::new(0.1)
            .with_centered(true)
            .with_momentum(0.5)
            .into(),
        AdamConfig::new(0.1).into(),
    ] {
        let mut d = dense(3);
        let mut opt = Optimizer::<f32>::new(config).unwrap();
        d.weight.grad.fill(0.25);
        opt.step(&mut d).unwrap();
        d.weight.grad[(1, 2)] = f32::NAN;
        assert!(
            matches!(opt.step(&mut d), Err(Error::NonFiniteUpdate { .. })),
            "{config:?}"
        );
    }

    // A checkpoint whose second moment is negative (or whose state is NaN) is refused on load.
    let d = dense(4);
    let hp = OptimizerConfig::from(AdamConfig::new(0.01)).to_values();
    let mut loaded = Optimizer::<f32>::new(AdamConfig::new(0.5)).unwrap();
    let ok = adam_state_file(&DMatrix::from_element(2, 3, 0.25), &hp);
    loaded.read_state(&ok, "optim", &d).unwrap();
    assert_eq!(loaded.steps(), 1);
    let mut fresh = Optimizer::<f32>::new(AdamConfig::new(0.5)).unwrap();
    for bad in [-1.0, f32::NAN] {
        let mut sq = DMatrix::from_element(2, 3, 0.25);
        sq[(1, 1)] = bad;
        let msg = invalid(fresh.read_state(&adam_state_file(&sq, &hp), "optim", &d));
        assert!(
            msg.contains("optim.weight.exp_avg_sq") && msg.contains("element 3"),
            "{msg}"
        );
        assert_eq!(fresh.steps(), 0);
        assert_eq!(fresh.config().lr(), 0.5);
    }
    // Settings an f32 cannot hold, from a file.
    let mut huge = hp.clone();
    huge[0] = 1e39;
    let file = adam_state_file(&DMatrix::from_element(2, 3, 0.25), &huge);
    invalid(fresh.read_state(&file, "optim", &d));
}

/// Every optimizer and variant the crate has, with a learning rate at which a gradient of
/// `f32::MAX` overflows the update (and, for the adaptive ones, `g²` overflows the state).
fn every_optimizer() -> Vec<OptimizerConfig> {
    vec![
        SgdConfig::new(4.0).into(),
        SgdConfig::new(4.0).with_weight_decay(0.1).into(),
        SgdConfig::new(4.0).with_momentum(0.9).into(),
        SgdConfig::new(4.0)
            .with_momentum(0.9)
            .with_dampening(0.5)
            .into(),
        SgdConfig::new(4.0)
            .with_momentum(0.9)
            .with_nesterov(true)
            .with_weight_decay(0.01)
            .into(),
        AdagradConfig::new(0.1).into(),
        AdagradConfig::new(0.1)
            .with_lr_decay(0.1)
            .with_weight_decay(0.01)
            .with_initial_accumulator_value(0.5)
            .into(),
        RmsPropConfig::new(0.01).into(),
        RmsPropConfig::new(0.01).with_momentum(0.9).into(),
        RmsPropConfig::new(0.01).with_centered(true).into(),
        RmsPropConfig::new(0.01)
            .with_centered(true)
            .with_momentum(0.5)
            .with_weight_decay(0.01)
            .into(),
        AdamConfig::new(0.01).into(),
        AdamConfig::new(0.01).with_weight_decay(0.01).into(),
        AdamConfig::adamw(0.01).into(),
    ]
}

/// The bits of every state buffer, in order.
fn state_bits(opt: &Optimizer<f32>) -> Vec<u32> {
    opt.state()
        .iter()
        .flat_map(|s| s.buffers.iter().flat_map(|b| b.iter().map(|v| v.to_bits())))
        .collect()
}

fn grad_bits(m: &impl Module<f32>) -> Vec<u32> {
    let mut bits = Vec::new();
    m.visit(&mut |_, p| bits.extend(p.grad.iter().map(|v| v.to_bits())));
    bits
}

#[test]
fn an_overflowing_step_is_refused_with_nothing_changed() {
    for config in every_optimizer() {
        for refused_at in [1, 3] {
            // Valid steps, then one whose bias update overflows: the weight, visited first,
            // would be updated by a step written in place.
            let mut d = dense(5);
            let mut opt = Optimizer::<f32>::new(config).unwrap();
            for k in 1..refused_at {
                d.weight.grad.fill(0.25 / k as f32);
                d.bias.grad.fill(-0.5);
                opt.step(&mut d).unwrap();
            }
            d.bias.grad[1] = f32::MAX;
            let twin = (d.clone(), opt.clone());
            let (params, grads, state) = (param_bits(&d), grad_bits(&d), state_bits(&opt));
            let err = opt.step(&mut d).unwrap_err();
            let kind = config.kind();
            assert!(
                matches!(
                    &err,
                    Error::NonFiniteUpdate { optimizer, step, param }
                        if *optimizer == kind && *step == refused_at && param == "bias"
                ),
                "{config:?}: {err}"
            );
            let msg = err.to_string();
            assert!(msg.contains(kind) && msg.contains("`bias`"), "{msg}");
            assert_eq!(param_bits(&d), params, "{config:?}: parameters changed");
            assert_eq!(grad_bits(&d), grads, "{config:?}: gradients changed");
            assert_eq!(state_bits(&opt), state, "{config:?}: state changed");
            assert_eq!(opt.steps(), refused_at - 1, "{config:?}: step count moved");
            assert_eq!(opt.state().len(), if refused_at == 1 { 0 } else { 2 });
            // The refused step leaves no trace: the next valid step gives the bits of an
            // optimizer that never saw it.
            let (mut d2, mut opt2) = twin;
            for (m, o) in [(&mut d, &mut opt), (&mut d2, &mut opt2)] {
                m.bias.grad.fill(0.125);
                o.step(m).unwrap();
            }
            assert_eq!(param_bits(&d), param_bits(&d2), "{config:?}");
            assert_eq!(state_bits(&opt), state_bits(&opt2), "{config:?}");
            assert_eq!(opt.steps(), refused_at);
        }
    }
    // A gradient of another shape than its parameter is an error, not a panic or a partial step.
    let mut d = dense(6);
    let mut opt = Optimizer::<f32>::new(AdamConfig::new(0.01)).unwrap();
    let before = param_bits(&d);
    d.bias.grad = DMatrix::zeros(1, 1);
    invalid(opt.step(&mut d));
    assert_eq!((param_bits(&d), opt.steps()), (before, 0));
}

fn gru(vocab: usize, seed: u64) -> SeqModel<f64> {
    SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, vocab, 5), vocab)
        .init(&mut Rng::seed_from(seed))
        .unwrap()
}

#[test]
fn a_training_step_is_all_or_nothing_with_truncated_bptt() {
    // Four steps of batch 2 in windows of 2: the bad target is in the second window.
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let config = TrainerConfig::new(Objective::NextToken).with_bptt(Bptt::Truncated { window: 2 });
    let mut trainer = Trainer::new(gru(4, 1), opt, Rng::seed_from(2), config).unwrap();
    let mut bad_target = batch_fn(|_, _: &mut Rng, b: &mut Batch<f64>| {
        b.x = DMatrix::from_fn(4, 8, |i, j| f64::from(u8::from(i == j % 4)));
        b.batch = 2;
        let mut t: Vec<usize> = (0..8).map(|j| (j + 1) % 4).collect();
        t[6] = 4;
        b.targets = Targets::Classes(t);
        Ok(())
    });
    let (good, good_opt) = (param_values(&trainer.model), trainer.optimizer.clone());
    let err = trainer.train_step(&mut bad_target).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Core(nn_core::Error::TargetOutOfRange {
                op: "Trainer batch targets",
                index: 6,
                target: 4,
                classes: 4,
            })
        ),
        "{err}"
    );
    assert_eq!(param_values(&trainer.model), good);
    assert_eq!(trainer.optimizer, good_opt);
    assert_eq!(trainer.optimizer.steps(), 0);
    assert_eq!(trainer.step(), 0);

    // Regression targets of the wrong shape or not finite, last step only (the earlier
    // windows only carry the state, but the check is the same).
    let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
    let config =
        TrainerConfig::new(Objective::LastStepMse).with_bptt(Bptt::Truncated { window: 2 });
    let mut trainer = Trainer::new(gru(4, 3), opt, Rng::seed_from(4), config).unwrap();
    let good = param_values(&trainer.model);
    for (shape, bad) in [((4, 2), f64::NAN), ((4, 3), 0.0), ((3, 2), 0.0)] {
        let mut source = batch_fn(|_, _: &mut Rng, b: &mut Batch<f64>| {
            b.x = DMatrix::from_element(4, 8, 0.5);
            b.batch = 2;
            let mut y = DMatrix::from_element(shape.0, shape.1, 0.25);
            y[(1, 1)] = bad;
            b.targets = Targets::Values(y);
            Ok(())
        });
        let err = trainer.train_step(&mut source).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Core(
                    nn_core::Error::NonFinite {
                        op: "Trainer batch targets",
                        ..
                    } | nn_core::Error::ShapeMismatch {
                        op: "Trainer batch targets",
                        ..
                    }
                )
            ),
            "{err}"
        );
        assert_eq!(param_values(&trainer.model), good);
        assert_eq!(trainer.optimizer.steps(), 0);
        assert_eq!(trainer.step(), 0);
    }

    // A valid batch whose second window overflows (inputs of 1e308 into a ReLU RNN whose
    // input weights are all 1): the first window's update is undone.
    let mut m: SeqModel<f64> = SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Relu), 4, 5),
        4,
    )
    .init(&mut Rng::seed_from(5))
    .unwrap();
    m.visit_mut(&mut |name, p| {
        if name == "rnn.weight_ih_l0" {
            p.value.fill(1.0);
        }
    });
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let config = TrainerConfig::new(Objective::NextToken).with_bptt(Bptt::Truncated { window: 2 });
    let mut trainer = Trainer::new(m, opt, Rng::seed_from(6), config).unwrap();
    let mut overflow = batch_fn(|_, _: &mut Rng, b: &mut Batch<f64>| {
        b.x = DMatrix::from_fn(4, 8, |i, j| {
            if j < 4 {
                f64::from(u8::from(i == j % 4))
            } else {
                1e308
            }
        });
        b.batch = 2;
        b.targets = Targets::Classes((0..8).map(|j| (j + 1) % 4).collect());
        Ok(())
    });
    let (good, good_opt) = (param_values(&trainer.model), trainer.optimizer.clone());
    let err = trainer.train_step(&mut overflow).unwrap_err();
    assert!(
        matches!(err, Error::Core(nn_core::Error::NonFinite { .. })),
        "{err}"
    );
    assert_eq!(param_values(&trainer.model), good);
    assert_eq!(trainer.optimizer, good_opt);
    assert_eq!(trainer.optimizer.steps(), 0);
    assert_eq!(trainer.step(), 0);
    // The same trainer then trains on a good batch, as a fresh one would.
    let mut fine = batch_fn(|_, _: &mut Rng, b: &mut Batch<f64>| {
        b.x = DMatrix::from_fn(4, 8, |i, j| f64::from(u8::from(i == j % 4)));
        b.batch = 2;
        b.targets = Targets::Classes((0..8).map(|j| (j + 1) % 4).collect());
        Ok(())
    });
    let report = trainer.train_step(&mut fine).unwrap();
    assert_eq!(report.updates, 2);
    assert_eq!(trainer.optimizer.steps(), 2);
}

#[test]
fn seq_model_loss_is_finite_or_an_error() {
    let x = DMatrix::from_fn(4, 6, |i, j| f64::from(u8::from(i == j % 4)));
    let targets = [1, 2, 3, 0, 1, 2];
    let mse_y = DMatrix::from_element(4, 2, 1e300);
    // A NaN weight (as loaded from a file), and biases that spread the logits over more than
    // f64's range (the loss of target 1 is 3.4e308).
    for what in ["NaN", "huge"] {
        let mut m = gru(4, 5);
        if what == "NaN" {
            m.head.weight.value[(2, 3)] = f64::NAN;
        } else {
            m.head.bias.value[0] = 1.7e308;
            m.head.bias.value[1] = -1.7e308;
        }
        let mut ws = SeqWorkspace::new();
        for target in [
            Target::NextToken(&targets),
            Target::LastStepClass(&targets[..2]),
        ] {
            let err = m.loss(&x, 2, None, target, &mut ws).unwrap_err();
            assert!(
                matches!(err, Error::Core(nn_core::Error::NonFinite { .. })),
                "{what}: {err}"
            );
            m.zero_grad();
            assert!(m.forward_backward(&x, 2, None, target, &mut ws).is_err());
            let mut zero = true;
            m.visit(&mut |_, p| zero &= p.grad.iter().all(|&g| g == 0.0));
            assert!(zero, "{what}: gradients changed");
        }
    }
    // Finite logits, but a squared error beyond f64.
    let m = gru(4, 6);
    let err = m
        .loss(
            &x,
            2,
            None,
            Target::LastStepMse(&mse_y),
            &mut SeqWorkspace::new(),
        )
        .map(|_| ())
        .map_or_else(|e| e, |()| panic!("an overflowing MSE gave a loss"));
    assert!(
        matches!(
            err,
            Error::Core(nn_core::Error::NonFinite {
                op: "mse loss (overflow)",
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn huge_sample_counts_and_run_lengths_are_errors_not_panics() {
    let m = gru(4, 7);
    let cfg = SampleConfig::new();
    let mut rng = Rng::seed_from(0);
    // usize::MAX and 2^60 tokens overflow the address space; 10^12 (8 TB) is refused by the
    // allocator.
    for count in [usize::MAX, 1 << 60, 1_000_000_000_000] {
        let err = sample(&m, &[1, 2], count, &cfg, &mut rng).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Core(nn_core::Error::TooLarge {
                    op: "sample output",
                    ..
                })
            ),
            "{count}: {err}"
        );
    }
    assert_eq!(sample(&m, &[1, 2], 5, &cfg, &mut rng).unwrap().len(), 5);

    // run(u64::MAX) from a step near the end of the counter: it runs the steps that remain
    // and stops, instead of overflowing `step + steps`.
    let dir = std::env::temp_dir().join(format!("nn-train-reliability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("near-full.safetensors");
    let trainer = |seed| {
        let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
        Trainer::new(
            gru(4, seed),
            opt,
            Rng::seed_from(seed),
            TrainerConfig::new(Objective::NextToken),
        )
        .unwrap()
    };
    let t = trainer(8);
    nn_train::checkpoint::save(
        &path,
        &nn_train::checkpoint::CheckpointParts {
            model: &t.model,
            model_config: t.model.config().to_json(),
            optimizer: &t.optimizer,
            step: u64::MAX - 2,
            rng: &t.rng,
            extra: Vec::new(),
        },
    )
    .unwrap();
    let mut resumed = trainer(9);
    resumed.load_checkpoint(&path).unwrap();
    let mut source = batch_fn(|_, _: &mut Rng, b: &mut Batch<f64>| {
        b.x = DMatrix::from_fn(4, 4, |i, j| f64::from(u8::from(i == j % 4)));
        b.batch = 2;
        b.targets = Targets::Classes(vec![1, 2, 3, 0]);
        Ok(())
    });
    let mut last = Vec::new();
    let report = resumed
        .run(u64::MAX, &mut source, None, &mut |p| {
            last.push((p.step, p.last_step))
        })
        .unwrap();
    assert_eq!(report.losses.len(), 2);
    assert_eq!(last, vec![(u64::MAX - 1, u64::MAX), (u64::MAX, u64::MAX)]);
    assert_eq!(resumed.step(), u64::MAX);
    std::fs::remove_dir_all(&dir).unwrap();
}
