//! The charlm demo's generation: `--sample N` reports its speed (a line and a JSON field), and
//! `--resume CHECKPOINT --steps 0 --sample N` only generates from the saved model (no training,
//! validation, plot or checkpoint write), the text a run that trained to that point sampled.

use clap::Parser;
use nn_train::AdamConfig;
use std::path::Path;
use xtask::demo::progress::Budget;
use xtask::demo::{Output, charlm};

fn capture<R>(f: impl FnOnce(&mut Output<'_>) -> Result<R, String>) -> (Result<R, String>, String) {
    let mut buf = Vec::new();
    let result = {
        let mut out = Output {
            text: &mut buf,
            progress: false,
        };
        f(&mut out)
    };
    (result, String::from_utf8(buf).unwrap())
}

fn tiny(dir: &Path, steps: u64) -> charlm::Options {
    charlm::Options {
        hidden: 8,
        layers: 2,
        seq: 8,
        batch: 4,
        optimizer: AdamConfig::new(0.01).into(),
        budget: Budget {
            steps: Some(steps),
            seconds: None,
        },
        val_every: 2,
        sample: 40,
        checkpoint: Some(dir.join("ckpt.safetensors")),
        checkpoint_every: 2,
        out: dir.to_path_buf(),
        ..charlm::Options::default()
    }
}

#[test]
fn charlm_reports_the_generation_speed_and_generates_from_a_checkpoint_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (report, text) = capture(|out| charlm::run(&tiny(dir, 3), out));
    let report = report.unwrap();
    assert!(report.trained);
    assert!(report.sample_tokens_per_s.is_some_and(|s| s > 0.0));
    assert!(text.contains("generation: 40 characters in "), "{text}");
    let json = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert!(v["sample_tokens_per_s"].as_f64().unwrap() > 0.0, "{json}");

    // Generation only: the checkpoint is read, not written; no validation or plot.
    let ckpt = dir.join("ckpt.safetensors");
    let before = std::fs::read(&ckpt).unwrap();
    std::fs::remove_file(dir.join("loss.svg")).unwrap();
    let only = charlm::Options {
        resume: true,
        ..tiny(dir, 0)
    };
    let (again, text) = capture(|out| charlm::run(&only, out));
    let again = again.unwrap();
    assert!(!again.trained);
    assert_eq!(again.steps, 3);
    assert_eq!(
        again.sample, report.sample,
        "the trained model's own sample"
    );
    assert!(again.sample_tokens_per_s.is_some_and(|s| s > 0.0));
    assert!(again.val_loss.is_nan());
    assert!(text.contains("generation only"), "{text}");
    assert!(!text.contains("validation (estimate)"), "{text}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), before);
    assert!(!dir.join("loss.svg").exists());
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(v["val_loss"].is_null() && v["sample_tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn resume_takes_the_checkpoint_path() {
    let o: charlm::Options =
        charlm::Args::parse_from(["charlm", "--resume", "m.safetensors", "--steps", "0"]).into();
    assert!(o.resume);
    assert_eq!(o.checkpoint.as_deref(), Some(Path::new("m.safetensors")));
    assert_eq!(o.budget.steps, Some(0));
    // `--resume` alone keeps the --checkpoint form.
    let o: charlm::Options =
        charlm::Args::parse_from(["charlm", "--checkpoint", "c.st", "--resume"]).into();
    assert!(o.resume && o.checkpoint.as_deref() == Some(Path::new("c.st")));
    // Two different files are refused before anything runs.
    let o: charlm::Options =
        charlm::Args::parse_from(["charlm", "--resume", "a.st", "--checkpoint", "b.st"]).into();
    let (r, _) = capture(|out| charlm::run(&o, out));
    assert!(r.unwrap_err().contains("name different files"));
}
