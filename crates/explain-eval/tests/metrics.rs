//! Exact anchors: closed-form comprehensibility values, proptest ranges, completeness, and
//! fidelity on a handmade bag-of-tokens model whose logit is a sum of per-token weights.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use approx::assert_abs_diff_eq;
use explain_eval::{
    EvaluationRecord, Evaluator, FidelityConfig, MetricsConfig, RandomControl, RandomExplainer,
    RandomisationConfig, RemovalStrategy, StabilityConfig, completeness, comprehensibility,
    compute_all_metrics, effective_tokens, entropy_complexity, evaluate_removals, fidelity,
    gini_sparseness, metrics_of_explanation, parameter_randomisation, random_control_fidelity,
    seed_stability, stability,
};
use explain_gradients::{GradientXInput, Saliency};
use explainability_core::{
    Architecture, Error, Explainer, Explanation, ForwardOptions, Hooks, LanguageModel, ModelInfo,
    ModelOutput, Result, SpecialTokens, Target, TargetOutput,
    ndarray::Array1,
    tch::{Device, Kind, Tensor},
};
use proptest::prelude::*;

/// Weights of the bag-of-tokens model: token `t` adds `WEIGHTS[t]` to the logit of token 0.
const WEIGHTS: [f64; 8] = [0.0, 3.0, -1.0, 0.5, 2.0, -0.25, 1.5, 0.0];

/// `logit₀ = Σ_{t ≤ p} w(id_t)`, `logit₁ = 0` at every position `p`.
struct BagOfTokens {
    info: ModelInfo,
    table: Tensor,
}

impl BagOfTokens {
    fn new() -> Self {
        Self {
            info: ModelInfo {
                name: "bag".into(),
                architecture: Architecture::Llama,
                n_layers: 1,
                n_heads: 1,
                n_kv_heads: 1,
                d_model: 1,
                d_head: 1,
                d_mlp: 1,
                vocab_size: WEIGHTS.len(),
                max_positions: 64,
                causal: true,
                special_tokens: SpecialTokens::default(),
            },
            table: Tensor::from_slice(&WEIGHTS).to_kind(Kind::Float).view([-1, 1]),
        }
    }
}

impl LanguageModel for BagOfTokens {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn kind(&self) -> Kind {
        Kind::Float
    }
    fn encode(&self, text: &str, _add_special_tokens: bool) -> Result<Vec<i64>> {
        let ids: Vec<i64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        if ids.is_empty() { Err(Error::EmptyText) } else { Ok(ids) }
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        Ok(ids.iter().map(i64::to_string).collect::<Vec<_>>().join(" "))
    }
    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        Ok(ids.iter().map(i64::to_string).collect())
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(&self.table, ids, -1, false, false)?)
    }
    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        _hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        let hidden = embeddings.f_cumsum(1, Kind::Float)?;
        let hidden = options.logit_hidden(&hidden)?;
        Ok(ModelOutput { logits: self.unembed(&hidden)?, final_hidden: hidden, key_values: None })
    }
    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_cat(&[final_hidden.shallow_clone(), final_hidden.zeros_like()], -1)?)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("embed.W_E".into(), self.table.shallow_clone())]
    }
}

fn target_logit() -> Target {
    Target::Token {
        token: explainability_core::TargetToken::Id(0),
        output: TargetOutput::Logit,
        position: None,
    }
}

/// The perfect explanation of the bag model: each token's weight.
fn perfect(ids: &[i64]) -> Explanation {
    let scores = Array1::from_iter(ids.iter().map(|&i| WEIGHTS[i as usize]));
    Explanation::new("oracle", ids.to_vec(), vec![String::new(); ids.len()], scores, target_logit())
        .unwrap()
}

