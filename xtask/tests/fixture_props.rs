//! Property test of the fixture runner's memory bound: a fixture whose metadata declares any
//! sizes (0, 1, small, or large enough that their product asks for terabytes, each still
//! plausible on its own) runs or gives an error, quickly, and no single allocation it makes is
//! larger than the file's memory budget (`xtask::fixtures::memory_budget`).
//!
//! A global allocator records the largest allocation made while a case runs. 256 cases by
//! default (under a second: most are refused before anything is allocated from the metadata);
//! `PROPTEST_CASES=N` runs more.

use nn_testutil::proptest_cases;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Forwards to the system allocator; records the largest request while `ON`.
struct LargestAlloc;

static ON: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if ON.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; recording touches only atomics.
unsafe impl GlobalAlloc for LargestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: LargestAlloc = LargestAlloc;

const FILES: [&str; 7] = [
    "dense_softmax_ce.safetensors",
    "embedding_pad.safetensors",
    "rnn_basic.safetensors",
    "lstm_stacked_bidir.safetensors",
    "gru_basic.safetensors",
    "train_gru_adam.safetensors",
    "train_lstm_sgd.safetensors",
];

const KEYS: [&str; 10] = [
    "input",
    "hidden",
    "output",
    "vocab",
    "layers",
    "batch",
    "steps",
    "optimizer_steps",
    "dim",
    "n",
];

/// `file` (a shared fixture) with `edits` applied to its `case` metadata, or (`file` = `None`)
/// a file holding only a `case` of kind `kind` with the sizes `all`, then `edits`; both with
/// a `padding` tensor of `pad` bytes, so that larger declared tensors look possible. The
/// header is re-serialized; tensor offsets are relative to the data, so the data is kept.
fn edited(
    file: Option<&str>,
    kind: usize,
    all: &[u64],
    edits: &[(usize, u64)],
    pad: usize,
) -> Vec<u8> {
    let (mut header, data) = match file {
        Some(file) => {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures")
                .join(file);
            let bytes = std::fs::read(path).unwrap();
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
            (header, bytes[8 + n..].to_vec())
        }
        None => {
            let kind = ["dense_softmax_ce", "embedding", "recurrent", "train"][kind];
            let mut case = json!({
                "kind": kind,
                "cell": "lstm", "bidirectional": kind == "recurrent", "optimizer": "adam",
                "optimizer_config": {"lr": 0.01}, "clip_norm": 1.0, "padding_idx": 0,
            });
            // Widths stay small, so each declared tensor fits the padding and only the
            // products (outputs × batch, layers × steps × batch, …) can be too large.
            for (key, &value) in KEYS.iter().zip(all) {
                let width = matches!(*key, "input" | "hidden" | "dim");
                case[*key] = if width { value % 8 + 1 } else { value }.into();
            }
            (
                json!({"__metadata__": {"case": case.to_string()}}),
                Vec::new(),
            )
        }
    };
    let meta = header["__metadata__"].as_object_mut().unwrap();
    let mut case: Value = serde_json::from_str(meta["case"].as_str().unwrap()).unwrap();
    for &(key, value) in edits {
        case[KEYS[key]] = value.into();
    }
    meta.insert("case".into(), Value::String(case.to_string()));
    header["padding"] = json!({
        "dtype": "U8", "shape": [pad], "data_offsets": [data.len(), data.len() + pad],
    });
    let mut text = header.to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    out.resize(out.len() + pad, 0);
    out
}

/// A size: degenerate, small, moderate (each fits a padded file, a product of a few does not
/// fit the budget), or large.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        2 => 1u64..8,
        3 => Just(300),
        3 => Just(3000),
        1 => Just(60_000),
        1 => Just(1 << 31),
        1 => Just(u64::MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(256)))]

    #[test]
    fn fixture_sizes_cannot_buy_memory_the_file_does_not_justify(
        file in proptest::option::of(0usize..FILES.len()),
        kind in 0usize..4,
        all in proptest::collection::vec(
            prop_oneof![1u64..8, Just(300), Just(3000), Just(60_000), Just(1 << 20)],
            KEYS.len(),
        ),
        edits in proptest::collection::vec((0usize..KEYS.len(), size()), 1..5),
        pad in prop_oneof![Just(0usize), Just(1 << 20), Just(4 << 20)],
    ) {
        let name = file.map_or("metadata only", |f| FILES[f]);
        let bytes = edited(file.map(|f| FILES[f]), kind, &all, &edits, pad);
        let budget = xtask::fixtures::memory_budget(bytes.len());
        let started = Instant::now();
        LARGEST.store(0, Ordering::Relaxed);
        ON.store(true, Ordering::Relaxed);
        let result = xtask::fixtures::run_bytes(bytes);
        ON.store(false, Ordering::Relaxed);
        let largest = LARGEST.load(Ordering::Relaxed);
        prop_assert!(
            largest <= budget,
            "{} {:?}: an allocation of {} bytes, budget {}: {:?}",
            name, edits, largest, budget, result
        );
        prop_assert!(started.elapsed() < Duration::from_secs(20), "{} {:?}", name, edits);
        if let Err(e) = result {
            prop_assert!(!e.is_empty() && !e.contains('\n'), "{}", e);
        }
    }
}
