//! The analysis system end to end on the real SmolLM2-135M: "The capital of France is" →
//! " Paris", every default method's attribution finite, path methods with their deltas,
//! every metric family evaluated, the report's rules firing on the conditions they name, and
//! the analysis surviving JSON and being written to disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, MutexGuard, OnceLock};

use explainability::{
    ANALYZER_METHODS, AnalysisBudget, Analyzer, AnyModel, AttentionAnalysis, ComprehensiveAnalysis,
    Error, LanguageModel, UNRELIABLE_DELTA_ABOVE, load, smollm2_gguf_path,
};

const TEXT: &str = "The capital of France is";

/// The model, one test at a time (the machine has two cores; libtorch uses both).
fn model() -> MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(load(smollm2_gguf_path()).expect("run `cargo xtask setup`")))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn analysis() -> &'static ComprehensiveAnalysis {
    static ANALYSIS: OnceLock<ComprehensiveAnalysis> = OnceLock::new();
    ANALYSIS.get_or_init(|| {
        Analyzer::new().progress(false).comprehensive_analysis(&*model(), TEXT).unwrap()
    })
}

/// The analysis with integrated gradients, no longer a default method (docs/faithfulness.md):
/// its convergence delta, its completeness residual and the unreliable-delta rule.
fn ig_analysis() -> &'static ComprehensiveAnalysis {
    static ANALYSIS: OnceLock<ComprehensiveAnalysis> = OnceLock::new();
    ANALYSIS.get_or_init(|| {
        Analyzer::new()
            .progress(false)
            .methods(&["integrated_gradients", "saliency", "gradient_x_input", "random"])
            .comprehensive_analysis(&*model(), TEXT)
            .unwrap()
    })
}

fn codes(a: &ComprehensiveAnalysis) -> Vec<String> {
    a.generate_report().recommendations.into_iter().map(|f| f.code).collect()
}

#[test]
fn predicts_paris_and_every_method_attributes_every_token() {
    let a = analysis();
    assert_eq!(a.prediction.token, " Paris");
    assert_eq!(a.top_k.len(), 5);
    assert!(a.top_k.windows(2).all(|w| w[0].probability >= w[1].probability));
    assert_eq!(a.tokens.len(), a.token_ids.len());
    assert_eq!(a.attributions.failures().len(), 0, "{:?}", a.attributions.failures());
    let explanations = a.attributions.explanations();
    let methods: Vec<&str> = explanations.iter().map(|e| e.method.as_str()).collect();
    assert_eq!(methods, ANALYZER_METHODS);
    for e in &explanations {
        assert_eq!(e.len(), a.tokens.len(), "{}", e.method);
        assert!(e.scores.iter().all(|s| s.is_finite()), "{}: {:?}", e.method, e.scores);
        assert!(e.scores.iter().any(|s| *s != 0.0), "{} is all zero", e.method);
        assert_eq!(e.target.token_id(), Some(a.prediction.id), "{}", e.method);
    }
    // Integrated gradients carries its delta, and the report relates it to F(x) − F(x').
    let with_ig = ig_analysis();
    let ig_explanations = with_ig.attributions.explanations();
    let ig = ig_explanations.iter().find(|e| e.method == "integrated_gradients").unwrap();
    let delta = ig.convergence_delta.expect("IG reports its convergence delta");
    let relative = with_ig.report.metrics["integrated_gradients.relative_delta"];
    let total = ig.scores.sum() - delta;
    assert!((relative - (delta / total).abs()).abs() < 1e-12);
    // The agreement matrix is symmetric with a unit diagonal.
    let s = &a.agreement.spearman;
    for i in 0..s.nrows() {
        assert!((s[[i, i]] - 1.0).abs() < 1e-12);
        for j in 0..s.ncols() {
            assert!((s[[i, j]] - s[[j, i]]).abs() < 1e-12);
        }
    }
}

