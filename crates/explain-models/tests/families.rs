//! The one decoder's configuration space on tiny seeded models: every family's config
//! constructor, fused vs explicit attention with sliding windows and custom scales, the two
//! RoPE pairings, the RoPE scaling rules, sandwich-norm hook points, and the typed errors of
//! configs and paths (unknown family, unknown RoPE scaling, a window of 0, Ollama names).
//! Parity with transformers for Gemma 3, Qwen3 and Llama 3 is in `tests/parity.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_models::{
    Decoder, DecoderConfig, Family, HfConfig, LayerAttention, LoadOptions, OLLAMA_MODELS_ENV,
    RopePairing, RopeScaling, load_with, minilm_dir,
};
use explainability_core::{Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks};
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn gemma3_json() -> serde_json::Value {
    json!({
        "model_type": "gemma3_text", "hidden_size": 32, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
        "num_hidden_layers": 6, "vocab_size": 97, "max_position_embeddings": 64,
        "sliding_window": 3, "query_pre_attn_scalar": 10, "rms_norm_eps": 1e-6,
    })
}

fn config(family: Family, json: serde_json::Value) -> DecoderConfig {
    family.config_from_hf(&HfConfig::from_json(json).unwrap()).unwrap()
}

fn ids(values: &[i64]) -> Tensor {
    Tensor::from_slice(values).unsqueeze(0)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn gemma3_config_has_its_pattern_scales_and_norms() {
    let c = config(Family::Gemma3, gemma3_json());
    let sliding: Vec<bool> = (0..6).map(|l| c.is_sliding(l)).collect();
    assert_eq!(sliding, [true, true, true, true, true, false], "(l + 1) % 6 != 0 is local");
    assert_eq!(c.rope(0).unwrap().theta, 10_000.0, "local base");
    assert_eq!(c.rope(5).unwrap().theta, 1_000_000.0, "global base");
    assert!((c.attention.scale - 10f64.powf(-0.5)).abs() < 1e-15, "query_pre_attn_scalar");
    assert_eq!(c.embedding_scale, Some(32f64.sqrt()));
    assert!(c.sandwich_norms && c.attention.qk_norm && c.tie_embeddings);
    // 4.5x spelling: rope_local_base_freq + rope_scaling on global layers only.
    let mut old = gemma3_json();
    old["rope_local_base_freq"] = json!(5000.0);
    old["rope_theta"] = json!(2_000_000.0);
    old["rope_scaling"] = json!({"rope_type": "linear", "factor": 8.0});
    let c = config(Family::Gemma3, old);
    assert_eq!(c.rope(0).unwrap().scaling, RopeScaling::None);
    assert_eq!(c.rope(0).unwrap().theta, 5000.0);
    assert_eq!(c.rope(5).unwrap().scaling, RopeScaling::Linear { factor: 8.0 });
    assert_eq!(c.rope(5).unwrap().theta, 2_000_000.0);
}

#[test]
fn fused_attention_equals_explicit_with_windows_scales_and_padding() {
    let model = Decoder::random(config(Family::Gemma3, gemma3_json()), 3, Kind::Float, Device::Cpu)
        .unwrap();
    let e = model.embed(&ids(&[3, 1, 4, 1, 5, 9, 2, 6])).unwrap();
    let fused = model.forward(&e, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
    let explicit = model.forward(&e, &ForwardOptions::default(), &mut hooks).unwrap();
    let diff = max_abs_diff(&fused.logits, &explicit.logits);
    assert!(diff < 1e-4, "fused and explicit paths differ by {diff}");
    // Local layers see exactly the last 3 keys (the query's own included); the global one all.
    let cache = hooks.take_cache();
    for layer in 0..6 {
        let p = cache.get(&HookPoint::pattern(layer)).unwrap().get(0);
        let beyond = p.tril(-3).abs().sum(Kind::Double).double_value(&[]);
        let within = p.narrow(1, 7, 1).narrow(2, 0, 5).sum(Kind::Double).double_value(&[]);
        if layer == 5 {
            assert!(within > 0.0, "the global layer reaches far keys");
        } else {
            assert_eq!(beyond, 0.0, "layer {layer} attends outside its window");
        }
    }
    // With padding (the mask path of the fused kernel).
    let options = ForwardOptions {
        attention_mask: Some(Tensor::from_slice2(&[[1i64, 1, 1, 1, 1, 1, 0, 0]])),
        ..Default::default()
    };
    let fused = model.forward(&e, &options, &mut Hooks::new()).unwrap();
    let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
    let explicit = model.forward(&e, &options, &mut hooks).unwrap();
    let diff = max_abs_diff(&fused.logits.narrow(1, 0, 6), &explicit.logits.narrow(1, 0, 6));
    assert!(diff < 1e-4, "padded: fused and explicit differ by {diff}");
}

#[test]
fn sandwich_norms_fire_their_own_hooks_and_attn_out_is_what_the_residual_gets() {
    let model = Decoder::random(config(Family::Gemma3, gemma3_json()), 4, Kind::Float, Device::Cpu)
        .unwrap();
    let mut hooks = Hooks::caching(HookFilter::all());
    let e = model.embed(&ids(&[5, 6, 7])).unwrap();
    model.forward(&e, &ForwardOptions::default(), &mut hooks).unwrap();
    let cache = hooks.take_cache();
    assert_eq!(cache.len(), HookPoint::all(6).len(), "every point, post-norms included");
    for l in 0..6 {
        let get = |p: HookPoint| cache.get(&p).unwrap().shallow_clone();
        let post = get(HookPoint::new(HookKind::Ln1Post, l));
        assert!(post.equal(&get(HookPoint::attn_out(l))));
        let mid = get(HookPoint::resid_pre(l)) + get(HookPoint::attn_out(l));
        assert!(mid.allclose(&get(HookPoint::resid_mid(l)), 1e-6, 1e-6, false));
        assert!(
            get(HookPoint::new(HookKind::Ln2Post, l)).equal(&get(HookPoint::mlp_out(l))),
            "hook_mlp_out is the post-normed MLP output"
        );
    }
    // Embeddings carry Gemma's √d_model scale.
    let raw = &model.named_parameters()[0].1;
    let expected = raw.get(5) * 32f64.sqrt();
    assert!(e.get(0).get(0).allclose(&expected, 1e-5, 1e-6, false));
}

#[test]
fn gptj_pairing_on_permuted_rows_equals_neox_pairing() {
    // llama.cpp's Llama GGUFs permute q/k rows so that adjacent pairs rotate together: the
    // GPT-J pairing on permuted rows must equal the half-split pairing on the original rows.
    let base: DecoderConfig = explain_models::LlamaConfig {
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        d_model: 16,
        d_head: 8,
        d_mlp: 24,
        vocab_size: 50,
        max_positions: 16,
        rope_theta: 100.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        attention_bias: false,
    }
    .into();
    let neox = Decoder::random(base.clone(), 9, Kind::Float, Device::Cpu).unwrap();
    let mut ckpt = Decoder::random_checkpoint(&base, 9).unwrap();
    // Permute rows per head: (pair, half) → (half, pair), i.e. llama.cpp's `permute`.
    let permute = |w: Tensor, heads: i64| {
        let (rows, cols) = (w.size()[0], w.size()[1]);
        w.reshape([heads, 2, rows / heads / 2, cols]).transpose(1, 2).reshape([rows, cols])
    };
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in std::mem::take(&mut ckpt).into_tensors().unwrap() {
        let t = match name.as_str() {
            "blocks.0.attn.W_Q" => permute(t, 2),
            "blocks.0.attn.W_K" => permute(t, 1),
            _ => t,
        };
        tensors.push((name, t));
    }
    for (name, t) in tensors {
        ckpt.insert(name, t);
    }
    let mut gptj_config = base;
    if let explain_models::Positions::Rotary { pairing, .. } = &mut gptj_config.positions {
        *pairing = RopePairing::GptJ;
    }
    let gptj = Decoder::from_checkpoint(
        gptj_config,
        ckpt,
        explain_models::WeightNames::Canonical,
        Kind::Float,
        Device::Cpu,
    )
    .unwrap();
    let t = ids(&[1, 2, 3, 4, 5, 6]);
    let a = neox.forward(&neox.embed(&t).unwrap(), &ForwardOptions::default(), &mut Hooks::new());
    let b = gptj.forward(&gptj.embed(&t).unwrap(), &ForwardOptions::default(), &mut Hooks::new());
    let diff = max_abs_diff(&a.unwrap().logits, &b.unwrap().logits);
    assert!(diff < 1e-5, "pairings disagree by {diff}");
}

#[test]
fn rope_scaling_rules_change_angles_as_defined() {
    // With positions beyond the original context, llama3 and linear scaling change the
    // logits; with factor 1 they do not.
    let json = |rope: serde_json::Value| {
        json!({
            "model_type": "llama", "hidden_size": 32, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 48, "num_hidden_layers": 1,
            "vocab_size": 50, "max_position_embeddings": 64, "rope_parameters": rope,
        })
    };
    let run = |rope: serde_json::Value| {
        let m = Decoder::random(config(Family::Llama, json(rope)), 5, Kind::Float, Device::Cpu)
            .unwrap();
        let t = ids(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        m.forward(&m.embed(&t).unwrap(), &ForwardOptions::default(), &mut Hooks::new())
            .unwrap()
            .logits
    };
    let plain = run(json!({"rope_type": "default", "rope_theta": 10000.0}));
    let unit = run(json!({"rope_type": "linear", "rope_theta": 10000.0, "factor": 1.0}));
    assert!(plain.equal(&unit), "factor 1 is the identity");
    let linear = run(json!({"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}));
    assert!(max_abs_diff(&plain, &linear) > 1e-4);
    let llama3 = run(json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8}));
    assert!(max_abs_diff(&plain, &llama3) > 1e-4);
}

#[test]
fn bad_configs_are_typed_errors() {
    let hf = |j: serde_json::Value| HfConfig::from_json(j).unwrap();
    let mut zero_window = gemma3_json();
    zero_window["sliding_window"] = json!(0);
    assert!(matches!(
        Family::Gemma3.config_from_hf(&hf(zero_window)),
        Err(Error::InvalidConfig { reason }) if reason.contains("sliding_window")
    ));
    let mut yarn = gemma3_json();
    yarn["rope_parameters"] = json!({"full_attention": {"rope_type": "yarn", "factor": 4.0},
        "sliding_attention": {"rope_type": "default"}});
    assert!(matches!(
        Family::Gemma3.config_from_hf(&hf(yarn)),
        Err(Error::UnsupportedRopeScaling { name, .. }) if name == "yarn"
    ));
    let mut missing = gemma3_json();
    missing["rope_parameters"] = json!({"full_attention": {"rope_type": "linear"}});
    assert!(matches!(
        Family::Gemma3.config_from_hf(&hf(missing)),
        Err(Error::MissingMetadata { key, .. }) if key.contains("factor")
    ));
    let mut bad_types = gemma3_json();
    bad_types["layer_types"] = json!(["sliding_attention"]);
    assert!(matches!(
        Family::Gemma3.config_from_hf(&hf(bad_types)),
        Err(Error::MissingMetadata { key, .. }) if key.contains("layer_types")
    ));
    let mut bad_llama3 = json!({
        "model_type": "llama", "hidden_size": 32, "num_attention_heads": 4,
        "intermediate_size": 48, "num_hidden_layers": 1, "vocab_size": 50,
        "max_position_embeddings": 64,
        "rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
            "high_freq_factor": 1.0, "original_max_position_embeddings": 8},
    });
    assert!(matches!(
        Family::Llama.config_from_hf(&hf(bad_llama3.clone())),
        Err(Error::InvalidConfig { reason }) if reason.contains("high_freq_factor")
    ));
    bad_llama3["num_attention_heads"] = json!(0);
    assert!(matches!(
        Family::Llama.config_from_hf(&hf(bad_llama3)),
        Err(Error::InvalidConfig { .. })
    ));
    let mut c = config(Family::Gemma3, gemma3_json());
    c.attention.layers = vec![LayerAttention::Global; 2];
    assert!(
        matches!(c.validate(), Err(Error::InvalidConfig { reason }) if reason.contains("6 layers"))
    );
}

#[test]
fn unknown_families_name_themselves_and_list_the_supported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    match load_with(dir.path(), LoadOptions::default()) {
        Err(e @ Error::UnsupportedArchitecture { .. }) => {
            let text = e.to_string();
            assert!(text.contains("mamba") && text.contains("gemma3") && text.contains("qwen3"));
        }
        other => panic!("expected UnsupportedArchitecture, got {other:?}"),
    }
}

/// Writes an Ollama store: a manifest for `name:tag` pointing at a blob with `blob` bytes.
fn ollama_store(root: &std::path::Path, namespace: &str, name: &str, tag: &str, blob: &[u8]) {
    let hex = "ab".repeat(32);
    let manifests = root.join("manifests/registry.ollama.ai").join(namespace).join(name);
    std::fs::create_dir_all(&manifests).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "layers": [
            {"mediaType": "application/vnd.ollama.image.license", "digest": format!("sha256:{}", "cd".repeat(32))},
            {"mediaType": "application/vnd.ollama.image.model", "digest": format!("sha256:{hex}")},
        ]
    });
    std::fs::write(manifests.join(tag), manifest.to_string()).unwrap();
    std::fs::create_dir_all(root.join("blobs")).unwrap();
    std::fs::write(root.join("blobs").join(format!("sha256-{hex}")), blob).unwrap();
}

