//! The error type of nn-core, shared by the crates built on it for data and file errors.
//!
//! Every public function that takes user data checks it and returns one of these instead of
//! panicking: a shape that does not fit, a class index out of range, an empty batch, a NaN or
//! infinite value, a bad setting, a size too large to allocate, or a weight file that is missing,
//! corrupt (including data that fails its checksum) or does not match.

use std::fmt;
use std::path::PathBuf;

/// A matrix shape `(rows, cols)`, printed as `(rows, cols)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape(pub usize, pub usize);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.0, self.1)
    }
}

impl<T, R: nalgebra::Dim, C: nalgebra::Dim, S: nalgebra::RawStorage<T, R, C>>
    From<&nalgebra::Matrix<T, R, C, S>> for Shape
{
    fn from(m: &nalgebra::Matrix<T, R, C, S>) -> Self {
        let (r, c) = m.shape();
        Shape(r, c)
    }
}

/// Everything that can go wrong in nn-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operand has the wrong shape.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch {
        /// The operation and operand, e.g. `"Dense::forward input"`.
        op: &'static str,
        /// The shape that would fit.
        expected: Shape,
        /// The shape given.
        got: Shape,
    },
    /// A length (of targets, of a sequence, ...) does not fit the data.
    #[error("{op}: length mismatch: expected {expected}, got {got}")]
    LengthMismatch {
        /// The operation and operand.
        op: &'static str,
        /// The length that would fit.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A class index is not below the number of classes.
    #[error("{op}: target {target} at position {index} is out of range for {classes} classes")]
    TargetOutOfRange {
        /// The operation.
        op: &'static str,
        /// Position of the target in the batch.
        index: usize,
        /// The target given.
        target: usize,
        /// The number of classes.
        classes: usize,
    },
    /// Every class target of a loss is [`IGNORE_INDEX`](crate::loss::IGNORE_INDEX): there is no
    /// position to average over (PyTorch returns NaN there).
    #[error("{op}: every target is ignore_index (IGNORE_INDEX): no position has a loss")]
    AllTargetsIgnored {
        /// The operation.
        op: &'static str,
    },
    /// A token id is not below the vocabulary size (an embedding's rows, or the input features of a layer fed tokens).
    #[error("{op}: token {token} at position {index} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The operation.
        op: &'static str,
        /// Position of the token in the input.
        index: usize,
        /// The token given.
        token: usize,
        /// The vocabulary size.
        vocab: usize,
    },
    /// A batch, sequence or layer size of zero where at least one is needed.
    #[error("{op}: empty input ({what} is 0)")]
    Empty {
        /// The operation.
        op: &'static str,
        /// What was empty: "batch", "steps", ...
        what: &'static str,
    },
    /// A NaN or infinite value in data that must be finite.
    #[error("{op}: non-finite value {value} at element {index}")]
    NonFinite {
        /// The operation and operand.
        op: &'static str,
        /// Element index (column-major) of the first bad value.
        index: usize,
        /// The value, as f64.
        value: f64,
    },
    /// A configuration value that cannot work (a zero size, a negative rate, ...).
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    /// A buffer of the sizes asked for cannot be allocated: its number of values overflows, it
    /// exceeds `isize::MAX` bytes, or the allocator refused it (see [`crate::alloc`]).
    #[error("{op}: a ({rows}, {cols}) matrix is too large to allocate")]
    TooLarge {
        /// The operation and buffer.
        op: &'static str,
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A tensor file that is not valid safetensors, or whose metadata is unusable.
    #[error("{path}: not a valid tensor file: {reason}")]
    Format {
        /// The file (or `"<bytes>"`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor file whose data does not match the checksum in its header: it was damaged
    /// after it was written (a flipped bit on disk, a bad copy).
    #[error(
        "{path}: corrupt tensor file: its data's checksum is {computed}, its header says {stored}"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The checksum in the header.
        stored: String,
        /// The checksum of the data read.
        computed: String,
    },
    /// A tensor the model needs is not in the file. The message names the file and, when the
    /// file has tensors of similar names (the same name under another prefix, a small edit
    /// away), the closest ones: `tensor `weight_ih_l0` is missing from m.safetensors (closest
    /// present: `rnn.weight_ih_l0`; ... map the prefix "" to "rnn." ...)`.
    #[error("tensor `{name}` is missing{}", missing_detail(name, path, closest))]
    MissingTensor {
        /// Its name.
        name: String,
        /// The file (empty when not known).
        path: PathBuf,
        /// The names present that are closest to `name`, best first (at most three).
        closest: Vec<String>,
    },
    /// [`Recurrent::backward`](../nn_recurrent/struct.Recurrent.html#method.backward) was given
    /// an input `x` whose values differ from the forward's (their fingerprints differ): its
    /// gradients would be wrong without a word.
    #[error(
        "{op}: x is not the input of the forward pass (its values differ); pass the same x, unchanged"
    )]
    InputChanged {
        /// The operation.
        op: &'static str,
    },
    /// A tensor has a different shape from the model's.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        /// Its name.
        name: String,
        /// The model's shape (PyTorch order).
        expected: Vec<usize>,
        /// The file's shape.
        got: Vec<usize>,
    },
    /// A tensor's dtype is not one this library reads.
    #[error("tensor `{name}` has dtype {dtype}, expected {expected}")]
    TensorDtype {
        /// Its name.
        name: String,
        /// Its dtype.
        dtype: String,
        /// What would be read.
        expected: &'static str,
    },
}

