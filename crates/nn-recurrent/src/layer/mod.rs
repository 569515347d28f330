//! The stacked, optionally bidirectional recurrent layer: the [`Recurrent`] type, the checks of
//! its inputs, and forward and BPTT over a sequence batch, layer by layer.
//!
//! Shapes (key in [`crate::config`]): input `X` `(I, T*B)`, column `t*B + b` = step `t` of
//! sequence `b`; output `Y` `(D*H, T*B)`, rows `0..H` the forward direction and `H..2H` the
//! reverse one; states `(H, L*D*B)`, column `(l*D + d)*B + b`. Layer `l > 0` reads layer `l-1`'s
//! output, so its input size is `D*H`.
//!
//! Forward runs the layers bottom up, each direction over the whole sequence ([`forward`]: the
//! input product `W_ih · X`, then the time loop of step products `W_hh · h_{t-1}` and cells).
//! Backward runs them top down ([`backward`]: the time loop of cells and `W_hhᵀ · dG_t`, then the
//! weight, bias and input gradients over the whole sequence); both directions of a layer add into
//! the layer below's output gradient. The running `dh` (`dc`) of each layer-direction lives in the
//! cache's `d_initial`: it starts as `∂L/∂(h_n, c_n)` and ends as `∂L/∂(h0, c0)`.
//! A training pass with dropout ([`dropout`]) masks each layer's output but the top one before
//! the next layer reads it, and masks that output's gradient the same way in backward.
//!
//! Nothing is allocated inside the time loops; all buffers live in the [`RecurrentCache`].
//!
//! Variable lengths ([`Lengths::Each`], `lengths.rs`): the passes run in PyTorch's packed layout.
//! The real input columns are gathered with the sequences sorted longest first, so step `t` is
//! the block of columns `off[t]..off[t+1]` of the `n_t` sequences still running; every buffer
//! holds the `N = Σ lengths` real columns first, and the products over the whole sequence
//! (`W_ih · X`, the weight gradients, `dX`) run on those `N` columns only. The states are
//! permuted into the sorted order and back, the output and input gradient scattered back into
//! the padded layout with zeros at padded steps. A full batch is the special case
//! `off[t] = t*B` and runs exactly as without lengths.
//!
//! Files: `forward` and `backward` (one layer-direction), `split` (the time loops, on one thread
//! or split into parts of the batch, one per thread; all their `unsafe`), `handoff` (the split
//! loops' hand-offs of work between parts), `products` (the step products and bias column,
//! shared with [`Recurrent::step`]), `infer` (the forward-only pass, [`Recurrent::infer`], on the
//! forward's code), `dropout` (the masks between stacked layers in training), `tests`.

mod backward;
mod checks;
mod dropout;
mod forward;
mod handoff;
mod infer;
mod products;
mod split;
#[cfg(test)]
mod tests;

pub use infer::InferScratch;
pub(crate) use products::{bias_column, gemv_step_products, input_in_loop, step_products};

use crate::cache::{LayerCache, PackedBuffers, Saved};
use crate::fingerprint::Fingerprint;
use crate::weights::DirectionWeights;
use crate::{Lengths, RecurrentCache, RecurrentConfig, RecurrentState};
use nalgebra::{DMatrix, DMatrixView};
use nn_core::{Accum, Error, Float, Result, Rng, Shape, check_finite, check_shape};