#[test]
fn every_metric_family_is_evaluated_for_every_method() {
    let a = analysis();
    let evaluation = a.evaluation.as_ref().expect("evaluation is on by default");
    assert_eq!(evaluation.len(), ANALYZER_METHODS.len());
    for m in evaluation {
        assert!(m.error.is_none(), "{}: {:?}", m.method, m.error);
        let f = m.fidelity.as_ref().unwrap();
        for v in [f.aopc_comprehensiveness, f.aopc_sufficiency, f.deletion_auc, f.insertion_auc] {
            assert!(v.is_finite(), "{}: {f:?}", m.method);
        }
        // Probabilities: every comprehensiveness is f(x) − f(x ∖ S) with both in [0, 1].
        assert!(f.comprehensiveness.iter().all(|c| (-1.0..=1.0).contains(c)));
        let c = m.completeness.unwrap();
        assert!((0.0..=1.0 + 1e-12).contains(&c.top_k_share), "{}: {c:?}", m.method);
        let d = a.tokens.len() as f64;
        let g = m.comprehensibility.gini;
        assert!((0.0..=(d - 1.0) / d + 1e-12).contains(&g), "{}: gini {g}", m.method);
        let k = a.report.metrics[&format!("eval.{}.aopc_comprehensiveness", m.method)];
        assert_eq!(k, f.aopc_comprehensiveness);
    }
    // the random control is evaluated in expectation: the mean over the default draws
    let random = a.attributions.explanations().into_iter().find(|e| e.method == "random").unwrap();
    let expected = explainability::eval::random_control_fidelity(
        &*model(),
        random,
        &explainability::eval::FidelityConfig::default(),
        explainability::eval::RandomControl::default(),
    )
    .unwrap();
    let control = evaluation.iter().find(|m| m.method == "random").unwrap();
    assert_eq!(control.fidelity.as_ref().unwrap(), &expected);
    let markdown = a.to_markdown();
    assert!(markdown.contains("## Evaluation"));
    assert!(markdown.contains("| leave_one_out |"));
    let with_ig = ig_analysis();
    let ig_evaluation = with_ig.evaluation.as_ref().unwrap();
    let ig = ig_evaluation.iter().find(|m| m.method == "integrated_gradients").unwrap();
    assert!(ig.completeness.unwrap().relative_residual.is_some(), "IG has a residual");
    assert!(with_ig.to_markdown().contains("| integrated_gradients |"));
}

#[test]
fn the_report_rules_fire_on_the_conditions_they_name() {
    let a = analysis();
    let baseline = codes(a);

    // A convergence delta far above the tolerance is called unreliable.
    let mut bad = ig_analysis().clone();
    for o in &mut bad.attributions.outcomes {
        if let Some(e) = o.explanation.as_mut().filter(|e| e.method == "integrated_gradients") {
            let total = e.scores.sum() - e.convergence_delta.unwrap();
            let delta = 4.0 * UNRELIABLE_DELTA_ABOVE * total.abs();
            e.scores[0] += delta - e.convergence_delta.unwrap();
            e.convergence_delta = Some(delta);
        }
    }
    assert!(codes(&bad).contains(&"unreliable_attribution".to_owned()));

    // Two gradient methods with opposite rankings disagree.
    let mut bad = a.clone();
    let i = bad.agreement.methods.iter().position(|m| m == "gradient_x_input").unwrap();
    let j = bad.agreement.methods.iter().position(|m| m == "saliency").unwrap();
    bad.agreement.spearman[[i, j]] = -0.9;
    bad.agreement.spearman[[j, i]] = -0.9;
    assert!(codes(&bad).contains(&"methods_disagree".to_owned()));
    // On the real analysis the finding fires only if some pair of attribution methods (not
    // attention, not the control) is below the threshold.
    let m = &a.agreement.methods;
    let attribution = |k: usize| !m[k].starts_with("attention") && m[k] != "random";
    let some_pair_below = (0..m.len()).any(|p| {
        (p + 1..m.len())
            .any(|q| attribution(p) && attribution(q) && a.agreement.spearman[[p, q]] < 0.3)
    });
    assert_eq!(baseline.contains(&"methods_disagree".to_owned()), some_pair_below);

    // Attention rules.
    let mut bad = a.clone();
    bad.attention.metrics.model.locality = 0.0;
    bad.attention.metrics.model.sparsity = 0.99;
    bad.attention.metrics.model.entropy = 50.0;
    let c = codes(&bad);
    for code in ["weak_locality", "very_sparse_attention", "diffuse_attention"] {
        assert!(c.contains(&code.to_owned()), "{code} missing from {c:?}");
    }

    // A method that is no better than the control is named; when no method differs from
    // the control the evaluation is called inconclusive instead.
    let with_aopc = |values: &[(&str, f64)]| {
        let mut bad = a.clone();
        for m in bad.evaluation.as_mut().unwrap() {
            let v = values.iter().find(|(name, _)| *name == m.method).map_or(0.5, |(_, v)| *v);
            m.fidelity.as_mut().unwrap().aopc_comprehensiveness = v;
        }
        bad.generate_report()
    };
    let report = with_aopc(&[("random", 0.5), ("gradient_x_input", 0.9), ("saliency", 0.4)]);
    let fired: Vec<&str> = report.recommendations.iter().map(|f| f.code.as_str()).collect();
    assert!(
        report
            .recommendations
            .iter()
            .any(|f| f.code == "no_better_than_random" && f.en.starts_with("saliency")),
        "{fired:?}"
    );
    assert!(!fired.contains(&"evaluation_inconclusive"), "{fired:?}");
    assert!(
        report
            .summary_en
            .iter()
            .any(|l| l.contains("Most faithful") && l.contains("gradient_x_input"))
    );
    let report = with_aopc(&[("random", 0.5)]);
    let fired: Vec<&str> = report.recommendations.iter().map(|f| f.code.as_str()).collect();
    assert!(fired.contains(&"evaluation_inconclusive"), "{fired:?}");
    assert!(!fired.contains(&"no_better_than_random"), "{fired:?}");
    // Every finding has both languages.
    for f in &report.recommendations {
        assert!(!f.en.is_empty() && !f.zh.is_empty(), "{f:?}");
    }
}

