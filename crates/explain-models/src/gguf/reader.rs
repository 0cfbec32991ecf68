//! Bounded parsing of a GGUF header: magic, version, metadata key/values, tensor infos and the
//! start of the data section.
//!
//! Every count and length read from the file is checked against the bytes that remain before
//! anything is allocated, and every offset is computed with checked arithmetic, so a hostile
//! or truncated file fails fast with a typed error and never makes the parser panic or
//! allocate more than a small multiple of the file size.
//!
//! Layout (all integers little-endian; GGUF v2 and v3 share it):
//! `"GGUF" u32 version, u64 tensor_count, u64 kv_count`, then `kv_count` × `(string key,
//! u32 value_type, value)`, then `tensor_count` × `(string name, u32 n_dims, u64 dims[n_dims],
//! u32 ggml_type, u64 offset)`, padding to `general.alignment` (default 32), tensor data.
//! A string is `u64 length` + UTF-8 bytes; an array is `u32 element_type, u64 count, elements`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use explainability_core::{Error, Result};

use super::GgufTensorInfo;
use super::metadata::MetadataValue;
use super::types::block_layout;

const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;
/// `GGML_MAX_DIMS`.
pub(crate) const MAX_DIMS: u32 = 4;
/// Smallest possible encoding of a metadata entry: empty key (8) + type (4) + a u8 value (1).
const MIN_KV_BYTES: u64 = 13;
/// Smallest possible encoding of a tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Deepest nesting of metadata arrays accepted (real files nest at most once).
const MAX_ARRAY_DEPTH: usize = 8;
/// Most metadata array elements accepted in one file, all arrays together. Each element costs
/// 32 bytes in memory however small its encoding, so this caps what a hostile file can make
/// us allocate (~256 MiB); the largest real vocabularies hold ~1-2 million elements in total.
pub(crate) const MAX_METADATA_ELEMENTS: u64 = 1 << 23;
/// Most tensors or metadata entries accepted in one file. A count that passes the file-size
/// check can still be absurd for a large file (a 10 GB file "holds" 400 M minimal tensor
/// infos, ~30 GB in memory); real files hold at most a few thousand of each.
pub(crate) const MAX_ENTRIES: u64 = 1 << 20;
/// Capacity reserved up front for tensor infos; larger counts grow as entries are parsed.
const INITIAL_CAPACITY: u64 = 4096;

/// GGUF metadata value type ids.
mod value_type {
    pub(super) const U8: u32 = 0;
    pub(super) const I8: u32 = 1;
    pub(super) const U16: u32 = 2;
    pub(super) const I16: u32 = 3;
    pub(super) const U32: u32 = 4;
    pub(super) const I32: u32 = 5;
    pub(super) const F32: u32 = 6;
    pub(super) const BOOL: u32 = 7;
    pub(super) const STRING: u32 = 8;
    pub(super) const ARRAY: u32 = 9;
    pub(super) const U64: u32 = 10;
    pub(super) const I64: u32 = 11;
    pub(super) const F64: u32 = 12;
}

/// Smallest number of bytes one value of a type occupies, or `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<u64> {
    use value_type::*;
    Some(match ty {
        U8 | I8 | BOOL => 1,
        U16 | I16 => 2,
        U32 | I32 | F32 => 4,
        U64 | I64 | F64 | STRING => 8,
        ARRAY => 12,
        _ => return None,
    })
}

/// Everything the header says.
pub(crate) struct Header {
    pub(crate) version: u32,
    pub(crate) metadata: BTreeMap<String, MetadataValue>,
    pub(crate) tensors: Vec<GgufTensorInfo>,
    /// Index into `tensors` by name.
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) alignment: u64,
    pub(crate) data_start: u64,
}

/// A read position over the file's bytes; every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Metadata array elements still allowed (see [`MAX_METADATA_ELEMENTS`]).
    element_budget: u64,
}

