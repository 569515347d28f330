//! Every kernel that forks on the pool gives the same bits for 1, 2, 3, 4 and 8 threads (more
//! than this machine's cores: slower, same bits): products (matrixmultiply cut into parts, the
//! packed kernel's shared panels, the weight-gradient product), packing, the bias-gradient sums,
//! the finiteness scan and the fused softmax cross-entropy, at sizes above their split
//! thresholds. Its own test binary, since the thread count is process-wide.

use nalgebra::DMatrix;
use nn_core::kernels::packed::{PackedMatrix, packed_matmul_threaded};
use nn_core::kernels::row_sums::add_row_sums;
use nn_core::kernels::wgrad::add_a_bt_row_sums;
use nn_core::{Accum, Trans, loss, matmul};

fn mat(rows: usize, cols: usize, seed: usize) -> DMatrix<f32> {
    DMatrix::from_fn(rows, cols, |i, j| {
        (((i * 31 + j * 17 + seed * 7) % 1009) as f32 * 0.37).sin()
    })
}

/// The bits of every kernel's results with the current thread count.
fn results() -> Vec<Vec<u32>> {
    let bits = |m: &[f32]| m.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let mut out = Vec::new();
    // matrixmultiply in parts: by rows (n <= m) and by columns.
    for (m, k, n) in [(520, 130, 70), (70, 130, 520)] {
        let (a, b) = (mat(m, k, 1), mat(k, n, 2));
        let mut c = DMatrix::zeros(m, n);
        matmul(&mut c, Accum::Replace, &a, Trans::No, &b, Trans::No);
        out.push(bits(c.as_slice()));
    }
    // Packing (above its split size) and the packed kernel's shared panels.
    let w = mat(700, 400, 3);
    let mut packed = PackedMatrix::new();
    packed.pack(&w, Trans::Yes);
    let x = mat(700, 40, 4);
    let mut c = DMatrix::zeros(400, 40);
    packed_matmul_threaded(&mut c, Accum::Replace, &packed, &x);
    out.push(bits(c.as_slice()));
    // The weight-gradient product with its row sums.
    let (a, b) = (mat(512, 300, 5), mat(128, 300, 6));
    let mut c = mat(512, 128, 7);
    let mut sums = vec![0.5f32; 512];
    add_a_bt_row_sums(&mut c, &a, &b, &mut sums);
    out.push(bits(c.as_slice()));
    out.push(bits(&sums));
    // The bias-gradient sums.
    let g = mat(520, 600, 8);
    let mut db = vec![0.25f32; 520];
    add_row_sums(&mut db, &g);
    out.push(bits(&db));
    // The fused loss: 1000 classes x 300 columns.
    let z = mat(1000, 300, 9);
    let targets: Vec<usize> = (0..300).map(|j| (j * 37) % 1000).collect();
    let mut d = DMatrix::zeros(1000, 300);
    let l = loss::softmax_cross_entropy_to(&z, &targets, &mut d).unwrap();
    out.push(vec![l.to_bits()]);
    out.push(bits(d.as_slice()));
    // The finiteness scan, with one NaN near the end.
    let mut v = vec![1.0f32; 300_001];
    assert!(nn_core::error::all_finite(&v));
    v[299_999] = f32::NAN;
    out.push(vec![u32::from(nn_core::error::all_finite(&v))]);
    out
}

#[test]
fn every_kernel_gives_the_same_bits_for_any_thread_count() {
    nn_core::set_threads(1).unwrap();
    let one = results();
    for threads in [2, 3, 4, 8] {
        nn_core::set_threads(threads).unwrap();
        let got = results();
        for (i, (a, b)) in one.iter().zip(&got).enumerate() {
            assert!(a == b, "result {i} differs with {threads} threads");
        }
    }
    assert!(nn_core::set_threads(0).is_err());
}
