//! GFLOP/s of `packed_matmul` (weight packed once) against `matmul` (matrixmultiply, which packs
//! both operands on every call), for the shapes of a recurrent layer's time loop.
//!
//! ```text
//! cargo run --release -p nn-core --example packed_speed
//! PAIR=1 cargo run --release -p nn-core --example packed_speed   # one thread against two
//! SWEEP=1 cargo run --release -p nn-core --example packed_speed  # kernel against FMA peak
//! ```
//!
//! Columns: `matmul` (matrixmultiply, on one thread here unless `MATMUL_NUM_THREADS` is set;
//! the library's default cuts large products in two halves on `nn_core::kernels::pool`'s two
//! threads), `packed` (`packed_matmul`, single-threaded), `packed thr` (`packed_matmul_threaded`, which
//! shares products of at least `PARALLEL_MIN_MACS` multiply-adds with the pool's helper thread;
//! the same as `packed` when `MATMUL_NUM_THREADS=1`), and the time to pack the weight once. `B`
//! and `C` are column ranges of wider matrices; `C += op(A)·B`. Numbers are noisy on a shared
//! machine: run it a few times.

use nalgebra::DMatrix;
use nn_core::kernels::packed::{PackedMatrix, packed_matmul, packed_matmul_threaded};
use nn_core::{Accum, Trans, matmul};
use std::hint::black_box;
use std::time::Instant;

fn rand_mat(r: usize, c: usize, seed: u64) -> DMatrix<f32> {
    let mut s = seed;
    DMatrix::from_fn(r, c, |_, _| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    })
}

/// Best seconds per call over a few rounds of about 50 ms each.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut reps = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed().as_secs_f64() > 0.02 {
            break;
        }
        reps *= 2;
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

/// `PAIR=1`: one and two threads each running their own products (own `B` and `C`) on one
/// shared packed weight, as the two halves of a split time loop do: how much the second core adds.
fn pair() {
    use std::sync::Barrier;
    for &(m, k, n) in &[
        (1024usize, 256usize, 16usize),
        (2048, 512, 32),
        (256, 256, 16),
    ] {
        let w = rand_mat(m, k, 1);
        let mut packed = PackedMatrix::new();
        packed.pack(&w, Trans::No);
        let flops = 2.0 * (m * k * n) as f64;
        let reps = (2e9 / flops) as usize;
        for threads in [1usize, 2] {
            let bar = Barrier::new(threads);
            let t0 = Instant::now();
            std::thread::scope(|sc| {
                for id in 0..threads {
                    let (packed, bar) = (&packed, &bar);
                    sc.spawn(move || {
                        let x = rand_mat(k, n, 2 + id as u64);
                        let mut y = rand_mat(m, n, 3);
                        bar.wait();
                        for _ in 0..reps {
                            packed_matmul(&mut y, Accum::Add, packed, &x);
                        }
                        black_box(&mut y);
                    });
                }
            });
            let dt = t0.elapsed().as_secs_f64();
            println!(
                "{m}x{k}x{n}: {threads} thread(s), {:.1} GF/s total",
                flops * (reps * threads) as f64 / dt * 1e-9
            );
        }
    }
}

/// One core's peak: 12 independent chains of 8-lane fused multiply-adds, GFLOP/s.
#[cfg(target_arch = "x86_64")]
fn fma_peak() -> f64 {
    #[target_feature(enable = "avx2,fma")]
    fn chains(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let mut acc = [_mm256_setzero_ps(); 12];
        let (a, b) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(0.999_999_9));
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(a, b, *v);
            }
        }
        let mut sum = _mm256_setzero_ps();
        for v in acc {
            sum = _mm256_add_ps(sum, v);
        }
        let mut out = [0f32; 8];
        // SAFETY: `out` holds the 8 lanes written.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }
    if !nn_core::kernels::simd::has_avx2_fma() {
        return f64::NAN;
    }
    let iters = 20_000_000;
    let t = Instant::now();
    // SAFETY: avx2 and fma were detected just above.
    black_box(unsafe { chains(iters) });
    2.0 * 8.0 * 12.0 * iters as f64 / t.elapsed().as_secs_f64() * 1e-9
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_peak() -> f64 {
    f64::NAN
}

