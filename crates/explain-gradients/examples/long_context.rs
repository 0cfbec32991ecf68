//! Time and peak resident memory of one gradient attribution on SmolLM2-135M at a given
//! length, with the backward pass stored (plain autograd) or recomputed block by block
//! ([`RecomputedBackward`]). One configuration per process, so that `VmHWM` (the peak resident
//! set) belongs to that configuration alone:
//!
//! ```text
//! cargo run --release -p explain-gradients --example long_context -- saliency recompute 2048
//! cargo run --release -p explain-gradients --example long_context -- ig stored 1024 8
//! ```
//!
//! Methods: `saliency`, `gxi` (gradient × input), `attn_lrp` (AttnLRP), `ig` (integrated gradients, all-eos
//! baseline, Gauss–Legendre with the given steps, internal batch size 1, without the default
//! path check's 8 forward passes, as Captum computes it). Prints one JSON line
//! on stdout. The figures in docs/benchmarks.md ("Long contexts") come from this example.

use std::time::Instant;

use explain_gradients::{
    Baseline, GradientXInput, IntegratedGradients, PathOptions, Quadrature, RelevancePropagation,
};
use explain_gradients::{Saliency, SaliencyNorm};
use explain_models::{load, smollm2_gguf_path};
use explainability_core::{
    Error, Explainer, LanguageModel, ProcessMemory, RecomputedBackward, Result, Target,
    process_cpu_seconds,
};
use serde_json::json;

const PARAGRAPH: &str = "The river left its banks in the spring, and the village moved to the \
hill above the mill. Old maps still show the lanes that ran down to the water, the bakery by \
the bridge, and the school whose bell could be heard across the fields. ";

/// `VmHWM` (peak resident set) of this process in MiB (NaN where it cannot be read).
fn peak_rss_mib() -> f64 {
    ProcessMemory::now().map_or(f64::NAN, |m| m.peak_bytes as f64 / (1024.0 * 1024.0))
}

/// `n` token ids of a repeated paragraph.
fn ids_of_length(model: &dyn LanguageModel, n: usize) -> Result<Vec<i64>> {
    let one = model.encode(PARAGRAPH, false)?;
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        ids.extend(one.iter().take(n - ids.len()));
    }
    Ok(ids)
}

fn main() -> Result<()> {
    tch::set_num_threads(1);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        Error::invalid_argument(
            "usage: long_context saliency|gxi|attn_lrp|ig stored|recompute TOKENS [IG_STEPS]",
        )
    };
    let method = args.first().ok_or_else(usage)?.clone();
    let memory = args.get(1).ok_or_else(usage)?.clone();
    let tokens: usize = args.get(2).and_then(|s| s.parse().ok()).ok_or_else(usage)?;
    let steps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let model = load(smollm2_gguf_path())?;
    let bounded = RecomputedBackward::new(&model);
    let subject: &dyn LanguageModel = match memory.as_str() {
        "stored" => &model,
        "recompute" => &bounded,
        _ => return Err(usage()),
    };
    let explainer: Box<dyn Explainer> = match method.as_str() {
        "saliency" => Box::new(Saliency { norm: SaliencyNorm::L2 }),
        "gxi" => Box::new(GradientXInput),
        "attn_lrp" => Box::new(RelevancePropagation::attn_lrp()),
        "ig" => Box::new(IntegratedGradients {
            quadrature: Quadrature::Fixed(PathOptions {
                n_steps: steps,
                internal_batch_size: Some(1),
                ..PathOptions::default()
            }),
            // The same work as Captum's IntegratedGradients: the steps' gradients and the two
            // endpoint values, without our default path check (8 more forward passes).
            check_path: false,
            ..IntegratedGradients::new(Baseline::Eos, steps)
        }),
        _ => return Err(usage()),
    };
    let ids = ids_of_length(&model, tokens)?;
    let after_load = peak_rss_mib();
    let start = Instant::now();
    let cpu_start = process_cpu_seconds();
    let e = explainer.explain_ids(subject, &ids, &Target::argmax())?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = match (cpu_start, process_cpu_seconds()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let top = e
        .scores
        .iter()
        .enumerate()
        .fold((0, f64::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0;
    println!(
        "{}",
        json!({
            "method": method,
            "backward": memory,
            "tokens": tokens,
            "ig_steps": (method == "ig").then_some(steps),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "peak_rss_mib": peak_rss_mib(),
            "peak_rss_after_load_mib": after_load,
            "top_token": top,
            "score_sum": e.scores.sum(),
        })
    );
    Ok(())
}
