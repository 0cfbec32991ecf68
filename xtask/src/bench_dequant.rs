//! `cargo xtask bench-dequant`: dequantisation of every tensor of the Gemma 3 270M Q4_K_M file
//! by our kernels (the `gguf_dequant_timing` example of explain-models, release build, with
//! 1 thread and with N) and by gguf-py's numpy reference (`reference/gguf_dequant_reference.py
//! --no-hash`), in one run; prints the time per GGML type, gguf-py's time over ours, and writes
//! `target/bench-dequant.json`.
//!
//! The 1-thread run also loads `token_embd.weight` (262144 × 640, Q8_0) as bf16 with
//! `GgufFile::tensor_as` and with `tensor().to_kind()`, reporting time and peak-memory growth.
//!
//! Both sides time only the dequantisation calls (output allocation included, file reading
//! excluded: both map the file and it is read once beforehand) and keep the best of
//! `REPEAT` passes per type. numpy runs single-threaded; `OMP_NUM_THREADS=1` is set for it.

use std::fs;
use std::time::Instant;

use serde_json::{Value, json};

use crate::pins::GEMMA3_270M;
use crate::project::{Project, Result, output, run, seconds};

/// Timing passes on each side; the best pass counts.
const REPEAT: usize = 3;

/// Runs both sides and reports; see the module documentation.
///
/// # Errors
/// When either side fails or reports no result.
pub fn bench_dequant(project: &Project, threads: usize) -> Result<()> {
    let start = Instant::now();
    let target = project.target_dir()?;
    let gguf = project.chunked_model_path(&GEMMA3_270M);
    let repeat = REPEAT.to_string();

    let mut ours = Vec::new();
    let mut thread_counts = vec![1];
    if threads > 1 {
        thread_counts.push(threads);
    }
    for &n in &thread_counts {
        println!("bench-dequant: ours, {n} thread(s)");
        let mut command = project.cargo();
        command
            .args(["run", "--release", "-p", "explain-models", "--example", "gguf_dequant_timing"])
            .arg("--")
            .arg("--gguf")
            .arg(&gguf)
            .args(["--threads", &n.to_string(), "--repeat", &repeat])
            // Only the bf16 conversion uses libtorch; give its pool the same thread count.
            .env("OMP_NUM_THREADS", n.to_string());
        if n == 1 {
            command.args(["--convert", "token_embd.weight"]);
        }
        let stdout = output("gguf_dequant_timing", &mut command)?;
        ours.push(serde_json::from_str::<Value>(stdout.trim())?);
    }

    println!("bench-dequant: gguf-py (numpy), 1 thread");
    let reference_path = target.join("bench-dequant-gguf-py.json");
    let mut python = project.python();
    python
        .arg("reference/gguf_dequant_reference.py")
        .arg("--gguf")
        .arg(&gguf)
        .arg("--out")
        .arg(&reference_path)
        .args(["--repeat", &repeat, "--no-hash"])
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1");
    run("gguf-py dequantisation", &mut python)?;
    let reference: Value = serde_json::from_str(&fs::read_to_string(&reference_path)?)?;
    let numpy = &reference["timing"];

    let single = ours.first().ok_or("no timing of ours")?;
    let many = ours.last().ok_or("no timing of ours")?;
    let mut rows = Vec::new();
    println!(
        "\n{:<7} {:>12} {:>11} {:>11} {:>13} {:>9} {:>9}",
        "type",
        "values",
        "numpy s",
        "ours 1t s",
        format!("ours {}t s", threads.max(1)),
        "np/1t",
        format!("np/{}t", threads.max(1))
    );
    let types: Vec<String> = numpy["per_type"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .ok_or("gguf_dequant_reference.py reported no per_type timing")?;
    for name in types.iter().map(String::as_str).chain(["total"]) {
        let pick = |v: &Value| -> Option<f64> {
            if name == "total" {
                v["total_seconds"].as_f64()
            } else {
                v["per_type"][name]["seconds"].as_f64()
            }
        };
        let missing = || format!("no timing for {name}");
        let np = pick(numpy).ok_or_else(missing)?;
        let one = pick(single).ok_or_else(missing)?;
        let n = pick(many).ok_or_else(missing)?;
        let values = if name == "total" {
            numpy["per_type"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(|v| v["elements"].as_u64()).sum::<u64>())
        } else {
            numpy["per_type"][name]["elements"].as_u64().unwrap_or(0)
        };
        println!(
            "{name:<7} {values:>12} {np:>11.4} {one:>11.4} {n:>13.4} {:>9.1} {:>9.1}",
            np / one,
            np / n
        );
        rows.push(json!({
            "type": name,
            "values": values,
            "numpy_s": np,
            "ours_1_thread_s": one,
            "ours_n_threads_s": n,
            "numpy_over_ours_1": np / one,
            "numpy_over_ours_n": np / n,
            "ours_1_thread_mvalues_per_s": values as f64 / one / 1e6,
        }));
    }
    let report = json!({
        "command": format!("cargo xtask bench-dequant --threads {threads}"),
        "file": GEMMA3_270M.file,
        "file_sha256": GEMMA3_270M.sha256,
        "threads": threads,
        "repeat": REPEAT,
        "statistic": "best of repeat, per type",
        "reference": {"gguf": reference["gguf"], "numpy": reference["numpy"]},
        "rows": rows,
        "bf16_conversion": single["bf16_conversion"],
    });
    let out = target.join("bench-dequant.json");
    fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("bench-dequant: wrote {} in {}", out.display(), seconds(start));
    Ok(())
}
