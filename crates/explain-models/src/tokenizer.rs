//! Tokenizers: [`TextTokenizer`] wraps a Hugging Face `tokenizers::Tokenizer` built either from
//! a GGUF file's metadata, exactly as Hugging Face transformers builds it from the same file,
//! or from a `tokenizer.json`.
//!
//! # What transformers builds from a GGUF with `tokenizer.ggml.model = "gpt2"`
//! (transformers 5.x, `integrations/gguf/gguf_tokenizer_mapping.py` plus the
//! `GPT2Tokenizer` / `TokenizersBackend` constructors it goes through):
//! 1. A BPE model: vocabulary `tokenizer.ggml.tokens` by index, each token respelled in GPT-2's
//!    byte alphabet when it uses any character outside it (later duplicates win); merges
//!    `tokenizer.ggml.merges`, each split on its one space, *not* respelled; no unk token,
//!    no byte fallback, empty continuing prefix and end-of-word suffix.
//! 2. Pre-tokenizer `ByteLevel(add_prefix_space = false, use_regex = true)`, or, for the
//!    `tokenizer.ggml.pre` values transformers knows a split regex for (llama-bpe, qwen2,
//!    tekken, gpt-4o, …), `Sequence[Split(regex, Isolated), ByteLevel(use_regex = false)]`.
//!    No normalizer. Decoder `ByteLevel`.
//! 3. Added tokens, in this order (the order fixes the ids of tokens new to the vocabulary):
//!    `<|endoftext|>` as a special token (GPT2Tokenizer's default bos/eos/unk — it gets a new
//!    id when the vocabulary lacks it); every token of type 3 (control) spelled in the byte
//!    alphabet, special; every token of type 4 (user-defined) present in the vocabulary, not
//!    special; then the bos, eos, unk and pad tokens named by `tokenizer.ggml.*_token_id`
//!    that are not added yet, special. All with `normalized = false`.
//! 4. Post-processor: a template adding the bos / eos token when
//!    `tokenizer.ggml.add_bos_token` / `add_eos_token` say so (both default to false).

use std::collections::HashSet;
use std::path::Path;

use explainability_core::{Error, Result};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::gguf::GgufFile;

/// Ids of a model's special tokens; re-exported from `explainability_core` so that tokenizers
/// and models share one type.
pub use explainability_core::SpecialTokens;

/// llama.cpp `LLAMA_TOKEN_TYPE_CONTROL`.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// llama.cpp `LLAMA_TOKEN_TYPE_USER_DEFINED`.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
/// The default bos/eos/unk token of transformers' `GPT2Tokenizer`.
const GPT2_DEFAULT_SPECIAL: &str = "<|endoftext|>";

