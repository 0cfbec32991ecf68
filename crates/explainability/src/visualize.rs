//! The analysis as pictures: SVG charts, explanation graphs (DOT, GraphML, JSON node-link and
//! SVG) and one self-contained HTML report, all drawn by explain-viz from the analysis's
//! plain data.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use explain_attention::PatternMetrics;
use explain_viz::charts::{self, ChartOptions, HeatmapRow};
use explain_viz::{EdgeRule, ExplanationGraph, HtmlReport, Svg, format_score};
use explainability_core::{Error, Explanation, Result};

use explain_circuits::InternalsPictures;

use crate::analyzer::ComprehensiveAnalysis;
use crate::internals::InternalsReport;

/// Edges of the token interaction network: pairs whose normalised importances multiply to at
/// least this (scores are divided by the largest |score| first, so 0.1 keeps pairs where
/// both tokens are within ~30 % of the strongest).
pub const INTERACTION_THRESHOLD: f64 = 0.1;
/// Edges of the layered attention graph: head-averaged attention weights at least this.
pub const LAYERED_ATTENTION_THRESHOLD: f64 = 0.1;
/// Edges of the attention-flow graph: weights at least this.
pub const FLOW_THRESHOLD: f64 = 0.05;

/// Scores divided by their largest |score| (an all-zero or non-finite vector stays as is).
fn normalised(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().filter(|s| s.is_finite()).fold(0.0_f64, |m, s| m.max(s.abs()));
    if max > 0.0 { scores.iter().map(|s| s / max).collect() } else { scores.to_vec() }
}

/// Methods in the order of their faithfulness on the benchmark of docs/faithfulness.md (AOPC
/// comprehensiveness against the random control, 200 prompts on SmolLM2-135M and on Gemma 3
/// 270M), the most faithful first: leave-one-out leads on both models; KernelSHAP, LIME and
/// Shapley sampling come next on both, then AttnLRP (clearly above the control on both);
/// saliency and gradient × input, above the control on SmolLM2, are not on Gemma 3 (gradient ×
/// input falls below it).
const HEADLINE_ORDER: [&str; 7] = [
    "leave_one_out",
    "kernel_shap",
    "lime",
    "shapley_sampling",
    "attn_lrp",
    "saliency",
    "gradient_x_input",
];

/// The explanation the graphs and the headline chart use: the most faithful method that ran
/// ([`HEADLINE_ORDER`]), else the first attribution method that is neither attention nor the
/// random control, else the first explanation.
fn headline<'a>(explanations: &[&'a Explanation]) -> Option<&'a Explanation> {
    HEADLINE_ORDER
        .iter()
        .find_map(|m| explanations.iter().find(|e| e.method == *m))
        .or_else(|| {
            explanations.iter().find(|e| !e.method.starts_with("attention") && e.method != "random")
        })
        .or_else(|| explanations.first())
        .copied()
}

/// File-name-safe form of a method name.
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// The charts of an analysis, as `(file stem, caption, svg)`.
fn charts(a: &ComprehensiveAnalysis) -> Result<Vec<(String, String, Svg)>> {
    let mut out = Vec::new();
    let explanations: Vec<&Explanation> = a.attributions.explanations();
    if !explanations.is_empty() {
        let owned: Vec<Explanation> = explanations.iter().map(|e| (*e).clone()).collect();
        out.push((
            "attributions".to_owned(),
            "Attribution per token and method (positive and negative in different colours)"
                .to_owned(),
            charts::compare_explanations(
                &owned,
                &ChartOptions::titled(format!("Attributions for {:?}", a.prediction.token)),
            )?,
        ));
        let rows: Vec<HeatmapRow> = explanations
            .iter()
            .map(|e| HeatmapRow {
                label: e.method.clone(),
                tokens: e.tokens.clone(),
                scores: normalised(&e.scores.to_vec()),
            })
            .collect();
        out.push((
            "attribution_heatmap".to_owned(),
            "Method × token, each method divided by its largest |score|, aligned by position"
                .to_owned(),
            charts::token_heatmap(&rows, &ChartOptions::titled("Normalised attributions"))?,
        ));
    }
    let metrics = &a.attention.metrics;
    for (stem, name, metric) in [
        (
            "attention_entropy",
            "entropy (nats)",
            (|m: &PatternMetrics| m.entropy) as fn(&PatternMetrics) -> f64,
        ),
        ("attention_locality", "locality", |m: &PatternMetrics| m.locality),
    ] {
        out.push((
            stem.to_owned(),
            format!("Attention {name} per layer and head"),
            charts::layer_head_grid(
                &metrics.grid(metric),
                name,
                &ChartOptions::titled(format!("Attention {name}")),
            ),
        ));
    }
    if let Some(layers) = &a.layer_attention
        && let Some(last) = layers.shape().first().and_then(|n| n.checked_sub(1))
    {
        let matrix: Array2<f64> = layers.index_axis(ndarray::Axis(0), last).to_owned();
        out.push((
            "attention_last_layer".to_owned(),
            format!("Head-averaged attention of layer {last} (rows: queries)"),
            charts::attention_matrix(
                &a.tokens,
                &matrix,
                &ChartOptions::titled(format!("Layer {last}, mean over heads")),
            )?,
        ));
    }
    if let Some(internals) = &a.internals {
        for (stem, caption, svg) in internal_pictures(internals).pictures()? {
            out.push((format!("internals_{stem}"), caption, svg));
        }
    }
    if let Some(evaluation) = &a.evaluation {
        for m in evaluation {
            let Some(f) = &m.fidelity else { continue };
            out.push((
                format!("curves_{}", slug(&m.method)),
                format!(
                    "{}: deletion AUC {:.3} (lower is better), insertion AUC {:.3} (higher is better)",
                    m.method, f.deletion_auc, f.insertion_auc
                ),
                charts::deletion_insertion_curves(
                    &f.deletion_curve,
                    &f.insertion_curve,
                    &ChartOptions::titled(format!("Deletion and insertion, {}", m.method)),
                ),
            ));
        }
    }
    Ok(out)
}

