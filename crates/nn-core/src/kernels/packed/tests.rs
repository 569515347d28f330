//! Tests of the packed product: every ISA copy against the naive product on edge sizes, the
//! layout against its definition, the pair against the concatenated product and the threaded
//! form against the single-thread one, bit for bit.

use super::*;
use crate::Trans;
use crate::gemm::gemm_naive;
use crate::kernels::thresholds::PACK_SPLIT_MIN_VALUES;
use nalgebra::DMatrix;

/// A seeded matrix of values in `[-0.5, 0.5)` (also used by `wgrad`'s tests).
pub(crate) fn rand_mat<T: Float>(r: usize, c: usize, seed: u64) -> DMatrix<T> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    DMatrix::from_fn(r, c, |_, _| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        T::cast(((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5)
    })
}

/// Whether `a` and `b` hold the same values bit for bit.
fn same_bits<T: Float>(a: &DMatrix<T>, b: &DMatrix<T>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.as_f64().to_bits() == y.as_f64().to_bits())
}

/// Every copy of the kernel this CPU can run.
fn isas() -> Vec<Isa> {
    crate::kernels::simd::available_isas()
}

fn tol<T: Float>(k: usize) -> f64 {
    (k as f64 + 1.0) * if T::BYTES == 4 { 1e-6 } else { 1e-15 }
}

/// `op(A)` from `a` stored as given (`a` is `op(A)ᵀ` when `trans` is `Yes`).
fn a_for<T: Float>(m: usize, k: usize, trans: Trans, seed: u64) -> DMatrix<T> {
    match trans {
        Trans::No => rand_mat(m, k, seed),
        Trans::Yes => rand_mat(k, m, seed),
    }
}

