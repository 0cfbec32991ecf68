//! The explainers on language models: a tiny random Llama (fast, exact relations) and the real
//! SmolLM2-135M (loaded once per binary).
//!
//! - Leave-one-out equals feature ablation over singleton spans and the direct
//!   `f(x) − f(x ∖ i)` from `evaluate_removals`, under Delete, Replace and zero embedding.
//! - Exact Shapley on the model satisfies efficiency against the empty-context value.
//! - Batch-size invariance (1, 3, 64 rows per pass) within 1e-5 (f32 batched matmuls
//!   reassociate sums); same seed → bit-identical scores.
//! - Occlusion windows, word features, contrastive targets, typed errors for spans and
//!   explicit positions under Delete.
//! - Prefix (KV) reuse: every method and removal strategy gives the attributions of the full
//!   recomputation (1e-5 on the tiny model, 1e-4 on SmolLM2: the same sums over other matrix
//!   shapes), at fewer forward-equivalents; explicit target positions and random masks
//!   through `evaluate_removals_with`.
//! - SmolLM2 on "The capital of France is": every method finite, " France" among the top three
//!   tokens (the query token " is" itself ranks first under Delete: removing it changes the
//!   question), forward passes as documented; timings printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use approx::assert_abs_diff_eq;
use explain_models::{
    AnyModel, Decoder, DecoderModel, LlamaConfig, TextTokenizer, load, minilm_dir,
    smollm2_gguf_path,
};
use explain_perturbation::evaluate_removals;
use explain_perturbation::{
    FeatureKind, ModelGame, PerturbationExplainer, PerturbationMethod, RemovalStrategy,
    exact_shapley,
};
use explainability_core::{
    Architecture, Error, Explainer, LanguageModel, RemovalOptions, SpecialTokens, SplitMix64,
    Target, TargetOutput, TargetToken, evaluate_removals_with,
};
use tch::{Device, Kind};

fn tiny() -> DecoderModel {
    let config = LlamaConfig {
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        d_model: 32,
        d_head: 8,
        d_mlp: 48,
        vocab_size: 30522,
        max_positions: 64,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        attention_bias: false,
    };
    let tokenizer = TextTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap();
    let decoder = Decoder::random(config.into(), 11, Kind::Float, Device::Cpu).unwrap();
    let special = SpecialTokens { bos: Some(101), ..SpecialTokens::default() };
    DecoderModel::new(decoder, tokenizer, "tiny-llama".into(), Architecture::Llama, special)
}

fn smollm2() -> MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(load(smollm2_gguf_path()).expect("run `cargo xtask setup`")))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

const IDS: [i64; 7] = [2023, 3007, 1997, 2605, 2003, 3000, 1012];

fn scores(e: &explainability_core::Explanation) -> Vec<f64> {
    e.scores.to_vec()
}

#[test]
fn leave_one_out_is_feature_ablation_over_singletons_and_the_direct_drop() {
    let model = tiny();
    let target = Target::log_prob(2000);
    for strategy in
        [RemovalStrategy::Delete, RemovalStrategy::Replace(100), RemovalStrategy::ZeroEmbedding]
    {
        let loo = PerturbationExplainer::leave_one_out().with_strategy(strategy);
        let e = loo.explain_ids(&model, &IDS, &target).unwrap();
        let spans = FeatureKind::Spans((0..IDS.len()).map(|i| i..i + 1).collect());
        let fa = PerturbationExplainer::feature_ablation(spans).with_strategy(strategy);
        let f = fa.explain_ids(&model, &IDS, &target).unwrap();
        assert_eq!(e.method, "leave_one_out");
        assert_eq!(f.method, "feature_ablation");
        assert_eq!(scores(&e), scores(&f));
        let masks: Vec<Vec<bool>> =
            (0..=IDS.len()).map(|i| (0..IDS.len()).map(|j| j == i).collect()).collect();
        let v = evaluate_removals(&model, &IDS, &target, strategy, &masks, 1).unwrap();
        let full = v[IDS.len()]; // the mask removing nothing
        for i in 0..IDS.len() {
            assert_abs_diff_eq!(e.scores[i], full - v[i], epsilon = 1e-5);
        }
        assert_eq!(e.metadata["forward_passes"], serde_json::json!(IDS.len() + 1));
        assert_abs_diff_eq!(e.target_value.unwrap(), full, epsilon = 1e-5);
    }
}

