//! The table and charts of `cargo xtask bench-length`: reads its `results.jsonl` (one line per
//! configuration: framework, backward, method, tokens, seconds, peak RSS, or the error that
//! stopped it) and writes into a folder `bench-length.md` (a table per method, ours stored and
//! recomputed beside Captum, the ratios, what ran out of memory) and, per method,
//! `time-METHOD.svg|png` and `memory-METHOD.svg|png` (log₂ tokens against log₁₀ seconds and
//! peak GiB).
//!
//! ```text
//! cargo run --release -p explain-viz --example bench_length_chart -- target/bench-length/results.jsonl target/bench-length
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use explain_viz::charts::{ChartOptions, Series, line_chart};
use explainability_core::{Error, Result};
use serde_json::Value;

/// The three columns of a method's table (and the charts' series).
const COLUMNS: [(&str, &str, &str); 3] = [
    ("ours", "stored", "ours, stored"),
    ("ours", "recompute", "ours, recomputed"),
    ("captum", "stored", "Captum"),
];

fn cell(record: Option<&Value>) -> (String, f64, f64) {
    let Some(r) = record else { return ("—".into(), f64::NAN, f64::NAN) };
    if r["oom"].as_bool() == Some(true) {
        // The cap is on address space; the resident peak reached before the failed
        // allocation is a lower bound of what the attribution needs.
        let cap = r["cap_gib"].as_f64().map_or(String::new(), |c| format!(", cap {c} GiB"));
        let reached = r["peak_rss_mib"]
            .as_f64()
            .map_or(String::new(), |m| format!(" after {:.2} GiB resident", m / 1024.0));
        return (format!("out of memory{reached}{cap}"), f64::NAN, f64::NAN);
    }
    if r.get("error").is_some_and(|e| !e.is_null()) {
        return ("failed".into(), f64::NAN, f64::NAN);
    }
    // CPU seconds where both sides report them (one thread each: the work done, however busy
    // the machine), wall seconds otherwise.
    let s = r["cpu_seconds"].as_f64().or_else(|| r["seconds"].as_f64()).unwrap_or(f64::NAN);
    let peak = r["peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
    (format!("{s:.1} s / {:.2} GiB", peak / 1024.0), s, peak)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(results), Some(out)) = (args.first(), args.get(1)) else {
        return Err(Error::invalid_argument("usage: bench_length_chart RESULTS.jsonl OUT_DIR"));
    };
    let text = std::fs::read_to_string(results).map_err(|e| Error::io(results, e))?;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    // method → tokens → key → record
    let mut by_method: BTreeMap<String, BTreeMap<u64, BTreeMap<String, Value>>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line).map_err(|e| {
            Error::invalid_argument(format!("{results}: line {} is not JSON: {e}", i + 1))
        })?;
        let (Some(method), Some(tokens)) = (v["method"].as_str(), v["tokens"].as_u64()) else {
            return Err(Error::invalid_argument(format!(
                "{results}: line {} has no method or tokens",
                i + 1
            )));
        };
        let column = format!(
            "{}/{}",
            v["framework"].as_str().unwrap_or("?"),
            v["backward"].as_str().unwrap_or("?")
        );
        by_method
            .entry(method.to_owned())
            .or_default()
            .entry(tokens)
            .or_default()
            .insert(column, v);
    }
    let mut md = String::from("# Gradient attribution against sequence length\n\n");
    md.push_str(
        "One attribution of the argmax next token's log-probability on SmolLM2-135M, f32, one \
         thread, each configuration in its own process (peak = its VmHWM / ru_maxrss, model \
         load included). Cells: CPU seconds of the attribution (one thread, so the work done however busy the machine) / peak GiB. `recompute/stored`: our recomputed \
         backward's peak over our stored one's; `Captum/ours`: Captum's CPU time over our stored \
         backward's (\"stored\": plain autograd; \"recomputed\": the backward recomputes each block \
         from the residual stream at block boundaries; Captum on transformers with its default \
         attention); `Δ sum`: relative difference of the attributions' sums (the same ids and \
         target on both sides).\n",
    );
    for (method, rows) in &by_method {
        let _ = write!(
            md,
            "\n## {method}\n\n| tokens | {} | {} | {} | recompute/stored peak | Captum/ours time | Δ sum |\n|---:|---|---|---|---:|---:|---:|\n",
            COLUMNS[0].2, COLUMNS[1].2, COLUMNS[2].2
        );
        let mut time_series: Vec<Series> = Vec::new();
        let mut memory_series: Vec<Series> = Vec::new();
        for (framework, backward, name) in COLUMNS {
            let column = format!("{framework}/{backward}");
            let mut time = Vec::new();
            let mut memory = Vec::new();
            for (&tokens, records) in rows {
                let (_, s, peak) = cell(records.get(&column));
                let x = (tokens as f64).log2();
                time.push((x, s.log10()));
                memory.push((x, (peak / 1024.0).log10()));
            }
            time_series.push(Series { name: name.to_owned(), points: time });
            memory_series.push(Series { name: name.to_owned(), points: memory });
        }
        for (&tokens, records) in rows {
            let cells: Vec<(String, f64, f64)> =
                COLUMNS.iter().map(|(f, b, _)| cell(records.get(&format!("{f}/{b}")))).collect();
            let ratio = |a: f64, b: f64| {
                if a.is_finite() && b.is_finite() && b > 0.0 {
                    format!("{:.2}×", a / b)
                } else {
                    "—".into()
                }
            };
            let sum = |k: &str| records.get(k).and_then(|r| r["score_sum"].as_f64());
            let delta = match (sum("ours/stored"), sum("captum/stored")) {
                (Some(a), Some(b)) => {
                    format!("{:.1e}", (a - b).abs() / a.abs().max(b.abs()).max(1e-30))
                }
                _ => "—".into(),
            };
            let _ = writeln!(
                md,
                "| {tokens} | {} | {} | {} | {} | {} | {delta} |",
                cells[0].0,
                cells[1].0,
                cells[2].0,
                ratio(cells[1].2, cells[0].2),
                ratio(cells[2].1, cells[0].1),
            );
        }
        let label = "tokens (log₂: 7 = 128, 13 = 8,192)";
        let svg = line_chart(
            &time_series,
            label,
            "CPU seconds (log₁₀)",
            &ChartOptions::titled(format!("{method}: time against length")),
        );
        svg.write(out.join(format!("time-{method}.svg")))?;
        svg.write_png(out.join(format!("time-{method}.png")), svg.png_scale())?;
        let svg = line_chart(
            &memory_series,
            label,
            "peak RSS, GiB (log₁₀)",
            &ChartOptions::titled(format!("{method}: peak memory against length")),
        );
        svg.write(out.join(format!("memory-{method}.svg")))?;
        svg.write_png(out.join(format!("memory-{method}.png")), svg.png_scale())?;
    }
    let path = out.join("bench-length.md");
    std::fs::write(&path, md).map_err(|e| Error::io(&path, e))?;
    println!("{}", path.display());
    Ok(())
}
