//! `Recurrent::forward` and `backward` take views (a window of a longer batch, with no copy) with
//! the bits of an owned copy, and backward refuses an `x` that is not the forward's.

use nalgebra::DMatrix;
use nn_core::{Error, Init, Module, Rng};
use nn_recurrent::{CellKind, RecurrentCache, RecurrentConfig};

fn bits(m: &DMatrix<f32>) -> Vec<u32> {
    m.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn views_give_an_owned_copys_bits() {
    let (i, t, b) = (3, 4, 2);
    let mut rng = Rng::seed_from(1);
    for cell in [CellKind::Lstm, CellKind::Gru] {
        let config = RecurrentConfig::new(cell, i, 6)
            .with_num_layers(2)
            .with_bidirectional(true);
        let mut layer = config.init::<f32>(&mut rng).unwrap();
        // A window of steps 2..6 of a longer batch, and rows 1..4 of a taller matrix.
        let long = Init::Normal { std: 1.0 }
            .matrix::<f32>(i + 2, 9 * b, &mut rng)
            .unwrap();
        let view = long.view((1, 2 * b), (i, t * b));
        let owned = view.into_owned();
        let d_out = Init::Normal { std: 1.0 }
            .matrix::<f32>(12, t * b, &mut rng)
            .unwrap();
        let mut run = |x: nalgebra::DMatrixView<'_, f32>| {
            let mut cache = RecurrentCache::new();
            layer.forward(x, b, None, &mut cache).unwrap();
            let out = cache.output().clone();
            layer.zero_grad();
            let mut dx = DMatrix::zeros(i, t * b);
            layer
                .backward(x, &mut cache, &d_out, None, Some(&mut dx))
                .unwrap();
            let grads: Vec<u32> = layer
                .param_names()
                .iter()
                .enumerate()
                .flat_map(|(k, _)| {
                    let mut all = Vec::new();
                    let mut n = 0;
                    layer.visit(&mut |_, p| {
                        if n == k {
                            all = bits(&p.grad);
                        }
                        n += 1;
                    });
                    all
                })
                .collect();
            (bits(&out), bits(&dx), grads)
        };
        let a = run(view);
        let b2 = run(owned.as_view());
        assert!(a == b2, "{cell:?}");
    }
}

#[test]
fn backward_refuses_an_x_that_is_not_the_forwards() {
    let (i, t, b) = (3, 5, 2);
    let mut rng = Rng::seed_from(2);
    let mut layer = RecurrentConfig::new(CellKind::Lstm, i, 4)
        .init::<f64>(&mut rng)
        .unwrap();
    let x = Init::Normal { std: 1.0 }
        .matrix::<f64>(i, t * b, &mut rng)
        .unwrap();
    let d_out = DMatrix::from_element(4, t * b, 1.0);
    let mut cache = RecurrentCache::new();
    // 3x (the case), one value changed, another matrix of the same shape.
    let mut one = x.clone();
    one[(2, 7)] += 1e-9;
    for bad in [&x * 3.0, one, DMatrix::zeros(i, t * b)] {
        layer.forward(&x, b, None, &mut cache).unwrap();
        let err = layer
            .backward(&bad, &mut cache, &d_out, None, None)
            .unwrap_err();
        assert!(matches!(err, Error::InputChanged { .. }), "{err}");
        // Nothing was consumed: the right x still works.
        layer.zero_grad();
        layer.backward(&x, &mut cache, &d_out, None, None).unwrap();
    }
    // The same values in another matrix are the forward's input.
    layer.forward(&x, b, None, &mut cache).unwrap();
    layer
        .backward(&x.clone(), &mut cache, &d_out, None, None)
        .unwrap();
}
