//! The subcommands: each loads what it needs, computes, and prints text (or JSON with
//! `--json`) on stdout; progress and warnings go to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use explainability::eval::{METRIC_NAMES, RandomControl};
use explainability::models::GgufFile;
use explainability::models::gguf::MetadataValue;
use explainability::{
    AnalysisBudget, Analyzer, AnyModel, AttentionAnalysis, ComprehensiveAnalysis, DEFAULT_METHODS,
    LanguageModel, LoadOptions, ModelComparison, Precision, load_with,
};
use serde::Serialize;

use crate::dataset::{Dataset, IndexedRecord, InputRecord, TargetSpec};
use crate::error::{CliError, CliResult};
use crate::job::{
    self, EvaluationSettings, Job, JobConfig, JobKind, MethodRow, RecordRow, ShardReport,
};
use crate::{Cli, Command, EvalArgs, JobArgs, MethodArgs};

/// Environment variable of the test hook that makes a dataset job exit abruptly after this
/// many records written by the process (to test resume without timing a `kill`).
pub const FAIL_AFTER_ENV: &str = "EXPLAIN_FAIL_AFTER";

/// Environment variable of the test hook that makes a dataset job stop working (sleep until
/// killed) after this many records written by the process, so that a test can `kill -9` it
/// at a known point.
pub const PAUSE_AFTER_ENV: &str = "EXPLAIN_PAUSE_AFTER";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrecisionArg {
    F32,
    Bf16,
}

/// Arguments of `explain analyze`.
#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Folder the report is written to.
    #[arg(long, default_value = "target/analysis")]
    out: PathBuf,
    /// Attribution methods, comma-separated (default: the analyzer's set).
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Skip the evaluation of the attributions (fidelity, completeness, comprehensibility).
    #[arg(long)]
    no_eval: bool,
    /// Precision of weights and activations.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Print the summary in Chinese as well.
    #[arg(long)]
    zh: bool,
    /// Add the model internals: logit lens and direct logit attribution of the prediction
    /// (decoders only).
    #[arg(long)]
    internals: bool,
    /// Compute every step exactly, whatever it costs (no budgets: exact attention flow, full
    /// evaluation, every method, per-layer matrices at any length).
    #[arg(long)]
    exact: bool,
    /// Edge budget of attention flow (exact within it, coarsened beyond).
    #[arg(long)]
    flow_max_edges: Option<u64>,
    /// Token-passes one attribution method may need (a method over it is skipped).
    #[arg(long)]
    attribution_budget: Option<u64>,
    /// Token-passes of the whole evaluation (reduced, then skipped, over it).
    #[arg(long)]
    evaluation_budget: Option<u64>,
}

/// Runs the command line.
///
/// # Errors
/// Whatever the command reports; see [`CliError::class`] for the exit codes.
pub fn run(cli: Cli) -> CliResult<()> {
    let json = cli.json;
    match cli.command {
        Command::Analyze(args) => analyze(&args, json),
        Command::Predict { text, k, model } => {
            let model = load(&model.path(), Precision::F32)?;
            let predictions = model.top_next_tokens(&text, k)?;
            if json {
                print_json(&serde_json::json!({ "text": text, "predictions": predictions }))
            } else {
                println!("{:>16} {:>8} {:>9}", "token", "prob.", "logit");
                for p in predictions {
                    println!(
                        "{:>16} {:>7.2}% {:>9.3}",
                        format!("{:?}", p.token),
                        100.0 * p.probability,
                        p.logit
                    );
                }
                Ok(())
            }
        }
        Command::Attribute { text, target, list, model, methods, job } => {
            if list {
                if json {
                    return print_json(&DEFAULT_METHODS);
                }
                DEFAULT_METHODS.iter().for_each(|m| println!("{m}"));
                return Ok(());
            }
            one_or_dataset(
                JobKind::Attribute,
                text,
                target,
                &model.path(),
                &methods,
                None,
                &job,
                json,
            )
        }
        Command::Evaluate { text, target, model, methods, eval, job } => one_or_dataset(
            JobKind::Evaluate,
            text,
            target,
            &model.path(),
            &methods,
            Some(&eval),
            &job,
            json,
        ),
        Command::Compare { text, models, k } => compare(&text, &models, k, json),
        Command::Inspect { model, no_load } => {
            inspect(&model.unwrap_or_else(explainability::smollm2_gguf_path), no_load, json)
        }
        Command::Merge { dir } => {
            let report = crate::merge::merge(&dir)?;
            if json {
                return print_json(&report);
            }
            println!(
                "merged {} shards, {} records ({} failed as a whole) into {} (sha256 {})",
                report.shards,
                report.records,
                report.failed_records,
                report.output.display(),
                report.sha256
            );
            for m in &report.methods {
                println!("  {:<24} {} succeeded, {} failed", m.method, m.succeeded, m.failed);
            }
            if let Some(e) = &report.evaluation {
                println!("\n{}", e.table());
            }
            Ok(())
        }
        Command::Serve { stdio: _, kind, model, methods, eval, job } => {
            crate::serve::serve(kind, &model.path(), &methods, &eval, &job)
        }
    }
}

