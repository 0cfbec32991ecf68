//! GPT-2: causal attention, tied head, Conv1D `[in, out]` layout and the `transformer.` key
//! prefix of a Hugging Face folder, hook points, and the context limit. Parity with
//! transformers on a random checkpoint is in `tests/parity.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_models::{AnyModel, Gpt2, Gpt2Config, LoadOptions, load_model, minilm_dir};
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

fn run(model: &Gpt2, ids: &[i64]) -> (Tensor, Tensor) {
    let ids = Tensor::from_slice(ids).unsqueeze(0);
    let out = model
        .forward(&model.embed(&ids).unwrap(), &ForwardOptions::default(), &mut Hooks::new())
        .unwrap();
    (out.logits, out.final_hidden)
}

#[test]
fn causal_with_tied_head_and_every_hook_point() {
    let model = Gpt2::random(config(), 3, Kind::Float, Device::Cpu).unwrap();
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
    assert_eq!(cache.len(), HookPoint::all(2).len());
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
    let mut tensors: Vec<(String, Tensor)> = Gpt2::random_checkpoint(&config(), 3)
        .unwrap()
        .into_tensors()
        .into_iter()
        .map(|(k, t)| (format!("transformer.{k}"), t))
        .collect();
    // Old checkpoints carry the causal-mask buffer; it is ignored.
    tensors.push((
        "transformer.h.0.attn.bias".into(),
        Tensor::ones([1, 1, 32, 32], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).unwrap();
    let model = load_model(dir.path(), LoadOptions::default()).unwrap();
    assert!(matches!(model, AnyModel::Gpt2(_)));
    assert_eq!(model.info().architecture, Architecture::Gpt2);
    let reference = Gpt2::random(config(), 3, Kind::Float, Device::Cpu).unwrap();
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
