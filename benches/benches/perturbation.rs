//! `perturbation` group: leave-one-out and feature ablation of explain-perturbation on
//! SmolLM2-135M over a long prompt (the first 200 tokens of `reference/bench_reference.py`'s
//! text, repeated; `EXPLAINABILITY_PERTURBATION_TOKENS` changes the count), with the settings
//! `cargo xtask bench-reference` runs beside Captum's `FeatureAblation`
//! (`reference/bench_captum_perturbation.py`): target log p(argmax next token), tokens
//! replaced by id 0 (Captum's default baseline), 32 perturbed inputs per forward pass:
//!
//! - `loo_replace0`: leave-one-out (one feature per token);
//! - `windows4_replace0`: feature ablation over consecutive 4-token spans;
//! - `loo_delete` and `loo_delete_no_reuse`: leave-one-out by deletion with and without the
//!   prefix (KV) reuse — the saving of reusing the keys and values of the positions before
//!   each perturbed input's first change. Their forward-equivalents are printed.
//!
//! Each case first runs once untimed by criterion (its wall time, forward passes and
//! forward-equivalents printed); when `EXPLAINABILITY_BENCH_OUT` names a file, the
//! attributions (and the ids, costs and one-run times) are written there, so that the
//! comparison checks equal attributions in the same run. A criterion filter that matches no
//! case (`-- --exact none`) keeps only those single runs.
//!
//! Threads: `EXPLAINABILITY_THREADS` (default 2). Sample size: criterion's minimum (10).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use explain_models::{AnyModel, load, smollm2_gguf_path};
use explain_perturbation::{FeatureKind, PerturbationExplainer, RemovalStrategy};
use explainability_core::{Explainer, Explanation, LanguageModel, Target};
use serde_json::json;

/// The text of `reference/bench_reference.py`, repeated until the prompt is long enough.
const TEXT: &str = "Attention weights show where a transformer looks when it predicts the next \
token, and gradients show which inputs would change that prediction most. Neither is the whole \
story, so careful analyses compare several methods on the same text and check whether the \
explanations agree. ";
/// Captum's default baseline id for `TextTokenInput` (SmolLM2's `<|endoftext|>`).
const BASELINE_ID: i64 = 0;
/// Width of the spans of `windows4_replace0`.
const WINDOW: usize = 4;
const BATCH: usize = 32;

fn threads() -> i32 {
    std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn tokens() -> usize {
    std::env::var("EXPLAINABILITY_PERTURBATION_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn long_prompt(model: &AnyModel, n: usize) -> Vec<i64> {
    let mut text = TEXT.to_string();
    loop {
        let ids = model.encode(&text, false).unwrap_or_default();
        if ids.len() >= n {
            return ids[..n].to_vec();
        }
        text.push_str(TEXT);
    }
}

fn feature_scores(e: &Explanation, seconds: f64) -> serde_json::Value {
    json!({
        "scores": e.metadata["feature_scores"],
        "forward_passes": e.metadata["forward_passes"],
        "forward_equivalents": e.metadata["forward_equivalents"],
        "positions_reused": e.metadata["positions_reused"],
        "seconds_one_run": seconds,
    })
}

fn perturbation(c: &mut Criterion) {
    tch::set_num_threads(threads());
    let model = match load(smollm2_gguf_path()) {
        Ok(m) => m,
        Err(e) => panic!("SmolLM2 is needed for this benchmark (run `cargo xtask setup`): {e}"),
    };
    let m: &dyn LanguageModel = &model;
    let n = tokens();
    let ids = long_prompt(&model, n);
    let target = Target::argmax();
    let replace = RemovalStrategy::Replace(BASELINE_ID);
    let windows: Vec<_> = (0..n).step_by(WINDOW).map(|s| s..(s + WINDOW).min(n)).collect();
    let cases: Vec<(&str, PerturbationExplainer)> = vec![
        ("loo_replace0", PerturbationExplainer::leave_one_out().with_strategy(replace)),
        (
            "windows4_replace0",
            PerturbationExplainer::feature_ablation(FeatureKind::Spans(windows))
                .with_strategy(replace),
        ),
        ("loo_delete", PerturbationExplainer::leave_one_out()),
        ("loo_delete_no_reuse", PerturbationExplainer::leave_one_out().with_prefix_reuse(false)),
    ];
    let cases: Vec<_> =
        cases.into_iter().map(|(name, e)| (name, e.with_batch_size(BATCH))).collect();

    // One untimed run of each: the attributions for the comparison and the costs.
    let mut report = serde_json::Map::new();
    for (name, explainer) in &cases {
        let started = Instant::now();
        let e = match explainer.explain_ids(m, &ids, &target) {
            Ok(e) => e,
            Err(err) => panic!("{name}: {err}"),
        };
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "perturbation/{name}/{n}: {} forward passes, {:.1} forward-equivalents, {seconds:.2} s \
             (one run)",
            e.metadata["forward_passes"], e.metadata["forward_equivalents"]
        );
        report.insert((*name).to_string(), feature_scores(&e, seconds));
        if *name == "loo_replace0" {
            report.insert("target".into(), json!(e.target.token_id()));
        }
    }
    if let Ok(path) = std::env::var("EXPLAINABILITY_BENCH_OUT") {
        report.insert("ids".into(), json!(ids));
        report.insert("baseline_id".into(), json!(BASELINE_ID));
        report.insert("window".into(), json!(WINDOW));
        report.insert("batch_size".into(), json!(BATCH));
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            panic!("cannot write {path}: {e}");
        }
    }

    let mut group = c.benchmark_group("perturbation");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for (name, explainer) in &cases {
        group.bench_with_input(BenchmarkId::new(*name, n), &ids, |b, ids| {
            b.iter(|| explainer.explain_ids(m, ids, &target))
        });
    }
    group.finish();
}

criterion_group!(benches, perturbation);
criterion_main!(benches);
