//! The checks of [`Recurrent`]'s inputs before a pass: a sequence batch's shape, a state's
//! shape (and values), and the parameters' shapes (reachable mutably between passes).

use super::Recurrent;
use crate::RecurrentState;
use nn_core::{Error, Float, Result, Shape, check_finite, check_shape};

impl<T: Float> Recurrent<T> {
    /// Checks a sequence batch's shape and returns `T` (the caller checks that its real columns
    /// are finite).
    pub(super) fn check_sequence<S: nalgebra::RawStorage<T, nalgebra::Dyn, nalgebra::Dyn>>(
        &self,
        op: &'static str,
        x: &nalgebra::Matrix<T, nalgebra::Dyn, nalgebra::Dyn, S>,
        batch: usize,
    ) -> Result<usize> {
        let input = self.config.input_size;
        if x.nrows() != input {
            return Err(Error::ShapeMismatch {
                op,
                expected: Shape(input, x.ncols()),
                got: Shape::from(x),
            });
        }
        if batch == 0 {
            return Err(Error::Empty { op, what: "batch" });
        }
        if x.ncols() == 0 {
            return Err(Error::Empty { op, what: "steps" });
        }
        if !x.ncols().is_multiple_of(batch) {
            return Err(Error::LengthMismatch {
                op: "Recurrent::forward input columns (T*B, a multiple of the batch)",
                expected: x.ncols().next_multiple_of(batch),
                got: x.ncols(),
            });
        }
        Ok(x.ncols() / batch)
    }

    /// Checks a state for batch `batch`: `h` `(H, L*D*B)`, `c` the same for the LSTM (where
    /// `None` means zeros) and absent for the other cells; finite when `finite`.
    pub(super) fn check_state(
        &self,
        op: &'static str,
        s: &RecurrentState<T>,
        batch: usize,
        slots: usize,
        finite: bool,
    ) -> Result<()> {
        let expected = Shape(self.config.hidden_size, slots * batch);
        check_shape(op, &s.h, expected)?;
        if finite {
            check_finite(op, &s.h)?;
        }
        match &s.c {
            Some(c) if self.config.cell.has_cell_state() => {
                check_shape(op, c, expected)?;
                if finite {
                    check_finite(op, c)?;
                }
                Ok(())
            }
            Some(_) => Err(Error::InvalidConfig(format!(
                "{op}: only an LSTM has a cell state `c`, this layer is {:?}",
                self.config.cell
            ))),
            None => Ok(()),
        }
    }

    /// Checks that every parameter still has its shape (they are reachable mutably through
    /// [`nn_core::Module::visit_mut`] and [`Recurrent::weights_mut`]).
    pub(crate) fn check_weights(&self, op: &'static str) -> Result<()> {
        let (cell, h, d) = (
            self.config.cell,
            self.config.hidden_size,
            self.config.num_directions(),
        );
        let gh = cell.gate_count() * h;
        for (k, w) in self.directions.iter().enumerate() {
            let input = if k < d { self.config.input_size } else { d * h };
            check_shape(op, &w.weight_ih.value, Shape(gh, input))?;
            check_shape(op, &w.weight_hh.value, Shape(gh, h))?;
            check_shape(op, &w.bias_ih.value, Shape(gh, 1))?;
            check_shape(op, &w.bias_hh.value, Shape(gh, 1))?;
            for p in [&w.weight_ih, &w.weight_hh, &w.bias_ih, &w.bias_hh] {
                check_shape(op, &p.grad, Shape::from(&p.value))?;
            }
        }
        Ok(())
    }
}
