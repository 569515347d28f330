//! Bounded inputs: sizes that would take tens of gigabytes (a fixture's metadata, a demo's
//! flags or text), a `--text` that is no regular file or too large, and a closed stdout are
//! each a one-line error (or a quiet exit), fast, never an abort, a panic or a machine out of
//! memory.
//!
//! The binary runs under `ulimit -v` (2 GiB of address space) and a time limit, so a size that
//! was not refused fails the test by its allocation failing instead of taking the machine's
//! memory, and a read that never ends fails it by the clock.

use nn_core::Rng;
use nn_core::tensor_io::TensorWriter;
use nn_recurrent::{CellKind, RecurrentConfig};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_xtask");

/// Runs the binary with `args` under 2 GiB of address space; kills it after 60 s (a failure).
fn run_limited(args: &[&str]) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 2097152 && exec "$0" "$@""#)
        .arg(EXE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("xtask {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Exit status 2 and one line `error: …` on stderr, containing `want`.
fn assert_one_line_error(out: &Output, args: &[&str], want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.lines().count() == 1 && stderr.contains(want),
        "{args:?}: {stderr}"
    );
}

/// A fixture file of `case` metadata and a 2 MB padding tensor, so the metadata's sizes pass
/// the check that each declared tensor could be in the file.
fn padded_case(case: serde_json::Value) -> Vec<u8> {
    let mut w = TensorWriter::new();
    w.metadata("case", &case.to_string());
    let zeros: Vec<f32> = std::iter::repeat_n(0.0, 500_000).collect();
    w.values("padding", &[500_000], &zeros);
    w.to_bytes().unwrap()
}

/// A complete `recurrent` fixture (every tensor the runner reads before its forward pass) of
/// 4000 stacked 1-unit LSTM layers over `T·B = 100 000` columns: a 2 MB file whose forward
/// cache would take about 22 GB.
fn deep_lstm_fixture() -> Vec<u8> {
    let (layers, steps, batch) = (4000, 10_000, 10);
    let config = RecurrentConfig::new(CellKind::Lstm, 1, 1).with_num_layers(layers);
    let layer = config.init::<f64>(&mut Rng::seed_from(0)).unwrap();
    let case = json!({
        "kind": "recurrent", "cell": "lstm", "input": 1, "hidden": 1, "layers": layers,
        "bidirectional": false, "batch": batch, "steps": steps,
    });
    let mut w = TensorWriter::new();
    w.metadata("case", &case.to_string());
    w.module(&layer);
    w.values::<f32>("input", &[steps, batch, 1], &vec![0.5; steps * batch]);
    for state in ["h0", "c0"] {
        w.values::<f32>(state, &[layers, batch, 1], &vec![0.0; layers * batch]);
    }
    w.to_bytes().unwrap()
}

#[test]
fn fixture_runner_memory_is_bounded_by_the_file_size() {
    // In the library: each kind's products over the budget, with sizes that each fit.
    let cases = [
        // Dense: logits O·N = 9·10^10 values.
        json!({"kind": "dense_softmax_ce", "input": 1, "output": 300_000, "batch": 300_000}),
        // Recurrent: cache L·G·H·T·B = 4000 · 8 · 100 000 values.
        json!({"kind": "recurrent", "cell": "lstm", "input": 1, "hidden": 1, "layers": 4000,
               "bidirectional": false, "batch": 10, "steps": 10_000}),
        // Train: head outputs V·T·B = 50 000 · 100 000 values.
        json!({"kind": "train", "cell": "gru", "input": 1, "hidden": 1, "vocab": 50_000,
               "batch": 10, "steps": 10_000, "optimizer_steps": 1, "optimizer": "sgd",
               "optimizer_config": {"lr": 0.1}, "clip_norm": 1.0}),
    ];
    for case in cases {
        let started = Instant::now();
        let err = xtask::fixtures::run_bytes(padded_case(case.clone())).unwrap_err();
        assert!(
            err.contains("memory budget") && !err.contains('\n'),
            "{case}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{case}");
    }
    // The binary, on a complete fixture whose forward pass would allocate ~22 GB, in 2 GiB of
    // address space: refused by the budget, not by an allocation failing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deep.safetensors"), deep_lstm_fixture()).unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let out = run_limited(&["check-fixtures", dir_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  deep.safetensors  the metadata's sizes need")
            && stdout.contains("recurrent cache"),
        "{stdout}"
    );
    // The shared fixtures still pass.
    let shared = xtask::project_root().join("tests/fixtures");
    for r in xtask::fixtures::check_dir(&shared).unwrap() {
        assert!(r.passed(), "{}: {:?}", r.path.display(), r.result);
    }
}

