//! Several prompts per forward pass on the real SmolLM2-135M: `explain_batch` of saliency,
//! gradient×input, AttnLRP and CP-LRP equals `explain_ids` one prompt at a time for prompts
//! of different lengths (one of a single token) and different targets; a prompt's scores do
//! not depend on its batch-mates (padding never leaks); a bad input fails alone.
//!
//! Tolerance ([`tolerance`]), relative to the largest |score| of the prompt: 1e-3 for prompts
//! of two tokens or more (measured ≤ 2.4e-4; AttnLRP and CP-LRP ≤ 2e-6), 3e-2 for a one-token prompt (measured ≤ 1e-2). A
//! batched row computes the same quantities as the row alone (positions restart at 0; on this
//! causal model a real position never sees later padding), but matrix products have other
//! shapes (more rows), so f32 summation order differs, and 30 layers of backward amplify it.
//! The one-token prompt's only position is the attention-sink position with massive residual
//! activations, where the gradient is ill-conditioned: four identical copies in one batch, with
//! no padding at all, already move its gradient×input by 1e-2 relative against the row alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, MutexGuard, OnceLock};

use explain_gradients::{GradientXInput, RelevancePropagation, Saliency};
use explain_models::{AnyModel, load, smollm2_gguf_path};
use explainability_core::{Error, ExplainInput, Explainer, Explanation, LanguageModel, Target};

/// Relative tolerance of batched against one-at-a-time scores for a prompt of `len` tokens
/// (see the module docs).
fn tolerance(len: usize) -> f64 {
    if len == 1 { 3e-2 } else { 1e-3 }
}

const PARIS: i64 = 7042;
const LONDON: i64 = 4528;

fn model() -> MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(load(smollm2_gguf_path()).expect("run `cargo xtask setup`")))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Largest |a − b| relative to the largest |a|, over scores, and the target values' gap.
fn rel_diff(a: &Explanation, b: &Explanation) -> f64 {
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.target, b.target, "resolved targets");
    let scale = a.scores.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1e-12);
    let scores =
        a.scores.iter().zip(b.scores.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let value = (a.target_value.unwrap() - b.target_value.unwrap()).abs()
        / a.target_value.unwrap().abs().max(1.0);
    (scores / scale).max(value)
}

fn texts() -> Vec<&'static str> {
    vec![
        "The capital of France is",
        "Paris",
        "The Eiffel Tower is located in the city of",
        "The capital of Italy is",
        "Water is made of hydrogen and",
    ]
}

fn inputs_of(model: &dyn LanguageModel, texts: &[&str]) -> (Vec<Vec<i64>>, Vec<Target>) {
    let ids: Vec<Vec<i64>> = texts.iter().map(|t| model.encode(t, true).unwrap()).collect();
    // argmax, a given token, a contrast, an explicit earlier position, argmax
    let targets = [
        Target::argmax(),
        Target::log_prob(PARIS),
        Target::contrastive(PARIS, LONDON),
        explainability_core::Target::Token {
            token: explainability_core::TargetToken::Argmax,
            output: explainability_core::TargetOutput::LogProb,
            position: Some(2),
        },
        Target::argmax(),
    ];
    (ids, targets[..texts.len()].to_vec())
}

fn batch<'a>(ids: &'a [Vec<i64>], targets: &'a [Target]) -> Vec<ExplainInput<'a>> {
    ids.iter().zip(targets).map(|(ids, target)| ExplainInput { ids, target }).collect()
}

