//! Integrated gradients on SmolLM2: which prompt tokens drive the next-token prediction.
//! Prints the tokens coloured by attribution (green raises the target, red lowers it), the
//! convergence delta against F(x) − F(baseline), and how many gradient evaluations were used.
//!
//! ```text
//! cargo run --release --example integrated_gradients -- "The capital of France is"
//! cargo run --release --example integrated_gradients -- --steps 50 --target " Paris" "The capital of France is"
//! ```

use std::path::PathBuf;

use clap::Parser;
use explainability::gradients::{Baseline, IntegratedGradients};
use explainability::{Explainer, LanguageModel, Target, load, smollm2_gguf_path};

#[derive(Parser, Debug)]
#[command(about = "Integrated gradients of the next-token log-probability")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// Explain this next token (its text must be one token); default: the model's argmax.
    #[arg(long)]
    target: Option<String>,
    /// Uniform Gauss–Legendre with this many steps instead of adaptive quadrature.
    #[arg(long)]
    steps: Option<usize>,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let target = match &args.target {
        None => Target::argmax(),
        Some(text) => match model.encode(text, false)?.as_slice() {
            [id] => Target::log_prob(*id),
            ids => return Err(format!("--target {text:?} is {} tokens, not one", ids.len()).into()),
        },
    };
    // The all-eos baseline: on RMSNorm models the zero baseline makes the path nearly
    // discontinuous near α = 0 (see docs/methods-gradients.md).
    let method = match args.steps {
        Some(n) => IntegratedGradients::new(Baseline::Eos, n),
        None => IntegratedGradients::adaptive(Baseline::Eos),
    };
    let e = method.explain(&model, &args.prompt, &target)?;
    let scale = e.scores.iter().fold(0.0f64, |m, s| m.max(s.abs())).max(1e-12);
    let target_text = match (&e.target_token, e.target.token_id()) {
        (Some(t), _) => t.clone(),
        (None, Some(id)) => model.token_strings(&[id])?.remove(0),
        (None, None) => String::new(),
    };
    println!(
        "target: log p({target_text:?}) ({}), F(x) = {:.3}",
        method.name(),
        e.target_value.unwrap_or(f64::NAN)
    );
    let mut line = String::new();
    for (token, score) in e.tokens.iter().zip(e.scores.iter()) {
        // xterm-256 ramps: greens 22, 28, 34, 40, 46 and reds 52, 88, 124, 160, 196.
        let level = (score.abs() / scale * 4.0).round().min(4.0) as u8;
        let colour = if *score >= 0.0 { 22 + 6 * level } else { 52 + 36 * level };
        line.push_str(&format!("\x1b[48;5;{colour}m{token}\x1b[0m"));
    }
    println!("{line}\n");
    for (token, score) in e.tokens.iter().zip(e.scores.iter()) {
        println!("  {token:>14?} {score:+9.4}");
    }
    let f_baseline = e.metadata.get("f_baseline").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let difference = e.target_value.unwrap_or(f64::NAN) - f_baseline;
    let delta = e.convergence_delta.unwrap_or(f64::NAN);
    println!(
        "\nΣ attributions = {:.4}, F(x) − F(baseline) = {difference:.4}, delta = {delta:+.4} ({:.1} %)",
        e.scores.sum(),
        100.0 * delta.abs() / difference.abs().max(1e-12)
    );
    for (key, value) in &e.metadata {
        if ["quadrature", "n_steps", "gradient_evaluations", "converged"].contains(&key.as_str())
            || key.starts_with("warning")
        {
            println!("{key}: {value}");
        }
    }
    Ok(())
}
