//! The real SmolLM2-135M: the logit lens ends at " Paris", DLA of " Paris" − " London" sums to
//! the logit difference, and patching "France" → "Italy" finds the subject token early and
//! the last position late; AtP against activation patching on the same grid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use explain_circuits::{
    ActivationPatching, DlaComponentKind, LensTarget, LogitDiff, LogitLens, PatchSite,
    attribution_patching, direct_logit_attribution, single_token,
};
use explain_models::{AnyModel, load, smollm2_gguf_path};
use explainability_core::LanguageModel;

fn model() -> std::sync::MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(load(smollm2_gguf_path()).expect("run `cargo xtask setup`")))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

const PROMPT: &str = "The capital of France is";

#[test]
fn logit_lens_ends_at_paris() {
    let model = model();
    let ids = model.encode(PROMPT, true).unwrap();
    let paris = single_token(&*model, " Paris").unwrap();
    let lens = LogitLens { top_k: 3, target: LensTarget::Token(paris) }.run(&*model, &ids).unwrap();
    assert_eq!(lens.cells.len(), 31);
    let last = lens.cells.last().unwrap().last().unwrap();
    assert_eq!(last.top[0].token, " Paris");
    assert_eq!(last.target_rank, Some(0));
    assert!(last.kl_to_final.abs() < 1e-6);
    // The embedding alone does not predict " Paris"; the KL to the output shrinks overall.
    let first = lens.cells[0].last().unwrap();
    assert!(first.target_rank.unwrap() > 100, "{first:?}");
    let kl = lens.kl_matrix();
    assert!(kl[(5, ids.len() - 1)] > kl[(29, ids.len() - 1)]);
}

#[test]
fn dla_of_paris_against_london_sums_to_the_logit_difference() {
    let model = model();
    let ids = model.encode(PROMPT, true).unwrap();
    let metric = LogitDiff::new(
        single_token(&*model, " Paris").unwrap(),
        single_token(&*model, " London").unwrap(),
    );
    let dla = direct_logit_attribution(&*model, &ids, metric).unwrap();
    assert!(dla.metric_value > 1.0, "Paris should beat London: {}", dla.metric_value);
    assert!((dla.total - dla.metric_value).abs() < 1e-3, "Σ {} vs {}", dla.total, dla.metric_value);
    assert_eq!(dla.heads.dim(), (30, 9));
    assert_eq!(dla.components.iter().filter(|c| c.kind == DlaComponentKind::Head).count(), 270);
    let mut top = dla.components.clone();
    top.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    eprintln!(
        "DLA Paris−London = {:.3}; top: {}",
        dla.metric_value,
        top.iter()
            .take(6)
            .map(|c| format!("{} {:+.3}", c.label, c.value))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn patching_france_to_italy() {
    let model = model();
    let clean = model.encode(PROMPT, true).unwrap();
    let corrupted = model.encode("The capital of Italy is", true).unwrap();
    assert_eq!(clean.len(), corrupted.len());
    let france = clean.iter().zip(&corrupted).position(|(a, b)| a != b).unwrap();
    let metric = LogitDiff::new(
        single_token(&*model, " Paris").unwrap(),
        single_token(&*model, " Rome").unwrap(),
    );
    let patching = ActivationPatching::new(PatchSite::ResidPre);
    let start = Instant::now();
    let result = patching.run(&*model, &clean, &corrupted, metric).unwrap();
    let patching_time = start.elapsed();
    assert!(result.clean_metric > 0.0 && result.corrupted_metric < 0.0, "{result:?}");
    let grid = result.layer_position();
    let last = clean.len() - 1;
    // Layer 0 at the subject token is the whole difference between the prompts.
    assert!((grid[(0, france)] - 1.0).abs() < 1e-3, "{}", grid[(0, france)]);
    // By the last layer, the answer has moved to the last position.
    assert!(grid[(29, last)] > 0.8, "{}", grid.row(29));
    assert!(grid[(29, france)].abs() < 0.2, "{}", grid.row(29));
    let start = Instant::now();
    let atp = attribution_patching(&patching, &*model, &clean, &corrupted, metric).unwrap();
    let atp_time = start.elapsed();
    let (e, a) = (result.scores.as_slice().unwrap(), atp.scores.as_slice().unwrap());
    eprintln!(
        "resid_pre 30×{}: patching {patching_time:?}, AtP {atp_time:?}; Pearson {:.3}",
        clean.len(),
        pearson(e, a)
    );
    assert!(pearson(e, a) > 0.5);
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// The small CI version of the causal-tracing study (`examples/circuits_study.rs` in the
/// explainability crate runs it over 50 prompts): three factual prompts from the packaged set
/// that SmolLM2 gets right, 2 noise draws, hidden states and MLP windows.
#[test]
fn causal_tracing_over_factual_prompts() {
    use explain_circuits::{CausalTracing, TOKEN_GROUPS, TraceKind, average_by_token_group};
    use explain_eval::prompts::{FactualCategory, factual_prompts, factual_top1};
    let model = model();
    let prompts: Vec<_> = factual_prompts()
        .unwrap()
        .into_iter()
        .filter(|p| p.category == FactualCategory::CountryCapital)
        .filter(|p| ["France", "Japan", "Germany", "Italy", "Spain"].contains(&p.subject.as_str()))
        .collect();
    let kept = factual_top1(&*model, &prompts).unwrap();
    assert!(kept.len() >= 3, "SmolLM2 should know three of five capitals: {}", kept.len());
    for kind in [TraceKind::Hidden, TraceKind::Mlp] {
        let tracing = CausalTracing { samples: 2, ..CausalTracing::new(kind) };
        let traces: Vec<_> = kept[..3]
            .iter()
            .map(|t| tracing.run(&*model, &t.ids, t.subject.clone(), t.answer_id).unwrap())
            .collect();
        for t in &traces {
            assert!(t.corrupted_probability < t.clean_probability, "{t:?}");
            let last = t.tokens.len() - 1;
            for p in 0..t.subject.start {
                assert!(t.indirect_effect.column(p).iter().all(|&v| v == 0.0));
            }
            if kind == TraceKind::Hidden {
                // The last hidden state at the last position is the whole clean output.
                let restored = t.restored_probability[(29, last)];
                assert!((restored - t.clean_probability).abs() < 1e-4, "{restored} vs {t:?}");
            }
        }
        if kind == TraceKind::Hidden {
            // Reusing the corrupted run's prefix (the default) against full recomputation,
            // where effects are large: equal up to f32 reassociation (1e-4 on probabilities).
            let t = &kept[0];
            let full = CausalTracing { samples: 1, reuse_prefix: false, ..tracing.clone() };
            let reused = CausalTracing { samples: 1, ..tracing.clone() };
            let full = full.run(&*model, &t.ids, t.subject.clone(), t.answer_id).unwrap();
            let reused = reused.run(&*model, &t.ids, t.subject.clone(), t.answer_id).unwrap();
            let largest = full.indirect_effect.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
            assert!(largest > 0.01, "{full:?}");
            for (a, b) in reused.restored_probability.iter().zip(full.restored_probability.iter()) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        let (avg, counts) = average_by_token_group(&traces);
        assert_eq!(avg.dim(), (TOKEN_GROUPS.len(), 30));
        assert_eq!(counts[5], 3);
        assert!(avg.row(5).iter().all(|v| v.is_finite()));
    }
}
