//! The forward-only pass ([`Recurrent::infer`], PyTorch's forward under `torch.inference_mode`):
//! `x` `(I, T*B)` and an optional initial state `(H, L*D*B)` in, the output `(D*H, T*B)` and the
//! final state `(h_n, c_n)` `(H, L*D*B)` out, both in an [`InferScratch`].
//!
//! It runs the training forward's code ([`forward`](super::forward), [`Keep::Window`]): the same
//! products and cells on buffers that keep no step history. Per layer-direction, one step's gates
//! (`(G·H, B)`) when the steps compute the input part, else a window of steps of the input product
//! `W_ih · X` (about 4096 columns; the training forward's whole-sequence product cut into
//! windows of columns); the GRU's hidden part for one step, the LSTM's `c` for two. The layers
//! write two output-sized buffers in turn (the top layer's is the output). So beyond the output
//! (and the buffer below it for a stack), memory does not grow with `T`; and the output and final
//! state are the bits of [`Recurrent::forward`]'s.

use super::Dims;
use super::forward::{self, Keep, window_columns};
use crate::cache::{DirectionCache, PackedBuffers};
use crate::gates::GateLayout;
use crate::lengths::Packing;
use crate::{Lengths, Recurrent, RecurrentConfig, RecurrentState};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::{Float, Result, check_finite, try_zeros};

/// The operation named by the buffers' allocation errors.
const OP: &str = "Recurrent::infer buffers";

/// Buffers of [`Recurrent::infer`] and its results: the output `(D*H, T*B)` and the final state
/// `(H, L*D*B)`. Sized on first use and again when the layer's settings, `T` or `B` change; a
/// call with the same sizes allocates nothing.
#[derive(Debug)]
pub struct InferScratch<T: Float> {
    /// The settings, `T` and `B` the buffers are sized for.
    sized_for: Option<(RecurrentConfig, usize, usize)>,
    /// Whether the buffers hold the results of a successful call.
    done: bool,
    /// `(D*H, T*B)` each: layer `l` writes `outputs[(L - 1 - l) % 2]`, so the top layer's is
    /// `outputs[0]`; `outputs[1]` is empty for one layer.
    outputs: [DMatrix<T>; 2],
    /// The one set of step buffers, used by each layer-direction in turn (sized for the largest).
    direction: Option<DirectionCache<T>>,
    /// A copy of the initial state (zeros when none was given).
    initial: RecurrentState<T>,
    final_state: RecurrentState<T>,
    /// The step layout of the last call, and the buffers of a variable-length batch
    /// ([`PackedBuffers`]: the packed input, the padded output, the sorted states).
    packing: Packing,
    packed: Option<PackedBuffers<T>>,
    empty: DMatrix<T>,
    empty_state: RecurrentState<T>,
}

impl<T: Float> Default for InferScratch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> InferScratch<T> {
    /// Empty buffers; the first [`Recurrent::infer`] sizes them.
    pub fn new() -> Self {
        let none = || RecurrentState {
            h: DMatrix::zeros(0, 0),
            c: None,
        };
        InferScratch {
            sized_for: None,
            done: false,
            outputs: [DMatrix::zeros(0, 0), DMatrix::zeros(0, 0)],
            direction: None,
            initial: none(),
            final_state: none(),
            packing: Packing::default(),
            packed: None,
            empty: DMatrix::zeros(0, 0),
            empty_state: none(),
        }
    }

    /// The output `(D*H, T*B)` of the last successful [`Recurrent::infer`] (PyTorch's `output`
    /// as `[T, B, D*H]` bytes); empty before the first or after a failed one.
    pub fn output(&self) -> &DMatrix<T> {
        match &self.packed {
            Some(p) if self.done && !self.packing.full => &p.output,
            _ if self.done => &self.outputs[0],
            _ => &self.empty,
        }
    }

    /// The final state `h_n` (and `c_n`) `(H, L*D*B)`, column `(l*D + d)*B + b`, of the last
    /// successful [`Recurrent::infer`]; empty before the first or after a failed one.
    pub fn final_state(&self) -> &RecurrentState<T> {
        if self.done {
            &self.final_state
        } else {
            &self.empty_state
        }
    }

    /// Sizes every buffer for `config`, `steps` and `batch` (only when they changed).
    fn prepare(&mut self, config: &RecurrentConfig, steps: usize, batch: usize) -> Result<()> {
        self.done = false;
        if matches!(&self.sized_for, Some((c, t, b)) if c == config && *t == steps && *b == batch) {
            return Ok(());
        }
        self.sized_for = None;
        self.outputs = [DMatrix::zeros(0, 0), DMatrix::zeros(0, 0)];
        self.direction = None;
        self.packed = None;
        let (h, d, l) = (
            config.hidden_size,
            config.num_directions(),
            config.num_layers,
        );
        let cols = steps.saturating_mul(batch);
        let below = if l > 1 { d * h } else { 0 };
        self.outputs = [try_zeros(OP, d * h, cols)?, try_zeros(OP, below, cols)?];
        let gh = GateLayout::new(config.cell, h).gate_rows();
        let gate_cols = (0..l)
            .map(|k| {
                let input = if k == 0 { config.input_size } else { d * h };
                window_columns(batch, gh, input, steps)
            })
            .max()
            .unwrap_or(0);
        self.direction = Some(DirectionCache::window(config.cell, h, gate_cols, batch)?);
        let with_c = config.cell.has_cell_state();
        self.initial = RecurrentState::try_zeros(h, l * d, batch, with_c)?;
        self.final_state = RecurrentState::try_zeros(h, l * d, batch, with_c)?;
        self.sized_for = Some((config.clone(), steps, batch));
        Ok(())
    }
}

