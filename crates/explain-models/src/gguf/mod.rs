//! GGUF v2/v3 files (llama.cpp's model format): a memory-mapped reader with bounded parsing,
//! typed metadata access and dequantisation to `f32` torch tensors.
//!
//! - [`GgufFile`]: open a file, read its metadata, list and load its tensors.
//! - [`MetadataValue`]: one metadata value as the file types it.
//! - [`GgufTensorInfo`]: name, shape, type and location of one tensor.
//! - [`ggml_type_name`], [`is_supported_type`]: the GGML type table.
//!
//! - [`dequantize_into`]: the dequantisation kernels on raw GGML data.
//!
//! Supported tensor types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and the
//! K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, bit-identical to gguf-py 0.19.0. Any other type is
//! reported as [`Error::UnsupportedTensorType`] naming the tensor and the type when it is
//! loaded.
//!
//! Specification: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

mod dequant;
mod metadata;
mod reader;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use explainability_core::{Error, Result};
use tch::{Device, Kind, Tensor};

use crate::weights::TensorSource;

pub use dequant::{default_threads, dequantize_into};
pub use metadata::MetadataValue;
pub use types::{ggml_type_name, is_supported_type};

/// Values dequantised at a time by [`GgufFile::tensor_as`] (16 MiB of f32 scratch). Each
/// chunk's conversion is one libtorch parallel region; with 1 Mi values per chunk, 160 regions
/// for Gemma's embedding took 5.2 s instead of 0.6 s with 2 OpenMP threads on a loaded 2-core
/// machine (spinning threads), 4 Mi values 1.2 s.
const CONVERT_CHUNK_ELEMENTS: usize = 1 << 22;

/// Name, shape, GGML type and data offset of one tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    name: String,
    /// GGUF order: fastest-varying dimension first.
    dims: Vec<u64>,
    ggml_type: u32,
    /// Offset of the data from the start of the data section.
    offset: u64,
    n_elements: u64,
}

impl GgufTensorInfo {
    /// The tensor's name (`"blk.0.attn_q.weight"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions as the file stores them: fastest-varying first (the reverse of torch order).
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// Shape in torch order (slowest-varying first): the reversed [`dims`](Self::dims).
    ///
    /// # Examples
    /// GGUF dims `[576, 49152]` (576 values per row, 49152 rows) are torch shape `[49152, 576]`.
    pub fn shape(&self) -> Vec<i64> {
        // Every dim was checked to fit i64 when the file was parsed.
        self.dims.iter().rev().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect()
    }

    /// Numeric GGML type id (`3` for Q4_1).
    pub fn ggml_type(&self) -> u32 {
        self.ggml_type
    }

    /// Name of the GGML type (`"Q4_1"`), `"unknown"` for an unassigned id.
    pub fn type_name(&self) -> &'static str {
        ggml_type_name(self.ggml_type)
    }

    /// Number of elements (product of the dims; 1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// Offset of the data from the start of the file's data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// A GGUF file, memory-mapped, with its header parsed and validated.
