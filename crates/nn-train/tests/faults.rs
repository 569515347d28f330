//! Disk faults while checkpointing: a full disk and a read-only folder give a clear I/O error
//! naming the file, and the previous checkpoint stays on disk bit for bit (no temporary file
//! left behind).
//!
//! Both need a real filesystem in that state. As root, the test mounts a 64 KiB tmpfs (disk
//! full) and a read-only bind mount (root ignores permission bits); as another user it uses
//! `chmod 0o555` for the read-only case and skips the disk-full case. Whenever the setup is not
//! possible the test says so on stderr and passes without checking (`NN_REQUIRE_FAULTS=1`
//! turns that into a failure).

use nn_core::Rng;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    Batch, Error, Objective, Optimizer, SeqModel, SeqModelConfig, SgdConfig, Targets, Trainer,
    TrainerConfig, batch_fn,
};
use std::path::{Path, PathBuf};
use std::process::Command;

fn trainer() -> Trainer<f32> {
    let config = SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, 3, 8), 3);
    let model: SeqModel<f32> = config.init(&mut Rng::seed_from(5)).unwrap();
    let opt = Optimizer::new(SgdConfig::new(0.1)).unwrap();
    Trainer::new(
        model,
        opt,
        Rng::seed_from(6),
        TrainerConfig::new(Objective::NextToken),
    )
    .unwrap()
}

fn step(t: &mut Trainer<f32>) {
    let mut src = batch_fn(|_, _: &mut Rng, b: &mut Batch<f32>| {
        b.x = nalgebra::DMatrix::from_fn(3, 8, |i, j| ((i + j) % 3 == 0) as u8 as f32);
        b.batch = 2;
        b.targets = Targets::Classes((0..8).map(|j| j % 3).collect());
        Ok(())
    });
    t.train_step(&mut src).unwrap();
}

fn skip(why: &str) {
    if std::env::var_os("NN_REQUIRE_FAULTS").is_some() {
        panic!("fault test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Unmounts the folder on drop, so a failing assertion leaves no mount behind (the folder
/// itself is a `tempfile::TempDir`, dropped after this and removed with what it holds).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn only_file(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Takes one more step, then a save that must fail: returns the error after checking that it
/// names the file, that the previous checkpoint (`saved`) is unchanged and still loads, and that
/// the folder holds exactly `files` (no temporary file left).
fn failed_save_keeps_previous(
    what: &str,
    t: &mut Trainer<f32>,
    path: &Path,
    saved: &[u8],
    files: &[&str],
) -> Error {
    step(t);
    let err = t.save_checkpoint(path).unwrap_err();
    let msg = err.to_string();
    eprintln!("{what}: {msg}");
    assert!(msg.contains("ckpt.safetensors"), "{msg}");
    assert_eq!(
        std::fs::read(path).unwrap(),
        saved,
        "previous checkpoint changed"
    );
    assert_eq!(only_file(path.parent().unwrap()), files);
    trainer().load_checkpoint(path).unwrap();
    err
}

#[test]
fn disk_full_keeps_the_previous_checkpoint() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    if !run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "tmpfs",
            dir.to_str().unwrap(),
        ],
    ) {
        return skip("cannot mount a small tmpfs (needs root) to fill a disk");
    }
    let _mount = Mount(dir.to_path_buf());
    let path = dir.join("ckpt.safetensors");
    let mut t = trainer();
    step(&mut t);
    t.save_checkpoint(&path).unwrap();
    let saved = std::fs::read(&path).unwrap();

    // Fill the rest of the filesystem.
    let filler = vec![0u8; 4096];
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    while std::io::Write::write_all(&mut f, &filler).is_ok() {}
    drop(f);

    let err = failed_save_keeps_previous(
        "disk full",
        &mut t,
        &path,
        &saved,
        &["ckpt.safetensors", "filler"],
    );
    assert!(
        matches!(&err, Error::Core(nn_core::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::StorageFull),
        "{err:?}"
    );
}

#[test]
fn read_only_folder_keeps_the_previous_checkpoint() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let path = dir.join("ckpt.safetensors");
    let mut t = trainer();
    step(&mut t);
    t.save_checkpoint(&path).unwrap();
    let saved = std::fs::read(&path).unwrap();

    // Make the folder read-only: permission bits, or (as root, who ignores them) a read-only
    // bind mount of the folder onto itself.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut _mount = None;
    if std::fs::File::create(dir.join("probe")).is_ok() {
        let _ = std::fs::remove_file(dir.join("probe"));
        let d = dir.to_str().unwrap();
        if run("mount", &["--bind", d, d]) {
            _mount = Some(Mount(dir.to_path_buf()));
            if !run("mount", &["-o", "remount,ro,bind", d]) {
                drop(_mount);
                return skip("cannot remount the folder read-only");
            }
        } else {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            return skip("permission bits do not stop this user and a bind mount is not possible");
        }
    }

    let err = failed_save_keeps_previous(
        "read-only folder",
        &mut t,
        &path,
        &saved,
        &["ckpt.safetensors"],
    );
    assert!(
        matches!(&err, Error::Core(nn_core::Error::Io { .. })),
        "{err:?}"
    );

    if _mount.take().is_none() {
        // Writable again, so that the `TempDir` can remove what it holds.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Found by fuzzing the checkpoint loader: a checkpoint whose step counter is `u64::MAX` made
/// the next step overflow. It is now a typed error, and the model is left as it was.
#[test]
fn full_step_counter_in_a_checkpoint_is_an_error_not_a_panic() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let path = dir.join("ckpt.safetensors");
    let mut t = trainer();
    step(&mut t);
    nn_train::checkpoint::save(
        &path,
        &nn_train::checkpoint::CheckpointParts {
            model: &t.model,
            model_config: t.model.config().to_json(),
            optimizer: &t.optimizer,
            step: u64::MAX,
            rng: &t.rng,
            extra: Vec::new(),
        },
    )
    .unwrap();
    let mut resumed = trainer();
    resumed.load_checkpoint(&path).unwrap();
    assert_eq!(resumed.step(), u64::MAX);
    let before = resumed.model.clone();
    let mut src = batch_fn(|_, _: &mut Rng, b: &mut Batch<f32>| {
        b.x = nalgebra::DMatrix::from_element(3, 2, 1.0);
        b.batch = 1;
        b.targets = Targets::Classes(vec![0, 1]);
        Ok(())
    });
    assert!(resumed.train_step(&mut src).is_err());
    let same = |a: &SeqModel<f32>, b: &SeqModel<f32>| a.head.weight.value == b.head.weight.value;
    assert!(same(&resumed.model, &before));
}