impl<T: Float> Recurrent<T> {
    /// Forward only, for inference: the output and final state of [`Recurrent::forward`], bit
    /// for bit, without keeping what backward needs (PyTorch's
    /// `output, (h_n, c_n) = lstm(x, (h0, c0))` under `torch.inference_mode()`).
    ///
    /// `x` is `(I, T*B)` (column `t*B + b` = step `t` of sequence `b`), a matrix (`&x`) or a
    /// view; `batch` is `B`; `initial` is `(H, L*D*B)` (zeros when `None`; an LSTM's `c: None`
    /// means zeros). Returns the output `(D*H, T*B)` and the final state `(H, L*D*B)`, which stay
    /// readable as [`InferScratch::output`] and [`InferScratch::final_state`].
    ///
    /// Memory: the scratch holds the output, for a stack one more buffer of its size, and per
    /// step buffers that do not grow with `T` (see the module doc of `layer/infer.rs`). A call
    /// with the sizes of the last one allocates nothing.
    ///
    /// Errors: as [`Recurrent::forward`]: wrong input rows, columns not a multiple of `B`,
    /// `B = 0` or `T = 0`, a NaN or infinite input or initial state, an initial state of the
    /// wrong shape, buffers too large to allocate, an output that overflowed to infinity.
    pub fn infer<'s, 'x>(
        &self,
        x: impl Into<DMatrixView<'x, T>>,
        batch: usize,
        initial: Option<&RecurrentState<T>>,
        scratch: &'s mut InferScratch<T>,
    ) -> Result<(&'s DMatrix<T>, &'s RecurrentState<T>)> {
        self.infer_with(x, Lengths::Full(batch), initial, scratch)
    }

    /// [`Recurrent::infer`] with each sequence's length ([`Lengths`], as in
    /// [`Recurrent::forward_with`]): the output and final state of `forward_with` on the same
    /// lengths, bit for bit. Errors: those of `infer`, and lengths outside `1..=T`.
    pub fn infer_with<'s, 'x>(
        &self,
        x: impl Into<DMatrixView<'x, T>>,
        lengths: Lengths<'_>,
        initial: Option<&RecurrentState<T>>,
        scratch: &'s mut InferScratch<T>,
    ) -> Result<(&'s DMatrix<T>, &'s RecurrentState<T>)> {
        let x: DMatrixView<'x, T> = x.into();
        scratch.done = false;
        self.check_weights("Recurrent::infer parameter")?;
        let batch = lengths.batch();
        let op = "Recurrent::infer input (rows: I features; columns: T*B, step t of sequence b at t*B + b)";
        let steps = self.check_sequence(op, &x, batch)?;
        lengths.check("Recurrent::infer lengths", steps)?;
        if let Some(s) = initial {
            self.check_state(
                "Recurrent::infer initial state",
                s,
                batch,
                self.slots(),
                true,
            )?;
        }
        scratch.prepare(&self.config, steps, batch)?;
        scratch.packing.set(lengths, steps);
        scratch.initial.copy_initial(initial);
        let (cell, hidden, dirs, layers) = (
            self.config.cell,
            self.config.hidden_size,
            self.config.num_directions(),
            self.config.num_layers,
        );
        let InferScratch {
            outputs,
            direction,
            initial,
            final_state: user_final,
            packing,
            packed,
            ..
        } = &mut *scratch;
        let Some(dc) = direction.as_mut() else {
            return Err(nn_core::Error::InvalidConfig(
                "Recurrent::infer: buffers not sized".into(),
            ));
        };
        let total = packing.total();
        // A variable-length batch runs packed, as in `forward_with`.
        if !packing.full && packed.is_none() {
            *packed = Some(PackedBuffers::new(&self.config, steps, batch, false)?);
        }
        let mut varlen = packed.as_mut().filter(|_| !packing.full);
        let (x, initial, final_state) = match varlen.as_deref_mut() {
            Some(p) => {
                packing.gather(&x, &mut p.x);
                packing.permute_state(initial, &mut p.initial, true);
                (p.x.columns(0, total), &p.initial, &mut p.final_state)
            }
            None => (x.columns(0, x.ncols()), &*initial, &mut *user_final),
        };
        check_finite(op, &x)?;
        let [top, below] = outputs;
        for l in 0..layers {
            // Layer `l` writes `outputs[(L - 1 - l) % 2]` and reads the other one (or `x`).
            let (out, prev): (&mut DMatrix<T>, &DMatrix<T>) = if (layers - 1 - l) % 2 == 0 {
                (&mut *top, &*below)
            } else {
                (&mut *below, &*top)
            };
            let input = if l == 0 {
                x.columns(0, total)
            } else {
                prev.columns(0, total)
            };
            for d in 0..dirs {
                let dims = Dims {
                    hidden,
                    steps,
                    batch,
                    dir: d,
                    slot: l * dirs + d,
                    off: &packing.off,
                };
                forward::forward_direction(
                    cell,
                    &self.directions[dims.slot],
                    &input,
                    dims,
                    initial,
                    out,
                    dc,
                    final_state,
                    Keep::Window,
                );
            }
        }
        check_finite("Recurrent::infer output (overflow)", &top.columns(0, total))?;
        if let Some(p) = varlen {
            packing.scatter(top, &mut p.output);
            packing.permute_state(&p.final_state, user_final, false);
        }
        check_finite(
            "Recurrent::infer final h (overflow)",
            &scratch.final_state.h,
        )?;
        if let Some(c) = &scratch.final_state.c {
            check_finite("Recurrent::infer final c (overflow)", c)?;
        }
        scratch.done = true;
        Ok((scratch.output(), &scratch.final_state))
    }
}