///
/// Opening parses the header only; tensor data is read (and dequantised) when asked for.
///
/// # Examples
/// ```no_run
/// use explain_models::GgufFile;
/// let file = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// assert_eq!(file.architecture()?, "llama");
/// let layers = file.get_u32("llama.block_count")?;
/// let embed = file.tensor("token_embd.weight")?; // f32, shape [vocab, d_model]
/// # Ok::<(), explainability_core::Error>(())
/// ```
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("file_len", &self.map.len())
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_start", &self.data_start)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses a GGUF v2 or v3 file.
    ///
    /// Every count and length in the header is checked against the file size before anything
    /// is allocated, and every tensor's data range must lie inside the file, be aligned and
    /// overlap no other tensor.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or mapped; [`Error::GgufBadMagic`],
    /// [`Error::GgufUnsupportedVersion`], [`Error::GgufTruncated`], [`Error::GgufImplausible`]
    /// and [`Error::GgufMalformed`] for files that are not valid GGUF.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this value. Its contents can only change
        // if another process modifies the file while it is open; the reader never trusts the
        // bytes (every read is bounds-checked against the map's length, fixed at map time),
        // so a concurrent modification can give wrong values or errors but no memory
        // unsafety in this crate's code.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = reader::parse_header(&map, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name: header.by_name,
            alignment: header.alignment,
            data_start: header.data_start,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Offset in the file where the tensor data section starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    /// `Ok(None)` when `key` is absent, `Ok(Some(_))` when `convert` accepts its value, and
    /// [`Error::MissingMetadata`] when the value has another type.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        convert: impl FnOnce(&'a MetadataValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(value) => convert(value).map(Some).ok_or_else(|| Error::MissingMetadata {
                key: key.to_owned(),
                expected: format!("{expected}, found {}", value.type_name()),
            }),
        }
    }

    fn required<T>(&self, key: &str, expected: &str, value: Option<T>) -> Result<T> {
        value.ok_or_else(|| Error::MissingMetadata {
            key: key.to_owned(),
            expected: expected.to_owned(),
        })
    }

    /// An integer metadata value of any type that fits `u32`; `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not an integer that fits.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.typed(key, "an integer that fits u32", |v| {
            v.as_u64().and_then(|n| u32::try_from(n).ok())
        })
    }

    /// An integer metadata value of any type that fits `u32`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not an integer that fits.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let value = self.opt_u32(key)?;
        self.required(key, "an integer that fits u32", value)
    }

    /// An integer metadata value of any type that fits `u64`; `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not a non-negative integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", MetadataValue::as_u64)
    }

    /// An integer metadata value of any type that fits `u64`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let value = self.opt_u64(key)?;
        self.required(key, "a non-negative integer", value)
    }

    /// A float metadata value (f32, f64, or an integer, converted); `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not a number.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        // Narrowing an f64 to f32 is the point of this getter.
        #[allow(clippy::cast_possible_truncation)]
        self.typed(key, "a number", |v| v.as_f64().map(|x| x as f32))
    }

    /// A float metadata value (f32, f64, or an integer, converted).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not a number.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let value = self.opt_f32(key)?;
        self.required(key, "a number", value)
    }

    /// A boolean metadata value; `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not a bool.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", MetadataValue::as_bool)
    }

    /// A boolean metadata value.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not a bool.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let value = self.opt_bool(key)?;
        self.required(key, "a bool", value)
    }

    /// A string metadata value; `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not a string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", MetadataValue::as_str)
    }

    /// A string metadata value.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let value = self.opt_str(key)?;
        self.required(key, "a string", value)
    }

    /// An array of strings; `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not an array of strings.
    pub fn opt_string_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(MetadataValue::as_str).collect()
        })
    }

    /// An array of strings (`tokenizer.ggml.tokens`).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not an array of strings.
    pub fn get_string_array(&self, key: &str) -> Result<Vec<&str>> {
        let value = self.opt_string_array(key)?;
        self.required(key, "an array of strings", value)
    }

    /// An array of integers that each fit `i32`; `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not such an array.
    pub fn opt_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        self.typed(key, "an array of integers that fit i32", |v| {
            v.as_array()?.iter().map(|x| x.as_i64().and_then(|n| i32::try_from(n).ok())).collect()
        })
    }

    /// An array of integers that each fit `i32` (`tokenizer.ggml.token_type`).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not such an array.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let value = self.opt_i32_array(key)?;
        self.required(key, "an array of integers that fit i32", value)
    }

    /// An array of integers that each fit `i64`; `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not such an array.
    pub fn opt_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        self.typed(key, "an array of integers that fit i64", |v| {
            v.as_array()?.iter().map(MetadataValue::as_i64).collect()
        })
    }

    /// An array of numbers, as f32 (`tokenizer.ggml.scores`); `None` when absent.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when the value is not an array of numbers.
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        #[allow(clippy::cast_possible_truncation)]
        self.typed(key, "an array of numbers", |v| {
            v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
        })
    }

    /// `general.architecture` (`"llama"`, `"qwen2"`, …).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when absent or not a string.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// Every tensor, in file order.
    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// Every tensor name, in file order.
    pub fn tensor_names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }

    /// One tensor's info.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The raw (still quantised) bytes of a tensor.
    ///
    /// # Errors
    /// [`Error::MissingWeight`] for an unknown name; [`Error::UnsupportedTensorType`] when the
    /// type's block layout is unknown, so the data cannot be delimited.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info_or_missing(name)?;
        self.data_of(info)
    }

    /// A tensor dequantised to `f32`, flat, in file (= torch row-major) order.
    ///
    /// # Errors
    /// [`Error::MissingWeight`] for an unknown name; [`Error::UnsupportedTensorType`] for a
    /// type without a kernel (see [`is_supported_type`]); [`Error::GgufMalformed`].
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (info, _, bytes) = self.quantised(name)?;
        let n_elements = self.addressable(info)?;
        dequant::dequantize_named(info.ggml_type, bytes, n_elements, default_threads(), &info.name)
    }

    /// A tensor dequantised to an `f32` CPU tensor in torch shape order (GGUF dims reversed):
    /// [`tensor_as`](Self::tensor_as) with `Kind::Float`, so the values are written into the
    /// tensor chunk by chunk and never exist twice.
    ///
    /// # Shapes
    /// GGUF dims `[d0, d1, …]` (fastest first) → torch shape `[…, d1, d0]`.
    ///
    /// # Errors
    /// As [`tensor_f32`](Self::tensor_f32), plus [`Error::Torch`].
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.tensor_as(name, Kind::Float)
    }

    /// A tensor dequantised straight into a CPU tensor of `kind` (`Float`, `BFloat16`, `Half`
    /// or `Double`), equal to the `f32` values of [`tensor_f32`](Self::tensor_f32) converted
    /// with `to_kind` (round to nearest even), without ever holding an f32 copy of the whole
    /// tensor: blocks are dequantised 4 Mi values at a time into f32 scratch and each chunk is
    /// copied (converted) into the result. Peak extra memory is one chunk (16 MiB), not
    /// 4 bytes per value (671 MB for Gemma 3's 262144 × 640 embedding).
    ///
    /// # Shapes
    /// As [`tensor`](Self::tensor).
    ///
    /// # Errors
    /// As [`tensor`](Self::tensor); [`Error::UnsupportedDtype`] for another `kind`.
    ///
    /// # Examples
    /// ```no_run
    /// use explain_models::GgufFile;
    /// let file = GgufFile::open("gemma-3-270m-q4_k_m.gguf")?;
    /// let embed = file.tensor_as("token_embd.weight", tch::Kind::BFloat16)?; // [262144, 640]
    /// # Ok::<(), explainability_core::Error>(())
    /// ```
    pub fn tensor_as(&self, name: &str, kind: Kind) -> Result<Tensor> {
        self.tensor_with(name, kind, default_threads())
    }

    /// [`tensor_as`](Self::tensor_as) on up to `threads` dequantisation threads.
    fn tensor_with(&self, name: &str, kind: Kind, threads: NonZeroUsize) -> Result<Tensor> {
        check_kind(name, kind)?;
        let (info, kernel, bytes) = self.quantised(name)?;
        let n_elements = self.addressable(info)?;
        kernel.check(bytes.len(), n_elements, &info.name)?;
        let values = self.dequantize_chunked(name, kernel, bytes, n_elements, kind, threads)?;
        Ok(values.f_reshape(info.shape())?)
    }

    /// Rows `rows` of a tensor, dequantised straight into a `[rows.len(), row]` CPU tensor of
    /// `kind`, a row being the tensor's fastest-varying dimension (`dims()[0]` values: one row
    /// of a `[out, in]` matrix, one token of an embedding). Only those rows' bytes are read,
    /// in chunks as [`tensor_as`](Self::tensor_as) reads a whole tensor, and their mapped pages
    /// are released after use. A model whose weights stay quantised in the map (streamed
    /// weights) takes its head a slice at a time this way.
    ///
    /// # Shapes
    /// `[rows.end - rows.start, dims()[0]]`.
    ///
    /// # Errors
    /// As [`tensor_as`](Self::tensor_as); [`Error::InvalidArgument`] for rows past the last.
    pub fn rows_as(&self, name: &str, rows: std::ops::Range<u64>, kind: Kind) -> Result<Tensor> {
        self.rows_with(name, rows, kind, default_threads())
    }

    /// [`rows_as`](Self::rows_as) on up to `threads` dequantisation threads.
    pub(crate) fn rows_with(
        &self,
        name: &str,
        rows: std::ops::Range<u64>,
        kind: Kind,
        threads: NonZeroUsize,
    ) -> Result<Tensor> {
        let layout = self.row_layout(name, kind)?;
        if rows.start > rows.end || rows.end > layout.n_rows as u64 {
            return Err(Error::invalid_argument(format!(
                "rows {}..{} of tensor {name:?}, which has {} rows",
                rows.start, rows.end, layout.n_rows
            )));
        }
        // Both ends are at most n_rows, a usize.
        let (first, end) = (rows.start as usize, rows.end as usize);
        let bytes =
            layout.bytes.get(first * layout.row_bytes..end * layout.row_bytes).unwrap_or(&[]);
        let n = end - first;
        let values = self.dequantize_chunked(
            name,
            layout.kernel,
            bytes,
            n * layout.row_values,
            kind,
            threads,
        )?;
        Ok(values.f_view([n as i64, layout.row_values as i64])?)
    }

    /// The rows `ids` of a tensor (say, the embeddings of some tokens), each dequantised from
    /// its own bytes into a `[ids.len(), row]` CPU tensor of `kind`; nothing else of the
    /// tensor is read.
    ///
    /// # Shapes
    /// `[ids.len(), dims()[0]]`.
    ///
    /// # Errors
    /// As [`rows_as`](Self::rows_as); [`Error::TokenOutOfRange`] for an id outside the rows.
    pub fn gather_rows_as(&self, name: &str, ids: &[i64], kind: Kind) -> Result<Tensor> {
        let layout = self.row_layout(name, kind)?;
        let result =
            Tensor::f_empty([ids.len() as i64, layout.row_values as i64], (kind, Device::Cpu))?;
        let mut scratch = vec![0f32; layout.row_values];
        for (i, &id) in ids.iter().enumerate() {
            let row = usize::try_from(id)
                .ok()
                .filter(|&r| r < layout.n_rows)
                .ok_or(Error::TokenOutOfRange { id, vocab_size: layout.n_rows })?;
            let bytes = layout
                .bytes
                .get(row * layout.row_bytes..(row + 1) * layout.row_bytes)
                .unwrap_or(&[]);
            // One row is too little work to share between threads.
            layout.kernel.run(bytes, &mut scratch, NonZeroUsize::MIN);
            result.f_get(i as i64)?.f_copy_(&borrowed_f32(&scratch)?)?;
        }
        Ok(result)
    }

    /// The kernel, bytes and row geometry of a tensor whose rows hold whole blocks.
    fn row_layout(&self, name: &str, kind: Kind) -> Result<RowLayout<'_>> {
        check_kind(name, kind)?;
        let (info, kernel, bytes) = self.quantised(name)?;
        let n_elements = self.addressable(info)?;
        kernel.check(bytes.len(), n_elements, &info.name)?;
        let row_values =
            info.dims.first().map_or(Ok(1), |&d| usize::try_from(d)).map_err(|_| {
                Error::GgufMalformed {
                    reason: format!("tensor {name:?} has rows too long to address"),
                }
            })?;
        if row_values == 0 || !row_values.is_multiple_of(kernel.block_elements) {
            return Err(Error::GgufMalformed {
                reason: format!(
                    "tensor {name:?}: rows of {row_values} values do not hold whole blocks of {}",
                    kernel.block_elements
                ),
            });
        }
        Ok(RowLayout {
            kernel,
            bytes,
            row_values,
            row_bytes: row_values / kernel.block_elements * kernel.block_bytes,
            n_rows: n_elements / row_values,
        })
    }

    /// Dequantises `bytes` (whole blocks, `total` values) into a flat CPU tensor of `kind`,
    /// `CONVERT_CHUNK_ELEMENTS` values at a time through f32 scratch, releasing each chunk's
    /// mapped pages once it is converted.
    fn dequantize_chunked(
        &self,
        name: &str,
        kernel: dequant::Kernel,
        bytes: &[u8],
        total: usize,
        kind: Kind,
        threads: NonZeroUsize,
    ) -> Result<Tensor> {
        let result = Tensor::f_empty([total as i64], (kind, Device::Cpu))?;
        let chunk_blocks = (CONVERT_CHUNK_ELEMENTS / kernel.block_elements).max(1);
        let chunk_elements = chunk_blocks * kernel.block_elements;
        let mut scratch = vec![0f32; chunk_elements.min(total)];
        let mut start = 0i64;
        for input in bytes.chunks(chunk_blocks * kernel.block_bytes) {
            let values = input.len() / kernel.block_bytes * kernel.block_elements;
            let Some(out) = scratch.get_mut(..values) else {
                return Err(Error::GgufMalformed {
                    reason: format!("tensor {name:?}: a chunk outgrew its scratch buffer"),
                });
            };
            kernel.run(input, out, threads);
            let len = values as i64;
            result.f_narrow(0, start, len)?.f_copy_(&borrowed_f32(out)?)?;
            start += len;
            // The chunk's quantised bytes are done with: drop their pages now rather than
            // after the whole tensor (Gemma 3's embedding alone maps 170 MiB).
            self.release_pages(input);
        }
        // Pages straddling two chunks, left by the per-chunk releases.
        self.release_pages(bytes);
        Ok(result)
    }

    /// Tells the kernel that the mapped pages of `bytes` (a slice of this file's map) are not
    /// needed any more, so that a whole-file load does not keep the file's pages in the
    /// process's resident set on top of the weights made from them (241 MiB for Gemma 3
    /// 270M). Best effort: a failure (another page size, another OS) changes nothing else.
    fn release_pages(&self, bytes: &[u8]) {
        #[cfg(target_os = "linux")]
        {
            const PAGE: usize = 4096;
            let base = self.map.as_ptr() as usize;
            let start = bytes.as_ptr() as usize - base;
            let first = start.div_ceil(PAGE) * PAGE;
            let end = (start + bytes.len()) / PAGE * PAGE;
            if end > first {
                // SAFETY: the map is a read-only shared mapping of a file (`Mmap::map`);
                // MADV_DONTNEED on it only drops page-table entries, and a later read of the
                // range faults the same bytes back in from the page cache, so every slice
                // borrowed from the map keeps seeing the file's contents.
                #[allow(unsafe_code)]
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        end - first,
                    )
                };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = bytes;
    }

    /// The info, kernel and raw bytes of a tensor whose type has a kernel.
    fn quantised(&self, name: &str) -> Result<(&GgufTensorInfo, dequant::Kernel, &[u8])> {
        let info = self.info_or_missing(name)?;
        let kernel = dequant::kernel_or_unsupported(info.ggml_type, &info.name)?;
        Ok((info, kernel, self.data_of(info)?))
    }

    /// The element count of a tensor as `usize`.
    fn addressable(&self, info: &GgufTensorInfo) -> Result<usize> {
        usize::try_from(info.n_elements).map_err(|_| Error::GgufMalformed {
            reason: format!(
                "tensor {:?} has more elements than this machine can address",
                info.name
            ),
        })
    }

    fn info_or_missing(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor_info(name).ok_or_else(|| Error::MissingWeight { name: name.to_owned() })
    }

    fn data_of(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let Some(n_bytes) = reader::data_bytes(info)? else {
            return Err(Error::UnsupportedTensorType {
                name: info.name.clone(),
                ggml_type: info.ggml_type,
                type_name: info.type_name().to_owned(),
            });
        };
        let file_len = self.map.len() as u64;
        // Checked at open; re-checked here so that no path can index out of bounds.
        let range = self
            .data_start
            .checked_add(info.offset)
            .and_then(|start| Some((start, start.checked_add(n_bytes)?)))
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        range.and_then(|r| self.map.get(r)).ok_or_else(|| Error::GgufTruncated {
            what: format!("data of tensor {:?}", info.name),
            offset: self.data_start.saturating_add(info.offset),
            needed: n_bytes,
            file_len,
        })
    }
}

