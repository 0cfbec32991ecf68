//! Measurements behind the "Gradient attribution" section of docs/benchmarks.md, run by
//! `cargo xtask bench-reference` (or by hand, `--release`):
//!
//! - `ig_efficiency adaptive`: for several prompts (target: log-probability of the argmax next
//!   token, all-eos baseline), adaptive IG's |delta| and gradient evaluations, then uniform
//!   Gauss–Legendre at 16, 32, … 2048 steps until the first whose |delta| is no larger;
//! - `ig_efficiency memory`: peak resident memory of one IG call on a 30-token prompt as
//!   `n_steps` grows, with a fixed internal batch size (10) and without one.
//!
//! - `ig_efficiency timing`: medians of 3 calls (after one warm-up) of the cases that
//!   `reference/bench_captum.py` times, for a quick same-load comparison without criterion's
//!   10-sample minimum (the criterion `gradients` group is the reference measurement).
//!
//! Prints one JSON document on stdout.

use std::time::Instant;

use explain_gradients::{
    AdaptiveOptions, Baseline, IntegratedGradients, PathOptions, Quadrature, QuadratureRule,
};
use explain_models::{load, smollm2_gguf_path};
use explainability_core::{Explainer, LanguageModel, Result, Target};
use serde_json::{Value, json};

const PROMPTS: [&str; 3] =
    ["The capital of France is", "The opposite of hot is", "She opened the door and saw a"];
/// Uniform Gauss–Legendre step counts tried, smallest first; the search stops at the first
/// one whose |delta| is no larger than adaptive's (larger counts only cost time).
const UNIFORM_STEPS: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];
/// Tokens of the memory measurement's prompt.
const MEMORY_TOKENS: usize = 30;
const TEXT: &str = "Attention weights show where a transformer looks when it predicts the next \
token, and gradients show which inputs would change that prediction most. Neither is the whole \
story, so careful analyses compare several methods on the same text and check whether the \
explanations agree. ";

fn uniform(n_steps: usize, batch: Option<usize>) -> IntegratedGradients {
    IntegratedGradients {
        baseline: Baseline::Eos,
        quadrature: Quadrature::Fixed(PathOptions {
            rule: QuadratureRule::GaussLegendre,
            n_steps,
            internal_batch_size: batch,
        }),
        check_path: false,
    }
}

fn relative_delta(e: &explainability_core::Explanation) -> (f64, f64) {
    let delta = e.convergence_delta.unwrap_or(f64::NAN);
    let change = e.target_value.unwrap_or(f64::NAN)
        - e.metadata.get("f_baseline").and_then(Value::as_f64).unwrap_or(f64::NAN);
    (delta, (delta / change).abs())
}

fn adaptive(model: &dyn LanguageModel) -> Result<Value> {
    let mut rows = Vec::new();
    for text in PROMPTS {
        let ids = model.encode(text, false)?;
        let target = Target::argmax();
        let start = Instant::now();
        let ig = IntegratedGradients {
            baseline: Baseline::Eos,
            quadrature: Quadrature::Adaptive(AdaptiveOptions::default()),
            check_path: false,
        };
        let a = ig.explain_ids(model, &ids, &target)?;
        let adaptive_s = start.elapsed().as_secs_f64();
        let (a_delta, a_rel) = relative_delta(&a);
        let a_evals = a.metadata.get("gradient_evaluations").and_then(Value::as_u64).unwrap_or(0);
        let mut uniform_rows = Vec::new();
        let mut matched: Option<(usize, f64)> = None;
        for steps in UNIFORM_STEPS {
            let start = Instant::now();
            let e = uniform(steps, Some(64)).explain_ids(model, &ids, &target)?;
            let seconds = start.elapsed().as_secs_f64();
            let (delta, rel) = relative_delta(&e);
            eprintln!(
                "{text:?}: GL {steps}: delta {delta:+.3} ({:.1}%), {seconds:.2} s",
                rel * 100.0
            );
            uniform_rows.push(json!({"n_steps": steps, "delta": delta, "relative_delta": rel, "seconds": seconds}));
            if delta.abs() <= a_delta.abs() {
                matched = Some((steps, seconds));
                break;
            }
        }
        eprintln!(
            "{text:?}: adaptive delta {a_delta:+.3} ({:.1}%) with {a_evals} evaluations, {adaptive_s:.2} s; uniform matches at {matched:?}",
            a_rel * 100.0
        );
        rows.push(json!({
            "prompt": text,
            "tokens": ids.len(),
            "target_token": a.target_token,
            "f_change": a.target_value.unwrap_or(f64::NAN) - a.metadata.get("f_baseline").and_then(Value::as_f64).unwrap_or(f64::NAN),
            "adaptive": {
                "delta": a_delta,
                "relative_delta": a_rel,
                "gradient_evaluations": a_evals,
                "forward_evaluations": a.metadata.get("forward_evaluations"),
                "converged": a.metadata.get("converged"),
                "seconds": adaptive_s,
            },
            "uniform": uniform_rows,
            "uniform_steps_matching_adaptive": matched.map(|m| m.0),
            "uniform_seconds_matching_adaptive": matched.map(|m| m.1),
            // Lower bounds when no uniform count matched: the largest count tried.
            "evaluations_ratio_at_least": matched.map_or(UNIFORM_STEPS[UNIFORM_STEPS.len() - 1], |m| m.0) as f64 / a_evals.max(1) as f64,
            "seconds_ratio_at_least": uniform_rows.last().and_then(|r| r["seconds"].as_f64()).unwrap_or(f64::NAN) / adaptive_s,
        }));
    }
    Ok(
        json!({ "baseline": "eos", "adaptive_options": AdaptiveOptions::default(), "prompts": rows }),
    )
}

