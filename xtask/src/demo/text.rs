//! Text for the character model: a vocabulary, the text as indices, a train/validation split,
//! and one-hot sequence batches.
//!
//! The vocabulary is the sorted set of characters of the whole text. The last 10% of the text
//! (by characters) is validation. A batch of `B` windows of `T` characters is the one-hot
//! `(V, T*B)` matrix with column `t*B + b` = character `t` of window `b`, and the targets are
//! the next characters at the same positions.
//!
//! A text file is read only when it is a regular file of at most [`MAX_TEXT_BYTES`]
//! ([`read_text_file`]), so `/dev/zero` or a FIFO is an error rather than an endless read.

use nalgebra::DMatrix;
use nn_core::Float;
use std::io::Read;
use std::path::Path;

/// The largest text file read: 256 MiB (its character indices take up to 8 bytes a byte).
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Reads a UTF-8 text from `path`, a regular file of at most [`MAX_TEXT_BYTES`]: a device, a
/// FIFO or a folder is refused before reading, and at most one byte past the limit is read
/// (a file that grows meanwhile is refused too). Errors are one line, without the path.
pub fn read_text_file(path: &Path) -> Result<String, String> {
    let too_large = |len: u64| {
        format!(
            "the file has {len} bytes or more; a text may have at most {MAX_TEXT_BYTES} (256 MiB)"
        )
    };
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_TEXT_BYTES {
        return Err(too_large(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {}", e.utf8_error()))
}

/// The default corpus: this project's own sources, embedded at build time.
pub const DEFAULT_CORPUS: &str = include_str!(concat!(env!("OUT_DIR"), "/corpus.txt"));

/// A text as character indices over its own vocabulary.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Vocabulary, sorted; index = position.
    pub vocab: Vec<char>,
    /// The text as indices.
    pub ids: Vec<usize>,
    /// `ids[..split]` is training text, `ids[split..]` validation.
    pub split: usize,
}

impl Corpus {
    /// Builds the vocabulary and the split. Needs at least two distinct characters and enough
    /// text for a window of `seq + 1` characters in each part.
    pub fn new(text: &str, seq: usize) -> Result<Corpus, String> {
        // The vocabulary from a table over every char value, so that no copy of the text's
        // characters is made: memory is the indices alone.
        const CHARS: usize = char::MAX as usize + 1;
        let mut index = vec![usize::MAX; CHARS];
        for c in text.chars() {
            index[c as usize] = 0;
        }
        let mut vocab = Vec::new();
        for (code, slot) in index.iter_mut().enumerate() {
            if *slot == 0
                && let Some(c) = char::from_u32(code as u32)
            {
                *slot = vocab.len();
                vocab.push(c);
            }
        }
        if vocab.len() < 2 {
            return Err("the text needs at least two distinct characters".into());
        }
        let ids = text.chars().map(|c| index[c as usize]).collect::<Vec<_>>();
        let split = ids.len() - ids.len() / 10;
        // `<= seq`, not `< seq + 1`: `--seq` may be as large as usize allows.
        if ids.len() - split <= seq || split <= seq {
            return Err(format!(
                "the text ({} characters) is too short for --seq {seq}: each of the training (90%) and validation (10%) parts needs {} characters",
                ids.len(),
                seq as u128 + 1
            ));
        }
        Ok(Corpus { vocab, ids, split })
    }

    /// Vocabulary size `V`.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Index of `c`, if in the vocabulary.
    pub fn index(&self, c: char) -> Option<usize> {
        self.vocab.binary_search(&c).ok()
    }

    /// Characters of indices.
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter().map(|&i| self.vocab[i]).collect()
    }
}

/// Writes the one-hot `(V, T*B)` input and the `T*B` next-character targets of the windows of
/// `ids` starting at `starts` (one per sequence `b`), each `T + 1` characters long.
pub fn one_hot_windows<T: Float>(
    ids: &[usize],
    starts: &[usize],
    steps: usize,
    x: &mut DMatrix<T>,
    targets: &mut Vec<usize>,
) {
    let batch = starts.len();
    x.fill(T::zero());
    targets.clear();
    targets.resize(steps * batch, 0);
    for (b, &s) in starts.iter().enumerate() {
        for t in 0..steps {
            x[(ids[s + t], t * batch + b)] = T::one();
            targets[t * batch + b] = ids[s + t + 1];
        }
    }
}

/// [`one_hot_windows`] for a model with an embedding: the `T*B` input ids (index `t*B + b`)
/// instead of the one-hot matrix, and the same targets.
pub fn token_windows(
    ids: &[usize],
    starts: &[usize],
    steps: usize,
    input: &mut Vec<usize>,
    targets: &mut Vec<usize>,
) {
    let batch = starts.len();
    input.clear();
    input.resize(steps * batch, 0);
    targets.clear();
    targets.resize(steps * batch, 0);
    for (b, &s) in starts.iter().enumerate() {
        for t in 0..steps {
            input[t * batch + b] = ids[s + t];
            targets[t * batch + b] = ids[s + t + 1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_split_and_windows() {
        let c = Corpus::new(&"abc".repeat(20), 3).unwrap();
        assert_eq!(c.vocab, vec!['a', 'b', 'c']);
        assert_eq!(c.split, 54);
        let mut x = DMatrix::<f32>::zeros(3, 6);
        let mut t = Vec::new();
        one_hot_windows(&c.ids, &[0, 1], 3, &mut x, &mut t);
        // window 0 = "abc" -> "bca", window 1 = "bca" -> "cab"; column t*2 + b.
        assert_eq!(t, vec![1, 2, 2, 0, 0, 1]);
        assert_eq!(x[(0, 0)], 1.0);
        assert_eq!(x[(1, 1)], 1.0);
        let (mut ids, mut t2) = (Vec::new(), Vec::new());
        token_windows(&c.ids, &[0, 1], 3, &mut ids, &mut t2);
        assert_eq!((ids, t2), (vec![0, 1, 1, 2, 2, 0], t));
        assert!(Corpus::new("aaaa", 1).is_err());
        assert!(Corpus::new("ab", 5).is_err());
        assert!(DEFAULT_CORPUS.len() > 10_000);
    }
}
