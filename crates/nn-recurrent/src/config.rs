//! Layer settings: which cell, the sizes, the depth and the directions.
//!
//! Shape key used across the crate: `I` input features, `H` hidden units, `G` gate blocks per cell
//! (RNN 1, LSTM 4, GRU 3), `L` stacked layers, `D` directions (1, or 2 when bidirectional),
//! `T` time steps, `B` sequences in a batch.
//!
//! `RecurrentConfig::new(cell, I, H).with_num_layers(L).with_bidirectional(true).init(&mut rng)`
//! builds a [`Recurrent`] whose every tensor is drawn from PyTorch's `U(-1/√H, 1/√H)`.
//!
//! Names, the one spelling everywhere (flags, fixtures, config JSON, workloads), through
//! [`FromStr`] and [`Display`]: cells `rnn_tanh`, `rnn_relu`, `lstm`, `gru`, with `rnn` read as
//! `rnn_tanh` (PyTorch's `nn.RNN` default) and written so by the alternate form `{:#}`;
//! nonlinearities `tanh`, `relu`. As JSON (serde) a [`CellKind`] is its name and a
//! [`RecurrentConfig`] is `{"cell", "input", "hidden", "layers", "bidirectional"}`.

use crate::Recurrent;
use crate::weights::DirectionWeights;
use nn_core::{Error, Float, Init, Result, Rng};
use serde::{Deserialize, Serialize};
use std::fmt::{self, Display};
use std::str::FromStr;

/// A cell or nonlinearity name that is none of the known ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}` ({expected})")]
pub struct UnknownName {
    /// `cell` or `nonlinearity`.
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// The names accepted, for the message.
    pub expected: &'static str,
}

/// The vanilla RNN's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    Tanh,
    /// `max(0, ·)`.
    Relu,
}

impl Display for Nonlinearity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Nonlinearity::Tanh => "tanh",
            Nonlinearity::Relu => "relu",
        })
    }
}

impl FromStr for Nonlinearity {
    type Err = UnknownName;
    fn from_str(name: &str) -> std::result::Result<Self, UnknownName> {
        match name {
            "tanh" => Ok(Nonlinearity::Tanh),
            "relu" => Ok(Nonlinearity::Relu),
            other => Err(UnknownName {
                what: "nonlinearity",
                name: other.to_string(),
                expected: "tanh or relu",
            }),
        }
    }
}

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum CellKind {
    /// `h' = act(W_ih x + b_ih + W_hh h + b_hh)`.
    Rnn(Nonlinearity),
    /// Gates `i, f, g, o`.
    Lstm,
    /// Gates `r, z, n`.
    Gru,
}

impl CellKind {
    /// Every cell, the RNN with each nonlinearity (for tests and benchmarks that cover them all).
    pub const ALL: [CellKind; 4] = [
        CellKind::Rnn(Nonlinearity::Tanh),
        CellKind::Rnn(Nonlinearity::Relu),
        CellKind::Lstm,
        CellKind::Gru,
    ];

    /// `G`, the number of `H`-row gate blocks in `weight_ih` and `weight_hh`: 1, 4 or 3.
    pub fn gate_count(self) -> usize {
        match self {
            CellKind::Rnn(_) => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// `true` for the LSTM, the one cell with a cell state `c` besides `h`.
    pub fn has_cell_state(self) -> bool {
        self == CellKind::Lstm
    }
}

impl Display for CellKind {
    /// `rnn_tanh`, `rnn_relu`, `lstm`, `gru`; with `{:#}`, the tanh RNN is `rnn`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CellKind::Rnn(Nonlinearity::Tanh) if f.alternate() => f.write_str("rnn"),
            CellKind::Rnn(act) => write!(f, "rnn_{act}"),
            CellKind::Lstm => f.write_str("lstm"),
            CellKind::Gru => f.write_str("gru"),
        }
    }
}

impl FromStr for CellKind {
    type Err = UnknownName;
    /// `rnn_tanh` (or `rnn`), `rnn_relu`, `lstm`, `gru`.
    fn from_str(name: &str) -> std::result::Result<Self, UnknownName> {
        match name {
            "rnn" => Ok(CellKind::Rnn(Nonlinearity::Tanh)),
            "lstm" => Ok(CellKind::Lstm),
            "gru" => Ok(CellKind::Gru),
            other => other
                .strip_prefix("rnn_")
                .and_then(|act| act.parse().ok())
                .map(CellKind::Rnn)
                .ok_or_else(|| UnknownName {
                    what: "cell",
                    name: other.to_string(),
                    expected: "lstm, gru, rnn, rnn_tanh or rnn_relu",
                }),
        }
    }
}

impl From<CellKind> for String {
    fn from(cell: CellKind) -> String {
        cell.to_string()
    }
}

impl TryFrom<String> for CellKind {
    type Error = UnknownName;
    fn try_from(name: String) -> std::result::Result<Self, UnknownName> {
        name.parse()
    }
}

