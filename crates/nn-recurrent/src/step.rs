//! One time step of a unidirectional layer, for generation: `x_t` `(I, B)` (or one token id per
//! column, a one-hot `x_t` read as a column of `W_ih`) and the state `(H, L*B)` in, the new state
//! in place and the top layer's `h_t` `(H, B)` out.
//!
//! It runs the sequence forward's arithmetic for one step: the gates
//! `G = W_ih x_t + W_hh h_{t-1}` as the forward's products sum them (each element one chain over
//! `W_ih x_t`'s terms, then the chain of `W_hh h_{t-1}` added, or one chain over both where the
//! forward's steps compute the input part, [`input_in_loop`]), then the same cell code adding the
//! same folded biases. So feeding a sequence step by step gives the bits of
//! [`Recurrent::forward`] when each layer's input has at most 256 features; with more, the
//! forward's whole-sequence input product may run through matrixmultiply, which sums `k` in
//! blocks of 256, so the last bits may differ.
//!
//! Batches of at most [`GEMV_MAX_BATCH`] columns run on the matrix–vector kernel
//! ([`gemv_sum`](nn_core::kernels::gemv::gemv_sum): both products of a layer in one pass over two static halves of the rows, one
//! per core, so each core streams the same half of the weights from its own cache at every
//! step); larger ones on the packed kernel ([`step_products`]). Either way the weights are packed
//! into the [`StepScratch`] once per weight version: every `&mut` path to a layer's weights gives
//! it a fresh version, and the scratch re-packs when the version or the shapes differ. A warm
//! step allocates nothing.
//!
//! [`Recurrent::step_tokens`] takes token ids: the first layer's `W_ih x_t` for a one-hot `x_t`
//! is, element by element, the chain `0 + w·1 + 0·w' + …`, which is `w + 0` for finite weights;
//! it is read from column `id` of `W_ih` instead of multiplied (a batch of 24 or more, whose
//! forward sums the input and hidden parts as one chain, steps a one-hot matrix instead). The
//! weights are checked to be finite once per version, so both forms agree on every weight.

use crate::cell::{gru, lstm, rnn};
use crate::gates::GateLayout;
use crate::layer::{bias_column, gemv_step_products, input_in_loop, step_products};
use crate::weights::DirectionWeights;
use crate::{CellKind, Recurrent, RecurrentState};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::kernels::gemv::GemvMatrix;
use nn_core::kernels::packed::{PackedMatrix, packed_matmul_threaded};
use nn_core::{Accum, Error, Float, Result, Shape, Trans, check_finite, check_shape};

/// Largest batch stepped on the matrix–vector kernel; larger ones run on the packed kernel.
/// Figures in PERF.md.
pub(crate) const GEMV_MAX_BATCH: usize = 3;

/// What a layer's packings were made from: the weights' version, the layer and its shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackKey {
    version: u64,
    layer: usize,
    cell: CellKind,
    input: usize,
    hidden: usize,
}

/// One layer's weights packed for stepping, each packing with the key it was made from (they
/// are made when a step first needs them).
#[derive(Debug, Default)]
struct LayerPack<T: Float> {
    /// The weights were checked finite, and `bias` folded, under this key.
    checked: Option<PackKey>,
    /// `G*H`: the bias column the cells add.
    bias: Vec<T>,
    gemv_ih: (Option<PackKey>, GemvMatrix<T>),
    gemv_hh: (Option<PackKey>, GemvMatrix<T>),
    packed_ih: (Option<PackKey>, PackedMatrix<T>),
    packed_hh: (Option<PackKey>, PackedMatrix<T>),
}

impl<T: Float> LayerPack<T> {
    /// Checks the weights finite and folds the bias, once per key.
    fn check(&mut self, key: PackKey, w: &DirectionWeights<T>) -> Result<()> {
        if self.checked == Some(key) {
            return Ok(());
        }
        self.checked = None;
        for p in [&w.weight_ih, &w.weight_hh, &w.bias_ih, &w.bias_hh] {
            check_finite(
                "Recurrent::step parameter (weights must be finite)",
                &p.value,
            )?;
        }
        self.bias.resize(w.bias_ih.value.len(), T::zero());
        bias_column(key.cell, w, &mut self.bias);
        self.checked = Some(key);
        Ok(())
    }
}

/// `slot`'s packing of `m` under `key`, packed now if it was made from something else.
fn gemv_packed<'a, T: Float>(
    slot: &'a mut (Option<PackKey>, GemvMatrix<T>),
    key: PackKey,
    m: &DMatrix<T>,
) -> &'a GemvMatrix<T> {
    if slot.0 != Some(key) {
        slot.1.pack(m);
        slot.0 = Some(key);
    }
    &slot.1
}