/// One tensor of a shared GGUF file as a [`TensorSource`]: dequantised whole, by row ranges or
/// by gathered rows, as often as asked, on at most as many threads as libtorch's intra-op
/// setting allows (a streamed model dequantises during its forward pass, where a caller that
/// limited libtorch's threads expects the limit to hold).
pub(crate) struct GgufSource {
    file: Arc<GgufFile>,
    name: String,
}

impl GgufSource {
    /// Tensor `name` of `file`.
    pub(crate) fn new(file: Arc<GgufFile>, name: impl Into<String>) -> Self {
        Self { file, name: name.into() }
    }

    fn threads() -> NonZeroUsize {
        let torch = usize::try_from(tch::get_num_threads()).ok().and_then(NonZeroUsize::new);
        default_threads().min(torch.unwrap_or(NonZeroUsize::MIN))
    }
}

impl TensorSource for GgufSource {
    fn load(&self, kind: Kind) -> Result<Tensor> {
        self.file.tensor_with(&self.name, kind, Self::threads())
    }

    fn rows(&self, rows: std::ops::Range<i64>, kind: Kind) -> Result<Tensor> {
        let range =
            u64::try_from(rows.start).unwrap_or(u64::MAX)..u64::try_from(rows.end).unwrap_or(0);
        self.file.rows_with(&self.name, range, kind, Self::threads())
    }

