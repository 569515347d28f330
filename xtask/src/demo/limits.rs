//! The demos' memory budget: what their size flags (`--hidden`, `--layers`, `--seq`, `--len`,
//! `--batch`, `--sample`) and the text's vocabulary ask for, checked before anything is
//! allocated, so that a huge value is a one-line error instead of an abort or the system's
//! out-of-memory killer.
//!
//! Each estimate counts f32 values: the model's parameters five times (value, gradient, two
//! optimizer buffers, the checkpoint's copy) and, per step, the input, the recurrent cache (at
//! most `G+5` rows of `H` per column with the layer's output gradient) and the head's outputs
//! with their gradient, for the training batch and the evaluation batch at once.

use crate::memory::{self, add, bytes};
use nn_recurrent::CellKind;

/// The most the demos' buffers may take together: 8 GiB.
pub const MEMORY_BUDGET: usize = 8 << 30;

/// Bytes of an f32.
const F32: usize = 4;

/// Parameters of `layers` stacked layers of `cell` on `input` features and a Dense head to
/// `outputs`, counted five times.
fn parameters(
    cell: CellKind,
    input: usize,
    hidden: usize,
    layers: usize,
    outputs: usize,
) -> (String, Option<usize>) {
    let g = cell.gate_count();
    let first = bytes(
        1,
        &[g, hidden, input.saturating_add(hidden).saturating_add(2)],
    );
    let above = bytes(
        1,
        &[
            layers.saturating_sub(1),
            g,
            hidden,
            hidden.saturating_mul(2).saturating_add(2),
        ],
    );
    let head = bytes(1, &[outputs, hidden.saturating_add(1)]);
    let values = add(add(first, above), head);
    (
        format!(
            "the parameters ({layers} layer(s) of {hidden} {cell:#} units on {input} inputs, head to {outputs})"
        ),
        values.and_then(|v| bytes(5 * F32, &[v])),
    )
}

/// The per-step buffers of `columns` = `T·(B + evaluation batch)` columns: input, cache,
/// head outputs.
fn step_buffers(
    cell: CellKind,
    input: usize,
    hidden: usize,
    layers: usize,
    outputs: usize,
    columns: Option<usize>,
    sizes: &str,
) -> Vec<(String, Option<usize>)> {
    let g = cell.gate_count();
    let at = |per_column: Option<usize>| per_column.and_then(|p| columns?.checked_mul(p));
    vec![
        (
            format!("the inputs ({input} × {sizes})"),
            at(bytes(F32, &[input])),
        ),
        (
            format!(
                "the recurrent cache ({layers} × {} × {hidden} × {sizes})",
                g + 5
            ),
            at(bytes(F32, &[layers, g + 5, hidden])),
        ),
        (
            format!("the head's outputs and gradient (2 × {outputs} × {sizes})"),
            at(bytes(F32, &[2, outputs])),
        ),
    ]
}

/// Checks the buffers against [`MEMORY_BUDGET`].
fn check(buffers: &[(String, Option<usize>)]) -> Result<(), String> {
    memory::check(
        "the sizes",
        buffers,
        MEMORY_BUDGET,
        "the demos' memory budget",
    )
}

/// `charlm`: vocabulary `v`, an embedding of `embed` values per character (the layer's input;
/// `None`: one-hot, `v`), the text's `chars` (its indices are held twice), `--sample`
/// characters, and training windows `T × B` next to validation chunks of `T × val_batch`.
pub fn charlm(
    cell: CellKind,
    v: usize,
    embed: Option<usize>,
    hidden: usize,
    layers: usize,
    seq: usize,
    batch: usize,
    val_batch: usize,
    chars: usize,
    sample: usize,
) -> Result<(), String> {
    let columns = batch
        .checked_add(val_batch)
        .and_then(|b| b.checked_mul(seq));
    let sizes = format!("T {seq} × (B {batch} + {val_batch})");
    // With an embedding the layer reads `E` features; the table is `(V, E)`, counted five
    // times as the other parameters.
    let input = embed.unwrap_or(v);
    let mut buffers = vec![parameters(cell, input, hidden, layers, v)];
    if let Some(e) = embed {
        buffers.push((
            format!("the embedding ({v} × {e})"),
            bytes(5 * F32, &[v, e]),
        ));
    }
    buffers.extend(step_buffers(
        cell, input, hidden, layers, v, columns, &sizes,
    ));
    buffers.push((
        format!("the text's indices (2 × {chars} characters)"),
        bytes(16, &[chars]),
    ));
    buffers.push((
        format!("the sample (--sample {sample})"),
        bytes(16, &[sample]),
    ));
    check(&buffers)
}

/// `adding`: sequences of `len` steps, `batch` per step and `test` held out (inputs kept).
pub fn adding(
    cell: CellKind,
    hidden: usize,
    len: usize,
    batch: usize,
    test: usize,
) -> Result<(), String> {
    let columns = batch.checked_add(test).and_then(|b| b.checked_mul(len));
    let sizes = format!("T {len} × (B {batch} + {test})");
    let mut buffers = vec![parameters(cell, 2, hidden, 1, 1)];
    buffers.extend(step_buffers(cell, 2, hidden, 1, 1, columns, &sizes));
    buffers.push((
        format!("the held-out inputs (2 × T {len} × {test})"),
        bytes(F32, &[2, len, test]),
    ));
    check(&buffers)
}

/// `reber`: `batch` strings per step and `test` held out over the 7 symbols, each estimated at
/// `steps` symbols (the strings' length varies; a batch is as long as its longest).
pub fn reber(
    cell: CellKind,
    hidden: usize,
    batch: usize,
    test: usize,
    steps: usize,
) -> Result<(), String> {
    let columns = batch.checked_add(test).and_then(|b| b.checked_mul(steps));
    let sizes = format!("T ~{steps} × (B {batch} + {test})");
    let mut buffers = vec![parameters(cell, 7, hidden, 1, 7)];
    buffers.extend(step_buffers(cell, 7, hidden, 1, 7, columns, &sizes));
    buffers.push((
        format!("the strings ({batch} of ~{steps} symbols)"),
        bytes(8, &[batch, steps.saturating_add(4)]),
    ));
    check(&buffers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_and_huge_sizes_do_not() {
        let lstm = CellKind::Lstm;
        assert!(charlm(lstm, 100, None, 256, 2, 64, 32, 64, 1 << 20, 500).is_ok());
        assert!(adding(lstm, 64, 100, 32, 1000).is_ok());
        assert!(reber(lstm, 16, 32, 256, 64).is_ok());
        let e = charlm(lstm, 1_114_111, None, 256, 2, 64, 32, 64, 1 << 20, 500).unwrap_err();
        assert!(e.contains("head's outputs") && e.contains("1114111"), "{e}");
        assert!(adding(lstm, 64, 100, 1 << 61, 1000).is_err());
        assert!(adding(lstm, usize::MAX, 100, 32, 1000).is_err());
        assert!(reber(lstm, 16, usize::MAX, 256, 64).is_err());
    }
}
