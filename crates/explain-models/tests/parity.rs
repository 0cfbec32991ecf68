//! Parity with Hugging Face transformers on identical weights (SmolLM2 from the same GGUF).
//!
//! Reference outputs come from `reference/parity_reference.py`, which `cargo xtask parity`
//! runs before this test (enabled by the `parity` feature) with `EXPLAINABILITY_PARITY_DIR`
//! pointing at its output. Without the reference files the test fails: it cannot pass
//! vacuously.
//!
//! Tolerances: logits 1e-3 absolute (30 layers of f32 matmuls in another summation order,
//! logits of magnitude ~20), attention probabilities 1e-5 (probabilities are bounded by 1 and
//! the softmax is computed in f32 on both sides), residual stream 1e-3 relative to its scale.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use explain_models::{AnyModel, TextTokenizer, load, smollm2_gguf_path};
use explainability_core::{ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel};
use serde::Deserialize;
use tch::{Kind, Tensor};

const LOGIT_TOL: f64 = 1e-3;
const ATTN_TOL: f64 = 1e-5;
const RESID_REL_TOL: f64 = 1e-3;

fn parity_dir() -> PathBuf {
    match std::env::var_os("EXPLAINABILITY_PARITY_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!(
            "EXPLAINABILITY_PARITY_DIR is not set: run `cargo xtask parity`, which writes the \
             reference outputs and runs this test"
        ),
    }
}

fn reference() -> HashMap<String, Tensor> {
    let path = parity_dir().join("smollm2_reference.safetensors");
    let tensors = Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    tensors.into_iter().collect()
}

