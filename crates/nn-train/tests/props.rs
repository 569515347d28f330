//! Property tests: for random cells, sizes (including 0 and 1), `T = 1`, `B = 1`, targets (in
//! and out of range, of the wrong length) and values (including NaN and infinity), the
//! sequence model's objectives, the optimizers and clipping, sampling and the trainer return
//! results of the right shape with finite values, or a typed error. A panic fails the test.
//!
//! 256 cases per property by default (seconds in the dev profile); `PROPTEST_CASES=N` runs more.

use nn_core::{Module, Rng};
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_testutil::{all_finite, cycled, grads_finite, param_values, proptest_cases};
use nn_train::{
    AdagradConfig, AdamConfig, Batch, Error, Objective, Optimizer, OptimizerConfig, RmsPropConfig,
    SampleConfig, SeqModel, SeqModelConfig, SeqWorkspace, SgdConfig, Target, Targets, Trainer,
    TrainerConfig, batch_fn, clip_grad_norm, clip_grad_value, grad_norm, sample, sample_logits,
};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        12 => -3.0..3.0f64,
        1 => Just(0.0),
        1 => Just(f64::NAN),
        1 => prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
    ]
}

/// A weird number for a setting: ordinary, zero, negative, tiny, huge, NaN or infinite.
fn setting() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..2.0f64,
        1 => Just(0.0),
        1 => Just(-1.0),
        1 => Just(1e-300),
        1 => Just(1e300),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
    ]
}

fn model(cell: usize, i: usize, h: usize, o: usize, seed: u64) -> Option<SeqModel<f64>> {
    SeqModelConfig::new(RecurrentConfig::new(CellKind::ALL[cell], i, h), o)
        .init(&mut Rng::seed_from(seed))
        .ok()
}

