//! GGUF v2/v3 reader: header, metadata, tensor infos and dequantisation, on a memory map.
//!
//! Every count and length read from the file is checked against the bytes that remain before
//! anything is allocated, so a hostile or truncated header fails fast with a typed error.
//! Tensor data ranges are checked with overflow-safe arithmetic. Supported tensor types:
//! F32, F16, BF16, Q8_0, Q4_0, Q4_1; any other is [`Error::UnsupportedTensorType`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use explainability_core::{Error, Result};
use tch::{Kind, Tensor};

const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays accepted in metadata.
const MAX_ARRAY_DEPTH: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
    /// Array of values (all of one type).
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// The value as an unsigned integer, when it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(u64::from(v)),
            MetadataValue::U16(v) => Some(u64::from(v)),
            MetadataValue::U32(v) => Some(u64::from(v)),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetadataValue::I8(v) => Some(i64::from(v)),
            MetadataValue::I16(v) => Some(i64::from(v)),
            MetadataValue::I32(v) => Some(i64::from(v)),
            MetadataValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(f64::from(v)),
            MetadataValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// GGML tensor types this reader knows by name.
fn ggml_type_name(t: u32) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        _ => "unknown",
    }
}

/// The supported storage types: (elements per block, bytes per block).
fn block_layout(t: u32) -> Option<(u64, u64)> {
    match t {
        0 => Some((1, 4)),   // F32
        1 => Some((1, 2)),   // F16
        30 => Some((1, 2)),  // BF16
        8 => Some((32, 34)), // Q8_0: f16 d + 32 × i8
        2 => Some((32, 18)), // Q4_0: f16 d + 16 bytes
        3 => Some((32, 20)), // Q4_1: f16 d + f16 m + 16 bytes
        _ => None,
    }
}

/// One tensor's entry in the GGUF header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    name: String,
    /// Dimensions as stored (fastest-varying first).
    dims: Vec<u64>,
    ggml_type: u32,
    /// Offset relative to the start of the data section.
    offset: u64,
}