#[test]
fn the_analysis_round_trips_through_json_and_is_written_to_a_folder() {
    let a = analysis();
    let json = a.to_json().unwrap();
    let back = ComprehensiveAnalysis::from_json(&json).unwrap();
    assert_eq!(back.to_json().unwrap(), json);
    assert_eq!(back.report, a.report);
    assert_eq!(back.generate_report(), a.report, "the report is a function of the results");

    let dir = tempfile::tempdir().unwrap();
    let files = a.write_to(dir.path().join("report")).unwrap();
    let names: Vec<String> =
        files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in [
        "analysis.json",
        "report.md",
        "report.html",
        "attributions.svg",
        "attributions.png",
        "attribution_heatmap.svg",
        "attention_entropy.svg",
        "attention_last_layer.svg",
        "curves_leave_one_out.svg",
        "interaction_network.dot",
        "layered_attention.graphml",
        "attention_flow.json",
        "attention_flow.svg",
    ] {
        assert!(names.contains(&expected.to_owned()), "{expected} missing from {names:?}");
    }
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{} is empty", f.display());
    }
    let md = std::fs::read_to_string(dir.path().join("report/report.md")).unwrap();
    assert!(md.contains("\" Paris\""));
    assert!(md.contains("## 摘要"));
    let html = std::fs::read_to_string(dir.path().join("report/report.html")).unwrap();
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no remote resources");
    for method in ANALYZER_METHODS {
        assert!(html.contains(method), "{method} missing from the HTML report");
    }
    // The layered graph has one node per token and layer (plus the embedding layer).
    let graph: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("report/layered_attention.json")).unwrap(),
    )
    .unwrap();
    let nodes = graph["nodes"].as_array().unwrap().len();
    let layers = model().info().n_layers;
    assert!(
        nodes == a.tokens.len() * layers || nodes == a.tokens.len() * (layers + 1),
        "{nodes} nodes for {} tokens and {layers} layers",
        a.tokens.len()
    );
}

#[test]
fn strings_from_the_user_are_escaped_in_the_html_report() {
    let mut a = analysis().clone();
    let attack = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    a.text = attack.to_owned();
    a.tokens[0] = attack.to_owned();
    a.attention.tokens[0] = attack.to_owned();
    for o in &mut a.attributions.outcomes {
        if let Some(e) = o.explanation.as_mut() {
            e.tokens[0] = attack.to_owned();
        }
    }
    let html = a.to_html().unwrap();
    assert!(!html.contains("<script>alert(1)"), "raw script tag in the report");
    assert!(!html.contains("<img src=x"), "raw img tag in the report");
    assert!(html.contains("&lt;script&gt;alert(1)"), "the text is shown, escaped");
}