impl<'a> Cursor<'a> {
    fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    fn truncated(&self, what: impl Into<String>, needed: u64) -> Error {
        Error::GgufTruncated {
            what: what.into(),
            offset: self.offset(),
            needed,
            file_len: self.file_len(),
        }
    }

    fn implausible(&self, what: impl Into<String>, value: u64) -> Error {
        Error::GgufImplausible { what: what.into(), value, file_len: self.file_len() }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what(), n));
        }
        // n <= remaining <= usize::MAX, so the conversion and the addition cannot fail.
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n));
        let slice = end.and_then(|end| self.bytes.get(self.pos..end).map(|s| (s, end)));
        let Some((slice, end)) = slice else {
            return Err(self.truncated(what(), n));
        };
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let slice = self.take(N as u64, what)?;
        <[u8; N]>::try_from(slice).map_err(|_| self.truncated(what(), N as u64))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Checks that `count` items of at least `min_bytes` each can still follow.
    fn check_count(&self, count: u64, min_bytes: u64, what: &dyn Fn() -> String) -> Result<()> {
        match count.checked_mul(min_bytes) {
            Some(needed) if needed <= self.remaining() => Ok(()),
            Some(needed) if needed <= self.file_len() => Err(self.truncated(what(), needed)),
            _ => Err(self.implausible(what(), count)),
        }
    }

    /// A GGUF string: u64 length, then that many UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        self.check_count(len, 1, &|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::GgufMalformed { reason: format!("{} is not valid UTF-8", what()) })
    }

    /// One metadata value of type `ty`; arrays recurse up to [`MAX_ARRAY_DEPTH`].
    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetadataValue> {
        use value_type::*;
        let what = || format!("value of metadata key {key:?}");
        Ok(match ty {
            U8 => MetadataValue::U8(u8::from_le_bytes(self.array(&what)?)),
            I8 => MetadataValue::I8(i8::from_le_bytes(self.array(&what)?)),
            U16 => MetadataValue::U16(u16::from_le_bytes(self.array(&what)?)),
            I16 => MetadataValue::I16(i16::from_le_bytes(self.array(&what)?)),
            U32 => MetadataValue::U32(u32::from_le_bytes(self.array(&what)?)),
            I32 => MetadataValue::I32(i32::from_le_bytes(self.array(&what)?)),
            F32 => MetadataValue::F32(f32::from_le_bytes(self.array(&what)?)),
            U64 => MetadataValue::U64(u64::from_le_bytes(self.array(&what)?)),
            I64 => MetadataValue::I64(i64::from_le_bytes(self.array(&what)?)),
            F64 => MetadataValue::F64(f64::from_le_bytes(self.array(&what)?)),
            BOOL => MetadataValue::Bool(u8::from_le_bytes(self.array(&what)?) != 0),
            STRING => MetadataValue::String(self.string(&what)?),
            ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::GgufMalformed {
                        reason: format!(
                            "metadata key {key:?} nests arrays deeper than {MAX_ARRAY_DEPTH}"
                        ),
                    });
                }
                let element_type = self.u32(&|| format!("array element type of {key:?}"))?;
                let min = min_value_bytes(element_type).ok_or_else(|| Error::GgufMalformed {
                    reason: format!(
                        "metadata array {key:?} has unknown element type {element_type}"
                    ),
                })?;
                let count_what = || format!("element count of metadata array {key:?}");
                let count = self.u64(&count_what)?;
                self.check_count(count, min, &count_what)?;
                if count > self.element_budget {
                    return Err(Error::GgufMalformed {
                        reason: format!(
                            "metadata arrays hold more than {MAX_METADATA_ELEMENTS} elements in \
                             total (array {key:?} alone claims {count})"
                        ),
                    });
                }
                self.element_budget -= count;
                // count <= the remaining bytes and the element budget: a bounded allocation.
                let mut values = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
                for _ in 0..count {
                    values.push(self.value(element_type, key, depth + 1)?);
                }
                MetadataValue::Array(values)
            }
            other => {
                return Err(Error::GgufMalformed {
                    reason: format!("metadata key {key:?} has unknown value type {other}"),
                });
            }
        })
    }
}

