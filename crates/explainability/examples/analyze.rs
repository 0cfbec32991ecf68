//! The main job: a comprehensive analysis of one prompt — next-token prediction, attention,
//! attributions with their convergence deltas, their evaluation, and a bilingual report —
//! printed as a terminal summary and written as JSON, Markdown, charts, graphs and an HTML
//! report into a folder.
//!
//! ```text
//! cargo run --release --example analyze -- "The capital of France is"
//! cargo run --release --example analyze -- --model path/to/hf-folder --out my-report "Hello"
//! cargo run --release --example analyze -- --methods saliency,integrated_gradients --no-eval "Hi"
//! ```
//! `cargo xtask demo` runs this example.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use explainability::{
    Analyzer, ComprehensiveAnalysis, LanguageModel, LoadOptions, Precision, load_with,
    smollm2_gguf_path,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Bf16,
}

#[derive(Parser, Debug)]
#[command(about = "Comprehensive explanation of a language model's next-token prediction")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Folder the report is written to.
    #[arg(long, default_value = "target/analysis")]
    out: PathBuf,
    /// Attribution methods, comma-separated (default: the analyzer's set).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Skip the evaluation of the attributions (fidelity, completeness, comprehensibility).
    #[arg(long)]
    no_eval: bool,
    /// Precision of weights and activations.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Print the summary in Chinese as well.
    #[arg(long)]
    zh: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let path = args.model.clone().unwrap_or_else(smollm2_gguf_path);
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::Bf16 => Precision::Bf16,
    };
    let start = Instant::now();
    let model = load_with(&path, LoadOptions { precision, ..LoadOptions::default() })?;
    println!("model: {} ({:.1} s to load)", model.info().name, start.elapsed().as_secs_f64());

    let mut analyzer = Analyzer::new().evaluate(!args.no_eval);
    if let Some(methods) = &args.methods {
        let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
        analyzer = analyzer.methods(&methods);
    }
    let start = Instant::now();
    let analysis = analyzer.comprehensive_analysis(&model, &args.prompt)?;
    let elapsed = start.elapsed().as_secs_f64();
    print_summary(&analysis, args.zh);
    let files = analysis.write_to(&args.out)?;
    println!(
        "\nanalysis took {elapsed:.1} s; wrote {} files into {}:",
        files.len(),
        args.out.display()
    );
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}

fn print_summary(a: &ComprehensiveAnalysis, zh: bool) {
    println!("\ntext: {:?} ({} tokens)", a.text, a.tokens.len());
    println!("\nnext token:");
    for p in &a.top_k {
        println!("  {:>14} {:6.2}%", format!("{:?}", p.token), 100.0 * p.probability);
    }
    println!("\ntop tokens by attribution:");
    for e in a.attributions.explanations() {
        let top: Vec<String> =
            e.top_k(3).into_iter().map(|(_, t, s)| format!("{t:?} {s:+.3}")).collect();
        let delta = e.convergence_delta.map(|d| format!("  (delta {d:+.3})")).unwrap_or_default();
        println!("  {:<22} {}{delta}", e.method, top.join(", "));
    }
    for (method, failure) in a.attributions.failures() {
        println!("  {method:<22} FAILED: {}", failure.message);
    }
    let m = &a.attention.metrics.model;
    println!(
        "\nattention: entropy {:.2} nats, sparsity {:.0}%, locality {:.2}, mean distance {:.2}",
        m.entropy,
        100.0 * m.sparsity,
        m.locality,
        m.mean_distance
    );
    if let Some(evaluation) = &a.evaluation {
        println!(
            "\n{:<22} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
            "evaluation", "compr.", "suff.", "del.AUC", "ins.AUC", "Gini", "eff.tok"
        );
        for e in evaluation {
            let f = e.fidelity.as_ref();
            let num = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.3}"));
            // the random control's fidelity is its expectation over 8 seeded draws
            let name = if e.method == "random" { "random (8 draws)" } else { e.method.as_str() };
            println!(
                "{:<22} {:>8} {:>8} {:>8} {:>8} {:>6.3} {:>6.2}",
                name,
                num(f.map(|f| f.aopc_comprehensiveness)),
                num(f.map(|f| f.aopc_sufficiency)),
                num(f.map(|f| f.deletion_auc)),
                num(f.map(|f| f.insertion_auc)),
                e.comprehensibility.gini,
                e.comprehensibility.effective_tokens
            );
        }
    }
    println!("\nsummary:");
    for line in &a.report.summary_en {
        println!("  - {line}");
    }
    if zh {
        println!("\n摘要：");
        for line in &a.report.summary_zh {
            println!("  - {line}");
        }
    }
    println!("\nrecommendations:");
    if a.report.recommendations.is_empty() {
        println!("  - none: no rule fired");
    }
    for f in &a.report.recommendations {
        println!("  - [{}] {}", f.code, f.en);
        if zh {
            println!("    {}", f.zh);
        }
    }
}
