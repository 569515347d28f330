//! GFLOP/s of `packed_matmul` (weight packed once) against `matmul` (matrixmultiply, which packs
//! both operands on every call), for the shapes of a recurrent layer's time loop.
//!
//! ```text
//! cargo run --release -p nn-core --example packed_speed
//! PAIR=1 cargo run --release -p nn-core --example packed_speed   # one thread against two
//! ```
//!
//! Columns: `matmul` (matrixmultiply, on one thread here unless `MATMUL_NUM_THREADS` is set;
//! the library's default cuts large products in two halves on `nn_core::pool`'s two threads),
//! `packed` (`packed_matmul`, single-threaded), `packed thr` (`packed_matmul_threaded`, which
//! shares products of at least `PARALLEL_MIN_MACS` multiply-adds with the pool's helper thread;
//! the same as `packed` when `MATMUL_NUM_THREADS=1`), and the time to pack the weight once. `B`
//! and `C` are column ranges of wider matrices; `C += op(A)·B`. Numbers are noisy on a shared
//! machine: run it a few times.

use nalgebra::DMatrix;
use nn_core::packed::{PackedMatrix, packed_matmul, packed_matmul_threaded};
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

fn main() {
    if std::env::var_os("PAIR").is_some() {
        pair();
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