#[test]
fn comprehensibility_closed_forms() {
    // One non-zero entry out of d = 4: Gini (d − 1)/d, entropy 0, one effective token.
    let one_hot = [0.0, -5.0, 0.0, 0.0];
    assert_abs_diff_eq!(gini_sparseness(&one_hot), 0.75, epsilon = 1e-12);
    assert_abs_diff_eq!(entropy_complexity(&one_hot), 0.0, epsilon = 1e-12);
    assert_abs_diff_eq!(effective_tokens(&one_hot), 1.0, epsilon = 1e-12);
    // Uniform |a|: Gini 0, entropy ln d, d effective tokens (signs ignored).
    let uniform = [1.0, -1.0, 1.0, -1.0];
    assert_abs_diff_eq!(gini_sparseness(&uniform), 0.0, epsilon = 1e-12);
    assert_abs_diff_eq!(entropy_complexity(&uniform), 4f64.ln(), epsilon = 1e-12);
    assert_abs_diff_eq!(effective_tokens(&uniform), 4.0, epsilon = 1e-9);
    // [1, 3]: Gini = (−1·1 + 1·3) / (2·4) = 0.25; entropy of (1/4, 3/4).
    assert_abs_diff_eq!(gini_sparseness(&[3.0, 1.0]), 0.25, epsilon = 1e-12);
    let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert_abs_diff_eq!(entropy_complexity(&[3.0, 1.0]), h, epsilon = 1e-12);
    // All zeros: the documented defined values.
    let c = comprehensibility(&[0.0; 5]);
    assert_eq!(c.gini, 0.0);
    assert_abs_diff_eq!(c.entropy, 5f64.ln(), epsilon = 1e-12);
    assert_abs_diff_eq!(c.effective_tokens, 5.0, epsilon = 1e-9);
}

proptest! {
    #[test]
    fn comprehensibility_ranges(v in proptest::collection::vec(-10.0f64..10.0, 1..40), s in 0.01f64..100.0) {
        let d = v.len() as f64;
        let c = comprehensibility(&v);
        prop_assert!(c.gini >= -1e-12 && c.gini <= (d - 1.0) / d + 1e-12);
        prop_assert!(c.entropy >= -1e-12 && c.entropy <= d.ln() + 1e-12);
        prop_assert!(c.effective_tokens >= 1.0 - 1e-9 && c.effective_tokens <= d + 1e-9);
        // scale invariance (relative tolerance: sums reassociate under scaling)
        let scaled: Vec<f64> = v.iter().map(|x| x * s).collect();
        let cs = comprehensibility(&scaled);
        prop_assert!((cs.gini - c.gini).abs() < 1e-9);
        prop_assert!((cs.entropy - c.entropy).abs() < 1e-9);
    }
}

#[test]
fn completeness_from_convergence_delta_and_top_k() {
    let mut e = perfect(&[1, 2, 3, 4]); // scores 3, -1, 0.5, 2: Σ = 4.5, Σ|a| = 6.5
    e.target_value = Some(10.0);
    e.convergence_delta = Some(0.5); // F(x) − F(x') = 4.5 − 0.5 = 4
    let c = completeness(&e, 2).unwrap();
    assert_abs_diff_eq!(c.attribution_sum, 4.5, epsilon = 1e-12);
    assert_abs_diff_eq!(c.relative_residual.unwrap(), 0.5 / 4.0, epsilon = 1e-12);
    assert_abs_diff_eq!(c.top_k_share, 5.0 / 6.5, epsilon = 1e-12);
    // f_baseline metadata takes precedence
    e.metadata.insert("f_baseline".into(), serde_json::json!(8.0));
    assert_abs_diff_eq!(
        completeness(&e, 2).unwrap().relative_residual.unwrap(),
        0.25,
        epsilon = 1e-12
    );
    // k > n is clamped; k = 0 is a typed error; no delta → no residual
    let plain = perfect(&[1, 2]);
    let c = completeness(&plain, 10).unwrap();
    assert_eq!((c.k, c.top_k_share, c.residual), (2, 1.0, None));
    assert!(matches!(completeness(&plain, 0), Err(Error::InvalidArgument { .. })));
}

