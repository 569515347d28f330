//! What a forward pass keeps for backward, and the results of both; sized once per `(T, B)`.
//!
//! Per layer `l`: the output `(D*H, T*B)` (rows `d*H..(d+1)*H` are direction `d`'s hidden
//! sequence, so the hidden states are stored once, in the output), and for layers below the top
//! the gradient arriving at that output from the layer above (and, with dropout, the mask and the
//! masked output the layer above reads). Per layer-direction
//! ([`DirectionCache`]): the gates (over which backward writes the gate gradients), the part of
//! the GRU's hidden side that backward reads, the LSTM's cell sequence, and `W_hh` packed for the
//! step products.
//!
//! A cache is re-sized only when the layer's settings, `T` or `B` change; otherwise forward and
//! backward reuse every buffer and allocate nothing.

use crate::fingerprint::Fingerprint;
use crate::gates::GateLayout;
use crate::lengths::Packing;
use crate::{CellKind, RecurrentConfig, RecurrentState};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::kernels::gemv::GemvMatrix;
use nn_core::kernels::packed::PackedMatrix;
use nn_core::{Float, Result, try_zeros};

/// The operation named by the buffers' allocation errors.
const OP: &str = "Recurrent::forward cache";

/// Buffers of one layer-direction (`G` gate blocks, `T` steps, `B` sequences).
#[derive(Debug)]
pub(crate) struct DirectionCache<T: Float> {
    /// `(G*H, T*B)` (GRU `(4H, T*B)`, the gates in rows `H..4H`): the input projection
    /// `W_ih X` (or each step's `W_ih x_t`, when the steps compute the input part:
    /// `layer::input_in_loop`), then (RNN, LSTM) `+ W_hh h_{t-1}` (in the same product as
    /// `W_ih x_t` when the steps compute it), then the gate activations the cell writes
    /// (LSTM `i, f, g, o`; GRU `r, z, n`; the RNN's cell writes none, so its pre-activation
    /// without the bias stays, unread by backward).
    ///
    /// Backward writes the gate pre-activation gradients `dG` over it, column by column as
    /// each step's cell has read its gates (so one backward per forward). They are the same for
    /// the input side (`dW_ih`, `db_ih`, `dX`) and the hidden side (`dW_hh`, `db_hh`,
    /// `dh_{t-1}`) of an RNN or LSTM. A GRU's two sides differ only in their `n` block: its
    /// column becomes `[dgx_n; dg_r; dg_z; dgh_n]`, rows `0..3H` the input side (`n` first) and
    /// rows `H..4H` the hidden side in `W_hh`'s order (see `cell::gru`).
    pub gates: DMatrix<T>,
    /// GRU only `(3H, B)`: each step's `W_hh h_{t-1}`, column `b` for sequence `b` (a scratch the
    /// cell reads at once); else empty.
    pub hidden_gates: DMatrix<T>,
    /// GRU only `(H, T*B)`: `ĝ_n = W_hn h_{t-1} + b_hn`, the one part of the hidden side that
    /// backward reads; else empty.
    pub hidden_n: DMatrix<T>,
    /// LSTM only `(H, T*B)`: `c_t` (backward computes `tanh(c_t)` again from it); else empty.
    pub cells: DMatrix<T>,
    /// `W_hh` packed for the per-step product: as is in forward, transposed (`W_hhᵀ`) in
    /// backward. Packed once per pass, so each step's product allocates nothing.
    pub packed_hh: PackedMatrix<T>,
    /// `W_ih` packed for the forward's step product when the steps compute the input part
    /// (`layer::input_in_loop`; packed once per pass); else empty.
    pub packed_ih: PackedMatrix<T>,
    /// `W_hh` and (when the steps compute the input part) `W_ih` packed for the matrix–vector
    /// kernel: the forward's step products at batches of at most 3 columns; else empty.
    pub gemv_hh: GemvMatrix<T>,
    pub gemv_ih: GemvMatrix<T>,
    /// Scratch of `gates`' rows: the bias column the cells add (forward, its first `G*H`),
    /// then the row sums of the gate gradients, summed once and added to both bias gradients
    /// (backward).
    pub bias: Vec<T>,
}

