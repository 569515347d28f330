//! Fuzzes the safetensors weight loader: any bytes either load into a layer or give an error.
//! The layers match the seed fixtures' sizes, so mutated fixtures get past the name checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn_core::nalgebra::DMatrix;
use nn_core::tensor_io::TensorFile;
use nn_core::{Dense, Rng};
use nn_recurrent::{CellKind, Nonlinearity, RecurrentCache, RecurrentConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = TensorFile::from_bytes(data.to_vec(), "fuzz") else {
        return;
    };
    let mut rng = Rng::seed_from(0);
    let mut dense = Dense::<f32>::new(5, 4, &mut rng).unwrap();
    let _ = file.load_module(&mut dense);
    for name in file.names() {
        let _ = file.values::<f64>(name);
        let _ = file.indices(name);
        let _ = file.columns::<f32>(name);
        let _ = file.shape(name);
    }
    let _ = file.metadata("case");
    for cell in [
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::Rnn(Nonlinearity::Tanh),
    ] {
        for (layers, bidirectional) in [(1, false), (2, true)] {
            let config = RecurrentConfig::new(cell, 3, 4)
                .with_num_layers(layers)
                .with_bidirectional(bidirectional);
            let mut layer = config.init::<f64>(&mut rng).unwrap();
            if file.load_module(&mut layer).is_ok() {
                // Loaded weights may hold NaN or huge values: forward must still not panic.
                let x = DMatrix::from_element(3, 4, 0.5);
                let mut cache = RecurrentCache::new();
                let _ = layer.forward(&x, 2, None, &mut cache);
            }
        }
    }
});
