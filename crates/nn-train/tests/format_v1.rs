//! Files written before the configs moved to serde derives still load: a checkpoint
//! (`data/checkpoint_v1.safetensors`, a 2-layer LSTM 4 → 5 → 4 with AdamW after 3 steps of
//! truncated BPTT with carried state) and the model and optimizer JSON of that format
//! (`data/model_v1.json`, `data/optimizer_v1.json`), all written by the hand-made codecs.
//!
//! The checkpoint is compared with the same run made now: the same seeds and batches give the
//! same model, optimizer, generator and carried state, bit for bit.

mod common;

use common::next_token_batch;
use nn_core::Rng;
use nn_core::tensor_io::TensorFile;
use nn_recurrent::{CellKind, Nonlinearity, RecurrentConfig};
use nn_testutil::param_bits;
use nn_train::{
    AdagradConfig, AdamConfig, Batch, Bptt, Clip, Objective, Optimizer, OptimizerConfig,
    RmsPropConfig, SeqModel, SeqModelConfig, SgdConfig, Trainer, TrainerConfig, batch_fn,
};
use std::path::PathBuf;

const TEXT: [usize; 9] = [0, 1, 2, 3, 2, 1, 0, 3, 1];
const STEPS: usize = 3;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn config() -> SeqModelConfig {
    SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Lstm, 4, 5).with_num_layers(2),
        4,
    )
}

/// AdamW with settings that are not short decimals in binary, to test exactness.
fn optimizer_config() -> AdamConfig {
    AdamConfig::adamw(0.003)
        .with_betas(0.85, 0.995)
        .with_eps(1e-7)
        .with_weight_decay(0.0123)
}

fn trainer(seed: u64) -> Trainer<f32> {
    let model: SeqModel<f32> = config().init(&mut Rng::seed_from(seed)).unwrap();
    let opt = Optimizer::new(optimizer_config()).unwrap();
    let tc = TrainerConfig::new(Objective::NextToken)
        .with_bptt(Bptt::Truncated { window: 3 })
        .with_carry_state(true)
        .with_clip(Clip::Norm(1.0));
    Trainer::new(model, opt, Rng::seed_from(seed + 100), tc).unwrap()
}

fn trained() -> Trainer<f32> {
    let mut t = trainer(5);
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
        next_token_batch(&TEXT, 4, 6, 2, rng, b);
        Ok(())
    });
    t.run(STEPS as u64, &mut source, None, &mut |_| {}).unwrap();
    t
}

/// The optimizer configs of `data/optimizer_v1.json`, in its order.
fn optimizer_configs() -> Vec<OptimizerConfig> {
    vec![
        SgdConfig::new(0.1)
            .with_momentum(0.9)
            .with_nesterov(true)
            .into(),
        AdagradConfig::new(0.05).with_lr_decay(0.001).into(),
        RmsPropConfig::new(0.01)
            .with_momentum(0.5)
            .with_centered(true)
            .into(),
        AdamConfig::new(0.002).into(),
        optimizer_config().into(),
    ]
}

/// Wrote the data files, with the hand-made codecs of the day (run by hand, once, before the
/// serde derives). Run now, it writes the same tensors and metadata (only the header's key
/// order may differ).
#[test]
#[ignore]
fn write_v1_files() {
    trained()
        .save_checkpoint(data("checkpoint_v1.safetensors"))
        .unwrap();
    let model = SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Relu), 3, 2)
            .with_num_layers(2)
            .with_bidirectional(true),
        7,
    );
    std::fs::write(data("model_v1.json"), format!("{}\n", model.to_json())).unwrap();
    let optimizers: Vec<String> = optimizer_configs()
        .iter()
        .map(|c| {
            format!(
                r#"{{"kind":"{}","kwargs":{}}}"#,
                c.kind(),
                c.to_torch_kwargs()
            )
        })
        .collect();
    std::fs::write(
        data("optimizer_v1.json"),
        format!("[\n{}\n]\n", optimizers.join(",\n")),
    )
    .unwrap();
}

#[test]
fn a_checkpoint_of_format_1_loads_bit_for_bit() {
    let want = trained();
    let mut got = trainer(9);
    got.load_checkpoint(data("checkpoint_v1.safetensors"))
        .unwrap();
    assert_eq!(got.step(), STEPS as u64);
    assert_eq!(param_bits(&got.model), param_bits(&want.model));
    assert_eq!(got.optimizer, want.optimizer);
    assert_eq!(got.optimizer.config(), &optimizer_config().into());
    assert_eq!(got.rng, want.rng);
    assert!(got.carried_state().is_some_and(|s| s.c.is_some()));
    assert_eq!(got.carried_state(), want.carried_state());

    // Written now, the file's metadata is the same text.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("now.safetensors");
    want.save_checkpoint(&path).unwrap();
    let (old, new) = (
        TensorFile::open(data("checkpoint_v1.safetensors")).unwrap(),
        TensorFile::open(&path).unwrap(),
    );
    for key in ["format", "dtype", "model", "optimizer"] {
        assert_eq!(old.metadata(key), new.metadata(key), "{key}");
    }
}

#[test]
fn model_json_of_format_1_reads() {
    let text = std::fs::read_to_string(data("model_v1.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let config = SeqModelConfig::from_json(&value).unwrap();
    let want = SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Rnn(Nonlinearity::Relu), 3, 2)
            .with_num_layers(2)
            .with_bidirectional(true),
        7,
    );
    assert_eq!(config, want);
    // Written back, it is the same JSON.
    assert_eq!(config.to_json(), value);
}

#[test]
fn optimizer_json_of_format_1_reads() {
    let text = std::fs::read_to_string(data("optimizer_v1.json")).unwrap();
    let values: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let want = optimizer_configs();
    assert_eq!(values.len(), want.len());
    for (v, want) in values.iter().zip(want) {
        let kind = v["kind"].as_str().unwrap();
        let config = OptimizerConfig::from_torch_kwargs(kind, &v["kwargs"]).unwrap();
        assert_eq!(config, want, "{v}");
        assert_eq!(config.kind(), kind);
        assert_eq!(config.to_torch_kwargs(), v["kwargs"]);
    }
}
