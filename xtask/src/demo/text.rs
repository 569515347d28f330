//! Text for the character model: a vocabulary, the text as indices, a train/validation split,
//! and one-hot sequence batches.
//!
//! The vocabulary is the sorted set of characters of the whole text. The last 10% of the text
//! (by characters) is validation. A batch of `B` windows of `T` characters is the one-hot
//! `(V, T*B)` matrix with column `t*B + b` = character `t` of window `b`, and the targets are
//! the next characters at the same positions.

use nalgebra::DMatrix;
use nn_core::Float;

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
        let chars: Vec<char> = text.chars().collect();
        let mut vocab = chars.clone();
        vocab.sort_unstable();
        vocab.dedup();
        if vocab.len() < 2 {
            return Err("the text needs at least two distinct characters".into());
        }
        let ids = chars
            .iter()
            .map(|c| vocab.binary_search(c).unwrap_or(0))
            .collect::<Vec<_>>();
        let split = ids.len() - ids.len() / 10;
        if ids.len() - split < seq + 1 || split < seq + 1 {
            return Err(format!(
                "the text ({} characters) is too short for --seq {seq}: each of the training (90%) and validation (10%) parts needs {} characters",
                ids.len(),
                seq + 1
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
        assert!(Corpus::new("aaaa", 1).is_err());
        assert!(Corpus::new("ab", 5).is_err());
        assert!(DEFAULT_CORPUS.len() > 10_000);
    }
}
