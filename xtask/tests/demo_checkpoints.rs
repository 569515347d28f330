//! The charlm demo's checkpoint paths: a bad `--checkpoint` fails before training, the
//! vocabulary is kept in the checkpoint and a text with another one is refused on resume, and a
//! resumed run's banner shows the optimizer settings in force.

use clap::Parser;
use nn_train::AdamConfig;
use std::path::Path;
use std::process::Command;
use xtask::demo::progress::Budget;
use xtask::demo::{Output, charlm};

/// Runs `f` with a quiet [`Output`]; its result and the text it wrote.
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
        layers: 1,
        seq: 8,
        batch: 4,
        optimizer: AdamConfig::new(0.01).into(),
        budget: Budget {
            steps: Some(steps),
            seconds: None,
        },
        val_every: 2,
        sample: 0,
        checkpoint: Some(dir.join("ckpt.safetensors")),
        checkpoint_every: 2,
        out: dir.to_path_buf(),
        ..charlm::Options::default()
    }
}

#[test]
fn charlm_checks_the_checkpoint_path_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for (path, what) in [
        (dir.to_path_buf(), "a folder"),
        (fifo.clone(), "a FIFO"),
        (dir.join("missing/ckpt.safetensors"), "missing"),
        (Path::new("/dev/null").to_path_buf(), "a character device"),
    ] {
        let out = dir.join("out");
        let options = charlm::Options {
            checkpoint: Some(path.clone()),
            out: out.clone(),
            ..tiny(dir, 2)
        };
        let (result, text) = capture(|out| charlm::run(&options, out));
        let e = result.unwrap_err();
        assert!(
            e.starts_with("--checkpoint ") && e.contains(what) && !e.contains('\n'),
            "{path:?}: {e}"
        );
        // Refused before anything ran or was written.
        assert!(text.is_empty(), "{text}");
        assert!(!out.join("loss.svg").exists());
    }
    // Through the binary: the one-line `error:` and exit 2.
    let exe = env!("CARGO_BIN_EXE_xtask");
    let out = Command::new(exe)
        .args(["demo", "charlm", "--steps", "1", "--checkpoint"])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: --checkpoint ") && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn charlm_stores_its_vocabulary_and_refuses_to_resume_on_another() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body.repeat(40)).unwrap();
        Some(p)
    };
    let first = charlm::Options {
        text: text("a.txt", "the cat sat on the mat. "),
        ..tiny(dir, 2)
    };
    capture(|out| charlm::run(&first, out)).0.unwrap();
    let ckpt = dir.join("ckpt.safetensors");
    let vocab = nn_train::checkpoint::read_metadata(&ckpt, "vocab").unwrap();
    assert_eq!(vocab.as_deref(), Some(" .acehmnost"));

    for (name, body) in [
        // The same number of characters (11), one of them different.
        ("same_size.txt", "the cat sat on the pat. "),
        // Another number of characters.
        ("bigger.txt", "the dog sat on the mat. "),
    ] {
        let resumed = charlm::Options {
            text: text(name, body),
            resume: true,
            ..tiny(dir, 4)
        };
        let (result, _) = capture(|out| charlm::run(&resumed, out));
        let e = result.unwrap_err();
        assert!(
            e.starts_with("--resume: ") && e.contains("another vocabulary") && !e.contains('\n'),
            "{name}: {e}"
        );
    }
    // The same text resumes.
    let resumed = charlm::Options {
        resume: true,
        budget: Budget {
            steps: Some(4),
            seconds: None,
        },
        ..first
    };
    let (report, _) = capture(|out| charlm::run(&resumed, out));
    assert_eq!(report.unwrap().steps, 4);
}

#[test]
fn charlm_resumed_banner_shows_the_saved_lr_in_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    capture(|out| charlm::run(&tiny(dir, 2), out)).0.unwrap();
    let resumed = charlm::Options {
        optimizer: AdamConfig::new(0.5).into(),
        resume: true,
        ..tiny(dir, 4)
    };
    let (result, text) = capture(|out| charlm::run(&resumed, out));
    assert_eq!(result.unwrap().steps, 4);
    let model_line = text.lines().find(|l| l.starts_with("model:")).unwrap();
    assert!(model_line.contains("adam lr 0.01,"), "{model_line}");
    assert!(!model_line.contains("0.5"), "{model_line}");
    assert!(
        text.contains(
            "--lr 0.5 is not used: a resumed run continues with the checkpoint's lr 0.01"
        ),
        "{text}"
    );
    // The run continued with lr 0.01: the same as resuming with the flag left at 0.01.
    let again = tempfile::tempdir().unwrap();
    capture(|out| charlm::run(&tiny(again.path(), 2), out))
        .0
        .unwrap();
    let same = charlm::Options {
        resume: true,
        ..tiny(again.path(), 4)
    };
    let (result, text) = capture(|out| charlm::run(&same, out));
    assert!(!text.contains("is not used"), "{text}");
    assert_eq!(
        std::fs::read(dir.join("ckpt.safetensors")).unwrap(),
        std::fs::read(again.path().join("ckpt.safetensors")).unwrap()
    );
    assert_eq!(result.unwrap().steps, 4);
}

