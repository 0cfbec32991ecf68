//! `cargo xtask bench-length`: time and peak resident memory of one gradient attribution
//! against sequence length, ours with the backward stored and recomputed block by block
//! (`long_context`, explain-gradients example) beside Captum on transformers
//! (`reference/bench_length_captum.py`) at the same lengths, on the same ids, one thread each,
//! every configuration in its own process so that its peak is its own. Writes
//! `target/bench-length/results.jsonl` (one line per configuration, kept across runs: a rerun
//! skips what is there), then the table and the charts (`bench_length_chart`, explain-viz
//! example) into the same folder.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::pins::SMOLLM2;
use crate::project::{Project, Result, THREADS_ENV, describe, run, seconds};

/// What `cargo xtask bench-length` takes.
pub struct Options {
    /// Sequence lengths.
    pub lengths: Vec<usize>,
    /// Methods (`saliency`, `gxi`, `ig`).
    pub methods: Vec<String>,
    /// Integration steps of `ig`.
    pub ig_steps: usize,
    /// `ig` only up to this length (it costs `ig_steps` gradients).
    pub ig_max_tokens: usize,
    /// Address-space cap of every process, GiB (an attribution over it fails and is reported
    /// as out of memory).
    pub cap_gib: f64,
    /// Leave out Captum.
    pub no_captum: bool,
}

impl Options {
    /// Parses `[--lengths 128,512,…] [--methods saliency,gxi,ig] [--ig-steps N]
    /// [--ig-max-tokens N] [--cap-gib G] [--no-captum]`.
    ///
    /// # Errors
    /// On an unknown flag, a flag without its value or a value that does not parse.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            lengths: vec![128, 512, 1024, 2048, 4096, 8192],
            methods: vec!["saliency".into(), "gxi".into(), "ig".into()],
            ig_steps: 8,
            ig_max_tokens: 4096,
            cap_gib: 16.0,
            no_captum: false,
        };
        let mut it = args.iter();
        let number = |flag: &str, v: Option<&String>| -> Result<usize> {
            let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
            Ok(v.parse().map_err(|_| format!("{flag} expects a number, got {v:?}"))?)
        };
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--lengths" => {
                    let v = it.next().ok_or("--lengths needs a comma-separated list")?;
                    options.lengths = v
                        .split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|_| format!("--lengths expects numbers, got {v:?}"))?;
                }
                "--methods" => {
                    let v = it.next().ok_or("--methods needs a comma-separated list")?;
                    options.methods = v.split(',').map(|m| m.trim().to_owned()).collect();
                    if let Some(bad) = options
                        .methods
                        .iter()
                        .find(|m| !["saliency", "gxi", "ig"].contains(&m.as_str()))
                    {
                        return Err(format!("--methods: unknown method {bad:?}").into());
                    }
                }
                "--ig-steps" => options.ig_steps = number(flag, it.next())?,
                "--ig-max-tokens" => options.ig_max_tokens = number(flag, it.next())?,
                "--cap-gib" => {
                    let v = it.next().ok_or("--cap-gib needs a value")?;
                    options.cap_gib =
                        v.parse().map_err(|_| format!("--cap-gib expects a number, got {v:?}"))?;
                }
                "--no-captum" => options.no_captum = true,
                other => return Err(format!("bench-length: unexpected argument {other:?}").into()),
            }
        }
        if options.lengths.is_empty() || options.lengths.contains(&0) {
            return Err("--lengths needs lengths of at least one token".into());
        }
        Ok(options)
    }
}

/// One configuration: who, how, which method, how long.
fn key(framework: &str, backward: &str, method: &str, tokens: usize) -> String {
    format!("{framework}/{backward}/{method}/{tokens}")
}

