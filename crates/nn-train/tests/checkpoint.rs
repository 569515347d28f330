//! Checkpoints: a run resumed from one continues bit for bit; mismatches are typed errors that
//! change nothing.

mod common;

use common::{next_token_batch, next_token_trainer};
use nn_core::{Module, Param, Rng};
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, Bptt, Clip, Error, LrSchedule, Objective, Optimizer, SeqModel,
    SeqModelConfig, SgdConfig, Trainer, TrainerConfig, batch_fn,
};

const TEXT: [usize; 7] = [0, 1, 2, 3, 4, 2, 1];

fn config() -> SeqModelConfig {
    SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, 5, 6), 5)
}

fn trainer(seed: u64) -> Trainer<f32> {
    let model: SeqModel<f32> = config().init(&mut Rng::seed_from(seed)).unwrap();
    let opt = Optimizer::new(AdamConfig::new(0.02)).unwrap();
    let tc = TrainerConfig::new(Objective::NextToken)
        .with_bptt(Bptt::Truncated { window: 3 })
        .with_carry_state(true)
        .with_clip(Clip::Norm(1.0))
        .with_schedule(LrSchedule::Cosine {
            t_max: 8,
            eta_min: 0.001,
        });
    Trainer::new(model, opt, Rng::seed_from(seed + 100), tc).unwrap()
}

fn bits(m: &impl Module<f32>) -> Vec<(String, Vec<u32>)> {
    let mut v = Vec::new();
    m.visit(&mut |n, p: &Param<f32>| {
        v.push((n.to_string(), p.value.iter().map(|x| x.to_bits()).collect()))
    });
    v
}

#[test]
fn resumed_training_continues_bit_for_bit() {
    // The batch source draws its windows from the trainer's (checkpointed) Rng.
    let source = || {
        batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
            next_token_batch(&TEXT, 5, 7, 3, rng, b);
            Ok(())
        })
    };
    let n = 8;
    let mut straight = trainer(1);
    straight.run(n, &mut source(), None, &mut |_| {}).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("ckpt.safetensors");
    let mut first = trainer(1);
    first.run(n / 2, &mut source(), None, &mut |_| {}).unwrap();
    first.save_checkpoint(&path).unwrap();
    drop(first);

    // Fresh objects with another init and RNG: everything must come from the file.
    let mut resumed = trainer(7);
    resumed.load_checkpoint(&path).unwrap();
    assert_eq!(resumed.step(), n / 2);
    assert!(resumed.carried_state().is_some_and(|s| s.c.is_some()));
    resumed
        .run(n / 2, &mut source(), None, &mut |_| {})
        .unwrap();

    assert_eq!(bits(&resumed.model), bits(&straight.model));
    assert_eq!(resumed.optimizer, straight.optimizer);
    assert_eq!(resumed.rng, straight.rng);
    assert_eq!(resumed.carried_state(), straight.carried_state());
    assert_eq!(resumed.step(), n);
    // Only the checkpoint is left in the folder (the temporary file was renamed).
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
}

#[test]
fn the_file_has_pytorch_names_and_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("c.safetensors");
    let mut t = trainer(2);
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
        next_token_batch(&TEXT, 5, 4, 2, rng, b);
        Ok(())
    });
    t.train_step(&mut source).unwrap();
    t.save_checkpoint(&path).unwrap();
    let file = nn_core::tensor_io::TensorFile::open(&path).unwrap();
    for name in [
        "rnn.weight_ih_l0",
        "head.bias",
        "optim.rnn.weight_hh_l0.exp_avg",
        "optim.head.bias.exp_avg_sq",
        "optim.step",
        "step",
        "rng",
        "state.h",
        "state.c",
    ] {
        assert!(file.contains(name), "{name} missing: {:?}", file.names());
    }
    assert_eq!(file.shape("optim.head.bias.exp_avg").unwrap(), &[5]);
    assert_eq!(file.shape("rnn.weight_ih_l0").unwrap(), &[24, 5]);
    assert_eq!(file.metadata("dtype"), Some("f32"));
    let opt: serde_json::Value = serde_json::from_str(file.metadata("optimizer").unwrap()).unwrap();
    assert_eq!(opt["kind"], "adam");
    assert_eq!(opt["kwargs"]["lr"], 0.02);
    let model: serde_json::Value = serde_json::from_str(file.metadata("model").unwrap()).unwrap();
    assert_eq!(model["cell"], "lstm");
    assert_eq!(model["hidden"], 6);
}