/// Parses the header of a GGUF file held in `bytes`; `path` only names the file in errors.
pub(crate) fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let mut cur = Cursor { bytes, pos: 0, element_budget: MAX_METADATA_ELEMENTS };
    let magic: [u8; 4] = cur.array(&|| "magic bytes".to_owned())?;
    if magic != MAGIC {
        return Err(Error::GgufBadMagic { path: path.to_path_buf(), found: magic });
    }
    let version = cur.u32(&|| "version".to_owned())?;
    if version != 2 && version != 3 {
        return Err(Error::GgufUnsupportedVersion { version });
    }
    let tensor_count = cur.u64(&|| "tensor count".to_owned())?;
    let kv_count = cur.u64(&|| "metadata count".to_owned())?;
    // Fail fast on counts no file of this size can hold, before any allocation.
    if tensor_count.checked_mul(MIN_TENSOR_INFO_BYTES).is_none_or(|n| n > cur.remaining()) {
        return Err(cur.implausible("tensor_count", tensor_count));
    }
    if kv_count.checked_mul(MIN_KV_BYTES).is_none_or(|n| n > cur.remaining()) {
        return Err(cur.implausible("kv_count", kv_count));
    }
    for (what, count) in [("tensors", tensor_count), ("metadata entries", kv_count)] {
        if count > MAX_ENTRIES {
            return Err(Error::GgufMalformed {
                reason: format!(
                    "the header claims {count} {what}, more than the {MAX_ENTRIES} this reader \
                     accepts"
                ),
            });
        }
    }

    let mut metadata = BTreeMap::new();
    for index in 0..kv_count {
        let key = cur.string(&|| format!("key of metadata entry {index}"))?;
        let ty = cur.u32(&|| format!("value type of metadata key {key:?}"))?;
        let value = cur.value(ty, &key, 0)?;
        if metadata.contains_key(&key) {
            return Err(Error::GgufMalformed { reason: format!("duplicate metadata key {key:?}") });
        }
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(value) => match value.as_u64() {
            Some(a) if a > 0 && a <= u64::from(u32::MAX) && a.is_power_of_two() => a,
            _ => {
                return Err(Error::GgufMalformed {
                    reason: format!(
                        "general.alignment must be a power of two that fits u32, found {value:?}"
                    ),
                });
            }
        },
    };

    cur.check_count(tensor_count, MIN_TENSOR_INFO_BYTES, &|| "tensor infos".to_owned())?;
    let capacity = usize::try_from(tensor_count.min(INITIAL_CAPACITY)).unwrap_or(0);
    let mut tensors = Vec::with_capacity(capacity);
    let mut by_name = HashMap::with_capacity(capacity);
    for index in 0..tensor_count {
        let info = tensor_info(&mut cur, index)?;
        if by_name.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(Error::GgufMalformed {
                reason: format!("duplicate tensor name {:?}", info.name),
            });
        }
        tensors.push(info);
    }

    let header_end = cur.offset();
    let data_start = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| cur.implausible("data section start", header_end))?;
    check_tensor_ranges(&tensors, data_start, alignment, cur.file_len())?;
    Ok(Header { version, metadata, tensors, by_name, alignment, data_start })
}

