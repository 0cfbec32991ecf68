//! GGUF tokenizers against Hugging Face transformers on the whole parity corpus
//! (`reference/tokenizer_corpus.json`): Gemma 3 270M (SentencePiece) and two small byte-level
//! files with the Llama 3 (`llama-bpe`) and Qwen2 split regexes, all written or read by
//! `reference/tokenizer_reference.py` into `$EXPLAINABILITY_PARITY_DIR/tokenizer/`.
//! `cargo xtask parity` runs the script and this test (feature `parity`).
//!
//! Every case must give the same ids (default `add_special_tokens`) and decode (special tokens
//! kept) to the same text: no tolerance, token ids are exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use explain_models::{GgufFile, TextTokenizer};
use serde::Deserialize;

fn reference_dir() -> PathBuf {
    match std::env::var_os("EXPLAINABILITY_PARITY_DIR") {
        Some(dir) => PathBuf::from(dir).join("tokenizer"),
        None => panic!(
            "EXPLAINABILITY_PARITY_DIR is not set: run `cargo xtask parity`, which writes the \
             reference outputs and runs this test"
        ),
    }
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<i64>,
    decoded: String,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

/// Compares `tokenizer` with the reference cases in `name`; returns how many cases there were.
fn check(tokenizer: &TextTokenizer, name: &str) -> usize {
    let path = reference_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert!(
        reference.cases.len() >= 60,
        "{name}: the corpus has {} strings",
        reference.cases.len()
    );
    let mut mismatches = Vec::new();
    for case in &reference.cases {
        let ids = tokenizer.encode(&case.text, true).unwrap();
        if ids != case.ids {
            mismatches.push(format!("{:?}: ours {:?}, HF {:?}", case.text, ids, case.ids));
            continue;
        }
        let decoded = tokenizer.decode(&ids, false).unwrap();
        if decoded != case.decoded {
            mismatches
                .push(format!("{:?}: decoded {:?}, HF {:?}", case.text, decoded, case.decoded));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        mismatches.len(),
        reference.cases.len(),
        mismatches.join("\n")
    );
    reference.cases.len()
}

fn open(path: &Path) -> TextTokenizer {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    TextTokenizer::from_gguf(&file).unwrap()
}

#[test]
fn gemma3_matches_transformers_on_the_corpus() {
    let path = explain_models::gemma3_gguf_path();
    let n = check(&open(&path), "gemma3_reference.json");
    eprintln!("gemma3: {n} corpus strings identical");
}

#[test]
fn llama3_byte_level_matches_transformers_on_the_corpus() {
    let tokenizer = open(&reference_dir().join("llama3_tiny.gguf"));
    let n = check(&tokenizer, "llama3_tiny_reference.json");
    eprintln!("llama3_tiny: {n} corpus strings identical");
}

#[test]
fn qwen2_byte_level_matches_transformers_on_the_corpus() {
    let tokenizer = open(&reference_dir().join("qwen2_tiny.gguf"));
    let n = check(&tokenizer, "qwen2_tiny_reference.json");
    eprintln!("qwen2_tiny: {n} corpus strings identical");
}
