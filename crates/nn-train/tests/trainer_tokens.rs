//! The trainer on token ids (a model with an embedding), padded targets (IGNORE_INDEX) and
//! dropout between stacked layers: truncated windows, resuming bit for bit, typed errors.

use nn_core::loss::IGNORE_INDEX;
use nn_core::{Module, Param, Rng};
use nn_recurrent::{CellKind, RecurrentConfig};
use nn_train::{
    AdamConfig, Batch, Bptt, Clip, EmbeddingConfig, Error, Objective, Optimizer, SeqModel,
    SeqModelConfig, SeqWorkspace, Target, Targets, Trainer, TrainerConfig, batch_fn,
};

const V: usize = 7;
const E: usize = 5;
const T: usize = 6;
const B: usize = 3;

fn model(dropout: f64, seed: u64) -> SeqModel<f32> {
    let rnn = RecurrentConfig::new(CellKind::Lstm, E, 8)
        .with_num_layers(2)
        .with_dropout(dropout);
    SeqModelConfig::new(rnn, V)
        .with_embedding(EmbeddingConfig::new(V, E).with_padding_idx(0))
        .init(&mut Rng::seed_from(seed))
        .unwrap()
}

fn trainer(dropout: f64, seed: u64, bptt: Bptt) -> Trainer<f32> {
    let tc = TrainerConfig::new(Objective::NextToken)
        .with_bptt(bptt)
        .with_carry_state(true)
        .with_clip(Clip::Norm(1.0));
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    Trainer::new(model(dropout, seed), opt, Rng::seed_from(seed + 1), tc).unwrap()
}

/// Ids 1..V from the trainer's generator; sequence 0 is padding (id 0, target ignored) from
/// step `T - 2` on.
fn fill(rng: &mut Rng, b: &mut Batch<f32>) {
    b.batch = B;
    b.ids.clear();
    b.ids.extend((0..T * B).map(|_| 1 + rng.below(V - 1)));
    let mut targets: Vec<usize> = b.ids.iter().map(|&i| (i * 3) % V).collect();
    for t in T - 2..T {
        b.ids[t * B] = 0;
        targets[t * B] = IGNORE_INDEX;
    }
    b.targets = Targets::Classes(targets);
}

fn bits(m: &impl Module<f32>) -> Vec<Vec<u32>> {
    let mut v = Vec::new();
    m.visit(&mut |_, p: &Param<f32>| v.push(p.value.iter().map(|x| x.to_bits()).collect()));
    v
}

#[test]
fn resumed_token_training_with_dropout_continues_bit_for_bit() {
    let source = || {
        batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
            fill(rng, b);
            Ok(())
        })
    };
    let bptt = Bptt::Truncated { window: 4 };
    let n = 6;
    let mut straight = trainer(0.3, 1, bptt);
    let report = straight.run(n, &mut source(), None, &mut |_| {}).unwrap();
    assert!(report.losses.iter().all(|l| l.is_finite()));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let mut first = trainer(0.3, 1, bptt);
    first.run(n / 2, &mut source(), None, &mut |_| {}).unwrap();
    first.save_checkpoint(&path).unwrap();
    let file = nn_core::tensor_io::TensorFile::open(&path).unwrap();
    assert!(file.contains("embed.weight"));
    drop(first);

    let mut resumed = trainer(0.3, 9, bptt);
    resumed.load_checkpoint(&path).unwrap();
    resumed
        .run(n / 2, &mut source(), None, &mut |_| {})
        .unwrap();
    assert_eq!(bits(&resumed.model), bits(&straight.model));
    assert_eq!(resumed.rng, straight.rng);
    assert_eq!(resumed.optimizer, straight.optimizer);
    // The model alone comes out of the checkpoint with its embedding.
    let m = SeqModel::<f32>::from_checkpoint(&path).unwrap();
    assert_eq!(m.config(), straight.model.config());

    // A checkpoint of a model without an embedding does not load into one with it.
    let plain = SeqModelConfig::new(
        RecurrentConfig::new(CellKind::Lstm, E, 8).with_num_layers(2),
        V,
    )
    .init::<f32>(&mut Rng::seed_from(0))
    .unwrap();
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let tc = TrainerConfig::new(Objective::NextToken);
    let mut other = Trainer::new(plain, opt, Rng::seed_from(0), tc).unwrap();
    assert!(matches!(
        other.load_checkpoint(&path),
        Err(Error::CheckpointMismatch { .. })
    ));
}

