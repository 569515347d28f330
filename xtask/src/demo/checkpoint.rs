//! The demos' checkpoint file: checked before training (so a bad `--checkpoint` fails at once,
//! not at the first save), and for charlm the text's vocabulary kept in it, so that `--resume`
//! on a text with other characters is refused instead of continuing with mixed-up ids.

use nn_core::tensor_io::{TensorFile, check_writable};
use nn_train::checkpoint::user_metadata;
use std::path::Path;

/// The metadata key of charlm's vocabulary: its characters in id order, as one string.
pub const VOCAB_KEY: &str = "vocab";

/// `--checkpoint PATH` can be saved to ([`check_writable`]: its folder exists and accepts a
/// file, and the path names no folder, FIFO, device or other non-regular file); a one-line
/// error otherwise.
pub fn check_path(path: &Path) -> Result<(), String> {
    check_writable(path).map_err(|e| format!("--checkpoint {e}"))
}

/// The vocabulary as stored in the checkpoint.
pub fn vocab_text(vocab: &[char]) -> String {
    vocab.iter().collect()
}

/// Refuses to resume from a checkpoint whose stored vocabulary is not `vocab` (one line, with
/// up to 10 of the characters that differ). A checkpoint without one passes; a vocabulary of
/// another size is then still caught by the model config.
pub fn check_vocab(file: &TensorFile, vocab: &[char]) -> Result<(), String> {
    let Some(saved) = user_metadata(file, VOCAB_KEY) else {
        return Ok(());
    };
    if saved == vocab_text(vocab) {
        return Ok(());
    }
    let saved: Vec<char> = saved.chars().collect();
    let only = |a: &[char], b: &[char]| -> String {
        a.iter().filter(|c| !b.contains(c)).take(10).collect()
    };
    let (new, gone) = (only(vocab, &saved), only(&saved, vocab));
    let detail = if new.is_empty() && gone.is_empty() {
        "the same characters in another order".to_string()
    } else {
        format!("this text has {new:?} that it lacks, it has {gone:?} that this text lacks")
    };
    Err(format!(
        "--resume: {} was trained on another vocabulary ({} characters, this text has {}; {detail})",
        file.path().display(),
        saved.len(),
        vocab.len()
    ))
}