/// On the bag model with a logit target every strategy removes exactly a token's weight, so
/// comprehensiveness / sufficiency are sums of weights (f32 model: 1e-5).
#[test]
fn bag_of_tokens_fidelity_is_exact() {
    let model = BagOfTokens::new();
    let ids = [1, 2, 3, 4, 5, 6, 1, 4, 2, 3]; // weights 3 -1 .5 2 -.25 1.5 3 2 -1 .5 (Σ 10.25)
    let e = perfect(&ids);
    for strategy in
        [RemovalStrategy::ZeroEmbedding, RemovalStrategy::Replace(0), RemovalStrategy::Delete]
    {
        let config = FidelityConfig {
            strategy,
            bins: vec![0.1, 0.2, 0.5],
            output: TargetOutput::Logit,
            batch_size: 4,
            ..FidelityConfig::default()
        };
        let r = fidelity(&model, &e, &config).unwrap();
        assert_eq!(r.ks, vec![1, 2, 5]);
        assert_abs_diff_eq!(r.full_value, 10.25, epsilon = 1e-5);
        // top by signed score: 3, 3, 2, 2, 1.5 …
        let comp = [3.0, 6.0, 11.5];
        for (got, want) in r.comprehensiveness.iter().zip(comp) {
            assert_abs_diff_eq!(*got, want, epsilon = 1e-5);
        }
        // sufficiency keeps the top k plus the protected explained token (id 3, weight 0.5)
        for (got, want) in r.sufficiency.iter().zip(comp) {
            assert_abs_diff_eq!(*got, 10.25 - want - 0.5, epsilon = 1e-5);
        }
        assert_abs_diff_eq!(r.aopc_comprehensiveness, (3.0 + 6.0 + 11.5) / 3.0, epsilon = 1e-5);
        // drops are exactly subset sums and leave-one-out effects exactly the weights
        assert_abs_diff_eq!(r.faithfulness_correlation.unwrap(), 1.0, epsilon = 1e-6);
        assert_abs_diff_eq!(r.loo_kendall_tau.unwrap(), 1.0, epsilon = 1e-12);
        // the deletion curve of the perfect ranking first falls, the insertion curve first rises
        assert!(r.deletion_curve[1] < r.deletion_curve[0]);
        assert!(r.deletion_auc < r.insertion_auc);
    }
    // the reversed explanation is anti-correlated with the model
    let mut bad = perfect(&ids);
    bad.scores.mapv_inplace(|s| -s);
    let config = FidelityConfig { output: TargetOutput::Logit, ..FidelityConfig::default() };
    let r = fidelity(&model, &bad, &config).unwrap();
    assert!(r.aopc_comprehensiveness < 0.0);
    assert_abs_diff_eq!(r.loo_kendall_tau.unwrap(), -1.0, epsilon = 1e-12);
}

#[test]
fn batched_rows_equal_unbatched_runs() {
    let model = BagOfTokens::new();
    let ids = [1, 2, 3, 4, 5, 6];
    let masks: Vec<Vec<bool>> =
        (0..6).map(|i| (0..6).map(|j| j == i || j == (i + 2) % 6).collect()).collect();
    let t = target_logit();
    for strategy in [RemovalStrategy::Delete, RemovalStrategy::ZeroEmbedding] {
        let batched = evaluate_removals(&model, &ids, &t, strategy, &masks, 8).unwrap();
        for (m, b) in masks.iter().zip(&batched) {
            let single =
                evaluate_removals(&model, &ids, &t, strategy, std::slice::from_ref(m), 1).unwrap();
            assert_abs_diff_eq!(single[0], *b, epsilon = 1e-6);
        }
    }
}

