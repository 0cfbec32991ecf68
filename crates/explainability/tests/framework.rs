//! The explainer framework and model comparison on the real SmolLM2-135M: every default
//! method explains a prompt, a failing method is reported beside the others, aggregation of
//! real explanations, a model compared with itself agrees fully, and vocabularies that differ
//! are a typed error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, OnceLock};

use explainability::models::{Decoder, DecoderModel, LlamaConfig};
use explainability::{
    Aggregation, AnyModel, Architecture, DEFAULT_METHODS, Error, Explainer, Explanation, Framework,
    LanguageModel, ModelComparison, Target, aggregate, load, smollm2_gguf_path,
};

fn model() -> std::sync::MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(load(smollm2_gguf_path()).expect("run `cargo xtask setup`")))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// An explainer that always fails, as a method with a bug would.
struct Broken;

impl Explainer for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    fn explain_ids(
        &self,
        _: &dyn LanguageModel,
        _: &[i64],
        _: &Target,
    ) -> explainability::Result<Explanation> {
        Err(Error::invalid_argument("this method is broken on purpose"))
    }
}

const TEXT: &str = "The capital of France is";

#[test]
fn every_default_method_explains_and_a_failure_is_reported_not_fatal() {
    let model = model();
    let mut framework = Framework::with_defaults();
    framework.register(Broken);
    let comparison = framework.compare_methods(&*model, TEXT, &[], &Target::argmax()).unwrap();
    assert_eq!(comparison.outcomes.len(), DEFAULT_METHODS.len() + 1);
    let failures = comparison.failures();
    assert_eq!(failures.len(), 1, "only the broken method fails: {failures:?}");
    assert_eq!(failures[0].0, "broken");
    assert!(failures[0].1.message.contains("broken on purpose"));
    assert!(matches!(failures[0].1.error.as_deref(), Some(Error::InvalidArgument { .. })));
    let paris = model.encode(" Paris", false).unwrap()[0];
    for e in comparison.explanations() {
        assert_eq!(e.len(), comparison.token_ids.len(), "{}", e.method);
        assert!(e.scores.iter().all(|s| s.is_finite()), "{} has non-finite scores", e.method);
        assert_eq!(e.target.token_id(), Some(paris), "{} explains \" Paris\"", e.method);
    }
    let ig =
        comparison.explanations().into_iter().find(|e| e.method == "integrated_gradients").unwrap();
    let delta = ig.convergence_delta.unwrap();
    let total = ig.scores.sum() - delta;
    // The default IG is adaptive with a 5% tolerance on the relative delta.
    assert!((delta / total).abs() <= 0.05 + 1e-9, "delta {delta} of {total}");
    // Results serialise (failures keep their message, drop the in-memory error).
    let json = serde_json::to_string(&comparison).unwrap();
    let back: explainability::MethodComparison = serde_json::from_str(&json).unwrap();
    assert_eq!(back.failures()[0].1.message, failures[0].1.message);
    assert_eq!(back.explanations().len(), comparison.explanations().len());
}

#[test]
fn aggregation_of_real_explanations() {
    let model = model();
    let framework = Framework::with_defaults();
    let methods = ["gradient_x_input", "saliency", "attention_rollout"];
    let c = framework.compare_methods(&*model, TEXT, &methods, &Target::argmax()).unwrap();
    let explanations: Vec<Explanation> = c.explanations().into_iter().cloned().collect();
    assert_eq!(explanations.len(), 3);
    for how in
        [Aggregation::MeanNormalised, Aggregation::Rank, Aggregation::TopKIntersection { k: 3 }]
    {
        let a = aggregate(&explanations, how).unwrap();
        assert_eq!(a.token_ids, c.token_ids);
        assert!(a.scores.iter().all(|s| s.is_finite() && s.abs() <= 1.0 + 1e-12), "{how:?}");
    }
    let other = framework
        .explain(&*model, "The capital of Italy is", "saliency", &Target::argmax())
        .unwrap();
    assert!(matches!(
        aggregate(&[explanations[0].clone(), other], Aggregation::Rank),
        Err(Error::IncompatibleExplanations { .. })
    ));
    assert!(matches!(
        framework.explain(&*model, TEXT, "no_such_method", &Target::argmax()),
        Err(Error::UnknownMethod { .. })
    ));
}