/// As [`gemv_packed`], for the packed kernel.
fn kernel_packed<'a, T: Float>(
    slot: &'a mut (Option<PackKey>, PackedMatrix<T>),
    key: PackKey,
    m: &DMatrix<T>,
) -> &'a PackedMatrix<T> {
    if slot.0 != Some(key) {
        slot.1.pack(m, Trans::No);
        slot.0 = Some(key);
    }
    &slot.1
}

/// Buffers and packed weights for [`Recurrent::step`], sized on first use (and again when `B`
/// or the layer changes); the packed weights live across calls and are re-packed only when the
/// weights change (a fresh version on every `&mut` path to a layer's weights: `weights_mut`, `Module::visit_mut`, loading a file).
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
    /// `(I, B)`: tokens as a one-hot input, for batches whose forward sums the input part in
    /// the step's chain (empty otherwise).
    one_hot: DMatrix<T>,
    /// Per layer: its weights, packed once per version.
    layers: Vec<LayerPack<T>>,
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
            one_hot: DMatrix::zeros(0, 0),
            layers: Vec::new(),
        }
    }

    fn prepare(&mut self, cell: CellKind, hidden: usize, batch: usize, layers: usize) {
        if self.layers.len() != layers {
            self.layers.resize_with(layers, LayerPack::default);
        }
        let gh = GateLayout::new(cell, hidden).gate_rows();
        let (gru, lstm) = (cell == CellKind::Gru, cell == CellKind::Lstm);
        let want = |on: bool, rows: usize| if on { (rows, batch) } else { (0, 0) };
        if self.gates.shape() == (gh, batch)
            && self.h.shape() == (hidden, batch)
            && self.hidden_gates.shape() == want(gru, gh)
            && self.hidden_n.shape() == want(gru, hidden)
            && self.c.shape() == want(lstm, hidden)
        {
            return;
        }
        let zeros = |(r, c): (usize, usize)| DMatrix::zeros(r, c);
        self.gates = zeros((gh, batch));
        self.hidden_gates = zeros(want(gru, gh));
        self.hidden_n = zeros(want(gru, hidden));
        self.c = zeros(want(lstm, hidden));
        self.h = zeros((hidden, batch));
    }
}