    fn gather(&self, ids: &[i64], kind: Kind) -> Result<Tensor> {
        self.file.gather_rows_as(&self.name, ids, kind)
    }
}

/// Where the rows of a tensor lie in the map.
struct RowLayout<'a> {
    kernel: dequant::Kernel,
    bytes: &'a [u8],
    /// Values per row (`dims[0]`), a whole number of blocks.
    row_values: usize,
    row_bytes: usize,
    n_rows: usize,
}

/// [`Error::UnsupportedDtype`] unless GGUF tensors convert to `kind`.
fn check_kind(name: &str, kind: Kind) -> Result<()> {
    if matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half | Kind::Double) {
        return Ok(());
    }
    Err(Error::UnsupportedDtype {
        name: name.to_owned(),
        dtype: format!("{kind:?} (GGUF tensors convert to Float, BFloat16, Half, Double)"),
    })
}

/// A one-dimensional `f32` tensor viewing `values` without copying them: the per-chunk copy
/// `Tensor::from_slice` would make is a 16 MiB allocation per chunk, and glibc keeps such
/// blocks on its heap once its mmap threshold has grown, which left ≈ 110 MiB of free but
/// resident heap behind Gemma 3's embedding.
fn borrowed_f32(values: &[f32]) -> Result<Tensor> {
    let len = i64::try_from(values.len()).map_err(|_| Error::GgufMalformed {
        reason: "a dequantisation chunk has more values than a tensor can index".to_owned(),
    })?;
    // SAFETY: the tensor views `values` (contiguous, initialised f32, `len` of them) and the
    // caller uses it only while `values` is borrowed: it is consumed by one `copy_` into
    // tensor storage of its own and dropped before the borrow ends. libtorch never frees or
    // resizes a blob tensor's memory.
    #[allow(unsafe_code)]
    let view = unsafe {
        Tensor::f_from_blob(values.as_ptr().cast::<u8>(), &[len], &[1], Kind::Float, Device::Cpu)
    };
    Ok(view?)
}
