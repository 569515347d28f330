//! Fuzzes the fixture reader and runners (`cargo xtask check-fixtures`): any bytes either run as
//! a fixture (passing or not) or give an error message. The body is `nn_fuzz::fixture`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nn_fuzz::fixture(data));
