//! Per-step times of the attention analysis and the comprehensive analysis on SmolLM2-135M at a
//! given length of real text (the facts of crates/explain-eval/data/long_contexts.jsonl, joined
//! until the text has the requested number of tokens). One configuration per process, so that
//! `VmHWM` (peak resident set) belongs to it:
//!
//! ```text
//! cargo run --release -p explainability --example long_analysis -- pieces 512 [--exact-flow]
//! cargo run --release -p explainability --example long_analysis -- attention 2048
//! cargo run --release -p explainability --example long_analysis -- analyze 2048
//! ```
//!
//! - `pieces`: every step of the attention analysis timed separately, with the pre-budget
//!   computations beside the budgeted ones (full rollout matrix vs one row; exact flow, only
//!   with `--exact-flow`, vs budgeted flow) and, for the flow, how far the budgeted row is
//!   from the exact one when both ran.
//! - `attention`: [`AttentionAnalysis::run`] with default settings and its step records.
//! - `analyze`: [`Analyzer::comprehensive_analysis`] with default settings, its timings and
//!   step records, then the report files written (`charts`).
//!
//! Threads: `EXPLAINABILITY_THREADS` (default 2) for libtorch. Prints one JSON object on stdout.
//! The figures in docs/benchmarks.md ("Analysis at long contexts") come from this example.

use std::time::Instant;

use explainability::attention::{
    AttentionMetrics, DEFAULT_FLOW_MAX_EDGES, HeadRoleScores, MaxFlowAlgorithm, attention_flow,
    attention_flow_budgeted, attention_rollout, rollout_row,
};
use explainability::tch;
use explainability::{
    Analyzer, AttentionAnalysis, AttentionCapture, Error, LanguageModel, Result, load,
    smollm2_gguf_path,
};
use serde_json::{Value, json};

/// Real text of about `n` tokens: sentences of the long-context facts, in file order. The
/// length is the joined text's own token count (a sentence tokenised alone counts its leading
/// word differently from the same sentence after a space).
fn text_of_length(model: &dyn LanguageModel, n: usize) -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../explain-eval/data/long_contexts.jsonl");
    let data = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut text = String::new();
    for line in data.lines() {
        let record: Value = serde_json::from_str(line)
            .map_err(|e| Error::invalid_argument(format!("long_contexts.jsonl: {e}")))?;
        let prompt = record["prompt"].as_str().unwrap_or_default();
        for sentence in prompt.split_inclusive(". ") {
            let kept = text.len();
            text.push_str(sentence);
            let tokens = model.encode(text.trim_end(), true)?.len();
            if tokens > n {
                // Skip a sentence that does not fit; a shorter one later may.
                text.truncate(kept);
                continue;
            }
            if tokens + 4 >= n {
                return Ok(text.trim_end().to_owned());
            }
        }
    }
    Err(Error::invalid_argument(format!("the long contexts hold fewer than {n} tokens")))
}

fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let clock = Instant::now();
    let value = f()?;
    Ok((value, clock.elapsed().as_secs_f64()))
}

fn pieces(model: &dyn LanguageModel, text: &str, exact_flow: bool) -> Result<Value> {
    let (capture, capture_s) = timed(|| AttentionCapture::from_text(model, text))?;
    let n = capture.len();
    let (_, metrics_s) = timed(|| AttentionMetrics::compute(&capture, 0.01))?;
    let (_, roles_s) = timed(|| HeadRoleScores::compute(model, &capture, 24, 0))?;
    let (means, means_s) = timed(|| Ok(capture.head_means()))?;
    let (full, rollout_full_s) = timed(|| attention_rollout(&means))?;
    let (row, rollout_row_s) = timed(|| rollout_row(&means, n - 1))?;
    let rollout_gap =
        row.iter().zip(full.row(n - 1)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    drop(full);
    let (budgeted, flow_budgeted_s) = timed(|| {
        attention_flow_budgeted(
            &means,
            n - 1,
            true,
            MaxFlowAlgorithm::Dinics,
            DEFAULT_FLOW_MAX_EDGES,
        )
    })?;
    let mut out = json!({
        "tokens": n,
        "capture_s": capture_s,
        "metrics_s": metrics_s,
        "roles_s": roles_s,
        "head_means_s": means_s,
        "rollout_full_matrix_s": rollout_full_s,
        "rollout_row_s": rollout_row_s,
        "rollout_row_max_abs_difference": rollout_gap,
        "flow_budgeted_s": flow_budgeted_s,
        "flow_budgeted_segments": budgeted.segments.as_ref().map_or(n, Vec::len),
        "flow_budgeted_edges": budgeted.edges,
    });
    if exact_flow {
        let (exact, exact_s) =
            timed(|| attention_flow(&means, n - 1, true, MaxFlowAlgorithm::Dinics))?;
        let l1: f64 = exact.iter().zip(budgeted.scores.iter()).map(|(a, b)| (a - b).abs()).sum();
        let top = |v: &explainability::ndarray::Array1<f64>| {
            v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
        };
        out["flow_exact_s"] = json!(exact_s);
        out["flow_l1_difference"] = json!(l1);
        out["flow_exact_argmax"] = json!(top(&exact));
        out["flow_budgeted_argmax"] = json!(top(&budgeted.scores));
    }
    Ok(out)
}

fn main() -> Result<()> {
    let threads = std::env::var("EXPLAINABILITY_THREADS")
        .ok()
        .and_then(|t| t.parse::<i32>().ok())
        .unwrap_or(2);
    tch::set_num_threads(threads);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        Error::invalid_argument(
            "usage: long_analysis pieces|attention|analyze TOKENS [--exact-flow]",
        )
    };
    let mode = args.first().ok_or_else(usage)?.clone();
    let tokens: usize = args.get(1).and_then(|s| s.parse().ok()).ok_or_else(usage)?;
    let model = load(smollm2_gguf_path())?;
    let text = text_of_length(&model, tokens)?;
    let clock = Instant::now();
    let mut out = match mode.as_str() {
        "pieces" => pieces(&model, &text, args.iter().any(|a| a == "--exact-flow"))?,
        "attention" => {
            let report = AttentionAnalysis::new().run(&model, &text)?;
            json!({ "tokens": report.tokens.len(), "steps": report.steps })
        }
        "analyze" => {
            let analysis = Analyzer::new().comprehensive_analysis(&model, &text)?;
            let dir = std::env::temp_dir().join(format!("long_analysis_{}", std::process::id()));
            let (written, charts_s) = timed(|| analysis.write_to(&dir))?;
            let _ = std::fs::remove_dir_all(&dir);
            json!({
                "tokens": analysis.tokens.len(),
                "timings": analysis.timings,
                "steps": analysis.steps,
                "charts_s": charts_s,
                "files": written.len(),
            })
        }
        _ => return Err(usage()),
    };
    out["mode"] = json!(mode);
    out["threads"] = json!(threads);
    out["total_s"] = json!(clock.elapsed().as_secs_f64());
    let peak = explainability::core::ProcessMemory::now().map_or(f64::NAN, |m| m.peak_mib());
    out["peak_rss_mib"] = json!(peak);
    println!("{out}");
    Ok(())
}