/// Split regexes transformers installs for some `tokenizer.ggml.pre` values (copied verbatim
/// from `GGUF_PRE_TOKENIZER_SPLITS`); every other value keeps GPT-2's byte-level regex.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's reversible byte → character table: printable bytes map to themselves, the other
/// 68 to U+0100..U+0143 in byte order.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 0x100u32;
    for (byte, slot) in (0u32..).zip(table.iter_mut()) {
        let code = if is_printable_byte(byte) {
            byte
        } else {
            next_extra += 1;
            next_extra - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

fn is_printable_byte(byte: u32) -> bool {
    matches!(byte, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Whether `c` is one of the 256 characters of GPT-2's byte alphabet.
fn in_byte_alphabet(c: char) -> bool {
    let code = u32::from(c);
    is_printable_byte(code) || (0x100..=0x143).contains(&code)
}

/// The byte a character of GPT-2's byte alphabet stands for.
fn char_to_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    if is_printable_byte(code) {
        return u8::try_from(code).ok();
    }
    let rank = code.checked_sub(0x100).filter(|&r| r < 68)?;
    // The rank-th non-printable byte.
    (0u8..=255).filter(|&b| !is_printable_byte(u32::from(b))).nth(rank as usize)
}

fn tokenizer_error(context: impl Into<String>) -> impl FnOnce(tokenizers::Error) -> Error {
    let context = context.into();
    move |source| Error::Tokenizer { context, source }
}

/// A special [`AddedToken`] that matches the raw text (`normalized = false`), as transformers
/// creates them.
fn special_token(content: &str) -> AddedToken {
    AddedToken::from(content.to_owned(), true).normalized(false)
}

/// A tokenizer with what explainers need: ids ↔ text, one readable string per token, and the
/// special token ids.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    special: SpecialTokens,
    /// 1 + the largest id the tokenizer can produce (model vocabulary or added token).
    n_ids: usize,
}

impl TextTokenizer {
    /// Builds the tokenizer a GGUF file describes, exactly as Hugging Face transformers builds
    /// it from the same file (see the module documentation). Supports byte-level BPE
    /// (`tokenizer.ggml.model = "gpt2"`: Llama 3, Qwen2, SmolLM, GPT-2, …).
    ///
    /// Special ids are the file's `tokenizer.ggml.{bos,eos,padding,unknown}_token_id`.
    ///
    /// # Errors
    /// [`Error::UnsupportedTokenizer`] for another `tokenizer.ggml.model` (e.g. sentencepiece
    /// `"llama"`); [`Error::MissingMetadata`] when tokens, merges or the model are absent or
    /// mistyped; [`Error::TokenOutOfRange`] when a special token id is not in the vocabulary;
    /// [`Error::Tokenizer`] when a merge is not two tokens of the vocabulary.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        match file.get_str("tokenizer.ggml.model")? {
            "gpt2" => Self::byte_level_from_gguf(file),
            other => Err(Error::UnsupportedTokenizer {
                model: other.to_owned(),
                supported: "gpt2 (byte-level BPE)".to_owned(),
            }),
        }
    }

    fn byte_level_from_gguf(file: &GgufFile) -> Result<Self> {
        let tokens = file.get_string_array("tokenizer.ggml.tokens")?;
        let Some(raw_merges) = file.opt_string_array("tokenizer.ggml.merges")? else {
            // transformers would derive merges from `tokenizer.ggml.scores`; byte-level GGUF
            // files always carry their merges, so this is not reproduced.
            return Err(Error::MissingMetadata {
                key: "tokenizer.ggml.merges".to_owned(),
                expected: "an array of strings (byte-level BPE needs its merges)".to_owned(),
            });
        };
        let token_types = file.opt_i64_array("tokenizer.ggml.token_type")?.unwrap_or_default();
        let special_id = |key: &str| -> Result<Option<i64>> {
            let Some(id) = file.opt_u64(key)? else { return Ok(None) };
            match i64::try_from(id) {
                Ok(id) if id < tokens.len() as i64 => Ok(Some(id)),
                _ => Err(Error::TokenOutOfRange {
                    id: i64::try_from(id).unwrap_or(i64::MAX),
                    vocab_size: tokens.len(),
                }),
            }
        };
        let special = SpecialTokens {
            bos: special_id("tokenizer.ggml.bos_token_id")?,
            eos: special_id("tokenizer.ggml.eos_token_id")?,
            pad: special_id("tokenizer.ggml.padding_token_id")?,
            unk: special_id("tokenizer.ggml.unknown_token_id")?,
        };
        let text_of = |id: Option<i64>| {
            id.and_then(|id| usize::try_from(id).ok()).and_then(|i| tokens.get(i).copied())
        };

        // 1. The BPE model.
        let spelling = byte_to_char();
        let mut vocab = Vocab::default();
        for (id, token) in tokens.iter().enumerate() {
            let id = u32::try_from(id).map_err(|_| Error::GgufMalformed {
                reason: "tokenizer.ggml.tokens has more than u32::MAX tokens".to_owned(),
            })?;
            let key = if token.chars().all(in_byte_alphabet) {
                (*token).to_owned()
            } else {
                token.bytes().map(|b| spelling[usize::from(b)]).collect()
            };
            vocab.insert(key, id);
        }
        let mut merges = Vec::with_capacity(raw_merges.len());
        for (index, merge) in raw_merges.iter().enumerate() {
            let mut parts = merge.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => merges.push((a.to_owned(), b.to_owned())),
                _ => {
                    return Err(Error::Tokenizer {
                        context: "reading tokenizer.ggml.merges".to_owned(),
                        source: format!(
                            "merge {index} ({merge:?}) is not two tokens separated by one space"
                        )
                        .into(),
                    });
                }
            }
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(String::new())
            .build()
            .map_err(tokenizer_error("building the BPE model from tokenizer.ggml.*"))?;
        let mut inner = Tokenizer::new(bpe);

        // 2. Pre-tokenizer and decoder.
        let pre = file.opt_str("tokenizer.ggml.pre")?.unwrap_or_default();
        let pre_tokenizer: PreTokenizerWrapper = match split_regex(pre) {
            Some(regex) => {
                let split = Split::new(
                    SplitPattern::Regex(regex.to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(tokenizer_error(format!("compiling the split regex of {pre:?}")))?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
            None => ByteLevel::new(false, true, true).into(),
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevel::default()));

        // 3. Added tokens, in transformers' order.
        inner.add_special_tokens(&[special_token(GPT2_DEFAULT_SPECIAL)]);
        let typed = |wanted: i64| {
            tokens.iter().zip(&token_types).filter(move |(_, ty)| **ty == wanted).map(|(t, _)| *t)
        };
        let control: Vec<AddedToken> = typed(TOKEN_TYPE_CONTROL)
            .filter(|t| t.chars().all(in_byte_alphabet))
            .map(special_token)
            .collect();
        inner.add_special_tokens(&control);
        let user_defined: Vec<AddedToken> = typed(TOKEN_TYPE_USER_DEFINED)
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| AddedToken::from((*t).to_owned(), false).normalized(false))
            .collect();
        inner.add_tokens(&user_defined);
        let already: HashSet<String> =
            inner.get_added_tokens_decoder().into_values().map(|t| t.content).collect();
        let mut named: Vec<AddedToken> = Vec::new();
        for text in [special.bos, special.eos, special.unk, special.pad].map(text_of).into_iter() {
            if let Some(text) = text
                && !already.contains(text)
                && !named.iter().any(|t| t.content == text)
            {
                named.push(special_token(text));
            }
        }
        inner.add_special_tokens(&named);

        // 4. Post-processor.
        let add_bos = file.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let add_eos = file.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let bos = text_of(special.bos).filter(|_| add_bos);
        let eos = text_of(special.eos).filter(|_| add_eos);
        let post = template(&inner, bos, eos)?;
        inner.with_post_processor(Some(post));

        Self::new(inner, special)
    }

    /// Loads a `tokenizer.json`. Padding and truncation configured in the file are switched
    /// off: a truncation would silently cut the text being explained, and padding would add
    /// positions nobody asked for.
    ///
    /// Special ids come from `tokenizer_config.json` (else `special_tokens_map.json`) next to
    /// the file when there is one (`bos_token`, `eos_token`, `pad_token`, `unk_token`), else
    /// from well-known token spellings (`<s>`, `</s>`, `<pad>`, `[PAD]`, `<unk>`, `[UNK]`, …).
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be read; [`Error::Json`] when a config file is not
    /// JSON; [`Error::Tokenizer`] when the tokenizer does not parse.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut inner = Tokenizer::from_bytes(&bytes)
            .map_err(tokenizer_error(format!("reading {}", path.display())))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tokenizer_error("disabling truncation"))?;
        let special = special_tokens_beside(&inner, path)?;
        Self::new(inner, special)
    }

    fn new(inner: Tokenizer, special: SpecialTokens) -> Result<Self> {
        let n_ids = inner
            .get_vocab(true)
            .into_values()
            .max()
            .map_or(0, |max| usize::try_from(max).map_or(usize::MAX, |m| m.saturating_add(1)));
        Ok(Self { inner, special, n_ids })
    }

    /// Token ids of `text`. `add_special_tokens` applies the tokenizer's post-processor (a BOS,
    /// or `[CLS]` … `[SEP]`, where it has one); special tokens written in the text are matched
    /// either way.
    ///
    /// # Errors
    /// [`Error::Tokenizer`].
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(tokenizer_error("encoding text"))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The text of `ids`.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for an id outside the vocabulary; [`Error::Tokenizer`].
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids = self.checked_ids(ids)?;
        self.inner.decode(&ids, skip_special_tokens).map_err(tokenizer_error("decoding ids"))
    }

    /// One readable string per id: the token decoded alone (`" capital"`), or its raw
    /// vocabulary piece when it is only part of a character (a byte-level piece that is not
    /// valid UTF-8 alone, e.g. the first bytes of a Chinese character).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`]; [`Error::Tokenizer`].
    pub fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        let byte_level = matches!(self.inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        self.checked_ids(ids)?
            .into_iter()
            .map(|id| {
                let text =
                    self.inner.decode(&[id], false).map_err(tokenizer_error("decoding a token"))?;
                if !text.contains('\u{FFFD}') {
                    return Ok(text);
                }
                let Some(piece) = self.inner.id_to_token(id) else { return Ok(text) };
                // A byte-level token that really is U+FFFD decodes to valid UTF-8: keep it.
                let genuine = byte_level
                    && piece
                        .chars()
                        .map(char_to_byte)
                        .collect::<Option<Vec<u8>>>()
                        .is_some_and(|bytes| std::str::from_utf8(&bytes).is_ok());
                Ok(if genuine { text } else { piece })
            })
            .collect()
    }

    /// The vocabulary piece of an id (`"Ġcapital"`), `None` outside the vocabulary.
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.id_to_token(id))
    }

    /// The id of a vocabulary piece or added token.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    /// Number of ids: one more than the largest id of the vocabulary or the added tokens.
    pub fn vocab_size(&self) -> usize {
        self.n_ids
    }

    /// The special token ids.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    fn checked_ids(&self, ids: &[i64]) -> Result<Vec<u32>> {
        ids.iter()
            .map(|&id| match u32::try_from(id) {
                Ok(v) if (v as usize) < self.n_ids => Ok(v),
                _ => Err(Error::TokenOutOfRange { id, vocab_size: self.n_ids }),
            })
            .collect()
    }
}

