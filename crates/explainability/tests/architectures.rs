//! The architecture matrix: every explainer, and every evaluation family on its result, runs on
//! tiny random Llama, GPT-2, Gemma 3 (local and global layers), Qwen3 and Llama 3 (llama3 RoPE
//! scaling) decoders,
//! a BERT classifier (tiny random) and the real all-MiniLM-L6-v2, giving finite results of the
//! expected shapes; padded encoder batches give exactly zero attention and zero attribution
//! on pad positions.
//!
//! Tiny models reuse MiniLM's WordPiece tokenizer (vocabulary 30522) so they need no other
//! files; they are built in Rust from seeded weights, so this test needs no Python.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explainability::attention::{AttentionCapture, AttentionExplainer, AttentionMetrics};
use explainability::core::{
    Architecture, BackwardMemory, Explainer, ForwardOptions, HookFilter, HookKind, HookPoint,
    Hooks, LanguageModel, RecomputedBackward, SpecialTokens, Target, TargetOutput, TargetToken,
    gradients,
};
use explainability::eval::{FidelityConfig, completeness, comprehensibility, fidelity};
use explainability::gradients::{
    AdaptiveOptions, Baseline, GenerationAttribution, GenerationMethod, GradientXInput,
    IntegratedGradients, LayerIntegratedGradients, PathOptions, Quadrature, Saliency, SaliencyNorm,
    SentenceSimilarity, SmoothGrad,
};
use explainability::models::{
    Bert, BertConfig, BertModel, Decoder, DecoderConfig, DecoderModel, Family, Gpt2Config,
    HfConfig, LlamaConfig, LoadOptions, TextTokenizer, mean_pool, minilm_dir,
};
use tch::{Device, Kind, Tensor};

const VOCAB: usize = 30522;
const TEXT: &str = "the quick brown fox jumps";

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap()
}

fn tiny_decoder(config: DecoderConfig, seed: u64, architecture: Architecture) -> DecoderModel {
    let name = format!("tiny-{architecture}");
    let model = Decoder::random(config, seed, Kind::Float, Device::Cpu).unwrap();
    DecoderModel::new(model, tokenizer(), name, architecture, SpecialTokens::default())
}

fn tiny_llama() -> DecoderModel {
    let config = LlamaConfig {
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        d_model: 32,
        d_head: 8,
        d_mlp: 48,
        vocab_size: VOCAB,
        max_positions: 64,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        attention_bias: false,
    };
    tiny_decoder(config.into(), 11, Architecture::Llama)
}

fn tiny_gpt2() -> DecoderModel {
    let config = Gpt2Config {
        n_layers: 2,
        n_heads: 4,
        d_model: 32,
        d_mlp: 128,
        vocab_size: VOCAB,
        max_positions: 64,
        norm_eps: 1e-5,
    };
    tiny_decoder(config.into(), 12, Architecture::Gpt2)
}

/// A tiny model of `family` from a `config.json` as its Hugging Face checkpoints spell it,
/// through the family's own config constructor.
fn tiny_from_hf_config(family: Family, json: serde_json::Value, seed: u64) -> DecoderModel {
    let config = family.config_from_hf(&HfConfig::from_json(json).unwrap()).unwrap();
    tiny_decoder(config, seed, family.architecture())
}

fn tiny_gemma3() -> DecoderModel {
    // Sliding window 3 on 5 of every 6 layers: shorter than the text, so local and global
    // layers both bite.
    let json = serde_json::json!({
        "model_type": "gemma3_text", "hidden_size": 32, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
        "num_hidden_layers": 6, "vocab_size": VOCAB, "max_position_embeddings": 64,
        "sliding_window": 3, "query_pre_attn_scalar": 8, "rms_norm_eps": 1e-6,
    });
    tiny_from_hf_config(Family::Gemma3, json, 14)
}

fn tiny_qwen3() -> DecoderModel {
    let json = serde_json::json!({
        "model_type": "qwen3", "hidden_size": 32, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": VOCAB, "max_position_embeddings": 64,
        "rope_theta": 1_000_000.0, "tie_word_embeddings": true,
    });
    tiny_from_hf_config(Family::Qwen3, json, 15)
}

