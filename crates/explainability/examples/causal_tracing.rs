//! Causal tracing on SmolLM2 (Meng et al. 2022): noise the subject's token embeddings, restore
//! one clean state at a time (the hidden state, or a window of MLP or attention outputs) at
//! every layer × position, and print how much of the answer's probability comes back.
//!
//! ```text
//! cargo run --release --example causal_tracing
//! cargo run --release --example causal_tracing -- --kind mlp --samples 3 \
//!     "The Eiffel Tower is located in the city of" --subject "The Eiffel Tower" --answer " Paris"
//! ```
//!
//! The layer × position heatmap of the indirect effect (SVG, PNG and an HTML page) goes to
//! `target/causal_tracing/` (`--pictures DIR`).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use explainability::circuits::{CausalTracing, InternalsPictures, TraceKind, single_token};
use explainability::{LanguageModel, load, smollm2_gguf_path};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Hidden,
    Mlp,
    Attention,
}

#[derive(Parser, Debug)]
#[command(about = "Causal tracing of a factual prompt")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The Eiffel Tower is located in the city of")]
    prompt: String,
    /// The subject: a substring of the prompt whose tokens are noised.
    #[arg(long, default_value = "The Eiffel Tower")]
    subject: String,
    /// The answer (one token).
    #[arg(long, default_value = " Paris")]
    answer: String,
    /// The states restored.
    #[arg(long, value_enum, default_value = "hidden")]
    kind: Kind,
    /// Noise draws averaged (the paper uses 10).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where to write the trace as JSON.
    #[arg(long, default_value = "target/causal_trace.json")]
    out: PathBuf,
    /// Folder for the pictures (SVG, PNG) and report.html.
    #[arg(long, default_value = "target/causal_tracing")]
    pictures: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let ids = model.encode(&args.prompt, true)?;
    let start = args.prompt.find(&args.subject).ok_or("the subject is not in the prompt")?;
    let end = start + args.subject.len();
    // The subject's tokens: those of the prompt up to its end, minus those before its start.
    let count = |text: &str| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(if text.is_empty() { 0 } else { model.encode(text, true)?.len() })
    };
    let subject = count(&args.prompt[..start])?..count(&args.prompt[..end])?;
    let answer = single_token(&model, &args.answer)?;
    let kind = match args.kind {
        Kind::Hidden => TraceKind::Hidden,
        Kind::Mlp => TraceKind::Mlp,
        Kind::Attention => TraceKind::Attention,
    };
    let mut tracing = CausalTracing::new(kind);
    tracing.samples = args.samples;
    let timer = Instant::now();
    let trace = tracing.run(&model, &ids, subject.clone(), answer)?;
    println!(
        "{kind:?} states, subject tokens {subject:?}, {} sample(s), {:.1?}",
        args.samples,
        timer.elapsed()
    );
    println!(
        "p({:?}): clean {:.3}, corrupted {:.3}; indirect effect per layer (rows) and token:",
        args.answer, trace.clean_probability, trace.corrupted_probability
    );
    let header: Vec<String> =
        trace.tokens.iter().map(|t| format!("{:>8.8}", format!("{t:?}"))).collect();
    println!("{:>4} {}", "", header.join(" "));
    for (l, row) in trace.indirect_effect.outer_iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>8.3}")).collect();
        println!("{l:>4} {}", cells.join(" "));
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&trace)?)?;
    println!("wrote {}", args.out.display());
    let traces = [trace];
    let pictures = InternalsPictures { traces: &traces, ..Default::default() };
    let title = format!("Causal tracing of {:?}", args.prompt);
    for path in pictures.write(&args.pictures, &title)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
