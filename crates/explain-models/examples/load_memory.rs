//! Time and peak memory of loading a model: `cargo run --release -p explain-models --example
//! load_memory -- [--precision f32|bf16|f16] [PATH]` (default: the Gemma 3 270M GGUF).
//!
//! Prints the process's peak resident set (VmHWM, Linux) after libtorch is initialised (the
//! baseline) and after the load, the bytes of the loaded weights (tied head counted once), and
//! the ratio of the growth to the weights. Used for docs/benchmarks.md ("model loading").

use std::time::Instant;

use explain_models::{LoadOptions, Precision, gemma3_gguf_path, load_with};
use explainability_core::{LanguageModel, ProcessMemory};

/// Peak resident set (`VmHWM`) in bytes; 0 where unknown.
fn peak_rss() -> u64 {
    ProcessMemory::now().map_or(0, |m| m.peak_bytes)
}

fn main() -> explainability_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut precision = Precision::F32;
    let mut tokenizer_only = false;
    let mut path = gemma3_gguf_path();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--precision" => {
                precision = match args.next().as_deref() {
                    Some("bf16") => Precision::Bf16,
                    Some("f16") => Precision::F16,
                    _ => Precision::F32,
                }
            }
            "--tokenizer-only" => tokenizer_only = true,
            other => path = other.into(),
        }
    }
    // Initialise libtorch (its allocator and thread pool) before measuring the baseline.
    let _warm =
        tch::Tensor::ones([1024, 1024], (tch::Kind::Float, tch::Device::Cpu)).sum(tch::Kind::Float);
    let baseline = peak_rss();
    if tokenizer_only {
        let file = explain_models::GgufFile::open(&path)?;
        let start = Instant::now();
        let tokenizer = explain_models::TextTokenizer::from_gguf(&file)?;
        let built = start.elapsed().as_secs_f64();
        drop(file);
        println!(
            "tokenizer of {} tokens built in {built:.2} s; peak RSS {:.0} MiB over the baseline, \
             {:.0} MiB resident once built",
            tokenizer.vocab_size(),
            (peak_rss() - baseline) as f64 / 1048576.0,
            ProcessMemory::now().map_or(0, |m| m.resident_bytes).saturating_sub(baseline) as f64
                / 1048576.0
        );
        return Ok(());
    }
    let start = Instant::now();
    let model = load_with(&path, LoadOptions::default().precision(precision))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak = peak_rss();
    let weights: i64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
        .sum();
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!(
        "{}: {precision:?} load {seconds:.2} s; weights {:.0} MiB; peak RSS baseline {:.0} MiB, \
         after load {:.0} MiB; (peak − baseline) / weights = {:.2}",
        path.display(),
        mib(weights as f64),
        mib(baseline as f64),
        mib(peak as f64),
        (peak as f64 - baseline as f64) / weights as f64,
    );
    let top = model.top_next_tokens("The capital of France is", 3)?;
    println!("top-3: {:?}", top.iter().map(|p| p.token.as_str()).collect::<Vec<_>>());
    Ok(())
}