#[test]
fn exact_shapley_on_a_model_is_efficient_against_the_empty_context() {
    let model = tiny();
    let target = Target::log_prob(2000);
    let spans: Vec<_> = (0..IDS.len()).map(|i| i..i + 1).collect();
    let mut game =
        ModelGame::new(&model, &IDS, spans, RemovalStrategy::Delete, &target, 16).unwrap();
    let a = exact_shapley(&mut game).unwrap();
    assert_eq!(game.forward_rows(), 1 << IDS.len()); // 2ⁿ − 1 perturbed inputs + the input
    let empty =
        evaluate_removals(&model, &[101], &target, RemovalStrategy::Delete, &[vec![false]], 1)
            .unwrap()[0];
    assert_abs_diff_eq!(a.scores.row(0).sum(), game.full_value() - empty, epsilon = 1e-4);
}

fn every_method() -> Vec<PerturbationExplainer> {
    vec![
        PerturbationExplainer::leave_one_out(),
        PerturbationExplainer::occlusion(3, 2),
        PerturbationExplainer::exact_shapley(),
        PerturbationExplainer::shapley_sampling(),
        PerturbationExplainer::kernel_shap(),
        PerturbationExplainer::lime(),
        PerturbationExplainer::context_cite().with_features(FeatureKind::Tokens),
    ]
}

#[test]
fn results_do_not_depend_on_the_batch_size_and_seeds_reproduce() {
    let model = tiny();
    let target = Target::contrastive(2000, 2001);
    for method in every_method() {
        let reference =
            method.clone().with_batch_size(64).explain_ids(&model, &IDS, &target).unwrap();
        for batch in [1, 3] {
            let e =
                method.clone().with_batch_size(batch).explain_ids(&model, &IDS, &target).unwrap();
            for i in 0..IDS.len() {
                assert_abs_diff_eq!(e.scores[i], reference.scores[i], epsilon = 1e-5);
            }
        }
        let again = method.clone().with_batch_size(64).explain_ids(&model, &IDS, &target).unwrap();
        assert_eq!(scores(&again), scores(&reference), "{}", method.name());
        assert!(reference.scores.iter().all(|s| s.is_finite()));
    }
    let seeded = |seed| {
        PerturbationExplainer::new(PerturbationMethod::KernelShap { samples: 20, seed })
            .with_features(FeatureKind::Windows { width: 1, stride: 1 })
    };
    let long: Vec<i64> = (0..10).map(|i| 2000 + i).collect();
    let a = seeded(1).explain_ids(&model, &long, &target).unwrap();
    let b = seeded(2).explain_ids(&model, &long, &target).unwrap();
    assert_ne!(scores(&a), scores(&b));
}

