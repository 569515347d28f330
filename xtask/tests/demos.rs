//! Every demo at a tiny size, in-process (and a few through the binary): the JSON line is the
//! last line and has its fields, hello predicts `ello` and prints the same for the same seed,
//! checkpoints resume bit for bit, and bad flags, values and files are one-line errors.

use nn_recurrent::{CellKind, Nonlinearity};
use nn_train::AdamConfig;
use serde_json::Value;
use std::process::Command;
use xtask::demo::progress::Budget;
use xtask::demo::{Output, adding_demo, charlm, hello, reber_demo};

/// Runs `f` with a quiet [`Output`] and returns its report and the text it wrote.
fn capture<R>(f: impl FnOnce(&mut Output<'_>) -> Result<R, String>) -> (R, String) {
    let mut buf = Vec::new();
    let report = {
        let mut out = Output {
            text: &mut buf,
            progress: false,
        };
        f(&mut out).unwrap()
    };
    (report, String::from_utf8(buf).unwrap())
}

/// The last line of `text`, parsed as JSON, checked to be demo `name`'s.
fn json_line(text: &str, name: &str) -> Value {
    let last = text.lines().last().unwrap();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["demo"], name);
    v
}

fn steps(n: u64) -> Budget {
    Budget {
        steps: Some(n),
        seconds: None,
    }
}

#[test]
fn hello_learns_ello_and_prints_the_same_for_the_same_seed() {
    let options = hello::Options::default();
    let (report, text) = capture(|out| hello::run(&options, out));
    assert_eq!(report.predicted, "ello");
    assert!(report.loss_after < 0.1 * report.loss_before, "{report:?}");
    let trained = text.split("Trained").nth(1).unwrap();
    for line in [
        "Input: h -> Predicted Next: e",
        "Input: e -> Predicted Next: l",
        "Input: l -> Predicted Next: l",
        "Input: l -> Predicted Next: o",
    ] {
        assert!(trained.contains(line), "{text}");
    }
    assert!(text.contains("Untrained (loss"));
    let v = json_line(&text, "hello");
    assert_eq!(v["predicted"], "ello");
    assert!(v["loss_before"].as_f64().unwrap() > v["loss_after"].as_f64().unwrap());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4);

    let (_, again) = capture(|out| hello::run(&options, out));
    assert_eq!(text, again);
    let other = hello::Options {
        seed: 7,
        ..options.clone()
    };
    let (report, _) = capture(|out| hello::run(&other, out));
    assert_eq!(report.predicted, "ello");
}

fn tiny_charlm(dir: &std::path::Path) -> charlm::Options {
    charlm::Options {
        hidden: 8,
        layers: 1,
        seq: 8,
        batch: 4,
        optimizer: AdamConfig::new(0.01).into(),
        budget: steps(6),
        val_every: 2,
        sample: 40,
        checkpoint: Some(dir.join("ckpt.safetensors")),
        checkpoint_every: 2,
        out: dir.to_path_buf(),
        ..charlm::Options::default()
    }
}

#[test]
fn charlm_tiny_on_the_built_in_corpus_with_checkpoint_and_resume() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let straight = tiny_charlm(&dir.join("straight"));
    let (full, text) = capture(|out| charlm::run(&straight, out));
    let v = json_line(&text, "charlm");
    assert_eq!(v["steps"], 6);
    for key in ["train_s", "tokens_per_s", "train_loss", "val_loss"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert_eq!(full.sample.chars().count(), 40);
    assert!(text.contains("sample (40 characters"));
    let svg = std::fs::read_to_string(&full.plot).unwrap();
    assert!(svg.contains("<svg") && svg.contains("validation"));
    assert!(dir.join("straight/ckpt.safetensors").exists());

    // 4 steps, then resume to 6: the same model as 6 steps straight.
    let first = charlm::Options {
        budget: steps(4),
        ..tiny_charlm(&dir.join("resumed"))
    };
    let (part, _) = capture(|out| charlm::run(&first, out));
    assert_eq!(part.steps, 4);
    let resumed = charlm::Options {
        resume: true,
        ..tiny_charlm(&dir.join("resumed"))
    };
    let (rest, text) = capture(|out| charlm::run(&resumed, out));
    assert!(text.contains("resumed from"), "{text}");
    assert_eq!(rest.steps, 6);
    assert_eq!(rest.val_loss, full.val_loss);
    assert_eq!(rest.sample, full.sample);
}

