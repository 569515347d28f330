//! A SeqModel with a token embedding (`embed.weight`) and targets with IGNORE_INDEX: gradients
//! against central differences, the same bits as the dense path fed the gathered rows, the
//! forward-only and streaming passes, model files, sampling, and typed errors.

use nalgebra::DMatrix;
use nn_core::loss::IGNORE_INDEX;
use nn_core::{Module, Rng, gradcheck};
use nn_recurrent::{CellKind, InferScratch, RecurrentConfig};
use nn_testutil::{CountingAlloc, allocations};
use nn_train::{
    EmbeddingConfig, Error, SampleConfig, SeqModel, SeqModelConfig, SeqStepScratch, SeqWorkspace,
    Target,
};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const V: usize = 6;
const E: usize = 4;
const H: usize = 5;
const T: usize = 4;
const B: usize = 3;

fn config(cell: CellKind, layers: usize) -> SeqModelConfig {
    SeqModelConfig::new(RecurrentConfig::new(cell, E, H).with_num_layers(layers), V)
        .with_embedding(EmbeddingConfig::new(V, E))
}

fn ids() -> Vec<usize> {
    (0..T * B).map(|i| (i * 5 + 1) % V).collect()
}

fn core(e: Error) -> nn_core::Error {
    match e {
        Error::Core(c) => c,
        other => panic!("{other}"),
    }
}

#[test]
fn gradients_of_every_parameter_including_the_embedding() {
    let ids = ids();
    let mut targets: Vec<usize> = ids.iter().map(|&i| (i + 1) % V).collect();
    targets[1] = IGNORE_INDEX;
    targets[7] = IGNORE_INDEX;
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let mut model: SeqModel<f64> = config(cell, 2).init(&mut Rng::seed_from(3)).unwrap();
        let names: Vec<String> = {
            let mut v = Vec::new();
            model.visit(&mut |n, _| v.push(n.to_string()));
            v
        };
        assert_eq!(names[0], "embed.weight");
        assert_eq!(names[1], "rnn.weight_ih_l0");
        let mut ws = SeqWorkspace::new();
        for target in [
            Target::NextToken(&targets),
            Target::LastStepClass(&targets[..B]),
        ] {
            let report = gradcheck::check_params(&mut model, |m| {
                m.forward_backward(&ids, B, None, target, &mut ws)
                    .map_err(core)
            })
            .unwrap();
            assert!(report.max_rel_error <= 1e-6, "{cell:?}: {report:?}");
        }
    }
}

#[test]
fn padding_row_gets_no_gradient_and_ignored_targets_none_either() {
    let cfg = SeqModelConfig {
        embedding: Some(EmbeddingConfig::new(V, E).with_padding_idx(0)),
        ..config(CellKind::Gru, 1)
    };
    let mut model: SeqModel<f64> = cfg.init(&mut Rng::seed_from(5)).unwrap();
    let embed = model.embed.as_ref().unwrap();
    assert!(embed.weight.value.row(0).iter().all(|&v| v == 0.0));
    // Sequence 0 is padding (id 0) from step 2 on, with ignored targets there.
    let mut ids = ids();
    let mut targets: Vec<usize> = ids.iter().map(|&i| (i + 2) % V).collect();
    for t in 2..T {
        ids[t * B] = 0;
        targets[t * B] = IGNORE_INDEX;
    }
    let mut ws = SeqWorkspace::new();
    model.zero_grad();
    let loss = model
        .forward_backward(&ids, B, None, Target::NextToken(&targets), &mut ws)
        .unwrap();
    let embed = model.embed.as_ref().unwrap();
    assert!(embed.weight.grad.row(0).iter().all(|&v| v == 0.0));
    assert!(embed.weight.grad.row(1).iter().any(|&v| v != 0.0));
    // The loss is the mean over the kept positions of the logits' cross-entropy.
    let logits = ws.logits();
    let (mut sum, mut kept) = (0.0, 0);
    for (j, &t) in targets.iter().enumerate() {
        if t != IGNORE_INDEX {
            let col = logits.column(j);
            let m = col.max();
            sum += col.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m - col[t];
            kept += 1;
        }
    }
    assert_eq!(kept, T * B - (T - 2));
    assert!((loss - sum / kept as f64).abs() < 1e-13, "{loss}");
}