fn check_all_sizes<T: Float>() {
    let mut packed = PackedMatrix::<T>::new();
    // Fewer sizes under Miri (still a partial panel, every narrow-`B` grouping and tile
    // width): Miri interprets every operation.
    let (ms, ks, ns): (&[usize], &[usize], &[usize]) = if cfg!(miri) {
        (&[0, 1, 17, 33], &[0, 3, 17], &[0, 1, 2, 3, 4, 5, 6, 7, 13])
    } else {
        (
            &[0, 1, 5, 8, 16, 17, 33, 70],
            &[0, 1, 3, 17],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13],
        )
    };
    for isa in isas() {
        for trans in [Trans::No, Trans::Yes] {
            for &m in ms {
                for &k in ks {
                    let a = a_for::<T>(m, k, trans, (m * 31 + k) as u64);
                    packed.pack(&a, trans);
                    assert_eq!((packed.rows(), packed.cols()), (m, k));
                    for &n in ns {
                        let b = rand_mat::<T>(k, n, 7 + n as u64);
                        let c0 = rand_mat::<T>(m, n, 11);
                        for accum in [Accum::Replace, Accum::Add] {
                            let beta = if accum == Accum::Add {
                                T::one()
                            } else {
                                T::zero()
                            };
                            let mut want = c0.clone();
                            gemm_naive(T::one(), &a, trans, &b, Trans::No, beta, &mut want);
                            let mut got = match accum {
                                Accum::Add => c0.clone(),
                                Accum::Replace => DMatrix::from_element(m, n, T::cast(f64::NAN)),
                            };
                            packed_matmul_with(&mut got, accum, &packed, &b, isa, true);
                            let err = (got - want).amax().as_f64();
                            assert!(
                                err <= tol::<T>(k),
                                "{isa:?} {trans:?} {accum:?} m={m} k={k} n={n}: err {err}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn f32_matches_naive_on_all_edge_sizes() {
    check_all_sizes::<f32>();
}

#[test]
fn f64_matches_naive_on_all_edge_sizes() {
    check_all_sizes::<f64>();
}

#[test]
fn column_views_and_replace_ignores_nan() {
    let (m, k, n) = (19, 9, 7);
    for isa in isas() {
        for trans in [Trans::No, Trans::Yes] {
            let a = a_for::<f64>(m, k, trans, 3);
            let mut packed = PackedMatrix::new();
            packed.pack(&a.columns(0, a.ncols()), trans);
            let x = rand_mat::<f64>(k, 20, 4);
            let mut y = DMatrix::from_element(m, 20, f64::NAN);
            packed_matmul_with(
                &mut y.columns_mut(5, n),
                Accum::Replace,
                &packed,
                &x.columns(3, n),
                isa,
                true,
            );
            let b = x.columns(3, n).into_owned();
            let mut want = DMatrix::zeros(m, n);
            gemm_naive(1.0, &a, trans, &b, Trans::No, 0.0, &mut want);
            assert!((y.columns(5, n) - &want).amax() < 1e-13);
            assert!(y.columns(0, 5).iter().all(|v| v.is_nan()));
            assert!(y.columns(5 + n, 20 - 5 - n).iter().all(|v| v.is_nan()));
            // Accumulate a second time into the same view.
            packed_matmul_with(
                &mut y.columns_mut(5, n),
                Accum::Add,
                &packed,
                &x.columns(3, n),
                isa,
                true,
            );
            assert!((y.columns(5, n) - &want * 2.0).amax() < 1e-13);
        }
    }
}

/// The pair's bits are the concatenated product's, on every kernel copy, for full and
/// partial panels, every tile width, either term empty, `A2` packed transposed, `B2` a
/// column view, Replace and Add.
fn pair_matches_concatenation<T: Float>() {
    let sizes = [(16, 7, 5), (35, 0, 9), (3, 4, 0), (20, 12, 1), (33, 5, 16)];
    for isa in isas() {
        for &(m, k1, k2) in &sizes {
            for n in [1, 2, 3, 4, 6, 7, 13] {
                let a1 = rand_mat::<T>(m, k1, 1);
                let a2t = rand_mat::<T>(k2, m, 2); // A2 = a2tᵀ, packed transposed
                let b1 = rand_mat::<T>(k1, n, 3);
                let x2 = rand_mat::<T>(k2, n + 3, 4);
                let b2 = x2.columns(2, n);
                let (mut p1, mut p2, mut pc) = (
                    PackedMatrix::new(),
                    PackedMatrix::new(),
                    PackedMatrix::new(),
                );
                p1.pack(&a1, Trans::No);
                p2.pack(&a2t, Trans::Yes);
                let mut cat = DMatrix::zeros(m, k1 + k2);
                cat.columns_mut(0, k1).copy_from(&a1);
                cat.columns_mut(k1, k2).copy_from(&a2t.transpose());
                pc.pack(&cat, Trans::No);
                let mut bcat = DMatrix::zeros(k1 + k2, n);
                bcat.rows_mut(0, k1).copy_from(&b1);
                bcat.rows_mut(k1, k2).copy_from(&b2);
                for accum in [Accum::Replace, Accum::Add] {
                    let c0 = rand_mat::<T>(m, n, 5);
                    let (mut got, mut want) = (c0.clone(), c0.clone());
                    let second = Segment::of(&p2, &b2);
                    packed_matmul_terms(&mut got, accum, &p1, &b1, second, isa, false);
                    packed_matmul_with(&mut want, accum, &pc, &bcat, isa, false);
                    let same = same_bits(&got, &want);
                    assert!(same, "{isa:?} m {m} k1 {k1} k2 {k2} n {n} {accum:?}");
                    if isa == crate::kernels::simd::best_isa() {
                        let mut public = c0.clone();
                        packed_matmul_pair(&mut public, accum, &p1, &b1, &p2, &b2);
                        assert_eq!(public, got);
                    }
                }
            }
        }
    }
}

#[test]
fn pair_has_the_bits_of_the_concatenated_product() {
    pair_matches_concatenation::<f32>();
    pair_matches_concatenation::<f64>();
}

#[test]
fn general_strides_of_b_and_c() {
    // B with row stride 2 (every other row of x), C with row stride 3.
    let (m, k, n) = (21, 6, 5);
    for isa in isas() {
        let a = rand_mat::<f32>(m, k, 5);
        let mut packed = PackedMatrix::new();
        packed.pack(&a, Trans::No);
        let x = rand_mat::<f32>(2 * k, n + 1, 6);
        let bview = x.view_with_steps((1, 1), (k, n), (1, 0));
        let b = bview.into_owned();
        let c0 = rand_mat::<f32>(3 * m, n, 8);
        let mut want = c0.view_with_steps((0, 0), (m, n), (2, 0)).into_owned();
        gemm_naive(1.0, &a, Trans::No, &b, Trans::No, 1.0, &mut want);
        let mut c = c0.clone();
        packed_matmul_with(
            &mut c.view_with_steps_mut((0, 0), (m, n), (2, 0)),
            Accum::Add,
            &packed,
            &bview,
            isa,
            true,
        );
        assert!((c.view_with_steps((0, 0), (m, n), (2, 0)) - want).amax() < 1e-5);
        // Rows not in the view are untouched.
        assert_eq!(c.row(1), c0.row(1));
        // A transposed B (k x n view of an n x k matrix's transpose layout).
        let bt = rand_mat::<f32>(n, k, 9);
        let btv = bt.transpose();
        let mut got = DMatrix::zeros(m, n);
        let view = nalgebra::DMatrixView::from_slice_with_strides_generic(
            bt.as_slice(),
            nalgebra::Dyn(k),
            nalgebra::Dyn(n),
            nalgebra::Dyn(n),
            nalgebra::Dyn(1),
        );
        packed_matmul_with(&mut got, Accum::Replace, &packed, &view, isa, true);
        assert!((got - &a * btv).amax() < 1e-5);
    }
}

#[test]
fn columns_do_not_depend_on_batch_width_or_threads() {
    let (m, k) = (37, 29);
    let a = rand_mat::<f32>(m, k, 12);
    let mut packed = PackedMatrix::new();
    packed.pack(&a, Trans::No);
    let b = rand_mat::<f32>(k, 13, 13);
    for isa in isas() {
        let mut full = DMatrix::zeros(m, 13);
        packed_matmul_with(&mut full, Accum::Replace, &packed, &b, isa, true);
        for j in 0..13 {
            for w in 1..=(13 - j).min(4) {
                let mut part = DMatrix::zeros(m, w);
                packed_matmul_with(
                    &mut part,
                    Accum::Replace,
                    &packed,
                    &b.columns(j, w),
                    isa,
                    false,
                );
                assert_eq!(part, full.columns(j, w), "isa {isa:?} j {j} w {w}");
            }
        }
    }
}

/// The AVX2 and AVX-512 copies (with either tile choice: one panel per tile, or up to four on
/// two-port cores) run the same fused sums in the same order, so they must agree bit for bit
/// (the AVX-512 one is chosen where the CPU has it; checkpoints written on either kind of
/// machine are the same).
fn fused_copies_agree<T: Float>() {
    let fused: Vec<Isa> = isas().into_iter().filter(|&i| i != Isa::Generic).collect();
    assert_eq!(
        fused.len(),
        3,
        "built on a CPU with AVX-512, run on one without"
    );
    let mut packed = PackedMatrix::<T>::new();
    for (m, k) in [(1, 1), (17, 5), (40, 33), (64, 256), (100, 7), (112, 20)] {
        for trans in [Trans::No, Trans::Yes] {
            packed.pack(&a_for::<T>(m, k, trans, 31), trans);
            for n in [1, 2, 3, 4, 5, 6, 7, 9, 13, 16] {
                let b = rand_mat::<T>(k, n, 32);
                let c0 = rand_mat::<T>(m, n, 33);
                for accum in [Accum::Replace, Accum::Add] {
                    let results: Vec<DMatrix<T>> = fused
                        .iter()
                        .map(|&isa| {
                            let mut c = c0.clone();
                            packed_matmul_with(&mut c, accum, &packed, &b, isa, false);
                            c
                        })
                        .collect();
                    for (isa, c) in fused.iter().zip(&results) {
                        let same = same_bits(c, &results[0]);
                        assert!(
                            same,
                            "{isa:?} differs from {:?}: m={m} k={k} n={n}",
                            fused[0]
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[cfg_attr(not(host_avx512), ignore = "needs AVX-512 on this CPU")]
fn avx2_and_avx512_copies_give_the_same_bits() {
    fused_copies_agree::<f32>();
    fused_copies_agree::<f64>();
}

#[test]
fn threaded_products_are_bit_identical_to_single_thread() {
    // Just above the threshold; repeated so that the helper both takes and misses jobs.
    let sizes = if cfg!(miri) {
        [(41, 16, 8), (70, 64, 2)]
    } else {
        [(257, 128, 64), (1030, 512, 4)]
    };
    for (m, k, n) in sizes {
        assert!(m * k * n >= PARALLEL_MIN_MACS);
        let a = rand_mat::<f32>(k, m, 21);
        let mut packed = PackedMatrix::new();
        packed.pack(&a, Trans::Yes);
        let b = rand_mat::<f32>(k, n + 2, 22);
        let b = b.columns(1, n);
        let mut want = DMatrix::zeros(m, n);
        packed_matmul(&mut want, Accum::Replace, &packed, &b);
        let mut naive = DMatrix::zeros(m, n);
        gemm_naive(
            1.0,
            &a,
            Trans::Yes,
            &b.into_owned(),
            Trans::No,
            0.0,
            &mut naive,
        );
        assert!((&want - naive).amax() < 1e-4);
        for _ in 0..10 {
            let mut got = DMatrix::from_element(m, n, f32::NAN);
            packed_matmul_threaded(&mut got, Accum::Replace, &packed, &b);
            assert_eq!(got, want);
        }
    }
}

#[test]
fn large_packings_split_over_two_threads_keep_the_layout() {
    // 530 x 500 values (above PACK_SPLIT_MIN_VALUES; 40 x 30 under Miri, which lowers it),
    // an odd number of panels, both ways.
    let (m, k) = if cfg!(miri) { (40, 30) } else { (530, 500) };
    for trans in [Trans::No, Trans::Yes] {
        let a = a_for::<f64>(m, k, trans, 3);
        let mut packed = PackedMatrix::new();
        packed.pack(&a, trans);
        assert!(packed.buf.len() >= PACK_SPLIT_MIN_VALUES);
        let b = rand_mat::<f64>(k, 3, 4);
        let mut got = DMatrix::zeros(m, 3);
        packed_matmul(&mut got, Accum::Replace, &packed, &b);
        let mut want = DMatrix::zeros(m, 3);
        gemm_naive(1.0, &a, trans, &b, Trans::No, 0.0, &mut want);
        assert!((got - want).amax() < 1e-12, "{trans:?}");
    }
}

/// The layout `pack` promises (module docs), element by element: the naive reference for
/// its copying loops and the AVX transposition.
fn layout_by_definition<T: Float>(a: &DMatrix<T>, trans: Trans) -> Vec<T> {
    let mr = PackedMatrix::<T>::MR;
    let (m, k) = match trans {
        Trans::No => a.shape(),
        Trans::Yes => (a.ncols(), a.nrows()),
    };
    let mut v = Vec::new();
    for p in 0..m.div_ceil(mr) {
        for kk in 0..k {
            for i in 0..mr {
                let r = p * mr + i;
                v.push(match (r < m, trans) {
                    (false, _) => T::zero(),
                    (true, Trans::No) => a[(r, kk)],
                    (true, Trans::Yes) => a[(kk, r)],
                });
            }
        }
    }
    v
}

fn check_layouts<T: Float>() {
    // One buffer for all, so each packing starts from the previous one's values (including
    // padding rows that must come out as zeros).
    let mut packed = PackedMatrix::<T>::new();
    // 530 x 500 crosses PACK_SPLIT_MIN_VALUES; under Miri, which lowers it, 40 x 65 does.
    let (ms, ks): (&[usize], &[usize]) = if cfg!(miri) {
        (&[1, 15, 16, 17, 40], &[1, 7, 8, 9, 64, 65])
    } else {
        (&[1, 15, 16, 17, 40, 530], &[1, 7, 8, 9, 64, 65, 500])
    };
    for trans in [Trans::No, Trans::Yes] {
        for &m in ms {
            for &k in ks {
                let a = a_for::<T>(m, k, trans, (m * 1000 + k) as u64);
                packed.pack(&a, trans);
                let want = layout_by_definition(&a, trans);
                assert!(packed.buf == want, "{trans:?} m {m} k {k}");
            }
        }
    }
}

#[test]
fn packing_gives_the_documented_layout_whatever_the_buffer_held() {
    check_layouts::<f32>();
    check_layouts::<f64>();
}

#[test]
fn repacking_reuses_the_buffer() {
    let mut packed = PackedMatrix::<f64>::new();
    assert_eq!((packed.rows(), packed.cols()), (0, 0));
    let big = rand_mat::<f64>(40, 30, 1);
    packed.pack(&big, Trans::No);
    let cap = packed.buf.capacity();
    let small = rand_mat::<f64>(9, 5, 2);
    packed.pack(&small, Trans::Yes);
    assert_eq!(packed.buf.capacity(), cap);
    assert_eq!((packed.rows(), packed.cols()), (5, 9));
    let b = rand_mat::<f64>(9, 3, 3);
    let mut c = DMatrix::zeros(5, 3);
    packed_matmul(&mut c, Accum::Replace, &packed, &b);
    assert!((c - small.transpose() * b).amax() < 1e-14);
}

#[test]
#[should_panic(expected = "packed_matmul: (4x3) * (2x1) into (4x1)")]
fn shape_mismatch_panics() {
    let mut packed = PackedMatrix::<f32>::new();
    packed.pack(&DMatrix::<f32>::zeros(4, 3), Trans::No);
    let mut c = DMatrix::zeros(4, 1);
    packed_matmul(&mut c, Accum::Add, &packed, &DMatrix::zeros(2, 1));
}
