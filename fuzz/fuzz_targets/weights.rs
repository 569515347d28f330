//! Fuzzes the safetensors weight loader: any bytes either load into a layer or give an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn_core::tensor_io::TensorFile;
use nn_core::{Dense, Module, Rng};

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = TensorFile::from_bytes(data.to_vec(), "fuzz") {
        let mut rng = Rng::seed_from(0);
        let mut dense = Dense::<f32>::new(2, 3, &mut rng).unwrap();
        let _ = file.load_module(&mut dense);
        for name in file.names() {
            let _ = file.values::<f64>(name);
            let _ = file.indices(name);
            let _ = file.columns::<f32>(name);
        }
        let _ = dense.num_params();
    }
});