// Generation: `--sample N` reports its speed (a line and a JSON field), and `--resume
// CHECKPOINT --steps 0 --sample N` only generates from the saved model (no training, validation,
// plot or checkpoint write), the text a run that trained to that point sampled.

/// [`tiny`] with two layers and a 40-character sample.
fn tiny_sampling(dir: &Path, steps: u64) -> charlm::Options {
    charlm::Options {
        layers: 2,
        sample: 40,
        ..tiny(dir, steps)
    }
}

#[test]
fn charlm_reports_the_generation_speed_and_generates_from_a_checkpoint_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (report, text) = capture(|out| charlm::run(&tiny_sampling(dir, 3), out));
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
        ..tiny_sampling(dir, 0)
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

/// [`tiny`] with two layers, an embedding of 6 and dropout 0.25.
fn tiny_embedded(dir: &Path, steps: u64) -> charlm::Options {
    charlm::Options {
        layers: 2,
        embed: Some(6),
        dropout: 0.25,
        sample: 30,
        ..tiny(dir, steps)
    }
}

#[test]
fn charlm_with_an_embedding_and_dropout_resumes_bit_for_bit_and_samples() {
    let straight = tempfile::tempdir().unwrap();
    let (report, text) = capture(|out| charlm::run(&tiny_embedded(straight.path(), 4), out));
    let report = report.unwrap();
    assert!(report.val_loss.is_finite() && report.sample.chars().count() == 30);
    assert!(
        text.contains("embedding ") && text.contains("(dropout 0.25 between layers)"),
        "{text}"
    );
    let ckpt = |dir: &Path| dir.join("ckpt.safetensors");
    let file = nn_core::tensor_io::TensorFile::open(ckpt(straight.path())).unwrap();
    assert_eq!(file.shape("embed.weight").unwrap()[1], 6);

    // Two steps, then two more from the checkpoint: the same file, byte for byte.
    let split = tempfile::tempdir().unwrap();
    capture(|out| charlm::run(&tiny_embedded(split.path(), 2), out))
        .0
        .unwrap();
    let resumed = charlm::Options {
        resume: true,
        ..tiny_embedded(split.path(), 4)
    };
    let (again, _) = capture(|out| charlm::run(&resumed, out));
    let again = again.unwrap();
    assert_eq!(again.sample, report.sample);
    assert_eq!(again.val_loss, report.val_loss);
    assert_eq!(
        std::fs::read(ckpt(split.path())).unwrap(),
        std::fs::read(ckpt(straight.path())).unwrap()
    );

    // Generation only from the checkpoint, and a resume with another --embed is refused.
    let only = charlm::Options {
        resume: true,
        ..tiny_embedded(straight.path(), 0)
    };
    let (gen_only, _) = capture(|out| charlm::run(&only, out));
    assert_eq!(gen_only.unwrap().sample, report.sample);
    let other = charlm::Options {
        embed: Some(5),
        ..only
    };
    let e = capture(|out| charlm::run(&other, out)).0.unwrap_err();
    assert!(
        e.starts_with("--resume: ") && e.contains("embedding"),
        "{e}"
    );
}

#[test]
fn charlm_dropout_needs_stacked_layers_and_a_probability() {
    let tmp = tempfile::tempdir().unwrap();
    let one_layer = charlm::Options {
        dropout: 0.5,
        ..tiny(tmp.path(), 1)
    };
    let e = capture(|out| charlm::run(&one_layer, out)).0.unwrap_err();
    assert!(e.contains("--layers 2"), "{e}");
    for p in ["1", "-0.1", "nan"] {
        assert!(
            charlm::Args::try_parse_from(["charlm", "--dropout", p]).is_err(),
            "{p}"
        );
    }
    assert!(charlm::Args::try_parse_from(["charlm", "--embed", "0"]).is_err());
    let o: charlm::Options = charlm::Args::parse_from(["charlm"]).into();
    assert_eq!((o.embed, o.dropout), (None, 0.0));
}
