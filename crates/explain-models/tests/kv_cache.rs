//! The key/value cache (`ForwardOptions::past_key_values` / `return_key_values`): a forward
//! that continues from a prefix's keys and values equals full recomputation, on seeded tiny
//! models of every decoder family (Llama, Mistral with a sliding window, Qwen2 with q/k/v
//! biases, Qwen3 with q/k norms, Gemma 3 with sliding and global layers, soft-capping and
//! sandwich norms, GPT-2 with learned positions) and on SmolLM2; with padding masks, explicit
//! position ids, a cache shared by a batch, and the typed errors (BERT refuses, malformed
//! caches are named).
//!
//! Tolerance: 1e-4 absolute on f32 logits (SmolLM2: 2e-4 on logits of magnitude ~20). The
//! cached and the full forward compute the same sums over different matrix shapes (a
//! continuation multiplies `[new, past + new]` scores instead of `[all, all]`), so they agree
//! up to float reassociation, as batching does (tested at 1e-4 elsewhere).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_models::{Decoder, DecoderConfig, Family, HfConfig, LoadOptions};
use explainability_core::{
    Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, KeyValueCache, LanguageModel,
};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn config(family: Family, json: serde_json::Value) -> DecoderConfig {
    family.config_from_hf(&HfConfig::from_json(json).unwrap()).unwrap()
}

