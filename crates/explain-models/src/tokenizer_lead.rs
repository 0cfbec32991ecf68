//! Tokenizers: byte-level BPE built from GGUF metadata exactly as Hugging Face transformers
//! builds it from the same file, or any `tokenizer.json`.

use std::path::Path;

use explainability_core::{Error, Result, SpecialTokens};
use serde_json::{Map, Value, json};

use crate::gguf::GgufFile;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Split regexes transformers installs for some `tokenizer.ggml.pre` values; every other value
/// keeps the GPT-2 byte-level regex.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2_SPLIT),
        _ => None,
    }
}

/// GPT-2's reversible byte → printable character table.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u32 {
        let printable = (u32::from(b'!')..=u32::from(b'~')).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// A tokenizer with the conveniences explainers need (ids ↔ text, one string per token).
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
}

impl TextTokenizer {
    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.model = gpt2`).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`]; [`Error::UnsupportedArchitecture`] naming a tokenizer model
    /// other than `gpt2`; [`Error::Tokenizer`].
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::UnsupportedArchitecture {
                name: format!("tokenizer.ggml.model = {model}"),
                supported: "gpt2 (byte-level BPE)".into(),
            });
        }
        let tokens = file.get_string_array("tokenizer.ggml.tokens")?;
        let merges = file.get_string_array("tokenizer.ggml.merges")?;
        let types = file.opt_i64_array("tokenizer.ggml.token_type")?.unwrap_or_default();
        let pre = file.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let add_bos = matches!(file.get("tokenizer.ggml.add_bos_token"), Some(v) if v == &crate::gguf::MetadataValue::Bool(true));

        let spelling = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
        let mut vocab = Map::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            // Tokens written outside the byte alphabet (a few converters store raw text) are
            // respelled byte by byte, as transformers does.
            let key = if in_alphabet(token) {
                (*token).to_owned()
            } else {
                token.bytes().map(|b| spelling[b as usize]).collect()
            };
            vocab.insert(key, json!(id));
        }
        let merges: Vec<Value> = merges
            .iter()
            .map(|m| {
                let mut parts = m.splitn(2, ' ');
                json!([parts.next().unwrap_or(""), parts.next().unwrap_or("")])
            })
            .collect();
        let mut added = Vec::new();
        for (id, (token, ty)) in tokens.iter().zip(types.iter()).enumerate() {
            let special = match *ty {
                TOKEN_TYPE_CONTROL if in_alphabet(token) => true,
                TOKEN_TYPE_USER_DEFINED => false,
                _ => continue,
            };
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special
            }));
        }
        let pre_tokenizer = match split_regex(pre) {
            Some(regex) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]}),
            None => {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
            }
        };
        let special = SpecialTokens {
            bos: file.opt_u32("tokenizer.ggml.bos_token_id")?.map(i64::from),
            eos: file.opt_u32("tokenizer.ggml.eos_token_id")?.map(i64::from),
            pad: file.opt_u32("tokenizer.ggml.padding_token_id")?.map(i64::from),
            unk: file.opt_u32("tokenizer.ggml.unknown_token_id")?.map(i64::from),
        };
        let post_processor = match (add_bos, special.bos) {
            (true, Some(bos)) => {
                let bos_text = tokens.get(bos as usize).copied().unwrap_or_default();
                json!({"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": bos_text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {bos_text: {"id": bos_text, "ids": [bos], "tokens": [bos_text]}}})
            }
            _ => Value::Null,
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": "", "end_of_word_suffix": "",
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges
            }
        });
        let inner: tokenizers::Tokenizer = spec.to_string().parse().map_err(|source| {
            Error::Tokenizer { context: "building the GGUF tokenizer".into(), source }
        })?;
        Ok(Self { inner, special })
    }

    /// Loads a `tokenizer.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file is missing; [`Error::Tokenizer`] when it does not parse.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|source| {
            Error::Tokenizer { context: format!("reading {}", path.display()), source }
        })?;
        // Padding and truncation belong to the caller: a file's truncation would silently cut
        // the text being explained (the model reports `SequenceTooLong` instead), and its
        // padding would add positions nobody asked for.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|source| Error::Tokenizer {
            context: "disabling truncation".into(),
            source,
        })?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n)).map(i64::from);
        let special = SpecialTokens {
            bos: find(&["<s>", "<|begin_of_text|>", "[CLS]", "<|endoftext|>"]),
            eos: find(&["</s>", "<|end_of_text|>", "[SEP]", "<|endoftext|>"]),
            pad: find(&["<pad>", "[PAD]", "<|pad|>"]),
            unk: find(&["<unk>", "[UNK]"]),
        };
        Ok(Self { inner, special })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's template (a BOS or
    /// `[CLS]`/`[SEP]` where it has one).
    ///
    /// # Errors
    /// [`Error::Tokenizer`].
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|source| Error::Tokenizer { context: "encoding text".into(), source })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// Text of `ids`.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`], [`Error::Tokenizer`].
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids = self.to_u32(ids)?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|source| Error::Tokenizer { context: "decoding ids".into(), source })
    }

    /// A readable string per token: the token decoded alone, or its raw vocabulary piece when
    /// it is a fragment of a multi-byte character.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`], [`Error::Tokenizer`].
    pub fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        let ids = self.to_u32(ids)?;
        ids.iter()
            .map(|&id| {
                let text = self.inner.decode(&[id], false).map_err(|source| Error::Tokenizer {
                    context: "decoding a token".into(),
                    source,
                })?;
                if text.contains('\u{FFFD}') {
                    Ok(self.inner.id_to_token(id).unwrap_or(text))
                } else {
                    Ok(text)
                }
            })
            .collect()
    }

    /// The vocabulary piece of an id.
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id))
    }

    /// The id of a vocabulary piece.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Special token ids.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn to_u32(&self, ids: &[i64]) -> Result<Vec<u32>> {
        let vocab_size = self.vocab_size();
        ids.iter()
            .map(|&id| match u32::try_from(id) {
                Ok(v) if (v as usize) < vocab_size => Ok(v),
                _ => Err(Error::TokenOutOfRange { id, vocab_size }),
            })
            .collect()
    }
}