#[test]
fn huge_size_flags_and_vocabularies_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Every char value once: a vocabulary of 1 112 064, whose one-hot batches and head would
    // take tens of GB at the default sizes.
    let every_char: String = (0..=char::MAX as u32).filter_map(char::from_u32).collect();
    let wide = dir.path().join("wide.txt");
    std::fs::write(&wide, every_char.repeat(2)).unwrap();
    let wide = wide.to_str().unwrap();
    let big = "1000000000";
    let huge = "2305843009213693952"; // 2^61
    let cases: Vec<Vec<&str>> = vec![
        vec!["adding", "--batch", big],
        vec!["adding", "--batch", huge],
        vec!["adding", "--len", "100000000"],
        vec!["adding", "--hidden", big],
        vec!["adding", "--hidden", huge],
        vec!["reber", "--batch", big],
        vec!["reber", "--batch", huge],
        vec!["reber", "--hidden", huge],
        vec!["charlm", "--batch", big],
        vec!["charlm", "--batch", huge],
        vec!["charlm", "--hidden", big],
        vec!["charlm", "--layers", big],
        vec!["charlm", "--layers", huge],
        vec!["charlm", "--sample", "1000000000000000"],
        vec!["charlm", "--seq", huge],
        vec!["charlm", "--seq", "18446744073709551615", "--carry"],
        vec!["charlm", "--text", wide],
    ];
    for flags in cases {
        let mut args = vec!["demo"];
        args.extend(&flags);
        args.extend(["--steps", "1"]);
        let started = Instant::now();
        let out = run_limited(&args);
        let want = if flags.contains(&"--seq") {
            "too short"
        } else {
            "memory budget"
        };
        assert_one_line_error(&out, &args, want);
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?}");
    }
}

#[test]
fn text_must_be_a_regular_file_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Sparse: one byte over the limit, without writing 256 MiB.
    let large = dir.path().join("large.txt");
    let f = std::fs::File::create(&large).unwrap();
    f.set_len(xtask::demo::text::MAX_TEXT_BYTES + 1).unwrap();
    drop(f);
    let name = |p: &Path| p.to_str().unwrap().to_string();
    for (path, want) in [
        ("/dev/zero".to_string(), "not a regular file"),
        (name(&fifo), "not a regular file"),
        (name(dir.path()), "not a regular file"),
        (name(&large), "at most 268435456 (256 MiB)"),
    ] {
        let args = ["demo", "charlm", "--text", &path, "--steps", "1"];
        let out = run_limited(&args);
        assert_one_line_error(&out, &args, want);
    }
    let help = Command::new(EXE)
        .args(["demo", "charlm", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("at most 256 MiB"));
}

#[test]
fn closed_stdout_is_not_a_panic() {
    let fixtures = xtask::project_root().join("tests/fixtures");
    let fixtures = fixtures.to_str().unwrap();
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["demo", "charlm", "--help"],
        vec!["demo", "hello", "--steps", "1"],
        vec!["check-fixtures", fixtures],
    ] {
        // The pipe's reading end is closed before the child starts: every write fails.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(EXE)
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(2),
            "{args:?}: {code:?} {stderr}"
        );
        assert!(stderr.lines().count() <= 1, "{args:?}: {stderr}");
    }
}