impl GgufTensorInfo {
    /// Tensor name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Shape in torch order (slowest-varying first; GGUF stores the reverse).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
    /// GGML type id.
    pub fn ggml_type(&self) -> u32 {
        self.ggml_type
    }
    /// GGML type name (`Q4_1`, …).
    pub fn type_name(&self) -> &'static str {
        ggml_type_name(self.ggml_type)
    }
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<GgufTensorInfo>,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// Bounded little-endian cursor over the file bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::GgufTruncated {
                what: what.to_owned(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.bytes.len() as u64,
            });
        }
        let n = n as usize;
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let slice = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_item_bytes` each, checked against what remains.
    fn count(&mut self, what: &str, min_item_bytes: u64) -> Result<u64> {
        let n = self.u64(what)?;
        if n.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(Error::GgufImplausible {
                what: what.to_owned(),
                value: n,
                file_len: self.bytes.len() as u64,
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(Error::GgufImplausible {
                what: format!("length of {what}"),
                value: len,
                file_len: self.bytes.len() as u64,
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::GgufMalformed { reason: format!("{what} is not valid UTF-8") })
    }

    fn value(&mut self, value_type: u32, what: &str, depth: usize) -> Result<MetadataValue> {
        Ok(match value_type {
            0 => MetadataValue::U8(self.u8(what)?),
            1 => MetadataValue::I8(self.u8(what)? as i8),
            2 => MetadataValue::U16(self.u16(what)?),
            3 => MetadataValue::I16(self.u16(what)? as i16),
            4 => MetadataValue::U32(self.u32(what)?),
            5 => MetadataValue::I32(self.u32(what)? as i32),
            6 => MetadataValue::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.u8(what)? {
                0 => MetadataValue::Bool(false),
                1 => MetadataValue::Bool(true),
                b => {
                    return Err(Error::GgufMalformed {
                        reason: format!("{what}: boolean byte {b} is neither 0 nor 1"),
                    });
                }
            },
            8 => MetadataValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::GgufMalformed {
                        reason: format!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}"),
                    });
                }
                let item_type = self.u32(what)?;
                let min_item = min_value_size(item_type).ok_or_else(|| Error::GgufMalformed {
                    reason: format!("{what}: unknown array item type {item_type}"),
                })?;
                let n = self.count(&format!("element count of {what}"), min_item)?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(item_type, what, depth + 1)?);
                }
                MetadataValue::Array(items)
            }
            10 => MetadataValue::U64(self.u64(what)?),
            11 => MetadataValue::I64(self.u64(what)? as i64),
            12 => MetadataValue::F64(f64::from_bits(self.u64(what)?)),
            other => {
                return Err(Error::GgufMalformed {
                    reason: format!("{what}: unknown metadata value type {other}"),
                });
            }
        })
    }
}

/// Smallest encoded size of a value of a type (used to bound counts).
fn min_value_size(value_type: u32) -> Option<u64> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        8 => Some(8),     // u64 length, possibly empty
        9 => Some(4 + 8), // item type + count
        10..=12 => Some(8),
        _ => None,
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file (the tensor data stays mapped, not read).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::GgufBadMagic`], [`Error::GgufUnsupportedVersion`],
    /// [`Error::GgufTruncated`], [`Error::GgufImplausible`], [`Error::GgufMalformed`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only; like every mmap-based model loader we rely on the file
        // not being truncated by another process while it is open.
        #[allow(unsafe_code)]
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (version, metadata, tensors, data_start) = parse(&mmap, &path)?;
        Ok(Self { path, mmap, version, metadata, tensors, data_start })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// GGUF format version.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// All metadata.
    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }
    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    fn missing(key: &str, expected: &str) -> Error {
        Error::MissingMetadata { key: key.to_owned(), expected: expected.to_owned() }
    }

    /// An optional unsigned integer that fits u32.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type or out of range.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| Self::missing(key, "an unsigned 32-bit integer")),
        }
    }
    /// A required unsigned integer that fits u32.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.opt_u32(key)?.ok_or_else(|| Self::missing(key, "an unsigned 32-bit integer"))
    }
    /// An optional float.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().map(|v| Some(v as f32)).ok_or_else(|| Self::missing(key, "a number"))
            }
        }
    }
    /// A required float.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?.ok_or_else(|| Self::missing(key, "a number"))
    }
    /// An optional string.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| Self::missing(key, "a string")),
        }
    }
    /// A required string.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.opt_str(key)?.ok_or_else(|| Self::missing(key, "a string"))
    }
    /// A required array of strings.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn get_string_array(&self, key: &str) -> Result<Vec<&str>> {
        let items = self
            .get(key)
            .and_then(MetadataValue::as_array)
            .ok_or_else(|| Self::missing(key, "an array of strings"))?;
        items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| Self::missing(key, "an array of strings")))
            .collect()
    }
    /// An optional array of integers.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] when present with another type.
    pub fn opt_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(value) = self.get(key) else { return Ok(None) };
        let items = value.as_array().ok_or_else(|| Self::missing(key, "an array of integers"))?;
        items
            .iter()
            .map(|v| v.as_i64().ok_or_else(|| Self::missing(key, "an array of integers")))
            .collect::<Result<Vec<i64>>>()
            .map(Some)
    }
    /// `general.architecture`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos in file order.
    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }
    /// Names of all tensors in file order.
    pub fn tensor_names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }
    /// The info of one tensor.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Dequantises a tensor to an f32 CPU tensor in torch shape order.
    ///
    /// # Errors
    /// [`Error::MissingWeight`], [`Error::UnsupportedTensorType`], [`Error::GgufMalformed`].
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info =
            self.tensor_info(name).ok_or_else(|| Error::MissingWeight { name: name.to_owned() })?;
        let (start, len) = self.data_range(info)?;
        let bytes = &self.mmap[start..start + len];
        let values = dequantize(info, bytes)?;
        Ok(Tensor::f_from_slice(&values)?.f_reshape(info.shape())?.f_to_kind(Kind::Float)?)
    }

    fn data_range(&self, info: &GgufTensorInfo) -> Result<(usize, usize)> {
        let (block_elems, block_bytes) =
            block_layout(info.ggml_type).ok_or_else(|| Error::UnsupportedTensorType {
                name: info.name.clone(),
                ggml_type: info.ggml_type,
                type_name: info.type_name().to_owned(),
            })?;
        let n = info.n_elements();
        if !n.is_multiple_of(block_elems) {
            return Err(Error::GgufMalformed {
                reason: format!(
                    "tensor {} has {n} elements, not a multiple of its {}-element blocks",
                    info.name, block_elems
                ),
            });
        }
        let len = (n / block_elems).checked_mul(block_bytes);
        let start = self.data_start.checked_add(info.offset);
        let file_len = self.mmap.len() as u64;
        match (start, len) {
            (Some(start), Some(len))
                if start.checked_add(len).is_some_and(|end| end <= file_len) =>
            {
                Ok((start as usize, len as usize))
            }
            _ => Err(Error::GgufTruncated {
                what: format!("data of tensor {}", info.name),
                offset: start.unwrap_or(u64::MAX),
                needed: len.unwrap_or(u64::MAX),
                file_len,
            }),
        }
    }
}

