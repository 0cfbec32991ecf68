//! Tokenizers: [`TextTokenizer`] wraps a Hugging Face `tokenizers::Tokenizer` built from a GGUF
//! file's metadata or from a `tokenizer.json`.
//!
//! # What is supported
//! | `tokenizer.ggml.model` | `tokenizer.ggml.pre` | models | built as |
//! |---|---|---|---|
//! | `"gpt2"` (byte-level BPE) | absent, `default`, `gpt-2`, `gpt2`, `smollm` | GPT-2, SmolLM | GPT-2's byte-level regex |
//! | `"gpt2"` | `llama-bpe`, `llama3`, `llama-v3`, … | Llama 3.x | the Llama 3 split regex |
//! | `"gpt2"` | `qwen2`, `deepseek-r1-qwen`, … | Qwen2 / 2.5 | the Qwen2 split regex (single digits) |
//! | `"gpt2"` | `tekken`, `qwen35`, `gpt-4o`, `llama4`, … | Mistral Nemo, Qwen3.5, Llama 4 | their split regexes |
//! | `"llama"` (SentencePiece) | any | Gemma 1–3, Llama 2, Mistral v0.1 | BPE, merges derived from the scores |
//!
//! Anything else is [`Error::UnsupportedTokenizer`], naming the value and listing the supported
//! ones: another `tokenizer.ggml.model` (`"t5"`, `"bert"`, `"rwkv"`, …), or a byte-level file
//! whose `pre` is not in the table. transformers falls back to GPT-2's regex for an unknown
//! `pre`; that silently produces other tokens than the model was trained on, which would make
//! every attribution refer to the wrong pieces, so it is refused instead.
//!
//! # What transformers builds from a GGUF with `tokenizer.ggml.model = "gpt2"`
//! (transformers 5.x, `integrations/gguf/gguf_tokenizer_mapping.py` plus the
//! `GPT2Tokenizer` / `TokenizersBackend` constructors it goes through), reproduced exactly:
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
//!
//! # SentencePiece (`tokenizer.ggml.model = "llama"`)
//! A BPE model over `tokenizer.ggml.tokens` with merges derived from `tokenizer.ggml.scores`
//! (the `sentencepiece` submodule documents the derivation), `<unk>` from
//! `tokenizer.ggml.unknown_token_id`, byte fallback to the `<0x00>`…`<0xFF>` tokens.
//! - Spaces become `▁`: a `Replace(" ", "▁")` normalizer when `tokenizer.ggml.add_space_prefix`
//!   is false (Gemma), else transformers' `LlamaTokenizer` pre-tokenizer `Metaspace("▁",
//!   prepend_scheme = first)`, which also puts a `▁` in front of the text when it does not start
//!   with one (the flag defaults to true, as in llama.cpp). Decoder `Replace("▁", " ")`,
//!   `ByteFallback`, `Fuse` (and `Strip` of that first space with the prefix).
//! - Control tokens (type 3) are special added tokens, user-defined ones (type 4: Gemma's runs
//!   of spaces, tabs and newlines, `<table>`-like tags) plain added tokens; both match the raw
//!   text, before the BPE model, as in llama.cpp.
//! - A BOS is added unless `tokenizer.ggml.add_bos_token` is false, an EOS when
//!   `add_eos_token` is true.
//!
//! On Gemma 3 this gives the ids of transformers 5.24 (`AutoTokenizer.from_pretrained(dir,
//! gguf_file = …)`) on the whole parity corpus. Known differences from transformers, where this
//! module follows llama.cpp: transformers respells Gemma's space-run tokens as `▁` runs and
//! merges them inside the BPE model, so a run longer than the longest such token (31 spaces),
//! or `▁` characters typed in the text, can split differently; and transformers derives Gemma's
//! merges from every token, not only normal ones. With `add_space_prefix`, this module follows
//! transformers instead: llama.cpp puts a space before every stretch of text that starts the
//! input or follows a special or user-defined token, even one that already starts with a
//! space; transformers (`Metaspace`, prepend scheme "first") only at the start of the input,
//! and not when the text already starts with a space.

use std::collections::HashSet;
use std::path::Path;

use explainability_core::{Error, Result};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Decoder, SplitDelimiterBehavior, Tokenizer};

use crate::gguf::GgufFile;

/// Ids of a model's special tokens; re-exported from `explainability_core` so that tokenizers
/// and models share one type.
pub use explainability_core::SpecialTokens;

mod sentencepiece;