#[test]
fn ollama_names_resolve_through_their_manifest() {
    // One test owns the environment variable (tests in this binary run in parallel).
    let store = tempfile::tempdir().unwrap();
    let smollm2 = std::fs::read(explain_models::smollm2_gguf_path()).unwrap();
    ollama_store(store.path(), "library", "smollm2", "135m", &smollm2);
    // SAFETY: no other test of this binary reads or writes OLLAMA_MODELS.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(OLLAMA_MODELS_ENV, store.path());
    }
    let model = load_with("smollm2:135m", LoadOptions::default()).unwrap();
    let top =
        explainability_core::LanguageModel::top_next_tokens(&model, "The capital of France is", 1)
            .unwrap();
    assert_eq!(top[0].token, " Paris");
    // Missing tag, missing blob, malformed manifest: typed errors naming the model.
    assert!(matches!(
        load_with("smollm2:7b", LoadOptions::default()),
        Err(Error::OllamaModel { name, reason }) if name == "smollm2:7b" && reason.contains("manifest")
    ));
    std::fs::remove_file(store.path().join("blobs").join(format!("sha256-{}", "ab".repeat(32))))
        .unwrap();
    assert!(matches!(
        load_with("smollm2:135m", LoadOptions::default()),
        Err(Error::OllamaModel { reason, .. }) if reason.contains("not in")
    ));
    let manifest = store.path().join("manifests/registry.ollama.ai/library/smollm2/135m");
    std::fs::write(&manifest, r#"{"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:../../etc"}]}"#).unwrap();
    assert!(matches!(
        load_with("smollm2:135m", LoadOptions::default()),
        Err(Error::OllamaModel { reason, .. }) if reason.contains("64 hex")
    ));
    std::fs::write(&manifest, vec![b' '; 2 << 20]).unwrap();
    assert!(matches!(
        load_with("smollm2:135m", LoadOptions::default()),
        Err(Error::OllamaModel { reason, .. }) if reason.contains("more than")
    ));
    // A path that exists is never taken for an Ollama name.
    assert!(load_with(minilm_dir(), LoadOptions::default()).is_ok());
    #[allow(unsafe_code)]
    unsafe {
        std::env::remove_var(OLLAMA_MODELS_ENV);
    }
}