#[test]
fn token_input_is_the_dense_path_on_the_gathered_rows_bit_for_bit() {
    let ids = ids();
    let targets: Vec<usize> = ids.iter().map(|&i| (i + 1) % V).collect();
    let mut model: SeqModel<f32> = config(CellKind::Lstm, 2)
        .init(&mut Rng::seed_from(9))
        .unwrap();
    let embed = model.embed.clone().unwrap();
    let x = embed.forward(&ids).unwrap();
    let mut dense = SeqModel::new(model.rnn.clone(), model.head.clone()).unwrap();
    let (mut ws, mut ws_d) = (SeqWorkspace::new(), SeqWorkspace::new());
    model.zero_grad();
    dense.zero_grad();
    let a = model
        .forward_backward(&ids, B, None, Target::NextToken(&targets), &mut ws)
        .unwrap();
    let b = dense
        .forward_backward(&x, B, None, Target::NextToken(&targets), &mut ws_d)
        .unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(ws.logits(), ws_d.logits());
    assert_eq!(model.rnn.weights(1, 0), dense.rnn.weights(1, 0));

    // Forward only: the same logits.
    let mut logits = DMatrix::zeros(0, 0);
    model
        .infer(&ids, B, None, false, &mut InferScratch::new(), &mut logits)
        .unwrap();
    assert_eq!(&logits, ws.logits());

    // Streaming, one step of B ids at a time: the forward's bits.
    let mut state = model.rnn.zero_state(B);
    let mut scratch = SeqStepScratch::new();
    for t in 0..T {
        let step = model
            .step(&ids[t * B..(t + 1) * B], &mut state, &mut scratch)
            .unwrap();
        assert_eq!(
            step,
            &ws.logits().columns(t * B, B).into_owned(),
            "step {t}"
        );
    }
    assert_eq!(&state, ws.final_state());
    // A warm step allocates nothing.
    let n = allocations(|| {
        model.step(&ids[..B], &mut state, &mut scratch).unwrap();
    });
    assert_eq!(n, 0);
}

#[test]
fn bad_input_is_a_typed_error() {
    let model: SeqModel<f64> = config(CellKind::Gru, 1)
        .init(&mut Rng::seed_from(1))
        .unwrap();
    let plain: SeqModel<f64> = SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, V, H), V)
        .init(&mut Rng::seed_from(1))
        .unwrap();
    let mut ws = SeqWorkspace::new();
    let x = DMatrix::<f64>::zeros(E, T * B);
    let ids = ids();
    let kind = |r: nn_train::Result<()>| matches!(r, Err(Error::InputKind { .. }));
    assert!(kind(model.forward(&x, B, None, false, &mut ws)));
    assert!(kind(plain.forward(&ids, B, None, false, &mut ws)));
    let mut state = model.rnn.zero_state(B);
    assert!(kind(
        model
            .step(x.columns(0, B), &mut state, &mut SeqStepScratch::new())
            .map(|_| ())
    ));
    assert!(kind(
        plain
            .step(&ids[..B], &mut state, &mut SeqStepScratch::new())
            .map(|_| ())
    ));
    let mut bad = ids.clone();
    bad[4] = V;
    assert!(matches!(
        model.forward(&bad, B, None, false, &mut ws).map_err(core),
        Err(nn_core::Error::TokenOutOfRange {
            index: 4,
            token: V,
            ..
        })
    ));
    assert!(matches!(
        model
            .forward(&ids[..5], B, None, false, &mut ws)
            .map_err(core),
        Err(nn_core::Error::LengthMismatch { .. })
    ));
    let targets = vec![IGNORE_INDEX; T * B];
    assert!(matches!(
        model
            .loss(&ids, B, None, Target::NextToken(&targets), &mut ws)
            .map_err(core),
        Err(nn_core::Error::AllTargetsIgnored { .. })
    ));
    assert!(matches!(
        model
            .loss(&ids, B, None, Target::NextToken(&targets[1..]), &mut ws)
            .map_err(core),
        Err(nn_core::Error::LengthMismatch { .. })
    ));
    // Settings: padding_idx outside the vocabulary, a dim that is not the layer's input.
    let bad_pad = SeqModelConfig {
        embedding: Some(EmbeddingConfig::new(V, E).with_padding_idx(V)),
        ..config(CellKind::Gru, 1)
    };
    assert!(matches!(
        bad_pad.init::<f64>(&mut Rng::seed_from(0)).map_err(core),
        Err(nn_core::Error::InvalidConfig(_))
    ));
    let bad_dim = SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, E + 1, H), V)
        .with_embedding(EmbeddingConfig::new(V, E));
    assert!(bad_dim.init::<f64>(&mut Rng::seed_from(0)).is_err());
}

