//! Where SmolLM2 attends: pattern metrics per layer, head roles (induction heads found on a
//! repeated random sequence), attention rollout and flow for the last token, and the summary
//! in English and Chinese. Writes the full report as JSON.
//!
//! ```text
//! cargo run --release --example attention_patterns -- "The capital of France is"
//! ```

use std::path::PathBuf;

use clap::Parser;
use explainability::attention::HeadRole;
use explainability::{AttentionAnalysis, load, smollm2_gguf_path};

#[derive(Parser, Debug)]
#[command(about = "Attention analysis of one prompt")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/attention_report.json")]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let report = AttentionAnalysis::new().run(&model, &args.prompt)?;

    println!("tokens: {:?}\n", report.tokens);
    println!(
        "{:>5} {:>9} {:>9} {:>8} {:>7} {:>9}",
        "layer", "locality", "sparsity", "entropy", "focus", "distance"
    );
    for (l, m) in report.metrics.layers.iter().enumerate() {
        println!(
            "{l:>5} {:>9.3} {:>9.3} {:>8.3} {:>7.3} {:>9.3}",
            m.locality, m.sparsity, m.entropy, m.focus, m.mean_distance
        );
    }
    if let Some(roles) = &report.roles {
        println!("\nstrongest heads per role:");
        for role in HeadRole::ALL {
            let top: Vec<String> = roles
                .top(role, 3)
                .iter()
                .map(|h| format!("L{}.H{} {:.2}", h.layer, h.head, h.score))
                .collect();
            println!("  {:<30} {}", role.name_en(), top.join(", "));
        }
    }
    println!(
        "\nlast token {:?} traces back to (rollout / flow):",
        report.tokens[report.target_position]
    );
    for (i, token) in report.tokens.iter().enumerate() {
        let flow = report.flow.as_ref().map_or(f64::NAN, |f| f[i]);
        println!("  {token:>12?} {:6.3} {:6.3}", report.rollout[i], flow);
    }
    println!();
    for (en, zh) in report.summary_en.iter().zip(&report.summary_zh) {
        println!("- {en}\n  {zh}");
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nreport written to {}", args.out.display());
    Ok(())
}