#[test]
fn a_window_whose_targets_are_all_ignored_only_carries_the_state() {
    // Window 2 of 2 (steps 3..6) of sequence batch 1: every target ignored in it.
    let mut t = trainer(0.0, 3, Bptt::Truncated { window: 3 });
    let mut source = batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
        fill(rng, b);
        if let Targets::Classes(targets) = &mut b.targets {
            targets[3 * B..].fill(IGNORE_INDEX);
        }
        Ok(())
    });
    let r = t.train_step(&mut source).unwrap();
    assert_eq!(r.updates, 1);
    assert!(r.loss.is_finite());
    assert!(t.carried_state().is_some());

    // The step's loss is the mean over the kept targets: with full BPTT, the model's loss.
    let mut full = trainer(0.0, 3, Bptt::Full);
    let before = full.model.clone();
    let mut batch = Batch::default();
    let r = full
        .train_step(&mut batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
            fill(rng, b);
            batch = b.clone();
            Ok(())
        }))
        .unwrap();
    let Targets::Classes(targets) = &batch.targets else {
        unreachable!()
    };
    let want = before
        .loss(
            &batch.ids,
            B,
            None,
            Target::NextToken(targets),
            &mut SeqWorkspace::new(),
        )
        .unwrap();
    assert_eq!(r.loss, f64::from(want));
}

#[test]
fn no_dropout_draws_nothing_and_keeps_the_bits() {
    // p = 0 with a generator: the bits of the pass without one, and the generator untouched.
    let ids: Vec<usize> = (0..T * B).map(|i| i % V).collect();
    let targets: Vec<usize> = ids.iter().map(|&i| (i + 1) % V).collect();
    let mut a = model(0.0, 4);
    let mut b = a.clone();
    let mut ws = SeqWorkspace::new();
    let mut rng = Rng::seed_from(5);
    let la = a
        .forward_backward_with_dropout(
            &ids,
            B,
            None,
            Target::NextToken(&targets),
            &mut ws,
            Some(&mut rng),
        )
        .unwrap();
    assert_eq!(rng, Rng::seed_from(5));
    let lb = b
        .forward_backward(
            &ids,
            B,
            None,
            Target::NextToken(&targets),
            &mut SeqWorkspace::new(),
        )
        .unwrap();
    assert_eq!(la.to_bits(), lb.to_bits());
    let grads = |m: &SeqModel<f32>| {
        let mut v = Vec::new();
        m.visit(&mut |_, p| v.push(p.grad.clone()));
        v
    };
    assert_eq!(grads(&a), grads(&b));
}