fn tiny_llama3() -> DecoderModel {
    let json = serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 48,
        "num_hidden_layers": 2, "vocab_size": VOCAB, "max_position_embeddings": 64,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500_000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64},
    });
    tiny_from_hf_config(Family::Llama, json, 16)
}

fn tiny_bert_classifier() -> BertModel {
    let config = BertConfig {
        n_layers: 2,
        n_heads: 4,
        d_model: 32,
        d_mlp: 48,
        vocab_size: VOCAB,
        max_positions: 64,
        type_vocab_size: 2,
        norm_eps: 1e-12,
        num_labels: Some(3),
        pooler: true,
    };
    BertModel::new(
        Bert::random(config, 13, Kind::Float, Device::Cpu).unwrap(),
        tokenizer(),
        "tiny-bert".into(),
    )
}

fn explainers() -> Vec<Box<dyn Explainer>> {
    vec![
        Box::new(AttentionExplainer::last_layer()),
        Box::new(AttentionExplainer::rollout()),
        Box::new(AttentionExplainer::flow()),
        Box::new(Saliency { norm: SaliencyNorm::L2 }),
        Box::new(GradientXInput),
        Box::new(IntegratedGradients::new(Baseline::Zero, 16)),
    ]
}

fn run_matrix(model: &dyn LanguageModel, target: &Target) {
    let name = model.info().name.clone();
    let ids = model.encode(TEXT, true).unwrap();
    for explainer in explainers() {
        let e = explainer
            .explain_ids(model, &ids, target)
            .unwrap_or_else(|err| panic!("{} on {name}: {err}", explainer.name()));
        assert_eq!(e.scores.len(), ids.len(), "{} on {name}", explainer.name());
        assert!(e.scores.iter().all(|s| s.is_finite()), "{} on {name}", explainer.name());
        assert!(e.scores.iter().any(|s| *s != 0.0), "{} on {name} is all zero", explainer.name());
        // Every evaluation family runs on every architecture and stays in its range.
        let label = format!("{} on {name}", explainer.name());
        let c = comprehensibility(&e.scores.to_vec());
        let d = ids.len() as f64;
        assert!((0.0..=(d - 1.0) / d + 1e-12).contains(&c.gini), "{label}: {c:?}");
        assert!((1.0 - 1e-12..=d + 1e-12).contains(&c.effective_tokens), "{label}: {c:?}");
        let k = completeness(&e, 2).unwrap();
        assert!((0.0..=1.0 + 1e-12).contains(&k.top_k_share), "{label}: {k:?}");
        let config = FidelityConfig { faithfulness_subsets: 8, ..FidelityConfig::default() };
        let f = fidelity(model, &e, &config).unwrap_or_else(|err| panic!("{label}: {err}"));
        assert_eq!(f.comprehensiveness.len(), config.bins.len(), "{label}");
        assert!(
            f.comprehensiveness.iter().chain(&f.sufficiency).all(|v| (-1.0..=1.0).contains(v)),
            "{label}: probabilities differ by at most 1: {f:?}"
        );
        assert!(f.deletion_auc.is_finite() && f.insertion_auc.is_finite(), "{label}");
    }
    let capture = AttentionCapture::from_ids(model, &ids).unwrap();
    assert_eq!(capture.n_layers(), model.info().n_layers);
    assert_eq!(capture.len(), ids.len());
    let metrics = AttentionMetrics::compute(&capture, 0.01).unwrap();
    assert_eq!(metrics.heads.len(), model.info().n_layers);
    assert_eq!(metrics.heads[0].len(), model.info().n_heads);
}

#[test]
fn every_explainer_runs_on_every_decoder_family_and_a_bert_classifier() {
    run_matrix(&tiny_llama(), &Target::argmax());
    run_matrix(&tiny_gpt2(), &Target::argmax());
    run_matrix(&tiny_gemma3(), &Target::argmax());
    run_matrix(&tiny_qwen3(), &Target::argmax());
    run_matrix(&tiny_llama3(), &Target::argmax());
    let class = Target::Token {
        token: TargetToken::Id(1),
        output: TargetOutput::LogProb,
        position: Some(0),
    };
    run_matrix(&tiny_bert_classifier(), &class);
}

