//! Prints the most likely next tokens after a prompt.
//!
//! ```text
//! cargo run --release --example next_token -- "The capital of France is"
//! cargo run --release --example next_token -- --model path/to/model.gguf --top-k 10 "Hello"
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use explainability::{LanguageModel, LoadOptions, Precision, load_with, smollm2_gguf_path};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Bf16,
    F16,
}

#[derive(Parser, Debug)]
#[command(about = "Top-k next tokens of a prompt")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// How many candidates to print.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Run on CUDA device 0 when available.
    #[arg(long)]
    cuda: bool,
    /// Precision of weights and activations.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let path = args.model.unwrap_or_else(smollm2_gguf_path);
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::Bf16 => Precision::Bf16,
        PrecisionArg::F16 => Precision::F16,
    };
    let mut options = LoadOptions::default().precision(precision);
    if args.cuda {
        options = options.device(tch::Device::cuda_if_available());
    }
    let started = Instant::now();
    let model = load_with(&path, options)?;
    let info = model.info();
    println!(
        "model: {} ({}, {} layers, {} heads / {} kv heads, d_model {}) loaded in {:.1}s",
        info.name,
        info.architecture,
        info.n_layers,
        info.n_heads,
        info.n_kv_heads,
        info.d_model,
        started.elapsed().as_secs_f64()
    );
    let ids = model.encode(&args.prompt, true)?;
    println!("prompt: {:?} ({} tokens)", args.prompt, ids.len());
    println!("{:>4}  {:<20} {:>8} {:>10}", "rank", "token", "prob", "logit");
    for (rank, p) in model.top_next_tokens(&args.prompt, args.top_k)?.iter().enumerate() {
        println!(
            "{:>4}  {:<20} {:>7.2}% {:>10.3}",
            rank + 1,
            format!("{:?}", p.token),
            100.0 * p.probability,
            p.logit
        );
    }
    Ok(())
}
