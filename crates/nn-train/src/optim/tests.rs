//! Unit tests of the optimizers: settings, state export, and the update rules against PyTorch.
use super::*;
use nn_core::Float;
use nn_core::{Dense, Rng};
use serde_json::json;

#[test]
fn kwargs_round_trip_and_unknown_arguments_fail() {
    for c in [
        OptimizerConfig::from(SgdConfig::new(0.1).with_momentum(0.9).with_nesterov(true)),
        AdagradConfig::new(0.1).with_lr_decay(0.01).into(),
        RmsPropConfig::new(0.1)
            .with_centered(true)
            .with_momentum(0.5)
            .into(),
        AdamConfig::new(0.1).into(),
        AdamConfig::adamw(0.1).into(),
    ] {
        let back = OptimizerConfig::from_torch_kwargs(c.kind(), &c.to_torch_kwargs()).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            OptimizerConfig::from_values(c.kind(), &c.to_values()).unwrap(),
            c
        );
        let tagged = serde_json::to_value(c).unwrap();
        assert_eq!(
            tagged,
            json!({"kind": c.kind(), "kwargs": c.to_torch_kwargs()})
        );
        assert_eq!(
            serde_json::from_value::<OptimizerConfig>(tagged).unwrap(),
            c
        );
    }
    let adamw: OptimizerConfig = serde_json::from_value(json!({"kind": "adamw"})).unwrap();
    assert_eq!(adamw, AdamConfig::adamw(1e-3).into());
    assert!(serde_json::from_value::<OptimizerConfig>(json!({"kind": "lbfgs"})).is_err());
    let sgd =
        OptimizerConfig::from_torch_kwargs("sgd_momentum", &json!({"lr": 0.5, "momentum": 0.9}))
            .unwrap();
    assert_eq!(sgd, SgdConfig::new(0.5).with_momentum(0.9).into());
    assert!(OptimizerConfig::from_torch_kwargs("adam", &json!({"amsgrad": true})).is_err());
    assert!(OptimizerConfig::from_torch_kwargs("adam", &json!({"amsgrad": false})).is_ok());
    assert!(OptimizerConfig::from_torch_kwargs("sgd", &json!({"momentum": 0.9})).is_err());
    assert!(OptimizerConfig::from_torch_kwargs("lbfgs", &json!({})).is_err());
}

#[test]
fn state_follows_the_model_and_mismatch_is_an_error() {
    let mut rng = Rng::seed_from(0);
    let mut a = Dense::<f64>::new(3, 2, &mut rng).unwrap();
    let mut b = Dense::<f64>::new(3, 4, &mut rng).unwrap();
    let mut opt = Optimizer::new(AdamConfig::new(0.1)).unwrap();
    a.weight.grad.fill(1.0);
    let before = a.weight.value.clone();
    opt.step(&mut a).unwrap();
    assert_eq!(opt.state().len(), 2);
    assert_eq!(opt.state()[1].shape, vec![2]);
    // First Adam step moves every weight by lr * sign(g) (up to eps).
    assert!(((&before - &a.weight.value).add_scalar(-0.1)).amax() < 1e-8);
    let err = opt.step(&mut b).unwrap_err();
    assert!(
        matches!(err, Error::StateMismatch { index: 0, .. }),
        "{err}"
    );
    assert_eq!(opt.steps(), 1);
}

#[test]
fn state_round_trips_through_a_file() {
    let mut rng = Rng::seed_from(1);
    let mut a = Dense::<f32>::new(3, 2, &mut rng).unwrap();
    let mut opt = Optimizer::new(
        RmsPropConfig::new(0.01)
            .with_momentum(0.9)
            .with_centered(true),
    )
    .unwrap();
    a.weight.grad.fill(0.5);
    a.bias.grad.fill(-0.25);
    opt.step(&mut a).unwrap();
    opt.set_lr(0.005);
    let mut w = TensorWriter::new();
    opt.write_state(&mut w, "optim");
    let file = TensorFile::from_bytes(w.to_bytes().unwrap(), "mem").unwrap();
    assert_eq!(file.shape("optim.bias.grad_avg").unwrap(), &[2]);
    let mut back = Optimizer::<f32>::new(RmsPropConfig::new(1.0)).unwrap();
    back.read_state(&file, "optim", &a).unwrap();
    assert_eq!(back, opt);
    let mut wrong = Optimizer::<f32>::new(AdamConfig::new(1.0)).unwrap();
    assert!(wrong.read_state(&file, "optim", &a).is_err());
    assert_eq!(wrong.steps(), 0);
}