/// Loads a model, saying how long it took on stderr.
///
/// # Errors
/// The loader's errors.
pub fn load(path: &Path, precision: Precision) -> CliResult<AnyModel> {
    let start = Instant::now();
    let model = load_with(path, LoadOptions { precision, ..LoadOptions::default() })?;
    eprintln!("loaded {} in {:.1} s", model.info().name, start.elapsed().as_secs_f64());
    Ok(model)
}

/// Prints `value` as pretty JSON.
///
/// # Errors
/// [`CliError::Output`] (never in practice).
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> CliResult<()> {
    let s = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Output(format!("cannot serialise the result: {e}")))?;
    println!("{s}");
    Ok(())
}

/// The job configuration of a command line (the input fields left empty for one text).
pub fn job_config(
    kind: JobKind,
    model: &dyn LanguageModel,
    model_path: &Path,
    methods: &MethodArgs,
    eval: Option<&EvalArgs>,
    job_args: &JobArgs,
) -> JobConfig {
    JobConfig {
        kind,
        model: job::model_identity(model, model_path),
        methods: methods.methods.clone(),
        seed: methods.seed,
        shards: 1,
        format: job_args.format,
        input_sha256: String::new(),
        input_records: 0,
        evaluation: match kind {
            JobKind::Evaluate => eval.map(|e| EvaluationSettings {
                control_draws: e.control_draws as usize,
                stability_samples: e.stability as usize,
                top_k: e.top_k as usize,
            }),
            JobKind::Attribute => None,
        },
        batch_size: job_args.batch_size as usize,
        code_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

#[allow(clippy::too_many_arguments)]
fn one_or_dataset(
    kind: JobKind,
    text: Option<String>,
    target: Option<String>,
    model_path: &Path,
    methods: &MethodArgs,
    eval: Option<&EvalArgs>,
    job_args: &JobArgs,
    json: bool,
) -> CliResult<()> {
    job::check_methods(&methods.methods)?;
    if methods.methods.is_empty() {
        return Err(CliError::Usage("--methods names no method".into()));
    }
    match (text, &job_args.input) {
        (Some(text), _) => {
            let model = load(model_path, Precision::F32)?;
            let config = job_config(kind, &model, model_path, methods, eval, job_args);
            let target = target.map(|t| match t.trim().parse::<i64>() {
                Ok(id) => TargetSpec::Id(id),
                Err(_) => TargetSpec::Token(t),
            });
            let record = IndexedRecord {
                index: 0,
                line: 0,
                record: InputRecord {
                    id: "text".into(),
                    text,
                    target,
                    continuation: None,
                    spans: None,
                },
            };
            let (row, timing) = job::process_record(&model, &config, &record);
            if json {
                print_json(&row)?;
            } else {
                print_row(&row, &timing.seconds);
            }
            if let Some(e) = &row.error {
                return Err(CliError::Input(e.clone()));
            }
            match row.methods.iter().find(|m| m.error.is_some()) {
                Some(m) => Err(method_failed(m)),
                None => Ok(()),
            }
        }
        (None, Some(input)) => {
            let out = job_args.out.as_ref().ok_or_else(|| {
                CliError::Usage("a dataset job needs --out DIR for its results".into())
            })?;
            if let Some(s) = &job_args.shard {
                job::parse_shard(s)?; // before the model loads
            }
            let model = load(model_path, Precision::F32)?;
            let job = build_job(kind, &model, model_path, methods, eval, job_args, input, out)?;
            let shards = selected_shards(job_args, job.config.shards)?;
            job.prepare()?;
            let mut reports: Vec<ShardReport> = Vec::new();
            for shard in shards {
                let report = job.run_shard(shard)?;
                if !json {
                    print_shard(&report);
                }
                reports.push(report);
            }
            if json {
                print_json(&serde_json::json!({
                    "out": out,
                    "bad_lines": job.dataset.bad_lines,
                    "shards": reports,
                }))?;
            }
            Ok(())
        }
        (None, None) => Err(CliError::Usage(
            "give a text (--text) or a JSONL dataset (--input and --out)".into(),
        )),
    }
}

fn method_failed(m: &MethodRow) -> CliError {
    CliError::Method(format!("{} failed: {}", m.method, m.error.clone().unwrap_or_default()))
}

/// Reads the dataset, reports bad lines on stderr and builds the job.
///
/// # Errors
/// Input errors; [`CliError::Input`] for a dataset without valid records.
#[allow(clippy::too_many_arguments)]
pub fn build_job<'a>(
    kind: JobKind,
    model: &'a dyn LanguageModel,
    model_path: &Path,
    methods: &MethodArgs,
    eval: Option<&EvalArgs>,
    job_args: &JobArgs,
    input: &Path,
    out: &Path,
) -> CliResult<Job<'a>> {
    let dataset = Dataset::read(input)?;
    for bad in &dataset.bad_lines {
        eprintln!("warning: {}:{}: skipped: {}", input.display(), bad.line, bad.message);
    }
    if dataset.records.is_empty() {
        return Err(CliError::Input(format!("{} holds no valid record", input.display())));
    }
    let shards = match (&job_args.shard, job_args.shards) {
        (Some(s), _) => job::parse_shard(s)?.1,
        (None, Some(n)) => n,
        (None, None) => 1,
    };
    job::check_shard(0, shards)?;
    let mut config = job_config(kind, model, model_path, methods, eval, job_args);
    config.shards = shards;
    config.input_sha256 = dataset.sha256.clone();
    config.input_records = dataset.records.len();
    let config_hash = config.hash()?;
    let hook = |var: &str| std::env::var(var).ok().and_then(|v| v.parse().ok());
    Ok(Job {
        model,
        config,
        config_hash,
        dataset,
        out: out.to_path_buf(),
        fail_after: hook(FAIL_AFTER_ENV),
        pause_after: hook(PAUSE_AFTER_ENV),
    })
}