/// What the HTML and the chart files draw of the internals: the lens table and the DLA grids.
fn internal_pictures(internals: &InternalsReport) -> InternalsPictures<'_> {
    InternalsPictures {
        lens: Some(&internals.lens),
        dla: Some(&internals.dla),
        ..Default::default()
    }
}

/// The explanation graphs of an analysis, as `(file stem, graph)`.
fn graphs(a: &ComprehensiveAnalysis) -> Result<Vec<(String, ExplanationGraph)>> {
    let mut out = Vec::new();
    let explanations = a.attributions.explanations();
    if let Some(e) = headline(&explanations) {
        out.push((
            "interaction_network".to_owned(),
            ExplanationGraph::interaction_network(
                &e.tokens,
                &normalised(&e.scores.to_vec()),
                EdgeRule::ImportanceProduct { threshold: INTERACTION_THRESHOLD },
            )?,
        ));
    }
    if let Some(layers) = &a.layer_attention {
        out.push((
            "layered_attention".to_owned(),
            ExplanationGraph::layered_attention(&a.tokens, layers, LAYERED_ATTENTION_THRESHOLD)?,
        ));
        out.push((
            "attention_flow".to_owned(),
            ExplanationGraph::attention_flow(
                &a.tokens,
                layers,
                a.attention.target_position,
                FLOW_THRESHOLD,
            )?,
        ));
    }
    Ok(out)
}

impl ComprehensiveAnalysis {
    /// Writes the charts (`*.svg` and `*.png`), the explanation graphs (`*.dot`, `*.graphml`, `*.json`,
    /// `*.svg`) and `report.html` into `dir`; returns the paths written.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file; chart errors (not expected for a consistent analysis).
    pub fn generate_visualizations(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut written = Vec::new();
        for (stem, _, svg) in charts(self)? {
            let path = dir.join(format!("{stem}.svg"));
            std::fs::write(&path, svg.as_str()).map_err(|e| Error::io(&path, e))?;
            written.push(path);
            let path = dir.join(format!("{stem}.png"));
            svg.write_png(&path, svg.png_scale())?;
            written.push(path);
        }
        for (stem, graph) in graphs(self)? {
            written.extend(graph.write_all(dir, &stem)?);
        }
        let path = dir.join("report.html");
        std::fs::write(&path, self.to_html()?).map_err(|e| Error::io(&path, e))?;
        written.push(path);
        Ok(written)
    }

    /// The whole analysis as one self-contained HTML page: prediction, bilingual summary and
    /// recommendations, highlighted tokens per method, charts, evaluation and attention
    /// tables, and the graphs. Every string from the model or the user is escaped.
    ///
    /// # Errors
    /// Chart errors (not expected for a consistent analysis).
    pub fn to_html(&self) -> Result<String> {
        let mut html = HtmlReport::new(format!("Explanation of {} on {:?}", self.model, self.text));

        html.section("Prediction", true);
        let rows: Vec<Vec<String>> = self
            .top_k
            .iter()
            .map(|p| {
                vec![format!("{:?}", p.token), p.id.to_string(), format!("{:.4}", p.probability)]
            })
            .collect();
        html.table(&["token", "id", "probability"], &rows)?;
        html.end_section();

        html.section("Summary / 摘要", true);
        for line in &self.report.summary_en {
            html.paragraph(line);
        }
        for line in &self.report.summary_zh {
            html.paragraph(line);
        }
        html.end_section();

        html.section("Recommendations / 建议", true);
        if self.report.recommendations.is_empty() {
            html.paragraph("No rule fired. / 无。");
        }
        for f in &self.report.recommendations {
            html.paragraph(&format!("[{}] {}", f.code, f.en));
            html.paragraph(&f.zh);
        }
        html.end_section();

        html.section("Attributions", true);
        for e in self.attributions.explanations() {
            html.explanation(e);
            if let Some(delta) = e.convergence_delta {
                html.paragraph(&format!("{}: convergence delta {}", e.method, format_score(delta)));
            }
        }
        for (method, failure) in self.attributions.failures() {
            html.paragraph(&format!("{method} failed: {}", failure.message));
        }
        let charts = charts(self)?;
        let charts_of = |prefix: &'static str| {
            charts.iter().filter(move |(stem, _, _)| stem.starts_with(prefix))
        };
        for (_, caption, svg) in charts_of("attribution") {
            html.svg(svg, caption);
        }
        html.end_section();