fn prompt_names(reference: &HashMap<String, Tensor>) -> Vec<String> {
    let mut names: Vec<String> =
        reference.keys().filter_map(|k| k.strip_suffix(".input_ids").map(str::to_owned)).collect();
    names.sort();
    names
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

fn model() -> AnyModel {
    load(smollm2_gguf_path()).expect("SmolLM2 GGUF (run `cargo xtask setup`)")
}

/// Tolerances of one model's comparison with transformers.
struct Tolerances {
    /// Largest |Δlogit|: `logit_abs + logit_rel · max |logit|` of the prompt.
    logit_abs: f64,
    logit_rel: f64,
    attention: f64,
    residual_rel: f64,
}

/// Runs every prompt of `reference` (keys `{name}.input_ids`, `.logits`, `.attn.{l}`,
/// `.hidden.{i}` as `parity_reference.py` writes them) through `model` and compares logits,
/// argmax, every layer's attention and residual stream; returns one report line per prompt.
fn compare_with_reference(
    model: &AnyModel,
    reference: &HashMap<String, Tensor>,
    tol: &Tolerances,
) -> Vec<String> {
    let names = prompt_names(reference);
    let n_layers = model.info().n_layers;
    let _guard = tch::no_grad_guard();
    let mut report = Vec::new();
    for name in &names {
        let hf_ids = &reference[&format!("{name}.input_ids")];
        let ids_vec: Vec<i64> = Vec::try_from(hf_ids).unwrap();
        let ids = Tensor::from_slice(&ids_vec).unsqueeze(0);
        let mut hooks = Hooks::new();
        hooks.cache_detached(
            HookFilter::kind(HookKind::Pattern)
                .or(HookFilter::kind(HookKind::ResidPre))
                .or(HookFilter::point(HookPoint::ln_final())),
        );
        let out = model.forward_ids(&ids, &ForwardOptions::default(), &mut hooks).unwrap();
        let cache = hooks.take_cache();

        let logits = out.logits.select(0, 0);
        let hf_logits = &reference[&format!("{name}.logits")];
        let logit_scale = hf_logits.abs().max().double_value(&[]).max(1.0);
        let logit_diff = max_abs_diff(&logits, hf_logits);
        assert!(
            logit_diff < tol.logit_abs + tol.logit_rel * logit_scale,
            "{name}: logits differ by {logit_diff} at logit scale {logit_scale}"
        );
        let ours_argmax = logits.argmax(-1, false);
        let hf_argmax = hf_logits.argmax(-1, false);
        assert!(ours_argmax.equal(&hf_argmax), "{name}: argmax differs");

        let mut worst_attn = 0.0f64;
        for l in 0..n_layers {
            let ours = cache.get(&HookPoint::pattern(l)).unwrap().select(0, 0);
            let hf = &reference[&format!("{name}.attn.{l}")];
            let d = max_abs_diff(&ours, hf);
            worst_attn = worst_attn.max(d);
            assert!(d < tol.attention, "{name}: layer {l} attention differs by {d}");
        }

        let mut worst_resid = 0.0f64;
        for i in 0..=n_layers {
            let point = if i < n_layers { HookPoint::resid_pre(i) } else { HookPoint::ln_final() };
            let ours = cache.get(&point).unwrap().select(0, 0);
            let hf = &reference[&format!("{name}.hidden.{i}")];
            let scale = hf.abs().max().double_value(&[]).max(1.0);
            let rel = max_abs_diff(&ours, hf) / scale;
            worst_resid = worst_resid.max(rel);
            assert!(rel < tol.residual_rel, "{name}: {point} differs by {rel} (relative)");
        }
        report.push(format!(
            "{name:>10}: {} tokens, max |Δlogit| {logit_diff:.2e} (scale {logit_scale:.1}), \
             max |Δattn| {worst_attn:.2e}, max rel |Δresid| {worst_resid:.2e}",
            ids_vec.len()
        ));
    }
    report
}

#[test]
fn smollm2_matches_transformers_logits_attentions_and_residuals() {
    let reference = reference();
    let names = prompt_names(&reference);
    for required in ["english", "chinese", "code", "one_token", "long"] {
        assert!(names.iter().any(|n| n == required), "reference lacks prompt {required}");
    }
    let tol = Tolerances {
        logit_abs: LOGIT_TOL,
        logit_rel: 0.0,
        attention: ATTN_TOL,
        residual_rel: RESID_REL_TOL,
    };
    println!("{}", compare_with_reference(&model(), &reference, &tol).join("\n"));
}

#[test]
fn gemma3_matches_transformers_on_the_real_file() {
    // transformers dequantises the same Q4_K_M file (bit-exact with ours, tests/gguf_parity.rs)
    // and runs its eager path in f32: logits within 1e-3 of the logit scale, attention
    // probabilities within 1e-5, residual streams (values up to ~10^3 after the √640
    // embedding scale and the sandwich norms) within 1e-4 relative.
    let path = parity_dir().join("gemma3").join("gemma3_reference.safetensors");
    let reference: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .into_iter()
        .collect();
    let model = load(explain_models::gemma3_gguf_path()).unwrap();
    let tol =
        Tolerances { logit_abs: 0.0, logit_rel: 1e-3, attention: ATTN_TOL, residual_rel: 1e-4 };
    println!("{}", compare_with_reference(&model, &reference, &tol).join("\n"));
}

#[test]
fn smollm2_says_paris_like_transformers() {
    let reference = reference();
    let model = model();
    let hf_logits = &reference["france.logits"];
    let hf_top = hf_logits.select(0, -1).argmax(-1, false).int64_value(&[]);
    let ours = model.top_next_tokens("The capital of France is", 1).unwrap();
    assert_eq!(ours[0].id, hf_top);
    assert_eq!(ours[0].token, " Paris");
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<i64>,
    decoded: String,
}

#[derive(Deserialize)]
struct TokenizerReference {
    cases: Vec<TokenizerCase>,
}

#[test]
fn tokenizer_ids_match_transformers_on_the_corpus() {
    let path = parity_dir().join("tokenizer_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let reference: TokenizerReference = serde_json::from_str(&text).unwrap();
    assert!(reference.cases.len() >= 60, "corpus has {} strings", reference.cases.len());
    let gguf = explain_models::GgufFile::open(smollm2_gguf_path()).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&gguf).unwrap();
    let mut mismatches = Vec::new();
    for case in &reference.cases {
        let ids = tokenizer.encode(&case.text, true).unwrap();
        if ids != case.ids {
            mismatches.push(format!("{:?}: ours {:?}, HF {:?}", case.text, ids, case.ids));
            continue;
        }
        let decoded = tokenizer.decode(&ids, false).unwrap();
        if decoded != case.decoded {
            mismatches
                .push(format!("{:?}: decoded {:?}, HF {:?}", case.text, decoded, case.decoded));
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

// ---- other architectures (reference/arch_reference.py, written into `arch/`) ----------------
//
// Tolerances: logits of the tiny random models 1e-4 absolute (two f32 layers), attention
// probabilities 1e-5, MiniLM hidden states 1e-4 absolute (six f32 layers, values of order 1).

const ARCH_LOGIT_TOL: f64 = 1e-4;

fn arch_reference() -> HashMap<String, Tensor> {
    let path = parity_dir().join("arch").join("arch_reference.safetensors");
    let tensors = Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    tensors.into_iter().collect()
}

/// Runs `model` on the reference's padded ids and checks logits (real positions only: HF's
/// logits at padded query positions follow another convention) and every attention pattern.
fn check_arch(model: &dyn LanguageModel, name: &str, reference: &HashMap<String, Tensor>) {
    let ids = &reference["ids"];
    let mask = &reference["mask"];
    let mut hooks = Hooks::new();
    hooks.cache_detached(HookFilter::kind(HookKind::Pattern));
    let options =
        ForwardOptions { attention_mask: Some(mask.shallow_clone()), ..Default::default() };
    let out = {
        let _guard = tch::no_grad_guard();
        model.forward_ids(ids, &options, &mut hooks).unwrap()
    };
    let cache = hooks.take_cache();
    let expected = &reference[&format!("{name}_logits")];
    let real = mask.sum_dim_intlist(-1, false, Kind::Int64);
    let got =
        if expected.dim() == 2 { out.logits.squeeze_dim(1) } else { out.logits.shallow_clone() };
    assert_eq!(got.size(), expected.size(), "{name} logits shape");
    for row in 0..ids.size()[0] {
        let n = if expected.dim() == 2 { 1 } else { real.int64_value(&[row]) };
        let (g, e) = if expected.dim() == 2 {
            (got.get(row), expected.get(row))
        } else {
            (got.get(row).narrow(0, 0, n), expected.get(row).narrow(0, 0, n))
        };
        let diff = max_abs_diff(&g, &e);
        assert!(diff < ARCH_LOGIT_TOL, "{name} logits row {row}: max |Δ| = {diff:e}");
    }
    for layer in 0..model.info().n_layers {
        let pattern = cache.get(&HookPoint::pattern(layer)).unwrap();
        let expected = &reference[&format!("{name}_attn_{layer}")];
        for row in 0..ids.size()[0] {
            let n = real.int64_value(&[row]);
            let g = pattern.get(row).narrow(1, 0, n).narrow(2, 0, n);
            let e = expected.get(row).narrow(1, 0, n).narrow(2, 0, n);
            let diff = max_abs_diff(&g, &e);
            assert!(diff < ATTN_TOL, "{name} attention layer {layer} row {row}: {diff:e}");
            // Padded keys get exactly zero attention from real queries.
            let pad = pattern.get(row).narrow(1, 0, n).narrow(2, n, ids.size()[1] - n);
            assert_eq!(pad.abs().sum(Kind::Double).double_value(&[]), 0.0);
        }
    }
}

#[test]
fn tiny_gpt2_qwen2_and_bert_classifier_match_transformers() {
    let reference = arch_reference();
    for (name, arch) in [
        ("gpt2", explainability_core::Architecture::Gpt2),
        ("qwen2", explainability_core::Architecture::Qwen2),
        ("bert_cls", explainability_core::Architecture::Bert),
    ] {
        let dir = parity_dir().join("arch").join(name);
        let model = explain_models::load_with(&dir, explain_models::LoadOptions::default())
            .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
        assert_eq!(model.info().architecture, arch);
        check_arch(&model, name, &reference);
    }
}

#[test]
fn tiny_gemma3_qwen3_and_llama3_match_transformers() {
    // Gemma 3 with a sliding window (3) shorter than the rows (8) on five of its six layers,
    // Qwen3 with q/k norms and a head width that is not d_model / n_heads, Llama 3 with the
    // llama3 RoPE rule across all three frequency bands.
    let reference = arch_reference();
    for (name, arch) in [
        ("gemma3", explainability_core::Architecture::Gemma3),
        ("qwen3", explainability_core::Architecture::Qwen3),
        ("llama3", explainability_core::Architecture::Llama),
    ] {
        let dir = parity_dir().join("arch").join(name);
        let model = explain_models::load_with(&dir, explain_models::LoadOptions::default())
            .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
        assert_eq!(model.info().architecture, arch);
        check_arch(&model, name, &reference);
    }
}

#[test]
fn minilm_matches_transformers_hidden_states_attentions_and_embeddings() {
    let reference = arch_reference();
    let model = explain_models::BertModel::from_hf_dir(
        &explain_models::minilm_dir(),
        explain_models::LoadOptions::default(),
    )
    .unwrap();
    let ids = &reference["minilm_ids"];
    let mask = &reference["minilm_mask"];
    let mut hooks = Hooks::new();
    hooks.cache_detached(
        HookFilter::kind(HookKind::Pattern)
            .or(HookFilter::kind(HookKind::ResidPost))
            .or(HookFilter::point(HookPoint::embed())),
    );
    let options =
        ForwardOptions { attention_mask: Some(mask.shallow_clone()), ..Default::default() };
    let _guard = tch::no_grad_guard();
    model.forward_ids(ids, &options, &mut hooks).unwrap();
    let cache = hooks.take_cache();
    let real = mask.sum_dim_intlist(-1, false, Kind::Int64);
    for row in 0..ids.size()[0] {
        let n = real.int64_value(&[row]);
        for layer in 0..=6 {
            let point =
                if layer == 0 { HookPoint::embed() } else { HookPoint::resid_post(layer - 1) };
            let g = cache.get(&point).unwrap().get(row).narrow(0, 0, n);
            let e = reference[&format!("minilm_hidden_{layer}")].get(row).narrow(0, 0, n);
            let diff = max_abs_diff(&g, &e);
            assert!(diff < 1e-4, "MiniLM hidden state {layer} row {row}: {diff:e}");
        }
        for layer in 0..6 {
            let g = cache.get(&HookPoint::pattern(layer)).unwrap().get(row).narrow(1, 0, n);
            let e = reference[&format!("minilm_attn_{layer}")].get(row).narrow(1, 0, n);
            let diff = max_abs_diff(&g, &e);
            assert!(diff < ATTN_TOL, "MiniLM attention {layer} row {row}: {diff:e}");
        }
    }
    let sentences = [
        "A man is playing a guitar.",
        "Someone plays an instrument.",
        "The stock market fell sharply today.",
    ];
    let emb = model.sentence_embeddings(&sentences).unwrap();
    let diff = max_abs_diff(&emb, &reference["minilm_embeddings"]);
    assert!(diff < 1e-5, "MiniLM sentence embeddings: {diff:e}");
}

// ---- the same tiny checkpoints as llama.cpp's converter would write them -------------------

/// Writes the Hugging Face checkpoint in `dir` as an f32 GGUF file the way llama.cpp's
/// `convert_hf_to_gguf.py` does for `arch`: its tensor names and metadata keys, Q/K rows
/// permuted for `llama`, Llama 3's RoPE rule as per-frequency divisors (`rope_freqs.weight`),
/// and a 256-token byte-level vocabulary (the parity ids are fed directly).
fn hf_to_gguf(dir: &Path, arch: &str, out: &Path) -> PathBuf {
    use gguf_writer::{GgufWriter, Value, ggml};
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let n = |k: &str| config[k].as_u64().unwrap();
    let (d, heads, kv) = (n("hidden_size"), n("num_attention_heads"), n("num_key_value_heads"));
    let d_head = config["head_dim"].as_u64().unwrap_or(d / heads);
    let files = explain_models::safetensors_files(dir).unwrap();
    let tensors = explain_models::read_safetensors(&files).unwrap().into_tensors().unwrap();
    let rename = |key: &str| -> String {
        key.replace("model.embed_tokens.weight", "token_embd.weight")
            .replace("model.norm.weight", "output_norm.weight")
            .replace("lm_head.weight", "output.weight")
            .replace("model.layers.", "blk.")
            .replace("input_layernorm", "attn_norm")
            .replace("self_attn.q_proj", "attn_q")
            .replace("self_attn.k_proj", "attn_k")
            .replace("self_attn.v_proj", "attn_v")
            .replace("self_attn.o_proj", "attn_output")
            .replace("self_attn.q_norm", "attn_q_norm")
            .replace("self_attn.k_norm", "attn_k_norm")
            .replace("post_attention_layernorm", "ffn_norm")
            .replace("mlp.gate_proj", "ffn_gate")
            .replace("mlp.up_proj", "ffn_up")
            .replace("mlp.down_proj", "ffn_down")
    };
    // llama.cpp `LlamaModel.permute`: rows per head from (pair, half) to (half, pair).
    let permute = |w: Tensor, n_head: i64| {
        let shape = w.size();
        let mut view = vec![n_head, 2, shape[0] / n_head / 2];
        view.extend_from_slice(&shape[1..]);
        w.reshape(view.as_slice()).transpose(1, 2).contiguous().reshape(shape.as_slice())
    };
    let bytes: Vec<String> = (0..=255u8).map(|b| format!("<{b:02x}>")).collect();
    let tokens: Vec<&str> = bytes.iter().map(String::as_str).collect();
    let key = |k: &str| format!("{arch}.{k}");
    let mut writer = GgufWriter::new()
        .kv("general.architecture", Value::string(arch))
        .kv(&key("block_count"), Value::u32(n("num_hidden_layers") as u32))
        .kv(&key("context_length"), Value::u32(n("max_position_embeddings") as u32))
        .kv(&key("embedding_length"), Value::u32(d as u32))
        .kv(&key("feed_forward_length"), Value::u32(n("intermediate_size") as u32))
        .kv(&key("attention.head_count"), Value::u32(heads as u32))
        .kv(&key("attention.head_count_kv"), Value::u32(kv as u32))
        .kv(&key("attention.key_length"), Value::u32(d_head as u32))
        .kv(&key("attention.value_length"), Value::u32(d_head as u32))
        .kv(
            &key("attention.layer_norm_rms_epsilon"),
            Value::f32(config["rms_norm_eps"].as_f64().unwrap() as f32),
        )
        .kv(&key("vocab_size"), Value::u32(n("vocab_size") as u32))
        .kv("tokenizer.ggml.model", Value::string("gpt2"))
        .kv("tokenizer.ggml.tokens", Value::strings(&tokens))
        .kv("tokenizer.ggml.token_type", Value::i32s(&[1; 256]))
        .kv("tokenizer.ggml.merges", Value::strings(&[]));
    let rope = &config["rope_parameters"];
    let theta = rope["rope_theta"].as_f64().or(config["rope_theta"].as_f64()).unwrap();
    writer = writer.kv(&key("rope.freq_base"), Value::f32(theta as f32));
    let write = |writer: GgufWriter, name: &str, t: &Tensor| {
        let t = t.to_kind(Kind::Float).contiguous();
        let values: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims: Vec<u64> = t.size().iter().rev().map(|&x| x as u64).collect();
        writer.tensor(name, &dims, ggml::F32, data)
    };
    for (hf_key, t) in tensors {
        let name = rename(&hf_key);
        let t = if arch == "llama" && name.ends_with("attn_q.weight") {
            permute(t, heads as i64)
        } else if arch == "llama" && name.ends_with("attn_k.weight") {
            permute(t, kv as i64)
        } else {
            t
        };
        writer = write(writer, &name, &t);
    }
    if rope["rope_type"].as_str() == Some("llama3") {
        // convert_hf_to_gguf.py `LlamaModel.generate_extra_tensors`.
        let f = |k: &str| rope[k].as_f64().unwrap();
        let (factor, low, high, old) = (
            f("factor"),
            f("low_freq_factor"),
            f("high_freq_factor"),
            f("original_max_position_embeddings"),
        );
        let factors: Vec<f32> = (0..d_head / 2)
            .map(|i| {
                let freq = 1.0 / theta.powf((2 * i) as f64 / d_head as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                (if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                }) as f32
            })
            .collect();
        writer = write(writer, "rope_freqs.weight", &Tensor::from_slice(&factors));
    }
    writer.write(out, &format!("{arch}.gguf"))
}

#[test]
fn tiny_qwen3_and_llama3_as_gguf_match_transformers() {
    // The HF checkpoints of the test above, converted by llama.cpp's conventions: the GGUF
    // route (metadata config, name table, Q/K un-permutation for `llama` only, Llama 3's
    // rope_freqs divisors) must give transformers' outputs too.
    let reference = arch_reference();
    let out = tempfile::tempdir().unwrap();
    for (name, arch, expected) in [
        ("qwen3", "qwen3", explainability_core::Architecture::Qwen3),
        ("llama3", "llama", explainability_core::Architecture::Llama),
    ] {
        let path = hf_to_gguf(&parity_dir().join("arch").join(name), arch, out.path());
        let model = load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
        assert_eq!(model.info().architecture, expected);
        check_arch(&model, name, &reference);
    }
}
