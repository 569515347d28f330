//! Writes the seed corpus of the `checkpoint` target into `fuzz/seeds/checkpoint/`: checkpoints
//! of the small trainer before and after a few steps. (The `weights` and `fixture` targets are
//! seeded with `tests/fixtures/` directly.) Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.

use nn_fuzz::{fixed_batches, small_trainer};
use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/checkpoint");
    std::fs::create_dir_all(&dir).unwrap();
    let mut trainer = small_trainer();
    trainer
        .save_checkpoint(dir.join("step0.safetensors"))
        .unwrap();
    let mut source = fixed_batches();
    trainer.run(3, &mut source, None, &mut |_| {}).unwrap();
    trainer
        .save_checkpoint(dir.join("step3.safetensors"))
        .unwrap();
}
