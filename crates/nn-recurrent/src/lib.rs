//! nn-recurrent: vanilla RNN, LSTM and GRU layers with exact backpropagation through time.
//!
//! A sequence batch is one `(features, T*B)` matrix whose column `t*B + b` is step `t` of
//! sequence `b` (the bytes of PyTorch's `[T, B, F]`). A state is `(H, L*D*B)`, column
//! `(l*D + d)*B + b` (the bytes of PyTorch's `h_n` `[L*D, B, H]`).
//!
//! - [`RecurrentConfig`] → [`Recurrent`]: the layer (any cell, `L` stacked layers, one or two
//!   directions), with PyTorch's parameter names, shapes and initialization.
//! - [`Recurrent::forward`] / [`Recurrent::backward`]: the whole sequence batch, with an optional
//!   initial state in and the final state out; everything backward needs stays in a reusable
//!   [`RecurrentCache`]. One backward per forward, as in PyTorch without `retain_graph`.
//! - [`Recurrent::infer`]: forward only, for inference (the forward's output and final state, bit
//!   for bit, with no step history kept), in a reusable [`InferScratch`].
//! - [`Recurrent::step`]: one step at a time, for generation; [`Recurrent::step_tokens`] takes
//!   token ids (a one-hot input read as columns of `W_ih`).
//! - [`Recurrent::load_safetensors`] / [`Recurrent::save_safetensors`]: weights to and from PyTorch.
//!
//! Files: `config` (settings), `state`, `cell/*` (the elementwise math of each cell), `gates`
//! (where each cell's gates lie in the gate buffer), `layer/*` (the layer and its checks in
//! `mod`, one layer-direction's `forward` and `backward`, the time loops of `split` with their
//! `handoff`, the step `products`), `cache`, `step`, `weights` (names, visiting, files).

mod cache;
mod cell;
pub mod config;
mod fingerprint;
mod gates;
mod layer;
mod lengths;
mod state;
mod step;
mod weights;

pub use cache::RecurrentCache;
pub use config::{CellKind, Nonlinearity, RecurrentConfig, UnknownName};
pub use layer::{InferScratch, Recurrent};
pub use lengths::Lengths;
pub use state::RecurrentState;
pub use step::StepScratch;
pub use weights::DirectionWeights;