#[test]
fn model_files_keep_the_embedding_and_old_configs_their_json() {
    let model: SeqModel<f32> = SeqModelConfig {
        embedding: Some(EmbeddingConfig::new(V, E).with_padding_idx(2)),
        ..config(CellKind::Lstm, 2)
    }
    .init(&mut Rng::seed_from(4))
    .unwrap();
    let json = model.config().to_json();
    assert_eq!(
        json["embedding"],
        serde_json::json!({"vocab": V, "dim": E, "padding_idx": 2})
    );
    let plain = SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, 4, 8), 4);
    assert_eq!(
        plain.to_json().to_string(),
        r#"{"bidirectional":false,"cell":"lstm","hidden":8,"input":4,"layers":1,"output":4}"#
    );
    assert_eq!(SeqModelConfig::from_json(&json).unwrap(), model.config());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    model.save(&path, &[]).unwrap();
    let back = SeqModel::<f32>::load(&path).unwrap();
    assert_eq!(back.config(), model.config());
    assert_eq!(back.embed, model.embed);
    let names = nn_core::tensor_io::TensorFile::open(&path).unwrap();
    assert!(names.contains("embed.weight"));
    assert_eq!(names.shape("embed.weight").unwrap(), &[V, E]);
}

#[test]
fn sampling_feeds_ids_through_the_embedding() {
    let model: SeqModel<f32> = config(CellKind::Gru, 2)
        .init(&mut Rng::seed_from(2))
        .unwrap();
    let greedy = SampleConfig::new().with_temperature(0.0);
    let out = nn_train::sample(&model, &[1, 3], 12, &greedy, &mut Rng::seed_from(0)).unwrap();
    assert_eq!(out.len(), 12);
    // The same chain by SeqModel::step, taking the largest logit each time.
    let mut state = model.rnn.zero_state(1);
    let mut scratch = SeqStepScratch::new();
    model.step(&[1], &mut state, &mut scratch).unwrap();
    let mut token = 3;
    for &want in &out {
        let logits = model.step(&[token], &mut state, &mut scratch).unwrap();
        let (best, _) = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
        assert_eq!(best, want);
        token = best;
    }
    // Seeded draws repeat; ids outside the vocabulary are refused.
    let warm = SampleConfig::new();
    let a = nn_train::sample(&model, &[0], 20, &warm, &mut Rng::seed_from(7)).unwrap();
    let b = nn_train::sample(&model, &[0], 20, &warm, &mut Rng::seed_from(7)).unwrap();
    assert_eq!(a, b);
    assert!(nn_train::sample(&model, &[V], 3, &warm, &mut Rng::seed_from(7)).is_err());
}
