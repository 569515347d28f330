//! Determinism: one seed gives the same parameters bit for bit, run after run, and whatever the
//! number of threads the matrix products use.
//!
//! The thread-count test runs this binary again as child processes (`--ignored --exact
//! determinism_child` with `NN_DET_CHILD_OUT` set, by `nn_testutil::child_test`) with
//! `NN_NUM_THREADS` = 1, 2, 3, 4 and 8 (more than this machine's cores: slower, same bits), on
//! sizes where the threaded paths are taken (H = 128, B = 32: time loops in up to 8 parts), and
//! compares the parameter files they write byte for byte. On its own that ignored child test checks nothing, and without the variable
//! it fails.

use nalgebra::DMatrix;
use nn_core::Rng;
use nn_core::tensor_io::TensorWriter;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_testutil::{child_env, child_test, param_bits};
use nn_train::{
    AdamConfig, Batch, Clip, Objective, Optimizer, SeqModel, SeqModelConfig, Targets, Trainer,
    TrainerConfig, batch_fn,
};
use std::process::Stdio;

const CHILD_ENV: &str = "NN_DET_CHILD_OUT";

/// Trains an LSTM `I -> H` with a head to `V` tokens for `steps` steps on random one-hot
/// batches drawn from the trainer's generator (seeded by `seed`).
fn train(seed: u64, input: usize, hidden: usize, batch: usize, steps: u64) -> Trainer<f32> {
    let config = SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, input, hidden), input);
    let model: SeqModel<f32> = config.init(&mut Rng::seed_from(seed)).unwrap();
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let tc = TrainerConfig::new(Objective::NextToken).with_clip(Clip::Norm(1.0));
    let mut t = Trainer::new(model, opt, Rng::seed_from(seed + 1), tc).unwrap();
    let t_len = 8;
    let mut source = batch_fn(move |_, rng: &mut Rng, b: &mut Batch<f32>| {
        b.x = DMatrix::zeros(input, t_len * batch);
        b.batch = batch;
        let tokens: Vec<usize> = (0..(t_len + 1) * batch).map(|_| rng.below(input)).collect();
        for (j, &tok) in tokens[..t_len * batch].iter().enumerate() {
            b.x[(tok, j)] = 1.0;
        }
        b.targets = Targets::Classes(tokens[batch..].to_vec());
        Ok(())
    });
    t.run(steps, &mut source, None, &mut |_| {}).unwrap();
    t
}

#[test]
fn same_seed_same_bits() {
    let a = train(3, 6, 16, 4, 20);
    let b = train(3, 6, 16, 4, 20);
    assert_eq!(param_bits(&a.model), param_bits(&b.model));
    assert_eq!(a.optimizer, b.optimizer);
    assert_eq!(a.rng, b.rng);
    let c = train(4, 6, 16, 4, 20);
    assert_ne!(
        param_bits(&a.model),
        param_bits(&c.model),
        "the seed must matter"
    );
}

/// The child process: train at the large size and write the parameters (and the process's
/// thread count, to show the threaded path ran) to `NN_DET_CHILD_OUT`.
#[test]
#[ignore = "child process of thread_count_does_not_change_the_bits; run by it"]
fn determinism_child() {
    let out = child_env(CHILD_ENV, "thread_count_does_not_change_the_bits");
    let t = train(9, 64, 128, 32, 3);
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_default();
    let mut w = TensorWriter::new();
    w.module(&t.model).metadata("threads", &threads);
    w.write(out).unwrap();
}

#[test]
fn thread_count_does_not_change_the_bits() {
    let tmp_dir = tempfile::tempdir().unwrap();
    let dir = tmp_dir.path();
    let mut files = Vec::new();
    let counts = [1, 2, 3, 4, 8];
    for threads in counts {
        let out = dir.join(format!("params-{threads}.safetensors"));
        let status = child_test("determinism_child")
            .env(CHILD_ENV, &out)
            .env("NN_NUM_THREADS", threads.to_string())
            .env_remove("MATMUL_NUM_THREADS")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let file = nn_core::tensor_io::TensorFile::open(&out).unwrap();
        let seen = file.metadata("threads").unwrap_or("?").to_string();
        eprintln!("NN_NUM_THREADS={threads}: process had {seen} threads");
        files.push((threads, seen, std::fs::read(&out).unwrap()));
    }
    let threads_of = |i: usize| files[i].1.parse::<usize>().unwrap_or(0);
    assert!(
        threads_of(1) > threads_of(0),
        "the 2-thread child did not start the pool's helper thread"
    );
    assert!(
        threads_of(counts.len() - 1) > threads_of(1),
        "the 8-thread child did not start more helpers than the 2-thread one"
    );
    // The header holds the thread count; compare the tensors.
    let tensors = |bytes: &[u8]| {
        let file = nn_core::tensor_io::TensorFile::from_bytes(bytes.to_vec(), "p").unwrap();
        file.names()
            .iter()
            .map(|n| {
                file.values::<f32>(n)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect::<Vec<Vec<u32>>>()
    };
    let first = tensors(&files[0].2);
    for (threads, _, bytes) in &files[1..] {
        assert!(
            tensors(bytes) == first,
            "parameters differ with {threads} threads"
        );
    }
}
