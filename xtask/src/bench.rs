//! `cargo xtask bench-reference`: our criterion `forward` group and Hugging Face
//! transformers' eager forward (`reference/bench_reference.py`) on the same GGUF weights,
//! token counts and thread count, in one run; then our criterion `gradients` group beside
//! Captum (`reference/bench_captum.py`), and the `ig_efficiency` example of explain-gradients
//! (adaptive versus uniform IG evaluations, peak memory as `n_steps` grows); then our
//! criterion `perturbation` group beside Captum's `FeatureAblation`
//! (`reference/bench_captum_perturbation.py`, also `cargo xtask bench-perturbation` alone),
//! our criterion `circuits` group beside TransformerLens's `get_act_patch_resid_pre`
//! (`reference/bench_circuits.py`, also `cargo xtask bench-circuits` alone),
//! and LXT 2.1's AttnLRP (`reference/lxt_reference.py` in the LXT reference environment)
//! beside our `attn_lrp` rows (also `cargo xtask bench-lrp` alone); prints the ratios and writes `target/bench-reference.json`.
//!
//! Threads: both sides get `OMP_NUM_THREADS=N` (libtorch sizes its default intra-op pool from
//! it, in tch as in PyTorch) and `EXPLAINABILITY_THREADS=N` (our benches call
//! `tch::set_num_threads` with it); the Python side also calls `torch.set_num_threads(N)`.

use std::fs;
use std::path::Path;
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

use crate::pins::{GEMMA3_270M, SMOLLM2};
use crate::project::{Project, Result, THREADS_ENV, output, run, seconds};

/// Token counts of the `forward` group's parameters.
const TOKENS: [u64; 2] = [8, 128];

/// `gradients` benchmarks timed beside Captum: (function, parameter, description).
const GRADIENT_CASES: [(&str, u64, &str); 5] = [
    ("ig_gl50", 5, "IG, 50 Gauss-Legendre steps, 5 tokens"),
    ("ig_gl50", 60, "IG, 50 Gauss-Legendre steps, 60 tokens"),
    ("saliency", 5, "saliency, 5 tokens"),
    ("gradient_x_input", 5, "gradient x input, 5 tokens"),
    ("generation_prompt_ig20", 10, "10-token continuation, IG 20 steps"),
];

/// `cargo bench -p benches --bench NAME [-- FILTER…]` with `threads` intra-op threads
/// (`OMP_NUM_THREADS` and [`THREADS_ENV`]).
fn criterion_command(
    project: &Project,
    bench: &str,
    filter: &[&str],
    threads: usize,
) -> std::process::Command {
    let threads = threads.to_string();
    let mut command = project.cargo();
    command.args(["bench", "-p", "benches", "--bench", bench]);
    if !filter.is_empty() {
        command.arg("--").args(filter);
    }
    command.env("OMP_NUM_THREADS", &threads).env(THREADS_ENV, &threads);
    command
}

/// Median time of one criterion benchmark of this run, in milliseconds (the median, not the
/// mean: on a shared 2-core machine a few iterations stall, and the mean follows them).
fn criterion_median_ms(
    target: &Path,
    group: &str,
    function: &str,
    tokens: u64,
    since: SystemTime,
) -> Result<f64> {
    let path = target
        .join("criterion")
        .join(group)
        .join(function)
        .join(tokens.to_string())
        .join("new")
        .join("estimates.json");
    let meta = fs::metadata(&path).map_err(|e| {
        format!("criterion wrote no {} ({e}); is the bench id right?", path.display())
    })?;
    if meta.modified()? < since {
        return Err(format!("{} is from an earlier run", path.display()).into());
    }
    let json: Value = serde_json::from_str(&fs::read_to_string(&path)?)?;
    let nanos = json["median"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("{} has no median.point_estimate", path.display()))?;
    Ok(nanos / 1e6)
}

