//! Named tensors in safetensors files: PyTorch weight files, checkpoints and the fixtures.
//!
//! Layout rules (safetensors stores row-major tensors):
//! - a PyTorch matrix `[r, c]` (a weight) becomes our column-major `(r, c)` [`DMatrix`]: the
//!   bytes are transposed on the way in and out ([`TensorFile::load_param`], [`TensorWriter::param`]);
//! - a data tensor `[..., F]` (`[T, B, F]`, `[N, F]`) is, as raw memory, exactly our `(F, T*B)`
//!   column-major sequence batch, so it is read without moving anything ([`TensorFile::columns`]).
//!
//! A file is read whole, its header is validated by the `safetensors` crate (offsets, sizes,
//! overflow) before any tensor is touched, and every failure is an [`Error`] naming the file or
//! the tensor. Every file written here holds a checksum of its data ([`checksum`]), checked
//! when it is read. Writes go to a temporary file in the same folder, are flushed to disk and
//! then renamed over the target ([`write_atomic`]), so a crash leaves the old file or the new one,
//! and nothing but a regular file is ever replaced.

mod atomic;
pub mod checksum;
mod names;

pub use atomic::{DEAD_GRACE, STALE_AFTER, check_writable, write_atomic};
pub use names::rename_prefixes;

use crate::{Error, Float, Module, Param, Result};
use nalgebra::DMatrix;
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

