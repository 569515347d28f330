//! Checkpoints that know what they hold: damaged data is refused, the same state gives the same
//! bytes, a carried LSTM state is whole, a model of another shape is named as such, and the
//! caller's own metadata (a vocabulary) goes in and comes back.

mod common;

use common::next_token_batch;
use nn_core::Rng;
use nn_core::tensor_io::TensorFile;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_testutil::param_bits;
use nn_train::checkpoint::{CheckpointParts, read_metadata, save, user_metadata};
use nn_train::{
    AdamConfig, Batch, Bptt, Error, Objective, Optimizer, SeqModel, SeqModelConfig, Trainer,
    TrainerConfig, batch_fn,
};

const TEXT: [usize; 7] = [0, 1, 2, 3, 4, 2, 1];

fn trainer(cell: CellKind, hidden: usize, seed: u64) -> Trainer<f32> {
    let config = SeqModelConfig::new(RecurrentConfig::new(cell, 5, hidden), 5);
    let model: SeqModel<f32> = config.init(&mut Rng::seed_from(seed)).unwrap();
    let opt = Optimizer::new(AdamConfig::new(0.02)).unwrap();
    let tc = TrainerConfig::new(Objective::NextToken)
        .with_bptt(Bptt::Truncated { window: 3 })
        .with_carry_state(true);
    Trainer::new(model, opt, Rng::seed_from(seed + 100), tc).unwrap()
}

/// A trainer after `n` steps (so it carries a state).
fn trained(cell: CellKind, hidden: usize, n: u64) -> Trainer<f32> {
    let mut t = trainer(cell, hidden, 1);
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
        next_token_batch(&TEXT, 5, 6, 2, rng, b);
        Ok(())
    });
    t.run(n, &mut source, None, &mut |_| {}).unwrap();
    t
}

#[test]
fn a_checksum_over_the_tensor_data_catches_every_single_bit_flip() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.safetensors");
    trained(CellKind::Lstm, 4, 2)
        .save_checkpoint(&path)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data = 8 + n..bytes.len();
    let mut fresh = trainer(CellKind::Lstm, 4, 9);
    let before = param_bits(&fresh.model);
    let mut flips = 0;
    // Every bit of the first and last 64 bytes, and one bit in every byte between.
    for byte in data.clone() {
        let bits = if byte < data.start + 64 || byte >= data.end - 64 {
            0..8
        } else {
            (byte % 8)..(byte % 8 + 1)
        };
        for bit in bits {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << bit;
            let err = match TensorFile::from_bytes(flipped, &path) {
                Ok(file) => fresh.load_checkpoint_file(&file).unwrap_err(),
                Err(e) => Error::Core(e),
            };
            assert!(
                matches!(&err, Error::Core(nn_core::Error::Checksum { path: p, .. }) if p == &path),
                "byte {byte} bit {bit}: {err}"
            );
            assert!(err.to_string().contains("c.safetensors"));
            flips += 1;
        }
    }
    assert!(flips > 1000, "{flips}");
    assert_eq!(param_bits(&fresh.model), before);
    assert_eq!(fresh.step(), 0);
}

#[test]
fn checkpoint_metadata_is_sorted_so_the_same_state_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let t = trained(CellKind::Gru, 4, 3);
    t.save_checkpoint_with(&a, &[("x", "1"), ("vocab", "abc")])
        .unwrap();
    t.save_checkpoint_with(&b, &[("vocab", "abc"), ("x", "1")])
        .unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    // The same state restored elsewhere saves the same bytes again.
    let mut copy = trainer(CellKind::Gru, 4, 5);
    copy.load_checkpoint(&a).unwrap();
    copy.save_checkpoint_with(&b, &[("vocab", "abc"), ("x", "1")])
        .unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
}

#[test]
fn a_missing_state_c_for_an_lstm_carrying_state_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.safetensors");
    let t = trained(CellKind::Lstm, 4, 2);
    let state = t.carried_state().unwrap();
    save(
        &path,
        &CheckpointParts {
            model: &t.model,
            model_config: t.model.config().to_json(),
            optimizer: &t.optimizer,
            step: t.step(),
            rng: &t.rng,
            extra: vec![("state.h", &state.h)],
        },
    )
    .unwrap();
    let mut fresh = trainer(CellKind::Lstm, 4, 9);
    let before = param_bits(&fresh.model);
    let err = fresh.load_checkpoint(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Core(nn_core::Error::MissingTensor { name, .. }) if name == "state.c"),
        "{err}"
    );
    assert_eq!(param_bits(&fresh.model), before);
    assert!(fresh.carried_state().is_none());
    // With it, the state comes back whole.
    t.save_checkpoint(&path).unwrap();
    fresh.load_checkpoint(&path).unwrap();
    assert_eq!(fresh.carried_state(), t.carried_state());
}

#[test]
fn a_model_shape_mismatch_names_the_setting_not_a_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.safetensors");
    trained(CellKind::Lstm, 8, 2)
        .save_checkpoint(&path)
        .unwrap();
    let mut other = trainer(CellKind::Lstm, 9, 1);
    let err = other.load_checkpoint(&path).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::CheckpointMismatch {
                what: "model config",
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("the checkpoint has hidden 8, this run has hidden 9"),
        "{msg}"
    );
    assert!(!msg.contains("state.h"), "{msg}");
    // Several settings differ: each is named, the equal ones are not.
    let mut gru = trainer(CellKind::Gru, 9, 1);
    let msg = gru.load_checkpoint(&path).unwrap_err().to_string();
    assert!(
        msg.contains("the checkpoint has cell lstm, hidden 8, this run has cell gru, hidden 9"),
        "{msg}"
    );
    assert!(!msg.contains("input"), "{msg}");
}

#[test]
fn user_metadata_is_saved_with_the_checkpoint_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.safetensors");
    let t = trained(CellKind::Gru, 4, 1);
    let vocab = "\n\t \"abc\\é→";
    t.save_checkpoint_with(&path, &[("vocab", vocab), ("format", "mine")])
        .unwrap();
    assert_eq!(
        read_metadata(&path, "vocab").unwrap().as_deref(),
        Some(vocab)
    );
    // A key of the checkpoint's own does not clash with the caller's.
    assert_eq!(
        read_metadata(&path, "format").unwrap().as_deref(),
        Some("mine")
    );
    assert_eq!(read_metadata(&path, "missing").unwrap(), None);
    let file = TensorFile::open(&path).unwrap();
    assert_eq!(user_metadata(&file, "vocab"), Some(vocab));
    assert_eq!(file.metadata("format"), Some(nn_train::checkpoint::FORMAT));
    let mut fresh = trainer(CellKind::Gru, 4, 3);
    fresh.load_checkpoint_file(&file).unwrap();
    assert_eq!(param_bits(&fresh.model), param_bits(&t.model));
    assert!(read_metadata(tmp.path().join("none"), "vocab").is_err());
}