/// `VmHWM` (peak resident set) and `VmRSS` of this process in MiB (NaN where unknown).
fn memory_mib() -> (f64, f64) {
    explainability_core::ProcessMemory::now()
        .map_or((f64::NAN, f64::NAN), |m| (m.peak_mib(), m.resident_mib()))
}

/// Resets the peak resident set to the current one.
fn reset_peak() {
    let _ = explainability_core::ProcessMemory::reset_peak();
}

fn memory(model: &dyn LanguageModel) -> Result<Value> {
    let mut text = TEXT.to_string();
    let ids = loop {
        let ids = model.encode(&text, false)?;
        if ids.len() >= MEMORY_TOKENS {
            break ids[..MEMORY_TOKENS].to_vec();
        }
        text.push_str(TEXT);
    };
    let target = Target::argmax();
    // Warm-up: libtorch's first calls allocate pools that later calls reuse.
    uniform(10, Some(10)).explain_ids(model, &ids, &target)?;
    let mut rows = Vec::new();
    for (batch, steps) in
        [(Some(10), [10usize, 20, 40, 80].as_slice()), (None, [10usize, 20, 40].as_slice())]
    {
        for &n in steps {
            reset_peak();
            let (_, before) = memory_mib();
            let start = Instant::now();
            uniform(n, batch).explain_ids(model, &ids, &target)?;
            let (peak, _) = memory_mib();
            let seconds = start.elapsed().as_secs_f64();
            eprintln!(
                "batch {batch:?}, {n} steps: peak {peak:.0} MiB (+{:.0} over {before:.0}), {seconds:.1} s",
                peak - before
            );
            rows.push(json!({
                "internal_batch_size": batch,
                "n_steps": n,
                "rss_before_mib": before,
                "peak_rss_mib": peak,
                "peak_increase_mib": peak - before,
                "seconds": seconds,
            }));
        }
    }
    Ok(json!({ "tokens": ids.len(), "rows": rows }))
}

/// "The capital of France is" and its 10-token greedy continuation.
const SHORT: [i64; 5] = [504, 3575, 282, 4649, 314];
const CONTINUATION: [i64; 10] = [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34];

fn median_ms(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

fn timing(model: &dyn LanguageModel) -> Result<Value> {
    use explain_gradients::{GenerationAttribution, GenerationMethod, GradientXInput, Saliency};
    let mut text = TEXT.to_string();
    let long = loop {
        let ids = model.encode(&text, false)?;
        if ids.len() >= 60 {
            break ids[..60].to_vec();
        }
        text.push_str(TEXT);
    };
    let target = Target::argmax();
    let ig = uniform(50, None);
    let generation = GenerationAttribution {
        method: GenerationMethod::PromptIntegratedGradients {
            baseline: Baseline::Eos,
            path: PathOptions { n_steps: 20, ..PathOptions::default() },
        },
    };
    let mut rows = Vec::new();
    let mut record = |id: &str, ms: f64| {
        eprintln!("{id}: median {ms:.1} ms");
        rows.push(json!({ "id": id, "median_ms": ms }));
    };
    record("gradients/ig_gl50/5", median_ms(|| ig.explain_ids(model, &SHORT, &target).map(drop))?);
    // `ig_efficiency timing short` leaves out the 60-token case (slow on a loaded machine).
    if std::env::args().nth(2).as_deref() != Some("short") {
        record(
            "gradients/ig_gl50/60",
            median_ms(|| ig.explain_ids(model, &long, &target).map(drop))?,
        );
    }
    record(
        "gradients/saliency/5",
        median_ms(|| Saliency::default().explain_ids(model, &SHORT, &target).map(drop))?,
    );
    record(
        "gradients/gradient_x_input/5",
        median_ms(|| GradientXInput.explain_ids(model, &SHORT, &target).map(drop))?,
    );
    record(
        "gradients/generation_prompt_ig20/10",
        median_ms(|| generation.attribute(model, &SHORT, &CONTINUATION).map(drop))?,
    );
    Ok(json!({ "statistic": "median of 3", "results": rows }))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let threads =
        std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    tch::set_num_threads(threads);
    let mode = std::env::args().nth(1).unwrap_or_default();
    let model = load(smollm2_gguf_path())?;
    let report = match mode.as_str() {
        "adaptive" => adaptive(&model)?,
        "memory" => memory(&model)?,
        "timing" => timing(&model)?,
        other => {
            return Err(
                format!("usage: ig_efficiency adaptive|memory|timing (got {other:?})").into()
            );
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({ "mode": mode, "threads": threads, "report": report })
        )?
    );
    Ok(())
}
