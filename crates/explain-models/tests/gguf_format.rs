//! The GGUF reader on hand-built files (every supported tensor type with exact values, every
//! malformed header the issue names) and on the real SmolLM2 file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use explain_models::gguf::MetadataValue;
use explain_models::{GgufFile, smollm2_gguf_path};
use explainability_core::Error;
use half::f16;

/// A minimal GGUF writer for tests.
#[derive(Default)]
struct Writer {
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    version: u32,
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

impl Writer {
    fn new() -> Self {
        Self { version: 3, ..Self::default() }
    }
    fn u32(mut self, key: &str, v: u32) -> Self {
        self.kv.push((key.into(), 4, v.to_le_bytes().to_vec()));
        self
    }
    fn f32(mut self, key: &str, v: f32) -> Self {
        self.kv.push((key.into(), 6, v.to_le_bytes().to_vec()));
        self
    }
    fn string(mut self, key: &str, v: &str) -> Self {
        self.kv.push((key.into(), 8, gguf_string(v)));
        self
    }
    fn strings(mut self, key: &str, v: &[&str]) -> Self {
        let mut bytes = 8u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(v.len() as u64).to_le_bytes());
        for s in v {
            bytes.extend(gguf_string(s));
        }
        self.kv.push((key.into(), 9, bytes));
        self
    }
    fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.into(), dims.to_vec(), ggml_type, data));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, t, v) in &self.kv {
            out.extend(gguf_string(k));
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(v);
        }
        // Offsets relative to the data section, each tensor padded to the 32-byte alignment.
        let mut offset = 0u64;
        for (name, dims, ty, data) in &self.tensors {
            out.extend(gguf_string(name));
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset += (data.len() as u64).div_ceil(32) * 32;
        }
        let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(32) * 32, 0);
        pad(&mut out);
        for (_, _, _, data) in &self.tensors {
            out.extend_from_slice(data);
            pad(&mut out);
        }
        out
    }
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.bytes()).unwrap();
        path
    }
}

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_bits().to_le_bytes()
}

/// Q4_1 block: d = 0.5, m = −1, nibbles q_i = i mod 16 → w_i = 0.5·q_i − 1.
fn q4_1_block() -> (Vec<u8>, Vec<f32>) {
    let q: Vec<u8> = (0..32).map(|i| (i * 7 % 16) as u8).collect();
    let mut b = f16_bytes(0.5).to_vec();
    b.extend(f16_bytes(-1.0));
    for i in 0..16 {
        b.push(q[i] | (q[i + 16] << 4));
    }
    (b, q.iter().map(|&q| 0.5 * f32::from(q) - 1.0).collect())
}

/// Q4_0 block: d = 0.25, w_i = 0.25·(q_i − 8).
fn q4_0_block() -> (Vec<u8>, Vec<f32>) {
    let q: Vec<u8> = (0..32).map(|i| (15 - i % 16) as u8).collect();
    let mut b = f16_bytes(0.25).to_vec();
    for i in 0..16 {
        b.push(q[i] | (q[i + 16] << 4));
    }
    (b, q.iter().map(|&q| 0.25 * (f32::from(q) - 8.0)).collect())
}

/// Q8_0 block: d = 0.125, w_i = 0.125·q_i for signed bytes.
fn q8_0_block() -> (Vec<u8>, Vec<f32>) {
    let q: Vec<i8> = (0..32).map(|i| (i as i8 - 16) * 7).collect();
    let mut b = f16_bytes(0.125).to_vec();
    b.extend(q.iter().map(|&x| x as u8));
    (b, q.iter().map(|&q| 0.125 * f32::from(q)).collect())
}

fn values(path: &Path, name: &str) -> Vec<f32> {
    let file = GgufFile::open(path).unwrap();
    let t = file.tensor(name).unwrap();
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn every_supported_type_dequantises_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let f32_vals: Vec<f32> = vec![1.5, -2.25, 0.0, 3.0e-5, 7.0, -8.5];
    let f32_bytes: Vec<u8> = f32_vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_vals: Vec<f32> = vec![0.5, -1.0, 65504.0, 6.1035156e-5];
    let f16_data: Vec<u8> = f16_vals.iter().flat_map(|&v| f16_bytes(v)).collect();
    let bf16_vals: Vec<f32> = vec![1.0, -3.5, 1.0e30];
    let bf16_data: Vec<u8> =
        bf16_vals.iter().flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes()).collect();
    let (q41, q41_vals) = q4_1_block();
    let (q40, q40_vals) = q4_0_block();
    let (q80, q80_vals) = q8_0_block();
    let path = Writer::new()
        .string("general.architecture", "llama")
        .tensor("f32", &[3, 2], 0, f32_bytes)
        .tensor("f16", &[4], 1, f16_data)
        .tensor("bf16", &[3], 30, bf16_data)
        .tensor("q4_1", &[32], 3, q41)
        .tensor("q4_0", &[32], 2, q40)
        .tensor("q8_0", &[32], 8, q80)
        .write(dir.path(), "types.gguf");
    assert_eq!(values(&path, "f32"), f32_vals);
    assert_eq!(values(&path, "f16"), f16_vals);
    assert_eq!(values(&path, "bf16"), vec![1.0, -3.5, half::bf16::from_f32(1.0e30).to_f32()]);
    assert_eq!(values(&path, "q4_1"), q41_vals);
    assert_eq!(values(&path, "q4_0"), q40_vals);
    assert_eq!(values(&path, "q8_0"), q80_vals);
    // GGUF dims are fastest-first: [3, 2] is a torch [2, 3].
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.tensor("f32").unwrap().size(), vec![2, 3]);
    assert_eq!(file.tensor_info("f32").unwrap().shape(), vec![2, 3]);
    assert_eq!(file.tensor_info("q4_1").unwrap().type_name(), "Q4_1");
}

