//! Property tests: for random cells, sizes (including 0 and 1), `T = 1`, `B = 1`, targets (in
//! and out of range, of the wrong length) and values (including NaN and infinity), the
//! sequence model's objectives, the optimizers and clipping, sampling and the trainer return
//! results of the right shape with finite values, or a typed error. A panic fails the test.
//! Optimizers also run in f32 at the edges of their settings (learning rates and weight decays
//! up to and past f32's range, eps 0, huge gradients) and from checkpoints holding any state
//! (negative or NaN second moments, any learning rate): every step is taken with finite
//! results, or refused with the parameters, gradients, state and step count unchanged.
//!
//! 256 cases per property by default (seconds in the dev profile); `PROPTEST_CASES=N` runs more.

use nn_core::nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Dense, Module, Rng};
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

/// A setting at the edges of f32: zero, tiny, ordinary, huge, past f32's range, infinite.
fn edge_setting() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..1.0f64,
        1 => Just(0.0),
        1 => Just(1e-45),
        1 => Just(1e30),
        1 => Just(3.4e38),
        1 => Just(1e39),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NAN),
    ]
}

/// A gradient or state value: ordinary, huge (its square overflows f32), the largest f32,
/// negative, NaN or infinite.
fn edge_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -2.0..2.0f32,
        1 => Just(0.0),
        1 => Just(1e30),
        1 => Just(-f32::MAX),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
    ]
}

/// Every optimizer (kind 0-4, with switches), its learning rate, eps-like setting and weight
/// decay taken from the arguments.
fn edge_optimizer(kind: usize, lr: f64, eps: f64, wd: f64, flag: bool) -> OptimizerConfig {
    match kind {
        0 => SgdConfig {
            momentum: if flag { 0.9 } else { 0.0 },
            nesterov: flag,
            weight_decay: wd,
            ..SgdConfig::new(lr)
        }
        .into(),
        1 => AdagradConfig {
            eps,
            weight_decay: wd,
            ..AdagradConfig::new(lr)
        }
        .into(),
        2 => RmsPropConfig {
            eps,
            weight_decay: wd,
            centered: flag,
            momentum: if flag { 0.5 } else { 0.0 },
            ..RmsPropConfig::new(lr)
        }
        .into(),
        3 => AdamConfig {
            eps,
            weight_decay: wd,
            ..AdamConfig::new(lr)
        }
        .into(),
        _ => AdamConfig {
            eps,
            weight_decay: wd,
            ..AdamConfig::adamw(lr)
        }
        .into(),
    }
}

/// The bits of the parameters, gradients, state and step count: what a refused step keeps.
fn everything(m: &Dense<f32>, opt: &Optimizer<f32>) -> (Vec<u32>, u64) {
    let mut bits = Vec::new();
    m.visit(&mut |_, p| {
        bits.extend(p.value.iter().chain(p.grad.iter()).map(|v| v.to_bits()));
    });
    for s in opt.state() {
        bits.extend(s.buffers.iter().flat_map(|b| b.iter().map(|v| v.to_bits())));
    }
    (bits, opt.steps())
}

fn dense_with_grads(seed: u64, grads: &[f32]) -> Dense<f32> {
    let mut d = Dense::<f32>::new(3, 2, &mut Rng::seed_from(seed)).unwrap();
    let mut k = 0;
    d.visit_mut(&mut |_, p| {
        for g in p.grad.iter_mut() {
            *g = grads[k % grads.len()];
            k += 1;
        }
    });
    d
}

/// Steps `opt` `steps` times on `d` (new gradients from `grads` before each): every step is
/// `Ok` with finite values, or `NonFiniteUpdate` naming the optimizer and the parameter, with
/// nothing changed.
fn steps_are_all_or_nothing(
    d: &mut Dense<f32>,
    opt: &mut Optimizer<f32>,
    grads: &[f32],
    steps: usize,
) -> Result<(), TestCaseError> {
    for s in 0..steps {
        let mut k = s;
        d.visit_mut(&mut |_, p| {
            for g in p.grad.iter_mut() {
                *g = grads[k % grads.len()];
                k += 3;
            }
        });
        let before = everything(d, opt);
        match opt.step(d) {
            Ok(()) => {
                prop_assert!(param_values(d).iter().all(all_finite));
                prop_assert!(opt.state().iter().all(|s| s.buffers.iter().all(all_finite)));
            }
            Err(Error::NonFiniteUpdate {
                optimizer,
                step,
                param,
            }) => {
                prop_assert_eq!(optimizer, opt.config().kind());
                prop_assert_eq!(step, before.1 + 1);
                prop_assert!(param == "weight" || param == "bias", "{}", param);
                prop_assert_eq!(
                    everything(d, opt),
                    before,
                    "a refused step changed something"
                );
            }
            Err(e) => {
                // The only other refusal: a step count restored from a file that cannot grow.
                prop_assert_eq!(before.1, u64::MAX, "unexpected error {}", e);
                prop_assert_eq!(
                    everything(d, opt),
                    before,
                    "a refused step changed something"
                );
                break;
            }
        }
    }
    Ok(())
}