/// A stacked, optionally bidirectional recurrent layer (PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU`).
///
/// With input `x_t` and, per layer and direction, `h_{t-1}` (`c_{t-1}`) the state of the
/// previous step in that direction's order (step `t+1` for the reverse direction):
/// - RNN: `h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`, `act` = tanh or ReLU;
/// - LSTM: `[i, f, g, o] = [σ, σ, tanh, σ](W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`,
///   `c_t = f ⊙ c_{t-1} + i ⊙ g`, `h_t = o ⊙ tanh(c_t)`;
/// - GRU: `[r, z] = σ(W_i[rz] x_t + b_i[rz] + W_h[rz] h_{t-1} + b_h[rz])`,
///   `n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))`, `h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}`.
///
/// Shapes: `x` `(I, T*B)` (column `t*B + b`), output `(D*H, T*B)` (forward direction in rows
/// `0..H`, reverse in `H..2H`), states `h`, `c` `(H, L*D*B)` (column `(l*D + d)*B + b`),
/// `weight_ih_l{k}` `(G*H, I or D*H)`, `weight_hh_l{k}` `(G*H, H)`, biases `[G*H]`.
///
/// ```
/// use nn_core::{Module, Rng};
/// use nn_recurrent::{CellKind, RecurrentCache, RecurrentConfig};
/// use nalgebra::DMatrix;
///
/// let (input, hidden, steps, batch) = (3, 4, 5, 2);
/// for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn(nn_recurrent::Nonlinearity::Tanh)] {
///     let config = RecurrentConfig::new(cell, input, hidden).with_num_layers(2).with_bidirectional(true);
///     let mut layer = config.init::<f64>(&mut Rng::seed_from(0)).unwrap();
///     let x = DMatrix::from_fn(input, steps * batch, |i, j| ((i + 2 * j) as f64).sin());
///     let mut cache = RecurrentCache::new();
///     layer.forward(&x, batch, None, &mut cache).unwrap();
///     assert_eq!(cache.output().shape(), (2 * hidden, steps * batch));
///     assert_eq!(cache.final_state().h.shape(), (hidden, 2 * 2 * batch));
///
///     // L = sum of the outputs: dL/dY is all ones.
///     let d_output = DMatrix::from_element(2 * hidden, steps * batch, 1.0);
///     let mut d_x = DMatrix::zeros(input, steps * batch);
///     layer.zero_grad();
///     layer.backward(&x, &mut cache, &d_output, None, Some(&mut d_x)).unwrap();
///     assert!(d_x.iter().all(|v| v.is_finite()));
///     assert_eq!(cache.d_initial().h.shape(), (hidden, 2 * 2 * batch));
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Recurrent<T: Float> {
    config: RecurrentConfig,
    /// Layer `l`, direction `d` at `l*D + d`.
    directions: Vec<DirectionWeights<T>>,
    /// Names these weights: a fresh value from [`fresh_version`] whenever they may have changed
    /// (every `&mut` path to them takes one), kept by `Clone` (the same weights). A
    /// [`StepScratch`](crate::StepScratch) re-packs only when it differs.
    version: u64,
}

/// A process-wide unique weight version (never 0, which a scratch uses for "nothing packed").
fn fresh_version() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The sizes one layer-direction pass works with, and where each step's columns are.
#[derive(Clone, Copy, Debug)]
struct Dims<'a> {
    hidden: usize,
    steps: usize,
    batch: usize,
    /// 0 forward, 1 reverse.
    dir: usize,
    /// `l*D + d`: the block of columns of this layer-direction in a state.
    slot: usize,
    /// The `T + 1` column offsets of the steps ([`Packing`](crate::lengths::Packing)): step
    /// `t` is columns `off[t]..off[t+1]`, the sorted sequences `0..n_t` still running (all `B`,
    /// `off[t] = t*B`, without lengths).
    off: &'a [usize],
}

impl Dims<'_> {
    /// The step processed `s`-th (forward order for `dir = 0`, reversed for `dir = 1`).
    fn step(&self, s: usize) -> usize {
        if self.dir == 0 { s } else { self.steps - 1 - s }
    }

    /// The step whose state feeds step `t` of the sequences that have one, or `None` when all
    /// start at `t` from the initial state.
    fn prev(&self, t: usize) -> Option<usize> {
        if self.dir == 0 {
            t.checked_sub(1)
        } else {
            (t + 1 < self.steps).then_some(t + 1)
        }
    }

    /// Step `t`'s first column.
    fn col(&self, t: usize) -> usize {
        self.off[t]
    }

    /// The sequences still running at step `t` (the sorted `0..n_t`).
    fn running(&self, t: usize) -> usize {
        self.off[t + 1] - self.off[t]
    }

    /// At step `t`, the sequences `0..k` continue from [`Dims::prev`]`(t)`; the rest of the
    /// running ones start there from the initial state (the reverse direction's sequences that
    /// end at `t`; all of them at the first step).
    fn continuing(&self, t: usize) -> usize {
        match self.prev(t) {
            None => 0,
            Some(tp) => self.running(tp).min(self.running(t)),
        }
    }

    /// The step whose state feeds sequence `j` at step `t`, or `None` for the initial state.
    fn prev_of(&self, t: usize, j: usize) -> Option<usize> {
        self.prev(t).filter(|_| j < self.continuing(t))
    }
}