/// llama.cpp `LLAMA_TOKEN_TYPE_NORMAL`.
const TOKEN_TYPE_NORMAL: i64 = 1;
/// llama.cpp `LLAMA_TOKEN_TYPE_CONTROL`.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// llama.cpp `LLAMA_TOKEN_TYPE_USER_DEFINED`.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
/// The default bos/eos/unk token of transformers' `GPT2Tokenizer`.
const GPT2_DEFAULT_SPECIAL: &str = "<|endoftext|>";

/// Split regexes transformers installs for some `tokenizer.ggml.pre` values (copied verbatim
/// from `GGUF_PRE_TOKENIZER_SPLITS`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How a byte-level vocabulary splits text before its merges apply, by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizerKind {
    /// GPT-2's own regex inside `ByteLevel` (`'s|'t|… | ?\p{L}+| ?\p{N}+|…`).
    Gpt2,
    /// A split regex, then `ByteLevel` without its regex.
    Split(&'static str),
}

/// `tokenizer.ggml.pre` values that keep GPT-2's regex. transformers uses it for *every* value
/// it has no regex for; only the values where that is known right are accepted here: the
/// file has no `pre` (llama.cpp's "default"), GPT-2 itself, and SmolLM (whose vocabulary has no
/// multi-digit tokens, so llama.cpp's extra digit split changes nothing; checked on the
/// parity corpus).
const GPT2_REGEX_PRE: &[&str] = &["default", "gpt-2", "gpt2", "smollm"];

