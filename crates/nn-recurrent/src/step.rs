//! One time step of a unidirectional layer, for generation: `x_t` `(I, B)` and the state
//! `(H, L*B)` in, the new state in place and the top layer's `h_t` `(H, B)` out.
//!
//! It runs the sequence forward's arithmetic for one step: the forward loop's own step products
//! ([`step_products`]), with the input part inside them where the forward's steps compute it
//! ([`input_in_loop`]) and else first, as the forward's whole-sequence product, then the same
//! cell code adding the same folded biases. So feeding a sequence step by step gives the bits of
//! [`Recurrent::forward`] when each layer's input has at most 256 features; with more, the
//! forward's whole-sequence input product may run through matrixmultiply, which sums `k` in
//! blocks of 256, so the last bits may differ.
//! Both products run on weights packed into the [`StepScratch`], so a warm step allocates
//! nothing.

use crate::cell::{gru, lstm, rnn};
use crate::gates::GateLayout;
use crate::layer::{bias_column, input_in_loop, step_products};
use crate::{CellKind, Recurrent, RecurrentState};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::kernels::packed::{PackedMatrix, packed_matmul_threaded};
use nn_core::{Accum, Error, Float, Result, Shape, Trans, check_finite, check_shape};

/// Buffers for [`Recurrent::step`], sized on first use (and again when `B` or the layer changes).
#[derive(Debug)]
pub struct StepScratch<T: Float> {
    /// `(G*H, B)`: the gates of the layer being stepped.
    gates: DMatrix<T>,
    /// GRU only `(3H, B)`: `W_hh h_{t-1}`.
    hidden_gates: DMatrix<T>,
    /// GRU only `(H, B)`: `W_hn h_{t-1} + b_hn` (kept for backward by the sequence forward;
    /// scratch here).
    hidden_n: DMatrix<T>,
    /// LSTM only `(H, B)`: the new `c`.
    c: DMatrix<T>,
    /// `(H, B)`: the new `h` of the layer being stepped; the top layer's after the step.
    h: DMatrix<T>,
    /// The stepped layer's `W_hh`, packed for the product (re-packed each step: the weights may
    /// have changed between calls).
    packed_hh: PackedMatrix<T>,
    /// The stepped layer's `W_ih`, packed for the input projection (likewise re-packed).
    packed_ih: PackedMatrix<T>,
    /// `G*H`: the bias column the cells add.
    bias: Vec<T>,
}

impl<T: Float> Default for StepScratch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> StepScratch<T> {
    /// Empty buffers; the first step sizes them.
    pub fn new() -> Self {
        StepScratch {
            gates: DMatrix::zeros(0, 0),
            hidden_gates: DMatrix::zeros(0, 0),
            hidden_n: DMatrix::zeros(0, 0),
            c: DMatrix::zeros(0, 0),
            h: DMatrix::zeros(0, 0),
            packed_hh: PackedMatrix::new(),
            packed_ih: PackedMatrix::new(),
            bias: Vec::new(),
        }
    }

    fn prepare(&mut self, cell: CellKind, hidden: usize, batch: usize) {
        let gh = GateLayout::new(cell, hidden).gate_rows();
        let (gru, lstm) = (cell == CellKind::Gru, cell == CellKind::Lstm);
        let want = |on: bool, rows: usize| if on { (rows, batch) } else { (0, 0) };
        if self.gates.shape() == (gh, batch)
            && self.h.shape() == (hidden, batch)
            && self.hidden_gates.shape() == want(gru, gh)
            && self.hidden_n.shape() == want(gru, hidden)
            && self.c.shape() == want(lstm, hidden)
            && self.bias.len() == gh
        {
            return;
        }
        let zeros = |(r, c): (usize, usize)| DMatrix::zeros(r, c);
        self.gates = zeros((gh, batch));
        self.hidden_gates = zeros(want(gru, gh));
        self.hidden_n = zeros(want(gru, hidden));
        self.c = zeros(want(lstm, hidden));
        self.h = zeros((hidden, batch));
        self.bias = vec![T::zero(); gh];
    }
}