#[test]
fn occlusion_words_and_replacement_on_a_model() {
    let model = tiny();
    let target = Target::log_prob(2000);
    let occ = PerturbationExplainer::occlusion(2, 2)
        .with_strategy(RemovalStrategy::ZeroEmbedding)
        .explain_ids(&model, &IDS, &target)
        .unwrap();
    // windows 0..2, 2..4, 4..6, 5..7: token 5 is covered by two windows, its score their mean
    let fs: Vec<f64> = serde_json::from_value(occ.metadata["feature_scores"].clone()).unwrap();
    assert_eq!(fs.len(), 4);
    assert_abs_diff_eq!(occ.scores[0], fs[0]);
    assert_abs_diff_eq!(occ.scores[5], (fs[2] + fs[3]) / 2.0);
    assert_eq!(occ.metadata["forward_passes"], serde_json::json!(5));
    // keep_first_token leaves token 0 out of every feature (score 0)
    let mut keep = PerturbationExplainer::leave_one_out();
    keep.keep_first_token = true;
    let k = keep.explain_ids(&model, &IDS, &target).unwrap();
    assert_eq!(k.scores[0], 0.0);
    assert_eq!(k.metadata["forward_passes"], serde_json::json!(IDS.len()));
    // an explicit target position works with Replace and is refused by Delete
    let at3 = Target::Token {
        token: TargetToken::Argmax,
        output: TargetOutput::Logit,
        position: Some(3),
    };
    let replaced = PerturbationExplainer::leave_one_out()
        .with_strategy(RemovalStrategy::Replace(100))
        .explain_ids(&model, &IDS, &at3)
        .unwrap();
    // tokens after the explained position cannot change a causal model's output there
    for i in 4..IDS.len() {
        assert_abs_diff_eq!(replaced.scores[i], 0.0, epsilon = 1e-6);
    }
    assert!(matches!(
        PerturbationExplainer::leave_one_out().explain_ids(&model, &IDS, &at3),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn bad_features_are_typed_errors() {
    let model = tiny();
    let target = Target::log_prob(2000);
    let outside = PerturbationExplainer::feature_ablation(FeatureKind::Spans(vec![0..2, 5..9]));
    assert!(matches!(
        outside.explain_ids(&model, &IDS, &target),
        Err(Error::SpanOutOfRange { start: 5, end: 9, len: 7 })
    ));
    let long: Vec<i64> = (0..13).map(|i| 2000 + i).collect();
    assert!(matches!(
        PerturbationExplainer::exact_shapley().explain_ids(&model, &long, &target),
        Err(Error::TooManyFeatures { n_features: 13, .. })
    ));
    let none = PerturbationExplainer::new(PerturbationMethod::Lime {
        samples: 0,
        kernel_width: 1.0,
        seed: 0,
    });
    assert!(matches!(none.explain_ids(&model, &IDS, &target), Err(Error::NoSamples { .. })));
    assert!(matches!(
        PerturbationExplainer::leave_one_out().explain_ids(&model, &[], &target),
        Err(Error::EmptyText)
    ));
    assert!(matches!(
        PerturbationExplainer::leave_one_out()
            .with_batch_size(0)
            .explain_ids(&model, &IDS, &target),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn smollm2_credits_france_for_paris() {
    let model = smollm2();
    let text = "The capital of France is";
    let ids = model.encode(text, true).unwrap();
    let paris = model.encode(" Paris", false).unwrap()[0];
    let target = Target::log_prob(paris);
    for method in every_method() {
        let started = Instant::now();
        let e = method.explain_ids(&*model, &ids, &target).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert!(e.scores.iter().all(|s| s.is_finite()), "{}", e.method);
        let top: Vec<&str> = e.top_k(3).iter().map(|t| t.1).collect();
        println!(
            "{:>16}: {:?} forward passes {} in {seconds:.2} s; top {top:?}",
            e.method,
            e.scores.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>(),
            e.metadata["forward_passes"]
        );
        if e.method != "occlusion" {
            assert!(top.contains(&" France"), "{}: top three {top:?}", e.method);
        }
    }
}

#[test]
fn continuation_rows_add_up_and_match_next_token_explanations() {
    let model = tiny();
    let prompt = &IDS[..5];
    let continuation = [2000, 2001, 2002];
    for strategy in [RemovalStrategy::Delete, RemovalStrategy::Replace(100)] {
        let loo = PerturbationExplainer::leave_one_out().with_strategy(strategy);
        let c = loo.explain_continuation(&model, prompt, &continuation).unwrap();
        assert_eq!(c.token_attr.dim(), (3, 5));
        for i in 0..5 {
            assert_abs_diff_eq!(c.seq_attr[i], c.token_attr.column(i).sum(), epsilon = 1e-9);
        }
        // row t is the next-token explanation of y_t after prompt ++ y_<t, restricted to the
        // prompt (the forced tokens are not features)
        for t in 0..3 {
            let ids: Vec<i64> = prompt.iter().chain(&continuation[..t]).copied().collect();
            let spans = FeatureKind::Spans((0..5).map(|i| i..i + 1).collect());
            let e = PerturbationExplainer::feature_ablation(spans)
                .with_strategy(strategy)
                .explain_ids(&model, &ids, &Target::log_prob(continuation[t]))
                .unwrap();
            // 1e-4: the next-token explainer's v(N) comes from an unbatched forward, the
            // continuation's from a batched row (f32 sums reassociated, values of size ~10)
            for i in 0..5 {
                assert_abs_diff_eq!(c.token_attr[[t, i]], e.scores[i], epsilon = 1e-4);
            }
            assert_abs_diff_eq!(c.full_values[t + 1], e.target_value.unwrap(), epsilon = 1e-4);
        }
        // a span target is the sum of its rows; the whole continuation is seq_attr
        let span = c.span(1..3).unwrap();
        for i in 0..5 {
            assert_abs_diff_eq!(
                span[i],
                c.token_attr[[1, i]] + c.token_attr[[2, i]],
                epsilon = 1e-12
            );
            assert_abs_diff_eq!(c.span(0..3).unwrap()[i], c.seq_attr[i], epsilon = 1e-9);
        }
        assert!(matches!(c.span(2..4), Err(Error::SpanOutOfRange { start: 2, end: 4, len: 3 })));
        // (1 full + 5 ablations) × 3 tokens, plus the full values once more
        assert_eq!(c.forward_passes, 6 * 3 + 3);
        // exact Shapley on the continuation: efficiency per output
        let s = PerturbationExplainer::exact_shapley()
            .with_strategy(strategy)
            .explain_continuation(&model, prompt, &continuation)
            .unwrap();
        assert!(s.token_attr.iter().all(|v| v.is_finite()));
    }
    assert!(matches!(
        PerturbationExplainer::leave_one_out().explain_continuation(&model, prompt, &[]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        PerturbationExplainer::leave_one_out().explain_continuation(&model, prompt, &[40_000]),
        Err(Error::TokenOutOfRange { id: 40_000, .. })
    ));
}

fn forward_equivalents(e: &explainability_core::Explanation) -> f64 {
    e.metadata["forward_equivalents"].as_f64().unwrap()
}

#[test]
fn prefix_reuse_equals_full_recomputation_for_every_method_and_strategy() {
    let model = tiny();
    assert!(model.supports_key_value_cache());
    for target in [Target::log_prob(2000), Target::contrastive(2000, 2001)] {
        for strategy in
            [RemovalStrategy::Delete, RemovalStrategy::Replace(100), RemovalStrategy::ZeroEmbedding]
        {
            for method in every_method() {
                let method = method.with_strategy(strategy).with_batch_size(4);
                let reused = method.clone().explain_ids(&model, &IDS, &target).unwrap();
                let full =
                    method.clone().with_prefix_reuse(false).explain_ids(&model, &IDS, &target);
                let full = full.unwrap();
                for i in 0..IDS.len() {
                    assert_abs_diff_eq!(reused.scores[i], full.scores[i], epsilon = 1e-5);
                }
                assert_eq!(reused.metadata["forward_passes"], full.metadata["forward_passes"]);
                // A batch runs from its earliest first change, so a method whose every batch
                // holds a row changed at token 0 saves nothing; leave-one-out always saves.
                let saves = method.name() == "leave_one_out";
                assert!(
                    forward_equivalents(&reused) < forward_equivalents(&full)
                        || (!saves && forward_equivalents(&reused) == forward_equivalents(&full)),
                    "{} {strategy:?}: {} vs {} forward-equivalents",
                    method.name(),
                    forward_equivalents(&reused),
                    forward_equivalents(&full)
                );
                assert_eq!(full.metadata["positions_reused"], serde_json::json!(0));
            }
        }
    }
    // An explicit target position (Replace / zero embedding): rows changed only after it
    // equal the input, rows changed before it are recomputed from their change on.
    let mut rng = SplitMix64::new(7);
    let masks: Vec<Vec<bool>> =
        (0..40).map(|_| (0..IDS.len()).map(|_| rng.uniform() < 0.3).collect()).collect();
    for position in [Some(3), None] {
        let target =
            Target::Token { token: TargetToken::Id(2000), output: TargetOutput::LogProb, position };
        for strategy in [RemovalStrategy::Replace(100), RemovalStrategy::ZeroEmbedding] {
            let run = |reuse_prefix| {
                let options = RemovalOptions { batch_size: 5, reuse_prefix, input_cache: None };
                evaluate_removals_with(&model, &IDS, &target, strategy, &masks, &options).unwrap()
            };
            let (reused, full) = (run(true), run(false));
            assert!(reused.reused_prefix && !full.reused_prefix);
            assert!(reused.positions_reused > 0);
            for (a, b) in reused.values.iter().zip(&full.values) {
                assert_abs_diff_eq!(a, b, epsilon = 1e-5);
            }
        }
    }
}

#[test]
fn smollm2_prefix_reuse_matches_and_saves() {
    let model = smollm2();
    let text = "The Eiffel Tower, built for the 1889 World's Fair, stands on the Champ de Mars \
                and is the most visited monument in the capital of France, which is";
    let ids = model.encode(text, true).unwrap();
    let target = Target::argmax();
    for strategy in [RemovalStrategy::Delete, RemovalStrategy::Replace(0)] {
        // Batches of 8: a batch runs from its earliest first change, so the saving grows as
        // batches get small relative to the input (≈ ½ + batch / (2n) of the positions).
        let loo = PerturbationExplainer::leave_one_out().with_strategy(strategy).with_batch_size(8);
        let started = Instant::now();
        let reused = loo.explain_ids(&*model, &ids, &target).unwrap();
        let t_reused = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let full = loo.clone().with_prefix_reuse(false).explain_ids(&*model, &ids, &target);
        let full = full.unwrap();
        let t_full = started.elapsed().as_secs_f64();
        for i in 0..ids.len() {
            assert_abs_diff_eq!(reused.scores[i], full.scores[i], epsilon = 1e-4);
        }
        let (fr, ff) = (forward_equivalents(&reused), forward_equivalents(&full));
        println!(
            "{strategy:?} on {} tokens: {fr:.1} vs {ff:.1} forward-equivalents, \
             {t_reused:.2} s vs {t_full:.2} s",
            ids.len()
        );
        // 37 tokens in batches of 8: 23.3 instead of 37 forward-equivalents.
        assert!(fr < 0.7 * ff, "{fr} vs {ff} forward-equivalents");
    }
}
