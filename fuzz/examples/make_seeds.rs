//! Writes the seed corpus into `fuzz/seeds/<target>/`: checkpoints of the small trainer before
//! and after a few steps, and the edge cases of `nn_fuzz::edge_seeds` (the `weights` and
//! `fixture` targets are also seeded with `tests/fixtures/`). Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.

use nn_fuzz::{edge_seeds, fixed_batches, small_trainer};
use std::path::Path;

fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let dir = seeds.join("checkpoint");
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
    for (target, name, bytes) in edge_seeds() {
        std::fs::create_dir_all(seeds.join(target)).unwrap();
        std::fs::write(seeds.join(target).join(name), bytes).unwrap();
    }
}