#[test]
fn minilm_attention_explainers_metrics_and_similarity() {
    let model = BertModel::from_hf_dir(&minilm_dir(), LoadOptions::default()).unwrap();
    let ids = model.encode(TEXT, true).unwrap();
    // The encoder has no head, so there is no token target to resolve (explain_ids reports
    // a typed error); the attention scores of the [CLS] row are read from the capture.
    let capture = AttentionCapture::from_ids(&model, &ids).unwrap();
    assert!(!capture.causal, "an encoder's capture is bidirectional");
    for explainer in [
        AttentionExplainer::last_layer(),
        AttentionExplainer::rollout(),
        AttentionExplainer::flow(),
    ] {
        let scores = explainer.scores(&capture, 0).unwrap();
        assert_eq!(scores.len(), ids.len());
        assert!(scores.iter().all(|s| s.is_finite() && *s >= 0.0));
        // [CLS] attends to later tokens too: the pattern is bidirectional.
        assert!(scores[ids.len() - 2] > 0.0);
        let cls = Target::Token {
            token: TargetToken::Argmax,
            output: TargetOutput::LogProb,
            position: Some(0),
        };
        assert!(explainer.explain_ids(&model, &ids, &cls).is_err());
    }
    let metrics = AttentionMetrics::compute(&capture, 0.01).unwrap();
    assert_eq!((metrics.heads.len(), metrics.heads[0].len()), (6, 12));
    // Gradient explainers need a head; a token target on the bare encoder is a typed error.
    assert!(GradientXInput.explain_ids(&model, &ids, &Target::argmax()).is_err());
    let sim = SentenceSimilarity::gradient_x_input()
        .explain(&model, "a cat sat on the mat", "a dog lay on the rug")
        .unwrap();
    assert_eq!(sim.attributions_a.len(), sim.tokens_a.len());
    assert!(sim.attributions_a.iter().chain(&sim.attributions_b).all(|v| v.is_finite()));
}

#[test]
fn padded_encoder_batches_give_zero_attention_and_attribution_to_padding() {
    let model = BertModel::from_hf_dir(&minilm_dir(), LoadOptions::default()).unwrap();
    let (ids, mask) = model.batch(&["a much longer first sentence here", "short"]).unwrap();
    let real_b = mask.get(1).sum(Kind::Int64).int64_value(&[]);
    let len = ids.size()[1];
    assert!(real_b < len, "the second row is padded");
    let embeddings = model.embed(&ids).unwrap().detach().set_requires_grad(true);
    let mut hooks = Hooks::new();
    hooks.cache_detached(HookFilter::kind(HookKind::Pattern));
    let options =
        ForwardOptions { attention_mask: Some(mask.shallow_clone()), ..Default::default() };
    let out = model.forward_embeddings(&embeddings, &options, &mut hooks).unwrap();
    let pooled = mean_pool(&out.final_hidden, Some(&mask)).unwrap();
    let y = pooled.sum(Kind::Float);
    let grad = Tensor::run_backward(&[&y], &[&embeddings], false, false).pop().unwrap();
    // Gradient × input on pad positions of row 1: exactly zero.
    let pad_attr = (grad.get(1) * embeddings.get(1).detach()).narrow(0, real_b, len - real_b);
    assert_eq!(pad_attr.abs().max().double_value(&[]), 0.0);
    let real_attr = (grad.get(1) * embeddings.get(1).detach()).narrow(0, 0, real_b);
    assert!(real_attr.abs().max().double_value(&[]) > 0.0);
    let cache = hooks.take_cache();
    for layer in 0..6 {
        let pattern = cache.get(&explainability::core::HookPoint::pattern(layer)).unwrap();
        let on_pad = pattern.get(1).narrow(-1, real_b, len - real_b);
        assert_eq!(on_pad.abs().max().double_value(&[]), 0.0, "layer {layer}");
    }
}

