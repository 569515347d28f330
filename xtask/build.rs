//! Embeds the default corpus of the char-model demo: the project's own Rust sources and docs,
//! concatenated in a fixed order, so `cargo xtask demo charlm` needs no download.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let mut files = Vec::new();
    for dir in ["crates", "xtask/src"] {
        collect(&root.join(dir), &mut files);
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    files.sort();
    for doc in ["README.md", "ARCHITECTURE.md"] {
        files.push(root.join(doc));
    }
    let mut corpus = String::new();
    for f in &files {
        if let Ok(text) = std::fs::read_to_string(f) {
            corpus.push_str(&text);
            corpus.push('\n');
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("corpus.txt");
    std::fs::write(out, corpus).unwrap();
}
