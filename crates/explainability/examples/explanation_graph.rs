//! Explanation graphs for one prompt on SmolLM2: the token interaction network (saliency and
//! gradient × input, edges where normalised importances multiply to ≥ 0.1),
//! the layered attention graph (head-averaged attention ≥ 0.1 between consecutive layers) and
//! the attention-flow graph of the last token. Prints the strongest paths, then writes DOT,
//! GraphML, JSON node-link and SVG for each graph, charts, and one HTML report.
//!
//! ```text
//! cargo run --release --example explanation_graph -- "The capital of France is"
//! ```

use std::path::PathBuf;

use clap::Parser;
use explainability::attention::AttentionCapture;
use explainability::viz::charts::{self, ChartOptions};
use explainability::viz::{EdgeRule, ExplanationGraph, GraphDrawing, HtmlReport, PathEnds};
use explainability::{Framework, LanguageModel, Target, load, smollm2_gguf_path};
use ndarray::{Array3, Axis};

#[derive(Parser, Debug)]
#[command(about = "Explanation graphs of one prompt")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "target/explanation_graph")]
    out: PathBuf,
}

/// Scores divided by their largest |score|, so one threshold fits every method.
fn normalised(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().filter(|s| s.is_finite()).fold(0.0_f64, |m, s| m.max(s.abs()));
    if max > 0.0 { scores.iter().map(|s| s / max).collect() } else { scores.to_vec() }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let best = &model.top_next_tokens(&args.prompt, 1)?[0];
    println!("{:?} → {:?} ({:.1}%)", args.prompt, best.token, 100.0 * best.probability);

    let framework = Framework::with_defaults();
    let explanations = ["saliency", "gradient_x_input"]
        .iter()
        .map(|method| framework.explain(&model, &args.prompt, method, &Target::argmax()))
        .collect::<Result<Vec<_>, _>>()?;
    let capture = AttentionCapture::from_text(&model, &args.prompt)?;
    let layers: Vec<_> = capture.head_means();
    let views: Vec<_> = layers.iter().map(|a| a.view()).collect();
    let attention: Array3<f64> = ndarray::stack(Axis(0), &views)?;
    let tokens = capture.tokens.clone();
    let target = tokens.len() - 1;

    let headline = &explanations[1];
    let scores = normalised(&headline.scores.to_vec());
    let network = ExplanationGraph::interaction_network(
        &tokens,
        &scores,
        EdgeRule::ImportanceProduct { threshold: 0.1 },
    )?;
    let layered = ExplanationGraph::layered_attention(&tokens, &attention, 0.1)?;
    let flow = ExplanationGraph::attention_flow(&tokens, &attention, target, 0.05)?;

    println!(
        "\ninteraction network: {} nodes, {} edges",
        network.graph().node_count(),
        network.graph().edge_count()
    );
    let strongest = (0..tokens.len())
        .max_by(|&a, &b| scores[a].abs().total_cmp(&scores[b].abs()))
        .and_then(|p| network.node(p, None));
    if let Some(start) = strongest {
        println!("strongest paths from {:?}:", network.node_label(start));
        for path in network.top_paths(start, 3, PathEnds::Anywhere)? {
            let names: Vec<String> = path.nodes.iter().map(|&n| network.node_label(n)).collect();
            println!("  {:.3}  {}", path.strength, names.join(" → "));
        }
    }
    println!(
        "layered attention: {} nodes, {} edges",
        layered.graph().node_count(),
        layered.graph().edge_count()
    );
    println!("attention flow into {:?} (max flow from each input token):", tokens[target]);
    let sink = flow.node(target, Some(flow.n_layers())).ok_or("no target node")?;
    let mut flow_rows = Vec::new();
    for (p, token) in tokens.iter().enumerate() {
        let source = flow.node(p, Some(0)).ok_or("no input node")?;
        let value = flow.max_flow(source, sink)?;
        let rollout = flow.graph()[source].importance;
        println!("  {token:>12?}  flow {value:.3}  rollout {rollout:.3}");
        flow_rows.push(vec![token.clone(), format!("{value:.4}"), format!("{rollout:.4}")]);
    }
    if let Some(path) =
        flow.top_paths(flow.node(0, Some(0)).ok_or("no node")?, 1, PathEnds::Sinks)?.first()
    {
        println!("strongest flow path from {:?}: strength {:.4}", tokens[0], path.strength);
    }

    let out = &args.out;
    for (graph, stem) in
        [(&network, "interaction"), (&layered, "layered_attention"), (&flow, "attention_flow")]
    {
        graph.write_all(out, stem)?;
    }
    let comparison = charts::compare_explanations(
        &explanations,
        &ChartOptions::titled(format!("Attributions for {:?}", best.token)),
    )?;
    comparison.write(out.join("attributions.svg"))?;

    let mut report =
        HtmlReport::new(format!("Explanation graphs: {:?} → {:?}", args.prompt, best.token));
    report.section("Attributions", true);
    for e in &explanations {
        report.explanation(e);
    }
    report.svg(&comparison, "per-token attributions");
    report.section("Token interaction network", true);
    report.paragraph("Edges join tokens whose gradient × input scores, divided by the largest |score|, multiply to at least 0.1.");
    report.svg(&network.to_svg(&GraphDrawing::default()), "interaction network");
    report.section("Layered attention", false);
    report.svg(
        &layered.to_svg(&GraphDrawing::default()),
        "head-averaged attention ≥ 0.1, input at the bottom",
    );
    report.section("Attention flow", false);
    report.svg(
        &flow.to_svg(&GraphDrawing::default()),
        "residual-augmented attention; node colour: share of the last token's rollout",
    );
    report.table(&["token", "attention flow", "rollout"], &flow_rows)?;
    report.write(out.join("report.html"))?;
    println!("\nDOT, GraphML, JSON, SVG and report.html written to {}", out.display());
    Ok(())
}