#[test]
fn metadata_types_and_typed_getters() {
    let dir = tempfile::tempdir().unwrap();
    let path = Writer::new()
        .string("general.architecture", "llama")
        .u32("llama.block_count", 30)
        .f32("llama.rope.freq_base", 100000.0)
        .strings("tokenizer.ggml.tokens", &["a", "b", "ab"])
        .write(dir.path(), "meta.gguf");
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(file.get_string_array("tokenizer.ggml.tokens").unwrap(), vec!["a", "b", "ab"]);
    assert_eq!(file.get("llama.block_count"), Some(&MetadataValue::U32(30)));
    assert!(file.opt_u32("absent").unwrap().is_none());
    assert!(matches!(
        file.get_u32("general.architecture"),
        Err(Error::MissingMetadata { key, .. }) if key == "general.architecture"
    ));
    assert!(matches!(
        file.get_u32("llama.context_length"),
        Err(Error::MissingMetadata { key, .. }) if key == "llama.context_length"
    ));
}

#[test]
fn unsupported_tensor_type_names_tensor_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = Writer::new()
        .tensor("blk.0.ffn_up.weight", &[256], 12, vec![0u8; 144])
        .write(dir.path(), "q4k.gguf");
    let file = GgufFile::open(&path).unwrap();
    let err = file.tensor("blk.0.ffn_up.weight").unwrap_err();
    assert!(matches!(
        &err,
        Error::UnsupportedTensorType { name, ggml_type: 12, type_name }
            if name == "blk.0.ffn_up.weight" && type_name == "Q4_K"
    ));
    assert!(err.to_string().contains("Q4_K"));
}

#[test]
fn bad_magic_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::new().bytes();
    w[..4].copy_from_slice(b"GGML");
    let p = dir.path().join("magic.gguf");
    std::fs::write(&p, &w).unwrap();
    assert!(
        matches!(GgufFile::open(&p), Err(Error::GgufBadMagic { found, .. }) if &found == b"GGML")
    );
    let mut v = Writer::new();
    v.version = 7;
    let p = v.write(dir.path(), "v7.gguf");
    assert!(matches!(GgufFile::open(&p), Err(Error::GgufUnsupportedVersion { version: 7 })));
    let p = dir.path().join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(GgufFile::open(&p), Err(Error::GgufTruncated { .. })));
    assert!(matches!(
        GgufFile::open(dir.path().join("absent.gguf")),
        Err(Error::Io { path, .. }) if path.ends_with("absent.gguf")
    ));
}

#[test]
fn truncation_anywhere_is_a_typed_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (q41, _) = q4_1_block();
    let full = Writer::new()
        .string("general.architecture", "llama")
        .strings("tokenizer.ggml.tokens", &["x", "yy", "zzz"])
        .tensor("w", &[32], 3, q41)
        .bytes();
    let path = dir.path().join("cut.gguf");
    // Every prefix that ends before the tensor's last byte (20 bytes of Q4_1 data, then
    // zero padding to the 32-byte alignment, which a reader may legitimately ignore).
    let data_end = full.len() - 12;
    for cut in 0..data_end {
        std::fs::write(&path, &full[..cut]).unwrap();
        let result = GgufFile::open(&path).and_then(|f| f.tensor("w").map(|_| ()));
        assert!(
            matches!(
                result,
                Err(Error::GgufTruncated { .. }
                    | Error::GgufImplausible { .. }
                    | Error::GgufBadMagic { .. })
            ),
            "cut at {cut} of {}: {result:?}",
            full.len()
        );
    }
    std::fs::write(&path, &full).unwrap();
    assert!(GgufFile::open(&path).unwrap().tensor("w").is_ok());
}

fn header(tensor_count: u64, kv_count: u64) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&tensor_count.to_le_bytes());
    out.extend_from_slice(&kv_count.to_le_bytes());
    out
}

