//! The matrix–vector kernel against its naive reference and against the packed kernel, bit for
//! bit, on every copy this CPU runs, packed and column-major, whole and split.

use super::{GemvMatrix, gemv, gemv_col_major, gemv_naive, gemv_sum, gemv_two, gemv_with};
use crate::kernels::packed::{PackedMatrix, packed_matmul};
use crate::kernels::simd::{Isa, available_isas, best_isa};
use crate::{Accum, Float, Trans};
use nalgebra::DMatrix;

/// Seeded values in `[-0.5, 0.5)`, with some exact zeros and negative zeros.
fn rand_mat<T: Float>(r: usize, c: usize, seed: u64) -> DMatrix<T> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    DMatrix::from_fn(r, c, |_, _| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        match s % 17 {
            0 => T::zero(),
            1 => -T::zero(),
            _ => T::cast((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5),
        }
    })
}

fn same_bits<T: Float>(a: &DMatrix<T>, b: &DMatrix<T>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits())
}

const ROWS: [usize; 12] = [1, 7, 8, 15, 16, 17, 31, 63, 64, 65, 130, 257];
const COLS: [usize; 6] = [0, 1, 2, 5, 64, 67];

fn check<T: Float>() {
    for &m in &ROWS {
        for &k in &COLS {
            let a = rand_mat::<T>(m, k, (m * 100 + k) as u64);
            let mut packed = GemvMatrix::new();
            packed.pack(&a);
            for n in [1, 2, 3, 4, 7] {
                let x = rand_mat::<T>(k, n, (m + k + n) as u64 + 7);
                let y0 = rand_mat::<T>(m, n, 3);
                for accum in [Accum::Replace, Accum::Add] {
                    for isa in available_isas() {
                        let mut want = y0.clone();
                        gemv_naive(&mut want, accum, &a, &x, isa != Isa::Generic);
                        for (p, split) in
                            [(true, false), (true, true), (false, false), (false, true)]
                        {
                            let mut got = y0.clone();
                            let pk = p.then_some(&packed);
                            gemv_with(&mut got, accum, &a, pk, &x, isa, split);
                            assert!(
                                same_bits(&got, &want),
                                "{m}x{k} n={n} {accum:?} {isa:?} packed={p} split={split}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_copy_gives_the_naive_chains_f32() {
    check::<f32>();
}

#[test]
fn every_copy_gives_the_naive_chains_f64() {
    check::<f64>();
}

/// The step's parity with the sequence forward rests on this: the same sums as the packed
/// kernel (which the forward runs) for one to three columns.
#[test]
fn the_packed_kernel_sums_the_same() {
    for (m, k) in [(1024, 65), (256, 256), (65, 256), (100, 3)] {
        let a = rand_mat::<f32>(m, k, 1);
        let mut g = GemvMatrix::new();
        g.pack(&a);
        let mut p = PackedMatrix::new();
        p.pack(&a, Trans::No);
        for n in 1..=3 {
            let x = rand_mat::<f32>(k, n, 2);
            for accum in [Accum::Replace, Accum::Add] {
                let mut want = rand_mat::<f32>(m, n, 4);
                let mut got = want.clone();
                let mut cm = want.clone();
                packed_matmul(&mut want, accum, &p, &x);
                gemv(&mut got, accum, &g, &x);
                gemv_col_major(&mut cm, accum, &a, &x);
                assert!(same_bits(&got, &want), "{m}x{k} n={n} {accum:?}");
                assert!(same_bits(&cm, &want), "{m}x{k} n={n} {accum:?} col-major");
            }
        }
    }
}

/// The public entry points on the pool (large enough to split), and the two-term forms against
/// two single calls.
#[test]
fn two_terms_and_threads_give_the_single_calls_bits() {
    let (m, k1, k2) = (1024, 256, 256);
    let (a1, a2) = (rand_mat::<f32>(m, k1, 5), rand_mat::<f32>(m, k2, 6));
    let (mut p1, mut p2) = (GemvMatrix::new(), GemvMatrix::new());
    p1.pack(&a1);
    p2.pack(&a2);
    let fused = best_isa() != Isa::Generic;
    for n in 1..=3 {
        let (x1, x2) = (rand_mat::<f32>(k1, n, 7), rand_mat::<f32>(k2, n, 8));
        for accum in [Accum::Replace, Accum::Add] {
            let y0 = rand_mat::<f32>(m, n, 9);
            let mut want = y0.clone();
            gemv_naive(&mut want, accum, &a1, &x1, fused);
            gemv_naive(&mut want, Accum::Add, &a2, &x2, fused);
            let mut got = y0.clone();
            gemv_sum(&mut got, accum, &p1, &x1, &p2, &x2);
            assert!(same_bits(&got, &want), "sum n={n} {accum:?}");
        }
        let (mut w1, mut w2) = (DMatrix::zeros(m, n), DMatrix::zeros(m, n));
        gemv_naive(&mut w1, Accum::Replace, &a1, &x1, fused);
        gemv_naive(&mut w2, Accum::Replace, &a2, &x2, fused);
        let (mut g1, mut g2) = (rand_mat::<f32>(m, n, 1), rand_mat::<f32>(m, n, 2));
        gemv_two(&mut g1, &p1, &x1, &mut g2, &p2, &x2);
        assert!(same_bits(&g1, &w1) && same_bits(&g2, &w2), "two n={n}");
        let mut g = rand_mat::<f32>(m, n, 3);
        gemv(&mut g, Accum::Replace, &p1, &x1);
        assert!(same_bits(&g, &w1), "one n={n}");
    }
}

/// Views with strides: `x` a column range and a transposed view, `y` a block of a bigger matrix.
#[test]
fn views_and_strides() {
    let (m, k) = (70, 33);
    let a = rand_mat::<f64>(m, k, 11);
    let mut p = GemvMatrix::new();
    p.pack(&a);
    let big = rand_mat::<f64>(k, 9, 12);
    let xt = rand_mat::<f64>(2, k, 13);
    let mut want = DMatrix::zeros(m, 2);
    let fused = best_isa() != Isa::Generic;
    gemv_naive(
        &mut want,
        Accum::Replace,
        &a,
        &big.columns(4, 2).into_owned(),
        fused,
    );
    let mut ybig = rand_mat::<f64>(m + 5, 6, 14);
    gemv(
        &mut ybig.view_mut((3, 1), (m, 2)),
        Accum::Replace,
        &p,
        &big.columns(4, 2),
    );
    assert!(same_bits(&ybig.view((3, 1), (m, 2)).into_owned(), &want));
    let mut want = DMatrix::zeros(m, 2);
    gemv_naive(&mut want, Accum::Replace, &a, &xt.transpose(), fused);
    let mut got = DMatrix::zeros(m, 2);
    gemv(&mut got, Accum::Replace, &p, &xt.transpose());
    assert!(same_bits(&got, &want));
}

#[test]
fn repacking_reuses_the_buffer_and_gives_the_new_layout() {
    let mut p = GemvMatrix::new();
    let big = rand_mat::<f32>(300, 40, 1);
    p.pack(&big);
    let small = rand_mat::<f32>(20, 3, 2);
    p.pack(&small);
    assert_eq!((p.rows(), p.cols()), (20, 3));
    let x = rand_mat::<f32>(3, 1, 3);
    let mut want = DMatrix::zeros(20, 1);
    gemv_naive(
        &mut want,
        Accum::Replace,
        &small,
        &x,
        best_isa() != Isa::Generic,
    );
    let mut got = DMatrix::zeros(20, 1);
    gemv(&mut got, Accum::Replace, &p, &x);
    assert!(same_bits(&got, &want));
    assert_eq!(
        p.ptr() as usize % 64,
        0,
        "the panels start on a 64-byte boundary"
    );
}
