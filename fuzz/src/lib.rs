//! Shared pieces of the fuzz targets: each target's body (`checkpoint`, `weights`, `fixture`),
//! the small model and trainer a fuzzed checkpoint is loaded into, its one fixed batch, and the
//! edge-case seeds of the reliability pass ([`edge_seeds`]). `examples/make_seeds.rs` writes the
//! seed corpus with them; `xtask/tests/fuzz_seeds.rs` includes this file and replays every seed
//! through the bodies on stable Rust, in `cargo test` (the targets themselves need nightly).

use nn_core::nalgebra::DMatrix;
use nn_core::tensor_io::{TensorFile, TensorWriter};
use nn_core::{Dense, Module, Rng};
use nn_recurrent::{CellKind, Nonlinearity, RecurrentCache, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, BatchSource, Bptt, Clip, Objective, Optimizer, SeqModel, SeqModelConfig,
    Targets, Trainer, TrainerConfig, batch_fn,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Vocabulary, steps and batch of the fixed batch.
pub const VOCAB: usize = 3;
const STEPS: usize = 4;
const BATCH: usize = 2;

/// An LSTM `3 -> 4` with a head to 3 tokens, Adam, truncated BPTT with carried state, so a
/// checkpoint has every kind of tensor (parameters, Adam buffers, step, RNG, `state.h`, `state.c`).
pub fn small_trainer() -> Trainer<f32> {
    let config = SeqModelConfig::new(RecurrentConfig::new(CellKind::Lstm, VOCAB, 4), VOCAB);
    let model: SeqModel<f32> = config.init(&mut Rng::seed_from(1)).expect("valid config");
    let optimizer = Optimizer::new(AdamConfig::new(0.01)).expect("valid optimizer");
    let tc = TrainerConfig::new(Objective::NextToken)
        .with_bptt(Bptt::Truncated { window: 2 })
        .with_carry_state(true)
        .with_clip(Clip::Norm(1.0));
    Trainer::new(model, optimizer, Rng::seed_from(2), tc).expect("valid trainer")
}

/// One-hot tokens `0 1 2 0 …` and their successors, the same every step.
pub fn fixed_batches() -> impl BatchSource<f32> {
    batch_fn(|_, _: &mut Rng, b: &mut Batch<f32>| {
        b.x = DMatrix::zeros(VOCAB, STEPS * BATCH);
        b.batch = BATCH;
        let mut targets = vec![0; STEPS * BATCH];
        for s in 0..STEPS {
            for j in 0..BATCH {
                let tok = (s + j) % VOCAB;
                b.x[(tok, s * BATCH + j)] = 1.0;
                targets[s * BATCH + j] = (tok + 1) % VOCAB;
            }
        }
        b.targets = Targets::Classes(targets);
        Ok(())
    })
}

fn param_bits(m: &impl Module<f32>) -> Vec<u32> {
    let mut bits = Vec::new();
    m.visit(&mut |_, p| bits.extend(p.value.iter().map(|v| v.to_bits())));
    bits
}

/// The `checkpoint` target: any bytes either restore the small trainer, which then takes two
/// training steps, each succeeding with finite parameters or failing with nothing changed; or
/// give an error that changed nothing.
pub fn checkpoint(data: &[u8]) {
    let Ok(file) = TensorFile::from_bytes(data.to_vec(), "fuzz") else {
        return;
    };
    let mut trainer = small_trainer();
    let before = param_bits(&trainer.model);
    match trainer.load_checkpoint_file(&file) {
        Ok(()) => {
            for _ in 0..2 {
                let (params, step) = (param_bits(&trainer.model), trainer.step());
                let steps = trainer.optimizer.steps();
                match trainer.train_step(&mut fixed_batches()) {
                    Ok(_) => {
                        let finite = param_bits(&trainer.model)
                            .iter()
                            .all(|&b| f32::from_bits(b).is_finite());
                        assert!(finite, "a step returned Ok with parameters not finite");
                    }
                    Err(_) => {
                        // All or nothing: a failed step (an overflowing update among them)
                        // leaves the parameters and both step counts as they were.
                        assert!(
                            param_bits(&trainer.model) == params,
                            "a failed step changed the model"
                        );
                        assert_eq!((trainer.step(), trainer.optimizer.steps()), (step, steps));
                    }
                }
            }
        }
        Err(_) => {
            // All or nothing: a refused checkpoint leaves the parameters as they were.
            assert!(
                param_bits(&trainer.model) == before,
                "a failed load changed the model"
            );
            assert_eq!(trainer.step(), 0);
        }
    }
}

/// The `weights` target: any bytes either load into a layer or give an error. The layers match
/// the seed fixtures' sizes, so mutated fixtures get past the name checks. A Dense layer that
/// loaded (weights perhaps NaN or huge) gives a finite output or an error.
pub fn weights(data: &[u8]) {
    let Ok(file) = TensorFile::from_bytes(data.to_vec(), "fuzz") else {
        return;
    };
    let mut rng = Rng::seed_from(0);
    let mut dense = Dense::<f32>::new(5, 4, &mut rng).expect("valid sizes");
    if file.load_module(&mut dense).is_ok() {
        for x in [
            DMatrix::from_element(5, 2, 0.5),
            DMatrix::from_element(5, 7, 3e38),
        ] {
            if let Ok(y) = dense.forward(&x) {
                assert!(
                    y.iter().all(|v| v.is_finite()),
                    "Dense returned Ok(inf or NaN)"
                );
            }
            let mut out = DMatrix::zeros(0, 0);
            if dense.forward_into(&x, &mut out).is_ok() {
                assert!(
                    out.iter().all(|v| v.is_finite()),
                    "Dense returned Ok(inf or NaN)"
                );
            }
        }
    }
    for name in file.names() {
        let _ = file.values::<f64>(name);
        let _ = file.indices(name);
        let _ = file.columns::<f32>(name);
        let _ = file.shape(name);
    }
    let _ = file.metadata("case");
    for cell in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Rnn(Nonlinearity::Tanh),
    ] {
        for (layers, bidirectional) in [(1, false), (2, true)] {
            let config = RecurrentConfig::new(cell, 3, 4)
                .with_num_layers(layers)
                .with_bidirectional(bidirectional);
            let mut layer = config.init::<f64>(&mut rng).expect("valid config");
            if file.load_module(&mut layer).is_ok() {
                // Loaded weights may hold NaN or huge values: forward must still not panic.
                let x = DMatrix::from_element(3, 4, 0.5);
                let mut cache = RecurrentCache::new();
                let _ = layer.forward(&x, 2, None, &mut cache);
            }
        }
    }
}