/// `SWEEP=1`: one thread, the forward time loop's product (`m x 256 · 256 x 16`, `C +=`) for
/// weights of 16 KiB to 1 MiB, against one core's FMA peak measured in the same round. `hot`:
/// the same `B` and `C` columns every call (all in cache); `moving`: each of 64 calls takes the
/// next columns of sequence-sized `B` and `C`, as the time loop does. Medians of 7 rounds.
fn sweep() {
    let (k, n, steps, rounds) = (256usize, 16usize, 64usize, 7usize);
    let ms = [16usize, 128, 1024];
    let x = rand_mat(k, steps * 32, 2);
    let (mut peak, mut hot, mut moving) = (vec![], vec![vec![]; ms.len()], vec![vec![]; ms.len()]);
    for _ in 0..rounds {
        peak.push(fma_peak());
        for (mi, &m) in ms.iter().enumerate() {
            let mut packed = PackedMatrix::new();
            packed.pack(&rand_mat(m, k, 1), Trans::No);
            let mut gates = rand_mat(m, steps * 32, 3);
            let flops = 2.0 * (m * k * n * steps) as f64;
            let reps = ((1.5e8 / flops) as usize).max(1);
            for (stride, out) in [(0, &mut hot[mi]), (32, &mut moving[mi])] {
                let t = Instant::now();
                for _ in 0..reps {
                    for s in 0..steps {
                        let c0 = s * stride;
                        packed_matmul(
                            &mut gates.columns_mut(c0, n),
                            Accum::Add,
                            &packed,
                            &x.columns(c0, n),
                        );
                    }
                }
                out.push(flops * reps as f64 / t.elapsed().as_secs_f64() * 1e-9);
            }
            black_box(&mut gates);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("one core's FMA peak: {:.1} GF/s (median)", median(&peak));
    for (mi, &m) in ms.iter().enumerate() {
        println!(
            "{m}x{k}·{k}x{n} ({} KiB weight): hot {:.1} GF/s, moving {:.1} GF/s (medians)",
            m * k * 4 / 1024,
            median(&hot[mi]),
            median(&moving[mi])
        );
    }
}

fn main() {
    if std::env::var_os("PAIR").is_some() {
        pair();
        return;
    }
    if std::env::var_os("SWEEP").is_some() {
        sweep();
        return;
    }
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet (start of main), so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", "1") };
    }
    println!(
        "{:>22} {:>5} {:>12} {:>12} {:>12} {:>8}",
        "m x k · k x n", "op(A)", "matmul", "packed", "packed thr", "pack ms"
    );
    for &(m, k, n, trans) in &[
        (1024, 256, 32, Trans::No),
        (768, 256, 32, Trans::No),
        (512, 128, 1, Trans::No),
        (256, 1024, 32, Trans::Yes),
        (2048, 512, 64, Trans::No),
        (2048, 512, 4096, Trans::No),
    ] {
        let w = match trans {
            Trans::No => rand_mat(m, k, 1),
            Trans::Yes => rand_mat(k, m, 1),
        };
        // B and C are column ranges of wider sequence matrices, as in the time loop.
        let x = rand_mat(k, 3 * n, 2);
        let mut y = rand_mat(m, 3 * n, 3);
        let flops = 2.0 * (m * k * n) as f64;

        let t_mm = time(|| {
            matmul(
                &mut y.columns_mut(n, n),
                Accum::Add,
                &w,
                trans,
                &x.columns(n, n),
                Trans::No,
            );
            black_box(&mut y);
        });
        let mut packed = PackedMatrix::new();
        let t_pack = time(|| packed.pack(black_box(&w), trans));
        let t_p1 = time(|| {
            packed_matmul(
                &mut y.columns_mut(n, n),
                Accum::Add,
                &packed,
                &x.columns(n, n),
            );
            black_box(&mut y);
        });
        let t_p = time(|| {
            packed_matmul_threaded(
                &mut y.columns_mut(n, n),
                Accum::Add,
                &packed,
                &x.columns(n, n),
            );
            black_box(&mut y);
        });
        let tr = match trans {
            Trans::No => "A",
            Trans::Yes => "Aᵀ",
        };
        println!(
            "{:>22} {:>5} {:>12.1} {:>12.1} {:>12.1} {:>8.3}",
            format!("{m}x{k} · {k}x{n}"),
            tr,
            flops / t_mm * 1e-9,
            flops / t_p1 * 1e-9,
            flops / t_p * 1e-9,
            t_pack * 1e3
        );
    }
}
