//! GPT-2: causal attention, tied head, Conv1D `[in, out]` layout and the `transformer.` key
//! prefix of a Hugging Face folder, hook points, and the context limit. Parity with
//! transformers on a random checkpoint is in `tests/parity.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_models::{AnyModel, Decoder, Gpt2Config, LoadOptions, load_with, minilm_dir};
use explainability_core::{
    Architecture, Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel,
};
use tch::{Device, Kind, Tensor};

fn config() -> Gpt2Config {
    Gpt2Config {
        n_layers: 2,
        n_heads: 4,
        d_model: 16,
        d_mlp: 64,
        vocab_size: 30522,
        max_positions: 32,
        norm_eps: 1e-5,
    }
}

fn run(model: &Decoder, ids: &[i64]) -> (Tensor, Tensor) {
    let ids = Tensor::from_slice(ids).unsqueeze(0);
    let out = model
        .forward(&model.embed(&ids).unwrap(), &ForwardOptions::default(), &mut Hooks::new())
        .unwrap();
    (out.logits, out.final_hidden)
}

#[test]
fn causal_with_tied_head_and_every_hook_point() {
    let model = Decoder::random(config().into(), 3, Kind::Float, Device::Cpu).unwrap();
    let (logits, hidden) = run(&model, &[101, 7, 8, 9]);
    let (logits2, _) = run(&model, &[101, 7, 8, 500]);
    // Earlier positions never see later tokens.
    assert!(logits.narrow(1, 0, 3).allclose(&logits2.narrow(1, 0, 3), 1e-6, 1e-6, false));
    assert!(!logits.get(0).get(3).allclose(&logits2.get(0).get(3), 1e-4, 1e-4, false));
    // Tied head: logits = final_hidden · W_Eᵀ.
    let w_e = &model.named_parameters()[0].1;
    assert!(logits.allclose(&hidden.matmul(&w_e.tr()), 1e-5, 1e-5, false));

    let mut hooks = Hooks::new();
    hooks.cache_detached(HookFilter::all());
    let ids = Tensor::from_slice(&[101_i64, 7, 8]).unsqueeze(0);
    model.forward(&model.embed(&ids).unwrap(), &ForwardOptions::default(), &mut hooks).unwrap();
    let cache = hooks.take_cache();
    let without_post_norms = HookPoint::all(2)
        .into_iter()
        .filter(|p| !matches!(p.kind(), HookKind::Ln1Post | HookKind::Ln2Post))
        .count();
    assert_eq!(cache.len(), without_post_norms);
    let pattern = cache.get(&HookPoint::pattern(1)).unwrap();
    assert_eq!(pattern.size(), vec![1, 4, 3, 3]);
    assert_eq!(pattern.triu(1).abs().max().double_value(&[]), 0.0, "no attention to the future");
    assert_eq!(cache.get(&HookPoint::new(HookKind::Q, 0)).unwrap().size(), vec![1, 3, 4, 4]);
    // hook_embed = token + position embeddings.
    let wpe = &model.named_parameters()[1].1;
    let expected = model.embed(&ids).unwrap() + wpe.narrow(0, 0, 3);
    assert!(cache.get(&HookPoint::embed()).unwrap().allclose(&expected, 1e-6, 1e-6, false));
}

#[test]
fn hugging_face_folder_with_prefix_loads_and_limits_positions() {
    let dir = tempfile::tempdir().unwrap();
    let config_json = r#"{"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 16,
        "n_inner": 64, "vocab_size": 30522, "n_positions": 32, "layer_norm_epsilon": 1e-5}"#;
    std::fs::write(dir.path().join("config.json"), config_json).unwrap();
    std::fs::copy(minilm_dir().join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    let mut tensors = hugging_face_gpt2(&config(), 3);
    // Old checkpoints carry the causal-mask buffer; it is ignored.
    tensors.push((
        "transformer.h.0.attn.bias".into(),
        Tensor::ones([1, 1, 32, 32], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).unwrap();
    let model = load_with(dir.path(), LoadOptions::default()).unwrap();
    assert!(matches!(model, AnyModel::Decoder(_)));
    assert_eq!(model.info().architecture, Architecture::Gpt2);
    let reference = Decoder::random(config().into(), 3, Kind::Float, Device::Cpu).unwrap();
    let ids = [101_i64, 2054, 2003];
    let out = model
        .forward_ids(
            &Tensor::from_slice(&ids).unsqueeze(0),
            &ForwardOptions::default(),
            &mut Hooks::new(),
        )
        .unwrap();
    assert!(out.logits.equal(&run(&reference, &ids).0));
    let long = Tensor::ones([1, 33], (Kind::Int64, Device::Cpu));
    assert!(matches!(
        model.forward_ids(&long, &ForwardOptions::default(), &mut Hooks::new()),
        Err(Error::SequenceTooLong { len: 33, max: 32 })
    ));
}

/// The seeded random GPT-2 of `Decoder::random` written the way `GPT2LMHeadModel` saves it:
/// `transformer.` prefix, `Conv1D` weights `[in, out]`, q/k/v fused into `c_attn`.
fn hugging_face_gpt2(config: &Gpt2Config, seed: u64) -> Vec<(String, Tensor)> {
    let canonical: std::collections::HashMap<String, Tensor> =
        Decoder::random_checkpoint(&config.clone().into(), seed)
            .unwrap()
            .into_tensors()
            .unwrap()
            .into_iter()
            .collect();
    let get = |k: &str| canonical[k].shallow_clone();
    let mut out = vec![
        ("transformer.wte.weight".to_owned(), get("embed.W_E")),
        ("transformer.wpe.weight".to_owned(), get("pos_embed.W_pos")),
        ("transformer.ln_f.weight".to_owned(), get("ln_final.w")),
        ("transformer.ln_f.bias".to_owned(), get("ln_final.b")),
    ];
    for l in 0..config.n_layers {
        let b = |k: &str| get(&format!("blocks.{l}.{k}"));
        let p = |k: &str| format!("transformer.h.{l}.{k}");
        let fused_w = Tensor::cat(&[b("attn.W_Q").tr(), b("attn.W_K").tr(), b("attn.W_V").tr()], 1);
        let fused_b = Tensor::cat(&[b("attn.b_Q"), b("attn.b_K"), b("attn.b_V")], 0);
        out.extend([
            (p("ln_1.weight"), b("ln1.w")),
            (p("ln_1.bias"), b("ln1.b")),
            (p("attn.c_attn.weight"), fused_w.contiguous()),
            (p("attn.c_attn.bias"), fused_b),
            (p("attn.c_proj.weight"), b("attn.W_O").tr().contiguous()),
            (p("attn.c_proj.bias"), b("attn.b_O")),
            (p("ln_2.weight"), b("ln2.w")),
            (p("ln_2.bias"), b("ln2.b")),
            (p("mlp.c_fc.weight"), b("mlp.W_in").tr().contiguous()),
            (p("mlp.c_fc.bias"), b("mlp.b_in")),
            (p("mlp.c_proj.weight"), b("mlp.W_out").tr().contiguous()),
            (p("mlp.c_proj.bias"), b("mlp.b_out")),
        ]);
    }
    out
}