/// The `(H*B)` values of slot `slot` of a state matrix (`(H, L*D*B)`), or `&[]` for no matrix.
fn slot_slice<'m, T: Float>(m: Option<&'m DMatrix<T>>, slot: usize, dims: Dims<'_>) -> &'m [T] {
    let n = dims.hidden * dims.batch;
    m.map_or(&[][..], |m| &m.as_slice()[slot * n..(slot + 1) * n])
}

impl<T: Float> Recurrent<T> {
    pub(crate) fn from_parts(
        config: RecurrentConfig,
        directions: Vec<DirectionWeights<T>>,
    ) -> Self {
        Recurrent {
            config,
            directions,
            version: fresh_version(),
        }
    }

    pub(crate) fn directions(&self) -> &[DirectionWeights<T>] {
        &self.directions
    }

    /// The weights, mutably: the layer takes a fresh version (the caller may change them).
    pub(crate) fn directions_mut(&mut self) -> &mut [DirectionWeights<T>] {
        self.version = fresh_version();
        &mut self.directions
    }

    /// The version of the weights (see the field): equal versions mean equal weights.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The settings it was built with.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// `D * H`, the output features.
    pub fn output_size(&self) -> usize {
        self.config.num_directions() * self.config.hidden_size
    }

    /// The tensors of layer `layer`, direction `direction` (0 forward, 1 reverse), if they exist.
    pub fn weights(&self, layer: usize, direction: usize) -> Option<&DirectionWeights<T>> {
        let d = self.config.num_directions();
        (layer < self.config.num_layers && direction < d)
            .then(|| &self.directions[layer * d + direction])
    }

    /// Mutable counterpart of [`Recurrent::weights`]. The layer then counts as changed: the
    /// next [`Recurrent::step`] re-packs its weights.
    pub fn weights_mut(
        &mut self,
        layer: usize,
        direction: usize,
    ) -> Option<&mut DirectionWeights<T>> {
        let d = self.config.num_directions();
        if layer < self.config.num_layers && direction < d {
            Some(&mut self.directions_mut()[layer * d + direction])
        } else {
            None
        }
    }

    /// A zero state for batch `B`: `h` (and `c` for the LSTM) `(H, L*D*B)`.
    ///
    /// # Panics
    /// When the state cannot be allocated (a batch no machine holds); [`try_zero_state`]
    /// returns an error instead.
    ///
    /// [`try_zero_state`]: Self::try_zero_state
    pub fn zero_state(&self, batch: usize) -> RecurrentState<T> {
        match self.try_zero_state(batch) {
            Ok(state) => state,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`zero_state`](Self::zero_state), or [`Error::TooLarge`](nn_core::Error::TooLarge) when
    /// `L*D*B` columns cannot be allocated.
    pub fn try_zero_state(&self, batch: usize) -> Result<RecurrentState<T>> {
        let c = &self.config;
        RecurrentState::try_zeros(
            c.hidden_size,
            c.num_layers * c.num_directions(),
            batch,
            c.cell.has_cell_state(),
        )
    }

    fn slots(&self) -> usize {
        self.config.num_layers * self.config.num_directions()
    }

    /// Runs the whole sequence batch `x` `(I, T*B)` from `initial` (zeros when `None`);
    /// results in `cache.output()` and `cache.final_state()`. The same as
    /// [`Recurrent::forward_with`] with [`Lengths::Full`]`(batch)` and no dropout.
    ///
    /// `batch` is `B`; `T = x.ncols() / B`. `initial` is `(H, L*D*B)` (an LSTM's `c: None` means
    /// zeros). Errors: wrong input rows, columns not a multiple of `B`, `B = 0` or `T = 0`, a
    /// NaN or infinite input or initial state, an initial state of the wrong shape, an output
    /// that overflowed to infinity.
    ///
    /// `x` is a matrix (`&x`) or a view (`x.columns(t0 * b, n * b)`, a window of a longer
    /// sequence batch, with no copy). The cache keeps a fingerprint of `x` (its shape and a hash
    /// of its values, one pass over `x`) that [`Recurrent::backward`] checks.
    pub fn forward<'x>(
        &self,
        x: impl Into<DMatrixView<'x, T>>,
        batch: usize,
        initial: Option<&RecurrentState<T>>,
        cache: &mut RecurrentCache<T>,
    ) -> Result<()> {
        self.forward_with(x, Lengths::Full(batch), initial, cache, None)
    }