#[test]
fn typed_errors_and_edge_cases() {
    let model = BagOfTokens::new();
    let e = perfect(&[1, 2, 3]);
    let bad_bins = FidelityConfig { bins: vec![0.0], ..FidelityConfig::default() };
    assert!(matches!(fidelity(&model, &e, &bad_bins), Err(Error::InvalidArgument { .. })));
    let no_bins = FidelityConfig { bins: vec![], ..FidelityConfig::default() };
    assert!(matches!(fidelity(&model, &e, &no_bins), Err(Error::InvalidArgument { .. })));
    let t = target_logit();
    let short = vec![vec![true]];
    assert!(matches!(
        evaluate_removals(&model, &[1, 2, 3], &t, RemovalStrategy::ZeroEmbedding, &short, 4),
        Err(Error::InvalidArgument { .. })
    ));
    let all = vec![vec![true; 3]];
    assert!(matches!(
        evaluate_removals(&model, &[1, 2, 3], &t, RemovalStrategy::Delete, &all, 4),
        Err(Error::InvalidArgument { .. })
    ));
    // k beyond n: a 100 % bin on a one-token input under Delete stays defined
    let one = perfect(&[4]);
    let config = FidelityConfig {
        strategy: RemovalStrategy::Delete,
        bins: vec![1.0],
        output: TargetOutput::Logit,
        keep_target_token: false,
        ..FidelityConfig::default()
    };
    // keeping the explained position's token leaves nothing to remove: typed error
    let keep = FidelityConfig { keep_target_token: true, ..config.clone() };
    assert!(matches!(fidelity(&model, &one, &keep), Err(Error::InvalidArgument { .. })));
    let r = fidelity(&model, &one, &config).unwrap();
    assert_eq!(r.ks, vec![1]);
    assert!(r.loo_kendall_tau.is_none());
    // mismatched lengths in a hand-edited explanation
    let mut broken = perfect(&[1, 2, 3]);
    broken.token_ids.pop();
    assert!(matches!(
        fidelity(&model, &broken, &FidelityConfig::default()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn random_explainer_is_seeded() {
    let model = BagOfTokens::new();
    let a = RandomExplainer::new(7).explain_ids(&model, &[1, 2, 3, 4], &Target::argmax()).unwrap();
    let b = RandomExplainer::new(7).explain_ids(&model, &[1, 2, 3, 4], &Target::argmax()).unwrap();
    let c = RandomExplainer::new(8).explain_ids(&model, &[1, 2, 3, 4], &Target::argmax()).unwrap();
    assert_eq!(a.scores, b.scores);
    assert_ne!(a.scores, c.scores);
    assert_eq!(a.target.token_id(), Some(0)); // Σ w = 4.5 > 0: token 0 wins
}

fn bag_ids() -> Vec<i64> {
    vec![1, 2, 3, 4, 5, 6, 1, 4]
}

/// Gradient × input on the bag model with a logit target is `a = e · 1`, so perturbing the
/// embeddings by `δ` moves the attribution by exactly `δ`: the local Lipschitz estimate is 1
/// (f32 model, 1e-4). Saliency is constant (all gradients 1) and the random control ignores
/// embeddings: both have sensitivity 0. Same seed → bit-identical reports.
#[test]
fn stability_anchors_on_the_bag_model() {
    let model = BagOfTokens::new();
    let ids = bag_ids();
    let config = StabilityConfig { samples: 4, radius: 0.1, top_k: 2, seed: 3 };
    let gxi = GradientXInput.explain_ids(&model, &ids, &target_logit()).unwrap();
    let r = stability(&model, &GradientXInput, &gxi, &config).unwrap();
    assert_abs_diff_eq!(r.local_lipschitz, 1.0, epsilon = 1e-4);
    let sens = r.max_sensitivity.unwrap();
    let norm = WEIGHTS_NORM(&ids);
    // ‖δ‖ ≤ r √n for uniform noise in [−r, r]
    assert!(sens > 0.0 && sens <= r.noise_scale * (ids.len() as f64).sqrt() / norm + 1e-6);
    assert!(r.perturbation_spearman > 0.5, "small noise keeps the ranking: {r:?}");
    let again = stability(&model, &GradientXInput, &gxi, &config).unwrap();
    assert_eq!(r, again, "same seed must give bit-identical results");
    let other =
        stability(&model, &GradientXInput, &gxi, &StabilityConfig { seed: 4, ..config.clone() })
            .unwrap();
    assert_ne!(r.max_sensitivity, other.max_sensitivity);

    let sal = Saliency::default().explain_ids(&model, &ids, &target_logit()).unwrap();
    let s = stability(&model, &Saliency::default(), &sal, &config).unwrap();
    assert_eq!((s.max_sensitivity, s.local_lipschitz), (Some(0.0), 0.0));
    assert_eq!(s.perturbation_spearman, 1.0); // identical constant vectors
    let random = RandomExplainer::new(1);
    let re = random.explain_ids(&model, &ids, &target_logit()).unwrap();
    let rs = stability(&model, &random, &re, &config).unwrap();
    assert_eq!(rs.max_sensitivity, Some(0.0));

    // bad settings are typed errors
    for bad in [
        StabilityConfig { samples: 0, ..config.clone() },
        StabilityConfig { radius: f64::NAN, ..config.clone() },
        StabilityConfig { top_k: 0, ..config.clone() },
    ] {
        assert!(matches!(
            stability(&model, &GradientXInput, &gxi, &bad),
            Err(Error::InvalidArgument { .. })
        ));
    }
}

#[allow(non_snake_case)]
fn WEIGHTS_NORM(ids: &[i64]) -> f64 {
    ids.iter().map(|&i| WEIGHTS[i as usize] * WEIGHTS[i as usize]).sum::<f64>().sqrt()
}

/// Across seeds a deterministic method has rank similarity 1; the random control does not;
/// seeded runs repeat bit for bit.
#[test]
fn seed_stability_separates_deterministic_from_random() {
    let model = BagOfTokens::new();
    let ids = bag_ids();
    let det = |_: u64| -> Box<dyn Explainer> { Box::new(GradientXInput) };
    let r = seed_stability(&model, &det, &ids, &target_logit(), 4, 3, 0).unwrap();
    assert_eq!((r.mean_spearman, r.min_spearman, r.mean_top_k_overlap), (1.0, 1.0, 1.0));
    let rnd = |s: u64| -> Box<dyn Explainer> { Box::new(RandomExplainer::new(s)) };
    let a = seed_stability(&model, &rnd, &ids, &target_logit(), 6, 3, 0).unwrap();
    assert!(a.mean_spearman < 0.5, "{a:?}");
    assert_eq!(a, seed_stability(&model, &rnd, &ids, &target_logit(), 6, 3, 0).unwrap());
    assert!(matches!(
        seed_stability(&model, &rnd, &ids, &target_logit(), 1, 3, 0),
        Err(Error::InvalidArgument { .. })
    ));
}

/// A model without `blocks.{l}.` parameters cannot be randomised: typed error.
#[test]
fn randomisation_needs_block_parameters() {
    let model = BagOfTokens::new();
    let e = perfect(&[1, 2, 3]);
    let r = parameter_randomisation(&model, &GradientXInput, &e, &RandomisationConfig::default());
    assert!(matches!(r, Err(Error::InvalidArgument { .. })));
    let zero = RandomisationConfig { checkpoints: vec![0], ..RandomisationConfig::default() };
    assert!(matches!(
        parameter_randomisation(&model, &GradientXInput, &e, &zero),
        Err(Error::InvalidArgument { .. })
    ));
}

/// All-zero attributions give defined numbers everywhere (no NaN).
#[test]
fn all_zero_attributions_are_defined() {
    let model = BagOfTokens::new();
    let mut e = perfect(&bag_ids());
    e.scores.fill(0.0);
    let config = MetricsConfig {
        target: target_logit(),
        fidelity: FidelityConfig { output: TargetOutput::Logit, ..FidelityConfig::default() },
        ..MetricsConfig::default()
    };
    let m = metrics_of_explanation(&model, &GradientXInput, &e, &config).unwrap();
    assert!(m.fidelity.aopc_comprehensiveness.is_finite());
    assert!(m.fidelity.faithfulness_correlation.is_none()); // constant subset sums
    assert!(m.fidelity.loo_kendall_tau.is_none());
    assert_eq!(m.completeness.top_k_share, 1.0);
    assert_eq!(m.comprehensibility.gini, 0.0);
    // a = 0 but gradient × input of the perturbed input is not: unbounded → None, not NaN
    let s = m.stability.unwrap();
    assert!(s.max_sensitivity.is_none() && s.local_lipschitz.is_finite());
    for (_, v) in m.scalars() {
        assert!(v.is_none_or(f64::is_finite));
    }
}

/// The evaluator streams one JSON line per (example, explainer), records failures without
/// stopping, summarises with seeded bootstrap intervals, and rejects an empty dataset.
#[test]
fn evaluator_streams_and_summarises() {
    let model = BagOfTokens::new();
    let random = RandomExplainer::new(0);
    let config = MetricsConfig {
        target: target_logit(),
        fidelity: FidelityConfig {
            output: TargetOutput::Logit,
            bins: vec![0.2, 0.5],
            ..FidelityConfig::default()
        },
        stability: Some(StabilityConfig { samples: 2, ..StabilityConfig::default() }),
        ..MetricsConfig::default()
    };
    let mut evaluator = Evaluator::new(vec![&GradientXInput, &random], config);
    evaluator.progress = false;
    evaluator.control = None; // checked in `evaluator_checks_methods_against_the_random_control`
    let texts = ["1 2 3 4", "4 6 2 5 1", "no digits here", "6 6 2 1 3 4"];
    let mut out = Vec::new();
    let summary = evaluator.evaluate(&model, texts, &mut out).unwrap();
    let lines: Vec<EvaluationRecord> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(summary.examples, 4);
    assert_eq!(summary.failures["gradient_x_input"], 1);
    assert!(lines[4].error.is_some() && lines[4].metrics.is_none());
    let gxi = summary.get("gradient_x_input", "aopc_comprehensiveness").unwrap();
    assert_eq!(gxi.n, 3);
    assert!(gxi.ci_low <= gxi.mean && gxi.mean <= gxi.ci_high);
    // on the bag model gradient × input with a logit target is the perfect explanation
    let rnd = summary.get("random", "aopc_comprehensiveness").unwrap();
    assert!(gxi.mean > rnd.mean, "{gxi:?} vs {rnd:?}");
    assert!(summary.table().contains("aopc_comprehensiveness"));
    // the summary round-trips through JSON
    let json = serde_json::to_string(&summary).unwrap();
    assert_eq!(serde_json::from_str::<explain_eval::EvaluationSummary>(&json).unwrap(), summary);
    let mut again = Vec::new();
    assert_eq!(evaluator.evaluate(&model, texts, &mut again).unwrap(), summary);

    // JSONL in, JSONL out
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data.jsonl");
    std::fs::write(&input, "\"1 2 3\"\n\n{\"text\": \"4 5 6 1\"}\n").unwrap();
    let output = dir.path().join("out.jsonl");
    let s = evaluator.evaluate_jsonl(&model, &input, &output).unwrap();
    assert_eq!(s.examples, 2);
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 4);
    std::fs::write(&input, "42\n").unwrap();
    assert!(matches!(
        evaluator.evaluate_jsonl(&model, &input, &output),
        Err(Error::InvalidArgument { .. })
    ));
    std::fs::write(&input, "{not json\n").unwrap();
    assert!(matches!(evaluator.evaluate_jsonl(&model, &input, &output), Err(Error::Json { .. })));

    // empty dataset, no explainers
    let empty: [&str; 0] = [];
    assert!(matches!(
        evaluator.evaluate(&model, empty, &mut Vec::new()),
        Err(Error::InvalidArgument { .. })
    ));
    let none = Evaluator::new(Vec::new(), MetricsConfig::default());
    assert!(matches!(
        none.evaluate(&model, texts, &mut Vec::new()),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The random control: `draws` seeded random explainers per example, one record each, their
/// metrics averaged per example; the summary says whether the control is worst and how each
/// method's paired difference from it lies. On the bag model gradient × input of the logit is
/// the perfect explanation, so the control must come out worst on comprehensiveness.
#[test]
fn evaluator_checks_methods_against_the_random_control() {
    let model = BagOfTokens::new();
    let config = MetricsConfig {
        target: target_logit(),
        fidelity: FidelityConfig {
            output: TargetOutput::Logit,
            bins: vec![0.2, 0.5],
            ..FidelityConfig::default()
        },
        stability: None,
        ..MetricsConfig::default()
    };
    let mut evaluator = Evaluator::new(vec![&GradientXInput], config);
    evaluator.progress = false;
    evaluator.control = Some(RandomControl { seed: 3, draws: 3 });
    let texts = ["1 2 3 4", "4 6 2 5 1", "no digits here", "6 6 2 1 3 4", "5 3 6 2 4 1 2"];
    let mut out = Vec::new();
    let summary = evaluator.evaluate(&model, texts, &mut out).unwrap();
    let lines: Vec<EvaluationRecord> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5 * 4);
    assert_eq!(lines[0].draw, None);
    assert_eq!(
        lines[1..4].iter().map(|r| (r.method.as_str(), r.draw)).collect::<Vec<_>>(),
        [
            (RandomControl::NAME, Some(0)),
            (RandomControl::NAME, Some(1)),
            (RandomControl::NAME, Some(2))
        ]
    );
    assert_eq!(summary.methods, ["gradient_x_input", RandomControl::NAME]);
    assert_eq!(summary.control.as_deref(), Some(RandomControl::NAME));
    // the control's value of an example is the mean over its draws
    let comp = |r: &EvaluationRecord| r.metrics.as_ref().unwrap().fidelity.aopc_comprehensiveness;
    let draws_mean: f64 = (0..5)
        .filter(|e| *e != 2)
        .map(|e| lines[4 * e + 1..4 * e + 4].iter().map(comp).sum::<f64>() / 3.0)
        .sum::<f64>();
    let control = summary.get(RandomControl::NAME, "aopc_comprehensiveness").unwrap();
    // the example without digits fails for every draw too: one failure, 4 examples
    assert_eq!(control.n, 4);
    assert_eq!(summary.failures[RandomControl::NAME], 1);
    assert!(lines[9..12].iter().all(|r| r.error.is_some()));
    let check = summary.control_check("aopc_comprehensiveness").unwrap();
    assert!(check.higher_is_better && check.control_is_worst, "{check:?}");
    assert_abs_diff_eq!(check.control_mean, control.mean, epsilon = 1e-12);
    let versus = &check.comparisons[0];
    let gxi = summary.get("gradient_x_input", "aopc_comprehensiveness").unwrap();
    assert_eq!((versus.method.as_str(), versus.difference.n), ("gradient_x_input", 4));
    assert_abs_diff_eq!(versus.method_mean, gxi.mean, epsilon = 1e-12);
    // paired on the 4 examples both have: Σ(gxi − control) / 4
    assert_abs_diff_eq!(versus.difference.mean, gxi.mean - draws_mean / 4.0, epsilon = 1e-9);
    assert!(versus.difference.mean > 0.0);
    let sufficiency = summary.control_check("aopc_sufficiency").unwrap();
    assert!(!sufficiency.higher_is_better);
    // no randomisation configured: no check of it
    assert!(summary.control_check("randomisation_similarity").is_none());
    let table = summary.table();
    assert!(table.contains("control `random_control`"), "{table}");
    assert!(table.contains("only 4 paired examples"), "{table}");
    assert!(table.contains("aopc_comprehensiveness (higher is better): random_control is worst"));
    let json = serde_json::to_string(&summary).unwrap();
    assert_eq!(serde_json::from_str::<explain_eval::EvaluationSummary>(&json).unwrap(), summary);
    // same seed, same summary; no draws is an error
    assert_eq!(evaluator.evaluate(&model, texts, &mut Vec::new()).unwrap(), summary);
    evaluator.control = Some(RandomControl { seed: 0, draws: 0 });
    assert!(matches!(
        evaluator.evaluate(&model, texts, &mut Vec::new()),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The per-input random control is the element-wise mean of its draws' fidelity reports.
#[test]
fn random_control_fidelity_averages_its_draws() {
    let model = BagOfTokens::new();
    let e = perfect(&[1, 2, 3, 4, 5, 6, 2]);
    let config = FidelityConfig {
        output: TargetOutput::Logit,
        bins: vec![0.2, 0.5],
        faithfulness_subsets: 8,
        ..FidelityConfig::default()
    };
    let control = RandomControl { seed: 11, draws: 3 };
    let averaged = random_control_fidelity(&model, &e, &config, control).unwrap();
    let draws: Vec<_> = (11..14)
        .map(|seed| {
            let r =
                RandomExplainer::new(seed).explain_ids(&model, &e.token_ids, &e.target).unwrap();
            fidelity(&model, &r, &config).unwrap()
        })
        .collect();
    let mean = |f: fn(&explain_eval::FidelityReport) -> f64| draws.iter().map(f).sum::<f64>() / 3.0;
    assert_abs_diff_eq!(
        averaged.aopc_comprehensiveness,
        mean(|r| r.aopc_comprehensiveness),
        epsilon = 1e-12
    );
    assert_abs_diff_eq!(averaged.deletion_auc, mean(|r| r.deletion_auc), epsilon = 1e-12);
    assert_abs_diff_eq!(
        averaged.comprehensiveness[1],
        mean(|r| r.comprehensiveness[1]),
        epsilon = 1e-12
    );
    assert_abs_diff_eq!(averaged.deletion_curve[2], mean(|r| r.deletion_curve[2]), epsilon = 1e-12);
    assert_eq!(averaged.ks, draws[0].ks);
    assert_eq!(averaged.rows_evaluated, 3 * draws[0].rows_evaluated);
    // the perfect explanation beats the expected random ranking
    let oracle = fidelity(&model, &e, &config).unwrap();
    assert!(oracle.aopc_comprehensiveness > averaged.aopc_comprehensiveness);
    assert!(matches!(
        random_control_fidelity(&model, &e, &config, RandomControl { seed: 0, draws: 0 }),
        Err(Error::InvalidArgument { .. })
    ));
}

/// `compute_all_metrics` keeps the source document's call shape.
#[test]
fn compute_all_metrics_on_text() {
    let model = BagOfTokens::new();
    let config = MetricsConfig {
        target: target_logit(),
        fidelity: FidelityConfig { output: TargetOutput::Logit, ..FidelityConfig::default() },
        stability: None,
        ..MetricsConfig::default()
    };
    let m = compute_all_metrics(&model, &GradientXInput, "1 2 3 4", &config).unwrap();
    assert_eq!((m.method.as_str(), m.n_tokens), ("gradient_x_input", 4));
    assert!(m.stability.is_none() && m.randomisation.is_none());
    // perfect explanation: leave-one-out effects rank exactly like the scores
    assert_abs_diff_eq!(m.fidelity.loo_kendall_tau.unwrap(), 1.0, epsilon = 1e-12);
}

/// `keep_first_token` and `keep_target_token` take positions out of the ranking: with both,
/// only the middle token of three can be removed (bag model, logit target, exact sums).
#[test]
fn protected_positions_are_never_removed() {
    let model = BagOfTokens::new();
    let e = perfect(&[1, 2, 3]); // weights 3, −1, 0.5; Σ = 2.5
    let config = FidelityConfig {
        output: TargetOutput::Logit,
        bins: vec![1.0],
        keep_first_token: true,
        keep_target_token: true,
        faithfulness_subsets: 0,
        ..FidelityConfig::default()
    };
    let r = fidelity(&model, &e, &config).unwrap();
    assert_eq!(r.ks, vec![1]);
    assert_abs_diff_eq!(r.comprehensiveness[0], -1.0, epsilon = 1e-5);
    // only the first protected: the top of {−1, 0.5} is the last token (0.5)
    let r = fidelity(
        &model,
        &e,
        &FidelityConfig { keep_target_token: false, bins: vec![0.5], ..config },
    )
    .unwrap();
    assert_abs_diff_eq!(r.comprehensiveness[0], 0.5, epsilon = 1e-5);
}

/// `compare_paired` pairs by example index, ignores unpaired examples, and reads the direction
/// of the metric: a constant difference of +1 has a zero-width interval at +1.
#[test]
fn paired_comparison_pairs_by_example_and_reads_the_direction() {
    use explain_eval::{ControlVerdict, compare_paired};
    let method = [(0, 1.0), (1, 2.0), (2, 3.0)];
    let other = [(2, 2.0), (0, 0.0), (1, 1.0), (3, 9.0)];
    let up = compare_paired("m", &method, &other, true, 200, 7).unwrap();
    assert_eq!(up.difference.n, 3);
    assert_eq!((up.difference.mean, up.difference.ci_low, up.difference.ci_high), (1.0, 1.0, 1.0));
    assert_eq!(up.method_mean, 2.0);
    assert_eq!(up.verdict, ControlVerdict::Better);
    let down = compare_paired("m", &method, &other, false, 200, 7).unwrap();
    assert_eq!(down.verdict, ControlVerdict::Worse);
    let mixed = compare_paired("m", &[(0, 1.0), (1, -1.0)], &[(0, 0.0), (1, 0.0)], true, 200, 7);
    assert_eq!(mixed.unwrap().verdict, ControlVerdict::Indistinguishable);
    assert!(compare_paired("m", &method, &[(5, 1.0)], true, 200, 7).is_none());
    // Float reassociation is a tie (relative difference ≤ FLOAT_TIE), a real difference is not.
    let noisy = [(0, -5.994_200_01), (1, -3.0)];
    let base = [(0, -5.994_2), (1, -3.000_000_02)];
    let tie = compare_paired("m", &noisy, &base, true, 200, 7).unwrap();
    assert_eq!(
        (tie.difference.mean, tie.difference.ci_low, tie.difference.ci_high),
        (0.0, 0.0, 0.0)
    );
    assert_eq!(tie.verdict, ControlVerdict::Indistinguishable);
    let real = compare_paired("m", &[(0, -5.99), (1, -2.99)], &base, true, 200, 7).unwrap();
    assert_eq!(real.verdict, ControlVerdict::Better);
}
