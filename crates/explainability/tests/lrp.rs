//! AttnLRP and CP-LRP as a relevance mode of the models' own forward passes, on tiny seeded
//! models of every family (Llama, Mistral, Qwen2, Qwen3, Gemma 3 with sandwich norms and q/k
//! norms, GPT-2, a BERT classifier), with f64 weights; logits and norm statistics are f32
//! whatever the model's kind (as in Hugging Face), so f32 round-off sets the tolerances.
//!
//! - Relevance mode leaves the forward values unchanged (1e-6 relative: the norm with a
//!   detached scale computes the same value by a different f32 formula than the plain one).
//! - Conservation, CP-LRP: with every bias and learned position embedding zeroed, every step
//!   is a conservative rule (linear maps without bias, residual sums, norms with a constant
//!   scale, identity rule, constant attention and gates), so `Σ R = F(x)` to f32 round-off
//!   (1e-6 relative). With the biases back, they absorb relevance: the gap is what the
//!   explanation reports, and it is not zero.
//! - Conservation, AttnLRP: the softmax rule is gradient×input through softmax, whose Taylor
//!   expansion has a bias term (Prop. 3.1 of arXiv:2402.05602), so `Σ R ≠ F(x)` in general;
//!   the measured relative gaps are printed and must be finite.
//! - The fused attention kernel and the explicit path (forced by a pattern hook) give the
//!   same relevance to f32 round-off (1e-6 of the largest entry): the softmax rule needs no
//!   change to the softmax, so both carry it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explainability::core::{
    Architecture, Explainer, ForwardOptions, HookFilter, Hooks, LanguageModel, RelevanceRule,
    SpecialTokens, Target, TargetOutput, TargetToken,
};
use explainability::gradients::RelevancePropagation;
use explainability::models::{
    Bert, BertConfig, BertModel, Decoder, DecoderConfig, DecoderModel, Family, HfConfig,
    TextTokenizer, minilm_dir,
};
use tch::{Device, Kind, Tensor};

const VOCAB: usize = 30522;
const TEXT: &str = "the quick brown fox jumps over";

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap()
}

fn decoder(config: DecoderConfig, seed: u64, architecture: Architecture) -> DecoderModel {
    let model = Decoder::random(config, seed, Kind::Double, Device::Cpu).unwrap();
    DecoderModel::new(
        model,
        tokenizer(),
        format!("tiny-{architecture}"),
        architecture,
        SpecialTokens::default(),
    )
}

fn from_hf(family: Family, json: serde_json::Value, seed: u64) -> DecoderModel {
    let config = family.config_from_hf(&HfConfig::from_json(json).unwrap()).unwrap();
    decoder(config, seed, family.architecture())
}

/// Tiny models of every decoder family, through each family's own config constructor.
fn decoders() -> Vec<DecoderModel> {
    let base = |model_type: &str| {
        serde_json::json!({
            "model_type": model_type, "hidden_size": 32, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 48, "num_hidden_layers": 2,
            "vocab_size": VOCAB, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": true,
        })
    };
    let mut qwen3 = base("qwen3");
    qwen3["head_dim"] = 16.into();
    let mut gemma3 = base("gemma3_text");
    for (k, v) in [
        ("head_dim", serde_json::json!(8)),
        ("num_hidden_layers", serde_json::json!(6)),
        ("sliding_window", serde_json::json!(3)),
        ("query_pre_attn_scalar", serde_json::json!(8)),
    ] {
        gemma3[k] = v;
    }
    let gpt2 = serde_json::json!({
        "model_type": "gpt2", "n_embd": 32, "n_head": 4, "n_layer": 2, "n_positions": 64,
        "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5,
    });
    vec![
        from_hf(Family::Llama, base("llama"), 21),
        from_hf(Family::Mistral, base("mistral"), 22),
        from_hf(Family::Qwen2, base("qwen2"), 23),
        from_hf(Family::Qwen3, qwen3, 24),
        from_hf(Family::Gemma3, gemma3, 25),
        from_hf(Family::Gpt2, gpt2, 26),
    ]
}

fn bert() -> BertModel {
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
        Bert::random(config, 27, Kind::Double, Device::Cpu).unwrap(),
        tokenizer(),
        "tiny-bert".into(),
    )
}

/// The argmax token's logit (LRP puts relevance in at a logit).
fn logit() -> Target {
    Target::Token { token: TargetToken::Argmax, output: TargetOutput::Logit, position: None }
}

fn models() -> Vec<(Box<dyn LanguageModel>, Target)> {
    let mut out: Vec<(Box<dyn LanguageModel>, Target)> =
        decoders().into_iter().map(|m| (Box::new(m) as Box<dyn LanguageModel>, logit())).collect();
    out.push((
        Box::new(bert()),
        Target::Token { token: TargetToken::Id(1), output: TargetOutput::Logit, position: Some(0) },
    ));
    out
}

/// Zeroes every bias and the learned position and token-type embeddings (the inputs that
/// absorb relevance); norm weights and projections stay.
fn zero_biases(model: &dyn LanguageModel) {
    let _guard = tch::no_grad_guard();
    for (name, mut t) in model.named_parameters() {
        let absorbs = name.ends_with(".b")
            || name.contains(".b_")
            || name.contains("bias")
            || name.contains("W_pos")
            || name.contains("token_type");
        if absorbs && !name.contains("ln") {
            let _ = t.zero_();
        }
    }
}

