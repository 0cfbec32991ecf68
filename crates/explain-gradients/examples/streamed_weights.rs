//! Time and peak resident memory of gradient × input on a GGUF model whose weights are resident
//! or streamed ([`Weights::Streamed`]: kept quantised in the memory map, each block's matrices
//! dequantised for its forward pass and again for its recomputed backward pass). One
//! configuration per process, so that `VmHWM` (the peak resident set) is that configuration's:
//!
//! ```text
//! .venv/bin/python reference/write_llama_gguf.py --out /tmp/llama7b-q4_0.gguf
//! cargo run -p explain-gradients --example streamed_weights \
//!     --config 'profile.dev.package.explain-models.opt-level=3' -- \
//!     /tmp/llama7b-q4_0.gguf streamed 256
//! cargo run -p explain-gradients --example streamed_weights -- smollm2 resident 256
//! ```
//!
//! The model is `smollm2`, `gemma3` or a path to a GGUF file; the input is `TOKENS` seeded
//! random token ids past the first 300 of the vocabulary (the written 7B file's tokenizer is
//! not meant for text), the target the most likely next token. Runs on one libtorch thread
//! (dequantisation follows libtorch's thread setting). Prints one JSON line on stdout: load
//! and attribution seconds, peak RSS after loading and at the end, the file size and their
//! ratio. The figures in docs/benchmarks.md ("Streamed quantised weights") come from it.

use std::path::PathBuf;
use std::time::Instant;

use explain_gradients::GradientXInput;
use explain_models::{LoadOptions, Weights, gemma3_gguf_path, load_with, smollm2_gguf_path};
use explainability_core::{
    Error, Explainer, LanguageModel, ProcessMemory, Result, SplitMix64, Target,
};
use serde_json::json;

fn main() -> Result<()> {
    tch::set_num_threads(1);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        Error::invalid_argument(
            "usage: streamed_weights smollm2|gemma3|PATH.gguf resident|streamed TOKENS",
        )
    };
    let path = match args.first().ok_or_else(usage)?.as_str() {
        "smollm2" => smollm2_gguf_path(),
        "gemma3" => gemma3_gguf_path(),
        other => PathBuf::from(other),
    };
    let weights = match args.get(1).map(String::as_str) {
        Some("resident") => Weights::Resident,
        Some("streamed") => Weights::Streamed,
        _ => return Err(usage()),
    };
    let tokens: usize = args.get(2).and_then(|s| s.parse().ok()).ok_or_else(usage)?;
    let file_bytes = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
    let peak = || ProcessMemory::now().map_or(f64::NAN, |m| m.peak_bytes as f64);
    let baseline = peak();

    let start = Instant::now();
    let model = load_with(&path, LoadOptions::default().weights(weights))?;
    let load_seconds = start.elapsed().as_secs_f64();
    let after_load = peak();
    eprintln!(
        "loaded {} ({} layers, d_model {}) in {load_seconds:.1} s, peak RSS {:.0} MiB",
        model.info().name,
        model.info().n_layers,
        model.info().d_model,
        after_load / 1048576.0
    );

    let vocab = model.info().vocab_size as u64;
    let mut rng = SplitMix64::new(7);
    let ids: Vec<i64> = (0..tokens)
        .map(|_| (300 + (rng.uniform() * (vocab - 300) as f64) as u64).min(vocab - 1) as i64)
        .collect();
    let start = Instant::now();
    let e = GradientXInput.explain_ids(&model, &ids, &Target::argmax())?;
    let seconds = start.elapsed().as_secs_f64();
    let end = peak();
    let gib = |b: f64| b / 1073741824.0;
    println!(
        "{}",
        json!({
            "model": model.info().name,
            "file": path.display().to_string(),
            "weights": format!("{weights:?}").to_lowercase(),
            "backward": model.backward_memory().name(),
            "tokens": tokens,
            "threads": 1,
            "load_seconds": load_seconds,
            "gxi_seconds": seconds,
            "file_gib": gib(file_bytes as f64),
            "peak_rss_baseline_gib": gib(baseline),
            "peak_rss_after_load_gib": gib(after_load),
            "peak_rss_gib": gib(end),
            "peak_rss_over_file_size": end / file_bytes as f64,
            "score_sum": e.scores.sum(),
            "scores_finite": e.scores.iter().all(|s| s.is_finite()),
        })
    );
    Ok(())
}