/// Layer settings: `RecurrentConfig::new(cell, input, hidden).with_num_layers(2).with_bidirectional(true)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecurrentConfig {
    /// The cell.
    pub cell: CellKind,
    /// Input features `I`.
    #[serde(rename = "input")]
    pub input_size: usize,
    /// Hidden units `H`.
    #[serde(rename = "hidden")]
    pub hidden_size: usize,
    /// Stacked layers `L` (default 1).
    #[serde(rename = "layers")]
    pub num_layers: usize,
    /// Two directions `D = 2` when true (default false).
    pub bidirectional: bool,
    /// PyTorch's `dropout`: the probability `p` in `[0, 1)` of zeroing each value of every
    /// stacked layer's output except the last, in training passes only (a forward given an
    /// [`Rng`]); kept values are scaled by `1/(1-p)`. Default 0 (none); absent from older
    /// checkpoints' JSON, which read as 0; written only when not 0.
    #[serde(default, skip_serializing_if = "no_dropout")]
    pub dropout: f64,
}

/// Whether a config's `dropout` is 0 (then its JSON leaves the field out).
fn no_dropout(p: &f64) -> bool {
    *p == 0.0
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
            dropout: 0.0,
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

    /// Sets the dropout probability between stacked layers (see the field).
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// `D`: 2 when bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Checks that every size is non-zero, that `G·H` and `D·H` (the rows of every tensor and
    /// the input of layers above the first) do not overflow, and that `dropout` is in `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidConfig(format!(
                "RecurrentConfig: dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        for (what, v) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
        ] {
            if v == 0 {
                return Err(Error::InvalidConfig(format!(
                    "RecurrentConfig: {what} must be at least 1, got 0"
                )));
            }
        }
        for (what, factor) in [
            ("gate blocks", self.cell.gate_count()),
            ("directions", self.num_directions()),
        ] {
            if self.hidden_size.checked_mul(factor).is_none() {
                return Err(Error::InvalidConfig(format!(
                    "RecurrentConfig: hidden_size {} times {factor} {what} overflows",
                    self.hidden_size
                )));
            }
        }
        Ok(())
    }

    /// Builds the layer with PyTorch's init `U(-1/√H, 1/√H)` for every tensor. Zero sizes are
    /// errors, and so are sizes whose tensors cannot be allocated ([`Error::TooLarge`]).
    ///
    /// Tensors are drawn in visiting order (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` per
    /// layer and direction), each in column-major order, so one seed gives one layer.
    pub fn init<T: Float>(&self, rng: &mut Rng) -> Result<Recurrent<T>> {
        self.validate()?;
        let (h, d) = (self.hidden_size, self.num_directions());
        let init = Init::Uniform {
            bound: 1.0 / (h as f64).sqrt(),
        };
        let mut directions = Vec::new();
        // `num_layers` is the caller's: reserve fallibly (a huge count is an error, not an abort).
        directions
            .try_reserve_exact(self.num_layers.saturating_mul(d))
            .map_err(|_| Error::TooLarge {
                op: "RecurrentConfig::init layers",
                rows: self.num_layers,
                cols: d,
            })?;
        for layer in 0..self.num_layers {
            let input = if layer == 0 { self.input_size } else { d * h };
            for reverse in 0..d {
                let mut w = DirectionWeights::zeros(self.cell, input, h, layer, reverse == 1)?;
                w.fill(&init, rng)?;
                directions.push(w);
            }
        }
        Ok(Recurrent::from_parts(self.clone(), directions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_errors() {
        for cell in CellKind::ALL {
            assert_eq!(cell.to_string().parse::<CellKind>(), Ok(cell));
            assert_eq!(format!("{cell:#}").parse::<CellKind>(), Ok(cell));
        }
        let tanh = CellKind::Rnn(Nonlinearity::Tanh);
        assert_eq!(
            (tanh.to_string(), format!("{tanh:#}")),
            ("rnn_tanh".into(), "rnn".into())
        );
        assert_eq!("rnn".parse::<CellKind>(), Ok(tanh));
        assert_eq!("relu".parse::<Nonlinearity>(), Ok(Nonlinearity::Relu));
        for bad in ["", "transformer", "rnn_", "rnn_sigmoid", "LSTM"] {
            let err = bad.parse::<CellKind>().unwrap_err();
            assert!(err.to_string().starts_with("unknown cell"), "{err}");
        }
        assert!("sigmoid".parse::<Nonlinearity>().is_err());
    }

    #[test]
    fn config_json_has_the_checkpoint_field_names() {
        let config = RecurrentConfig::new(CellKind::Gru, 3, 4).with_num_layers(2);
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cell": "gru", "input": 3, "hidden": 4, "layers": 2, "bidirectional": false})
        );
        assert_eq!(
            serde_json::from_value::<RecurrentConfig>(json).unwrap(),
            config
        );
        let bad = serde_json::json!({"cell": "tcn", "input": 3, "hidden": 4, "layers": 2, "bidirectional": false});
        assert!(serde_json::from_value::<RecurrentConfig>(bad).is_err());
    }
}
