//! GFLOP/s of `packed_matmul` (weight packed once) against `matmul` (matrixmultiply, which packs
//! both operands on every call), for the shapes of a recurrent layer's time loop.
//!
//! ```text
//! cargo run --release -p nn-core --example packed_speed
//! PAIR=1 cargo run --release -p nn-core --example packed_speed   # one thread against two
//! SWEEP=1 cargo run --release -p nn-core --example packed_speed  # kernel against FMA peak
//! PEAK=1 cargo run --release -p nn-core --example packed_speed   # only one core's FMA peak
//! STEP=1 cargo run --release -p nn-core --example packed_speed   # time-loop shapes, CPU time
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

/// One core's FMA peak in GFLOP/s ([`nn_core::kernels::peak`]: 24 independent chains of
/// 16-lane multiply-adds with AVX-512, else 12 of 8 lanes with AVX2 + FMA).
fn fma_peak() -> f64 {
    nn_core::kernels::peak::fma_peak_gflops(3, 30.0)
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

/// Seconds this thread has run on a CPU so far (`CLOCK_THREAD_CPUTIME_ID`, Linux), or `None`
/// elsewhere.
#[cfg(target_os = "linux")]
fn thread_cpu_seconds() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid `struct timespec` (two 64-bit fields on 64-bit Linux) to write.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> Option<f64> {
    None
}

/// Best seconds per call counted in this thread's CPU time (wall time where the OS does not
/// tell), over many rounds of about 5 ms: robust against other processes sharing the cores
/// (time spent descheduled is not counted; caches they evict still are).
fn cpu_time(mut f: impl FnMut()) -> f64 {
    let now = || {
        thread_cpu_seconds().unwrap_or_else(|| {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_secs_f64()
        })
    };
    f();
    let mut reps = 1usize;
    loop {
        let t = now();
        for _ in 0..reps {
            f();
        }
        if now() - t > 0.005 {
            break;
        }
        reps *= 2;
    }
    let mut best = f64::INFINITY;
    for _ in 0..40 {
        let t = now();
        for _ in 0..reps {
            f();
        }
        best = best.min((now() - t) / reps as f64);
    }
    best
}

/// `SEQ=1`: one thread, the whole-sequence products of `lstm-l` (`T·B = 4096` columns) and
/// `lstm-m`'s head, through `matmul` (matrixmultiply at these sizes), through `packed_matmul`
/// (weight packed per call, `B` in blocks of `cols` columns so that a block stays in L2), and
/// the weight gradient through `add_a_bt`; CPU time.
fn seq_shapes() {
    // (m, k, n, transposed B: the product is A · Bᵀ with B stored n x k)
    for &(m, k, n, bt) in &[
        (2048usize, 512usize, 4096usize, false),
        (512, 512, 4096, false),
        (128, 256, 2048, false),
        (2048, 4096, 512, true),
        (512, 4096, 512, true),
        (1024, 2048, 128, true),
        (1024, 2016, 256, true),
    ] {
        let a = rand_mat(m, k, 1);
        let b = if bt {
            rand_mat(n, k, 2)
        } else {
            rand_mat(k, n, 2)
        };
        let tb = if bt { Trans::Yes } else { Trans::No };
        let mut c = rand_mat(m, n, 3);
        let flops = 2.0 * (m * k * n) as f64;
        let t_mm = cpu_time(|| {
            matmul(&mut c, Accum::Add, &a, Trans::No, &b, tb);
            black_box(&mut c);
        });
        let mut packed = PackedMatrix::new();
        let mut line = format!(
            "{m}x{k} · {k}x{n}{}: matmul {:.1}",
            if bt { " (Bᵀ)" } else { "" },
            flops / t_mm * 1e-9
        );
        for cols in [96usize, 192, 384] {
            let t_p = cpu_time(|| {
                packed.pack(&a, Trans::No);
                let mut j = 0;
                while j < n {
                    let w = cols.min(n - j);
                    if bt {
                        packed_matmul(
                            &mut c.columns_mut(j, w),
                            Accum::Add,
                            &packed,
                            // `op(B)`'s columns `j..j+w`: `B`'s rows read at swapped strides.
                            &nalgebra::DMatrixView::from_slice_with_strides(
                                &b.as_slice()[j..],
                                k,
                                w,
                                n,
                                1,
                            ),
                        );
                    } else {
                        packed_matmul(
                            &mut c.columns_mut(j, w),
                            Accum::Add,
                            &packed,
                            &b.columns(j, w),
                        );
                    }
                    j += w;
                }
                black_box(&mut c);
            });
            line += &format!(", packed/{cols} {:.1}", flops / t_p * 1e-9);
        }
        if bt && m % 16 == 0 && n % 16 == 0 && n <= nn_core::kernels::thresholds::ADD_A_BT_MAX_COLS
        {
            let t_w = cpu_time(|| {
                nn_core::kernels::wgrad::add_a_bt(&mut c, &a, &b);
                black_box(&mut c);
            });
            line += &format!(", add_a_bt {:.1}", flops / t_w * 1e-9);
        }
        println!("{line} GF/s");
    }
}

/// `STEP=1`: one thread, `packed_matmul` (`C += op(A)·B`, `B`, `C` column ranges) on the time
/// loops' per-thread shapes of `lstm-m` and `lstm-l` (the batch split in two halves), and the
/// two-term forward step, in this thread's CPU time (see [`cpu_time`]). Run it with
/// `NN_TWO_PORT_TILES=0` and `=1`, interleaved, to compare the AVX-512 tile choices.
fn step_shapes() {
    println!("one core's FMA peak: {:.1} GF/s", fma_peak());
    for &(m, k, n, trans, k2) in &[
        (1024usize, 256usize, 16usize, Trans::No, 128usize),
        (256, 1024, 16, Trans::Yes, 0),
        (2048, 512, 32, Trans::No, 0),
        (512, 2048, 32, Trans::Yes, 0),
        (1024, 256, 1, Trans::No, 0),
    ] {
        let w = match trans {
            Trans::No => rand_mat(m, k, 1),
            Trans::Yes => rand_mat(k, m, 1),
        };
        let mut packed = PackedMatrix::new();
        packed.pack(&w, trans);
        let x = rand_mat(k, 3 * n, 2);
        let mut y = rand_mat(m, 3 * n, 3);
        let t = cpu_time(|| {
            packed_matmul(
                &mut y.columns_mut(n, n),
                Accum::Add,
                &packed,
                &x.columns(n, n),
            );
            black_box(&mut y);
        });
        let tr = if trans == Trans::No { "A" } else { "Aᵀ" };
        let flops = 2.0 * (m * k * n) as f64;
        print!("{m}x{k} · {k}x{n} {tr}: {:.1} GF/s", flops / t * 1e-9);
        if k2 > 0 {
            let mut p2 = PackedMatrix::new();
            p2.pack(&rand_mat(m, k2, 4), Trans::No);
            let x2 = rand_mat(k2, 3 * n, 5);
            let t = cpu_time(|| {
                nn_core::kernels::packed::packed_matmul_pair(
                    &mut y.columns_mut(n, n),
                    Accum::Replace,
                    &p2,
                    &x2.columns(n, n),
                    &packed,
                    &x.columns(n, n),
                );
                black_box(&mut y);
            });
            let flops = 2.0 * (m * (k + k2) * n) as f64;
            print!("; pair with {m}x{k2}: {:.1} GF/s", flops / t * 1e-9);
        }
        println!();
    }
    // The weight gradients `dW += dG · Xᵀ` of `lstm-m` (`dW_ih`, `dW_hh` with the row sums) and
    // `lstm-l`'s `dW_hh` shape at 384 columns (the widest the kernel takes), on one thread.
    for &(m, n, k, sums) in &[
        (1024usize, 128usize, 2048usize, true),
        (1024, 256, 2016, false),
        (2048, 384, 1024, false),
    ] {
        let dg = rand_mat(m, k, 6);
        let x = rand_mat(n, k, 7);
        let mut dw = rand_mat(m, n, 8);
        let mut db = vec![0f32; m];
        let t = cpu_time(|| {
            if sums {
                nn_core::kernels::wgrad::add_a_bt_row_sums(&mut dw, &dg, &x, &mut db);
            } else {
                nn_core::kernels::wgrad::add_a_bt(&mut dw, &dg, &x);
            }
            black_box(&mut dw);
        });
        let flops = 2.0 * (m * n * k) as f64;
        println!(
            "wgrad {m}x{k} · ({n}x{k})ᵀ{}: {:.1} GF/s",
            if sums { " + row sums" } else { "" },
            flops / t * 1e-9
        );
    }
}

fn main() {
    if std::env::var_os("SEQ").is_some() {
        // SAFETY: no other thread exists yet (start of main).
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", "1") };
        seq_shapes();
        return;
    }
    if std::env::var_os("STEP").is_some() {
        // One thread: the weight gradients would otherwise cut large products in two halves.
        // SAFETY: no other thread exists yet (start of main).
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", "1") };
        step_shapes();
        return;
    }
    if std::env::var_os("PAIR").is_some() {
        pair();
        return;
    }
    if std::env::var_os("PEAK").is_some() {
        println!("one core's FMA peak: {:.1} GF/s", fma_peak());
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
    println!("one core's FMA peak: {:.1} GF/s", fma_peak());
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