impl<T: Float> Recurrent<T> {
    /// One time step for generation (unidirectional layers only; bidirectional is an error):
    /// `x_t` `(I, B)`, `state` updated in place, returns the top layer's new `h` `(H, B)`.
    /// Agrees with [`Recurrent::forward`] run step by step.
    ///
    /// `state` is `(H, L*B)` (an LSTM needs its `c` too), e.g. from [`Recurrent::zero_state`] or a
    /// forward's final state. Errors: a bidirectional layer, wrong shapes, `B = 0`, a NaN or
    /// infinite input or state, an overflow to infinity (then the layers below the one that
    /// overflowed have already stepped).
    ///
    /// `x_t` is a matrix (`&x`) or a view (`x.columns(t * b, b)`, a step of a sequence batch,
    /// with no copy).
    pub fn step<'s, 'x>(
        &self,
        x_t: impl Into<DMatrixView<'x, T>>,
        state: &mut RecurrentState<T>,
        scratch: &'s mut StepScratch<T>,
    ) -> Result<&'s DMatrix<T>> {
        let x_t: DMatrixView<'x, T> = x_t.into();
        let x_t = &x_t;
        let op = "Recurrent::step";
        let config = self.config();
        if config.bidirectional {
            return Err(Error::InvalidConfig(
                "Recurrent::step: a bidirectional layer needs the whole sequence; use forward"
                    .into(),
            ));
        }
        self.check_weights("Recurrent::step parameter")?;
        let (cell, h, layers) = (config.cell, config.hidden_size, config.num_layers);
        let batch = x_t.ncols();
        if x_t.nrows() != config.input_size {
            return Err(Error::ShapeMismatch {
                op: "Recurrent::step input",
                expected: Shape(config.input_size, batch),
                got: Shape::from(x_t),
            });
        }
        if batch == 0 {
            return Err(Error::Empty { op, what: "batch" });
        }
        check_finite("Recurrent::step input", x_t)?;
        let expected = Shape(h, layers * batch);
        check_shape("Recurrent::step state h", &state.h, expected)?;
        match (&state.c, cell.has_cell_state()) {
            (Some(c), true) => check_shape("Recurrent::step state c", c, expected)?,
            (None, false) => {}
            (None, true) => {
                return Err(Error::ShapeMismatch {
                    op: "Recurrent::step state c (an LSTM steps h and c)",
                    expected,
                    got: Shape(0, 0),
                });
            }
            (Some(_), false) => {
                return Err(Error::InvalidConfig(format!(
                    "{op}: only an LSTM has a cell state `c`, this layer is {cell:?}"
                )));
            }
        }
        check_finite("Recurrent::step state h", &state.h)?;
        if let Some(c) = &state.c {
            check_finite("Recurrent::step state c", c)?;
        }
        scratch.prepare(cell, h, batch);
        let StepScratch {
            gates,
            hidden_gates,
            hidden_n,
            c: c_new,
            h: h_new,
            packed_hh,
            packed_ih,
            bias,
        } = scratch;
        let gh = GateLayout::new(cell, h).gate_rows();
        let span = |l: usize| l * batch * h..(l + 1) * batch * h;
        for (l, w) in self.directions().iter().enumerate() {
            {
                let input = if l == 0 {
                    x_t.columns(0, batch)
                } else {
                    state.h.columns((l - 1) * batch, batch)
                };
                // The gates' products, as the forward's steps run them (the cell adds `bias`),
                // on the packed kernel so that a warm step allocates nothing.
                bias_column(cell, w, bias);
                packed_ih.pack(&w.weight_ih.value, Trans::No);
                let h_prev = state.h.columns(l * batch, batch);
                packed_hh.pack(&w.weight_hh.value, Trans::No);
                let mut g = gates.columns_mut(0, batch);
                let in_loop = input_in_loop(batch, gh * input.nrows());
                if !in_loop {
                    // `W_ih x` first, as the forward's whole-sequence product before its loop
                    // (large products share panels with the pool's helper).
                    packed_matmul_threaded(&mut g, Accum::Replace, packed_ih, &input);
                }
                let mut hidden =
                    (cell == CellKind::Gru).then(|| hidden_gates.columns_mut(0, batch));
                let x = in_loop.then_some((&*packed_ih, &input));
                // A zero state's product is skipped, as in the forward's first step.
                let h_prev = h_prev.iter().any(|&v| v != T::zero()).then_some(&h_prev);
                step_products(&mut g, hidden.as_mut(), packed_hh, h_prev, x);
            }
            let h_prev = &state.h.as_slice()[span(l)];
            let c_prev = state.c.as_ref().map_or(&[][..], |c| &c.as_slice()[span(l)]);
            let b_hn = &w.bias_hh.value.as_slice()[gh - h..];
            for b in 0..batch {
                let g = &mut gates.as_mut_slice()[b * gh..][..gh];
                let hn = &mut h_new.as_mut_slice()[b * h..][..h];
                match cell {
                    CellKind::Rnn(act) => rnn::forward(act, g, bias, hn),
                    CellKind::Lstm => lstm::forward(
                        g,
                        bias,
                        &c_prev[b * h..][..h],
                        &mut c_new.as_mut_slice()[b * h..][..h],
                        hn,
                    ),
                    CellKind::Gru => gru::forward(
                        g,
                        bias,
                        &hidden_gates.as_slice()[b * gh..][..gh],
                        b_hn,
                        &mut hidden_n.as_mut_slice()[b * h..][..h],
                        &h_prev[b * h..][..h],
                        hn,
                    ),
                }
            }
            // Overflow (huge weights or inputs) is refused before it reaches the state; layers
            // below `l` have then already stepped.
            check_finite("Recurrent::step new h (overflow)", h_new)?;
            if cell.has_cell_state() {
                check_finite("Recurrent::step new c (overflow)", c_new)?;
            }
            state.h.as_mut_slice()[span(l)].copy_from_slice(h_new.as_slice());
            if let Some(c) = &mut state.c {
                c.as_mut_slice()[span(l)].copy_from_slice(c_new.as_slice());
            }
        }
        Ok(h_new)
    }
}
