//! SmolLM2-135M-Instruct from its real GGUF file: the prediction, the captured attention, the
//! LanguageModel contract, precisions, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, OnceLock};

use explain_models::{AnyModel, LoadOptions, Precision, load, load_with, smollm2_gguf_path};
use explainability_core::{
    Architecture, Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel,
};
use tch::{Kind, Tensor};

/// One model per test binary (loading dequantises 98 MB); tests take turns.
fn model() -> std::sync::MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    let m = MODEL.get_or_init(|| {
        Mutex::new(load(smollm2_gguf_path()).expect("SmolLM2 GGUF (run `cargo xtask setup`)"))
    });
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn facts_come_from_the_file() {
    let model = model();
    let info = model.info();
    assert_eq!(info.architecture, Architecture::Llama);
    assert_eq!(
        (info.n_layers, info.n_heads, info.n_kv_heads, info.d_model, info.d_head, info.d_mlp),
        (30, 9, 3, 576, 64, 1536)
    );
    assert_eq!(info.vocab_size, 49152);
    assert_eq!(info.max_positions, 8192);
    assert!(info.causal);
    assert_eq!(info.special_tokens.bos, Some(1));
    assert_eq!(info.special_tokens.eos, Some(2));
    let config = model.as_decoder().unwrap().transformer().config();
    assert_eq!(config.rope(0).unwrap().theta, 100_000.0);
    assert!(config.tie_embeddings);
}

#[test]
fn the_capital_of_france_is_paris() {
    let model = model();
    let top = model.top_next_tokens("The capital of France is", 5).unwrap();
    assert_eq!(top[0].token, " Paris");
    assert_eq!(top[0].id, 7042);
    // Transformers gives logit 17.3713 for " Paris" on the same weights.
    assert!((top[0].logit - 17.3713).abs() < 1e-2, "logit {}", top[0].logit);
    let total: f64 = top.iter().map(|p| p.probability).sum();
    assert!(total <= 1.0 + 1e-9);
    assert!(top.windows(2).all(|w| w[0].probability >= w[1].probability));
}

#[test]
fn greedy_continuation_is_paris_full_stop() {
    let model = model();
    let mut ids = model.encode("The capital of France is", true).unwrap();
    let _guard = tch::no_grad_guard();
    for _ in 0..2 {
        let t = Tensor::from_slice(&ids).unsqueeze(0);
        let out = model.forward_ids(&t, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
        ids.push(out.logits.select(1, -1).argmax(-1, false).int64_value(&[0]));
    }
    assert_eq!(model.decode(&ids[ids.len() - 2..]).unwrap(), " Paris.");
}

#[test]
fn every_captured_pattern_is_a_causal_distribution_per_query_head() {
    let model = model();
    let (out, cache) = model
        .run_with_cache(
            "Attention patterns must be real probabilities.",
            HookFilter::kind(HookKind::Pattern),
        )
        .unwrap();
    let t = out.logits.size()[1];
    assert_eq!(cache.len(), 30);
    for (point, pattern) in cache.iter() {
        assert_eq!(pattern.size(), vec![1, 9, t, t], "{point}: per query head");
        let sums = pattern.sum_dim_intlist(-1, false, Kind::Double);
        let dev = (&sums - 1.0).abs().max().double_value(&[]);
        assert!(dev < 1e-5, "{point}: rows sum to 1 (off by {dev})");
        assert_eq!(pattern.triu(1).abs().max().double_value(&[]), 0.0, "{point}: future is 0");
    }
}

#[test]
fn capturing_patterns_does_not_change_the_logits() {
    let model = model();
    let ids = model.ids_tensor("Fused and explicit attention agree.").unwrap();
    let _guard = tch::no_grad_guard();
    let plain = model.forward_ids(&ids, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
    let explicit = model.forward_ids(&ids, &ForwardOptions::default(), &mut hooks).unwrap();
    let diff = (&plain.logits - &explicit.logits).abs().max().double_value(&[]);
    assert!(diff < 1e-3, "fused vs explicit logits differ by {diff}");
}

#[test]
fn zeroing_every_head_through_hook_z_removes_paris() {
    let model = model();
    let ids = model.ids_tensor("The capital of France is").unwrap();
    let _guard = tch::no_grad_guard();
    let base = model.forward_ids(&ids, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    // Zero every head of every layer's z: the model loses all attention and no longer
    // predicts " Paris".
    let mut hooks = Hooks::new();
    hooks.replace(HookFilter::kind(HookKind::Z), |_, z| Ok(z.zeros_like()));
    let ablated = model.forward_ids(&ids, &ForwardOptions::default(), &mut hooks).unwrap();
    let top = |o: &explainability_core::ModelOutput| {
        o.logits.select(1, -1).argmax(-1, false).int64_value(&[0])
    };
    assert_eq!(top(&base), 7042);
    assert_ne!(top(&ablated), 7042);
}

#[test]
fn logit_lens_through_unembed_reproduces_the_logits() {
    let model = model();
    let (out, cache) =
        model.run_with_cache("Paris is in", HookFilter::point(HookPoint::ln_final())).unwrap();
    let relogits = model.unembed(cache.require(&HookPoint::ln_final()).unwrap()).unwrap();
    assert!((&relogits - &out.logits).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn bf16_predicts_paris_too() {
    let model =
        load_with(smollm2_gguf_path(), LoadOptions::default().precision(Precision::Bf16)).unwrap();
    assert_eq!(model.kind(), Kind::BFloat16);
    let top = model.top_next_tokens("The capital of France is", 1).unwrap();
    assert_eq!(top[0].token, " Paris");
}

#[test]
fn bad_input_is_a_typed_error() {
    let model = model();
    assert!(matches!(model.encode("", true), Err(Error::EmptyText)));
    assert!(matches!(model.top_next_tokens("", 3), Err(Error::EmptyText)));
    assert!(matches!(model.top_next_tokens("x", 0), Err(Error::InvalidArgument { .. })));
    let long = "word ".repeat(9000);
    assert!(matches!(
        model.top_next_tokens(&long, 3),
        Err(Error::SequenceTooLong { len, max: 8192 }) if len > 8192
    ));
    assert!(matches!(
        model.decode(&[1, 49152]),
        Err(Error::TokenOutOfRange { id: 49152, vocab_size: 49152 })
    ));
    assert!(matches!(model.token_strings(&[-3]), Err(Error::TokenOutOfRange { id: -3, .. })));
    let ids = Tensor::from_slice(&[1i64, 60_000]).unsqueeze(0);
    assert!(matches!(
        model.forward_ids(&ids, &ForwardOptions::default(), &mut Hooks::new()),
        Err(Error::TokenOutOfRange { id: 60_000, .. })
    ));
    assert!(matches!(model.info().check_layer(30), Err(Error::LayerOutOfRange { .. })));
}
