//! Fuzzes the checkpoint loader: any bytes either restore the small trainer (which then takes a
//! training step, succeeding or giving an error) or give an error that changed nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nn_core::Module;
use nn_core::tensor_io::TensorFile;
use nn_fuzz::{fixed_batches, small_trainer};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = TensorFile::from_bytes(data.to_vec(), "fuzz") else {
        return;
    };
    let mut trainer = small_trainer();
    let before = trainer.model.clone();
    match trainer.load_checkpoint_file(&file) {
        Ok(()) => {
            let _ = trainer.train_step(&mut fixed_batches());
            let _ = trainer.train_step(&mut fixed_batches());
        }
        Err(_) => {
            // All-or-nothing: a refused checkpoint leaves the parameters as they were.
            let mut same = true;
            let mut after = Vec::new();
            trainer.model.visit(&mut |_, p| after.push(p.value.clone()));
            let mut i = 0;
            before.visit(&mut |_, p| {
                same &= after[i] == p.value;
                i += 1;
            });
            assert!(same, "a failed load changed the model");
            assert_eq!(trainer.step(), 0);
        }
    }
});
