//! The checksum of a tensor file's data: FNV-1a (64-bit) over the bytes after the header, kept in
//! the header's metadata under [`KEY`] as 16 hex digits.
//!
//! [`super::TensorWriter`] writes it into every file; [`super::TensorFile`] checks it when the
//! key is present (files written before it, and PyTorch's, have none and load as before). FNV-1a
//! changes its state one-to-one with every byte, so any change confined to one byte, among them
//! every single-bit flip, changes the sum; other damage goes unseen with odds of about 2^-64.

/// The metadata key of the checksum.
pub const KEY: &str = "data_fnv1a64";

/// FNV-1a, 64-bit, of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The checksum as stored: 16 lowercase hex digits.
pub fn to_hex(sum: u64) -> String {
    format!("{sum:016x}")
}

/// The stored form read back; `None` unless exactly 16 hex digits.
pub fn from_hex(text: &str) -> Option<u64> {
    if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        u64::from_str_radix(text, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            from_hex(&to_hex(0x0123_4567_89ab_cdef)),
            Some(0x0123_4567_89ab_cdef)
        );
        assert_eq!(from_hex("+123456789abcdef"), None);
    }
}