#[test]
fn mismatches_are_typed_errors_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("c.safetensors");
    trainer(3).save_checkpoint(&path).unwrap();

    // Another optimizer kind.
    let model: SeqModel<f32> = config().init(&mut Rng::seed_from(4)).unwrap();
    let before = bits(&model);
    let mut t = next_token_trainer(model, Optimizer::new(SgdConfig::new(0.1)).unwrap(), 0);
    let err = t.load_checkpoint(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CheckpointMismatch {
                what: "optimizer kind",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(bits(&t.model), before);
    assert_eq!(t.rng, Rng::seed_from(0));

    // Another model config.
    let other = SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, 5, 7), 5);
    let model: SeqModel<f32> = other.init(&mut Rng::seed_from(4)).unwrap();
    let mut t = next_token_trainer(model, Optimizer::new(AdamConfig::new(0.1)).unwrap(), 0);
    let err = t.load_checkpoint(&path).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CheckpointMismatch {
                what: "model config",
                ..
            }
        ),
        "{err}"
    );

    // Another scalar type.
    let model: SeqModel<f64> = config().init(&mut Rng::seed_from(4)).unwrap();
    let mut t = next_token_trainer(model, Optimizer::new(AdamConfig::new(0.1)).unwrap(), 0);
    let err = t.load_checkpoint(&path).unwrap_err();
    assert!(
        matches!(err, Error::CheckpointMismatch { what: "dtype", .. }),
        "{err}"
    );

    // A missing or corrupt file.
    assert!(matches!(
        t.load_checkpoint(dir.join("nope.safetensors")),
        Err(Error::Core(nn_core::Error::Io { .. }))
    ));
    std::fs::write(dir.join("bad.safetensors"), b"garbage").unwrap();
    assert!(matches!(
        t.load_checkpoint(dir.join("bad.safetensors")),
        Err(Error::Core(nn_core::Error::Format { .. }))
    ));
}

#[test]
fn generic_checkpoint_of_any_module_reports_missing_tensors() {
    use nn_train::checkpoint::{CheckpointParts, load, save};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("d.safetensors");
    let mut rng = Rng::seed_from(5);
    let dense = nn_core::Dense::<f64>::new(3, 2, &mut rng).unwrap();
    let opt = Optimizer::<f64>::new(SgdConfig::new(0.1).with_momentum(0.9)).unwrap();
    let meta = serde_json::json!({"dense": [3, 2]});
    let saved_rng = rng.clone();
    save(
        &path,
        &CheckpointParts {
            model: &dense,
            model_config: meta.clone(),
            optimizer: &opt,
            step: 4,
            rng: &rng,
            extra: vec![],
        },
    )
    .unwrap();
    // Same config JSON, but a model with other parameter names: the tensor is missing.
    struct Renamed(nn_core::Dense<f64>);
    impl Module<f64> for Renamed {
        fn visit(&self, f: &mut dyn FnMut(&str, &Param<f64>)) {
            nn_core::visit_prefixed("inner", &self.0, f)
        }
        fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<f64>)) {
            nn_core::visit_prefixed_mut("inner", &mut self.0, f)
        }
    }
    let mut other = Renamed(nn_core::Dense::new(3, 2, &mut rng).unwrap());
    let mut opt2 = Optimizer::<f64>::new(SgdConfig::new(0.5).with_momentum(0.9)).unwrap();
    let err = load(&path, &mut other, &meta, &mut opt2).unwrap_err();
    assert!(
        matches!(err, Error::Core(nn_core::Error::MissingTensor { ref name, .. }) if name == "inner.weight"),
        "{err}"
    );
    let mut same = nn_core::Dense::<f64>::new(3, 2, &mut Rng::seed_from(9)).unwrap();
    let restored = load(&path, &mut same, &meta, &mut opt2).unwrap();
    assert_eq!(restored.step, 4);
    assert_eq!(restored.rng, saved_rng);
    assert_eq!(same, dense);
    assert_eq!(opt2.config(), opt.config());
}