/// The shards this process runs: `--shard I/N`, the index from the environment with
/// `--shards N`, or all.
///
/// # Errors
/// [`CliError::Usage`] for a bad shard or an index out of range.
pub fn selected_shards(job_args: &JobArgs, n: usize) -> CliResult<Vec<usize>> {
    if let Some(s) = &job_args.shard {
        return Ok(vec![job::parse_shard(s)?.0]);
    }
    if job_args.shards.is_some()
        && let Some(i) = job::shard_from_env()?
    {
        job::check_shard(i, n)?;
        return Ok(vec![i]);
    }
    Ok((0..n).collect())
}

fn print_shard(r: &ShardReport) {
    let status = match r.status {
        job::ShardStatus::Skipped => "already done, skipped".to_owned(),
        job::ShardStatus::Done if r.resumed_from > 0 => {
            format!("done (resumed after {} records)", r.resumed_from)
        }
        job::ShardStatus::Done => "done".to_owned(),
    };
    println!(
        "shard {}/{}: {} records, {} failed: {status}",
        r.shard, r.shards, r.records, r.failed
    );
}

fn print_row(row: &RecordRow, seconds: &std::collections::BTreeMap<String, f64>) {
    println!("text: {:?} ({} tokens)", row.text, row.tokens.len());
    if let Some(t) = &row.target_token {
        println!("explained next token: {t:?}");
    }
    let metric = |m: &MethodRow, name: &str| {
        METRIC_NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|k| m.metrics.as_ref().and_then(|v| v.get(k).copied().flatten()))
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.3}"))
    };
    for m in &row.methods {
        let time = seconds.get(&m.method).map(|s| format!(" ({s:.2} s)")).unwrap_or_default();
        if let Some(e) = &m.error {
            println!("\n{}: FAILED: {e}", m.method);
            continue;
        }
        println!("\n{}{time}", m.method);
        if let Some(scores) = &m.scores {
            let mut order: Vec<usize> = (0..scores.len()).collect();
            order.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()));
            for &i in order.iter().take(5) {
                println!("  {:>16} {:+.4}", format!("{:?}", row.tokens[i]), scores[i]);
            }
        }
        if let Some(d) = m.convergence_delta {
            println!("  convergence delta {d:+.4}");
        }
        if m.metrics.is_some() {
            let label = if m.method == RandomControl::NAME { " (mean of draws)" } else { "" };
            println!(
                "  comprehensiveness {}  sufficiency {}  deletion AUC {}  insertion AUC {}  gini {}{label}",
                metric(m, "aopc_comprehensiveness"),
                metric(m, "aopc_sufficiency"),
                metric(m, "deletion_auc"),
                metric(m, "insertion_auc"),
                metric(m, "gini"),
            );
        }
    }
}

