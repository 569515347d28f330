//! The model as users call it: model files (save, load, from a checkpoint, user metadata, typed
//! errors), PyTorch name maps, streaming with `SeqModel::step`, and the per-step MSE objective
//! against a hand-written loop and in the trainer.

use nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter, rename_prefixes};
use nn_core::{Init, Module, Rng, loss};
use nn_recurrent::{CellKind, Nonlinearity, RecurrentConfig};
use nn_testutil::{CountingAlloc, allocations, param_grads, param_values};
use nn_train::{
    AdamConfig, Batch, Bptt, Error, Objective, Optimizer, SeqModel, SeqModelConfig, SeqStepScratch,
    SeqWorkspace, Target, Targets, Trainer, TrainerConfig, batch_fn, model_file,
};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn model<T: nn_core::Float>(cell: CellKind, layers: usize, seed: u64) -> SeqModel<T> {
    let rnn = RecurrentConfig::new(cell, 3, 5).with_num_layers(layers);
    SeqModelConfig::new(rnn, 4)
        .init(&mut Rng::seed_from(seed))
        .unwrap()
}

fn core(r: Result<impl std::fmt::Debug, Error>) -> nn_core::Error {
    match r {
        Err(Error::Core(e)) => e,
        other => panic!("expected an nn-core error, got {other:?}"),
    }
}

#[test]
fn a_model_file_round_trips_with_its_metadata_in_either_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let m: SeqModel<f32> = model(CellKind::Lstm, 2, 1);
    m.save(&path, &[("vocab", "abc\n"), ("note", "x")]).unwrap();
    let back = SeqModel::<f32>::load(&path).unwrap();
    assert_eq!(back.config(), m.config());
    assert_eq!(param_values(&back), param_values(&m));
    assert_eq!(back.param_names()[0], "rnn.weight_ih_l0");
    assert_eq!(
        model_file::read_metadata(&path, "vocab")
            .unwrap()
            .as_deref(),
        Some("abc\n")
    );
    assert_eq!(model_file::read_metadata(&path, "none").unwrap(), None);
    let file = TensorFile::open(&path).unwrap();
    assert_eq!(model_file::user_metadata(&file, "note"), Some("x"));
    assert_eq!(
        SeqModel::<f32>::load_file(&file).unwrap().config(),
        m.config()
    );
    // An f32 file loads as f64, exactly.
    let wide = SeqModel::<f64>::load(&path).unwrap();
    let want: Vec<DMatrix<f64>> = param_values(&m).iter().map(|p| p.map(f64::from)).collect();
    assert_eq!(param_values(&wide), want);
    // Same model, same bytes.
    let again = dir.path().join("again.safetensors");
    m.save(&again, &[("note", "x"), ("vocab", "abc\n")])
        .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn the_model_of_a_checkpoint_is_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    let m: SeqModel<f32> = model(CellKind::Gru, 1, 2);
    let optimizer = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let mut trainer = Trainer::new(
        m,
        optimizer,
        Rng::seed_from(0),
        TrainerConfig::new(Objective::NextToken),
    )
    .unwrap();
    let mut source = batch_fn(|_, _: &mut Rng, b: &mut Batch<f32>| {
        b.x = DMatrix::from_fn(3, 8, |i, j| ((i + j) % 3) as f32);
        b.batch = 2;
        b.targets = Targets::Classes((0..8).map(|k| k % 4).collect());
        Ok(())
    });
    trainer.train_step(&mut source).unwrap();
    trainer
        .save_checkpoint_with(&path, &[("vocab", "xyz")])
        .unwrap();
    let loaded = SeqModel::<f32>::from_checkpoint(&path).unwrap();
    assert_eq!(param_values(&loaded), param_values(&trainer.model));
    assert_eq!(
        model_file::read_metadata(&path, "vocab")
            .unwrap()
            .as_deref(),
        Some("xyz")
    );
    // The two kinds of file are not taken for each other, with a hint.
    let err = SeqModel::<f32>::load(&path).unwrap_err();
    assert!(matches!(&err, Error::ModelFile { .. }), "{err}");
    assert!(err.to_string().contains("from_checkpoint"), "{err}");
    let model_path = dir.path().join("m.safetensors");
    trainer.model.save(&model_path, &[]).unwrap();
    let err = SeqModel::<f32>::from_checkpoint(&model_path).unwrap_err();
    assert!(matches!(&err, Error::ModelFile { .. }), "{err}");
}

