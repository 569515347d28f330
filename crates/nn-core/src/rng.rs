//! The library's seeded random number generator: xoshiro256++ seeded through SplitMix64.
//!
//! Every random draw (initial weights, batches, sampling) comes from a [`Rng`] made from a seed,
//! so one seed gives the same numbers on every run and machine. Its whole state is four `u64`s
//! ([`Rng::state`]), which a checkpoint stores so that a resumed run draws exactly what the
//! uninterrupted one would. It implements `rand`'s `RngCore`, so `rand` and `rand_distr`
//! distributions sample from it.

use rand::RngCore;

/// xoshiro256++ (Blackman & Vigna), a small fast generator with a 256-bit state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn seed_from(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            // SplitMix64, as the xoshiro authors recommend for seeding.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The whole state, for checkpoints.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator continuing from a saved state. An all-zero state (which xoshiro cannot leave)
    /// is replaced by the state of seed 0.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            Rng::seed_from(0)
        } else {
            Rng { s }
        }
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform index in `0..n`, by Lemire's multiply-shift (bias below 2^-32 for the sizes used
    /// here).
    ///
    /// # Panics
    ///
    /// When `n == 0`: the empty range has no index (like `rand`'s `random_range(0..0)`).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0): the empty range 0..0 has no index");
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "Rng::below(0)")]
    fn below_zero_panics_as_documented() {
        Rng::seed_from(0).below(0);
    }

    #[test]
    fn same_seed_same_stream_and_state_resumes() {
        let mut a = Rng::seed_from(7);
        let mut b = Rng::seed_from(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c = Rng::from_state(a.state());
        assert_eq!(a.next_u64(), c.next_u64());
        assert_ne!(Rng::seed_from(8).next_u64(), Rng::seed_from(7).next_u64());
    }

    #[test]
    fn uniform_and_below_stay_in_range() {
        let mut r = Rng::seed_from(1);
        for _ in 0..1000 {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(3) < 3);
        }
    }
}