/// Median time of one reference case, in milliseconds.
fn reference_median_ms(reference: &Value, tokens: u64, attentions: bool) -> Result<f64> {
    reference["results"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["tokens"].as_u64() == Some(tokens) && r["output_attentions"] == attentions)
        .and_then(|r| r["median_ms"].as_f64())
        .ok_or_else(|| {
            format!(
                "bench_reference.py reported no {tokens}-token case with attentions={attentions}"
            )
            .into()
        })
}

fn overhead_pct(plain: f64, capture: f64) -> f64 {
    (capture / plain - 1.0) * 100.0
}

/// Runs both benchmarks and reports; see the module documentation.
///
/// # Errors
/// When either benchmark fails or reports no result.
pub fn bench_reference(project: &Project, threads: usize) -> Result<()> {
    let start = Instant::now();
    let target = project.target_dir()?;
    let since = SystemTime::now();
    let threads_text = threads.to_string();

    println!("bench-reference: ours (criterion `forward`, {threads} threads)");
    let mut ours = criterion_command(project, "forward", &[], threads);
    run("criterion forward bench", &mut ours)?;

    println!("bench-reference: Hugging Face transformers eager forward, {threads} threads");
    let reference_path = target.join("bench-reference-hf.json");
    let mut hf = project.python();
    hf.arg("reference/bench_reference.py")
        .arg("--gguf")
        .arg(project.model_path(&SMOLLM2))
        .arg("--threads")
        .arg(&threads_text)
        .arg("--out")
        .arg(&reference_path)
        .env("OMP_NUM_THREADS", &threads_text)
        .env(THREADS_ENV, &threads_text);
    run("reference bench", &mut hf)?;
    let reference: Value = serde_json::from_str(&fs::read_to_string(&reference_path)?)?;

    let mut rows = Vec::new();
    let mut overhead = serde_json::Map::new();
    println!(
        "\n{:<30} {:>10} {:>14} {:>8}",
        "benchmark (HF: eager)", "ours ms", "HF ms", "HF/ours"
    );
    for tokens in TOKENS {
        let mut means = [(0.0, 0.0); 2];
        for (slot, (function, attentions)) in
            [("plain", false), ("capture_patterns", true)].into_iter().enumerate()
        {
            let ours_ms = criterion_median_ms(&target, "forward", function, tokens, since)?;
            let hf_ms = reference_median_ms(&reference, tokens, attentions)?;
            let id = format!("forward/{function}/{tokens}");
            println!("{id:<30} {ours_ms:>10.2} {hf_ms:>14.2} {:>8.2}", hf_ms / ours_ms);
            rows.push(json!({
                "id": id,
                "tokens": tokens,
                "capture_patterns": attentions,
                "hf_output_attentions": attentions,
                "ours_ms": ours_ms,
                "hf_ms": hf_ms,
                "hf_over_ours": hf_ms / ours_ms,
            }));
            means[slot] = (ours_ms, hf_ms);
        }
        let [(ours_plain, hf_plain), (ours_capture, hf_capture)] = means;
        overhead.insert(
            tokens.to_string(),
            json!({
                "ours_pct": overhead_pct(ours_plain, ours_capture),
                "hf_pct": overhead_pct(hf_plain, hf_capture),
            }),
        );
    }
    println!();
    for tokens in TOKENS {
        let o = &overhead[&tokens.to_string()];
        println!(
            "capture overhead at {tokens:>3} tokens: ours {:+.1} %, HF output_attentions {:+.1} %",
            o["ours_pct"].as_f64().unwrap_or(f64::NAN),
            o["hf_pct"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let gradients = gradients_beside_captum(project, &target, threads)?;
    let lrp = lrp_beside_lxt(project, &target, threads, since, &project.model_path(&SMOLLM2))?;
    let efficiency = ig_efficiency(project, threads)?;
    let perturbation = bench_perturbation(project, threads)?;
    let circuits = bench_circuits(project, threads)?;
    let report = json!({
        "command": format!("cargo xtask bench-reference --threads {threads}"),
        "threads": threads,
        "model": SMOLLM2.model_path,
        "dtype": "float32",
        "device": "cpu",
        "statistic": "median",
        "reference": {
            "torch": reference["torch"],
            "transformers": reference["transformers"],
            "attn_implementation": "eager",
        },
        "rows": rows,
        "capture_overhead": overhead,
        "gradients": gradients,
        "lrp": lrp,
        "ig_efficiency": efficiency,
        "perturbation": perturbation,
        "circuits": circuits,
    });
    let out = target.join("bench-reference.json");
    fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("bench-reference: wrote {} in {}", out.display(), seconds(start));
    Ok(())
}

/// `cargo xtask bench-lrp`: the AttnLRP rows of our criterion `gradients` group
/// ([`LRP_CASES`]) and LXT 2.1's AttnLRP on the same text, token counts and thread count, in one
/// run; prints LXT/ours and writes `target/bench-lrp.json` — on SmolLM2-135M, or with `gemma3`
/// on Gemma 3 270M (`target/bench-lrp-gemma3.json`; both sides take the first n tokens of the
/// same text, so the token counts agree although the two tokenisers' pieces may not).
///
/// # Errors
/// When either side fails or reports no result.
pub fn bench_lrp(project: &Project, threads: usize, gemma3: bool) -> Result<Value> {
    let start = Instant::now();
    let target = project.target_dir()?;
    let since = SystemTime::now();
    let (gguf, file, name) = if gemma3 {
        (project.chunked_model_path(&GEMMA3_270M), GEMMA3_270M.file, "bench-lrp-gemma3.json")
    } else {
        (project.model_path(&SMOLLM2), SMOLLM2.model_path, "bench-lrp.json")
    };
    println!("bench-lrp: ours on {file} (criterion `gradients`, AttnLRP rows, {threads} threads)");
    let mut ours = criterion_command(project, "gradients", &["attn_lrp"], threads);
    if gemma3 {
        ours.env(BENCH_MODEL_ENV, &gguf);
    }
    run("criterion gradients bench (attn_lrp)", &mut ours)?;
    let lrp = lrp_beside_lxt(project, &target, threads, since, &gguf)?;
    let model_flag = if gemma3 { " --model gemma3" } else { "" };
    let report = json!({
        "command": format!("cargo xtask bench-lrp --threads {threads}{model_flag}"),
        "threads": threads,
        "model": file,
        "statistic": "median",
        "lrp": lrp,
    });
    let out = target.join(name);
    fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("bench-lrp: wrote {} in {}", out.display(), seconds(start));
    Ok(report)
}

/// The model the criterion `gradients` group loads instead of SmolLM2 (benches/benches/gradients.rs).
const BENCH_MODEL_ENV: &str = "EXPLAINABILITY_BENCH_MODEL";

/// `gradients` benchmarks timed beside LXT 2.1 (`reference/lxt_reference.py --bench-out`, in
/// the LXT reference environment): (function, tokens, description).
const LRP_CASES: [(&str, u64, &str); 3] = [
    ("attn_lrp", 5, "AttnLRP, 5 tokens"),
    ("attn_lrp", 60, "AttnLRP, 60 tokens"),
    ("attn_lrp", 512, "AttnLRP, 512 tokens"),
];

/// LXT 2.1's AttnLRP on transformers 4.52.4 beside the `attn_lrp` rows of the criterion
/// `gradients` group that [`gradients_beside_captum`] ran in this run.
fn lrp_beside_lxt(
    project: &Project,
    target: &Path,
    threads: usize,
    since: SystemTime,
    gguf: &Path,
) -> Result<Value> {
    let threads_text = threads.to_string();
    println!("LXT 2.1 AttnLRP on transformers 4.52.4, {threads} threads");
    let lxt_path = target.join("bench-reference-lxt.json");
    let mut lxt = project.lxt_python();
    lxt.arg("reference/lxt_reference.py")
        .arg("--gguf")
        .arg(gguf)
        .args(["--rule", "attn_lrp", "--tokens", "5,60,512", "--threads"])
        .arg(&threads_text)
        .arg("--bench-out")
        .arg(&lxt_path)
        .env("OMP_NUM_THREADS", &threads_text)
        .env(THREADS_ENV, &threads_text);
    run("lxt bench", &mut lxt)?;
    let reference: Value = serde_json::from_str(&fs::read_to_string(&lxt_path)?)?;
    let mut rows = Vec::new();
    println!("\n{:<42} {:>10} {:>12} {:>10}", "benchmark (LXT)", "ours ms", "LXT ms", "LXT/ours");
    for (function, param, description) in LRP_CASES {
        let id = format!("gradients/{function}/{param}");
        let ours_ms = criterion_median_ms(target, "gradients", function, param, since)?;
        let lxt_ms = reference["results"][&id]["median_ms"]
            .as_f64()
            .ok_or_else(|| format!("lxt_reference.py reported no {id}"))?;
        println!("{description:<42} {ours_ms:>10.1} {lxt_ms:>12.1} {:>10.2}", lxt_ms / ours_ms);
        rows.push(json!({
            "id": id,
            "case": description,
            "ours_ms": ours_ms,
            "lxt_ms": lxt_ms,
            "lxt_over_ours": lxt_ms / ours_ms,
        }));
    }
    Ok(json!({ "lxt": reference["lxt"], "transformers": reference["transformers"], "rows": rows }))
}

/// Our criterion `gradients` group and `reference/bench_captum.py` in one run; the rows of
/// [`GRADIENT_CASES`] with both medians and the ratio.
fn gradients_beside_captum(project: &Project, target: &Path, threads: usize) -> Result<Value> {
    let since = SystemTime::now();
    let threads_text = threads.to_string();
    println!("bench-reference: ours (criterion `gradients`, {threads} threads)");
    let mut ours = criterion_command(project, "gradients", &[], threads);
    run("criterion gradients bench", &mut ours)?;
    println!("bench-reference: Captum on transformers, {threads} threads");
    let captum_path = target.join("bench-reference-captum.json");
    let mut captum = project.python();
    captum
        .arg("reference/bench_captum.py")
        .arg("--gguf")
        .arg(project.model_path(&SMOLLM2))
        .arg("--threads")
        .arg(&threads_text)
        .arg("--out")
        .arg(&captum_path)
        .env("OMP_NUM_THREADS", &threads_text)
        .env(THREADS_ENV, &threads_text);
    run("captum bench", &mut captum)?;
    let reference: Value = serde_json::from_str(&fs::read_to_string(&captum_path)?)?;
    let mut rows = Vec::new();
    println!(
        "\n{:<42} {:>10} {:>12} {:>10}",
        "benchmark (Captum)", "ours ms", "Captum ms", "Captum/ours"
    );
    for (function, param, description) in GRADIENT_CASES {
        let id = format!("gradients/{function}/{param}");
        let ours_ms = criterion_median_ms(target, "gradients", function, param, since)?;
        let captum_ms = reference["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"].as_str() == Some(id.as_str()))
            .and_then(|r| r["median_ms"].as_f64())
            .ok_or_else(|| format!("bench_captum.py reported no {id}"))?;
        println!(
            "{description:<42} {ours_ms:>10.1} {captum_ms:>12.1} {:>10.2}",
            captum_ms / ours_ms
        );
        rows.push(json!({
            "id": id,
            "case": description,
            "ours_ms": ours_ms,
            "captum_ms": captum_ms,
            "captum_over_ours": captum_ms / ours_ms,
        }));
    }
    Ok(json!({
        "captum": reference["captum"],
        "continuation": reference["continuation"],
        "rows": rows,
    }))
}

/// The `ig_efficiency` example of explain-gradients in both modes; its JSON reports.
fn ig_efficiency(project: &Project, threads: usize) -> Result<Value> {
    let threads_text = threads.to_string();
    let mut reports = serde_json::Map::new();
    for mode in ["adaptive", "memory"] {
        println!("bench-reference: ig_efficiency {mode}");
        let mut command = project.cargo();
        command
            .args([
                "run",
                "--release",
                "-p",
                "explain-gradients",
                "--example",
                "ig_efficiency",
                "--",
                mode,
            ])
            .env("OMP_NUM_THREADS", &threads_text)
            .env(THREADS_ENV, &threads_text);
        let stdout = output("ig_efficiency", &mut command)?;
        let value: Value = serde_json::from_str(&stdout)?;
        reports.insert(mode.to_string(), value["report"].clone());
    }
    Ok(Value::Object(reports))
}

/// Perturbation cases timed beside Captum: (function, description).
const PERTURBATION_CASES: [(&str, &str); 2] = [
    ("loo_replace0", "leave-one-out, Replace(0)"),
    ("windows4_replace0", "feature ablation, 4-token spans, Replace(0)"),
];

/// Largest difference between our attributions and Captum's allowed for a speed ratio to
/// count: both are differences of float32 log-probabilities of one prompt under the same
/// weights, computed by two implementations (batched matmuls reassociate sums).
const PERTURBATION_TOLERANCE: f64 = 1e-3;

/// Our criterion `perturbation` group and `reference/bench_captum_perturbation.py` in one run
/// (on the ids and target our bench wrote); the rows with both medians, the ratio, and the
/// largest attribution difference; the prefix-reuse saving. Writes
/// `target/bench-perturbation.json`.
///
/// # Errors
/// When either side fails, reports no result, or the attributions differ beyond
/// [`PERTURBATION_TOLERANCE`].
pub fn bench_perturbation(project: &Project, threads: usize) -> Result<Value> {
    let start = Instant::now();
    let target = project.target_dir()?;
    let since = SystemTime::now();
    let threads_text = threads.to_string();
    let ours_path = target.join("bench-perturbation-ours.json");
    println!("bench-perturbation: ours (criterion `perturbation`, {threads} threads)");
    let mut ours = criterion_command(project, "perturbation", &[], threads);
    ours.env("EXPLAINABILITY_BENCH_OUT", &ours_path);
    run("criterion perturbation bench", &mut ours)?;
    let ours_json: Value = serde_json::from_str(&fs::read_to_string(&ours_path)?)?;
    let tokens = ours_json["ids"].as_array().map(Vec::len).unwrap_or(0) as u64;

    println!("bench-perturbation: Captum FeatureAblation on transformers, {threads} threads");
    let captum_path = target.join("bench-perturbation-captum.json");
    let mut captum = project.python();
    captum
        .arg("reference/bench_captum_perturbation.py")
        .arg("--gguf")
        .arg(project.model_path(&SMOLLM2))
        .arg("--ours")
        .arg(&ours_path)
        .arg("--threads")
        .arg(&threads_text)
        .arg("--out")
        .arg(&captum_path)
        .env("OMP_NUM_THREADS", &threads_text)
        .env(THREADS_ENV, &threads_text);
    run("captum perturbation bench", &mut captum)?;
    let reference: Value = serde_json::from_str(&fs::read_to_string(&captum_path)?)?;

    let mut rows = Vec::new();
    println!(
        "\n{:<46} {:>10} {:>12} {:>12} {:>10}",
        "benchmark (Captum FeatureAblation)", "ours ms", "Captum ms", "Captum/ours", "max diff"
    );
    for (function, description) in PERTURBATION_CASES {
        let ours_ms = criterion_median_ms(&target, "perturbation", function, tokens, since)?;
        for per_eval in [1, 32] {
            let id = format!("perturbation/{function}/{tokens}/captum_per_eval_{per_eval}");
            let case = reference["results"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["id"].as_str() == Some(id.as_str()))
                .ok_or_else(|| format!("bench_captum_perturbation.py reported no {id}"))?;
            let captum_ms = case["median_ms"].as_f64().unwrap_or(f64::NAN);
            let diff = case["max_abs_diff_vs_ours"].as_f64().unwrap_or(f64::NAN);
            let label = format!("{description} (Captum per_eval {per_eval})");
            println!(
                "{label:<46} {ours_ms:>10.0} {captum_ms:>12.0} {:>12.2} {diff:>10.1e}",
                captum_ms / ours_ms
            );
            // NaN fails the comparison too
            if diff.is_nan() || diff > PERTURBATION_TOLERANCE {
                return Err(format!(
                    "{id}: attributions differ from ours by {diff} (tolerance \
                     {PERTURBATION_TOLERANCE}); the speed ratio would compare different work"
                )
                .into());
            }
            rows.push(json!({
                "id": id,
                "case": description,
                "captum_perturbations_per_eval": per_eval,
                "ours_ms": ours_ms,
                "captum_ms": captum_ms,
                "captum_over_ours": captum_ms / ours_ms,
                "max_abs_diff": diff,
                "ours_forward_equivalents": ours_json[function]["forward_equivalents"],
            }));
        }
    }
    let reuse_ms = criterion_median_ms(&target, "perturbation", "loo_delete", tokens, since)?;
    let full_ms =
        criterion_median_ms(&target, "perturbation", "loo_delete_no_reuse", tokens, since)?;
    let fe = |k: &str| ours_json[k]["forward_equivalents"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nprefix reuse, leave-one-out by deletion, {tokens} tokens: {reuse_ms:.0} ms vs \
         {full_ms:.0} ms without ({:.2}x), {:.1} vs {:.1} forward-equivalents",
        full_ms / reuse_ms,
        fe("loo_delete"),
        fe("loo_delete_no_reuse")
    );
    let report = json!({
        "command": format!("cargo xtask bench-perturbation --threads {threads}"),
        "threads": threads,
        "tokens": tokens,
        "model": SMOLLM2.model_path,
        "statistic": "median",
        "reference": {
            "torch": reference["torch"],
            "transformers": reference["transformers"],
            "captum": reference["captum"],
        },
        "rows": rows,
        "prefix_reuse": {
            "case": "leave-one-out, Delete",
            "reuse_ms": reuse_ms,
            "no_reuse_ms": full_ms,
            "speedup": full_ms / reuse_ms,
            "reuse_forward_equivalents": fe("loo_delete"),
            "no_reuse_forward_equivalents": fe("loo_delete_no_reuse"),
        },
    });
    let out = target.join("bench-perturbation.json");
    fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("bench-perturbation: wrote {} in {}", out.display(), seconds(start));
    Ok(report)
}

/// Largest difference between our patched metrics and TransformerLens's allowed for the speed
/// ratio to count: logit differences of float32 forwards by two implementations of the same
/// weights (the parity test holds them to 1e-4 on tiny models; SmolLM2's logits are ~10×
/// larger and 30 layers deep).
const CIRCUITS_TOLERANCE: f64 = 1e-2;

/// Our criterion `circuits` group and `reference/bench_circuits.py` (TransformerLens 4.3
/// `get_act_patch_resid_pre`, on the ids our bench wrote) in one run: the patching ratio, the
/// largest difference of the patched metrics, and AtP over every head in forward-equivalents
/// (its median ÷ the median of one forward, both from this criterion run). Writes
/// `target/bench-circuits.json`.
///
/// # Errors
/// When either side fails, reports no result, or the patched metrics differ beyond
/// [`CIRCUITS_TOLERANCE`].
pub fn bench_circuits(project: &Project, threads: usize) -> Result<Value> {
    let start = Instant::now();
    let target = project.target_dir()?;
    let since = SystemTime::now();
    let threads_text = threads.to_string();
    let ours_path = target.join("bench-circuits-ours.json");
    println!("bench-circuits: ours (criterion `circuits`, {threads} threads)");
    let mut ours = criterion_command(project, "circuits", &[], threads);
    ours.env("EXPLAINABILITY_BENCH_OUT", &ours_path);
    run("criterion circuits bench", &mut ours)?;
    let ours_json: Value = serde_json::from_str(&fs::read_to_string(&ours_path)?)?;
    let tokens = ours_json["clean"].as_array().map(Vec::len).unwrap_or(0) as u64;

    println!("bench-circuits: TransformerLens get_act_patch_resid_pre, {threads} threads");
    let tl_path = target.join("bench-circuits-tl.json");
    let mut tl = project.python();
    tl.arg("reference/bench_circuits.py")
        .arg("--gguf")
        .arg(project.model_path(&SMOLLM2))
        .arg("--ours")
        .arg(&ours_path)
        .arg("--threads")
        .arg(&threads_text)
        .arg("--out")
        .arg(&tl_path)
        .env("OMP_NUM_THREADS", &threads_text)
        .env(THREADS_ENV, &threads_text);
    run("TransformerLens circuits bench", &mut tl)?;
    let reference: Value = serde_json::from_str(&fs::read_to_string(&tl_path)?)?;

    let patch_ms = criterion_median_ms(&target, "circuits", "patch_resid_pre", tokens, since)?;
    let atp_ms = criterion_median_ms(&target, "circuits", "atp_head_z", tokens, since)?;
    let forward_ms = criterion_median_ms(&target, "circuits", "forward", tokens, since)?;
    let tl_ms = reference["median_ms"].as_f64().ok_or("bench_circuits.py reported no median_ms")?;
    let diff = reference["max_abs_diff_vs_ours"].as_f64().unwrap_or(f64::NAN);
    // NaN fails the comparison too
    if diff.is_nan() || diff > CIRCUITS_TOLERANCE {
        return Err(format!(
            "get_act_patch_resid_pre differs from ours by {diff} (tolerance \
             {CIRCUITS_TOLERANCE}); the speed ratio would compare different work"
        )
        .into());
    }
    let runs = reference["shape"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_u64).product::<u64>())
        .unwrap_or(0);
    println!(
        "\n{:<52} {:>10} {:>10} {:>8} {:>9}",
        "benchmark (TransformerLens 4.3)", "ours ms", "TL ms", "TL/ours", "max diff"
    );
    println!(
        "{:<52} {patch_ms:>10.0} {tl_ms:>10.0} {:>8.2} {diff:>9.1e}",
        format!("activation patching, resid_pre, {runs} runs, {tokens} tokens"),
        tl_ms / patch_ms
    );
    println!(
        "AtP over every head (attn.hook_z x position): {atp_ms:.1} ms = {:.2} forward-equivalents \
         (one forward {forward_ms:.1} ms)",
        atp_ms / forward_ms
    );
    let report = json!({
        "command": format!("cargo xtask bench-circuits --threads {threads}"),
        "threads": threads,
        "tokens": tokens,
        "model": SMOLLM2.model_path,
        "statistic": "median",
        "reference": {
            "transformer_lens": reference["transformer_lens"],
            "torch": reference["torch"],
            "transformers": reference["transformers"],
        },
        "patch_resid_pre": {
            "runs": runs,
            "ours_ms": patch_ms,
            "transformer_lens_ms": tl_ms,
            "transformer_lens_over_ours": tl_ms / patch_ms,
            "max_abs_diff": diff,
        },
        "atp_head_z": {
            "ours_ms": atp_ms,
            "forward_ms": forward_ms,
            "forward_equivalents": atp_ms / forward_ms,
        },
    });
    let out = target.join("bench-circuits.json");
    fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("bench-circuits: wrote {} in {}", out.display(), seconds(start));
    Ok(report)
}
