//! Writes every chart, graph and an HTML report from synthetic data into a folder: a 1,200
//! token text, CJK tokens, NaN scores and markup payloads that must show as text. `cargo
//! xtask browser` loads the result in headless Chromium.
//!
//! ```text
//! cargo run -p explain-viz --example report_gallery -- target/viz-gallery
//! ```

use std::path::PathBuf;

use explain_viz::charts::{self, ChartOptions, HeatmapRow, Series};
use explain_viz::{EdgeRule, ExplanationGraph, GraphDrawing, HtmlReport, PathEnds};
use explainability_core::SplitMix64;
use ndarray::{Array2, Array3, Axis};

/// Markup that must be shown as text: if either ran, the page's root element would carry
/// `data-pwned`.
const PAYLOADS: [&str; 3] = [
    "<script>alert(1)</script>",
    "<script>document.documentElement.setAttribute('data-pwned','script')</script>",
    "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\">",
];

/// A causal attention pattern per layer: each row softmax-normalised over keys `≤ query`.
fn causal_attention(rng: &mut SplitMix64, layers: usize, n: usize) -> Array3<f64> {
    let mut a = Array3::<f64>::zeros((layers, n, n));
    for l in 0..layers {
        for q in 0..n {
            let mut row: Vec<f64> = (0..=q).map(|_| (2.0 * rng.uniform()).exp()).collect();
            row[0] += 1.5; // an attention sink on the first token, as real models have
            let sum: f64 = row.iter().sum();
            for (k, v) in row.iter().enumerate() {
                a[[l, q, k]] = v / sum;
            }
        }
    }
    a
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out =
        std::env::args().nth(1).map_or_else(|| PathBuf::from("target/viz-gallery"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let mut rng = SplitMix64::new(7);

    // A short prompt with CJK, a repeated token, a NaN score and the payloads as tokens.
    let mut tokens: Vec<String> =
        ["<s>", "The", "▁capital", "▁of", "▁France", "▁is", "▁巴黎", "。", "▁The"]
            .map(String::from)
            .to_vec();
    tokens.extend(PAYLOADS.iter().map(|p| (*p).to_owned()));
    let n = tokens.len();
    let saliency: Vec<f64> =
        (0..n).map(|i| if i == 3 { f64::NAN } else { rng.uniform() }).collect();
    let grad_input: Vec<f64> = (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect();
    let attention = causal_attention(&mut rng, 6, n);
    let mean_attention = attention.mean_axis(Axis(0)).ok_or("no layers")?;

    let network = ExplanationGraph::interaction_network(
        &tokens,
        &grad_input,
        EdgeRule::ImportanceProduct { threshold: 0.05 },
    )?;
    let attention_network = ExplanationGraph::interaction_network(
        &tokens,
        &saliency,
        EdgeRule::Attention { matrix: &mean_attention, threshold: 0.08 },
    )?;
    let layered = ExplanationGraph::layered_attention(&tokens, &attention, 0.1)?;
    let flow = ExplanationGraph::attention_flow(&tokens, &attention, n - 1, 0.05)?;
    for (graph, stem) in [
        (&network, "interaction"),
        (&attention_network, "attention_network"),
        (&layered, "layered"),
        (&flow, "flow"),
    ] {
        graph.write_all(&out, stem)?;
    }

    let comparison = charts::method_comparison(
        &tokens,
        &[("saliency", &saliency), ("gradient × input", &grad_input)],
        &ChartOptions::titled("Method comparison <b>per token</b>"),
    )?;
    let heatmap = charts::token_heatmap(
        &[
            HeatmapRow {
                label: "sample 1".into(),
                tokens: tokens.clone(),
                scores: grad_input.clone(),
            },
            HeatmapRow {
                label: "样本 2 <i>".into(),
                tokens: ["巴黎", "是", "法国", "的", "首都", "首都"].map(String::from).to_vec(),
                scores: vec![0.3, -0.1, 0.8, f64::NAN, 0.5, 0.5],
            },
        ],
        &ChartOptions::titled("Sample × token heatmap (aligned by position)"),
    )?;
    let matrix = charts::attention_matrix(
        &tokens,
        &mean_attention,
        &ChartOptions::titled("Mean attention"),
    )?;
    let heads = charts::attention_heads(
        &tokens,
        &attention,
        0,
        &ChartOptions::titled("Layer 0, per head (6 synthetic heads)"),
    )?;
    let grid_values = Array2::from_shape_fn((30, 9), |(l, h)| {
        if (l, h) == (3, 3) { f64::NAN } else { ((l * 9 + h) as f64 * 0.37).sin().abs() }
    });
    let grid = charts::layer_head_grid(
        &grid_values,
        "entropy",
        &ChartOptions::titled("Entropy per layer × head"),
    );
    let deletion: Vec<f64> = (0..=20).map(|i| (-(i as f64) / 4.0).exp()).collect();
    let insertion: Vec<f64> = (0..=20).map(|i| 1.0 - (-(i as f64) / 6.0).exp()).collect();
    let curves = charts::deletion_insertion_curves(
        &deletion,
        &insertion,
        &ChartOptions::titled("Deletion / insertion"),
    );
    let layer_labels: Vec<String> = (0..30).map(|l| format!("model.layers.{l}.mlp")).collect();
    let norms: Vec<f64> = (0..30).map(|l| 10f64.powf(-3.0 + l as f64 / 10.0)).collect();
    let profile = charts::layer_profile(
        &layer_labels,
        &norms,
        true,
        &ChartOptions::titled("Gradient norm per layer"),
    )?;
    let line = charts::line_chart(
        &[Series {
            name: "with a gap".into(),
            points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5), (3.0, 0.7)],
        }],
        "x",
        "y",
        &ChartOptions::titled("Line chart"),
    );
    for (name, svg) in [
        ("comparison", &comparison),
        ("heatmap", &heatmap),
        ("attention_matrix", &matrix),
        ("attention_heads", &heads),
        ("layer_head_grid", &grid),
        ("curves", &curves),
        ("gradient_profile", &profile),
    ] {
        svg.write(out.join(format!("{name}.svg")))?;
    }

    // A 1,200-token text.
    let words = [
        "The",
        "▁model",
        "▁reads",
        "▁巴黎",
        "▁and",
        "▁attends",
        "\n",
        "▁to",
        "▁earlier",
        "▁tokens",
        ".",
    ];
    let long_tokens: Vec<String> = (0..1200).map(|i| words[i % words.len()].to_owned()).collect();
    let long_scores: Vec<f64> = (0..1200)
        .map(|i| if i % 97 == 0 { f64::NAN } else { (i as f64 * 0.05).sin() * rng.uniform() })
        .collect();

    let start = network.node(1, None).ok_or("no node")?;
    let paths = network.top_paths(start, 5, PathEnds::Anywhere)?;
    let path_rows: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            let names: Vec<String> = p.nodes.iter().map(|&v| network.node_label(v)).collect();
            vec![names.join(" → "), format!("{:.4}", p.strength)]
        })
        .collect();

    let mut report = HtmlReport::new(format!("Explanation report {}", PAYLOADS[0]));
    report
        .section("Prompt", true)
        .paragraph(&format!("Prompt with markup: {}", PAYLOADS.join(" ")));
    report.token_highlight(&tokens, &grad_input, "gradient × input (synthetic)")?;
    report.token_highlight(&long_tokens, &long_scores, "1,200 tokens")?;
    report.section("Charts", true);
    for (svg, caption) in [
        (&comparison, "method comparison"),
        (&heatmap, "heatmap"),
        (&matrix, "attention"),
        (&heads, "heads"),
        (&grid, "layer × head"),
        (&curves, "curves"),
        (&profile, "gradient flow"),
        (&line, "line"),
    ] {
        report.svg(svg, caption);
    }
    report.section("Graphs", false);
    report
        .svg(&network.to_svg(&GraphDrawing::default()), "interaction network (importance product)");
    report.svg(
        &attention_network.to_svg(&GraphDrawing::default()),
        "interaction network (attention)",
    );
    report.svg(&layered.to_svg(&GraphDrawing::default()), "layered attention");
    report.svg(&flow.to_svg(&GraphDrawing::default()), "attention flow");
    report.table(&["strongest paths from \"The\"", "strength"], &path_rows)?;
    report.section("Metrics", false);
    report.metrics(&[("AOPC", 0.42), ("sparsity <b>", f64::NAN), (PAYLOADS[2], 1.0)]);
    let report_path = out.join("report.html");
    report.write(&report_path)?;
    println!("{}", report_path.display());
    Ok(())
}
