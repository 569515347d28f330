//! nn-recurrent: vanilla RNN, LSTM and GRU layers with exact backpropagation through time.
//!
//! API CONTRACT (skeleton; the implementation replaces the `todo!()`s, keeping these signatures).
//!
//! A sequence batch is one `(features, T*B)` matrix whose column `t*B + b` is step `t` of
//! sequence `b` (the bytes of PyTorch's `[T, B, F]`). A state is `(H, L*D*B)`, column
//! `(l*D + d)*B + b` (the bytes of PyTorch's `h_n` `[L*D, B, H]`).

use nalgebra::DMatrix;
use nn_core::{Float, Module, Param, Result, Rng};

/// The vanilla RNN's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    Tanh,
    /// `max(0, ·)`.
    Relu,
}

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// `h' = act(W_ih x + b_ih + W_hh h + b_hh)`.
    Rnn(Nonlinearity),
    /// Gates `i, f, g, o`.
    Lstm,
    /// Gates `r, z, n`.
    Gru,
}

/// Layer settings: `RecurrentConfig::new(cell, input, hidden).with_num_layers(2).with_bidirectional(true)`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentConfig {
    /// The cell.
    pub cell: CellKind,
    /// Input features `I`.
    pub input_size: usize,
    /// Hidden units `H`.
    pub hidden_size: usize,
    /// Stacked layers `L` (default 1).
    pub num_layers: usize,
    /// Two directions `D = 2` when true (default false).
    pub bidirectional: bool,
}

impl RecurrentConfig {
    /// One unidirectional layer.
    pub fn new(cell: CellKind, input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig {
            cell,
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
        }
    }
    /// Sets `L`.
    pub fn with_num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// Sets bidirectional.
    pub fn with_bidirectional(mut self, b: bool) -> Self {
        self.bidirectional = b;
        self
    }
    /// Builds the layer with PyTorch's init `U(-1/√H, 1/√H)` for every tensor. Zero sizes are errors.
    pub fn init<T: Float>(&self, rng: &mut Rng) -> Result<Recurrent<T>> {
        let _ = rng;
        todo!()
    }
}

/// Hidden (and, for LSTM, cell) state of all layers and directions.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentState<T: Float> {
    /// `(H, L*D*B)`, column `(l*D + d)*B + b`.
    pub h: DMatrix<T>,
    /// LSTM only: same layout as `h`.
    pub c: Option<DMatrix<T>>,
}

/// Everything forward keeps for backward, and the results; sized once per `(T, B)` and reused.
#[derive(Debug, Default)]
pub struct RecurrentCache<T: Float> {
    _p: std::marker::PhantomData<T>,
}

impl<T: Float> RecurrentCache<T> {
    /// An empty cache; the first forward sizes it.
    pub fn new() -> Self {
        todo!()
    }
    /// The output `(D*H, T*B)` of the last forward.
    pub fn output(&self) -> &DMatrix<T> {
        todo!()
    }
    /// The final state (`h_n`, `c_n`) of the last forward.
    pub fn final_state(&self) -> &RecurrentState<T> {
        todo!()
    }
    /// The gradient of the initial state, after a backward.
    pub fn d_initial(&self) -> &RecurrentState<T> {
        todo!()
    }
}

/// A stacked, optionally bidirectional recurrent layer (PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU`).
#[derive(Clone, Debug)]
pub struct Recurrent<T: Float> {
    _p: std::marker::PhantomData<T>,
}

impl<T: Float> Recurrent<T> {
    /// The settings it was built with.
    pub fn config(&self) -> &RecurrentConfig {
        todo!()
    }
    /// `D * H`, the output features.
    pub fn output_size(&self) -> usize {
        todo!()
    }
    /// A zero state for batch `B`.
    pub fn zero_state(&self, batch: usize) -> RecurrentState<T> {
        let _ = batch;
        todo!()
    }
    /// Runs the whole sequence batch `x` `(I, T*B)` from `initial` (zeros when `None`);
    /// results in `cache.output()` and `cache.final_state()`.
    pub fn forward(
        &self,
        x: &DMatrix<T>,
        batch: usize,
        initial: Option<&RecurrentState<T>>,
        cache: &mut RecurrentCache<T>,
    ) -> Result<()> {
        let _ = (x, batch, initial, cache);
        todo!()
    }
    /// BPTT for the last forward on `x`: adds into every parameter's gradient, writes the input
    /// gradient into `d_input` `(I, T*B)` when given, and `cache.d_initial()`.
    /// `d_output` is `(D*H, T*B)`; `d_final` the gradient of `h_n`/`c_n` (zeros when `None`).
    pub fn backward(
        &mut self,
        x: &DMatrix<T>,
        cache: &mut RecurrentCache<T>,
        d_output: &DMatrix<T>,
        d_final: Option<&RecurrentState<T>>,
        d_input: Option<&mut DMatrix<T>>,
    ) -> Result<()> {
        let _ = (x, cache, d_output, d_final, d_input);
        todo!()
    }
}

/// Buffers for [`Recurrent::step`], sized on first use.
#[derive(Debug, Default)]
pub struct StepScratch<T: Float> {
    _p: std::marker::PhantomData<T>,
}

impl<T: Float> Recurrent<T> {
    /// One time step for generation (unidirectional layers only; bidirectional is an error):
    /// `x_t` `(I, B)`, `state` updated in place, returns the top layer's new `h` `(H, B)`.
    /// Agrees with [`Recurrent::forward`] run step by step.
    pub fn step<'s>(
        &self,
        x_t: &DMatrix<T>,
        state: &mut RecurrentState<T>,
        scratch: &'s mut StepScratch<T>,
    ) -> Result<&'s DMatrix<T>> {
        let _ = (x_t, state, scratch);
        todo!()
    }

    /// Loads PyTorch weights (a `state_dict` saved with `safetensors.torch.save_file`, f32 or f64).
    pub fn load_safetensors(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let _ = path;
        todo!()
    }

    /// Saves the weights under PyTorch's names, atomically, in `T`'s dtype.
    pub fn save_safetensors(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let _ = path;
        todo!()
    }
}

impl<T: Float> Module<T> for Recurrent<T> {
    fn visit(&self, f: &mut dyn FnMut(&str, &Param<T>)) {
        let _ = f;
        todo!()
    }
    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, &mut Param<T>)) {
        let _ = f;
        todo!()
    }
}