    /// [`Recurrent::forward`] with each sequence's length and, for training, dropout.
    ///
    /// - `lengths`: [`Lengths::Full`]`(B)`, or [`Lengths::Each`] with sequence `b` running steps
    ///   `0..lengths[b]` (PyTorch's `pack_padded_sequence(x, lengths, enforce_sorted=False)`
    ///   then `pad_packed_sequence(total_length=T)`): its output past its end is 0, its final
    ///   state is the state after its own last step (the reverse direction's, after step 0,
    ///   starting from its own last step), and its padded input columns are never read.
    /// - `dropout`: `Some(rng)` is a training pass: with the config's `dropout = p > 0`, each
    ///   value of every layer's output but the top one is zeroed with probability `p` (masks
    ///   drawn from `rng`) and the rest scaled by `1/(1-p)` before the next layer reads it.
    ///   `None`, or `p = 0`, runs without dropout (PyTorch's `eval()`). One [`Rng::uniform`]
    ///   per value (`< p` drops it), in column-major order of each layer's output, layer by
    ///   layer bottom up; a pass without dropout (also a single layer) draws nothing. The cache
    ///   keeps the masks: [`Recurrent::backward`] multiplies the gradients by the same ones.
    ///
    /// Errors: those of [`Recurrent::forward`], and lengths outside `1..=T`.
    pub fn forward_with<'x>(
        &self,
        x: impl Into<DMatrixView<'x, T>>,
        lengths: Lengths<'_>,
        initial: Option<&RecurrentState<T>>,
        cache: &mut RecurrentCache<T>,
        dropout: Option<&mut Rng>,
    ) -> Result<()> {
        let x: DMatrixView<'x, T> = x.into();
        cache.saved = Saved::Nothing;
        self.check_weights("Recurrent::forward parameter")?;
        let op = "Recurrent::forward input (rows: I features; columns: T*B, step t of sequence b at t*B + b)";
        let batch = lengths.batch();
        let steps = self.check_sequence(op, &x, batch)?;
        lengths.check("Recurrent::forward lengths", steps)?;
        // Dropout draws only when it changes something: existing runs keep their rng stream.
        let dropout = dropout.filter(|_| self.config.dropout > 0.0 && self.config.num_layers > 1);
        if let Some(s) = initial {
            self.check_state(
                "Recurrent::forward initial state",
                s,
                batch,
                self.slots(),
                true,
            )?;
        }
        cache.prepare(&self.config, steps, batch)?;
        cache.packing.set(lengths, steps);
        cache.initial.copy_initial(initial);
        cache.dropout_used = dropout.is_some();
        let RecurrentCache {
            layers,
            initial,
            final_state,
            packing,
            packed,
            input_print,
            ..
        } = cache;
        let total = packing.total();
        // A variable-length batch runs packed: its real input columns gathered, its states
        // with the sequences sorted (`lengths.rs`).
        if !packing.full && packed.is_none() {
            *packed = Some(PackedBuffers::new(&self.config, steps, batch, true)?);
        }
        let mut varlen = packed.as_mut().filter(|_| !packing.full);
        let (input, initial, final_state) = match varlen.as_deref_mut() {
            Some(p) => {
                packing.gather(&x, &mut p.x);
                packing.permute_state(initial, &mut p.initial, true);
                (p.x.columns(0, total), &p.initial, &mut p.final_state)
            }
            None => (x.columns(0, x.ncols()), &*initial, &mut *final_state),
        };
        check_finite(op, &input)?;
        *input_print = Some(Fingerprint::of(&input));
        self.forward_layers(
            &input,
            Dims {
                hidden: self.config.hidden_size,
                steps,
                batch,
                dir: 0,
                slot: 0,
                off: &packing.off,
            },
            initial,
            layers,
            final_state,
            dropout,
        );
        // Finite inputs can still overflow (a ReLU RNN fed huge values, loaded weights of any
        // size): such a result is refused, and the cache stays unusable for backward.
        if let Some(top) = layers.last() {
            check_finite(
                "Recurrent::forward output (overflow)",
                &top.output.columns(0, total),
            )?;
            if let Some(p) = varlen {
                packing.scatter(&top.output, &mut p.output);
                packing.permute_state(&p.final_state, &mut cache.final_state, false);
            }
        }
        let final_state = &cache.final_state;
        check_finite("Recurrent::forward final h (overflow)", &final_state.h)?;
        if let Some(c) = &final_state.c {
            check_finite("Recurrent::forward final c (overflow)", c)?;
        }
        cache.saved = Saved::Forward;
        Ok(())
    }

    /// The forward of every layer and direction, bottom up, on `x` (packed as `dims.off` says),
    /// from `initial` into the layers' buffers and `final_state`.
    fn forward_layers(
        &self,
        x: &DMatrixView<'_, T>,
        dims: Dims<'_>,
        initial: &RecurrentState<T>,
        layers: &mut [LayerCache<T>],
        final_state: &mut RecurrentState<T>,
        mut dropout: Option<&mut Rng>,
    ) {
        let dirs = self.config.num_directions();
        let total = dims.col(dims.steps);
        for l in 0..self.config.num_layers {
            let (below, rest) = layers.split_at_mut(l);
            let LayerCache {
                output,
                directions,
                mask,
                dropped,
                ..
            } = &mut rest[0];
            let input = match below.last() {
                None => x.columns(0, x.ncols()),
                Some(prev) if dropout.is_some() => prev.dropped.columns(0, total),
                Some(prev) => prev.output.columns(0, total),
            };
            for (d, dc) in directions.iter_mut().enumerate() {
                let dims = Dims {
                    dir: d,
                    slot: l * dirs + d,
                    ..dims
                };
                let w = &self.directions[dims.slot];
                forward::forward_direction(
                    self.config.cell,
                    w,
                    &input,
                    dims,
                    initial,
                    output,
                    dc,
                    final_state,
                    forward::Keep::All,
                );
            }
            if let Some(rng) = dropout
                .as_deref_mut()
                .filter(|_| l + 1 < self.config.num_layers)
            {
                dropout::draw_and_apply(rng, self.config.dropout, output, total, mask, dropped);
            }
        }
    }

    /// BPTT for the last forward on `x`: adds into every parameter's gradient, writes the input
    /// gradient into `d_input` `(I, T*B)` when given, and `cache.d_initial()`.
    /// `d_output` is `(D*H, T*B)`; `d_final` the gradient of `h_n`/`c_n` (zeros when `None`;
    /// an LSTM's `c: None` means zeros too).
    ///
    /// One backward per forward, as in PyTorch without `retain_graph`: backward writes the gate
    /// gradients over the gates the forward saved (one `(G·H, T·B)` buffer fewer per
    /// layer-direction), so a second backward needs a new forward. `cache.output()` and
    /// `cache.final_state()` stay. After a training forward with dropout
    /// ([`Recurrent::forward_with`]), the gradients are those of that pass, through its masks.
    ///
    /// Errors: a cache without a forward of a layer with these settings, or whose forward a
    /// backward has already used, an `x`, `d_output`,
    /// `d_final` or `d_input` of the wrong shape, a NaN or infinite `d_output` or `d_final`, a
    /// gradient that overflowed to infinity (the gradients are then already partly added), and
    /// an `x` whose values are not the forward's ([`Error::InputChanged`], checked against the
    /// fingerprint the forward kept: one pass over `x`).
    ///
    /// `x` is a matrix or a view, as in [`Recurrent::forward`].
    pub fn backward<'x>(
        &mut self,
        x: impl Into<DMatrixView<'x, T>>,
        cache: &mut RecurrentCache<T>,
        d_output: &DMatrix<T>,
        d_final: Option<&RecurrentState<T>>,
        d_input: Option<&mut DMatrix<T>>,
    ) -> Result<()> {
        self.backward_impl(x.into(), cache, d_output, false, d_final, d_input)
    }

    /// [`Recurrent::backward`] with the output gradient in the packed layout of
    /// [`RecurrentCache::packed_output`]: `(D*H, N)`, column `k` for the padded column
    /// [`RecurrentCache::packed_columns`] gives as the `k`-th (for a full batch, the padded
    /// `(D*H, T*B)` itself). A caller that computes its gradient at the real positions only (a head
    /// on the packed output) gives it without scattering it into the padded layout.
    pub fn backward_packed<'x>(
        &mut self,
        x: impl Into<DMatrixView<'x, T>>,
        cache: &mut RecurrentCache<T>,
        d_output: &DMatrix<T>,
        d_final: Option<&RecurrentState<T>>,
        d_input: Option<&mut DMatrix<T>>,
    ) -> Result<()> {
        self.backward_impl(x.into(), cache, d_output, true, d_final, d_input)
    }

    /// Both backwards: `d_output` padded, or packed when `packed_dy`.
    fn backward_impl(
        &mut self,
        x: DMatrixView<'_, T>,
        cache: &mut RecurrentCache<T>,
        d_output: &DMatrix<T>,
        packed_dy: bool,
        d_final: Option<&RecurrentState<T>>,
        mut d_input: Option<&mut DMatrix<T>>,
    ) -> Result<()> {
        let (steps, batch) = match cache.forward_shape() {
            Some((c, t, b)) if *c == self.config => (t, b),
            _ => {
                return Err(Error::InvalidConfig(
                    "Recurrent::backward: the cache holds no forward pass of a layer with these \
                     settings; run forward first"
                        .into(),
                ));
            }
        };
        if cache.saved == Saved::Used {
            return Err(Error::InvalidConfig(
                "Recurrent::backward: a backward has already used this forward pass (it \
                 overwrites the gates the forward saved); run forward again"
                    .into(),
            ));
        }
        self.check_weights("Recurrent::backward parameter")?;
        let cols = steps * batch;
        let input = self.config.input_size;
        check_shape(
            "Recurrent::backward input (must be the forward's)",
            &x,
            Shape(input, cols),
        )?;
        let d_cols = if packed_dy {
            cache.packing.total()
        } else {
            cols
        };
        check_shape(
            "Recurrent::backward d_output",
            d_output,
            Shape(self.output_size(), d_cols),
        )?;
        if let Some(s) = d_final {
            self.check_state("Recurrent::backward d_final", s, batch, self.slots(), true)?;
        }
        if let Some(dx) = &d_input {
            check_shape("Recurrent::backward d_input", *dx, Shape(input, cols))?;
        }
        let RecurrentCache {
            layers,
            initial,
            d_initial,
            packing,
            packed,
            input_print,
            saved,
            dropout_used,
            ..
        } = cache;
        let total = packing.total();
        // A variable-length batch: its real columns only, packed (see `forward_with`).
        let varlen = packed.as_mut().filter(|_| !packing.full);
        let print = match &varlen {
            Some(_) => Fingerprint::of_columns(&x, packing.padded_columns()),
            None => Fingerprint::of(&x),
        };
        if *input_print != Some(print) {
            return Err(Error::InputChanged {
                op: "Recurrent::backward",
            });
        }
        let op = "Recurrent::backward d_output";
        let mut no_buffer = DMatrix::zeros(0, 0);
        let (x_in, dy_top, initial, d_state, mut d_x0, h_prev) = match varlen {
            Some(p) => {
                p.initial_d(packing, d_final);
                let dy_top = if packed_dy {
                    check_finite(op, d_output)?;
                    d_output
                } else {
                    packing.gather(&d_output.columns(0, cols), &mut p.d_top);
                    check_finite(op, &p.d_top.columns(0, total))?;
                    &p.d_top
                };
                let d_x0 = d_input.is_some().then(|| p.d_x.columns_mut(0, total));
                (
                    p.x.columns(0, total),
                    dy_top,
                    &p.initial,
                    &mut p.d_initial,
                    d_x0,
                    &mut p.h_prev,
                )
            }
            None => {
                check_finite(op, d_output)?;
                d_initial.copy_initial(d_final);
                let d_x0 = d_input.as_deref_mut().map(|m| m.columns_mut(0, cols));
                (
                    x,
                    d_output,
                    &*initial,
                    &mut *d_initial,
                    d_x0,
                    &mut no_buffer,
                )
            }
        };
        // From here on the saved gates are overwritten, whatever the outcome. The running
        // gradients dh (and dc) of each layer-direction live in `d_state`: they start as
        // ∂L/∂h_n and end, after step 0 (forward order), as ∂L/∂h0.
        *saved = Saved::Used;
        let (cell, hidden, dirs, num_layers) = (
            self.config.cell,
            self.config.hidden_size,
            self.config.num_directions(),
            self.config.num_layers,
        );
        for l in (0..num_layers).rev() {
            let (below, rest) = layers.split_at_mut(l);
            let LayerCache {
                output,
                d_output: d_out_here,
                directions,
                ..
            } = &mut rest[0];
            let dy: &DMatrix<T> = if l + 1 == num_layers {
                dy_top
            } else {
                d_out_here
            };
            let (x_in, mut d_x) = match below.last_mut() {
                None => (
                    x_in.columns(0, total),
                    d_x0.as_mut().map(|m| m.columns_mut(0, total)),
                ),
                Some(LayerCache {
                    output: prev_out,
                    d_output: prev_d,
                    dropped,
                    ..
                }) => {
                    let read = if *dropout_used { dropped } else { prev_out };
                    (read.columns(0, total), Some(prev_d.columns_mut(0, total)))
                }
            };
            for (d, dc) in directions.iter_mut().enumerate() {
                let dims = Dims {
                    hidden,
                    steps,
                    batch,
                    dir: d,
                    slot: l * dirs + d,
                    off: &packing.off,
                };
                // Both directions feed the same input: the first writes dX, the second adds.
                let accum = if d == 0 { Accum::Replace } else { Accum::Add };
                backward::backward_direction(
                    cell,
                    &mut self.directions[dims.slot],
                    &x_in,
                    dims,
                    initial,
                    output,
                    dy,
                    dc,
                    d_state,
                    d_x.as_mut().map(|m| (m.columns_mut(0, total), accum)),
                    h_prev,
                );
            }
            // The layer below gets ∂L/∂(its output) = mask ⊙ ∂L/∂(the masked output read here).
            if let Some(prev) = below.last_mut().filter(|_| *dropout_used) {
                dropout::backward(&prev.mask, &mut prev.d_output, total);
            }
        }
        if let Some(p) = packed.as_mut().filter(|_| !packing.full) {
            if let Some(dx) = d_input.as_deref_mut() {
                packing.scatter(&p.d_x, dx);
            }
            packing.permute_state(&p.d_initial, d_initial, false);
        }
        // Finite upstream gradients can still overflow (huge inputs times huge gradients).
        let op = "Recurrent::backward gradient (overflow)";
        if let Some(dx) = &d_input {
            check_finite(op, *dx)?;
        }
        check_finite(op, &d_initial.h)?;
        if let Some(c) = &d_initial.c {
            check_finite(op, c)?;
        }
        for w in &self.directions {
            for p in [&w.weight_ih, &w.weight_hh, &w.bias_ih, &w.bias_hh] {
                check_finite(op, &p.grad)?;
            }
        }
        Ok(())
    }
}