#[test]
fn damaged_foreign_and_mismatched_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m: SeqModel<f64> = model(CellKind::Lstm, 1, 3);
    let path = dir.path().join("m.safetensors");
    m.save(&path, &[]).unwrap();
    // Missing.
    let missing = dir.path().join("none.safetensors");
    assert!(matches!(
        core(SeqModel::<f64>::load(&missing)),
        nn_core::Error::Io { .. }
    ));
    // A flipped bit in the data.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(matches!(
        core(SeqModel::<f64>::load(&bad)),
        nn_core::Error::Checksum { .. }
    ));
    // Not safetensors at all.
    std::fs::write(&bad, b"not a model").unwrap();
    assert!(matches!(
        core(SeqModel::<f64>::load(&bad)),
        nn_core::Error::Format { .. }
    ));
    // A bare layer's weights: no format, no config.
    m.rnn.save_safetensors(&bad).unwrap();
    assert!(matches!(
        SeqModel::<f64>::load(&bad),
        Err(Error::ModelFile { .. })
    ));
    // A config the tensors do not fit, and a tensor missing.
    let config = m.config().to_json().to_string();
    let bigger = config.replace("\"hidden\":5", "\"hidden\":6");
    assert_ne!(bigger, config);
    let mut w = TensorWriter::new();
    w.module(&m)
        .metadata("format", model_file::FORMAT)
        .metadata("model", &bigger);
    w.write(&bad).unwrap();
    assert!(matches!(
        core(SeqModel::<f64>::load(&bad)),
        nn_core::Error::TensorShape { .. }
    ));
    let mut w = TensorWriter::new();
    m.visit(&mut |name, p| {
        if name != "head.bias" {
            w.param(name, p);
        }
    });
    w.metadata("format", model_file::FORMAT)
        .metadata("model", &config);
    w.write(&bad).unwrap();
    match core(SeqModel::<f64>::load(&bad)) {
        nn_core::Error::MissingTensor {
            name,
            path,
            closest,
        } => {
            assert_eq!(name, "head.bias");
            assert_eq!(path, bad);
            assert_eq!(closest[0], "head.weight");
        }
        e => panic!("{e}"),
    }
    // A config that is not one.
    let mut w = TensorWriter::new();
    w.module(&m)
        .metadata("format", model_file::FORMAT)
        .metadata("model", "{\"cell\":7}");
    w.write(&bad).unwrap();
    assert!(matches!(
        SeqModel::<f64>::load(&bad),
        Err(Error::ModelFile { .. })
    ));
}

/// A torch-named state_dict (`lstm.*`, `fc.*`) of the model's shapes, values from `rng`.
fn torch_file(m: &SeqModel<f32>, path: &std::path::Path) -> Vec<DMatrix<f32>> {
    let mut w = TensorWriter::new();
    let mut rng = Rng::seed_from(9);
    let mut values = Vec::new();
    m.visit(&mut |name, p| {
        let theirs = name
            .replacen("rnn.", "lstm.", 1)
            .replacen("head.", "fc.", 1);
        let v = Init::Uniform { bound: 0.5 }
            .matrix::<f32>(p.value.nrows(), p.value.ncols(), &mut rng)
            .unwrap();
        w.matrix(&theirs, &v, p.is_vector());
        values.push(v);
    });
    w.write(path).unwrap();
    values
}

