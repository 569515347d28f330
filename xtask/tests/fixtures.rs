//! The PyTorch fixtures copied into `tests/fixtures/` agree with our code to 1e-9, and a garbage
//! file is rejected with a clear error.

use std::path::Path;
use xtask::fixtures::{check_dir, run_file};

fn fixture(name: &str) -> std::path::PathBuf {
    xtask::project_root().join("tests/fixtures").join(name)
}

#[test]
fn dense_fixture_agrees_with_pytorch() {
    let err = run_file(&fixture("dense_softmax_ce.safetensors")).unwrap();
    assert!(err <= 1e-9, "max error {err}");
}

#[test]
fn embedding_fixture_agrees_with_pytorch() {
    let err = run_file(&fixture("embedding_pad.safetensors")).unwrap();
    assert!(err <= 1e-9, "max error {err}");
}

#[test]
fn a_fixtures_lengths_are_used_not_run_at_full_length() {
    // lstm_basic with `lengths` added to its `case` metadata (the header is JSON after an
    // 8-byte length; tensor offsets count from the end of the header, so they stay valid).
    let bytes = std::fs::read(fixture("lstm_basic.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = &mut header["__metadata__"]["case"];
    let mut case: serde_json::Value = serde_json::from_str(meta.as_str().unwrap()).unwrap();
    let batch = case["batch"].as_u64().unwrap() as usize;
    case["lengths"] = serde_json::json!(vec![1; batch]);
    *meta = serde_json::Value::String(case.to_string());
    let header = serde_json::to_vec(&header).unwrap();
    let mut varlen = (header.len() as u64).to_le_bytes().to_vec();
    varlen.extend_from_slice(&header);
    varlen.extend_from_slice(&bytes[8 + n..]);
    // Without `lengths` the same bytes pass; with lengths of 1 the outputs past step 0 are
    // 0, not PyTorch's full-length ones.
    assert!(run_file(&fixture("lstm_basic.safetensors")).unwrap() <= 1e-9);
    let err = xtask::fixtures::run_bytes(varlen).unwrap();
    assert!(err > 0.1, "max error {err}");
}

#[test]
fn garbage_file_is_a_clear_error() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let path = dir.join("junk.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!").unwrap();
    let err = run_file(&path).unwrap_err();
    assert!(err.contains("not a valid tensor file"), "{err}");
    let results = check_dir(dir).unwrap();
    assert_eq!(results.len(), 1);
    assert!(!results[0].passed());
    assert!(check_dir(Path::new("/no/such/folder")).is_err());
}

#[test]
fn every_recurrent_fixture_agrees_with_pytorch() {
    let dir = xtask::project_root().join("tests/fixtures");
    let mut checked = Vec::new();
    for result in check_dir(&dir).unwrap() {
        let case = xtask::fixtures::Case::open(&result.path).unwrap();
        if case.str("kind") != Ok("recurrent") {
            continue;
        }
        let name = result
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match result.result {
            Ok(err) => assert!(err <= 1e-9, "{name}: max error {err}"),
            Err(why) => panic!("{name}: {why}"),
        }
        checked.push(name);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "gru_basic.safetensors",
            "gru_stacked_bidir.safetensors",
            "gru_varlen_stacked_bidir.safetensors",
            "lstm_basic.safetensors",
            "lstm_stacked_bidir.safetensors",
            "lstm_varlen.safetensors",
            "rnn_basic.safetensors",
            "rnn_relu.safetensors",
            "rnn_stacked_bidir.safetensors",
        ]
    );
}

#[test]
fn train_fixtures_agree_with_pytorch() {
    for name in [
        "train_lstm_sgd.safetensors",
        "train_gru_adam.safetensors",
        // Embedding → LSTM on packed variable-length token batches, loss over real positions.
        "train_tokens_lstm_adam.safetensors",
    ] {
        let err = run_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(err <= 1e-9, "{name}: max error {err}");
    }
}
