//! Why two sentences are similar according to all-MiniLM-L6-v2, token by token.
//!
//! The explained number is the cosine similarity of the two sentences' mean-pooled
//! embeddings (what sentence-transformers computes). Integrated gradients from all-zero token
//! embeddings attribute it to the tokens of both sentences; the completeness delta says how
//! well the attributions add up to `cos(x) − cos(baseline)`. Gradient × input is printed
//! beside it for comparison.
//!
//! Two all-zero inputs are themselves very similar (cosine ≈ 0.99 for MiniLM: positions and
//! `[CLS]`/`[SEP]` structure remain), so integrated gradients explain how the tokens' content
//! moves the similarity away from that content-free pair: negative values are tokens that
//! make the two sentences differ, values near zero are tokens the sentences agree on.
//!
//! ```text
//! cargo run --release --example sentence_similarity
//! cargo run --release --example sentence_similarity -- "A cat sits on the mat." "A kitten rests on a rug."
//! ```

use std::path::PathBuf;

use clap::Parser;
use explainability::gradients::SentenceSimilarity;
use explainability::models::{BertModel, LoadOptions, minilm_dir};

#[derive(Parser, Debug)]
#[command(about = "Token attributions of a sentence-embedding cosine similarity")]
struct Args {
    /// First sentence.
    #[arg(default_value = "A man is playing a guitar.")]
    first: String,
    /// Second sentence.
    #[arg(default_value = "Someone plays an instrument.")]
    second: String,
    /// Gauss–Legendre steps of integrated gradients.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// A Hugging Face BERT folder (default: all-MiniLM-L6-v2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = args.model.unwrap_or_else(minilm_dir);
    let model = BertModel::from_hf_dir(&dir, LoadOptions::default())?;
    let start = std::time::Instant::now();
    let ig = SentenceSimilarity::integrated_gradients(args.steps).explain(
        &model,
        &args.first,
        &args.second,
    )?;
    let gxi = SentenceSimilarity::gradient_x_input().explain(&model, &args.first, &args.second)?;
    println!("cosine similarity: {:.4}", ig.similarity);
    println!(
        "baseline similarity: {:.4}   completeness delta: {:+.2e}   ({:.2} s)",
        ig.baseline_similarity.unwrap_or(f64::NAN),
        ig.convergence_delta.unwrap_or(f64::NAN),
        start.elapsed().as_secs_f64()
    );
    let sections = [
        (&args.first, &ig.tokens_a, &ig.attributions_a, &gxi.attributions_a),
        (&args.second, &ig.tokens_b, &ig.attributions_b, &gxi.attributions_b),
    ];
    for (text, tokens, ig_attr, gxi_attr) in sections {
        println!("\n{text}");
        println!("  {:<16} {:>10} {:>10}", "token", "IG", "grad×in");
        let max = ig_attr.iter().fold(1e-12_f64, |m, v| m.max(v.abs()));
        for ((token, a), g) in tokens.iter().zip(ig_attr).zip(gxi_attr) {
            let bar = "#".repeat(((a.abs() / max) * 20.0).round() as usize);
            let sign = if *a >= 0.0 { '+' } else { '-' };
            println!("  {token:<16} {a:>+10.4} {g:>+10.4}  {sign}{bar}");
        }
    }
    Ok(())
}
