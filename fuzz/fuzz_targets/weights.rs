//! Fuzzes the safetensors weight loader: any bytes either load into a layer or give an error;
//! a loaded Dense layer's output is finite or an error. The body is `nn_fuzz::weights`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nn_fuzz::weights(data));
