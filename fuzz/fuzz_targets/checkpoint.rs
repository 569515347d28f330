//! Fuzzes the checkpoint loader: any bytes either restore the small trainer (which then takes
//! training steps, each finite or refused with nothing changed) or give an error that changed
//! nothing. The body is `nn_fuzz::checkpoint`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nn_fuzz::checkpoint(data));
