//! The logit lens on SmolLM2: what the residual stream entering every block (and leaving the
//! last) would predict at the last position through the final norm and the unembedding — the
//! top tokens, the rank and log-probability of a target, and the KL divergence to the output —
//! and the direct logit attribution of the target against a contrasting token.
//!
//! ```text
//! cargo run --release --example logit_lens -- "The capital of France is" --target " Paris" --against " London"
//! ```
//!
//! Pictures (SVG, PNG and an HTML page): the lens table, DLA per head and per layer, in
//! `target/logit_lens/` (`--pictures DIR`).

use std::path::PathBuf;

use clap::Parser;
use explainability::circuits::{
    DlaComponentKind, InternalsPictures, LensTarget, LogitDiff, LogitLens,
    direct_logit_attribution, single_token,
};
use explainability::{LanguageModel, load, smollm2_gguf_path};

#[derive(Parser, Debug)]
#[command(about = "Logit lens and direct logit attribution of one prompt")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// The token whose rank the lens follows (one token, with its leading space).
    #[arg(long, default_value = " Paris")]
    target: String,
    /// The contrasting token of the direct logit attribution.
    #[arg(long, default_value = " London")]
    against: String,
    /// Top tokens per layer.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where to write the lens as JSON.
    #[arg(long, default_value = "target/logit_lens.json")]
    out: PathBuf,
    /// Folder for the pictures (SVG, PNG) and report.html.
    #[arg(long, default_value = "target/logit_lens")]
    pictures: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let ids = model.encode(&args.prompt, true)?;
    let target = single_token(&model, &args.target)?;
    let lens =
        LogitLens { top_k: args.top_k, target: LensTarget::Token(target) }.run(&model, &ids)?;

    println!("tokens: {:?}\nlens at the last position, target {:?}:\n", lens.tokens, args.target);
    println!("{:>26} {:>6} {:>9} {:>8}  top tokens", "entry", "rank", "log p", "KL");
    for (label, row) in lens.labels.iter().zip(&lens.cells) {
        let cell = row.last().ok_or("empty prompt")?;
        let top: Vec<String> =
            cell.top.iter().map(|t| format!("{:?} {:.2}", t.token, t.probability)).collect();
        println!(
            "{label:>26} {:>6} {:>9.3} {:>8.3}  {}",
            cell.target_rank.unwrap_or(0),
            cell.target_log_prob.unwrap_or(f64::NAN),
            cell.kl_to_final,
            top.join(", ")
        );
    }

    let against = single_token(&model, &args.against)?;
    let dla = direct_logit_attribution(&model, &ids, LogitDiff::new(target, against))?;
    println!(
        "\ndirect logit attribution of logit({:?}) − logit({:?}) = {:.3} (Σ components {:.3}):",
        args.target, args.against, dla.metric_value, dla.total
    );
    let mut components = dla.components.clone();
    components.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    for c in components.iter().take(10) {
        println!("  {:>14} {:+.3}", c.label, c.value);
    }
    let heads: f64 =
        dla.components.iter().filter(|c| c.kind == DlaComponentKind::Head).map(|c| c.value).sum();
    println!("  all heads together {heads:+.3}");

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&lens)?)?;
    println!("\nwrote {}", args.out.display());
    let pictures = InternalsPictures { lens: Some(&lens), dla: Some(&dla), ..Default::default() };
    let title = format!("Logit lens and DLA of {:?}", args.prompt);
    for path in pictures.write(&args.pictures, &title)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