/// A step's input: a matrix `(I, B)`, or one token id per column.
#[derive(Clone, Copy)]
enum StepInput<'x, T: Float> {
    Dense(DMatrixView<'x, T>),
    Tokens(&'x [usize]),
}

impl<T: Float> Recurrent<T> {
    /// One time step for generation (unidirectional layers only; bidirectional is an error):
    /// `x_t` `(I, B)`, `state` updated in place, returns the top layer's new `h` `(H, B)`.
    /// Agrees with [`Recurrent::forward`] run step by step.
    ///
    /// `state` is `(H, L*B)` (an LSTM needs its `c` too), e.g. from [`Recurrent::zero_state`] or a
    /// forward's final state. Errors: a bidirectional layer, wrong shapes, `B = 0`, a NaN or
    /// infinite input, state or weight, an overflow to infinity (then the layers below the one
    /// that overflowed have already stepped).
    ///
    /// `x_t` is a matrix (`&x`) or a view (`x.columns(t * b, b)`, a step of a sequence batch,
    /// with no copy).
    pub fn step<'s, 'x>(
        &self,
        x_t: impl Into<DMatrixView<'x, T>>,
        state: &mut RecurrentState<T>,
        scratch: &'s mut StepScratch<T>,
    ) -> Result<&'s DMatrix<T>> {
        self.step_input(StepInput::Dense(x_t.into()), state, scratch)
    }

    /// [`Recurrent::step`] with one token id per batch column (`B = tokens.len()`): the same
    /// bits as stepping the one-hot `(I, B)` matrix with a 1 at row `tokens[b]` of column `b`,
    /// without building or multiplying it (the first layer reads column `tokens[b]` of `W_ih`).
    ///
    /// Errors: as [`Recurrent::step`], and an id not below the input size `I` (the vocabulary)
    /// is [`Error::TokenOutOfRange`].
    pub fn step_tokens<'s>(
        &self,
        tokens: &[usize],
        state: &mut RecurrentState<T>,
        scratch: &'s mut StepScratch<T>,
    ) -> Result<&'s DMatrix<T>> {
        self.step_input(StepInput::Tokens(tokens), state, scratch)
    }

    /// Checks the layer, input and state for a step of `batch` columns.
    fn check_step(&self, input: StepInput<'_, T>, state: &RecurrentState<T>) -> Result<usize> {
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
        let vocab = config.input_size;
        let batch = match input {
            StepInput::Dense(x_t) => {
                let batch = x_t.ncols();
                if x_t.nrows() != vocab {
                    return Err(Error::ShapeMismatch {
                        op: "Recurrent::step input",
                        expected: Shape(vocab, batch),
                        got: Shape::from(&x_t),
                    });
                }
                batch
            }
            StepInput::Tokens(ids) => {
                if let Some((index, &token)) = ids.iter().enumerate().find(|(_, t)| **t >= vocab) {
                    return Err(Error::TokenOutOfRange {
                        op: "Recurrent::step_tokens",
                        index,
                        token,
                        vocab,
                    });
                }
                ids.len()
            }
        };
        if batch == 0 {
            return Err(Error::Empty { op, what: "batch" });
        }
        if let StepInput::Dense(x_t) = input {
            check_finite("Recurrent::step input", &x_t)?;
        }
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
        Ok(batch)
    }

    fn step_input<'s>(
        &self,
        input: StepInput<'_, T>,
        state: &mut RecurrentState<T>,
        scratch: &'s mut StepScratch<T>,
    ) -> Result<&'s DMatrix<T>> {
        let batch = self.check_step(input, state)?;
        let config = self.config();
        let (cell, h, layers) = (config.cell, config.hidden_size, config.num_layers);
        scratch.prepare(cell, h, batch, layers);
        let StepScratch {
            gates,
            hidden_gates,
            hidden_n,
            c: c_new,
            h: h_new,
            one_hot,
            layers: packs,
        } = scratch;
        let gh = GateLayout::new(cell, h).gate_rows();
        let small = batch <= GEMV_MAX_BATCH;
        // Tokens where the forward's steps would sum `W_ih x_t` and `W_hh h_{t-1}` as one chain:
        // step the one-hot matrix itself (a gather cannot start that chain).
        let input = match input {
            StepInput::Tokens(ids) if input_in_loop(batch, gh * config.input_size) => {
                if one_hot.shape() != (config.input_size, batch) {
                    *one_hot = DMatrix::zeros(config.input_size, batch);
                }
                one_hot.fill(T::zero());
                for (b, &id) in ids.iter().enumerate() {
                    one_hot[(id, b)] = T::one();
                }
                StepInput::Dense(one_hot.columns(0, batch))
            }
            other => other,
        };
        let span = |l: usize| l * batch * h..(l + 1) * batch * h;
        for (l, w) in self.directions().iter().enumerate() {
            let key = PackKey {
                version: self.version(),
                layer: l,
                cell,
                input: w.weight_ih.value.ncols(),
                hidden: h,
            };
            let pack = &mut packs[l];
            pack.check(key, w)?;
            {
                let mut g = gates.columns_mut(0, batch);
                let mut hidden =
                    (cell == CellKind::Gru).then(|| hidden_gates.columns_mut(0, batch));
                let h_prev = state.h.columns(l * batch, batch);
                // A zero state's product is skipped, as in the forward's first step.
                let h_prev = h_prev.iter().any(|&v| v != T::zero()).then_some(h_prev);
                let x = match (l, input) {
                    (0, StepInput::Tokens(ids)) => {
                        // `W_ih x_t` for one-hot columns: column `id` of `W_ih`, `+ 0` as the
                        // chain ends (a `-0` weight gives `+0`).
                        for (b, &id) in ids.iter().enumerate() {
                            let col = w.weight_ih.value.column(id);
                            for (o, &v) in g.column_mut(b).iter_mut().zip(col.iter()) {
                                *o = v + T::zero();
                            }
                        }
                        None
                    }
                    (0, StepInput::Dense(x_t)) => Some(x_t),
                    _ => Some(state.h.columns((l - 1) * batch, batch)),
                };
                let LayerPack {
                    gemv_ih,
                    gemv_hh,
                    packed_ih,
                    packed_hh,
                    ..
                } = pack;
                if small {
                    // Both packings now, so that the first step from a zero state (which skips
                    // `W_hh h`) leaves nothing to pack in the next.
                    let hh = gemv_packed(gemv_hh, key, &w.weight_hh.value);
                    let ih = x.map(|x| (gemv_packed(gemv_ih, key, &w.weight_ih.value), x));
                    gemv_step_products(
                        &mut g,
                        hidden.as_mut(),
                        hh,
                        h_prev.as_ref(),
                        ih.as_ref().map(|(w, x)| (*w, x)),
                    );
                } else {
                    let w_hh = kernel_packed(packed_hh, key, &w.weight_hh.value);
                    let in_loop = input_in_loop(batch, gh * w.weight_ih.value.ncols());
                    let mut pair = None;
                    if let Some(x) = x {
                        let w_ih = kernel_packed(packed_ih, key, &w.weight_ih.value);
                        if in_loop {
                            pair = Some((w_ih, x));
                        } else {
                            // `W_ih x` first, as the forward's whole-sequence product before its
                            // loop (large products share panels with the pool's helper).
                            packed_matmul_threaded(&mut g, Accum::Replace, w_ih, &x);
                        }
                    }
                    let pair = pair.as_ref().map(|(w, x)| (*w, x));
                    step_products(&mut g, hidden.as_mut(), w_hh, h_prev.as_ref(), pair);
                }
            }
            let bias = &pack.bias;
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