impl<T: Float> DirectionCache<T> {
    fn new(cell: CellKind, hidden: usize, cols: usize, batch: usize) -> Result<Self> {
        let layout = GateLayout::new(cell, hidden);
        let rows = layout.gate_rows();
        let gru = cell == CellKind::Gru;
        let lstm = cell == CellKind::Lstm;
        // The hidden side's rows end the gate gradients' column (a GRU's `4H`, else `G·H`).
        let d_rows = layout.buffer_rows();
        let sized_cols = |on: bool, r: usize, c: usize| {
            if on {
                try_zeros(OP, r, c)
            } else {
                Ok(DMatrix::zeros(0, 0))
            }
        };
        let sized = |on: bool, r: usize| sized_cols(on, r, cols);
        Ok(DirectionCache {
            gates: try_zeros(OP, d_rows, cols)?,
            hidden_gates: sized_cols(gru, rows, batch)?,
            hidden_n: sized(gru, hidden)?,
            cells: sized(lstm, hidden)?,
            packed_hh: PackedMatrix::new(),
            packed_ih: PackedMatrix::new(),
            gemv_hh: GemvMatrix::new(),
            gemv_ih: GemvMatrix::new(),
            bias: vec![T::zero(); d_rows],
        })
    }

    /// The buffers of the forward-only pass ([`crate::Recurrent::infer`]), which keeps no step
    /// history: `gate_cols` columns of gates (one step's `B`, or a window of the input product),
    /// the GRU's `ĝ_n` for one step `(H, B)`, the LSTM's `c_{t-1}` and `c_t` `(H, 2B)`.
    pub(crate) fn window(
        cell: CellKind,
        hidden: usize,
        gate_cols: usize,
        batch: usize,
    ) -> Result<Self> {
        let layout = GateLayout::new(cell, hidden);
        let (gru, lstm) = (cell == CellKind::Gru, cell == CellKind::Lstm);
        let sized = |on: bool, r: usize, c: usize| {
            if on {
                try_zeros(OP, r, c)
            } else {
                Ok(DMatrix::zeros(0, 0))
            }
        };
        Ok(DirectionCache {
            gates: try_zeros(OP, layout.buffer_rows(), gate_cols)?,
            hidden_gates: sized(gru, layout.gate_rows(), batch)?,
            hidden_n: sized(gru, hidden, batch)?,
            cells: sized(lstm, hidden, batch.saturating_mul(2))?,
            packed_hh: PackedMatrix::new(),
            packed_ih: PackedMatrix::new(),
            gemv_hh: GemvMatrix::new(),
            gemv_ih: GemvMatrix::new(),
            bias: vec![T::zero(); layout.buffer_rows()],
        })
    }
}

/// What a [`RecurrentCache`]'s buffers hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Saved {
    /// No complete forward (none yet, or the last one failed).
    Nothing,
    /// A forward's results, ready for one backward.
    Forward,
    /// A forward's outputs and final state, but no longer its gates: a backward has started on
    /// them and writes the gate gradients over them, so another backward needs a new forward.
    Used,
}

/// The extra buffers of a variable-length batch ([`crate::Lengths::Each`]), whose passes run in
/// the packed layout of [`Packing`]: the layers' buffers hold the `N` real columns first, the
/// states the sequences in sorted order. Sized for `(T, B)` like the rest, on the first
/// variable-length forward.
#[derive(Debug)]
pub(crate) struct PackedBuffers<T: Float> {
    // (The forward-only pass uses `x`, `output`, `initial` and `final_state`.)
    /// `(I, T*B)`: the real columns of the input, packed (the layers' input and `dW_ih`'s).
    pub x: DMatrix<T>,
    /// `(D*H, T*B)`: the top layer's output in the caller's padded layout, 0 at padded steps.
    pub output: DMatrix<T>,
    /// `(D*H, T*B)`: the top layer's output gradient, packed.
    pub d_top: DMatrix<T>,
    /// `(I, T*B)`: the input gradient, packed.
    pub d_x: DMatrix<T>,
    /// `(H, T*B)`: each step's `h_{t-1}`, packed, for `dW_hh` (see `layer/backward.rs`).
    pub h_prev: DMatrix<T>,
    /// The initial state, final state and state gradient with the sequences sorted.
    pub initial: RecurrentState<T>,
    pub final_state: RecurrentState<T>,
    pub d_initial: RecurrentState<T>,
}