#[test]
fn charlm_tiny_on_a_file_with_carried_state_and_a_gru() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let path = dir.join("text.txt");
    std::fs::write(&path, "the cat sat on the mat. ".repeat(40)).unwrap();
    let options = charlm::Options {
        text: Some(path),
        cell: CellKind::Gru,
        carry: true,
        checkpoint: None,
        sample: 0,
        ..tiny_charlm(dir)
    };
    let (report, text) = capture(|out| charlm::run(&options, out));
    assert_eq!(report.steps, 6);
    assert!(!text.contains("sample ("));
    assert!(text.contains("vocabulary 11"), "{text}");
    let v = json_line(&text, "charlm");
    assert!(v["val_loss"].as_f64().unwrap() < (11f64).ln() + 0.5);
}

#[test]
fn adding_tiny() {
    let options = adding_demo::Options {
        len: 10,
        hidden: 8,
        batch: 8,
        budget: steps(150),
        ..adding_demo::Options::default()
    };
    let (report, text) = capture(|out| adding_demo::run(&options, out));
    assert_eq!(report.steps, 150);
    let v = json_line(&text, "adding");
    assert_eq!(v["cell"], "lstm");
    assert_eq!(v["len"], 10);
    assert_eq!(v["steps"], 150);
    assert!((v["baseline_mse"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-5);
    assert_eq!(v["solved"], report.solved);
    assert!(v["test_mse"].as_f64().unwrap() > 0.0 && v["train_s"].as_f64().unwrap() > 0.0);

    let rnn = adding_demo::Options {
        cell: CellKind::Rnn(Nonlinearity::Tanh),
        budget: steps(20),
        ..options
    };
    let (_, text) = capture(|out| adding_demo::run(&rnn, out));
    assert_eq!(json_line(&text, "adding")["cell"], "rnn");
}

#[test]
fn reber_tiny() {
    let options = reber_demo::Options {
        hidden: 8,
        budget: steps(60),
        ..reber_demo::Options::default()
    };
    let (report, text) = capture(|out| reber_demo::run(&options, out));
    assert_eq!(report.steps.min(60), report.steps);
    let v = json_line(&text, "reber");
    assert_eq!(v["cell"], "lstm");
    assert_eq!(v["steps"], report.steps);
    let acc = v["test_string_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v.as_object().unwrap().len(), 5);
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn bad_flags_values_and_files_are_one_line_errors() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let cases = [
        "charlm --hidden 0".to_string(),
        "charlm --layers 0".to_string(),
        "charlm --lr -1".to_string(),
        "charlm --cell transformer".to_string(),
        "charlm --optimizer lbfgs".to_string(),
        "charlm --resume".to_string(),
        "charlm --text /nonexistent/file.txt".to_string(),
        format!("charlm --text {}", empty.display()),
        format!("charlm --text {} --seq 100000", empty.display()),
        "charlm --temperature nan".to_string(),
        "adding --len 0".to_string(),
        "adding --len 1".to_string(),
        "adding --hidden 0".to_string(),
        "adding --batch x".to_string(),
        "adding --seconds 0".to_string(),
        "reber --steps 0".to_string(),
        "reber --bogus 1".to_string(),
        "hello --hidden 4".to_string(),
        "hello extra".to_string(),
        "nonsense".to_string(),
    ];
    for case in &cases {
        let e = xtask::demo::command(&args(case)).expect_err(case);
        assert!(!e.is_empty() && !e.contains('\n'), "{case}: {e}");
    }
    let short = dir.join("short.txt");
    std::fs::write(&short, "abcabc").unwrap();
    let e = xtask::demo::command(&args(&format!("charlm --text {}", short.display()))).unwrap_err();
    assert!(e.contains("too short"), "{e}");
}

#[test]
fn the_binary_runs_hello_and_exits_2_on_a_bad_value() {
    let exe = env!("CARGO_BIN_EXE_xtask");
    let out = Command::new(exe).arg("demo").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(json_line(&stdout, "hello")["predicted"], "ello");

    for bad in ["adding --len 0", "charlm --text /nonexistent/file.txt"] {
        let out = Command::new(exe)
            .arg("demo")
            .args(args(bad))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("error: ") && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
    let out = Command::new(exe).args(["demo", "--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("charlm"));
    for name in ["hello", "charlm", "adding", "reber"] {
        let out = Command::new(exe)
            .args(["demo", name, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}");
    }
}
