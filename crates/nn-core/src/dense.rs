//! A fully connected layer: `y = W x + b`.
//!
//! Shapes: `W` is `(out, in)` as in PyTorch's `nn.Linear`, `b` is `(out)`, the input `x` is
//! `(in, N)` (one column per example), the output `y` is `(out, N)`.
//!
//! Backward, given `dy = ∂L/∂y` `(out, N)`:
//! `dW += dy · xᵀ`, `db += Σ_columns dy`, `dx = Wᵀ · dy` (the input gradient is written, not added).
//! Parameter names: `weight`, `bias`.
//!
//! Results are finite or an error, as in the recurrent layer: a NaN or infinite `x` or `dy` is
//! [`Error::NonFinite`], and so is an output or gradient that overflows (finite inputs of 3e38,
//! or weights of any size loaded from a file), or that a NaN weight makes NaN.

use crate::kernels::gemv::gemv_col_major;
use crate::kernels::row_sums::add_row_sums;
use crate::{
    Accum, Error, Float, Init, Module, Param, Result, Rng, Shape, Trans, check_finite, check_shape,
    matmul, matmul_bias, try_zeros,
};
use nalgebra::{DMatrix, DMatrixView, Dyn, Matrix, RawStorage, RawStorageMut};

/// `y = W x + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense<T: Float> {
    /// `(out, in)`.
    pub weight: Param<T>,
    /// `(out)`.
    pub bias: Param<T>,
}

impl<T: Float> Dense<T> {
    /// A layer with PyTorch's default initialization (`U(-1/√in, 1/√in)` for weight and bias).
    pub fn new(input: usize, output: usize, rng: &mut Rng) -> Result<Self> {
        Self::with_init(input, output, Init::TorchDefault, Init::TorchDefault, rng)
    }

    /// A layer whose weight and bias are drawn by the given initializers (both with `fan_in = in`).
    pub fn with_init(
        input: usize,
        output: usize,
        weight: Init,
        bias: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        if input == 0 || output == 0 {
            return Err(Error::InvalidConfig(format!(
                "Dense needs non-zero sizes, got in={input}, out={output}"
            )));
        }
        let w = weight.matrix(output, input, rng)?;
        let mut b = Param::try_vector(output)?;
        bias.fill(&mut b.value, input, output, rng)?;
        Ok(Dense {
            weight: Param::try_matrix(w)?,
            bias: b,
        })
    }

    /// Number of input features.
    pub fn input_size(&self) -> usize {
        self.weight.value.ncols()
    }

    /// Number of outputs.
    pub fn output_size(&self) -> usize {
        self.weight.value.nrows()
    }

    fn check_input<S: RawStorage<T, Dyn, Dyn>>(&self, x: &Matrix<T, Dyn, Dyn, S>) -> Result<()> {
        if x.nrows() != self.input_size() {
            return Err(Error::ShapeMismatch {
                op: "Dense input",
                expected: Shape(self.input_size(), x.ncols()),
                got: Shape::from(x),
            });
        }
        if x.ncols() == 0 {
            return Err(Error::Empty {
                op: "Dense",
                what: "batch",
            });
        }
        Ok(())
    }

    /// `y = W x + b` into a new matrix `(out, N)`. `x` may be a matrix or a view (a time step's
    /// columns of a sequence batch, say: `x.columns(t * b, b)`), with no copy.
    pub fn forward<SX: RawStorage<T, Dyn, Dyn>>(
        &self,
        x: &Matrix<T, Dyn, Dyn, SX>,
    ) -> Result<DMatrix<T>> {
        self.check_input(x)?;
        let mut y = try_zeros("Dense output", self.output_size(), x.ncols())?;
        self.forward_to(x, &mut y)?;
        Ok(y)
    }

    /// `y = W x + b` into the caller's `y` `(out, N)`. Checks shapes, that `x` is finite and
    /// that `y` is: an overflow (or a NaN or infinite weight) is [`Error::NonFinite`], and `y`
    /// then holds no usable result. `x` and `y` may be views (column ranges of a sequence batch,
    /// say).
    pub fn forward_to<SX, SY>(
        &self,
        x: &Matrix<T, Dyn, Dyn, SX>,
        y: &mut Matrix<T, Dyn, Dyn, SY>,
    ) -> Result<()>
    where
        SX: RawStorage<T, Dyn, Dyn>,
        SY: RawStorageMut<T, Dyn, Dyn>,
    {
        self.check_input(x)?;
        check_shape("Dense output", y, Shape(self.output_size(), x.ncols()))?;
        check_finite("Dense input", x)?;
        matmul_bias(
            y,
            self.bias.value.as_slice(),
            &self.weight.value,
            Trans::No,
            x,
            Trans::No,
        );
        // Finite inputs can still overflow, and a NaN weight (loaded from a file) spreads.
        check_finite("Dense output (overflow, or weights not finite)", y)
    }