impl<T: Float> PackedBuffers<T> {
    /// The buffers for `(T, B)`; without `backward` (the forward-only pass) the three gradient
    /// ones are empty.
    pub(crate) fn new(
        config: &RecurrentConfig,
        steps: usize,
        batch: usize,
        backward: bool,
    ) -> Result<Self> {
        let (h, d, l) = (
            config.hidden_size,
            config.num_directions(),
            config.num_layers,
        );
        let cols = steps * batch;
        let with_c = config.cell.has_cell_state();
        let state = || RecurrentState::try_zeros(h, l * d, batch, with_c);
        let grad = |rows: usize| try_zeros(OP, rows, if backward { cols } else { 0 });
        Ok(PackedBuffers {
            x: try_zeros(OP, config.input_size, cols)?,
            output: try_zeros(OP, d * h, cols)?,
            d_top: grad(d * h)?,
            d_x: grad(config.input_size)?,
            h_prev: grad(h)?,
            initial: state()?,
            final_state: state()?,
            d_initial: state()?,
        })
    }

    /// Sets the sorted running state gradient to `d_final` (the caller's order; zeros when
    /// `None`, an LSTM's `c: None` zeros too).
    pub(crate) fn initial_d(&mut self, packing: &Packing, d_final: Option<&RecurrentState<T>>) {
        self.d_initial.fill_zero();
        if let Some(s) = d_final {
            packing.permute_state(s, &mut self.d_initial, true);
        }
    }
}

/// Buffers of one stacked layer.
#[derive(Debug)]
pub(crate) struct LayerCache<T: Float> {
    /// `(D*H, T*B)`: the layer's output, direction `d` in rows `d*H..(d+1)*H`.
    pub output: DMatrix<T>,
    /// `(D*H, T*B)` below the top layer: `∂L/∂output` from the layer above; empty on top.
    pub d_output: DMatrix<T>,
    /// `(D*H, T*B)` below the top layer when the config's `dropout > 0`, else empty: the
    /// training forward's dropout mask (`0` or `1/(1-p)`, `layer::dropout`) and the masked
    /// output the layer above reads.
    pub mask: DMatrix<T>,
    pub dropped: DMatrix<T>,
    /// One per direction.
    pub directions: Vec<DirectionCache<T>>,
}

/// Everything forward keeps for backward, and the results; sized once per `(T, B)` and reused.
/// A backward writes its gate gradients over what the forward kept, so it needs a forward of its
/// own: a second backward after one forward is an error.
#[derive(Debug)]
pub struct RecurrentCache<T: Float> {
    /// The settings, `T` and `B` the buffers are sized for (`None` before the first forward).
    pub(crate) sized_for: Option<(RecurrentConfig, usize, usize)>,
    /// What the buffers hold.
    pub(crate) saved: Saved,
    /// The print of the forward's input, which backward's `x` must match.
    pub(crate) input_print: Option<Fingerprint>,
    /// Whether the forward applied dropout (the layers above the first read `dropped`, and
    /// backward applies the same masks).
    pub(crate) dropout_used: bool,
    pub(crate) layers: Vec<LayerCache<T>>,
    /// A copy of the forward's initial state (zeros when none was given).
    pub(crate) initial: RecurrentState<T>,
    pub(crate) final_state: RecurrentState<T>,
    pub(crate) d_initial: RecurrentState<T>,
    /// The step layout of the last forward (the padded one without lengths).
    pub(crate) packing: Packing,
    /// The buffers of variable-length batches, once one has run at these sizes.
    pub(crate) packed: Option<PackedBuffers<T>>,
    empty: DMatrix<T>,
}

impl<T: Float> Default for RecurrentCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> RecurrentCache<T> {
    /// An empty cache; the first forward sizes it.
    pub fn new() -> Self {
        let empty_state = || RecurrentState {
            h: DMatrix::zeros(0, 0),
            c: None,
        };
        RecurrentCache {
            sized_for: None,
            saved: Saved::Nothing,
            input_print: None,
            dropout_used: false,
            layers: Vec::new(),
            initial: empty_state(),
            final_state: empty_state(),
            d_initial: empty_state(),
            packing: Packing::default(),
            packed: None,
            empty: DMatrix::zeros(0, 0),
        }
    }