/// Every optimizer's element loop as [`OptimizerConfig::apply`] runs it (on the widest vectors
/// the CPU has) and as compiled for the baseline CPU give the same bits, the same finiteness
/// verdict, and leave their inputs alone.
#[test]
fn dispatched_updates_match_the_baseline_loop_bit_for_bit() {
    fn check<T: Float>(config: OptimizerConfig, rng: &mut Rng) {
        // 37 values: whole vectors and a tail on every path.
        let n = 37;
        let mut p = Param::vector(n);
        for v in p.value.iter_mut().chain(p.grad.iter_mut()) {
            *v = T::cast(rng.uniform() * 4.0 - 2.0);
        }
        // The first buffer in [1, 2), the others in [0, 0.5): a centered RMSprop's
        // `square_avg - grad_avg²` stays positive.
        let state: Vec<DMatrix<T>> = (0..config.buffer_names().len())
            .map(|b| {
                let (lo, width) = if b == 0 { (1.0, 1.0) } else { (0.0, 0.5) };
                DMatrix::from_fn(n, 1, |_, _| T::cast(lo + width * rng.uniform()))
            })
            .collect();
        let (before, state_before) = (p.clone(), state.clone());
        for (t, lr) in [(1, 0.1), (7, 0.01), (2, f64::MAX)] {
            let mut wide = (DMatrix::zeros(n, 1), state.clone());
            let ok = config.apply(lr, t, &p, &state, &mut wide.0, &mut wide.1);
            let mut base = (DMatrix::zeros(n, 1), state.clone());
            let (v, g, out) = (p.value.as_slice(), p.grad.as_slice(), base.0.as_mut_slice());
            let base_ok = match config {
                OptimizerConfig::Sgd(c) => c.apply(lr, t, v, g, &state, out, &mut base.1),
                OptimizerConfig::Adagrad(c) => c.apply(lr, t, v, g, &state, out, &mut base.1),
                OptimizerConfig::RmsProp(c) => c.apply(lr, v, g, &state, out, &mut base.1),
                OptimizerConfig::Adam(c) => c.apply(lr, t, v, g, &state, out, &mut base.1),
            };
            let bits = |m: &DMatrix<T>| m.iter().map(|v| v.as_f64().to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide.0), bits(&base.0), "{config:?} t {t}");
            for (a, b) in wide.1.iter().zip(&base.1) {
                assert_eq!(bits(a), bits(b), "{config:?} t {t}");
            }
            assert_eq!(ok, base_ok, "{config:?}");
            let finite = |m: &DMatrix<T>| m.iter().all(|v| v.finite());
            assert_eq!(
                ok,
                finite(&wide.0) && wide.1.iter().all(finite),
                "{config:?}"
            );
            // Ordinary settings give finite updates; lr = f64::MAX overflows most.
            assert!(ok || lr > 1.0, "{config:?} lr {lr}");
        }
        assert_eq!((p, state), (before, state_before));
    }
    let mut rng = Rng::seed_from(3);
    for config in [
        OptimizerConfig::from(SgdConfig::new(0.1)),
        SgdConfig::new(0.1).with_weight_decay(0.1).into(),
        SgdConfig::new(0.1)
            .with_momentum(0.9)
            .with_dampening(0.3)
            .into(),
        SgdConfig::new(0.1)
            .with_momentum(0.9)
            .with_nesterov(true)
            .with_weight_decay(0.01)
            .into(),
        AdagradConfig::new(0.1)
            .with_lr_decay(0.1)
            .with_weight_decay(0.1)
            .into(),
        RmsPropConfig::new(0.1).into(),
        RmsPropConfig::new(0.1).with_momentum(0.9).into(),
        RmsPropConfig::new(0.1)
            .with_centered(true)
            .with_weight_decay(0.1)
            .into(),
        RmsPropConfig::new(0.1)
            .with_centered(true)
            .with_momentum(0.5)
            .into(),
        AdamConfig::new(0.1).into(),
        AdamConfig::new(0.1).with_weight_decay(0.1).into(),
        AdamConfig::adamw(0.1).into(),
    ] {
        check::<f32>(config, &mut rng);
        check::<f64>(config, &mut rng);
    }
}