    /// `y = W x + b` into `out`, for generation: `x` a matrix (`&h`) or a view `(in, N)`; `out`
    /// is resized to `(out, N)` when its shape differs, so a warm call allocates nothing. For
    /// `N` ≤ 3 the product runs on the matrix-vector kernel
    /// ([`crate::kernels::gemv::gemv_col_major`], the weight read in place),
    /// else as [`Dense::forward_to`]; either way the bits of [`Dense::forward`] (`b` plus one
    /// chain over `in` per element). Errors as [`Dense::forward_to`].
    pub fn forward_into<'x>(
        &self,
        x: impl Into<DMatrixView<'x, T>>,
        out: &mut DMatrix<T>,
    ) -> Result<()> {
        let x: DMatrixView<'x, T> = x.into();
        self.check_input(&x)?;
        let shape = (self.output_size(), x.ncols());
        if out.shape() != shape {
            *out = try_zeros("Dense output", shape.0, shape.1)?;
        }
        if x.ncols() > 3 {
            return self.forward_to(&x, out);
        }
        check_finite("Dense input", &x)?;
        for mut col in out.column_iter_mut() {
            col.copy_from_slice(self.bias.value.as_slice());
        }
        gemv_col_major(out, Accum::Add, &self.weight.value, &x);
        check_finite("Dense output (overflow, or weights not finite)", out)
    }

    /// Adds `dy · xᵀ` to `weight.grad` and the column sums of `dy` to `bias.grad`; returns `dx`.
    pub fn backward(&mut self, x: &DMatrix<T>, dy: &DMatrix<T>) -> Result<DMatrix<T>> {
        self.check_input(x)?;
        let mut dx = try_zeros("Dense input gradient", self.input_size(), x.ncols())?;
        self.backward_to(x, dy, Some(&mut dx))?;
        Ok(dx)
    }

    /// Like [`Dense::backward`], writing `dx` into the caller's buffer (a matrix or a view), or
    /// skipping it (`None`). A NaN or infinite `dy` is [`Error::NonFinite`] before anything is
    /// added; a gradient that overflows is [`Error::NonFinite`] after (the gradients then hold
    /// no usable values, as after the recurrent layer's backward).
    pub fn backward_to<SX, SD>(
        &mut self,
        x: &Matrix<T, Dyn, Dyn, SX>,
        dy: &DMatrix<T>,
        dx: Option<&mut Matrix<T, Dyn, Dyn, SD>>,
    ) -> Result<()>
    where
        SX: RawStorage<T, Dyn, Dyn>,
        SD: RawStorageMut<T, Dyn, Dyn>,
    {
        self.check_input(x)?;
        check_shape(
            "Dense backward dy",
            dy,
            Shape(self.output_size(), x.ncols()),
        )?;
        if let Some(dx) = &dx {
            check_shape("Dense backward dx", *dx, Shape::from(x))?;
        }
        check_finite("Dense backward dy", dy)?;
        matmul(
            &mut self.weight.grad,
            Accum::Add,
            dy,
            Trans::No,
            x,
            Trans::Yes,
        );
        add_row_sums(self.bias.grad.as_mut_slice(), dy);
        // Finite inputs and gradients can still overflow (huge values times huge values).
        let op = "Dense backward gradient (overflow)";
        if let Some(dx) = dx {
            matmul(
                dx,
                Accum::Replace,
                &self.weight.value,
                Trans::Yes,
                dy,
                Trans::No,
            );
            check_finite(op, dx)?;
        }
        check_finite(op, &self.weight.grad)?;
        check_finite(op, &self.bias.grad)
    }
}

