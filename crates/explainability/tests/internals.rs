//! The analyzer's optional internals step on the real SmolLM2-135M: off by default; when on,
//! the logit lens and the direct logit attribution of " Paris" against the runner-up, whose
//! components sum to the model's logit difference; summarised in the Markdown report, drawn
//! in the HTML page and the chart files, and surviving JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explainability::{
    Analyzer, ComprehensiveAnalysis, INTERNALS_LENS_POSITIONS, INTERNALS_TOP_COMPONENTS,
    LanguageModel, load, smollm2_gguf_path,
};

const TEXT: &str = "The capital of France is";

/// Σ of ~300 float32 components of a logit difference of a few units, against the same
/// difference read from float32 logits: rounding stays far below 1e-3.
const SUM_TOL: f64 = 1e-3;

#[test]
fn internals_are_off_by_default_and_on_when_asked() {
    let model = load(smollm2_gguf_path()).expect("run `cargo xtask setup`");
    let quick = || Analyzer::new().progress(false).methods(&["saliency"]).evaluate(false);
    let plain = quick().comprehensive_analysis(&model, TEXT).unwrap();
    assert!(plain.internals.is_none());
    assert!(!plain.to_json().unwrap().contains("\"internals\""));
    assert!(!plain.to_markdown().contains("Model internals"));

    let a = quick().internals(true).comprehensive_analysis(&model, TEXT).unwrap();
    let internals = a.internals.as_ref().expect("the internals section is present");
    assert_eq!(internals.prediction.token, " Paris");
    let runner_up = internals.against.as_ref().unwrap();
    assert_eq!(runner_up.id, a.top_k[1].id);

    // DLA: the components sum to the logit difference the model computes.
    let dla = &internals.dla;
    let sum: f64 = dla.components.iter().map(|c| c.value).sum();
    assert!((sum - dla.total).abs() < 1e-9);
    assert!(
        (dla.total - dla.metric_value).abs() < SUM_TOL,
        "{} vs {}",
        dla.total,
        dla.metric_value
    );
    let from_logits = a.prediction.logit - runner_up.logit;
    assert!(
        (dla.metric_value - from_logits).abs() < SUM_TOL,
        "{} vs {from_logits}",
        dla.metric_value
    );
    let info = model.info();
    assert_eq!(dla.heads.dim(), (info.n_layers, info.n_heads));
    assert_eq!(internals.top_components.len(), INTERNALS_TOP_COMPONENTS);
    assert!(internals.top_components.windows(2).all(|w| w[0].value.abs() >= w[1].value.abs()));

    // The lens: every entry at the last positions, ending at the model's own prediction.
    let lens = &internals.lens;
    assert_eq!(lens.cells.len(), info.n_layers + 1);
    assert_eq!(lens.start + lens.cells[0].len(), a.tokens.len());
    assert!(lens.cells[0].len() <= INTERNALS_LENS_POSITIONS);
    let last = lens.cells.last().unwrap().last().unwrap();
    assert_eq!(last.target_rank, Some(0));
    assert_eq!(last.top[0].id, a.prediction.id);
    assert!((last.top[0].probability - a.prediction.probability).abs() < 1e-4);
    let stays = internals.stays_top1_from.as_deref().unwrap();
    assert!(lens.labels.iter().any(|l| l == stays));
    assert!(internals.first_top1.is_some());

    // Report, Markdown, HTML and files.
    assert!(a.report.summary_en.iter().any(|l| l.starts_with("Logit lens:")));
    assert!(a.report.summary_en.iter().any(|l| l.contains("Direct logit attribution")));
    assert!(a.report.summary_zh.iter().any(|l| l.contains("直接 logit 归因")));
    let md = a.to_markdown();
    assert!(md.contains("## Model internals"));
    assert!(md.contains(&internals.top_components[0].label));
    assert!(md.contains(stays));
    let html = a.to_html().unwrap();
    assert!(html.contains("Model internals"));
    assert!(html.contains("Logit lens") && html.contains("DLA per head"));
    let dir = tempfile::tempdir().unwrap();
    let files = a.write_to(dir.path()).unwrap();
    for stem in ["internals_logit_lens", "internals_dla_heads", "internals_dla_layers"] {
        for ext in ["svg", "png"] {
            let name = format!("{stem}.{ext}");
            assert!(files.iter().any(|f| f.ends_with(&name)), "{name} missing");
        }
    }

    // JSON round trip (floats round-trip exactly with serde_json's float_roundtrip).
    let json = a.to_json().unwrap();
    let back = ComprehensiveAnalysis::from_json(&json).unwrap();
    assert_eq!(back.internals, a.internals);
    assert_eq!(back.to_json().unwrap(), json);
    assert_eq!(back.generate_report(), a.report);
}