/// Runs every configuration not yet in the results file, then the table and charts.
///
/// # Errors
/// When a build, the chart example or writing the results fails (a configuration that fails
/// is recorded with its error, not fatal).
pub fn bench_length(project: &Project, options: &Options) -> Result<()> {
    let start = Instant::now();
    let out = project.target_dir()?.join("bench-length");
    fs::create_dir_all(&out)?;
    let results = out.join("results.jsonl");
    let done: BTreeSet<String> = fs::read_to_string(&results)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["key"].as_str().map(str::to_owned))
        .collect();
    println!("bench-length: building the long_context example (release)");
    run(
        "cargo build",
        project.cargo().args([
            "build",
            "--release",
            "-p",
            "explain-gradients",
            "--example",
            "long_context",
        ]),
    )?;
    let binary = project.target_dir()?.join("release").join("examples").join("long_context");
    let cap_kib = (options.cap_gib * 1024.0 * 1024.0) as u64;
    let gguf = project.model_path(&SMOLLM2);
    for method in &options.methods {
        for &tokens in &options.lengths {
            if method == "ig" && tokens > options.ig_max_tokens {
                continue;
            }
            let steps = options.ig_steps.to_string();
            let tokens_text = tokens.to_string();
            let mut runs: Vec<(&str, &str, Command)> = Vec::new();
            for backward in ["stored", "recompute"] {
                let mut ours = capped(cap_kib, &binary);
                ours.args([method.as_str(), backward, tokens_text.as_str(), steps.as_str()]);
                runs.push(("ours", backward, ours));
            }
            if !options.no_captum {
                let mut captum = capped(cap_kib, &project.venv_python());
                captum
                    .current_dir(project.root.join("reference"))
                    .arg("bench_length_captum.py")
                    .arg("--gguf")
                    .arg(&gguf)
                    .args(["--method", method.as_str(), "--tokens", tokens_text.as_str()])
                    .args(["--ig-steps", steps.as_str(), "--threads", "1"])
                    .arg("--cap-gib")
                    .arg(options.cap_gib.to_string())
                    .env("TQDM_DISABLE", "1");
                runs.push(("captum", "stored", captum));
            }
            for (framework, backward, mut command) in runs {
                let k = key(framework, backward, method, tokens);
                if done.contains(&k) {
                    continue;
                }
                command.env("OMP_NUM_THREADS", "1").env(THREADS_ENV, "1");
                let clock = Instant::now();
                let record = measure(&mut command, &k, framework, backward, method, tokens);
                println!("bench-length: {k}: {} ({})", summary(&record), seconds(clock));
                let mut file = fs::OpenOptions::new().create(true).append(true).open(&results)?;
                writeln!(file, "{record}")?;
            }
        }
    }
    println!("bench-length: table and charts");
    let mut chart = project.cargo();
    chart
        .args(["run", "--release", "-p", "explain-viz", "--example", "bench_length_chart", "--"])
        .arg(&results)
        .arg(&out);
    run("bench_length_chart", &mut chart)?;
    println!(
        "bench-length: done in {}; {} and the charts in {}",
        seconds(start),
        out.join("bench-length.md").display(),
        out.display()
    );
    Ok(())
}

/// `program` under an address-space cap of `cap_kib` (`ulimit -v`).
fn capped(cap_kib: u64, program: &Path) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("ulimit -v {cap_kib} && exec \"$0\" \"$@\"")).arg(program);
    command
}

/// Runs one configuration: its JSON line, or a record of how it failed.
fn measure(
    command: &mut Command,
    key: &str,
    framework: &str,
    backward: &str,
    method: &str,
    tokens: usize,
) -> Value {
    let base = json!({"key": key, "framework": framework, "backward": backward,
                      "method": method, "tokens": tokens});
    let merge = |mut extra: Value| {
        if let (Some(e), Some(b)) = (extra.as_object_mut(), base.as_object()) {
            for (k, v) in b {
                e.insert(k.clone(), v.clone());
            }
        }
        extra
    };
    match command.output() {
        Ok(o) if o.status.success() => {
            let stdout = String::from_utf8_lossy(&o.stdout);
            match stdout.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()) {
                Some(v) => merge(v),
                None => merge(json!({"error": "no JSON line on stdout"})),
            }
        }
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            let oom = tail.contains("allocate") || tail.to_lowercase().contains("memory");
            merge(json!({"error": tail, "oom": oom, "exit": o.status.code()}))
        }
        Err(e) => merge(json!({"error": format!("{}: {e}", describe(command))})),
    }
}

fn summary(record: &Value) -> String {
    if record["oom"].as_bool() == Some(true) {
        return "out of memory".into();
    }
    if let Some(e) = record["error"].as_str() {
        return format!("failed: {e}");
    }
    format!(
        "{:.1} s, peak {:.0} MiB",
        record["seconds"].as_f64().unwrap_or(f64::NAN),
        record["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
    )
}