#[test]
fn bad_batches_are_typed_errors() {
    let run = |f: fn(&mut Rng, &mut Batch<f32>)| {
        let mut t = trainer(0.0, 2, Bptt::Full);
        let before = bits(&t.model);
        let r = t.train_step(&mut batch_fn(
            move |_, rng: &mut Rng, b: &mut Batch<f32>| {
                f(rng, b);
                Ok(())
            },
        ));
        assert_eq!(bits(&t.model), before);
        assert_eq!(t.step(), 0);
        r.unwrap_err()
    };
    let core = |e: Error| match e {
        Error::Core(c) => c,
        other => panic!("{other}"),
    };
    // A dense x besides the ids.
    let e = run(|rng, b| {
        fill(rng, b);
        b.x = nalgebra::DMatrix::zeros(E, T * B);
    });
    assert!(matches!(e, Error::InputKind { .. }), "{e}");
    let e = run(|rng, b| {
        fill(rng, b);
        b.ids[5] = V;
    });
    assert!(matches!(
        core(e),
        nn_core::Error::TokenOutOfRange { index: 5, .. }
    ));
    let e = run(|rng, b| {
        fill(rng, b);
        b.targets = Targets::Classes(vec![IGNORE_INDEX; T * B]);
    });
    assert!(matches!(core(e), nn_core::Error::AllTargetsIgnored { .. }));
    let e = run(|rng, b| {
        fill(rng, b);
        b.targets = Targets::Classes(vec![1; T * B - 1]);
    });
    assert!(matches!(core(e), nn_core::Error::LengthMismatch { .. }));
    let e = run(|rng, b| {
        fill(rng, b);
        b.ids.pop();
    });
    assert!(matches!(core(e), nn_core::Error::LengthMismatch { .. }));

    // Ids for a model without an embedding.
    let plain = SeqModelConfig::new(RecurrentConfig::new(CellKind::Gru, V, 4), V)
        .init::<f32>(&mut Rng::seed_from(0))
        .unwrap();
    let opt = Optimizer::new(AdamConfig::new(0.01)).unwrap();
    let tc = TrainerConfig::new(Objective::NextToken);
    let mut t = Trainer::new(plain, opt, Rng::seed_from(0), tc).unwrap();
    let e = t
        .train_step(&mut batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
            fill(rng, b);
            Ok(())
        }))
        .unwrap_err();
    assert!(matches!(e, Error::InputKind { .. }), "{e}");

    // Dropout outside [0, 1).
    for p in [1.0, -0.1, f64::NAN] {
        let cfg = SeqModelConfig::new(
            RecurrentConfig::new(CellKind::Gru, E, 4)
                .with_num_layers(2)
                .with_dropout(p),
            V,
        );
        assert!(matches!(
            cfg.init::<f32>(&mut Rng::seed_from(0)),
            Err(Error::Core(nn_core::Error::InvalidConfig(_)))
        ));
    }
}

#[test]
fn training_steps_draw_dropout_masks_and_evaluation_does_not() {
    let source = || {
        batch_fn(|_, rng: &mut Rng, b: &mut Batch<f32>| {
            fill(rng, b);
            Ok(())
        })
    };
    let (mut with, mut without) = (trainer(0.5, 6, Bptt::Full), trainer(0.0, 6, Bptt::Full));
    with.run(2, &mut source(), None, &mut |_| {}).unwrap();
    without.run(2, &mut source(), None, &mut |_| {}).unwrap();
    // The same batches were drawn; the masks drew more from the generator and changed the update.
    assert_ne!(with.rng, without.rng);
    assert_ne!(bits(&with.model), bits(&without.model));
    // Evaluation of the dropout model: no masks, the same loss every time.
    let ids: Vec<usize> = (0..T * B).map(|i| 1 + i % (V - 1)).collect();
    let targets: Vec<usize> = ids.iter().map(|&i| (i + 1) % V).collect();
    let mut ws = SeqWorkspace::new();
    let eval = |ws: &mut SeqWorkspace<f32>| {
        with.model
            .loss(&ids, B, None, Target::NextToken(&targets), ws)
            .unwrap()
            .to_bits()
    };
    let first = eval(&mut ws);
    assert_eq!(eval(&mut ws), first);
    // ...and the loss of the same model with dropout 0 (the setting only acts in training).
    let mut no_p = with.model.clone();
    no_p.rnn = RecurrentConfig::new(CellKind::Lstm, E, 8)
        .with_num_layers(2)
        .init(&mut Rng::seed_from(0))
        .unwrap();
    for l in 0..2 {
        *no_p.rnn.weights_mut(l, 0).unwrap() = with.model.rnn.weights(l, 0).unwrap().clone();
    }
    let plain = no_p
        .loss(
            &ids,
            B,
            None,
            Target::NextToken(&targets),
            &mut SeqWorkspace::new(),
        )
        .unwrap();
    assert_eq!(plain.to_bits(), first);
}
