//! Sampling from a character model: seeded, greedy agrees with the full forward, bad requests
//! are errors.

use nalgebra::DMatrix;
use nn_core::Rng;
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{SampleConfig, SeqModel, SeqModelConfig, SeqWorkspace, sample};

fn model() -> SeqModel<f64> {
    SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Lstm, 6, 8).with_num_layers(2),
        6,
    )
    .init(&mut Rng::seed_from(1))
    .unwrap()
}

#[test]
fn seeded_in_range_and_top_k() {
    let m = model();
    let cfg = SampleConfig::new().with_temperature(0.8).with_top_k(3);
    let a = sample(&m, &[1, 2], 30, &cfg, &mut Rng::seed_from(5)).unwrap();
    let b = sample(&m, &[1, 2], 30, &cfg, &mut Rng::seed_from(5)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 30);
    assert!(a.iter().all(|&t| t < 6));
    let c = sample(
        &m,
        &[1, 2],
        30,
        &SampleConfig::new(),
        &mut Rng::seed_from(6),
    )
    .unwrap();
    assert_ne!(a, c);
}

#[test]
fn greedy_sampling_is_the_argmax_of_the_full_forward() {
    let m = model();
    let prime = [3, 0, 5];
    let greedy = SampleConfig::new().with_temperature(0.0);
    let out = sample(&m, &prime, 6, &greedy, &mut Rng::seed_from(0)).unwrap();
    // Run the whole sequence (prime + generated) through the batch forward: at every position
    // from the last prime token on, the argmax of the logits is the next generated token.
    let seq: Vec<usize> = prime.iter().chain(&out).copied().collect();
    let mut x = DMatrix::<f64>::zeros(6, seq.len());
    for (t, &tok) in seq.iter().enumerate() {
        x[(tok, t)] = 1.0;
    }
    let mut ws = SeqWorkspace::new();
    m.forward(&x, 1, None, false, &mut ws).unwrap();
    for (k, &tok) in out.iter().enumerate() {
        let col = ws.logits().column(prime.len() - 1 + k);
        assert_eq!(col.argmax().0, tok, "position {k}");
    }
}

#[test]
fn bad_requests_are_errors() {
    let m = model();
    let cfg = SampleConfig::new();
    let mut rng = Rng::seed_from(0);
    assert!(sample(&m, &[], 3, &cfg, &mut rng).is_err());
    assert!(sample(&m, &[6], 3, &cfg, &mut rng).is_err());
    assert!(sample(&m, &[1], 3, &cfg.with_temperature(-1.0), &mut rng).is_err());
    let not_char: SeqModel<f64> = SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, 4, 3), 2)
        .init(&mut rng)
        .unwrap();
    assert!(sample(&not_char, &[1], 3, &cfg, &mut rng).is_err());
    assert_eq!(
        sample(&m, &[1, 2], 0, &cfg, &mut rng).unwrap(),
        Vec::<usize>::new()
    );
}
