//! Run-time selection of wider vector instructions for elementwise loops.
//!
//! The crates are compiled for the baseline x86-64 CPU (SSE2: 4 `f32` lanes). [`dispatch`] runs
//! a closure inside a function compiled with AVX-512 (16 lanes; with AVX2 and FMA) or else AVX2
//! and FMA (8 lanes) when the CPU has them, detected once. The closure and the
//! `#[inline(always)]` loops it calls are inlined into that function, so LLVM vectorizes them
//! for the wider registers; on other CPUs the same code runs as compiled.
//!
//! Results do not depend on the path: without fast-math flags LLVM keeps every floating-point
//! operation, and its order, as written, whatever the vector width; the loops use no fused
//! multiply-add except where the code asks for one (`mul_add`, exact on every path). The test
//! below checks the paths against one another bit for bit.
//!
//! Why AVX-512 where the CPU has it: the cells' activations are chains of dependent operations
//! (`exp_f32`'s range reduction and polynomial, a division), and a 16-lane register carries twice
//! the lanes per chain in flight (figures in PERF.md). The matrix
//! kernels: matrixmultiply picks its own (also AVX-512 when present); ours
//! ([`packed`](crate::kernels::packed)) picks among the same copies (`best_isa`) through its own
//! `target_feature` wrappers, and on AVX-512 a 16-row `f32` panel fills one 512-bit register.
//! On Intel's AVX-512 cores (two 512-bit FMA ports) the matrix kernels use wider register tiles
//! (`Isa::Avx512TwoPorts`, [`has_avx512_two_ports`]); the instructions, and the bits, are the
//! same.

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

/// `true` when this CPU has AVX-512 (foundation and vector-length extensions) besides AVX2 and
/// FMA (x86_64 only), detected once.
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            has_avx2_fma()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `true` when this CPU has AVX-512 ([`has_avx512`]) and is an Intel one (x86_64 only), detected
/// once. Intel's AVX-512 server cores (Skylake-SP to Granite Rapids) issue 512-bit fused
/// multiply-adds on two ports with a latency of 4 cycles, so a kernel needs at least 8 of them
/// in flight, and its register tiles are chosen for that (`Isa::Avx512TwoPorts`). AMD's Zen 4
/// splits a 512-bit operation into two 256-bit halves (one per cycle, 4 in flight suffice); it
/// keeps the tiles measured there (`Isa::Avx512`). Intel cores with a single 512-bit port
/// lose nothing with the wider tiles: they only need fewer chains.
///
/// The environment variable `NN_TWO_PORT_TILES` (`1` or `0`, read once) overrides the vendor
/// test on a CPU with AVX-512, to compare the two tile choices on one machine; the tiles change
/// no result, only the speed.
#[inline]
pub fn has_avx512_two_ports() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            match std::env::var("NN_TWO_PORT_TILES").as_deref() {
                Ok("1") => return has_avx512(),
                Ok("0") => return false,
                _ => {}
            }
            // CPUID leaf 0: the vendor string in EBX, EDX, ECX ("GenuineIntel").
            // SAFETY: CPUID leaf 0 exists on every x86_64 CPU (the intrinsic is safe from Rust
            // 1.94 on, unsafe before).
            #[allow(unused_unsafe)]
            let id = unsafe { std::arch::x86_64::__cpuid(0) };
            let intel = (id.ebx, id.edx, id.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
            has_avx512() && intel
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A compiled copy of vectorized code: which instructions it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// As compiled for the baseline CPU.
    Generic,
    /// AVX2 with fused multiply-adds (x86_64).
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// AVX-512F and VL, with AVX2 and FMA (x86_64).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// [`Avx512`](Self::Avx512)'s instructions on a core with two 512-bit FMA ports
    /// ([`has_avx512_two_ports`]): the same elementwise code, wider register tiles in the matrix
    /// kernels (more independent sums in flight), the same bits.
    #[cfg(target_arch = "x86_64")]
    Avx512TwoPorts,
}

/// The widest copy this CPU runs: AVX-512 (with two-port tiles on Intel), else AVX2 + FMA, else
/// the baseline (detected once).
#[inline(always)]
pub(crate) fn best_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512_two_ports() {
            return Isa::Avx512TwoPorts;
        }
        if has_avx512() {
            return Isa::Avx512;
        }
        if has_avx2_fma() {
            return Isa::Avx2Fma;
        }
    }
    Isa::Generic
}

/// Every copy this CPU runs, the baseline first (for tests that compare them). Both AVX-512 tile
/// choices run on any CPU with AVX-512 (they differ in speed only), so both are listed there.
#[cfg(test)]
pub(crate) fn available_isas() -> Vec<Isa> {
    #[cfg(target_arch = "x86_64")]
    let wide = [
        (has_avx2_fma(), Isa::Avx2Fma),
        (has_avx512(), Isa::Avx512),
        (has_avx512(), Isa::Avx512TwoPorts),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let wide: [(bool, Isa); 0] = [];
    std::iter::once(Isa::Generic)
        .chain(wide.into_iter().filter_map(|(has, isa)| has.then_some(isa)))
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for `isa`. Mark the closure's loops `#[inline(always)]` so they are
/// compiled into that copy.
///
/// # Safety
/// The CPU must support `isa` (as [`best_isa`] and [`available_isas`] find it).
#[inline(always)]
pub(crate) unsafe fn run_on<R>(isa: Isa, f: impl FnOnce() -> R) -> R {
    match isa {
        Isa::Generic => f(),
        // SAFETY: the caller guarantees the CPU supports AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => unsafe { run_avx2(f) },
        // SAFETY: the caller guarantees the CPU supports AVX-512F, AVX-512VL, AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512TwoPorts => unsafe { run_avx512(f) },
    }
}

/// Runs `f` compiled for AVX-512, or else AVX2 + FMA, when the CPU has them, else as is. Mark
/// the closure's loops `#[inline(always)]` so they are compiled into the wide version.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: `best_isa` only names a copy after run-time detection of its features.
    unsafe { run_on(best_isa(), f) }
}

#[cfg(test)]
mod tests {
    use crate::float::{exp_f32, sigmoid_f32, tanh_f32};

    /// Activations, fused multiply-adds and plain arithmetic on values across their ranges
    /// (and NaN, infinities, zeros), as the cells and losses run them.
    #[inline(always)]
    fn run(v: &[f32]) -> Vec<f32> {
        v.iter()
            .map(|&a| {
                let s = sigmoid_f32(a) * (1.0 - sigmoid_f32(-a));
                tanh_f32(a).mul_add(1.5, 0.25) + s - exp_f32(a * 0.5) / (1.0 + a * a)
            })
            .collect()
    }

    fn inputs() -> Vec<f32> {
        let mut x: Vec<f32> = (0..3001).map(|i| (i as f32 - 1500.0) * 0.0731).collect();
        x.extend([
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            0.0,
            -0.0,
            1e-30,
            -1e-30,
        ]);
        x
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        let x = inputs();
        let plain = run(&x);
        assert!(same_bits(&super::dispatch(|| run(&x)), &plain));
        for isa in super::available_isas() {
            // SAFETY: `available_isas` lists only what this CPU supports.
            let got = unsafe { super::run_on(isa, || run(&x)) };
            assert!(same_bits(&got, &plain), "{isa:?} path");
        }
    }
}