fn relevance(
    model: &dyn LanguageModel,
    rule: RelevanceRule,
    target: &Target,
) -> (Vec<f64>, f64, f64) {
    let ids = model.encode(TEXT, true).unwrap();
    let r = RelevancePropagation { rule }.relevance(model, &ids, target).unwrap();
    (r.per_token, r.conservation.relevance_sum, r.conservation.target_value)
}

#[test]
fn relevance_mode_keeps_forward_values() {
    for (model, _) in models() {
        let ids = model.ids_tensor(TEXT).unwrap();
        let plain = model.forward_ids(&ids, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
        for rule in [RelevanceRule::AttnLrp, RelevanceRule::CpLrp] {
            let options = ForwardOptions { relevance: Some(rule), ..Default::default() };
            let lrp = model.forward_ids(&ids, &options, &mut Hooks::new()).unwrap();
            let diff =
                plain.final_hidden.f_sub(&lrp.final_hidden).unwrap().abs().max().double_value(&[]);
            let scale = plain.final_hidden.abs().max().double_value(&[]);
            // Detached norm scales compute the same value by a different f32 formula.
            assert!(
                diff < 1e-6 * scale,
                "{} {rule:?}: forward changed by {diff}",
                model.info().name
            );
        }
    }
}

#[test]
fn cp_lrp_conserves_exactly_without_biases_and_biases_absorb_relevance() {
    for (model, target) in models() {
        let name = model.info().name.clone();
        let (_, with_bias, f_with) = relevance(model.as_ref(), RelevanceRule::CpLrp, &target);
        zero_biases(model.as_ref());
        let (per_token, sum, f) = relevance(model.as_ref(), RelevanceRule::CpLrp, &target);
        let rel = (sum - f).abs() / f.abs();
        println!(
            "{name}: CP-LRP Σ R = {sum:.6}, F(x) = {f:.6}, relative gap {rel:.2e} (biases zeroed); with biases {with_bias:.6} vs {f_with:.6}"
        );
        assert!(rel < 1e-6, "{name}: Σ R = {sum} vs F(x) = {f}");
        assert!(per_token.iter().all(|r| r.is_finite()));
        if matches!(
            model.info().architecture,
            Architecture::Gpt2 | Architecture::Qwen2 | Architecture::Bert
        ) {
            assert!(
                (with_bias - f_with).abs() > 1e-6 * f_with.abs(),
                "{name}: biases absorbed nothing"
            );
        }
    }
}

#[test]
fn attn_lrp_conservation_gap_is_the_softmax_bias_term() {
    for (model, target) in models() {
        let name = model.info().name.clone();
        zero_biases(model.as_ref());
        let (_, sum, f) = relevance(model.as_ref(), RelevanceRule::AttnLrp, &target);
        println!(
            "{name}: AttnLRP Σ R = {sum:.6}, F(x) = {f:.6}, relative gap {:.2e}",
            (sum - f).abs() / f.abs()
        );
        assert!(sum.is_finite());
    }
}

#[test]
fn fused_and_explicit_attention_give_the_same_relevance() {
    for (model, target) in models() {
        let name = model.info().name.clone();
        let ids = model.encode(TEXT, true).unwrap();
        let ids_t = Tensor::from_slice(&ids).unsqueeze(0);
        for rule in [RelevanceRule::AttnLrp, RelevanceRule::CpLrp] {
            let run = |explicit: bool| {
                tch::with_grad(|| {
                    let e = model.embed(&ids_t).unwrap().detach().set_requires_grad(true);
                    let mut hooks = Hooks::new();
                    if explicit {
                        // Reading the pattern forces the explicit scores → pattern → z path.
                        hooks.read(
                            HookFilter::kind(explainability::core::HookKind::Pattern),
                            |_, _| Ok(()),
                        );
                    }
                    let options = ForwardOptions { relevance: Some(rule), ..Default::default() };
                    let out = model.forward_embeddings(&e, &options, &mut hooks).unwrap();
                    let y = target
                        .resolve(&out.logits.detach())
                        .unwrap()
                        .evaluate(&out.logits)
                        .unwrap()
                        .sum(Kind::Double);
                    Tensor::run_backward(&[&y], &[&e], false, false).remove(0).f_mul(&e).unwrap()
                })
            };
            let (fused, explicit) = (run(false), run(true));
            let scale = explicit.abs().max().double_value(&[]);
            let diff = (fused - &explicit).abs().max().double_value(&[]);
            assert!(diff <= 1e-6 * scale.max(1.0), "{name} {rule:?}: {diff} of {scale}");
        }
    }
}

#[test]
fn explainers_are_registered_and_report_conservation() {
    let framework = explainability::Framework::with_defaults();
    let model = &decoders()[0];
    for method in ["attn_lrp", "cp_lrp"] {
        let e = framework.explain(model, TEXT, method, &Target::argmax()).unwrap();
        assert_eq!(e.method, method);
        let delta = e.convergence_delta.unwrap();
        let sum: f64 = e.scores.iter().sum();
        assert!((sum - delta - e.target_value.unwrap()).abs() < 1e-9);
    }
    let contrast =
        RelevancePropagation::attn_lrp().explain(model, TEXT, &Target::contrastive(5, 7)).unwrap();
    assert!(contrast.scores.iter().all(|s| s.is_finite()));
}
