//! Bit-exact parity of our dequantisation with gguf-py 0.19.0 on every tensor of the Gemma 3
//! 270M Q4_K_M file (F32, Q4_K, Q5_0, Q6_K, Q8_0), and on 64 seeded random blocks of each of
//! Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q5_0, Q5_1 and IQ4_NL whose f16 scales are, every other block,
//! ±0, subnormal, ±inf or NaN (NaN payloads canonicalised on both sides).
//!
//! `reference/gguf_dequant_reference.py` writes `gguf_dequant_reference.json` (per tensor: type,
//! torch shape, sha256 of the float32 little-endian values, sum; the random blocks as hex with
//! the sha256 of their output) into the folder in
//! `EXPLAINABILITY_PARITY_DIR`; `cargo xtask parity` runs it, then this test (feature
//! `parity`). Without the file the test fails: it cannot pass vacuously.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use explain_models::gguf::{default_threads, dequantize_into};
use explain_models::{GgufFile, gemma3_gguf_path};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Reference {
    gguf: String,
    tensors: BTreeMap<String, TensorReference>,
    random_blocks: BTreeMap<String, RandomBlocks>,
}

#[derive(Deserialize)]
struct RandomBlocks {
    ggml_type: u32,
    hex: String,
    n_elements: usize,
    sha256: String,
    nan: usize,
}

#[derive(Deserialize)]
struct TensorReference {
    #[serde(rename = "type")]
    type_name: String,
    ggml_type: u32,
    shape: Vec<i64>,
    sha256: String,
    sum: f64,
}

fn reference() -> Reference {
    let dir = match std::env::var_os("EXPLAINABILITY_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!(
            "EXPLAINABILITY_PARITY_DIR is not set: run `cargo xtask parity`, which writes the \
             reference outputs and runs this test"
        ),
    };
    let path = dir.join("gguf_dequant_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// sha256 of the values as little-endian f32; NaNs written as 0x7FC00000 (the file holds none).
fn sha256_le(values: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for chunk in values.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk
            .iter()
            .flat_map(|v| if v.is_nan() { 0x7FC0_0000u32.to_le_bytes() } else { v.to_le_bytes() })
            .collect();
        hasher.update(&bytes);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn random_blocks_of_every_new_type_are_bit_identical_to_gguf_py() {
    let reference = reference();
    let names: Vec<&str> = reference.random_blocks.keys().map(String::as_str).collect();
    assert_eq!(names, ["IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K"]);
    for (name, case) in &reference.random_blocks {
        let bytes = from_hex(&case.hex);
        let mut out = vec![0f32; case.n_elements];
        dequantize_into(case.ggml_type, &bytes, &mut out, default_threads()).unwrap();
        assert_eq!(out.iter().filter(|v| v.is_nan()).count(), case.nan, "{name}: NaN count");
        assert_eq!(sha256_le(&out), case.sha256, "{name}: not bit-identical to gguf-py");
    }
}

#[test]
fn every_gemma3_tensor_is_bit_identical_to_gguf_py() {
    let reference = reference();
    assert_eq!(reference.gguf, "0.19.0");
    let file = GgufFile::open(gemma3_gguf_path()).unwrap();
    let names: Vec<String> = file.tensor_names();
    assert_eq!(names.len(), reference.tensors.len(), "tensor count");
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for info in file.tensor_infos() {
        let name = info.name();
        let expected =
            reference.tensors.get(name).unwrap_or_else(|| panic!("{name} not in reference"));
        assert_eq!(info.ggml_type(), expected.ggml_type, "{name}");
        assert_eq!(info.type_name(), expected.type_name, "{name}");
        assert_eq!(info.shape(), expected.shape, "{name}");
        let values = file.tensor_f32(name).unwrap();
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        if sha256_le(&values) != expected.sha256 {
            mismatches.push(format!(
                "{name} ({}): sum {sum} vs {}",
                info.type_name(),
                expected.sum
            ));
        }
        *by_type.entry(info.type_name()).or_default() += 1;
    }
    eprintln!("compared {} tensors: {by_type:?}", names.len());
    assert!(mismatches.is_empty(), "not bit-identical to gguf-py: {mismatches:#?}");
}
