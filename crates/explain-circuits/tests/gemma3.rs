//! The real Gemma 3 270M (Q4_K_M GGUF; sandwich norms: `ln1_post` between each attention
//! output and the residual): direct logit attribution of " Paris" − " London" on "The capital
//! of France is" splits all 18 × 4 heads behind the frozen post-attention norms, the heads
//! of each layer sum to its attention output, and all components sum to the logit
//! difference.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_circuits::{DlaComponentKind, LogitDiff, direct_logit_attribution, single_token};
use explain_models::{gemma3_gguf_path, load};
use explainability_core::LanguageModel;

#[test]
fn dla_splits_every_head_behind_the_post_attention_norm() {
    let model = load(gemma3_gguf_path()).expect("Gemma 3 GGUF (cargo xtask setup)");
    let ids = model.encode("The capital of France is", true).unwrap();
    let metric = LogitDiff::new(
        single_token(&model, " Paris").unwrap(),
        single_token(&model, " London").unwrap(),
    );
    let dla = direct_logit_attribution(&model, &ids, metric).unwrap();
    assert_eq!(dla.heads.dim(), (18, 4), "heads are split");
    assert_eq!(dla.components.iter().filter(|c| c.kind == DlaComponentKind::Head).count(), 72);
    // Gemma 3 has no final soft-cap, so the frozen-scale sum is the model's logit
    // difference; the tolerance is f32 rounding over ~110 components of up to a few units
    // (measured 1e-6).
    assert!(dla.metric_value > 1.0, "Paris should beat London: {}", dla.metric_value);
    assert!((dla.total - dla.metric_value).abs() < 1e-4, "Σ {} vs {}", dla.total, dla.metric_value);
    // No output bias: behind the post-norm the heads account for the whole attention output.
    let largest = dla.components.iter().map(|c| c.value.abs()).fold(0.0, f64::max);
    let rest = dla
        .components
        .iter()
        .filter(|c| c.kind == DlaComponentKind::AttnRest)
        .map(|c| c.value.abs())
        .fold(0.0, f64::max);
    assert!(rest < 1e-4 * largest.max(1.0), "an attention rest of {rest}");
    let mut top = dla.components.clone();
    top.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    eprintln!(
        "Gemma 3 DLA Paris−London = {:.3} (|Σ − metric| {:.1e}, largest rest {rest:.1e}); top: {}",
        dla.metric_value,
        (dla.total - dla.metric_value).abs(),
        top.iter()
            .take(8)
            .map(|c| format!("{} {:+.3}", c.label, c.value))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