fn compare(text: &str, paths: &[PathBuf], k: usize, json: bool) -> CliResult<()> {
    if paths.len() < 2 {
        return Err(CliError::Usage("compare needs at least two --model".into()));
    }
    let models: Vec<AnyModel> =
        paths.iter().map(|p| load(p, Precision::F32)).collect::<CliResult<_>>()?;
    let named: Vec<(String, &dyn LanguageModel)> = models
        .iter()
        .zip(paths)
        .map(|(m, p)| (p.display().to_string(), m as &dyn LanguageModel))
        .collect();
    let comparison = ModelComparison::new(named)?.top_k(k).progress(false).compare(text)?;
    if json {
        return print_json(&comparison);
    }
    println!("text: {:?}", comparison.text);
    for p in &comparison.predictions {
        let top: Vec<String> = p
            .top_k
            .iter()
            .map(|t| format!("{:?} {:.1}%", t.token, 100.0 * t.probability))
            .collect();
        println!("  {}: {}  (entropy {:.2} nats)", p.model, top.join(", "), p.entropy);
    }
    println!(
        "majority {:?} ({} of {} models){}",
        comparison.majority,
        comparison.majority_votes,
        comparison.models.len(),
        if comparison.all_agree {
            String::new()
        } else {
            format!("; disagreeing: {}", comparison.disagreeing.join(", "))
        }
    );
    Ok(())
}

#[derive(Serialize)]
struct GgufSummary {
    version: u32,
    architecture: Option<String>,
    metadata: Vec<(String, String)>,
    tensors: usize,
    tensor_types: Vec<(String, usize)>,
}

fn render(value: &MetadataValue) -> String {
    match value {
        MetadataValue::String(s) if s.chars().count() > 120 => {
            format!("{:?}… ({} bytes)", s.chars().take(120).collect::<String>(), s.len())
        }
        MetadataValue::String(s) => format!("{s:?}"),
        MetadataValue::Array(a) => match a.first() {
            Some(first) if a.len() > 8 => format!("[{} × {}]", a.len(), first.type_name()),
            _ => format!("[{}]", a.iter().map(render).collect::<Vec<_>>().join(", ")),
        },
        MetadataValue::Bool(b) => b.to_string(),
        MetadataValue::F32(v) => v.to_string(),
        MetadataValue::F64(v) => v.to_string(),
        other => other.as_i64().map_or_else(
            || other.as_u64().map_or_else(|| other.type_name().to_owned(), |v| v.to_string()),
            |v| v.to_string(),
        ),
    }
}

fn inspect(path: &Path, no_load: bool, json: bool) -> CliResult<()> {
    if !path.exists() {
        return Err(explainability::Error::PathNotFound { path: path.to_path_buf() }.into());
    }
    let gguf = if path.is_file() {
        let file = GgufFile::open(path)?;
        let mut types: std::collections::BTreeMap<String, usize> = Default::default();
        for t in file.tensor_infos() {
            *types.entry(t.type_name().to_owned()).or_default() += 1;
        }
        Some(GgufSummary {
            version: file.version(),
            architecture: file.architecture().ok().map(str::to_owned),
            metadata: file.metadata().iter().map(|(k, v)| (k.clone(), render(v))).collect(),
            tensors: file.tensor_infos().len(),
            tensor_types: types.into_iter().collect(),
        })
    } else {
        None
    };
    let info = if no_load { None } else { Some(load(path, Precision::F32)?.info().clone()) };
    if json {
        return print_json(&serde_json::json!({ "path": path, "gguf": gguf, "model": info }));
    }
    if let Some(info) = &info {
        println!("model {} ({:?})", info.name, info.architecture);
        println!(
            "  {} layers, d_model {}, {} heads ({} key/value heads) of width {}, MLP {}, \
             vocabulary {}, context {}, {}",
            info.n_layers,
            info.d_model,
            info.n_heads,
            info.n_kv_heads,
            info.d_head,
            info.d_mlp,
            info.vocab_size,
            info.max_positions,
            if info.causal { "causal" } else { "bidirectional" }
        );
    }
    if let Some(g) = &gguf {
        println!(
            "GGUF version {}, architecture {}",
            g.version,
            g.architecture.as_deref().unwrap_or("?")
        );
        println!("tensors: {}", g.tensors);
        for (t, n) in &g.tensor_types {
            println!("  {t:<8} {n}");
        }
        println!("metadata:");
        for (k, v) in &g.metadata {
            println!("  {k} = {v}");
        }
    }
    Ok(())
}