/// The file and hint of a [`Error::MissingTensor`] message.
fn missing_detail(name: &str, path: &std::path::Path, closest: &[String]) -> String {
    let mut out = String::new();
    if !path.as_os_str().is_empty() {
        out += &format!(" from {}", path.display());
    }
    if let Some(best) = closest.first() {
        let names: Vec<String> = closest.iter().map(|c| format!("`{c}`")).collect();
        out += &format!(" (closest present: {}", names.join(", "));
        if let Some((ours, theirs)) = prefix_pair(name, best) {
            out += &format!(
                "; the names differ in their prefix: load with a name map, e.g. \
                 `tensor_io::rename_prefixes(&[(\"{ours}\", \"{theirs}\")])`"
            );
        }
        out += ")";
    }
    out
}

/// `(a, b)` when `name = a + s` and `other = b + s` for a common suffix `s` that is a whole
/// dotted segment chain (`weight_ih_l0` in `rnn.weight_ih_l0` and `lstm.weight_ih_l0`).
pub(crate) fn prefix_pair<'a>(name: &'a str, other: &'a str) -> Option<(&'a str, &'a str)> {
    let common = name
        .bytes()
        .rev()
        .zip(other.bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    // Back to a segment boundary: the suffix must start the name or follow a dot.
    let boundary = |s: &str, k: usize| k == s.len() || s.as_bytes()[s.len() - k - 1] == b'.';
    let k = (1..=common)
        .rev()
        .find(|&k| boundary(name, k) && boundary(other, k))?;
    let (a, b) = (&name[..name.len() - k], &other[..other.len() - k]);
    (a != b).then_some((a, b))
}

/// nn-core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that `m` is `expected`, naming `op` in the error.
pub fn check_shape<T, R: nalgebra::Dim, C: nalgebra::Dim, S: nalgebra::RawStorage<T, R, C>>(
    op: &'static str,
    m: &nalgebra::Matrix<T, R, C, S>,
    expected: Shape,
) -> Result<()> {
    let got = Shape::from(m);
    if got == expected {
        Ok(())
    } else {
        Err(Error::ShapeMismatch { op, expected, got })
    }
}

/// Checks that every value of `m` is finite, naming `op` and the first bad element.
pub fn check_finite<
    T: crate::Float,
    R: nalgebra::Dim,
    C: nalgebra::Dim,
    S: nalgebra::RawStorage<T, R, C>,
>(
    op: &'static str,
    m: &nalgebra::Matrix<T, R, C, S>,
) -> Result<()> {
    let all_finite = if m.data.is_contiguous() {
        // SAFETY: the storage is contiguous, so its `len()` elements form one slice.
        all_finite(unsafe { m.data.as_slice_unchecked() })
    } else {
        m.iter().all(|v| v.finite())
    };
    if all_finite {
        return Ok(());
    }
    match m.iter().position(|v| !v.finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            op,
            index,
            value: m.iter().nth(index).map_or(f64::NAN, |v| v.as_f64()),
        }),
    }
}

/// `true` when every value is finite: a branch-free scan in blocks (vectorized, AVX-512 or AVX2
/// when the CPU has it), since the layers check every input and output this way.
///
/// Slices of at least [`SPLIT_MIN_VALUES`](crate::kernels::thresholds::SPLIT_MIN_VALUES) are
/// scanned as parts on the pool, one per thread (the layers check megabytes of inputs and outputs
/// per step, serial work otherwise).
pub fn all_finite<T: crate::Float>(values: &[T]) -> bool {
    let scan = |v: &[T]| {
        crate::kernels::simd::dispatch(
            #[inline(always)]
            || {
                v.chunks(256)
                    .all(|c| c.iter().fold(true, |ok, x| ok & x.finite()))
            },
        )
    };
    let parts = crate::kernels::pool::threads();
    if values.len() >= crate::kernels::thresholds::SPLIT_MIN_VALUES && parts >= 2 {
        let ok = std::sync::atomic::AtomicBool::new(true);
        crate::kernels::pool::for_each_part(parts, |i| {
            let r = crate::kernels::pool::part_range(values.len(), parts, 256, i);
            if !scan(&values[r]) {
                ok.store(false, std::sync::atomic::Ordering::Relaxed);
            }
        });
        ok.into_inner()
    } else {
        scan(values)
    }
}

#[cfg(test)]
mod tests {
    use super::all_finite;

    #[test]
    fn a_non_finite_value_anywhere_is_found_in_small_and_split_scans() {
        // Below and above the size at which the scan runs as two halves on the pool.
        for n in [
            1usize,
            300,
            crate::kernels::thresholds::SPLIT_MIN_VALUES + 3,
        ] {
            let mut v = vec![1.0f32; n];
            assert!(all_finite(&v));
            // The first, the last of the first half, the first of the second half, the last.
            for at in [0, (n / 2).saturating_sub(1), n / 2, n - 1] {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    v[at] = bad;
                    assert!(!all_finite(&v), "n {n}, {bad} at {at}");
                    v[at] = 1.0;
                }
            }
        }
    }
}
