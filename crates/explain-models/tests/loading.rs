//! `load(path)`: choosing the loader, Hugging Face folders (config + safetensors + tokenizer),
//! and the typed errors for every malformed input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use explain_models::{LoadOptions, load, load_with, minilm_dir, smollm2_gguf_path};
use explainability_core::{Error, LanguageModel};
use tch::{Device, Kind, Tensor};

const VOCAB: i64 = 30522; // MiniLM's tokenizer.json, reused as the tokenizer of a tiny Llama
const D: i64 = 16;
const HEADS: i64 = 4;
const KV: i64 = 2;
const D_HEAD: i64 = 4;
const MLP: i64 = 24;
const LAYERS: usize = 2;

fn config_json(model_type: &str) -> String {
    format!(
        r#"{{"model_type": "{model_type}", "hidden_size": {D}, "num_attention_heads": {HEADS},
        "num_key_value_heads": {KV}, "num_hidden_layers": {LAYERS}, "intermediate_size": {MLP},
        "vocab_size": {VOCAB}, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 101,
        "eos_token_id": [102, 103]}}"#
    )
}

fn weights() -> Vec<(String, Tensor)> {
    tch::manual_seed(3);
    let r = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.1;
    let mut w = vec![
        ("model.embed_tokens.weight".to_owned(), r(&[VOCAB, D])),
        ("model.norm.weight".to_owned(), Tensor::ones([D], (Kind::Float, Device::Cpu))),
        ("lm_head.weight".to_owned(), r(&[VOCAB, D])),
    ];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        w.push((
            format!("{p}.input_layernorm.weight"),
            Tensor::ones([D], (Kind::Float, Device::Cpu)),
        ));
        w.push((format!("{p}.self_attn.q_proj.weight"), r(&[HEADS * D_HEAD, D])));
        w.push((format!("{p}.self_attn.k_proj.weight"), r(&[KV * D_HEAD, D])));
        w.push((format!("{p}.self_attn.v_proj.weight"), r(&[KV * D_HEAD, D])));
        w.push((format!("{p}.self_attn.o_proj.weight"), r(&[D, HEADS * D_HEAD])));
        w.push((
            format!("{p}.post_attention_layernorm.weight"),
            Tensor::ones([D], (Kind::Float, Device::Cpu)),
        ));
        w.push((format!("{p}.mlp.gate_proj.weight"), r(&[MLP, D])));
        w.push((format!("{p}.mlp.up_proj.weight"), r(&[MLP, D])));
        w.push((format!("{p}.mlp.down_proj.weight"), r(&[D, MLP])));
    }
    w
}

fn write_folder(dir: &Path, model_type: &str, weights: &[(String, Tensor)]) {
    std::fs::write(dir.join("config.json"), config_json(model_type)).unwrap();
    std::fs::copy(minilm_dir().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    Tensor::write_safetensors(weights, dir.join("model.safetensors")).unwrap();
}

#[test]
fn hugging_face_folder_loads_with_its_weights_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let w = weights();
    write_folder(dir.path(), "llama", &w);
    let model = load(dir.path()).unwrap();
    let info = model.info();
    assert_eq!((info.n_layers, info.n_heads, info.n_kv_heads, info.d_model), (2, 4, 2, 16));
    assert_eq!(info.special_tokens.bos, Some(101));
    assert_eq!(info.special_tokens.eos, Some(102), "first of a list of eos ids");
    let params = model.named_parameters();
    let q = &params.iter().find(|(n, _)| n == "blocks.1.attn.W_Q").unwrap().1;
    let expected =
        &w.iter().find(|(n, _)| n == "model.layers.1.self_attn.q_proj.weight").unwrap().1;
    assert!(q.equal(expected), "weights arrive unchanged");
    let ids = model.encode("hello world", false).unwrap();
    assert_eq!(ids, vec![7592, 2088], "MiniLM's WordPiece ids");
    let top = model.top_next_tokens("hello world", 3).unwrap();
    assert_eq!(top.len(), 3);
    assert!(top[0].probability >= top[1].probability);
}