/// One tiny configuration per family, small enough that a window of 3 is shorter than the
/// inputs.
fn families() -> Vec<(&'static str, DecoderConfig)> {
    let llama_like = |model_type: &str| {
        json!({
            "model_type": model_type, "hidden_size": 32, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 48, "num_hidden_layers": 2,
            "vocab_size": 97, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
        })
    };
    let mut mistral = llama_like("mistral");
    mistral["sliding_window"] = json!(3);
    let mut qwen2 = llama_like("qwen2");
    qwen2["attention_bias"] = json!(true);
    let mut qwen3 = llama_like("qwen3");
    qwen3["head_dim"] = json!(16);
    vec![
        ("llama", config(Family::Llama, llama_like("llama"))),
        ("mistral (window 3)", config(Family::Mistral, mistral)),
        ("qwen2", config(Family::Qwen2, qwen2)),
        ("qwen3", config(Family::Qwen3, qwen3)),
        (
            "gemma3 (window 3, soft-capping)",
            config(
                Family::Gemma3,
                json!({
                    "model_type": "gemma3_text", "hidden_size": 32, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
                    "num_hidden_layers": 6, "vocab_size": 97, "max_position_embeddings": 64,
                    "sliding_window": 3, "query_pre_attn_scalar": 10, "rms_norm_eps": 1e-6,
                    "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                }),
            ),
        ),
        (
            "gpt2 (learned positions)",
            config(
                Family::Gpt2,
                json!({
                    "model_type": "gpt2", "n_embd": 32, "n_head": 4, "n_layer": 2,
                    "vocab_size": 97, "n_positions": 64,
                }),
            ),
        ),
    ]
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

const IDS: [i64; 10] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3];

/// Full forward vs prefix-then-continuation at every split, through both attention paths.
fn check_continuation(name: &str, model: &Decoder, ids: &[i64], tol: f64) {
    let _guard = tch::no_grad_guard();
    let all = model.embed(&Tensor::from_slice(ids).unsqueeze(0)).unwrap();
    let n = ids.len() as i64;
    let full = model.forward(&all, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    assert!(full.key_values.is_none(), "{name}: keys and values only when asked");
    for split in [1, n / 2, n - 1] {
        let prefix_options = ForwardOptions { return_key_values: true, ..Default::default() };
        let prefix =
            model.forward(&all.narrow(1, 0, split), &prefix_options, &mut Hooks::new()).unwrap();
        let cache = prefix.key_values.unwrap();
        assert_eq!(cache.len(), split as usize);
        assert_eq!(cache.layers.len(), model.config().n_layers);
        let diff = max_abs_diff(&prefix.logits, &full.logits.narrow(1, 0, split));
        assert!(diff < tol, "{name}: prefix logits differ by {diff}");
        let options = ForwardOptions {
            past_key_values: Some(cache.shallow_clone()),
            return_key_values: true,
            ..Default::default()
        };
        let rest = all.narrow(1, split, n - split);
        let fused = model.forward(&rest, &options, &mut Hooks::new()).unwrap();
        let expected = full.logits.narrow(1, split, n - split);
        let diff = max_abs_diff(&fused.logits, &expected);
        assert!(diff < tol, "{name}: continuation after {split} differs by {diff} (fused)");
        assert_eq!(fused.key_values.as_ref().unwrap().len(), n as usize, "past + new");
        // The explicit path (a pattern hook) sees [new, past + new] probabilities.
        let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
        let explicit = model.forward(&rest, &options, &mut hooks).unwrap();
        let diff = max_abs_diff(&explicit.logits, &expected);
        assert!(diff < tol, "{name}: continuation after {split} differs by {diff} (explicit)");
        let pattern = hooks.take_cache().get(&HookPoint::pattern(0)).unwrap().shallow_clone();
        let heads = model.config().attention.n_heads as i64;
        assert_eq!(pattern.size(), [1, heads, n - split, n]);
    }
}

#[test]
fn continuation_equals_full_recomputation_for_every_family() {
    for (name, config) in families() {
        let model = Decoder::random(config, 11, Kind::Float, Device::Cpu).unwrap();
        check_continuation(name, &model, &IDS, 1e-4);
    }
}

#[test]
fn a_shared_prefix_serves_a_padded_batch_with_explicit_positions() {
    // Two continuations of one cached prefix, the second right-padded and the third with
    // position ids that skip (as after deleting a token): each row equals its own full run.
    for (name, config) in families() {
        let model = Decoder::random(config, 12, Kind::Float, Device::Cpu).unwrap();
        let _guard = tch::no_grad_guard();
        let prefix_ids = [7i64, 8, 9, 10];
        let embed = |ids: &[i64]| model.embed(&Tensor::from_slice(ids).unsqueeze(0)).unwrap();
        let opts = ForwardOptions { return_key_values: true, ..Default::default() };
        let cache = model.forward(&embed(&prefix_ids), &opts, &mut Hooks::new()).unwrap();
        let cache = cache.key_values.unwrap().repeat_row(0, 2).unwrap();
        let suffixes = [[20i64, 21, 22], [30, 31, 0]];
        let batch = Tensor::cat(&[embed(&suffixes[0]), embed(&suffixes[1])], 0);
        let mask = Tensor::from_slice2(&[[1i64, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]]);
        let options = ForwardOptions {
            past_key_values: Some(cache),
            attention_mask: Some(mask),
            ..Default::default()
        };
        let out = model.forward(&batch, &options, &mut Hooks::new()).unwrap();
        for (row, suffix) in suffixes.iter().enumerate() {
            let real = if row == 0 { 3 } else { 2 };
            let ids: Vec<i64> = prefix_ids.iter().chain(&suffix[..real]).copied().collect();
            let full = model.forward(&embed(&ids), &ForwardOptions::default(), &mut Hooks::new());
            let expected = full.unwrap().logits.narrow(1, 4, real as i64);
            let got = out.logits.get(row as i64).unsqueeze(0).narrow(1, 0, real as i64);
            let diff = max_abs_diff(&got, &expected);
            assert!(diff < 1e-4, "{name}: padded row {row} differs by {diff}");
        }
        // Explicit positions: a continuation at positions 5, 6 after a 4-token prefix equals
        // a full forward with positions 0..4, 5, 6.
        let cache = model.forward(&embed(&prefix_ids), &opts, &mut Hooks::new()).unwrap();
        let options = ForwardOptions {
            past_key_values: cache.key_values,
            position_ids: Some(Tensor::from_slice2(&[[5i64, 6]])),
            ..Default::default()
        };
        let got = model.forward(&embed(&[40, 41]), &options, &mut Hooks::new()).unwrap();
        let full_options = ForwardOptions {
            position_ids: Some(Tensor::from_slice2(&[[0i64, 1, 2, 3, 5, 6]])),
            ..Default::default()
        };
        let full = model.forward(&embed(&[7, 8, 9, 10, 40, 41]), &full_options, &mut Hooks::new());
        let diff = max_abs_diff(&got.logits, &full.unwrap().logits.narrow(1, 4, 2));
        assert!(diff < 1e-4, "{name}: explicit positions differ by {diff}");
    }
}

#[test]
fn malformed_caches_and_encoders_are_typed_errors() {
    let (_, config) = families().remove(0);
    let model = Decoder::random(config, 13, Kind::Float, Device::Cpu).unwrap();
    let _guard = tch::no_grad_guard();
    let e = model.embed(&Tensor::from_slice(&IDS).unsqueeze(0)).unwrap();
    let opts = ForwardOptions { return_key_values: true, ..Default::default() };
    let cache = model.forward(&e, &opts, &mut Hooks::new()).unwrap().key_values.unwrap();
    // Too few layers.
    let short =
        KeyValueCache { layers: cache.shallow_clone().layers.into_iter().take(1).collect() };
    let options = ForwardOptions { past_key_values: Some(short), ..Default::default() };
    let err = model.forward(&e, &options, &mut Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // A cache of another batch size.
    let options = ForwardOptions {
        past_key_values: Some(cache.repeat_row(0, 2).unwrap()),
        ..Default::default()
    };
    let err = model.forward(&e, &options, &mut Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // An attention mask that covers only the new positions.
    let options = ForwardOptions {
        past_key_values: Some(cache.shallow_clone()),
        attention_mask: Some(Tensor::ones([1, 10], (Kind::Int64, Device::Cpu))),
        ..Default::default()
    };
    let err = model.forward(&e, &options, &mut Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // Past plus new beyond the context window (64).
    let long = model.embed(&Tensor::zeros([1, 60], (Kind::Int64, Device::Cpu))).unwrap();
    let options =
        ForwardOptions { past_key_values: Some(cache.shallow_clone()), ..Default::default() };
    let err = model.forward(&long, &options, &mut Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::SequenceTooLong { len: 70, max: 64 }), "{err}");
    // Prefix and repeat arguments.
    assert!(matches!(cache.prefix(11), Err(Error::InvalidArgument { .. })));
    assert!(matches!(cache.repeat_row(1, 2), Err(Error::InvalidArgument { .. })));
    assert_eq!(cache.prefix(4).unwrap().len(), 4);
    // A bidirectional encoder refuses (its earlier positions depend on later ones).
    let bert =
        explain_models::load_with(explain_models::minilm_dir(), LoadOptions::default()).unwrap();
    assert!(!bert.supports_key_value_cache());
    let ids = bert.ids_tensor("hello world").unwrap();
    let err = bert.forward_ids(&ids, &opts, &mut Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedOperation { .. }), "{err}");
}

#[test]
fn smollm2_continuation_equals_full_recomputation() {
    let model = explain_models::load(explain_models::smollm2_gguf_path()).unwrap();
    assert!(model.supports_key_value_cache());
    let ids = model
        .encode("The Eiffel Tower is located in the city of Paris, which is the capital of", true)
        .unwrap();
    let _guard = tch::no_grad_guard();
    let all = model.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap();
    let n = ids.len() as i64;
    let full = model.forward_embeddings(&all, &ForwardOptions::default(), &mut Hooks::new());
    let full = full.unwrap().logits;
    let split = n / 2;
    let opts = ForwardOptions { return_key_values: true, ..Default::default() };
    let prefix = model.forward_embeddings(&all.narrow(1, 0, split), &opts, &mut Hooks::new());
    let options =
        ForwardOptions { past_key_values: prefix.unwrap().key_values, ..Default::default() };
    let rest =
        model.forward_embeddings(&all.narrow(1, split, n - split), &options, &mut Hooks::new());
    let diff = max_abs_diff(&rest.unwrap().logits, &full.narrow(1, split, n - split));
    assert!(diff < 2e-4, "SmolLM2 continuation differs by {diff}");
}
