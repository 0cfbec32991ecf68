//! Context attribution on SmolLM2: which sentence of a long context supports the answer?
//! A ContextCite-style surrogate (random sentence ablations, LASSO) and leave-one-sentence-out
//! explain the log-probability of the answer's first token (`--answer`, default " Maria"); the sentences are printed ranked,
//! with the surrogate's held-out fit, and an HTML page highlights them.
//!
//! ```text
//! cargo run --release --example context_attribution
//! cargo run --release --example context_attribution -- --ablations 128 --html context.html
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use explainability::perturbation::{FeatureKind, PerturbationExplainer, PerturbationMethod};
use explainability::viz::HtmlReport;
use explainability::{Explainer, Explanation, LanguageModel, Target, load, smollm2_gguf_path};

const CONTEXT: &str = "The museum opened in 1902 and was rebuilt after a fire in 1951. \
Its collection holds more than forty thousand objects from four continents. \
The old harbour lies two streets to the east and is busy in summer. \
Maria Keller, who studied in Vienna, has been the museum's director since 2015. \
Admission is free on the first Sunday of every month. \
The café on the top floor serves cakes from a local bakery.";

const QUESTION: &str = " Question: Who is the director of the museum? Answer:";

#[derive(Parser, Debug)]
#[command(about = "Which sentence of the context supports the answer")]
struct Args {
    /// The answer whose first token is explained.
    #[arg(long, default_value = " Maria")]
    answer: String,
    /// Random ablations of the ContextCite surrogate.
    #[arg(long, default_value_t = 64)]
    ablations: usize,
    /// Write an HTML page highlighting the sentences here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let context = model.encode(CONTEXT, true)?;
    let question = model.encode(QUESTION, false)?;
    let ids: Vec<i64> = context.iter().chain(&question).copied().collect();
    let tokens = model.token_strings(&ids)?;
    // The sentences of the context are the features; the question is never perturbed.
    let spans: Vec<_> =
        FeatureKind::Sentences.spans(&tokens[..context.len()])?.into_iter().collect();
    let features = FeatureKind::Spans(spans.clone());
    let answer = model.encode(&args.answer, false)?[0];
    let best = model.top_next_tokens(&format!("{CONTEXT}{QUESTION}"), 3)?;
    println!(
        "{} tokens, {} sentences; explaining log p({:?}); the model's top next tokens: {:?}",
        ids.len(),
        spans.len(),
        model.token_strings(&[answer])?[0],
        best.iter()
            .map(|p| (p.token.as_str(), (p.probability * 1000.0).round() / 1000.0))
            .collect::<Vec<_>>()
    );
    let target = Target::log_prob(answer);
    let context_cite = PerturbationExplainer {
        method: PerturbationMethod::ContextCite {
            ablations: args.ablations,
            keep_probability: 0.5,
            alpha: 0.01,
            holdout_fraction: 0.2,
            seed: 0,
        },
        ..PerturbationExplainer::context_cite().with_features(features.clone())
    };
    let leave_one_out = PerturbationExplainer::feature_ablation(features);
    let mut report = HtmlReport::new("Context attribution");
    for explainer in [context_cite, leave_one_out] {
        let started = Instant::now();
        let e = explainer.explain_ids(&model, &ids, &target)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "\n{} ({} forward passes, {seconds:.1} s){}",
            e.method,
            e.metadata["forward_passes"],
            held_out(&e)
        );
        let scores: Vec<f64> = serde_json::from_value(e.metadata["feature_scores"].clone())?;
        let mut order: Vec<usize> = (0..spans.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        for i in order {
            let text = model.decode(&ids[spans[i].clone()])?;
            println!("  {:>8.3}  {}", scores[i], text.trim());
        }
        report.explanation(&e);
    }
    if let Some(path) = args.html {
        report.write(&path)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn held_out(e: &Explanation) -> String {
    match e.metadata.get("surrogate_heldout_r2").and_then(|v| v.as_f64()) {
        Some(r2) => format!("; surrogate held-out R² {r2:.2}"),
        None => String::new(),
    }
}
