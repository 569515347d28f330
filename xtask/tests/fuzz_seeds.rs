//! The fuzz targets' bodies (`fuzz/src/lib.rs`, included here) replayed on stable Rust over
//! their seeds: the committed corpus in `fuzz/seeds/`, the shared fixtures (the `weights` and
//! `fixture` targets' seeds), and the edge cases of this reliability pass generated in memory.
//! Each body asserts its target's promise (a failed load or step changes nothing, a loaded
//! Dense gives finite outputs or an error, a fixture runs or is refused); a panic fails.

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod nn_fuzz;

use std::path::Path;

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn fuzz_seeds_replay_through_the_target_bodies() {
    let root = xtask::project_root();
    let seeds = root.join("fuzz/seeds");
    let shared = files(&root.join("tests/fixtures"));
    let mut counts = [0usize; 3];
    let mut run = |target: &str, data: &[u8]| match target {
        "checkpoint" => (nn_fuzz::checkpoint(data), counts[0] += 1).1,
        "weights" => (nn_fuzz::weights(data), counts[1] += 1).1,
        _ => (nn_fuzz::fixture(data), counts[2] += 1).1,
    };
    for target in ["checkpoint", "weights", "fixture"] {
        let dir = seeds.join(target);
        if dir.is_dir() {
            for data in files(&dir) {
                run(target, &data);
            }
        }
    }
    for data in &shared {
        run("weights", data);
        run("fixture", data);
    }
    for (target, _, data) in nn_fuzz::edge_seeds() {
        run(target, &data);
    }
    assert!(counts.iter().all(|&n| n >= 3), "{counts:?}");
}

/// The committed edge seeds are what `nn_fuzz::edge_seeds` writes (so `make_seeds` and this
/// replay agree). `NN_WRITE_FUZZ_SEEDS=1` writes them instead (as `make_seeds` does, without
/// building the fuzz crate).
#[test]
fn committed_edge_seeds_are_current() {
    let seeds = xtask::project_root().join("fuzz/seeds");
    for (target, name, data) in nn_fuzz::edge_seeds() {
        let path = seeds.join(target).join(name);
        if std::env::var_os("NN_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == data,
            "{} is missing or stale: run `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`",
            path.display()
        );
    }
}

/// The edge checkpoints reach the checks they were made for: a step refused as an overflowing
/// update (nothing changed: `nn_fuzz::checkpoint` asserts it), a load refused for a negative
/// second moment.
#[test]
fn edge_checkpoints_reach_their_checks() {
    use nn_core::tensor_io::TensorFile;
    let seeds = nn_fuzz::edge_seeds();
    let seed = |name: &str| {
        let data = seeds.iter().find(|s| s.1 == name).unwrap().2.clone();
        TensorFile::from_bytes(data, name).unwrap()
    };
    let mut t = nn_fuzz::small_trainer();
    t.load_checkpoint_file(&seed("adam_weight_decay_1e38.safetensors"))
        .unwrap();
    let err = t.train_step(&mut nn_fuzz::fixed_batches()).unwrap_err();
    assert!(
        matches!(
            err,
            nn_train::Error::NonFiniteUpdate {
                optimizer: "adam",
                ..
            }
        ),
        "{err}"
    );
    let mut t = nn_fuzz::small_trainer();
    let err = t
        .load_checkpoint_file(&seed("negative_exp_avg_sq.safetensors"))
        .unwrap_err();
    assert!(err.to_string().contains("exp_avg_sq"), "{err}");
}