#[test]
fn absurd_counts_and_lengths_fail_fast_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("absurd.gguf");
    let check = |bytes: &[u8], what: &str| {
        std::fs::write(&p, bytes).unwrap();
        let started = std::time::Instant::now();
        let err = GgufFile::open(&p).unwrap_err();
        assert!(
            matches!(err, Error::GgufImplausible { .. } | Error::GgufTruncated { .. }),
            "{what}: {err:?}"
        );
        // An allocation sized by the header would take seconds or abort; parsing must not.
        assert!(started.elapsed().as_secs_f64() < 1.0, "{what} took too long");
    };
    check(&header(u64::MAX / 2, 0), "tensor count");
    check(&header(0, u64::MAX), "metadata count");
    check(&header(1 << 40, 1 << 40), "both counts");
    // A key whose length is absurd.
    let mut b = header(0, 1);
    b.extend_from_slice(&(u64::MAX - 3).to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    check(&b, "key length");
    // A string array claiming 2^60 elements.
    let mut b = header(0, 1);
    b.extend(gguf_string("tokenizer.ggml.tokens"));
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    check(&b, "array length");
    // A tensor whose dimensions multiply past the file.
    let mut b = header(1, 0);
    b.extend(gguf_string("w"));
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&[0u8; 64]);
    check(&b, "tensor dims");
}

#[test]
fn tensor_data_outside_the_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Declared 100 f32 but the data holds 1: the range ends past the file.
    let mut bytes = Writer::new().tensor("w", &[1], 0, vec![0u8; 4]).bytes();
    // Patch dims[0] from 1 to 100 (its bytes follow the name and n_dims): 400 bytes of data
    // are plausible for the header check but lie past the end of this 96-byte file.
    let name_at = bytes.windows(1).position(|w| w == b"w").unwrap();
    let dims_at = name_at + 1 + 4;
    bytes[dims_at..dims_at + 8].copy_from_slice(&100u64.to_le_bytes());
    let p = dir.path().join("range.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let file = GgufFile::open(&p).unwrap();
    assert!(
        matches!(file.tensor("w"), Err(Error::GgufTruncated { what, .. }) if what.contains("w"))
    );
    // An offset near u64::MAX must not overflow.
    let mut bytes = Writer::new().tensor("w", &[1], 0, vec![0u8; 4]).bytes();
    let off_at = dims_at + 8 + 4;
    bytes[off_at..off_at + 8].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let file = GgufFile::open(&p).unwrap();
    assert!(matches!(file.tensor("w"), Err(Error::GgufTruncated { .. })));
    assert!(matches!(file.tensor("nope"), Err(Error::MissingWeight { name }) if name == "nope"));
}

#[test]
fn malformed_values_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    // Unknown value type 99.
    let mut b = header(0, 1);
    b.extend(gguf_string("k"));
    b.extend_from_slice(&99u32.to_le_bytes());
    b.extend_from_slice(&[0u8; 16]);
    std::fs::write(&p, &b).unwrap();
    assert!(matches!(GgufFile::open(&p), Err(Error::GgufMalformed { .. })));
    // Invalid UTF-8 in a key.
    let mut b = header(0, 1);
    b.extend_from_slice(&2u64.to_le_bytes());
    b.extend_from_slice(&[0xff, 0xfe]);
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert!(
        matches!(GgufFile::open(&p), Err(Error::GgufMalformed { reason }) if reason.contains("UTF-8"))
    );
    // Five dimensions.
    let mut b = header(1, 0);
    b.extend(gguf_string("w"));
    b.extend_from_slice(&5u32.to_le_bytes());
    b.extend_from_slice(&[1u8; 64]);
    std::fs::write(&p, &b).unwrap();
    assert!(
        matches!(GgufFile::open(&p), Err(Error::GgufMalformed { reason }) if reason.contains("dimensions"))
    );
    // Element count not a multiple of the block size.
    let path = Writer::new().tensor("q", &[31], 8, vec![0u8; 34]).write(dir.path(), "blocks.gguf");
    let file = GgufFile::open(&path).unwrap();
    assert!(
        matches!(file.tensor("q"), Err(Error::GgufMalformed { reason }) if reason.contains("multiple"))
    );
}

#[test]
fn smollm2_file_reads_as_transformers_sees_it() {
    let file = GgufFile::open(smollm2_gguf_path()).expect("SmolLM2 (run `cargo xtask setup`)");
    assert_eq!(file.version(), 3);
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.tensor_infos().len(), 272);
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    let embd = file.tensor_info("token_embd.weight").unwrap();
    assert_eq!(embd.shape(), vec![49152, 576]);
    assert_eq!(embd.type_name(), "Q8_0");
    assert_eq!(file.tensor_info("blk.0.attn_q.weight").unwrap().type_name(), "Q4_1");
    // Values from the reference stack: gguf.quants.dequantize on the same file.
    let t = file.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!(t.size(), vec![576]);
    let embd = file.tensor("token_embd.weight").unwrap();
    let row = Vec::<f32>::try_from(embd.get(7042).narrow(0, 0, 4)).unwrap();
    // Reference values: `gguf.quants.dequantize` (gguf 0.19) on the same file, rows as stored
    // (no Q/K un-permutation). Both sides compute one f16 scale (and min) times a small
    // integer in f32, so the values agree exactly.
    assert_eq!(row, vec![-0.09188652, -0.05329418, 0.009188652, 0.023890495]);
    let q = file.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.size(), vec![576, 576]);
    let q_row = Vec::<f32>::try_from(q.get(5).narrow(0, 0, 3)).unwrap();
    assert_eq!(q_row, vec![0.076_171_875, -0.274_658_2, -0.040_771_484]);
}