fn optimizer_config(kind: usize, a: f64, b: f64, flag: bool) -> OptimizerConfig {
    match kind {
        0 => SgdConfig {
            momentum: b,
            nesterov: flag,
            ..SgdConfig::new(a)
        }
        .into(),
        1 => AdagradConfig {
            lr_decay: b,
            ..AdagradConfig::new(a)
        }
        .into(),
        2 => RmsPropConfig {
            alpha: b,
            centered: flag,
            ..RmsPropConfig::new(a)
        }
        .into(),
        _ => AdamConfig {
            weight_decay: b,
            decoupled_weight_decay: flag,
            ..AdamConfig::new(a)
        }
        .into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    /// Every objective, with targets in range, out of range, of the wrong length.
    #[test]
    fn objectives(
        (cell, i, h, o) in (0usize..4, 0usize..4, 0usize..4, 0usize..4),
        (t, b, objective) in (0usize..4, 0usize..4, 0usize..3),
        targets in proptest::collection::vec(0usize..5, 0..12),
        values in proptest::collection::vec(value(), 1..30),
        clean in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let Some(mut m) = model(cell, i, h, o, seed) else {
            prop_assert!(i == 0 || h == 0 || o == 0);
            return Ok(());
        };
        let mut x = cycled(i, t * b, &values);
        if clean {
            x = x.map(|v| if v.is_finite() { v } else { 0.25 });
        }
        let mse = cycled(o, b, &values);
        let target = match objective {
            0 => Target::NextToken(&targets),
            1 => Target::LastStepClass(&targets),
            _ => Target::LastStepMse(&mse),
        };
        let mut ws = SeqWorkspace::new();
        let before = param_values(&m);
        m.zero_grad();
        // Documented: the loss is finite, or the result is an error.
        if let Ok(loss) = m.forward_backward(&x, b, None, target, &mut ws) {
            prop_assert!(loss.is_finite() && loss >= 0.0);
            prop_assert!(all_finite(&x) && b > 0 && t > 0);
            prop_assert!(grads_finite(&m));
        }
        prop_assert_eq!(param_values(&m), before, "forward_backward changed parameters");
        if let Ok(loss) = m.loss(&x, b, None, target, &mut ws) {
            prop_assert!(loss.is_finite());
        }
    }

    /// Optimizers and clipping with any settings and gradients (NaN and infinity included):
    /// a typed error for bad settings; every step either gives finite parameters or is refused
    /// with nothing changed; with finite gradients and settings, every step is taken.
    #[test]
    fn optimizers_and_clipping(
        kind in 0usize..4,
        (lr, other, flag) in (setting(), setting(), any::<bool>()),
        grads in proptest::collection::vec(value(), 1..20),
        (clip, steps) in (setting(), 1usize..4),
        seed in any::<u64>(),
    ) {
        let Some(mut m) = model(2, 2, 2, 2, seed) else { unreachable!() };
        let config = optimizer_config(kind, lr, other, flag);
        let mut k = 0;
        m.visit_mut(&mut |_, p| {
            for g in p.grad.iter_mut() {
                *g = grads[k % grads.len()];
                k += 1;
            }
        });
        let grads_ok = grads_finite(&m);
        let norm = grad_norm(&m);
        prop_assert!(norm >= 0.0 || norm.is_nan());
        let _ = clip_grad_norm(&mut m, clip);
        clip_grad_value(&mut m, clip);
        let Ok(mut opt) = Optimizer::<f64>::new(config) else {
            return Ok(());
        };
        let sane = grads_ok && clip.is_finite() && clip > 0.0 && lr < 10.0 && other.abs() < 10.0;
        for _ in 0..steps {
            match opt.step(&mut m) {
                Ok(()) => prop_assert!(param_values(&m).iter().all(all_finite), "{:?}", config),
                Err(e) => {
                    prop_assert!(matches!(e, Error::NonFiniteUpdate { .. }), "{}", e);
                    prop_assert!(!sane, "{:?}: {}", config, e);
                    break;
                }
            }
        }
    }

    /// Sampling with any temperature, top-k, prime and count.
    #[test]
    fn sampling(
        cell in prop_oneof![Just(0usize), Just(2), Just(3)],
        vocab in 0usize..5,
        (temperature, top_k) in (setting(), prop_oneof![Just(0usize), Just(1), 0usize..10, Just(usize::MAX)]),
        prime in proptest::collection::vec(0usize..6, 0..4),
        count in 0usize..6,
        logits in proptest::collection::vec(value(), 0..6),
        seed in any::<u64>(),
    ) {
        let config = SampleConfig::new().with_temperature(temperature).with_top_k(top_k);
        let mut rng = Rng::seed_from(seed);
        match sample_logits(&logits, &config, &mut rng, &mut Vec::new()) {
            Ok(k) => prop_assert!(k < logits.len()),
            Err(_) => prop_assert!(
                logits.is_empty() || logits.iter().any(|v| !v.is_finite())
                    || !(temperature.is_finite() && temperature >= 0.0)
            ),
        }
        let Some(m) = model(cell, vocab, 3, vocab, seed) else { return Ok(()); };
        match sample(&m, &prime, count, &config, &mut rng) {
            Ok(tokens) => {
                prop_assert_eq!(tokens.len(), count);
                prop_assert!(tokens.iter().all(|&t| t < vocab));
            }
            Err(_) => prop_assert!(
                prime.is_empty() || prime.iter().any(|&t| t >= vocab)
                    || !(temperature.is_finite() && temperature >= 0.0)
            ),
        }
    }

    /// A training step on any batch: a finite loss and finite parameters, or a typed error
    /// that left the parameters exactly as they were.
    #[test]
    fn trainer_steps(
        (cell, i, h) in (0usize..4, 1usize..4, 1usize..4),
        (t, b, objective) in (0usize..4, 0usize..4, 0usize..3),
        targets in proptest::collection::vec(0usize..5, 0..12),
        values in proptest::collection::vec(value(), 1..30),
        seed in any::<u64>(),
    ) {
        let o = 3;
        let Some(m) = model(cell, i, h, o, seed) else { unreachable!() };
        let objective = [Objective::NextToken, Objective::LastStepClass, Objective::LastStepMse][objective];
        let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
        let mut trainer = Trainer::new(m, opt, Rng::seed_from(seed), TrainerConfig::new(objective)).unwrap();
        let mut source = batch_fn(|_, _: &mut Rng, batch: &mut Batch<f64>| {
            batch.x = cycled(i, t * b, &values);
            batch.batch = b;
            batch.targets = match objective {
                Objective::LastStepMse => Targets::Values(cycled(o, b, &values)),
                _ => Targets::Classes(targets.clone()),
            };
            Ok(())
        });
        for _ in 0..2 {
            let before = param_values(&trainer.model);
            match trainer.train_step(&mut source) {
                Ok(report) => {
                    prop_assert!(report.loss.is_finite() && report.loss >= 0.0);
                    prop_assert!(param_values(&trainer.model).iter().all(all_finite));
                }
                Err(_) => prop_assert_eq!(param_values(&trainer.model), before),
            }
        }
    }
}