        if let Some(evaluation) = &self.evaluation {
            html.section("Evaluation", false);
            let rows: Vec<Vec<String>> = evaluation
                .iter()
                .map(|m| {
                    let cells = m.values().map(|v| v.map_or_else(|| "–".to_owned(), format_score));
                    std::iter::once(m.method.clone()).chain(cells).collect()
                })
                .collect();
            let headers: Vec<&str> =
                std::iter::once("method").chain(crate::evaluation::EVALUATION_COLUMNS).collect();
            html.table(&headers, &rows)?;
            for (_, caption, svg) in charts_of("curves_") {
                html.svg(svg, caption);
            }
            html.end_section();
        }

        html.section("Attention", false);
        let m = &self.attention.metrics.model;
        html.metrics(&[
            ("entropy (nats)", m.entropy),
            ("normalised entropy", m.normalized_entropy),
            ("sparsity", m.sparsity),
            ("locality", m.locality),
            ("focus", m.focus),
            ("mean distance", m.mean_distance),
        ]);
        html.token_highlight(
            &self.attention.tokens,
            &self.attention.rollout.to_vec(),
            "Attention rollout of the last position",
        )?;
        if let Some(flow) = &self.attention.flow {
            let caption = match &self.attention.flow_segments {
                None => "Attention flow of the last position".to_owned(),
                Some(segments) => format!(
                    "Attention flow of the last position, on a graph coarsened to {} token segments (each token shows an equal share of its segment's flow)",
                    segments.len()
                ),
            };
            html.token_highlight(&self.attention.tokens, &flow.to_vec(), &caption)?;
        }
        for (_, caption, svg) in charts_of("attention_") {
            html.svg(svg, caption);
        }
        html.end_section();

        if let Some(internals) = &self.internals {
            explain_circuits::report_section(
                &mut html,
                &internal_pictures(internals),
                &internals.summary_en(),
            )?;
        }

        let graphs = graphs(self)?;
        if !graphs.is_empty() {
            html.section("Graphs", false);
            for (stem, graph) in &graphs {
                html.svg(
                    &graph.to_svg(&explain_viz::GraphDrawing::default()),
                    &format!("{} (also as {stem}.dot, .graphml, .json)", graph.kind().name()),
                );
            }
            html.end_section();
        }
        if !self.steps.is_empty() {
            html.section("Steps and budgets / 步骤与预算", false);
            let rows: Vec<Vec<String>> = self
                .steps
                .iter()
                .map(|s| {
                    vec![
                        s.step.clone(),
                        s.outcome.label().to_owned(),
                        format!("{:.2}", s.seconds),
                        s.outcome.explanation(),
                    ]
                })
                .collect();
            html.table(&["step", "status", "seconds", "how / why"], &rows)?;
            html.end_section();
        }
        Ok(html.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use explainability_core::Target;
    use ndarray::Array1;

    fn explanation(method: &str) -> Explanation {
        let tokens = vec!["a".to_owned(), "b".to_owned()];
        Explanation::new(method, vec![1, 2], tokens, Array1::from(vec![0.5, 1.0]), Target::argmax())
            .unwrap()
    }

    #[test]
    fn the_headline_follows_the_benchmark_order() {
        let [random, attention, saliency, lrp, loo] =
            ["random", "attention_rollout", "saliency", "attn_lrp", "leave_one_out"]
                .map(explanation);
        let pick = |es: &[&Explanation]| headline(es).map(|e| e.method.clone());
        assert_eq!(pick(&[&random, &saliency, &lrp, &loo]).as_deref(), Some("leave_one_out"));
        // AttnLRP before saliency: saliency is not above the control on Gemma 3.
        assert_eq!(pick(&[&random, &saliency, &lrp]).as_deref(), Some("attn_lrp"));
        // Neither the control nor attention while an attribution method ran.
        assert_eq!(pick(&[&random, &attention, &saliency]).as_deref(), Some("saliency"));
        assert_eq!(pick(&[&random, &attention]).as_deref(), Some("random"));
        assert_eq!(pick(&[]), None);
    }
}
