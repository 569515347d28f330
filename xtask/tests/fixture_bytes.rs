//! The fixture runner on hostile bytes: metadata declaring sizes the file cannot hold is refused
//! before anything is allocated from them (a regression test for what fuzzing looks for).

use serde_json::Value;
use std::path::Path;

/// `file` with its `case` metadata changed by `edit`, header re-serialized (tensor offsets are
/// relative to the data, so only the length prefix changes).
fn with_case(file: &str, edit: impl Fn(&mut Value)) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(file);
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = header["__metadata__"].as_object_mut().unwrap();
    let mut case: Value = serde_json::from_str(meta["case"].as_str().unwrap()).unwrap();
    edit(&mut case);
    meta.insert("case".into(), Value::String(case.to_string()));
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

#[test]
fn unchanged_fixture_still_passes_through_run_bytes() {
    let bytes = with_case("rnn_basic.safetensors", |_| {});
    let err = xtask::fixtures::run_bytes(bytes).unwrap();
    assert!(err <= xtask::fixtures::TOLERANCE);
}

#[test]
fn huge_metadata_sizes_are_refused_before_allocating() {
    let huge = 1u64 << 40;
    for (file, key) in [
        ("rnn_basic.safetensors", "hidden"),
        ("lstm_basic.safetensors", "input"),
        ("gru_basic.safetensors", "steps"),
        ("lstm_stacked_bidir.safetensors", "layers"),
        ("train_gru_adam.safetensors", "vocab"),
        ("train_lstm_sgd.safetensors", "optimizer_steps"),
        ("dense_softmax_ce.safetensors", "output"),
    ] {
        for value in [huge, u64::MAX] {
            let bytes = with_case(file, |c| c[key] = value.into());
            let err = xtask::fixtures::run_bytes(bytes).unwrap_err();
            assert!(err.contains("do not fit"), "{file} {key}={value}: {err}");
        }
    }
    // Zero sizes are errors too, not panics.
    for (file, key) in [
        ("rnn_basic.safetensors", "batch"),
        ("train_lstm_sgd.safetensors", "steps"),
    ] {
        assert!(xtask::fixtures::run_bytes(with_case(file, |c| c[key] = 0.into())).is_err());
    }
}