/// A safetensors file read into memory, with its header parsed and checked.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    entries: HashMap<String, Entry>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFile")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl TensorFile {
    /// Reads and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(bytes, path)
    }

    /// Validates `bytes` as a safetensors file, and its data against the checksum in its header
    /// when it has one ([`checksum`]); `path` is only used in error messages.
    pub fn from_bytes(bytes: Vec<u8>, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let format = |reason: String| Error::Format {
            path: path.clone(),
            reason,
        };
        let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        if let Some(stored) = metadata.get(checksum::KEY) {
            let data = bytes.get(8 + n..).unwrap_or_default();
            let computed = checksum::fnv1a64(data);
            if checksum::from_hex(stored) != Some(computed) {
                return Err(Error::Checksum {
                    path,
                    stored: stored.clone(),
                    computed: checksum::to_hex(computed),
                });
            }
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
        let base = bytes.as_ptr() as usize;
        let entries = st
            .iter()
            .map(|(name, view)| {
                let start = view.data().as_ptr() as usize - base;
                let entry = Entry {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes: start..start + view.data().len(),
                };
                (name.to_string(), entry)
            })
            .collect();
        Ok(TensorFile {
            path,
            bytes,
            entries,
            metadata,
        })
    }

    /// The size of the file in bytes (header included).
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value from the header's `__metadata__`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// `true` when the file has a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            path: self.path.clone(),
            closest: names::closest(name, self.entries.keys().map(String::as_str)),
        })
    }

    /// The PyTorch shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.shape)
    }

    /// The values of a floating-point tensor, in file (row-major) order, converted to `T`.
    /// `F32` and `F64` tensors are read; other dtypes are an error, and so is a finite `F64`
    /// value beyond the range of `T` (it would become infinite in `f32`).
    pub fn values<T: Float>(&self, name: &str) -> Result<Vec<T>> {
        let e = self.entry(name)?;
        let data = &self.bytes[e.bytes.clone()];
        match e.dtype {
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| {
                    let x = f64::read_le(b);
                    let v = T::cast(x);
                    if v.finite() || !x.is_finite() {
                        Ok(v)
                    } else {
                        Err(Error::Format {
                            path: self.path.clone(),
                            reason: format!(
                                "tensor `{name}` holds {x:e}, beyond the range of {}",
                                T::NAME
                            ),
                        })
                    }
                })
                .collect(),
            Dtype::F32 => Ok(data
                .chunks_exact(4)
                .map(|b| T::cast_f32(f32::read_le(b)))
                .collect()),
            other => Err(Error::TensorDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
                expected: "F32 or F64",
            }),
        }
    }

    /// The values of an integer tensor (`I64`, `I32`, `U64` or `U32`) as `i128`, in file order.
    pub fn integers(&self, name: &str) -> Result<Vec<i128>> {
        let e = self.entry(name)?;
        let data = &self.bytes[e.bytes.clone()];
        let read = |n: usize, f: fn(&[u8]) -> i128| data.chunks_exact(n).map(f).collect();
        match e.dtype {
            Dtype::I64 => Ok(read(8, |b| {
                i64::from_le_bytes(b.try_into().unwrap()) as i128
            })),
            Dtype::U64 => Ok(read(8, |b| {
                u64::from_le_bytes(b.try_into().unwrap()) as i128
            })),
            Dtype::I32 => Ok(read(4, |b| {
                i32::from_le_bytes(b.try_into().unwrap()) as i128
            })),
            Dtype::U32 => Ok(read(4, |b| {
                u32::from_le_bytes(b.try_into().unwrap()) as i128
            })),
            other => Err(Error::TensorDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
                expected: "I64, U64, I32 or U32",
            }),
        }
    }

    /// Class indices (`targets`): integers that must be non-negative.
    pub fn indices(&self, name: &str) -> Result<Vec<usize>> {
        self.integers(name)?
            .into_iter()
            .map(|v| {
                usize::try_from(v).map_err(|_| Error::Format {
                    path: self.path.clone(),
                    reason: format!("tensor `{name}` holds {v}, not a class index"),
                })
            })
            .collect()
    }

    /// A data tensor `[..., F]` as the column-major `(F, rest)` matrix with the same bytes
    /// (`[T, B, F]` becomes `(F, T*B)`, column `t*B + b`). A 1-D `[n]` tensor becomes `(n, 1)`.
    pub fn columns<T: Float>(&self, name: &str) -> Result<DMatrix<T>> {
        let shape = self.shape(name)?.to_vec();
        let values = self.values::<T>(name)?;
        let f = if shape.len() <= 1 {
            values.len()
        } else {
            shape[shape.len() - 1]
        };
        let cols = values.len().checked_div(f).unwrap_or(0);
        Ok(DMatrix::from_vec(f, cols, values))
    }

    /// Like [`TensorFile::columns`], but checks the PyTorch shape first.
    pub fn columns_shaped<T: Float>(&self, name: &str, expected: &[usize]) -> Result<DMatrix<T>> {
        self.expect_shape(name, expected)?;
        self.columns(name)
    }

    /// A PyTorch matrix `[r, c]` as our `(r, c)` (or a vector `[n]` as `(n, 1)`), checking its shape.
    pub fn matrix<T: Float>(&self, name: &str, expected: &[usize]) -> Result<DMatrix<T>> {
        self.expect_shape(name, expected)?;
        let values = self.values::<T>(name)?;
        Ok(match expected {
            [n] => DMatrix::from_vec(*n, 1, values),
            [r, c] => DMatrix::from_row_slice(*r, *c, &values),
            _ => DMatrix::from_vec(values.len(), 1, values),
        })
    }

    fn expect_shape(&self, name: &str, expected: &[usize]) -> Result<()> {
        let got = self.shape(name)?;
        if got != expected {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: got.to_vec(),
            });
        }
        Ok(())
    }

    /// Reads tensor `name` into `param.value`, checking that its shape is the parameter's
    /// PyTorch shape. Values are converted from the file's dtype (F32 or F64).
    pub fn load_param<T: Float>(&self, name: &str, param: &mut Param<T>) -> Result<()> {
        let m = self.matrix::<T>(name, &param.torch_shape())?;
        param.value.copy_from(&m);
        Ok(())
    }

    /// Loads every parameter of `module` from the tensor of the same name (PyTorch's
    /// `load_state_dict` with `strict=True` for the model's own names; extra tensors are ignored).
    /// Nothing is changed unless every tensor is present with the right shape and dtype; a
    /// missing one is [`Error::MissingTensor`] naming the file and the closest names present.
    pub fn load_module<T: Float, M: Module<T> + ?Sized>(&self, module: &mut M) -> Result<()> {
        self.load_module_with(module, str::to_string)
    }

    /// [`TensorFile::load_module`] with a name map from our parameter names to the file's
    /// (see [`rename_prefixes`]): `load_module_with(&mut model, rename_prefixes(&[("rnn.",
    /// "lstm."), ("head.", "fc.")]))` reads a `state_dict` whose layers are called `lstm` and
    /// `fc`; any closure works (`|ours| format!("0.{ours}")` for an `nn.Sequential`'s first
    /// module). Errors name the file's tensor names.
    pub fn load_module_with<T: Float, M: Module<T> + ?Sized>(
        &self,
        module: &mut M,
        map: impl Fn(&str) -> String,
    ) -> Result<()> {
        let mut loaded: Vec<DMatrix<T>> = Vec::new();
        let mut first_err = None;
        module.visit(&mut |name, p| {
            if first_err.is_none() {
                match self.matrix::<T>(&map(name), &p.torch_shape()) {
                    Ok(m) => loaded.push(m),
                    Err(e) => first_err = Some(e),
                }
            }
        });
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut it = loaded.into_iter();
        module.visit_mut(&mut |_, p| {
            if let Some(m) = it.next() {
                p.value = m;
            }
        });
        Ok(())
    }
}