type Parsed = (u32, BTreeMap<String, MetadataValue>, Vec<GgufTensorInfo>, u64);

fn parse(bytes: &[u8], path: &Path) -> Result<Parsed> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = if bytes.len() >= 4 {
        c.array("magic")?
    } else {
        let mut found = [0u8; 4];
        found[..bytes.len()].copy_from_slice(bytes);
        if bytes.len() < 4 && bytes == &MAGIC[..bytes.len()] {
            return Err(Error::GgufTruncated {
                what: "magic".into(),
                offset: 0,
                needed: 4,
                file_len: bytes.len() as u64,
            });
        }
        found
    };
    if magic != MAGIC {
        return Err(Error::GgufBadMagic { path: path.to_path_buf(), found: magic });
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::GgufUnsupportedVersion { version });
    }
    // Each tensor info needs at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset)
    // bytes, each key/value pair at least 8 (key length) + 4 (type) + 1 bytes.
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;
    let file_len = bytes.len() as u64;
    if kv_count.saturating_mul(13) > c.remaining() {
        return Err(Error::GgufImplausible {
            what: "metadata count".into(),
            value: kv_count,
            file_len,
        });
    }
    if tensor_count.saturating_mul(24) > c.remaining() {
        return Err(Error::GgufImplausible {
            what: "tensor count".into(),
            value: tensor_count,
            file_len,
        });
    }
    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = c.string(&format!("metadata key #{i}"))?;
        let value_type = c.u32(&format!("type of metadata {key}"))?;
        let value = c.value(value_type, &format!("metadata {key}"), 0)?;
        metadata.insert(key, value);
    }
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = c.string(&format!("tensor name #{i}"))?;
        let n_dims = c.u32(&format!("dimension count of {name}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::GgufMalformed {
                reason: format!("tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let d = c.u64(&format!("dimensions of {name}"))?;
            elements = elements.checked_mul(d).filter(|&e| e <= file_len.saturating_mul(8)).ok_or(
                Error::GgufImplausible {
                    what: format!("element count of tensor {name}"),
                    value: d,
                    file_len,
                },
            )?;
            dims.push(d);
        }
        let ggml_type = c.u32(&format!("type of {name}"))?;
        let offset = c.u64(&format!("offset of {name}"))?;
        tensors.push(GgufTensorInfo { name, dims, ggml_type, offset });
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(Error::GgufMalformed {
                    reason: format!("general.alignment {v:?} is not a power of two"),
                });
            }
        },
    };
    let pos = c.pos as u64;
    let data_start = pos.div_ceil(alignment) * alignment;
    if data_start > file_len && tensor_count > 0 {
        return Err(Error::GgufTruncated {
            what: "tensor data section".into(),
            offset: data_start,
            needed: 1,
            file_len,
        });
    }
    Ok((version, metadata, tensors, data_start))
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantises `bytes` (exactly the tensor's data) to f32 values.
fn dequantize(info: &GgufTensorInfo, bytes: &[u8]) -> Result<Vec<f32>> {
    let n = info.n_elements() as usize;
    let mut out = Vec::with_capacity(n);
    match info.ggml_type {
        0 => {
            out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
        1 => out.extend(bytes.chunks_exact(2).map(|b| f16_at(b, 0))),
        30 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
        8 => {
            for block in bytes.chunks_exact(34) {
                let d = f16_at(block, 0);
                out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        2 => {
            for block in bytes.chunks_exact(18) {
                let d = f16_at(block, 0);
                let qs = &block[2..];
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0f) - 8.0)));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - 8.0)));
            }
        }
        3 => {
            for block in bytes.chunks_exact(20) {
                let d = f16_at(block, 0);
                let m = f16_at(block, 2);
                let qs = &block[4..];
                out.extend(qs.iter().map(|&q| d * f32::from(q & 0x0f) + m));
                out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
            }
        }
        other => {
            return Err(Error::UnsupportedTensorType {
                name: info.name.clone(),
                ggml_type: other,
                type_name: ggml_type_name(other).to_owned(),
            });
        }
    }
    if out.len() != n {
        return Err(Error::GgufMalformed {
            reason: format!(
                "tensor {} dequantised to {} values, expected {n}",
                info.name,
                out.len()
            ),
        });
    }
    Ok(out)
}