#[test]
fn sharded_checkpoints_load_through_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let w = weights();
    write_folder(dir.path(), "llama", &w);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let (a, b) = w.split_at(5);
    Tensor::write_safetensors(a, dir.path().join("model-00001-of-00002.safetensors")).unwrap();
    Tensor::write_safetensors(b, dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = w
        .iter()
        .enumerate()
        .map(|(i, (n, _))| {
            let file = if i < 5 {
                "model-00001-of-00002.safetensors"
            } else {
                "model-00002-of-00002.safetensors"
            };
            (n.clone(), serde_json::Value::from(file))
        })
        .collect();
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let model = load(dir.path()).unwrap();
    assert_eq!(model.info().n_layers, 2);
}

#[test]
fn missing_weight_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let w: Vec<_> =
        weights().into_iter().filter(|(n, _)| n != "model.layers.1.mlp.up_proj.weight").collect();
    write_folder(dir.path(), "llama", &w);
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingWeight { name } if name == "model.layers.1.mlp.up_proj.weight"),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.layers.1.mlp.up_proj.weight"));
}

#[test]
fn mis_shaped_weight_is_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights();
    for (n, t) in &mut w {
        if n == "model.layers.0.self_attn.k_proj.weight" {
            *t = Tensor::zeros([HEADS * D_HEAD, D], (Kind::Float, Device::Cpu));
        }
    }
    write_folder(dir.path(), "llama", &w);
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WeightShape { name, expected, actual }
                if name == "model.layers.0.self_attn.k_proj.weight"
                    && expected == &vec![8, 16] && actual == &vec![16, 16]
        ),
        "{err:?}"
    );
}

#[test]
fn unused_weights_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = weights();
    w.push((
        "model.layers.0.mystery.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    ));
    write_folder(dir.path(), "llama", &w);
    assert!(matches!(
        load(dir.path()),
        Err(Error::UnusedWeights { names }) if names == vec!["model.layers.0.mystery.weight"]
    ));
}

#[test]
fn unknown_model_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), "mamba", &weights());
    assert!(matches!(
        load(dir.path()),
        Err(Error::UnsupportedArchitecture { name, .. }) if name == "mamba"
    ));
}

#[test]
fn broken_config_and_safetensors_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_folder(dir.path(), "llama", &weights());
    std::fs::write(dir.path().join("model.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
        .unwrap();
    assert!(matches!(load(dir.path()), Err(Error::Safetensors { .. })));
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(
        matches!(load(dir.path()), Err(Error::MissingWeight { name }) if name.contains("model.safetensors"))
    );
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    assert!(
        matches!(load(dir.path()), Err(Error::Json { path, .. }) if path.ends_with("config.json"))
    );
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    assert!(matches!(
        load(dir.path()),
        Err(Error::MissingMetadata { key, .. }) if key.starts_with("hidden_size")
    ));
}

#[test]
fn paths_that_are_not_models() {
    assert!(matches!(
        load("/definitely/not/here.gguf"),
        Err(Error::PathNotFound { path }) if path.ends_with("here.gguf")
    ));
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "hello").unwrap();
    assert!(matches!(load(empty.path()), Err(Error::UnrecognisedModelPath { .. })));
    let two = tempfile::tempdir().unwrap();
    std::fs::write(two.path().join("a.gguf"), b"GGUF").unwrap();
    std::fs::write(two.path().join("b.gguf"), b"GGUF").unwrap();
    assert!(matches!(
        load(two.path()),
        Err(Error::AmbiguousModelPath { files, .. }) if files == vec!["a.gguf", "b.gguf"]
    ));
    let not_gguf = tempfile::tempdir().unwrap();
    let file = not_gguf.path().join("model.gguf");
    std::fs::write(&file, b"PK\x03\x04 definitely a zip").unwrap();
    assert!(matches!(load(&file), Err(Error::GgufBadMagic { .. })));
}

#[test]
fn truncated_real_gguf_is_a_typed_error() {
    let bytes = std::fs::read(smollm2_gguf_path()).expect("SmolLM2 (run `cargo xtask setup`)");
    let dir = tempfile::tempdir().unwrap();
    for cut in [10usize, 5_000, 2_000_000, bytes.len() - 1] {
        let path = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            matches!(err, Error::GgufTruncated { .. } | Error::GgufImplausible { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn unavailable_device_is_a_typed_error() {
    if tch::Cuda::is_available() {
        return; // the machine has CUDA: nothing to refuse
    }
    let options = LoadOptions::default().device(Device::Cuda(0));
    assert!(matches!(
        load_with(smollm2_gguf_path(), options),
        Err(Error::DeviceUnavailable { requested }) if requested == "cuda:0"
    ));
}