/// The post-processor transformers' `update_post_processor` builds: the same template strings,
/// parsed by the same `tokenizers` code.
fn template(inner: &Tokenizer, bos: Option<&str>, eos: Option<&str>) -> Result<TemplateProcessing> {
    let with_type = |token: Option<&str>, type_id: u8| token.map(|t| format!("{t}:{type_id}"));
    let single: Vec<String> = [with_type(bos, 0), Some("$A:0".to_owned()), with_type(eos, 0)]
        .into_iter()
        .flatten()
        .collect();
    let mut pair = single.clone();
    pair.extend(
        [with_type(bos, 1), Some("$B:1".to_owned()), with_type(eos, 1)].into_iter().flatten(),
    );
    let mut specials = Vec::new();
    for token in [bos, eos].into_iter().flatten() {
        let id = inner.token_to_id(token).ok_or_else(|| Error::Tokenizer {
            context: "building the post-processor".to_owned(),
            source: format!("special token {token:?} is not in the vocabulary").into(),
        })?;
        specials.push((token.to_owned(), id));
    }
    let template_error = |source: String| Error::Tokenizer {
        context: "building the post-processor".to_owned(),
        source: source.into(),
    };
    let mut builder = TemplateProcessing::builder();
    builder.try_single(single.join(" ")).map_err(template_error)?;
    builder.try_pair(pair.join(" ")).map_err(template_error)?;
    builder.special_tokens(specials);
    builder.build().map_err(|e| Error::Tokenizer {
        context: "building the post-processor".to_owned(),
        source: Box::new(e),
    })
}