/// An optimizer state file for a `Dense(3, 2)` with the given settings, learning rate, step
/// and every buffer's values cycled from `values`.
fn state_file(config: OptimizerConfig, lr: f64, step: u64, values: &[f32]) -> TensorFile {
    let mut w = TensorWriter::new();
    let mut k = 0;
    for (name, shape) in [("weight", (2, 3)), ("bias", (2, 1))] {
        for b in config.buffer_names() {
            let m = DMatrix::from_fn(shape.0, shape.1, |_, _| {
                k += 1;
                values[k % values.len()]
            });
            w.matrix(&format!("optim.{name}.{b}"), &m, name == "bias");
        }
    }
    w.u64s("optim.step", &[step]);
    w.values::<f64>("optim.lr", &[1], &[lr]);
    let hp = config.to_values();
    w.values::<f64>("optim.hparams", &[hp.len()], &hp);
    TensorFile::from_bytes(w.to_bytes().unwrap(), "mem").unwrap()
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

    /// f32 optimizers at the edges of their settings: refused when built (typed), or every
    /// step taken with finite results or refused with nothing changed.
    #[test]
    fn optimizer_settings_at_the_edges(
        kind in 0usize..5,
        (lr, eps, wd, flag) in (edge_setting(), edge_setting(), edge_setting(), any::<bool>()),
        grads in proptest::collection::vec(edge_value(), 1..12),
        (steps, seed) in (1usize..5, any::<u64>()),
    ) {
        let config = edge_optimizer(kind, lr, eps, wd, flag);
        let mut opt = match Optimizer::<f32>::new(config) {
            Ok(opt) => opt,
            Err(e) => {
                prop_assert!(matches!(e, Error::Core(nn_core::Error::InvalidConfig(_))), "{}", e);
                return Ok(());
            }
        };
        // What must be refused when built is refused.
        prop_assert!(lr.is_finite() && lr <= f64::from(f32::MAX));
        prop_assert!(wd.is_finite() && wd <= f64::from(f32::MAX));
        let mut d = dense_with_grads(seed, &grads);
        steps_are_all_or_nothing(&mut d, &mut opt, &grads, steps)?;
    }

    /// An optimizer state read from a checkpoint with any values (negative or NaN second
    /// moments, huge moments), learning rate and step: refused with the optimizer unchanged, or
    /// loaded, and then every step is all or nothing.
    #[test]
    fn optimizer_state_from_any_checkpoint(
        kind in 0usize..5,
        (lr, file_lr, flag) in (edge_setting(), edge_setting(), any::<bool>()),
        step in prop_oneof![Just(0u64), 1u64..5, Just(u64::MAX - 1), Just(u64::MAX)],
        values in proptest::collection::vec(edge_value(), 1..12),
        grads in proptest::collection::vec(edge_value(), 1..12),
        seed in any::<u64>(),
    ) {
        let config = edge_optimizer(kind, lr.min(1.0), 1e-8, 0.01, flag);
        let file = state_file(config, file_lr, step, &values);
        let mut opt = Optimizer::<f32>::new(edge_optimizer(kind, 0.5, 1e-8, 0.0, flag)).unwrap();
        let fresh = opt.clone();
        let mut d = dense_with_grads(seed, &grads);
        match opt.read_state(&file, "optim", &d) {
            Err(_) => prop_assert_eq!(&opt, &fresh, "a refused state changed the optimizer"),
            Ok(()) => {
                prop_assert!(file_lr.is_finite() && file_lr >= 0.0);
                prop_assert_eq!(opt.steps(), step);
                for s in opt.state() {
                    prop_assert!(s.buffers.iter().all(all_finite));
                }
                steps_are_all_or_nothing(&mut d, &mut opt, &grads, 2)?;
            }
        }
    }
}
