//! The real Gemma 3 270M Q4_K_M GGUF (F32, Q5_0, Q4_K, Q6_K and Q8_0 tensors, SentencePiece
//! tokenizer, sliding-window and global layers, sandwich norms): what it predicts, against the
//! values transformers 5.24 gives on the same file (refs/gguf-kquants-gemma3.md §5). The full
//! logits / attention / hidden-state comparison is in `tests/parity.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, OnceLock};

use explain_models::{AnyModel, LoadOptions, Precision, gemma3_gguf_path, load, load_with};
use explainability_core::{
    Architecture, ForwardOptions, HookFilter, HookKind, Hooks, LanguageModel,
};
use tch::Kind;

fn model() -> std::sync::MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Mutex::new(load(gemma3_gguf_path()).expect("Gemma 3 GGUF (cargo xtask setup)"))
        })
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn facts_of_the_file() {
    let model = model();
    let info = model.info();
    assert_eq!(info.architecture, Architecture::Gemma3);
    assert_eq!(
        (info.n_layers, info.n_heads, info.n_kv_heads, info.d_model, info.d_head, info.d_mlp),
        (18, 4, 1, 640, 256, 2048)
    );
    assert_eq!(info.vocab_size, 262_144);
    assert_eq!(info.special_tokens.bos, Some(2));
    let config = model.as_decoder().unwrap().transformer().config();
    let global: Vec<usize> = (0..18).filter(|&l| !config.is_sliding(l)).collect();
    assert_eq!(global, [5, 11, 17]);
    assert_eq!(config.attention.sliding_window, Some(512));
    assert!((config.attention.scale - 1.0 / 16.0).abs() < 1e-15);
    // The tied head is the embedding tensor itself, not a copy.
    assert!(config.tie_embeddings);
    assert!(!model.named_parameters().iter().any(|(n, _)| n == "unembed.W_U"));
}

#[test]
fn the_capital_of_france_top_five_as_transformers() {
    let model = model();
    let ids = model.encode("The capital of France is", true).unwrap();
    assert_eq!(ids, [2, 818, 5279, 529, 7001, 563]);
    let top = model.top_next_tokens("The capital of France is", 5).unwrap();
    let tokens: Vec<&str> = top.iter().map(|p| p.token.as_str()).collect();
    assert_eq!(tokens, [" the", " a", " Paris", " one", " known"]);
    // transformers' logits on the same file (3 decimals in the reference): ours agree to the
    // rounding of the reference plus f32 summation-order noise.
    let out = model
        .forward_ids(
            &tch::Tensor::from_slice(&ids).unsqueeze(0),
            &ForwardOptions::default(),
            &mut Hooks::new(),
        )
        .unwrap();
    let last = out.logits.get(0).get(5);
    for (id, expected) in
        [(506, 19.091), (496, 18.548), (9079, 18.269), (886, 18.113), (3224, 17.784)]
    {
        let got = last.double_value(&[id]);
        assert!((got - expected).abs() < 2e-3, "logit of {id}: {got} vs {expected}");
    }
    let mean = last.mean(Kind::Double).double_value(&[]);
    assert!((mean - (-4.0016)).abs() < 1e-3, "logit mean {mean}");
}

#[test]
fn gold_is_au_and_bf16_agrees() {
    let top = model().top_next_tokens("The chemical symbol for gold is", 2).unwrap();
    assert_eq!(top[0].token, " Au");
    assert_eq!(top[1].token, " gold");
    let bf16 =
        load_with(gemma3_gguf_path(), LoadOptions::default().precision(Precision::Bf16)).unwrap();
    assert_eq!(bf16.kind(), Kind::BFloat16);
    let top = bf16.top_next_tokens("The chemical symbol for gold is", 1).unwrap();
    assert_eq!(top[0].token, " Au");
    // Every hook fires on the real file, post-norms included.
    let mut hooks =
        Hooks::caching(HookFilter::kind(HookKind::Ln1Post).or(HookFilter::kind(HookKind::Pattern)));
    let ids = bf16.encode("Hello world", true).unwrap();
    bf16.forward_ids(
        &tch::Tensor::from_slice(&ids).unsqueeze(0),
        &ForwardOptions::default(),
        &mut hooks,
    )
    .unwrap();
    assert_eq!(hooks.cached().len(), 36);
}