#[test]
fn pytorch_names_map_and_missing_names_say_what_is_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torch.safetensors");
    let mut m: SeqModel<f32> = model(CellKind::Lstm, 2, 4);
    let want = torch_file(&m, &path);
    let file = TensorFile::open(&path).unwrap();
    // Without a map: the error names the file, the wanted name, the closest and the map.
    let err = file.load_module(&mut m).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, nn_core::Error::MissingTensor { name, .. } if name == "rnn.weight_ih_l0")
    );
    assert!(text.contains("torch.safetensors"), "{text}");
    assert!(text.contains("`lstm.weight_ih_l0`"), "{text}");
    assert!(
        text.contains(r#"rename_prefixes(&[("rnn.", "lstm.")])"#),
        "{text}"
    );
    file.load_module_with(
        &mut m,
        rename_prefixes(&[("rnn.", "lstm."), ("head.", "fc.")]),
    )
    .unwrap();
    assert_eq!(param_values(&m), want);
    // A closure works as well.
    let mut n: SeqModel<f32> = model(CellKind::Lstm, 2, 5);
    file.load_module_with(&mut n, |ours| {
        ours.replacen("rnn.", "lstm.", 1)
            .replacen("head.", "fc.", 1)
    })
    .unwrap();
    assert_eq!(param_values(&n), want);

    // The layer's loader on a whole model's state_dict: the hint names the prefix.
    let ours = dir.path().join("ours.safetensors");
    m.save(&ours, &[]).unwrap();
    let mut layer = m.rnn.clone();
    let err = layer.load_safetensors(&ours).unwrap_err().to_string();
    assert!(err.contains("`weight_ih_l0` is missing from"), "{err}");
    assert!(err.contains("`rnn.weight_ih_l0`"), "{err}");
    assert!(err.contains(r#"rename_prefixes(&[("", "rnn.")])"#), "{err}");
    layer
        .load_safetensors_with(&ours, rename_prefixes(&[("", "rnn.")]))
        .unwrap();
    assert_eq!(param_values(&layer), param_values(&m.rnn));
}

#[test]
fn step_gives_the_forward_logits_bit_for_bit_and_a_warm_step_allocates_nothing() {
    let (t, b) = (5, 3);
    for cell in [
        CellKind::Rnn(Nonlinearity::Tanh),
        CellKind::Lstm,
        CellKind::Gru,
    ] {
        let m: SeqModel<f32> = model(cell, 2, 6);
        let x = Init::Normal { std: 1.0 }
            .matrix::<f32>(3, t * b, &mut Rng::seed_from(1))
            .unwrap();
        let mut ws = SeqWorkspace::new();
        m.forward(&x, b, None, false, &mut ws).unwrap();
        let mut state = m.rnn.zero_state(b);
        let mut scratch = SeqStepScratch::new();
        for s in 0..t {
            let logits = m
                .step(x.columns(s * b, b), &mut state, &mut scratch)
                .unwrap();
            let want = ws.logits().columns(s * b, b);
            let same = logits
                .iter()
                .zip(want.iter())
                .all(|(a, w)| a.to_bits() == w.to_bits());
            assert!(same, "{cell:?} step {s}");
        }
        assert_eq!(state.h, ws.final_state().h);
        let n = allocations(|| {
            m.step(x.columns(0, b), &mut state, &mut scratch).unwrap();
        });
        assert_eq!(n, 0, "{cell:?}");
    }
    let bi = RecurrentConfig::new(CellKind::Gru, 3, 5).with_bidirectional(true);
    let m: SeqModel<f32> = SeqModelConfig::new(bi, 4)
        .init(&mut Rng::seed_from(0))
        .unwrap();
    let mut state = m.rnn.zero_state(1);
    let x = DMatrix::<f32>::zeros(3, 1);
    assert!(matches!(
        core(m.step(&x, &mut state, &mut SeqStepScratch::new())),
        nn_core::Error::InvalidConfig(_)
    ));
}

#[test]
fn step_mse_is_the_hand_written_loop() {
    let (t, b) = (4, 2);
    let mut m: SeqModel<f64> = model(CellKind::Lstm, 1, 7);
    let mut hand = m.clone();
    let mut rng = Rng::seed_from(3);
    let x = Init::Normal { std: 1.0 }
        .matrix::<f64>(3, t * b, &mut rng)
        .unwrap();
    let y = Init::Normal { std: 1.0 }
        .matrix::<f64>(4, t * b, &mut rng)
        .unwrap();
    m.zero_grad();
    let mut ws = SeqWorkspace::new();
    let l = m
        .forward_backward(&x, b, None, Target::StepMse(&y), &mut ws)
        .unwrap();
    assert_eq!(
        m.loss(&x, b, None, Target::StepMse(&y), &mut ws).unwrap(),
        l
    );

    hand.zero_grad();
    let mut cache = nn_recurrent::RecurrentCache::new();
    hand.rnn.forward(&x, b, None, &mut cache).unwrap();
    let out = cache.output().clone();
    let pred = hand.head.forward(&out).unwrap();
    let (want, d_pred) = loss::mse_with_grad(&pred, &y).unwrap();
    let d_out = hand.head.backward(&out, &d_pred).unwrap();
    hand.rnn
        .backward(&x, &mut cache, &d_out, None, None)
        .unwrap();
    assert_eq!(l, want);
    for (a, h) in param_grads(&m).iter().zip(param_grads(&hand).iter()) {
        assert!((a - h).amax() <= 1e-14 * (1.0 + h.amax()));
    }
    // Targets of the last-step shape are refused.
    let short = DMatrix::<f64>::zeros(4, b);
    assert!(matches!(
        core(m.forward_backward(&x, b, None, Target::StepMse(&short), &mut ws)),
        nn_core::Error::ShapeMismatch { .. }
    ));
}

#[test]
fn the_trainer_learns_a_per_step_forecast_in_full_and_truncated_windows() {
    for bptt in [Bptt::Full, Bptt::Truncated { window: 3 }] {
        let rnn = RecurrentConfig::new(CellKind::Gru, 1, 8);
        let mut rng = Rng::seed_from(0);
        let m: SeqModel<f32> = SeqModelConfig::new(rnn, 1).init(&mut rng).unwrap();
        let config = TrainerConfig::new(Objective::StepMse).with_bptt(bptt);
        let optimizer = Optimizer::new(AdamConfig::new(0.02)).unwrap();
        let mut trainer = Trainer::new(m, optimizer, rng, config).unwrap();
        let (t, b) = (8, 4);
        let mut source = batch_fn(move |_, rng: &mut Rng, batch: &mut Batch<f32>| {
            let phase: Vec<f32> = (0..b).map(|_| rng.below(100) as f32 * 0.1).collect();
            let wave = |s: usize, j: usize| (0.5 * s as f32 + phase[j]).sin();
            batch.x = DMatrix::from_fn(1, t * b, |_, c| wave(c / b, c % b));
            batch.batch = b;
            batch.targets =
                Targets::Values(DMatrix::from_fn(1, t * b, |_, c| wave(c / b + 1, c % b)));
            Ok(())
        });
        let report = trainer.run(80, &mut source, None, &mut |_| {}).unwrap();
        let first = report.losses[0];
        let last = report.losses[75..].iter().sum::<f64>() / 5.0;
        assert!(last < 0.2 * first, "{bptt:?}: {first} -> {last}");
        // Last-step-shaped targets are refused before any update.
        let mut bad = batch_fn(move |_, _: &mut Rng, batch: &mut Batch<f32>| {
            batch.x = DMatrix::zeros(1, t * b);
            batch.batch = b;
            batch.targets = Targets::Values(DMatrix::zeros(1, b));
            Ok(())
        });
        let before = param_values(&trainer.model);
        assert!(matches!(
            core(trainer.train_step(&mut bad)),
            nn_core::Error::ShapeMismatch { .. }
        ));
        assert_eq!(param_values(&trainer.model), before);
    }
}