/// `tokenizer.ggml.pre` values with a split regex, as transformers' `GGUF_PRE_TOKENIZER_SPLITS`.
const SPLIT_REGEX_PRE: &[(&str, &str)] = &[
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("llama-bpe", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("falcon-h1", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("midm-2.0", LLAMA3_SPLIT),
    ("lfm2", LLAMA3_SPLIT),
    ("jina-v5-nano", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("tekken", TEKKEN_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("kormo", QWEN2_SPLIT),
    ("f2llmv2", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("qwen35", QWEN35_SPLIT),
    ("gpt-4o", GPT4O_SPLIT),
    ("llama4", GPT4O_SPLIT),
    ("kanana2", GPT4O_SPLIT),
    ("talkie", GPT4O_SPLIT),
    ("minimax-m2", GPT4O_SPLIT),
];

/// The pre-tokenizer of a byte-level vocabulary (`None` for `pre` when the key is absent).
///
/// # Errors
/// [`Error::UnsupportedTokenizer`] naming the value and listing the supported ones: an unknown
/// `pre` usually means another split regex (llama.cpp has dozens), and GPT-2's would silently
/// give other tokens than the model was trained on.
fn pre_tokenizer_kind(pre: Option<&str>) -> Result<PreTokenizerKind> {
    let pre = pre.unwrap_or("default");
    if GPT2_REGEX_PRE.contains(&pre) {
        return Ok(PreTokenizerKind::Gpt2);
    }
    if let Some((_, regex)) = SPLIT_REGEX_PRE.iter().find(|(name, _)| *name == pre) {
        return Ok(PreTokenizerKind::Split(regex));
    }
    Err(Error::UnsupportedTokenizer {
        model: format!("gpt2 with tokenizer.ggml.pre = {pre:?}"),
        supported: format!("tokenizer.ggml.pre absent or one of {}", supported_pre().join(", ")),
    })
}

/// Every accepted `tokenizer.ggml.pre` value.
fn supported_pre() -> Vec<&'static str> {
    GPT2_REGEX_PRE.iter().copied().chain(SPLIT_REGEX_PRE.iter().map(|(name, _)| *name)).collect()
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
    /// Builds the tokenizer a GGUF file describes (see the module documentation):
    /// byte-level BPE (`tokenizer.ggml.model = "gpt2"`: Llama 3, Qwen2, SmolLM, GPT-2, …) exactly
    /// as Hugging Face transformers builds it from the same file, or SentencePiece
    /// (`"llama"`: Gemma, Llama 2, Mistral v0.1, …) as BPE with merges derived from the scores.
    ///
    /// Special ids are the file's `tokenizer.ggml.{bos,eos,padding,unknown}_token_id`.
    ///
    /// # Errors
    /// - [`Error::UnsupportedTokenizer`] for another `tokenizer.ggml.model` (e.g. `"t5"`), or a
    ///   byte-level vocabulary whose `tokenizer.ggml.pre` has no known split regex;
    /// - [`Error::MissingMetadata`] when tokens, merges (byte-level), scores (SentencePiece) or
    ///   the model are absent or mistyped;
    /// - [`Error::GgufMalformed`] when `tokenizer.ggml.scores` or `tokenizer.ggml.token_type`
    ///   does not have one entry per token;
    /// - [`Error::TokenOutOfRange`] when a special token id is not in the vocabulary;
    /// - [`Error::Tokenizer`] when a merge is not two tokens of the vocabulary.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let tokenizer = match file.get_str("tokenizer.ggml.model")? {
            "gpt2" => Self::byte_level_from_gguf(file),
            "llama" => sentencepiece::from_gguf(file),
            other => Err(Error::UnsupportedTokenizer {
                model: other.to_owned(),
                supported: "gpt2 (byte-level BPE), llama (SentencePiece)".to_owned(),
            }),
        };
        // The build's temporary tables (Gemma 3: ≈ 60 MiB) would otherwise stay resident.
        crate::weights::release_free_heap();
        tokenizer
    }

    fn byte_level_from_gguf(file: &GgufFile) -> Result<Self> {
        let meta = GgufTokenizerMetadata::read(file)?;
        let tokens = &meta.tokens;
        let Some(raw_merges) = file.opt_string_array("tokenizer.ggml.merges")? else {
            // transformers would derive merges from `tokenizer.ggml.scores`; byte-level GGUF
            // files always carry their merges, so this is not reproduced.
            return Err(Error::MissingMetadata {
                key: "tokenizer.ggml.merges".to_owned(),
                expected: "an array of strings (byte-level BPE needs its merges)".to_owned(),
            });
        };
        // Checked first: an unsupported pre-tokenizer is the more useful error.
        let pre = pre_tokenizer_kind(file.opt_str("tokenizer.ggml.pre")?)?;

        // 1. The BPE model.
        let spelling = byte_to_char();
        let mut vocab = Vocab::default();
        for (id, token) in (0u32..).zip(tokens) {
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
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            PreTokenizerKind::Split(regex) => {
                let split = Split::new(
                    SplitPattern::Regex(regex.to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(tokenizer_error("compiling the split regex of tokenizer.ggml.pre"))?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
            PreTokenizerKind::Gpt2 => ByteLevel::new(false, true, true).into(),
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevel::default()));

        // 3. Added tokens, in transformers' order.
        inner.add_special_tokens(&[special_token(GPT2_DEFAULT_SPECIAL)]);
        let control: Vec<AddedToken> = meta
            .tokens_of_type(TOKEN_TYPE_CONTROL)
            .filter(|t| t.chars().all(in_byte_alphabet))
            .map(special_token)
            .collect();
        inner.add_special_tokens(&control);
        let user_defined: Vec<AddedToken> = meta
            .tokens_of_type(TOKEN_TYPE_USER_DEFINED)
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| AddedToken::from((*t).to_owned(), false).normalized(false))
            .collect();
        inner.add_tokens(&user_defined);
        add_named_special_tokens(&mut inner, &meta);

        // 4. Post-processor.
        set_post_processor(file, &mut inner, &meta, false)?;

        Self::new(inner, meta.special)
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

    /// One readable string per id: the token decoded alone (`" capital"`, `"▁world"` →
    /// `" world"`), or its raw vocabulary piece when it is only part of a character (a
    /// byte-level piece that is not valid UTF-8 alone, e.g. the first bytes of a Chinese
    /// character, or a SentencePiece byte token such as `<0xC7>`).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`]; [`Error::Tokenizer`].
    pub fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        let byte_level = matches!(self.inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        let unstripped = self.decoder_without_strip();
        self.checked_ids(ids)?
            .into_iter()
            .map(|id| {
                let text = match (&unstripped, self.inner.id_to_token(id)) {
                    (Some(decoder), Some(piece)) => decoder.decode(vec![piece]),
                    _ => self.inner.decode(&[id], false),
                }
                .map_err(tokenizer_error("decoding a token"))?;
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

    /// The tokenizer's decoder less its `Strip` steps, when it has any: a SentencePiece
    /// tokenizer with a space prefix strips the first space of a decoded text, which for one
    /// token alone would turn `"▁hello"` into `"hello"` rather than the `" hello"` it stands
    /// for inside a text. `None` when there is nothing to remove.
    fn decoder_without_strip(&self) -> Option<DecoderWrapper> {
        let Some(DecoderWrapper::Sequence(sequence)) = self.inner.get_decoder() else {
            return None;
        };
        let steps = sequence.get_decoders();
        let kept: Vec<DecoderWrapper> =
            steps.iter().filter(|d| !matches!(d, DecoderWrapper::Strip(_))).cloned().collect();
        (kept.len() < steps.len()).then(|| DecoderSequence::new(kept).into())
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

/// What every GGUF tokenizer reads: the tokens, their types and the special token ids.
struct GgufTokenizerMetadata<'a> {
    tokens: Vec<&'a str>,
    /// `tokenizer.ggml.token_type`, one per token, or empty when the file has none.
    token_types: Vec<i64>,
    special: SpecialTokens,
}

impl<'a> GgufTokenizerMetadata<'a> {
    fn read(file: &'a GgufFile) -> Result<Self> {
        let tokens = file.get_string_array("tokenizer.ggml.tokens")?;
        if u32::try_from(tokens.len()).is_err() {
            return Err(Error::GgufMalformed {
                reason: "tokenizer.ggml.tokens has more than u32::MAX tokens".to_owned(),
            });
        }
        let token_types = file.opt_i64_array("tokenizer.ggml.token_type")?.unwrap_or_default();
        if !token_types.is_empty() {
            check_parallel_array("tokenizer.ggml.token_type", token_types.len(), tokens.len())?;
        }
        let special_id = |key: &str| -> Result<Option<i64>> {
            let Some(id) = file.opt_u64(key)? else { return Ok(None) };
            match usize::try_from(id) {
                Ok(index) if index < tokens.len() => {
                    Ok(Some(i64::try_from(id).unwrap_or(i64::MAX)))
                }
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
        Ok(Self { tokens, token_types, special })
    }

    /// The tokens of one type (`tokenizer.ggml.token_type`), in id order.
    fn tokens_of_type(&self, wanted: i64) -> impl Iterator<Item = &'a str> + '_ {
        self.tokens
            .iter()
            .zip(&self.token_types)
            .filter(move |(_, ty)| **ty == wanted)
            .map(|(t, _)| *t)
    }

    /// The text of a token id, `None` for `None`.
    fn text_of(&self, id: Option<i64>) -> Option<&'a str> {
        id.and_then(|id| usize::try_from(id).ok()).and_then(|i| self.tokens.get(i).copied())
    }
}

/// An array that must have one entry per token.
///
/// # Errors
/// [`Error::GgufMalformed`] naming the key and both lengths.
fn check_parallel_array(key: &str, len: usize, n_tokens: usize) -> Result<()> {
    if len == n_tokens {
        return Ok(());
    }
    Err(Error::GgufMalformed {
        reason: format!(
            "{key} has {len} entries but tokenizer.ggml.tokens has {n_tokens}: one per token \
             expected"
        ),
    })
}

/// Adds the bos, eos, unk and pad tokens the file names that are not added tokens yet, as
/// special tokens (transformers adds its named special tokens the same way).
fn add_named_special_tokens(inner: &mut Tokenizer, meta: &GgufTokenizerMetadata<'_>) {
    let already: HashSet<String> =
        inner.get_added_tokens_decoder().into_values().map(|t| t.content).collect();
    let mut named: Vec<AddedToken> = Vec::new();
    let special = meta.special;
    for text in [special.bos, special.eos, special.unk, special.pad].map(|id| meta.text_of(id)) {
        if let Some(text) = text
            && !already.contains(text)
            && !named.iter().any(|t| t.content == text)
        {
            named.push(special_token(text));
        }
    }
    inner.add_special_tokens(&named);
}

/// Installs the post-processor adding the bos / eos token when `tokenizer.ggml.add_bos_token`
/// / `add_eos_token` say so; absent flags mean `add_bos_default` and false.
fn set_post_processor(
    file: &GgufFile,
    inner: &mut Tokenizer,
    meta: &GgufTokenizerMetadata<'_>,
    add_bos_default: bool,
) -> Result<()> {
    let add_bos = file.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
    let add_eos = file.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let bos = meta.text_of(meta.special.bos).filter(|_| add_bos);
    let eos = meta.text_of(meta.special.eos).filter(|_| add_eos);
    let post = template(inner, bos, eos)?;
    inner.with_post_processor(Some(post));
    Ok(())
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
        for (_, regex) in SPLIT_REGEX_PRE {
            Split::new(
                SplitPattern::Regex((*regex).to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .unwrap();
        }
        assert_eq!(
            pre_tokenizer_kind(Some("llama-bpe")).unwrap(),
            PreTokenizerKind::Split(LLAMA3_SPLIT)
        );
        assert_eq!(
            pre_tokenizer_kind(Some("qwen2")).unwrap(),
            PreTokenizerKind::Split(QWEN2_SPLIT)
        );
        assert_eq!(pre_tokenizer_kind(Some("smollm")).unwrap(), PreTokenizerKind::Gpt2);
        assert_eq!(pre_tokenizer_kind(None).unwrap(), PreTokenizerKind::Gpt2);
        let err = pre_tokenizer_kind(Some("deepseek-llm")).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedTokenizer { model, supported }
                if model.contains("\"deepseek-llm\"") && supported.contains("llama-bpe")),
            "{err}"
        );
    }
}
