//! Sampling token sequences from a trained character-level [`SeqModel`].
//!
//! The model reads one-hot tokens (`I = V`), or token ids through its embedding (`V` rows), and
//! its head gives `V` logits `z`. From a zero state, the `prime` tokens are fed one by one with
//! [`Recurrent::step`](nn_recurrent::Recurrent::step) (on the one-hot column, read as a column
//! of `W_ih`, or on the token's embedding row);
//! then, `count` times, the next token is drawn from
//! `p_i ∝ exp(z_i / temperature)` restricted to the `top_k` largest logits (all when `top_k` is
//! 0), and fed back. `temperature = 0` picks the largest logit (greedy). The draw is
//! `u ~ U[0, 1)` from the caller's [`Rng`] against the cumulative probabilities, so a seed fixes
//! the text.

use crate::error::{Result, invalid};
use crate::seq_model::SeqModel;
use nalgebra::DMatrix;
use nn_core::{Float, Rng};
use nn_recurrent::StepScratch;

/// How to draw each token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleConfig {
    /// Softmax temperature (> 0; 0 means greedy). Default 1.
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (0: all). Default 0.
    pub top_k: usize,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            temperature: 1.0,
            top_k: 0,
        }
    }
}

impl SampleConfig {
    /// Temperature 1, all tokens.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the temperature.
    pub fn with_temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }
    /// Sets top-k (0: all).
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }
}

/// Draws one index from `logits` as [`SampleConfig`] says. `scratch` is reused between calls.
///
/// Errors: no logits, a NaN or infinite logit, a temperature that is NaN, infinite or negative.
pub fn sample_logits<T: Float>(
    logits: &[T],
    config: &SampleConfig,
    rng: &mut Rng,
    scratch: &mut Vec<(f64, usize)>,
) -> Result<usize> {
    check_temperature(config)?;
    if logits.is_empty() {
        return Err(nn_core::Error::Empty {
            op: "sample_logits",
            what: "logits",
        }
        .into());
    }
    if let Some(index) = logits.iter().position(|v| !v.finite()) {
        return Err(nn_core::Error::NonFinite {
            op: "sample_logits",
            index,
            value: logits[index].as_f64(),
        }
        .into());
    }
    Ok(draw(logits, config, rng, scratch))
}

fn check_temperature(config: &SampleConfig) -> Result<()> {
    if !(config.temperature.is_finite() && config.temperature >= 0.0) {
        return Err(invalid(format!(
            "invalid temperature {}",
            config.temperature
        )));
    }
    Ok(())
}

/// [`sample_logits`] on checked logits (non-empty, finite) and temperature.
fn draw<T: Float>(
    logits: &[T],
    config: &SampleConfig,
    rng: &mut Rng,
    scratch: &mut Vec<(f64, usize)>,
) -> usize {
    scratch.clear();
    scratch.extend(logits.iter().enumerate().map(|(i, v)| (v.as_f64(), i)));
    // Largest first; ties keep the lower index first.
    scratch.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if config.temperature <= 0.0 {
        return scratch[0].1;
    }
    if config.top_k > 0 {
        scratch.truncate(config.top_k.min(scratch.len()));
    }
    let max = scratch[0].0;
    let mut total = 0.0;
    for e in scratch.iter_mut() {
        e.0 = ((e.0 - max) / config.temperature).exp();
        total += e.0;
    }
    let u = rng.uniform() * total;
    let mut acc = 0.0;
    for &(p, i) in scratch.iter() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    scratch.last().map_or(0, |e| e.1)
}

/// Feeds `prime` into `model` and samples `count` further tokens; returns those `count` tokens.
/// Needs a unidirectional layer with one-hot inputs (`input_size == output_size`) or an
/// embedding of `output_size` tokens, a non-empty prime, tokens below the vocabulary size and a finite, non-negative temperature. A `count`
/// whose output cannot be allocated (`usize::MAX`, 10^12 tokens) is `TooLarge`, before any
/// work.
pub fn sample<T: Float>(
    model: &SeqModel<T>,
    prime: &[usize],
    count: usize,
    config: &SampleConfig,
    rng: &mut Rng,
) -> Result<Vec<usize>> {
    let vocab = model.output_size();
    match &model.embed {
        Some(e) if e.vocab_size() != vocab => {
            return Err(invalid(format!(
                "sampling feeds tokens back: the embedding's vocabulary {} must equal output size {vocab}",
                e.vocab_size()
            )));
        }
        None if model.input_size() != vocab => {
            return Err(invalid(format!(
                "sampling feeds tokens back one-hot: input size {} must equal output size {vocab}",
                model.input_size()
            )));
        }
        _ => {}
    }
    if prime.is_empty() {
        return Err(invalid("sampling needs at least one prime token"));
    }
    if let Some(&t) = prime.iter().find(|&&t| t >= vocab) {
        return Err(nn_core::Error::TargetOutOfRange {
            op: "sample prime",
            index: prime.iter().position(|&p| p == t).unwrap_or(0),
            target: t,
            classes: vocab,
        }
        .into());
    }
    check_temperature(config)?;
    let mut state = model.rnn.zero_state(1);
    let mut scratch = StepScratch::default();
    let mut logits = DMatrix::<T>::zeros(vocab, 1);
    let mut row = DMatrix::<T>::zeros(0, 0);
    let mut order = Vec::with_capacity(vocab);
    let mut out = Vec::new();
    out.try_reserve_exact(count)
        .map_err(|_| nn_core::Error::TooLarge {
            op: "sample output",
            rows: count,
            cols: 1,
        })?;
    let mut token = prime[0];
    // `count` tokens fit in memory, so this sum does not overflow.
    for i in 0..(prime.len() - 1) + count {
        let h = match &model.embed {
            Some(embed) => {
                embed.forward_into(&[token], &mut row)?;
                model.rnn.step(&row, &mut state, &mut scratch)?
            }
            // The token's one-hot input, read as a column of `W_ih` (the same bits as the
            // product).
            None => model.rnn.step_tokens(&[token], &mut state, &mut scratch)?,
        };
        if i + 1 < prime.len() {
            token = prime[i + 1];
            continue;
        }
        model.head.forward_into(h, &mut logits)?;
        token = sample_logits(logits.as_slice(), config, rng, &mut order)?;
        out.push(token);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_temperature() {
        let logits = [0.0f64, 3.0, 1.0, 2.0];
        let mut rng = Rng::seed_from(0);
        let mut s = Vec::new();
        let greedy = SampleConfig::new().with_temperature(0.0);
        assert_eq!(
            sample_logits(&logits, &greedy, &mut rng, &mut s).unwrap(),
            1
        );
        // top-2 only ever gives 1 or 3.
        let top2 = SampleConfig::new().with_top_k(2);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[sample_logits(&logits, &top2, &mut rng, &mut s).unwrap()] += 1;
        }
        assert_eq!(seen[0] + seen[2], 0);
        // p(1)/p(3) = e ≈ 2.72 at temperature 1.
        let ratio = seen[1] as f64 / seen[3] as f64;
        assert!((ratio - std::f64::consts::E).abs() < 0.4, "{seen:?}");
        // A low temperature concentrates on the largest.
        let cold = SampleConfig::new().with_temperature(0.05);
        assert!((0..200).all(|_| sample_logits(&logits, &cold, &mut rng, &mut s).unwrap() == 1));
    }
}
