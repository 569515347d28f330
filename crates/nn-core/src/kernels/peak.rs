//! One core's `f32` fused multiply-add peak, measured: the ceiling against which a kernel's
//! GFLOP/s is a share.
//!
//! [`fma_peak_gflops`] runs [`CHAINS`] independent chains `acc_c = a·b + acc_c` on the widest
//! vectors the CPU has (16 lanes with AVX-512, else 8 with AVX2 + FMA, chosen at run time) and
//! reports `2 · lanes · CHAINS · iterations / seconds`. A core with `P` FMA ports of latency `L`
//! cycles needs `P·L` multiply-adds in flight to issue one per port per cycle: 8 on a two-port
//! Xeon (latency 4), 4 on Zen 4 (one 512-bit operation per cycle). With 24 chains the loop is
//! bound by the ports, not by the latency, on every such core, so the figure is
//! `2 · lanes · ports · GHz` (about `2 · 16 · 2 · GHz` on a two-port AVX-512 Xeon) whatever the
//! CPU. With 16 vector registers (AVX2) 12 chains are kept, still at least `P·L` on current cores.
//!
//! The chains' values are kept (summed and returned through `black_box`), so no work is elided;
//! `a·b` is just below one, so no value overflows or becomes subnormal.

use std::hint::black_box;
use std::time::Instant;

/// Independent chains of the AVX-512 loop (24 of the 32 registers).
pub const CHAINS: usize = 24;

/// One core's `f32` multiply-add peak in GFLOP/s (a multiply-add counts two), best of `rounds`
/// runs of about `ms` milliseconds each; `NaN` on a CPU with neither AVX-512 nor AVX2 + FMA.
pub fn fma_peak_gflops(rounds: usize, ms: f64) -> f64 {
    let Some((lanes, chains, run)) = probe() else {
        return f64::NAN;
    };
    let flops_per_iter = 2.0 * (lanes * chains) as f64;
    // Iterations for about `ms` milliseconds, from a short first run.
    let mut iters = 1 << 14;
    loop {
        let t = Instant::now();
        black_box(run(iters));
        let s = t.elapsed().as_secs_f64();
        if s * 1e3 >= ms / 4.0 || iters >= 1 << 34 {
            iters = ((iters as f64) * (ms / 1e3) / s.max(1e-9)).max(1.0) as usize;
            break;
        }
        iters *= 4;
    }
    let mut best = 0.0f64;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        black_box(run(black_box(iters)));
        best = best.max(flops_per_iter * iters as f64 / t.elapsed().as_secs_f64() * 1e-9);
    }
    best
}

/// The loop for this CPU: `(lanes, chains, loop)`, or `None` without AVX2 + FMA.
type Probe = (usize, usize, fn(usize) -> f32);

fn probe() -> Option<Probe> {
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd::has_avx512() {
            // SAFETY: AVX-512F was detected at run time.
            return Some((16, CHAINS, |n| unsafe { chains_avx512(n) }));
        }
        if super::simd::has_avx2_fma() {
            // SAFETY: AVX2 and FMA were detected at run time.
            return Some((8, 12, |n| unsafe { chains_avx2(n) }));
        }
    }
    None
}

/// [`CHAINS`] chains of 16-lane multiply-adds, `iters` steps each; the sum of all lanes.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    let (a, b) = (_mm512_set1_ps(0.999_999_9), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
    _mm512_reduce_add_ps(sum)
}

/// 12 chains of 8-lane multiply-adds (16 registers), `iters` steps each; the sum of all lanes.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999_9), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    let mut out = [0f32; 8];
    // SAFETY: `out` holds the 8 lanes written.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

#[cfg(test)]
mod tests {
    /// The probe runs briefly and reports a positive rate on CPUs with AVX2 + FMA (NaN without).
    #[test]
    fn reports_a_rate() {
        let g = super::fma_peak_gflops(1, 2.0);
        if super::probe().is_some() {
            assert!(g.is_finite() && g > 0.0, "{g}");
        } else {
            assert!(g.is_nan());
        }
    }
}