/// Every gradient method that differentiates the model through `gradients`.
fn gradient_methods(n_layers: usize) -> Vec<Box<dyn Explainer>> {
    let adaptive = AdaptiveOptions { max_gradient_evaluations: 48, ..AdaptiveOptions::default() };
    vec![
        Box::new(Saliency { norm: SaliencyNorm::L2 }),
        Box::new(GradientXInput),
        Box::new(SmoothGrad {
            n_samples: 3,
            internal_batch_size: Some(2),
            ..SmoothGrad::default()
        }),
        Box::new(IntegratedGradients::new(Baseline::Zero, 8)),
        Box::new(IntegratedGradients {
            quadrature: Quadrature::Adaptive(adaptive),
            ..IntegratedGradients::adaptive(Baseline::Zero)
        }),
        Box::new(LayerIntegratedGradients {
            point: HookPoint::resid_mid(n_layers - 1),
            baseline: Baseline::Zero,
            quadrature: Quadrature::Fixed(PathOptions { n_steps: 6, ..PathOptions::default() }),
        }),
        Box::new(LayerIntegratedGradients {
            point: HookPoint::resid_pre(0),
            baseline: Baseline::Zero,
            quadrature: Quadrature::Fixed(PathOptions { n_steps: 6, ..PathOptions::default() }),
        }),
    ]
}

/// `max |a − b| / max |a|`.
fn relative_difference(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

/// Recomputed backward equals the stored one for every gradient method: the same forward
/// pass in the same f32 kernels, summed in another order, so 1e-6 relative (measured ≤ 1e-7).
fn assert_recompute_equals_stored(model: &dyn LanguageModel, target: &Target) {
    let name = model.info().name.clone();
    let bounded = RecomputedBackward::new(model);
    assert_eq!(bounded.backward_memory(), BackwardMemory::Recompute);
    let ids = model.encode(TEXT, true).unwrap();
    for method in gradient_methods(model.info().n_layers) {
        let plain = method.explain_ids(model, &ids, target).unwrap();
        let recomputed = method.explain_ids(&bounded, &ids, target).unwrap();
        let r = relative_difference(&plain.scores.to_vec(), &recomputed.scores.to_vec());
        assert!(r < 1e-6, "{} on {name}: relative difference {r:e}", method.name());
        assert!(plain.scores.iter().any(|s| *s != 0.0), "{} on {name}", method.name());
    }
    // The blockwise path really ran (a model without stages would fall back to stored).
    let emb = model.embed(&Tensor::from_slice(&ids).unsqueeze(0)).unwrap().set_requires_grad(true);
    let options = ForwardOptions::default();
    let g = gradients(&bounded, &emb, &[&emb], &options, &mut Hooks::new(), &mut |o| {
        Ok(o.logits.select(1, -1).select(1, 0))
    })
    .unwrap();
    assert_eq!(g.memory, BackwardMemory::Recompute, "{name}");
    // A leaf that does not require grad is a typed error, not an empty gradient.
    let detached = emb.detach();
    let err = gradients(&bounded, &detached, &[&detached], &options, &mut Hooks::new(), &mut |o| {
        Ok(o.logits.select(1, -1).select(1, 0))
    })
    .unwrap_err();
    assert!(matches!(err, explainability::core::Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn recomputed_backward_equals_stored_for_every_gradient_method_and_family() {
    for model in [tiny_llama(), tiny_gpt2(), tiny_gemma3(), tiny_qwen3(), tiny_llama3()] {
        assert_recompute_equals_stored(&model, &Target::argmax());
        let name = model.info().name.clone();
        // Attribution of a generated continuation: one gradient per generated token.
        let prompt = model.encode(TEXT, true).unwrap();
        let continuation = [prompt[1], prompt[2], prompt[3]];
        for method in [
            GenerationMethod::GradientXInput,
            GenerationMethod::IntegratedGradients {
                baseline: Baseline::Zero,
                path: PathOptions { n_steps: 4, ..PathOptions::default() },
            },
        ] {
            let attribution = GenerationAttribution { method };
            let plain = attribution.attribute(&model, &prompt, &continuation).unwrap();
            let bounded = RecomputedBackward::new(&model);
            let recomputed = attribution.attribute(&bounded, &prompt, &continuation).unwrap();
            let (a, b): (Vec<f64>, Vec<f64>) = (
                plain.scores.iter().copied().collect(),
                recomputed.scores.iter().copied().collect(),
            );
            let r = relative_difference(&a, &b);
            assert!(r < 1e-6, "{} on {name}: relative difference {r:e}", plain.method);
        }
    }
    let class = Target::Token {
        token: TargetToken::Id(1),
        output: TargetOutput::LogProb,
        position: Some(0),
    };
    assert_recompute_equals_stored(&tiny_bert_classifier(), &class);
}
