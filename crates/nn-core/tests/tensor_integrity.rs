//! Tensor files that know what they hold: the data's checksum is checked on reading, the same
//! tensors and metadata give the same bytes, and f64 values too large for f32 are an error.

use nn_core::tensor_io::{TensorFile, TensorWriter, checksum};
use nn_core::{Error, Param};

fn writer() -> TensorWriter {
    let mut w = TensorWriter::new();
    let values: Vec<f32> = (0..40).map(|i| i as f32 * 0.37 - 3.0).collect();
    w.values::<f32>("w", &[5, 8], &values)
        .u64s("step", &[7])
        .values::<f64>("lr", &[1], &[0.001]);
    w
}

#[test]
fn a_checksum_over_the_data_catches_every_single_bit_flip() {
    let mut w = writer();
    w.metadata("k", "v");
    let bytes = w.to_bytes().unwrap();
    let file = TensorFile::from_bytes(bytes.clone(), "ok").unwrap();
    assert!(file.metadata(checksum::KEY).is_some());
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data = 8 + n..bytes.len();
    assert!(data.len() > 150);
    for byte in data {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << bit;
            match TensorFile::from_bytes(flipped, "flipped.safetensors") {
                Err(Error::Checksum { path, .. }) => {
                    assert_eq!(path.to_str(), Some("flipped.safetensors"))
                }
                other => panic!("byte {byte} bit {bit}: {other:?}"),
            }
        }
    }
    // A file without a checksum (PyTorch's, or written before) loads as before.
    let plain = safetensors::serialize(
        [(
            "x",
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![1],
                &[0, 0, 128, 63],
            )
            .unwrap(),
        )],
        None,
    )
    .unwrap();
    let file = TensorFile::from_bytes(plain, "plain").unwrap();
    assert_eq!(file.values::<f32>("x").unwrap(), [1.0]);
    // A checksum that is not 16 hex digits is corruption too.
    let bytes = writer().to_bytes().unwrap();
    let stored = TensorFile::from_bytes(bytes.clone(), "ok")
        .unwrap()
        .metadata(checksum::KEY)
        .unwrap()
        .to_string();
    let pos = bytes
        .windows(16)
        .position(|w| w == stored.as_bytes())
        .unwrap();
    let mut garbled = bytes.clone();
    garbled[pos..pos + 16].copy_from_slice(b"gggggggggggggggg");
    assert!(matches!(
        TensorFile::from_bytes(garbled, "g"),
        Err(Error::Checksum { .. })
    ));
}

#[test]
fn metadata_is_written_in_sorted_order_so_the_same_state_gives_the_same_bytes() {
    let keys = ["zeta", "alpha", "model", "format", "m", "b"];
    let mut forward = writer();
    for k in keys {
        forward.metadata(k, &format!("value of {k}"));
    }
    let mut backward = TensorWriter::new();
    let values: Vec<f32> = (0..40).map(|i| i as f32 * 0.37 - 3.0).collect();
    // Tensors and metadata added in another order.
    backward
        .values::<f64>("lr", &[1], &[0.001])
        .u64s("step", &[7]);
    for k in keys.iter().rev() {
        backward.metadata(k, &format!("value of {k}"));
    }
    backward.values::<f32>("w", &[5, 8], &values);
    let bytes = forward.to_bytes().unwrap();
    assert_eq!(bytes, backward.to_bytes().unwrap());
    for _ in 0..10 {
        assert_eq!(bytes, forward.to_bytes().unwrap());
    }
    // The header's metadata keys are in sorted order.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    let mut at: Vec<usize> = keys
        .iter()
        .map(|k| header.find(&format!("\"{k}\"")).unwrap())
        .collect();
    let mut sorted_keys = keys.to_vec();
    sorted_keys.sort_unstable();
    at.sort_unstable();
    let found: Vec<&str> = at
        .iter()
        .map(|&i| {
            keys.iter()
                .find(|k| header[i..].starts_with(&format!("\"{k}\"")))
                .copied()
                .unwrap()
        })
        .collect();
    assert_eq!(found, sorted_keys);
    // And it reads back.
    let file = TensorFile::from_bytes(bytes, "m").unwrap();
    assert_eq!(file.metadata("zeta"), Some("value of zeta"));
    assert_eq!(file.values::<f32>("w").unwrap(), values);
    // No tensors at all, metadata only.
    let mut empty = TensorWriter::new();
    empty.metadata("k", "v");
    let file = TensorFile::from_bytes(empty.to_bytes().unwrap(), "e").unwrap();
    assert_eq!(file.metadata("k"), Some("v"));
    assert!(file.names().is_empty());
}

#[test]
fn f64_values_beyond_f32_range_are_an_error_when_loaded_into_f32() {
    let mut w = TensorWriter::new();
    w.values::<f64>("big", &[3], &[1.0, -1e300, 2.0])
        .values::<f64>("tiny", &[2], &[1e-300, f64::MAX.sqrt().recip()])
        .values::<f64>("edge", &[1], &[f64::from(f32::MAX)]);
    let file = TensorFile::from_bytes(w.to_bytes().unwrap(), "w.safetensors").unwrap();
    let err = file.values::<f32>("big").unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(
        err.to_string().contains("`big`") && err.to_string().contains("f32"),
        "{err}"
    );
    let mut p = Param::<f32>::vector(3);
    assert!(file.load_param("big", &mut p).is_err());
    assert_eq!(p.value.iter().filter(|v| v.is_infinite()).count(), 0);
    // Into f64 it is exact; small values underflow to zero as f32 always does; f32::MAX fits.
    assert_eq!(file.values::<f64>("big").unwrap()[1], -1e300);
    assert_eq!(file.values::<f32>("tiny").unwrap()[0], 0.0);
    assert_eq!(file.values::<f32>("edge").unwrap(), [f32::MAX]);
}