#[test]
fn llama_cpp_rope_factors_equal_the_llama3_rule() {
    // llama.cpp writes Llama 3.1's rule into GGUF as one divisor per frequency
    // (`rope_freqs.weight`, computed by its converter as below); the decoder must give the
    // same model either way.
    // head_dim 16 and an original context of 64: wavelengths 6.3 (kept), 33 (interpolated),
    // 172 and beyond (divided).
    let (theta, factor, low, high, original) = (500_000.0f64, 8.0, 1.0, 4.0, 64.0);
    let d_head = 16usize;
    let llama3 = config(
        Family::Llama,
        json!({
            "model_type": "llama", "hidden_size": 32, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": d_head, "intermediate_size": 48,
            "num_hidden_layers": 1, "vocab_size": 50, "max_position_embeddings": 64,
            "rope_parameters": {"rope_type": "llama3", "rope_theta": theta, "factor": factor,
                "low_freq_factor": low, "high_freq_factor": high,
                "original_max_position_embeddings": original},
        }),
    );
    // convert_hf_to_gguf.py `LlamaModel.generate_extra_tensors`.
    let factors: Vec<f64> = (0..d_head / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / d_head as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < original / high {
                1.0
            } else if wavelen > original / low {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect();
    let medium = factors.iter().filter(|&&f| f > 1.0 && f < factor).count();
    assert!(
        factors.contains(&1.0) && factors.contains(&factor) && medium > 0,
        "all three bands occur: {factors:?}"
    );
    let mut gguf_style = llama3.clone();
    if let explain_models::Positions::Rotary { global, .. } = &mut gguf_style.positions {
        global.scaling = RopeScaling::Factors(factors);
    }
    let t = ids(&(0..40).collect::<Vec<i64>>());
    let run = |c: DecoderConfig| {
        let m = Decoder::random(c, 8, Kind::Float, Device::Cpu).unwrap();
        m.forward(&m.embed(&t).unwrap(), &ForwardOptions::default(), &mut Hooks::new())
            .unwrap()
            .logits
    };
    let diff = max_abs_diff(&run(llama3), &run(gguf_style));
    // Both compute f32 frequencies; the factor route divides once more (a few ulp).
    assert!(diff < 1e-4, "llama3 rule and llama.cpp factors differ by {diff}");
}
