//! Attribution of a greedy continuation: for each generated token, how much each earlier token
//! (prompt and earlier generated tokens) contributed to its log-probability. All rows share
//! forward passes (a causal model's position t never sees later positions).
//!
//! ```text
//! cargo run --release --example generation_attribution -- "The capital of France is"
//! cargo run --release --example generation_attribution -- --method ig --steps 20 --tokens 6 "Water boils at"
//! ```

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use explainability::gradients::{
    Baseline, GenerationAttribution, GenerationMethod, QuadratureRule, SaliencyNorm,
};
use explainability::{LanguageModel, load, smollm2_gguf_path};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Method {
    /// Gradient × input.
    GradientXInput,
    /// L2 norm of the gradient.
    Saliency,
    /// Integrated gradients from the all-eos baseline (Gauss–Legendre).
    Ig,
}

#[derive(Parser, Debug)]
#[command(about = "Attribution matrix of a greedy continuation")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// How many tokens to generate (stops early at end-of-sequence).
    #[arg(long, default_value_t = 5)]
    tokens: usize,
    /// Attribution method.
    #[arg(long, value_enum, default_value_t = Method::GradientXInput)]
    method: Method,
    /// Integration steps for `--method ig`.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let method = match args.method {
        Method::GradientXInput => GenerationMethod::GradientXInput,
        Method::Saliency => GenerationMethod::Saliency(SaliencyNorm::L2),
        Method::Ig => GenerationMethod::IntegratedGradients {
            baseline: Baseline::Eos,
            path: explainability::gradients::PathOptions {
                rule: QuadratureRule::GaussLegendre,
                n_steps: args.steps,
                internal_batch_size: None,
            },
        },
    };
    let prompt = model.encode(&args.prompt, true)?;
    let result = GenerationAttribution { method }.attribute_greedy(&model, &prompt, args.tokens)?;
    let generated = model.decode(result.generated())?;
    println!("{:?} → {generated:?} ({})\n", args.prompt, result.method);

    // Rows: generated tokens; columns: every token before the last generated one.
    let columns = result.tokens.len() - 1;
    print!("{:>12} |", "");
    for token in &result.tokens[..columns] {
        print!("{:>9}", short(token));
    }
    println!(" | log p");
    for (row, scores) in result.scores.outer_iter().enumerate() {
        let position = result.prompt_len + row;
        print!("{:>12} |", short(&result.tokens[position]));
        for (col, score) in scores.iter().take(columns).enumerate() {
            if col < position {
                print!("{score:>9.3}");
            } else {
                print!("{:>9}", "·");
            }
        }
        println!(" | {:.3}", result.target_log_probs[row]);
    }
    if let Some(deltas) = &result.convergence_deltas {
        let shown: Vec<String> = deltas.iter().map(|d| format!("{d:+.3}")).collect();
        println!("\nconvergence delta per row: {}", shown.join(", "));
    }
    Ok(())
}

/// A token shortened to 8 characters for the table.
fn short(token: &str) -> String {
    let text = format!("{token:?}");
    if text.chars().count() <= 8 { text } else { text.chars().take(7).collect::<String>() + "…" }
}