#[test]
fn a_model_compared_with_itself_agrees_fully() {
    let model = model();
    let comparison =
        ModelComparison::new(vec![("a", &*model as &dyn LanguageModel), ("b", &*model)])
            .unwrap()
            .progress(false);
    let c = comparison.compare(TEXT).unwrap();
    assert!(c.all_agree && c.disagreeing.is_empty());
    assert_eq!(c.majority, " Paris");
    // Two forward passes of one model: equal up to libtorch choosing kernels by buffer
    // alignment (measured 4e-17 with one thread), far below any real divergence.
    assert!(c.js_divergence[[0, 1]].abs() < 1e-12, "{}", c.js_divergence[[0, 1]]);
    let framework = Framework::with_defaults();
    let texts = ["The capital of France is", "Two plus two equals"];
    let d = comparison
        .compare_dataset(texts, &framework, &["gradient_x_input"], &Target::argmax())
        .unwrap();
    assert_eq!((d.n_texts, d.agreement_rate), (2, 1.0));
    let s = &d.explanation_similarity[0];
    assert_eq!(s.n_texts, 2);
    assert!((s.spearman[[0, 1]] - 1.0).abs() < 1e-12);
    assert!((s.top_k_jaccard[[0, 1]] - 1.0).abs() < 1e-12);
    assert!(d.failures.is_empty());
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(serde_json::from_str::<explainability::DatasetComparison>(&json).unwrap(), d);
    assert!(matches!(
        comparison.compare_dataset(Vec::<String>::new(), &framework, &[], &Target::argmax()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn models_with_other_vocabularies_are_refused() {
    let model = model();
    let config = LlamaConfig {
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        d_model: 16,
        d_head: 8,
        d_mlp: 32,
        vocab_size: 1000,
        max_positions: 64,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        attention_bias: false,
    };
    let tiny = DecoderModel::new(
        Decoder::random(config.into(), 1, tch::Kind::Float, tch::Device::Cpu).unwrap(),
        model.as_decoder().unwrap().tokenizer().clone(),
        "tiny".into(),
        Architecture::Llama,
        model.info().special_tokens,
    );
    let result =
        ModelComparison::new(vec![("smollm2", &*model as &dyn LanguageModel), ("tiny", &tiny)]);
    match result {
        Err(Error::VocabularyMismatch { first, second, .. }) => {
            assert_eq!((first.as_str(), second.as_str()), ("smollm2", "tiny"));
        }
        Err(other) => panic!("expected VocabularyMismatch, got {other}"),
        Ok(_) => panic!("expected VocabularyMismatch, got a comparison"),
    }
}

/// SmolLM2 counting its forward passes.
struct Counting<'m> {
    inner: &'m AnyModel,
    forwards: std::cell::Cell<usize>,
}

impl LanguageModel for Counting<'_> {
    fn info(&self) -> &explainability::ModelInfo {
        self.inner.info()
    }
    fn device(&self) -> tch::Device {
        self.inner.device()
    }
    fn kind(&self) -> tch::Kind {
        self.inner.kind()
    }
    fn encode(&self, text: &str, add_special_tokens: bool) -> explainability::Result<Vec<i64>> {
        self.inner.encode(text, add_special_tokens)
    }
    fn decode(&self, ids: &[i64]) -> explainability::Result<String> {
        self.inner.decode(ids)
    }
    fn token_strings(&self, ids: &[i64]) -> explainability::Result<Vec<String>> {
        self.inner.token_strings(ids)
    }
    fn embed(&self, ids: &tch::Tensor) -> explainability::Result<tch::Tensor> {
        self.inner.embed(ids)
    }
    fn forward_embeddings(
        &self,
        embeddings: &tch::Tensor,
        options: &explainability::ForwardOptions,
        hooks: &mut explainability::Hooks<'_>,
    ) -> explainability::Result<explainability::ModelOutput> {
        self.forwards.set(self.forwards.get() + 1);
        self.inner.forward_embeddings(embeddings, options, hooks)
    }
    fn unembed(&self, final_hidden: &tch::Tensor) -> explainability::Result<tch::Tensor> {
        self.inner.unembed(final_hidden)
    }
    fn named_parameters(&self) -> Vec<(String, tch::Tensor)> {
        self.inner.named_parameters()
    }
}

#[test]
fn methods_of_one_input_share_their_passes_and_give_what_they_give_alone() {
    let model = model();
    let counting = Counting { inner: &model, forwards: std::cell::Cell::new(0) };
    let framework = Framework::with_defaults();
    let methods =
        ["saliency", "gradient_x_input", "attention_rollout", "attention_last_layer", "random"];
    let target = Target::argmax();
    let ids = counting.encode(TEXT, true).unwrap();
    let mut alone = Vec::new();
    let mut forwards_alone = 0;
    for m in methods {
        counting.forwards.set(0);
        alone.push(framework.explain_ids(&counting, &ids, m, &target).unwrap());
        forwards_alone += counting.forwards.get();
    }
    counting.forwards.set(0);
    let shared = framework.compare_methods(&counting, TEXT, &methods, &target).unwrap();
    // Alone: saliency 1, gradient × input 1, each attention method a capture and a forward
    // for the target, random 1. Shared: one differentiated pass for both gradient methods,
    // one capture for both attention methods, the target resolved once.
    assert_eq!(forwards_alone, 7);
    assert_eq!(counting.forwards.get(), 2);
    // The methods that read another's pass say so.
    let shared_pass = |m: &str| {
        let outcome = shared.outcomes.iter().find(|o| o.method == m).unwrap();
        outcome.explanation.as_ref().unwrap().metadata.get("shared_pass").cloned()
    };
    assert_eq!(shared_pass("saliency"), None);
    assert_eq!(shared_pass("gradient_x_input"), Some(serde_json::json!("input_gradient")));
    assert_eq!(shared_pass("attention_rollout"), None);
    assert_eq!(
        shared_pass("attention_last_layer"),
        Some(serde_json::json!("attention_head_means"))
    );
    for (a, outcome) in alone.iter().zip(&shared.outcomes) {
        let s = outcome.explanation.as_ref().unwrap();
        assert_eq!(a.method, s.method);
        // The same computation: identical scores and target.
        assert_eq!(a.scores, s.scores, "{}", a.method);
        assert_eq!(a.target, s.target, "{}", a.method);
        assert_eq!(a.target_token, s.target_token, "{}", a.method);
        // F(x) read from another method's pass: the same logit, computed for one position
        // instead of all (f32 summation order).
        let (va, vs) = (a.target_value.unwrap(), s.target_value.unwrap());
        assert!((va - vs).abs() <= 1e-5 * va.abs().max(1.0), "{}: {va} vs {vs}", a.method);
    }
}