/// Special ids for a `tokenizer.json`: from the Hugging Face config files beside it, else from
/// well-known spellings.
fn special_tokens_beside(inner: &Tokenizer, path: &Path) -> Result<SpecialTokens> {
    let id = |text: &str| inner.token_to_id(text).map(i64::from);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let config_path = dir.join(name);
        if !config_path.is_file() {
            continue;
        }
        let text = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|source| Error::Json { path: config_path.clone(), source })?;
        // A token is a string or an AddedToken object `{"content": ...}`.
        let token = |key: &str| {
            let value = config.get(key)?;
            value.as_str().or_else(|| value.get("content")?.as_str()).and_then(id)
        };
        return Ok(SpecialTokens {
            bos: token("bos_token"),
            eos: token("eos_token"),
            pad: token("pad_token"),
            unk: token("unk_token"),
        });
    }
    let first = |names: &[&str]| names.iter().find_map(|n| id(n));
    Ok(SpecialTokens {
        bos: first(&["<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"]),
        eos: first(&["</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"]),
        pad: first(&["<pad>", "[PAD]", "<|pad|>"]),
        unk: first(&["<unk>", "[UNK]"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_round_trips() {
        let table = byte_to_char();
        let distinct: HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        for (byte, &c) in table.iter().enumerate() {
            assert!(in_byte_alphabet(c), "{c:?}");
            assert_eq!(char_to_byte(c), Some(byte as u8));
        }
        assert_eq!(table[usize::from(b' ')], 'Ġ');
        assert_eq!(table[usize::from(b'\n')], 'Ċ');
        assert!(!in_byte_alphabet('中'));
        assert!(!in_byte_alphabet(' '));
    }

    #[test]
    fn every_split_regex_compiles() {
        for pre in ["llama-bpe", "tekken", "qwen2", "qwen35", "gpt-4o"] {
            let regex = split_regex(pre).unwrap();
            Split::new(
                SplitPattern::Regex(regex.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .unwrap();
        }
        assert!(split_regex("smollm").is_none());
    }
}