/// One tensor info: name, dims (fastest-first), type, offset relative to the data section.
fn tensor_info(cur: &mut Cursor<'_>, index: u64) -> Result<GgufTensorInfo> {
    let name = cur.string(&|| format!("name of tensor {index}"))?;
    let n_dims = cur.u32(&|| format!("n_dims of tensor {name:?}"))?;
    if n_dims > MAX_DIMS {
        return Err(Error::GgufMalformed {
            reason: format!(
                "tensor {name:?} has {n_dims} dimensions (GGML_MAX_DIMS is {MAX_DIMS})"
            ),
        });
    }
    let mut dims = Vec::with_capacity(MAX_DIMS as usize);
    let mut n_elements: u64 = 1;
    for axis in 0..n_dims {
        let dim = cur.u64(&|| format!("dimension {axis} of tensor {name:?}"))?;
        // Torch shapes are i64; a product beyond i64 cannot describe real data either.
        n_elements = n_elements
            .checked_mul(dim)
            .filter(|&n| i64::try_from(n).is_ok() && i64::try_from(dim).is_ok())
            .ok_or_else(|| cur.implausible(format!("element count of tensor {name:?}"), dim))?;
        dims.push(dim);
    }
    let ggml_type = cur.u32(&|| format!("type of tensor {name:?}"))?;
    let offset = cur.u64(&|| format!("data offset of tensor {name:?}"))?;
    Ok(GgufTensorInfo { name, dims, ggml_type, offset, n_elements })
}

/// Checks that every tensor's data lies inside the file, is aligned, and overlaps no other.
fn check_tensor_ranges(
    tensors: &[GgufTensorInfo],
    data_start: u64,
    alignment: u64,
    file_len: u64,
) -> Result<()> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for info in tensors {
        let name = &info.name;
        if !info.offset.is_multiple_of(alignment) {
            return Err(Error::GgufMalformed {
                reason: format!(
                    "tensor {name:?} starts at data offset {}, not a multiple of the alignment {alignment}",
                    info.offset
                ),
            });
        }
        let implausible_offset = || Error::GgufImplausible {
            what: format!("data offset of tensor {name:?}"),
            value: info.offset,
            file_len,
        };
        if info.offset > file_len {
            return Err(implausible_offset());
        }
        let start = data_start.checked_add(info.offset).ok_or_else(implausible_offset)?;
        // Tensors of types without a known layout cannot be sized; `tensor()` rejects them.
        let n_bytes = data_bytes(info)?;
        if start > file_len {
            // A plausible offset, but the file ends before the data section gets there.
            return Err(Error::GgufTruncated {
                what: format!("data of tensor {name:?}"),
                offset: start,
                needed: n_bytes.unwrap_or(0),
                file_len,
            });
        }
        let Some(n_bytes) = n_bytes else { continue };
        let end = start.checked_add(n_bytes).filter(|&end| end <= file_len).ok_or_else(|| {
            Error::GgufTruncated {
                what: format!("data of tensor {name:?}"),
                offset: start,
                needed: n_bytes,
                file_len,
            }
        })?;
        if n_bytes > 0 {
            ranges.push((start, end, name));
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = pair
            && start_b < end_a
        {
            return Err(Error::GgufMalformed {
                reason: format!("the data of tensors {a:?} and {b:?} overlap"),
            });
        }
    }
    Ok(())
}

/// Bytes of a tensor's data, `None` when its type's layout is unknown.
///
/// # Errors
/// [`Error::GgufMalformed`] when a row is not a whole number of blocks (llama.cpp's rule;
/// it implies the element count is a multiple of the block size).
pub(crate) fn data_bytes(info: &GgufTensorInfo) -> Result<Option<u64>> {
    let Some((block_elements, block_bytes)) = block_layout(info.ggml_type) else {
        return Ok(None);
    };
    let row = info.dims.first().copied().unwrap_or(1);
    if !row.is_multiple_of(block_elements) || !info.n_elements.is_multiple_of(block_elements) {
        return Err(Error::GgufMalformed {
            reason: format!(
                "tensor {:?} of type {} has rows of {row} elements, not a multiple of its block \
                 size {block_elements}",
                info.name,
                super::types::ggml_type_name(info.ggml_type),
            ),
        });
    }
    // n_elements fits i64, but blocks × bytes per block can still overflow for absurd shapes.
    (info.n_elements / block_elements).checked_mul(block_bytes).map(Some).ok_or_else(|| {
        Error::GgufMalformed { reason: format!("tensor {:?} is too large to address", info.name) }
    })
}