#[test]
fn bad_input_is_a_typed_error() {
    let model = &*model();
    let analyzer = Analyzer::new().progress(false).evaluate(false);
    assert!(matches!(analyzer.comprehensive_analysis(model, ""), Err(Error::EmptyText)));
    let unknown = Analyzer::new().progress(false).methods(&["saliency", "no_such_method"]);
    match unknown.comprehensive_analysis(model, TEXT) {
        Err(Error::UnknownMethod { name, known }) => {
            assert_eq!(name, "no_such_method");
            assert!(known.iter().any(|k| k == "saliency"), "{known:?}");
        }
        other => panic!("expected UnknownMethod, got {:?}", other.map(|a| a.prediction)),
    }
    let long = "word ".repeat(model.info().max_positions + 10);
    assert!(matches!(
        analyzer.comprehensive_analysis(model, &long),
        Err(Error::SequenceTooLong { .. })
    ));
}

#[test]
fn a_short_text_is_analysed_exactly_within_the_default_budgets() {
    let a = analysis();
    assert!(!a.steps.is_empty());
    assert!(a.degraded_steps().is_empty(), "{:?}", a.degraded_steps());
    assert!(a.attention.flow_segments.is_none());
    assert!(!codes(a).contains(&"budget_degraded".to_owned()));
}

/// Tiny budgets force every budgeted step of a short text onto its degraded path: the
/// report says what was approximated or skipped and why, and what was computed is still
/// sound (flow a distribution over the tokens, the methods that fit still explained).
#[test]
fn tiny_budgets_degrade_every_budgeted_step_and_say_so() {
    let text = "The capital of France is Paris. The capital of Italy is";
    let budget = AnalysisBudget {
        attribution_token_passes: 100,
        evaluation_token_passes: 0,
        stored_attention_max_tokens: 4,
    };
    let a = Analyzer::new()
        .progress(false)
        .budget(budget)
        .attention(AttentionAnalysis::new().flow_max_edges(0))
        .comprehensive_analysis(&*model(), text)
        .unwrap();
    let n = a.tokens.len();
    assert!(
        (10..=33).contains(&n),
        "saliency (3 passes per token) must fit 100 token-passes, leave-one-out (n + 1) not: {n}"
    );
    let status = |step: &str| {
        a.steps.iter().find(|s| s.step == step).map(|s| s.outcome.label()).unwrap_or("missing")
    };
    assert_eq!(status("attention.flow"), "approximated");
    assert_eq!(status("attention.layer_matrices"), "skipped");
    assert_eq!(status("attribution.leave_one_out"), "skipped");
    assert_eq!(status("evaluation"), "skipped");
    assert_eq!(status("attention.metrics"), "exact");
    assert_eq!(status("attention.rollout"), "exact");
    assert_eq!(status("attention.roles"), "exact");

    let flow = a.attention.flow.as_ref().unwrap();
    assert_eq!(flow.len(), n);
    assert!(flow.iter().all(|&x| x >= 0.0 && x.is_finite()));
    assert!((flow.sum() - 1.0).abs() < 1e-9, "flow sums to {}", flow.sum());
    let segments = a.attention.flow_segments.as_ref().unwrap();
    assert!(segments.len() < n && segments.contains(&[n - 1, n]));
    // Tokens of one segment share its flow equally.
    for s in segments {
        let first = flow[s[0]];
        assert!((s[0]..s[1]).all(|k| (flow[k] - first).abs() < 1e-12));
    }
    let methods: Vec<&str> =
        a.attributions.explanations().iter().map(|e| e.method.as_str()).collect();
    assert!(!methods.contains(&"leave_one_out"));
    assert!(methods.contains(&"saliency") && methods.contains(&"gradient_x_input"));
    assert!(a.layer_attention.is_none() && a.evaluation.is_none());

    assert!(codes(&a).contains(&"budget_degraded".to_owned()));
    let md = a.to_markdown();
    assert!(md.contains("## Steps") && md.contains("| attention.flow | approximated |"));
    assert!(md.contains("flow_max_edges") && md.contains("attribution_token_passes"));
    let html = a.to_html().unwrap();
    assert!(html.contains("Steps and budgets") && html.contains("coarsened"));
    let json: serde_json::Value = serde_json::from_str(&a.to_json().unwrap()).unwrap();
    let steps = json["steps"].as_array().unwrap();
    assert!(steps.iter().any(|s| s["step"] == "evaluation" && s["status"] == "skipped"));
    assert!(steps.iter().any(|s| s["step"] == "attention.flow" && s["how"].is_string()));
    let back = ComprehensiveAnalysis::from_json(&a.to_json().unwrap()).unwrap();
    assert_eq!(back.steps, a.steps);
}