fn analyze(args: &AnalyzeArgs, json: bool) -> CliResult<()> {
    let precision = match args.precision {
        PrecisionArg::F32 => Precision::F32,
        PrecisionArg::Bf16 => Precision::Bf16,
    };
    let model =
        load(&args.model.clone().unwrap_or_else(explainability::smollm2_gguf_path), precision)?;
    let mut budget =
        if args.exact { AnalysisBudget::unlimited() } else { AnalysisBudget::default() };
    let mut attention = AttentionAnalysis::new();
    if args.exact {
        attention = attention.flow_max_edges(u64::MAX);
    }
    if let Some(edges) = args.flow_max_edges {
        attention = attention.flow_max_edges(edges);
    }
    if let Some(passes) = args.attribution_budget {
        budget.attribution_token_passes = passes;
    }
    if let Some(passes) = args.evaluation_budget {
        budget.evaluation_token_passes = passes;
    }
    let mut analyzer = Analyzer::new()
        .evaluate(!args.no_eval)
        .internals(args.internals)
        .budget(budget)
        .attention(attention);
    if let Some(methods) = &args.methods {
        job::check_methods(methods)?;
        let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
        analyzer = analyzer.methods(&methods);
    }
    let start = Instant::now();
    let analysis = analyzer.comprehensive_analysis(&model, &args.prompt)?;
    let elapsed = start.elapsed().as_secs_f64();
    let files = analysis.write_to(&args.out)?;
    if json {
        println!("{}", analysis.to_json()?);
        return Ok(());
    }
    print_summary(&analysis, args.zh);
    let degraded = analysis.degraded_steps();
    if !degraded.is_empty() {
        println!(
            "\nsteps approximated or skipped to stay within the budgets (--exact computes them):"
        );
        for s in degraded {
            println!("  {} ({}): {}", s.step, s.outcome.label(), s.outcome.explanation());
        }
    }
    println!(
        "\nanalysis took {elapsed:.1} s; wrote {} files into {}:",
        files.len(),
        args.out.display()
    );
    for f in files {
        println!("  {}", f.display());
    }
    Ok(())
}

fn print_summary(a: &ComprehensiveAnalysis, zh: bool) {
    println!("\ntext: {:?} ({} tokens)", a.text, a.tokens.len());
    println!("\nnext token:");
    for p in &a.top_k {
        println!("  {:>14} {:6.2}%", format!("{:?}", p.token), 100.0 * p.probability);
    }
    println!("\ntop tokens by attribution:");
    for e in a.attributions.explanations() {
        let top: Vec<String> =
            e.top_k(3).into_iter().map(|(_, t, s)| format!("{t:?} {s:+.3}")).collect();
        let delta = e.convergence_delta.map(|d| format!("  (delta {d:+.3})")).unwrap_or_default();
        println!("  {:<22} {}{delta}", e.method, top.join(", "));
    }
    for (method, failure) in a.attributions.failures() {
        println!("  {method:<22} FAILED: {}", failure.message);
    }
    let m = &a.attention.metrics.model;
    println!(
        "\nattention: entropy {:.2} nats, sparsity {:.0}%, locality {:.2}, mean distance {:.2}",
        m.entropy,
        100.0 * m.sparsity,
        m.locality,
        m.mean_distance
    );
    if let Some(evaluation) = &a.evaluation {
        println!(
            "\n{:<22} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}",
            "evaluation", "compr.", "suff.", "del.AUC", "ins.AUC", "Gini", "eff.tok"
        );
        for e in evaluation {
            let f = e.fidelity.as_ref();
            let num = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.3}"));
            // the random control's fidelity is its expectation over 8 seeded draws
            let name = if e.method == "random" { "random (8 draws)" } else { e.method.as_str() };
            println!(
                "{:<22} {:>8} {:>8} {:>8} {:>8} {:>6.3} {:>6.2}",
                name,
                num(f.map(|f| f.aopc_comprehensiveness)),
                num(f.map(|f| f.aopc_sufficiency)),
                num(f.map(|f| f.deletion_auc)),
                num(f.map(|f| f.insertion_auc)),
                e.comprehensibility.gini,
                e.comprehensibility.effective_tokens
            );
        }
    }
    println!("\nsummary:");
    for line in &a.report.summary_en {
        println!("  - {line}");
    }
    if zh {
        println!("\n摘要：");
        for line in &a.report.summary_zh {
            println!("  - {line}");
        }
    }
    println!("\nrecommendations:");
    if a.report.recommendations.is_empty() {
        println!("  - none: no rule fired");
    }
    for f in &a.report.recommendations {
        println!("  - [{}] {}", f.code, f.en);
        if zh {
            println!("    {}", f.zh);
        }
    }
}
