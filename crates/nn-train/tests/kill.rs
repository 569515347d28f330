//! Fault injection: training in a child process that checkpoints after every step is killed
//! with SIGKILL at random moments; after every kill the checkpoint on disk must load, must be
//! exactly the parameters of an uninterrupted run at its step (nothing lost, nothing torn), and
//! training must resume from it. Half the kills train with Adam, half with a centered RMSprop
//! with momentum (three state buffers per parameter), and the resumed optimizer state must equal
//! the uninterrupted run's too.
//!
//! The child is this test binary run again with `--ignored --exact kill_child_trainer` and
//! `NN_KILL_CHILD_DIR` set (`nn_testutil::child_test`); on its own that ignored test checks
//! nothing, and without the variable it fails. `NN_KILLS=N` sets the number of kills (default
//! 60, about 10 s).

mod common;

use common::next_token_batch;
use nn_core::Rng;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_testutil::{child_env, child_test, param_bits};
use nn_train::{
    AdamConfig, Batch, BatchSource, Bptt, Clip, Objective, Optimizer, RmsPropConfig, SeqModel,
    SeqModelConfig, Trainer, TrainerConfig, batch_fn,
};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const TEXT: [usize; 9] = [0, 1, 2, 3, 4, 2, 1, 3, 0];
const CHILD_ENV: &str = "NN_KILL_CHILD_DIR";
/// The optimizer the child trains with: `adam` (when unset) or `rmsprop`.
const OPTIMIZER_ENV: &str = "NN_KILL_OPTIMIZER";
const CHECKPOINT: &str = "ckpt.safetensors";

fn trainer(optimizer: &str) -> Trainer<f32> {
    let config = SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, 5, 16), 5);
    let model: SeqModel<f32> = config.init(&mut Rng::seed_from(11)).unwrap();
    let opt = match optimizer {
        "rmsprop" => Optimizer::new(
            RmsPropConfig::new(0.01)
                .with_centered(true)
                .with_momentum(0.5),
        ),
        _ => Optimizer::new(AdamConfig::new(0.01)),
    }
    .unwrap();
    let tc = TrainerConfig::new(Objective::NextToken)
        .with_bptt(Bptt::Truncated { window: 4 })
        .with_carry_state(true)
        .with_clip(Clip::Norm(1.0));
    Trainer::new(model, opt, Rng::seed_from(12), tc).unwrap()
}

/// Batches drawn from the trainer's (checkpointed) generator, so a resumed run sees the same ones.
fn source() -> impl BatchSource<f32> {
    batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
        next_token_batch(&TEXT, 5, 8, 4, rng, b);
        Ok(())
    })
}

/// The child process: resume from the checkpoint in `NN_KILL_CHILD_DIR` if there is one, then
/// train and checkpoint after every step until killed.
#[test]
#[ignore = "child process of sigkill_at_random_moments_never_loses_the_checkpoint; run by it"]
fn kill_child_trainer() {
    let dir = child_env(
        CHILD_ENV,
        "sigkill_at_random_moments_never_loses_the_checkpoint",
    );
    let path = PathBuf::from(dir).join(CHECKPOINT);
    let optimizer = std::env::var(OPTIMIZER_ENV).unwrap_or_default();
    let mut t = trainer(&optimizer);
    if path.exists() {
        t.load_checkpoint(&path).unwrap();
    }
    let mut src = source();
    for _ in 0..100_000 {
        t.train_step(&mut src).unwrap();
        t.save_checkpoint(&path).unwrap();
    }
}

fn kills() -> usize {
    std::env::var("NN_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .count()
}

#[test]
fn sigkill_at_random_moments_never_loses_the_checkpoint() {
    let n = kills();
    kill_and_resume("adam", n.div_ceil(2), 2024);
    kill_and_resume("rmsprop", n / 2, 2025);
}

/// `n` kills of a child training with `optimizer`, at delays drawn from `seed`.
fn kill_and_resume(optimizer: &str, n: usize, seed: u64) {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let path = dir.join(CHECKPOINT);
    let mut delays = Rng::seed_from(seed);

    // The uninterrupted run, advanced as far as the checkpoints get.
    let mut reference = trainer(optimizer);
    let mut reference_source = source();
    let (mut before_first_save, mut last_step, mut torn_writes) = (0, 0u64, 0);
    let started = Instant::now();
    for kill in 0..n {
        let mut child = child_test("kill_child_trainer")
            .env(CHILD_ENV, dir)
            .env(OPTIMIZER_ENV, optimizer)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The first kill comes at once (during process start, before any checkpoint); the
        // others between 0 and 80 ms: inside a write, an fsync or a rename, or between steps.
        let delay = if kill == 0 { 0 } else { delays.below(80_000) };
        std::thread::sleep(Duration::from_micros(delay as u64));
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "kill {kill}: the child finished before it was killed"
        );

        if !path.exists() {
            assert_eq!(last_step, 0, "kill {kill}: the checkpoint disappeared");
            before_first_save += 1;
            continue;
        }
        // A kill inside a write leaves that write's temporary file (never read), not a torn
        // checkpoint; count them and clear them away.
        let tmp = temp_files(dir);
        torn_writes += tmp;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }

        let mut resumed = trainer(optimizer);
        resumed
            .load_checkpoint(&path)
            .unwrap_or_else(|e| panic!("kill {kill}: checkpoint does not load: {e}"));
        let step = resumed.step();
        assert!(step >= last_step, "kill {kill}: step went back");
        last_step = step;
        while reference.step() < step {
            reference.train_step(&mut reference_source).unwrap();
        }
        assert_eq!(
            param_bits(&resumed.model),
            param_bits(&reference.model),
            "kill {kill}: checkpoint at step {step} differs from the uninterrupted run"
        );
        assert_eq!(resumed.rng, reference.rng);
        assert!(
            resumed.optimizer == reference.optimizer,
            "kill {kill}: {optimizer} state at step {step} differs from the uninterrupted run"
        );
        resumed.train_step(&mut source()).unwrap();
        assert_eq!(resumed.step(), step + 1);
    }
    eprintln!(
        "kill test, {optimizer}: {n} SIGKILLs in {:.1} s; {before_first_save} before the first save, \
         {} with a checkpoint that loaded, matched the uninterrupted run bit for bit and \
         resumed; {torn_writes} interrupted writes left a temporary file; last step {last_step}",
        started.elapsed().as_secs_f64(),
        n - before_first_save,
    );
    assert!(
        last_step > 0 || n == 0,
        "{optimizer}: no checkpoint was ever written"
    );
}
