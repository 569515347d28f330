//! Run-time selection of wider vector instructions for elementwise loops.
//!
//! The crates are compiled for the baseline x86-64 CPU (SSE2: 4 `f32` lanes). [`dispatch`] runs
//! a closure inside a function compiled with AVX2 and FMA enabled (8 lanes) when the CPU has
//! them, detected once. The closure and the `#[inline(always)]` loops it calls are inlined into
//! that function, so LLVM vectorizes them for the wider registers; on other CPUs the same code
//! runs as compiled. Results do not depend on the path: the loops use no fused multiply-add
//! (Rust never contracts `a * b + c`), so every operation rounds the same way.

/// `true` when this CPU has AVX2 and FMA (x86_64 only), detected once.
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for AVX2 + FMA when the CPU has them, else as is. Mark the closure's loops
/// `#[inline(always)]` so they are compiled into the wide version.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
        return unsafe { run_avx2(f) };
    }
    f()
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_paths_give_the_same_bits() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.031).collect();
        let run = |v: &[f32]| {
            v.iter()
                .map(|&a| crate::float::tanh_f32(a) * 1.5 + 0.25)
                .collect::<Vec<f32>>()
        };
        let wide = super::dispatch(|| run(&x));
        assert_eq!(wide, run(&x));
    }
}