/// The `fixture` target: any bytes either run as a fixture (passing or not) or give an error
/// message (a size the file cannot justify is refused before it is allocated; libFuzzer's
/// allocation limit catches one that is not).
pub fn fixture(data: &[u8]) {
    let _ = xtask::fixtures::run_bytes(data.to_vec());
}

/// The seeds of this pass's edge cases, as `(target, file name, bytes)`:
/// - checkpoints whose next step overflows (parameters near f32's largest value; Adam with a
///   weight decay of 1e38), which the trainer must refuse with nothing changed, and one whose
///   `exp_avg_sq` has a negative entry (refused on load);
/// - Dense weights that are NaN or near f32's largest value;
/// - a fixture whose sizes each fit the file but whose product (logits `O·N`) does not fit the
///   memory budget.
pub fn edge_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = Vec::new();
    let save = |trainer: &Trainer<f32>| {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("nn-fuzz-seeds-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let path = dir.join("seed.safetensors");
        trainer.save_checkpoint(&path).expect("checkpoint written");
        let bytes = std::fs::read(&path).expect("checkpoint read");
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    };
    let mut trainer = small_trainer();
    trainer
        .run(2, &mut fixed_batches(), None, &mut |_| {})
        .expect("valid steps");
    let mut huge = small_trainer();
    huge.load_checkpoint_file(&TensorFile::from_bytes(save(&trainer), "seed").expect("valid"))
        .expect("valid checkpoint");
    huge.model
        .visit_mut(&mut |_, p| p.value.iter_mut().for_each(|v| *v = v.signum() * 3e38));
    seeds.push(("checkpoint", "huge_params.safetensors", save(&huge)));
    // Adam's weight decay of 1e38 (an f32 can hold it): `g + wd·p` squared overflows the
    // second moment at the next step, which is refused.
    let mut decay = small_trainer();
    decay.optimizer =
        Optimizer::new(AdamConfig::new(0.01).with_weight_decay(1e38)).expect("valid settings");
    seeds.push((
        "checkpoint",
        "adam_weight_decay_1e38.safetensors",
        save(&decay),
    ));
    // A negative second moment (`exp_avg_sq`), its checksum made to match: refused on load.
    let sq = trainer.optimizer.state()[0].buffers[1][0];
    let mut bytes = save(&trainer);
    if negate(&mut bytes, sq) {
        seeds.push(("checkpoint", "negative_exp_avg_sq.safetensors", bytes));
    }

    for (name, value) in [
        ("dense_nan.safetensors", f32::NAN),
        ("dense_huge.safetensors", 3e38),
    ] {
        let mut dense = Dense::<f32>::new(5, 4, &mut Rng::seed_from(0)).expect("valid sizes");
        dense.weight.value[(1, 2)] = value;
        dense.bias.value[3] = value;
        let mut w = TensorWriter::new();
        w.module(&dense);
        seeds.push(("weights", name, w.to_bytes().expect("valid file")));
    }

    // Dense 1 -> 16 000 over a batch of 16 000: each tensor fits the 64 KB of padding, the
    // logits (2 GB of f64) do not fit the budget.
    let n = 16_000;
    let case = format!(r#"{{"kind":"dense_softmax_ce","input":1,"output":{n},"batch":{n}}}"#);
    let mut w = TensorWriter::new();
    w.metadata("case", &case);
    w.values::<f32>("padding", &[n], &vec![0.0; n]);
    seeds.push((
        "fixture",
        "large_product.safetensors",
        w.to_bytes().expect("valid file"),
    ));
    seeds
}

/// Negates the first `value` stored in the data section of the safetensors file `bytes` and
/// updates the file's data checksum to match; `false` when `value` is not found.
fn negate(bytes: &mut [u8], value: f32) -> bool {
    use nn_core::tensor_io::checksum::{fnv1a64, to_hex};
    let Some(n) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    else {
        return false;
    };
    let start = 8 + n as usize;
    let old = to_hex(fnv1a64(&bytes[start..]));
    let pattern = value.to_le_bytes();
    let Some(at) = bytes[start..].windows(4).position(|w| w == pattern) else {
        return false;
    };
    bytes[start + at..start + at + 4].copy_from_slice(&(-value).to_le_bytes());
    let new = to_hex(fnv1a64(&bytes[start..]));
    let header = &mut bytes[8..start];
    match header.windows(old.len()).position(|w| w == old.as_bytes()) {
        Some(i) => {
            header[i..i + old.len()].copy_from_slice(new.as_bytes());
            true
        }
        None => false,
    }
}