/// One tensor to be written: dtype, PyTorch shape and little-endian bytes.
#[derive(Debug)]
struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Collects named tensors and metadata, then writes one safetensors file atomically.
///
/// The bytes depend only on the tensors and metadata given, not on the order they were added
/// in: tensors are laid out as `safetensors` orders them (by alignment, then name), the metadata
/// is written sorted by key, and the data's checksum is added under [`checksum::KEY`].
#[derive(Debug, Default)]
pub struct TensorWriter {
    tensors: Vec<(String, Owned)>,
    metadata: BTreeMap<String, String>,
}

impl TensorWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header metadata entry.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a parameter's value under its PyTorch shape (transposing a matrix to row-major).
    pub fn param<T: Float>(&mut self, name: &str, param: &Param<T>) -> &mut Self {
        self.matrix(name, &param.value, param.is_vector())
    }

    /// Adds every parameter of `module` under its PyTorch name.
    pub fn module<T: Float, M: Module<T> + ?Sized>(&mut self, module: &M) -> &mut Self {
        module.visit(&mut |name, p| {
            self.param(name, p);
        });
        self
    }

    /// Adds a matrix as PyTorch `[r, c]` (row-major), or as `[r]` when `vector` (one column).
    pub fn matrix<T: Float>(&mut self, name: &str, m: &DMatrix<T>, vector: bool) -> &mut Self {
        let mut data = Vec::with_capacity(m.len() * T::BYTES);
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                m[(i, j)].write_le(&mut data);
            }
        }
        let shape = if vector {
            vec![m.nrows()]
        } else {
            vec![m.nrows(), m.ncols()]
        };
        self.push(name, T::DTYPE, shape, data)
    }

    /// Adds raw values in file (row-major) order under `shape`.
    pub fn values<T: Float>(&mut self, name: &str, shape: &[usize], values: &[T]) -> &mut Self {
        let mut data = Vec::with_capacity(values.len() * T::BYTES);
        for v in values {
            v.write_le(&mut data);
        }
        self.push(name, T::DTYPE, shape.to_vec(), data)
    }

    /// Adds `u64` values as a 1-D `U64` tensor (step counters, RNG state).
    pub fn u64s(&mut self, name: &str, values: &[u64]) -> &mut Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push(name, Dtype::U64, vec![values.len()], data)
    }

    fn push(&mut self, name: &str, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> &mut Self {
        self.tensors.retain(|(n, _)| n != name);
        self.tensors
            .push((name.to_string(), Owned { dtype, shape, data }));
        self
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let format = |reason: String| Error::Format {
            path: PathBuf::from("<writing>"),
            reason,
        };
        // `safetensors` lays out the tensors and writes their header `{"name":{...},...}`; the
        // metadata is put in front of them here, sorted (its own would be in hash order).
        let plain = safetensors::serialize(self.tensors.iter().map(|(n, t)| (n.as_str(), t)), None)
            .map_err(|e| format(e.to_string()))?;
        let (n, _) = SafeTensors::read_metadata(&plain).map_err(|e| format(e.to_string()))?;
        let (header, data) = (&plain[8..8 + n], &plain[8 + n..]);
        let tensors = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.trim_end().strip_prefix('{'))
            .ok_or_else(|| format("unexpected header from safetensors".to_string()))?;
        let mut metadata = self.metadata.clone();
        metadata.insert(
            checksum::KEY.to_string(),
            checksum::to_hex(checksum::fnv1a64(data)),
        );
        let metadata = serde_json::to_string(&metadata).map_err(|e| format(e.to_string()))?;
        let comma = if tensors == "}" { "" } else { "," };
        let mut text = format!(r#"{{"__metadata__":{metadata}{comma}{tensors}"#);
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
        let mut out = Vec::with_capacity(8 + text.len() + data.len());
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(data);
        Ok(out)
    }

    /// Writes the file atomically (see [`write_atomic`]).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_round_trip_is_bit_exact_and_layout_is_pytorch() {
        let mut w = Param::<f64>::matrix(DMatrix::from_row_slice(2, 3, &[1., 2., 3., 4., 5., 6.]));
        let mut b = Param::<f64>::vector(2);
        b.value[(1, 0)] = 0.1;
        let mut out = TensorWriter::new();
        out.param("weight", &w).param("bias", &b).metadata("k", "v");
        let file = TensorFile::from_bytes(out.to_bytes().unwrap(), "mem").unwrap();
        assert_eq!(file.shape("weight").unwrap(), &[2, 3]);
        assert_eq!(
            file.values::<f64>("weight").unwrap(),
            vec![1., 2., 3., 4., 5., 6.]
        );
        assert_eq!(file.metadata("k"), Some("v"));
        let want = (w.value.clone(), b.value.clone());
        w.value.fill(0.0);
        b.value.fill(0.0);
        file.load_param("weight", &mut w).unwrap();
        file.load_param("bias", &mut b).unwrap();
        assert_eq!((w.value, b.value), want);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            TensorFile::from_bytes(b"garbage".to_vec(), "g"),
            Err(Error::Format { .. })
        ));
        // A header claiming 2^60 bytes is rejected without allocating it.
        let mut huge = (1u64 << 60).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(TensorFile::from_bytes(huge, "h").is_err());
        let mut out = TensorWriter::new();
        out.values::<f32>("x", &[3], &[1.0, 2.0, 3.0]);
        let file = TensorFile::from_bytes(out.to_bytes().unwrap(), "m").unwrap();
        let mut p = Param::<f64>::vector(4);
        assert!(matches!(
            file.load_param("x", &mut p),
            Err(Error::TensorShape { .. })
        ));
        assert!(matches!(
            file.load_param("y", &mut p),
            Err(Error::MissingTensor { .. })
        ));
        assert!(matches!(
            TensorFile::open("/definitely/not/here.safetensors"),
            Err(Error::Io { .. })
        ));
    }

    /// A small file whose header declares `shape` and `offsets` for one F32 tensor.
    fn declaring(shape: &str, offsets: &str) -> Vec<u8> {
        let header =
            format!(r#"{{"x":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 16]);
        bytes
    }

    #[test]
    fn huge_declared_sizes_are_refused_before_any_allocation() {
        // 2^40 elements (4 TiB) declared in a file of about 100 bytes: refused while reading the
        // header (the tensor would be a view into the file's own bytes, which are too few), so
        // nothing of the declared size is ever allocated.
        let tib = 1u64 << 40;
        for (shape, offsets) in [
            (format!("[{tib}]"), format!("[0,{}]", 4 * tib)),
            (format!("[{tib}]"), "[0,16]".to_string()),
            (format!("[{tib},{tib},{tib}]"), "[0,16]".to_string()),
            ("[4]".to_string(), format!("[0,{}]", u64::MAX)),
        ] {
            let bytes = declaring(&shape, &offsets);
            assert!(bytes.len() < 200);
            assert!(
                matches!(
                    TensorFile::from_bytes(bytes, "huge"),
                    Err(Error::Format { .. })
                ),
                "{shape} {offsets}"
            );
        }
        // The same header with an honest size loads.
        assert!(TensorFile::from_bytes(declaring("[4]", "[0,16]"), "ok").is_ok());
        // A header length beyond the file (or beyond safetensors' 100 MB limit).
        for n in [1u64 << 40, 200, u64::MAX] {
            let mut bytes = n.to_le_bytes().to_vec();
            bytes.extend_from_slice(b"{}");
            assert!(TensorFile::from_bytes(bytes, "h").is_err());
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("a.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1);
        assert!(write_atomic(&dir.join("missing/x.bin"), b"x").is_err());
    }
}