    /// The settings, `T` and `B` of the forward the buffers hold, or `None` when they hold
    /// none (before the first forward, or after one that failed).
    pub(crate) fn forward_shape(&self) -> Option<(&RecurrentConfig, usize, usize)> {
        match &self.sized_for {
            Some((c, t, b)) if self.saved != Saved::Nothing => Some((c, *t, *b)),
            _ => None,
        }
    }

    /// The output `(D*H, T*B)` of the last forward (empty before the first).
    pub fn output(&self) -> &DMatrix<T> {
        match (self.layers.last(), &self.packed) {
            (Some(_), Some(p)) if self.forward_shape().is_some() && !self.packing.full => &p.output,
            (Some(top), _) if self.forward_shape().is_some() => &top.output,
            _ => &self.empty,
        }
    }

    /// The top layer's output at the real positions of the last forward, packed: `(D*H, N)`,
    /// column `k` the padded column `t*B + b` that [`RecurrentCache::packed_columns`] gives as
    /// the `k`-th (steps in order; within a step, the sequences still running, longest first).
    /// For a full batch, `N = T*B` and this is [`RecurrentCache::output`]. Empty before the first
    /// forward. [`Recurrent::backward_packed`](crate::Recurrent::backward_packed) takes a gradient
    /// in this layout.
    pub fn packed_output(&self) -> DMatrixView<'_, T> {
        match self.layers.last() {
            Some(top) if self.forward_shape().is_some() => {
                top.output.columns(0, self.packing.total())
            }
            _ => self.empty.columns(0, 0),
        }
    }

    /// The padded column (`t*B + b`) of each column of [`RecurrentCache::packed_output`], in
    /// order.
    pub fn packed_columns(&self) -> impl Iterator<Item = usize> + '_ {
        let n = if self.forward_shape().is_some() {
            self.packing.total()
        } else {
            0
        };
        self.packing.padded_columns().take(n)
    }

    /// The final state (`h_n`, `c_n`) of the last forward: `(H, L*D*B)`, column `(l*D + d)*B + b`.
    pub fn final_state(&self) -> &RecurrentState<T> {
        &self.final_state
    }

    /// The gradient of the initial state, after a backward (same layout as the state).
    pub fn d_initial(&self) -> &RecurrentState<T> {
        &self.d_initial
    }

    /// `(T, B)` of the last forward, or `None` before the first.
    pub fn steps_and_batch(&self) -> Option<(usize, usize)> {
        self.forward_shape().map(|(_, t, b)| (t, b))
    }

    /// Makes every buffer fit `config`, `steps` and `batch`, reallocating only when they changed;
    /// buffers too large to allocate are [`nn_core::Error::TooLarge`] (the cache is then empty).
    pub(crate) fn prepare(
        &mut self,
        config: &RecurrentConfig,
        steps: usize,
        batch: usize,
    ) -> Result<()> {
        if matches!(&self.sized_for, Some((c, t, b)) if c == config && *t == steps && *b == batch) {
            return Ok(());
        }
        // Nothing of the old sizes survives a failure below.
        self.sized_for = None;
        self.saved = Saved::Nothing;
        self.layers = Vec::new();
        self.packed = None;
        let (h, d, l) = (
            config.hidden_size,
            config.num_directions(),
            config.num_layers,
        );
        let cols = steps * batch;
        // Dropout's buffers: layers below the top, when the config drops.
        let dropout_buffer = |k: usize| {
            if config.dropout > 0.0 && k + 1 < l {
                try_zeros(OP, d * h, cols)
            } else {
                Ok(DMatrix::zeros(0, 0))
            }
        };
        self.layers = (0..l)
            .map(|k| {
                Ok(LayerCache {
                    output: try_zeros(OP, d * h, cols)?,
                    d_output: if k + 1 < l {
                        try_zeros(OP, d * h, cols)?
                    } else {
                        DMatrix::zeros(0, 0)
                    },
                    mask: dropout_buffer(k)?,
                    dropped: dropout_buffer(k)?,
                    directions: (0..d)
                        .map(|_| DirectionCache::new(config.cell, h, cols, batch))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        let with_c = config.cell.has_cell_state();
        self.initial = RecurrentState::zeros(h, l * d, batch, with_c);
        self.final_state = RecurrentState::zeros(h, l * d, batch, with_c);
        self.d_initial = RecurrentState::zeros(h, l * d, batch, with_c);
        self.sized_for = Some((config.clone(), steps, batch));
        Ok(())
    }
}
