//! The byte-level BPE tokenizer built from SmolLM2's GGUF metadata, against ids that
//! transformers 5.24 gives from the same file (the full 80+ string corpus runs in
//! `cargo xtask parity`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_models::{GgufFile, TextTokenizer, smollm2_gguf_path};
use explainability_core::Error;

fn tokenizer() -> TextTokenizer {
    let file = GgufFile::open(smollm2_gguf_path()).expect("SmolLM2 (run `cargo xtask setup`)");
    TextTokenizer::from_gguf(&file).unwrap()
}

#[test]
fn ids_match_transformers_on_tricky_strings() {
    let tok = tokenizer();
    let cases: &[(&str, &[i64])] = &[
        ("The capital of France is", &[504, 3575, 282, 4649, 314]),
        ("人工智能", &[40249, 36149, 115, 177, 243, 135, 47093]),
        ("  two  spaces\n\n", &[216, 827, 216, 5600, 1116]),
        ("12345 3.14", &[33, 34, 35, 36, 37, 216, 35, 30, 33, 36]),
        ("héllo wörld", &[88, 2756, 31394, 267, 29989, 400]),
        ("👍🏽 ok", &[10813, 235, 231, 10813, 233, 138, 10907]),
        ("<|im_start|>user\nhi<|im_end|>", &[1, 4093, 198, 6004, 2]),
        ("def f(x):\n    return x**2", &[1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34]),
        ("don't I'M", &[12420, 982, 339, 23, 61]),
    ];
    for (text, ids) in cases {
        let got = tok.encode(text, true).unwrap();
        assert_eq!(&got, ids, "{text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), *text, "decode round-trips {text:?}");
    }
}

#[test]
fn special_tokens_and_vocabulary() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49152);
    let special = tok.special_tokens();
    assert_eq!(
        (special.bos, special.eos, special.pad, special.unk),
        (Some(1), Some(2), Some(2), Some(0))
    );
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.id_to_token(7042).as_deref(), Some("ĠParis"));
    // SmolLM2's GGUF says add_bos_token = false: nothing is added.
    assert_eq!(tok.encode("hello", true).unwrap(), vec![28120]);
    assert_eq!(tok.decode(&[1, 28120, 2], true).unwrap(), "hello", "skips special tokens");
}

#[test]
fn token_strings_are_readable_one_per_token() {
    let tok = tokenizer();
    let ids = tok.encode("The capital of 人工", false).unwrap();
    let strings = tok.token_strings(&ids).unwrap();
    assert_eq!(strings.len(), ids.len());
    assert_eq!(&strings[..3], &["The", " capital", " of"], "{strings:?}");
    // A fragment of a multi-byte character shows its byte-level piece, not U+FFFD.
    assert!(strings.iter().all(|s| !s.contains('\u{FFFD}')), "{strings:?}");
}

#[test]
fn out_of_range_ids_are_typed_errors() {
    let tok = tokenizer();
    assert!(matches!(
        tok.decode(&[49152], false),
        Err(Error::TokenOutOfRange { id: 49152, vocab_size: 49152 })
    ));
    assert!(matches!(tok.token_strings(&[-1]), Err(Error::TokenOutOfRange { id: -1, .. })));
    assert!(tok.id_to_token(-5).is_none());
    assert_eq!(tok.encode("", true).unwrap(), Vec::<i64>::new());
}
