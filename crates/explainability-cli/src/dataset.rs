//! Dataset input: a JSONL file of records (`id`, `text`, optional `target`, `continuation`,
//! `spans`), read whole, checked line by line (a malformed line is reported with its line
//! number and skipped, the rest processed), with duplicate ids refused, and the file's sha256
//! for the job manifest.

use std::collections::BTreeMap;
use std::path::Path;

use explainability::LanguageModel;
use explainability::Target;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CliError, CliResult};

/// Longest input file read (bytes): the whole input is read into memory to hash it and to
/// split it into shards, so its size is bounded.
pub const MAX_INPUT_BYTES: u64 = 4 << 30;

/// The explained token of a record: a token string (`" Paris"`, which must encode to exactly
/// one token) or a token id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetSpec {
    /// A token id.
    Id(i64),
    /// A token's text.
    Token(String),
}

/// One input record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    /// Unique id (a JSON string or integer; integers are written as strings).
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// The prompt.
    pub text: String,
    /// The explained next token (default: the model's most likely one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    /// A continuation of the prompt whose first token is the explained one (when no `target`
    /// is given), e.g. the reference answer of a dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<String>,
    /// Token spans `[start, end)` used as the features of the perturbation methods that group
    /// tokens (feature ablation, Shapley values, KernelSHAP, LIME, ContextCite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<Vec<[usize; 2]>>,
}

fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "the id must be a string or an integer, got {other}"
        ))),
    }
}

/// A record with its place in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedRecord {
    /// Position among the valid records (0-based): what shards are cut by.
    pub index: usize,
    /// Line number in the file (1-based).
    pub line: usize,
    /// The record.
    pub record: InputRecord,
}

/// A malformed input line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadLine {
    /// Line number (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A dataset read from JSONL.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Valid records, in file order.
    pub records: Vec<IndexedRecord>,
    /// Malformed lines, skipped.
    pub bad_lines: Vec<BadLine>,
    /// sha256 of the file's bytes (hex).
    pub sha256: String,
}

impl Dataset {
    /// Reads `path`. Blank lines are skipped; a line that is not a record is reported in
    /// `bad_lines` and skipped.
    ///
    /// # Errors
    /// [`CliError::Input`] for an unreadable or too large file, a file that is not UTF-8, or
    /// a duplicate id (naming both lines).
    pub fn read(path: &Path) -> CliResult<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| CliError::Input(format!("cannot read input {}: {e}", path.display())))?
            .len();
        if len > MAX_INPUT_BYTES {
            return Err(CliError::Input(format!(
                "input {} has {len} bytes, more than the {MAX_INPUT_BYTES} this command reads; \
                 split it into several files",
                path.display()
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| CliError::Input(format!("cannot read input {}: {e}", path.display())))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let text = String::from_utf8(bytes)
            .map_err(|e| CliError::Input(format!("input {} is not UTF-8: {e}", path.display())))?;
        let (records, bad_lines) = parse_lines(&text)?;
        Ok(Self { records, bad_lines, sha256 })
    }
}

/// Parses JSONL text into records and bad lines.
///
/// # Errors
/// [`CliError::Input`] for a duplicate id.
pub fn parse_lines(text: &str) -> CliResult<(Vec<IndexedRecord>, Vec<BadLine>)> {
    let mut records = Vec::new();
    let mut bad_lines = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<InputRecord>(line) {
            Ok(record) => {
                if let Some(first) = seen.insert(record.id.clone(), line_no) {
                    return Err(CliError::Input(format!(
                        "duplicate id {:?} on lines {first} and {line_no}: ids must be unique \
                         (they name results and seed the methods)",
                        record.id
                    )));
                }
                records.push(IndexedRecord { index: records.len(), line: line_no, record });
            }
            Err(e) => bad_lines.push(BadLine { line: line_no, message: e.to_string() }),
        }
    }
    Ok((records, bad_lines))
}

/// The target of `record` on `model`.
///
/// # Errors
/// [`CliError::Input`] for a token text that is not exactly one token, or a continuation
/// that adds no token.
pub fn resolve_target(model: &dyn LanguageModel, record: &InputRecord) -> CliResult<Target> {
    match (&record.target, &record.continuation) {
        (Some(TargetSpec::Id(id)), _) => Ok(Target::log_prob(*id)),
        (Some(TargetSpec::Token(token)), _) => Ok(Target::log_prob(single_token(model, token)?)),
        (None, Some(continuation)) => {
            let prompt = model.encode(&record.text, true)?;
            let full = model.encode(&format!("{}{continuation}", record.text), true)?;
            match full.get(prompt.len()) {
                Some(&id) if full[..prompt.len()] == prompt[..] => Ok(Target::log_prob(id)),
                _ => Err(CliError::Input(format!(
                    "the continuation {continuation:?} does not extend the tokens of the text \
                     (it adds no token, or the tokenizer merges it with the text's last token)"
                ))),
            }
        }
        (None, None) => Ok(Target::argmax()),
    }
}

/// The id of `token`, which must encode (without special tokens) to exactly one token.
///
/// # Errors
/// [`CliError::Input`] otherwise.
pub fn single_token(model: &dyn LanguageModel, token: &str) -> CliResult<i64> {
    let ids = model.encode(token, false)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => Err(CliError::Input(format!(
            "target {token:?} is {} tokens for this model, not one; give a token id instead",
            ids.len()
        ))),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file (hex), streamed.
///
/// # Errors
/// [`CliError::Output`] when it cannot be read.
pub fn file_sha256(path: &Path) -> CliResult<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| CliError::Output(format!("cannot read {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| CliError::Output(format!("cannot read {}: {e}", path.display())))?;
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_lines_are_reported_and_the_rest_kept() {
        let text = "{\"id\": 1, \"text\": \"a\"}\n\nnot json\n{\"id\": \"b\", \"text\": \"b\", \"target\": \" x\"}\n{\"text\": \"no id\"}\n";
        let (records, bad) = parse_lines(text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].record.id, "1");
        assert_eq!(records[1].index, 1);
        assert_eq!(records[1].line, 4);
        assert_eq!(records[1].record.target, Some(TargetSpec::Token(" x".into())));
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![3, 5]);
        let dup = parse_lines("{\"id\": 1, \"text\": \"a\"}\n{\"id\": \"1\", \"text\": \"b\"}");
        assert!(matches!(dup, Err(CliError::Input(m)) if m.contains("lines 1 and 2")));
    }
}