impl<T: Float> Module<T> for Dense<T> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>)) {
        f("weight", &self.weight);
        f("bias", &self.bias);
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>)) {
        f("weight", &mut self.weight);
        f("bias", &mut self.bias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck;

    #[test]
    fn gradient_check_weights_bias_and_input() {
        let mut rng = Rng::seed_from(4);
        let mut dense = Dense::<f64>::new(5, 3, &mut rng).unwrap();
        let x = Init::Normal { std: 1.0 }
            .matrix::<f64>(5, 4, &mut rng)
            .unwrap();
        let probe = Init::Normal { std: 1.0 }
            .matrix::<f64>(3, 4, &mut rng)
            .unwrap();
        // L = Σ y ⊙ probe, so dy = probe.
        let report = gradcheck::check_params(&mut dense, |d| {
            let y = d.forward(&x)?;
            d.backward(&x, &probe)?;
            Ok(y.component_mul(&probe).sum())
        })
        .unwrap();
        assert!(report.max_rel_error <= 1e-6, "{report:?}");
        let dx = dense.backward(&x, &probe).unwrap();
        let report = gradcheck::check_input(&x, &dx, |x| {
            Ok(dense.forward(x)?.component_mul(&probe).sum())
        })
        .unwrap();
        assert!(report.max_rel_error <= 1e-6, "{report:?}");
    }

    #[test]
    fn sizes_too_large_to_allocate_are_errors() {
        let mut rng = Rng::seed_from(0);
        for (i, o) in [(1usize << 31, 1usize << 31), (1 << 62, 8)] {
            assert!(matches!(
                Dense::<f32>::new(i, o, &mut rng),
                Err(Error::TooLarge { .. })
            ));
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "64 MiB of weight and input: too large to interpret")]
    fn outputs_too_large_to_allocate_are_errors() {
        // 2^24 outputs of one input (a 64 MiB weight) on 2^24 columns (a 64 MiB input): the
        // output would take 2^48 values (1 PiB, more than the address space).
        let mut rng = Rng::seed_from(0);
        let dense = Dense::<f32>::new(1, 1 << 24, &mut rng).unwrap();
        let x = DMatrix::zeros(1, 1 << 24);
        assert!(matches!(
            dense.forward(&x),
            Err(Error::TooLarge {
                op: "Dense output",
                ..
            })
        ));
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        let mut rng = Rng::seed_from(0);
        let mut dense = Dense::<f32>::new(3, 2, &mut rng).unwrap();
        let err = dense.forward(&DMatrix::zeros(4, 2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dense input: shape mismatch: expected (3, 2), got (4, 2)"
        );
        assert!(matches!(
            dense.forward(&DMatrix::zeros(3, 0)),
            Err(Error::Empty { .. })
        ));
        let mut x = DMatrix::zeros(3, 2);
        x[(1, 1)] = f32::NAN;
        assert!(matches!(
            dense.forward(&x),
            Err(Error::NonFinite { index: 4, .. })
        ));
        assert!(
            dense
                .backward(&DMatrix::zeros(3, 2), &DMatrix::zeros(2, 3))
                .is_err()
        );
        assert!(Dense::<f32>::new(0, 2, &mut rng).is_err());
    }

    #[test]
    fn forward_takes_a_view_with_the_bits_of_a_copy() {
        let mut rng = Rng::seed_from(5);
        let dense = Dense::<f32>::new(3, 2, &mut rng).unwrap();
        let seq = Init::Normal { std: 1.0 }
            .matrix::<f32>(3, 12, &mut rng)
            .unwrap();
        let view = seq.columns(4, 4);
        let from_view = dense.forward(&view).unwrap();
        assert_eq!(from_view, dense.forward(&view.into_owned()).unwrap());
        assert!(dense.forward(&seq.rows(0, 2)).is_err());
    }

    #[test]
    fn finite_results_or_an_error() {
        let mut rng = Rng::seed_from(0);
        let mut dense = Dense::<f32>::new(3, 2, &mut rng).unwrap();
        dense.weight.value.fill(1.0);
        // Finite inputs of 3e38 overflow the output.
        let huge = DMatrix::from_element(3, 2, 3e38f32);
        assert!(matches!(
            dense.forward(&huge),
            Err(Error::NonFinite {
                op: "Dense output (overflow, or weights not finite)",
                ..
            })
        ));
        // A NaN weight (as loaded from a file) and a huge one.
        let x = DMatrix::from_element(3, 2, 1.0f32);
        for bad in [f32::NAN, 3e38] {
            let mut d = dense.clone();
            d.weight.value[(1, 2)] = bad;
            d.weight.value[(1, 1)] = bad;
            assert!(
                matches!(d.forward(&x), Err(Error::NonFinite { .. })),
                "weight {bad}"
            );
        }
        // A NaN or infinite dy is refused before anything is added to the gradients.
        for bad in [f32::NAN, f32::INFINITY] {
            let mut dy = DMatrix::zeros(2, 2);
            dy[(1, 0)] = bad;
            let err = dense.backward(&x, &dy).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::NonFinite {
                        op: "Dense backward dy",
                        index: 1,
                        ..
                    }
                ),
                "{err}"
            );
            assert!(dense.weight.grad.iter().all(|&g| g == 0.0));
            assert!(dense.bias.grad.iter().all(|&g| g == 0.0));
        }
        // Finite x and dy whose product overflows.
        let dy = DMatrix::from_element(2, 2, 3e38f32);
        assert!(matches!(
            dense.backward(&huge, &dy),
            Err(Error::NonFinite {
                op: "Dense backward gradient (overflow)",
                ..
            })
        ));
        // Ordinary values still work.
        let mut dense = Dense::<f32>::new(3, 2, &mut rng).unwrap();
        assert!(dense.forward(&x).is_ok());
        assert!(
            dense
                .backward(&x, &DMatrix::from_element(2, 2, 0.5))
                .is_ok()
        );
    }
}