#[test]
fn batched_gradient_methods_equal_one_at_a_time() {
    let model = model();
    let (ids, targets) = inputs_of(&*model, &texts());
    assert_eq!(ids[1].len(), 1, "a one-token prompt");
    let inputs = batch(&ids, &targets);
    let methods: Vec<Box<dyn Explainer>> = vec![
        Box::new(Saliency::default()),
        Box::new(GradientXInput),
        Box::new(RelevancePropagation::attn_lrp()),
        Box::new(RelevancePropagation::cp_lrp()),
    ];
    for method in &methods {
        assert!(method.batches_inputs());
        let batched = method.explain_batch(&*model, &inputs);
        assert_eq!(batched.len(), inputs.len());
        for (input, got) in inputs.iter().zip(&batched) {
            let alone = method.explain_ids(&*model, input.ids, input.target).unwrap();
            let got = got.as_ref().unwrap();
            let d = rel_diff(&alone, got);
            eprintln!("{} len {}: relative difference {d:e}", method.name(), input.ids.len());
            assert!(d < tolerance(input.ids.len()), "{}: {d:e}", method.name());
            assert_eq!(got.method, alone.method);
            assert_eq!(got.target_token, alone.target_token);
            assert_eq!(
                got.metadata.keys().collect::<Vec<_>>(),
                alone.metadata.keys().collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn padding_never_leaks_between_rows() {
    let model = model();
    let texts = [
        "The capital of France is",
        "Paris",
        "In the year 1969 the first people to walk on the surface of the moon were two astronauts of",
        "The capital of Spain is",
    ];
    let (ids, targets) = inputs_of(&*model, &texts);
    let targets: Vec<Target> = targets.iter().map(|_| Target::log_prob(PARIS)).collect();
    let method = GradientXInput;
    let alone = method.explain_ids(&*model, &ids[0], &targets[0]).unwrap();
    // The same prompt next to a much longer neighbour (its row padded) and next to a shorter
    // one (the neighbour's row padded), and the long prompt's own result in both batches.
    let with_long = [ids[0].clone(), ids[2].clone()];
    let with_short = [ids[0].clone(), ids[1].clone()];
    let beside_long = method.explain_batch(&*model, &batch(&with_long, &targets[..2]));
    let beside_short = method.explain_batch(&*model, &batch(&with_short, &targets[..2]));
    let (a, b) = (beside_long[0].as_ref().unwrap(), beside_short[0].as_ref().unwrap());
    assert!(ids[2].len() > ids[0].len() + 10 && ids[1].len() < ids[0].len());
    for (what, d) in
        [("long vs short neighbour", rel_diff(a, b)), ("batched vs alone", rel_diff(&alone, a))]
    {
        eprintln!("{what}: relative difference {d:e}");
        assert!(d < tolerance(ids[0].len()), "{what}: {d:e}");
    }
    let long_alone = method.explain_ids(&*model, &ids[2], &targets[1]).unwrap();
    let d = rel_diff(&long_alone, beside_long[1].as_ref().unwrap());
    assert!(d < tolerance(ids[2].len()), "long prompt beside a padded row: {d:e}");
    // Scores of real tokens only: the padded row's explanation has its own length.
    assert_eq!(a.len(), ids[0].len());
}

#[test]
fn a_bad_input_fails_alone() {
    let model = model();
    let (ids, targets) = inputs_of(&*model, &texts()[..3]);
    let vocab = model.info().vocab_size as i64;
    let bad_id = vec![504, vocab + 7];
    let empty: Vec<i64> = Vec::new();
    let mut all = ids.clone();
    all.insert(1, bad_id);
    all.push(empty);
    let mut all_targets = targets.clone();
    all_targets.insert(1, Target::argmax());
    all_targets.push(Target::argmax());
    let method = Saliency::default();
    let results = method.explain_batch(&*model, &batch(&all, &all_targets));
    assert!(matches!(results[1], Err(Error::TokenOutOfRange { .. })), "{:?}", results[1]);
    assert!(matches!(results[4], Err(Error::EmptyText)), "{:?}", results[4]);
    for (i, j) in [(0, 0), (2, 1), (3, 2)] {
        let alone = method.explain_ids(&*model, &ids[j], &targets[j]).unwrap();
        let got = results[i].as_ref().unwrap();
        // The batch failed as a whole (the bad id): every input ran alone, bit for bit.
        assert_eq!(alone.scores, got.scores);
        assert_eq!(alone.target, got.target);
    }
    // A target id outside the vocabulary fails its own input only as well.
    let bad_target = [Target::log_prob(vocab + 1), targets[0].clone()];
    let two = [ids[0].clone(), ids[0].clone()];
    let results = method.explain_batch(&*model, &batch(&two, &bad_target));
    assert!(matches!(results[0], Err(Error::TokenOutOfRange { .. })), "{:?}", results[0]);
    assert!(results[1].is_ok());
}
