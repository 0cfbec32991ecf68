//! The faithfulness-versus-cost benchmark (`cargo xtask faithfulness`; results in
//! docs/faithfulness.md): every attribution method of ours and the anchors' own implementations
//! (Captum, read from the JSONL `reference/faithfulness_anchors.py` writes) on the same prompts,
//! scored by the same evaluator (ERASER AOPC comprehensiveness and sufficiency with Delete,
//! deletion / insertion AUC, faithfulness correlation, leave-one-out τ), each with a paired
//! bootstrap interval against the 8-draw random control, and cost in forward-equivalents (CPU
//! time of the explanation over the CPU time of one no-grad forward of the same prompt in the
//! same framework, so that the two frameworks' speeds cancel and a busy machine does not
//! stretch either; wall time where no CPU clock is available) and wall seconds.
//!
//! ```text
//! cargo run --release -p explainability --example faithfulness -- [--model MODEL.gguf] \
//!     --prompts crates/explain-eval/data/factual_prompts.jsonl [--anchors target/faithfulness/anchors.jsonl] \
//!     [--anchors target/faithfulness/anchors-lxt.jsonl] \
//!     [--limit N] [--methods saliency,leave_one_out] [--out target/faithfulness] [--explain-only]
//! ```
//!
//! `--model` takes any model `load` takes (default: SmolLM2-135M; `cargo xtask faithfulness
//! --model gemma3` runs Gemma 3 270M); the reports name it by its file name.
//!
//! With `--long FILE` (crates/explain-eval/data/long_contexts.jsonl, `--long-limit N`) it asks
//! instead which sentence of a long context gets the credit: every context has one sentence
//! that supports the answer (see reference/long_contexts.py); each method's token scores are
//! summed per sentence (perturbation methods perturb whole sentences and give each its score),
//! and the gold sentence's rank is reported (hit@1, mean reciprocal rank, paired against the
//! 8-draw random control) with the cost; written to `OUT/long_contexts.md` / `.json`.
//!
//! Writes `OUT/ours.jsonl` (our explanations and their costs, one line per prompt: a rerun with
//! the same prompts and methods resumes after the last complete line), `OUT/records.jsonl` (the
//! evaluator's records), `OUT/faithfulness.json` (summary,
//! costs, verdicts), `OUT/faithfulness.md` (the tables of docs/faithfulness.md) and
//! `OUT/faithfulness.svg` / `.png` (faithfulness against cost).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use explainability::{
    Error, Explainer, Explanation, ForwardOptions, Framework, Hooks, LanguageModel, Result, Target,
    core::{process_cpu_seconds, resume_jsonl},
    eval::{
        CONTROL_METRICS, ControlVerdict, EvaluationRecord, Evaluator, FidelityConfig, METRIC_NAMES,
        MetricsConfig, PrecomputedExplainer, compare_paired,
    },
    gradients::{Baseline, IntegratedGradients},
    load,
    ndarray::Array1,
    smollm2_gguf_path, tch,
    viz::charts::{ChartOptions, LabelledPoint, labelled_scatter},
};
use serde_json::{Value, json};

/// Our methods, by their registered names (IG three ways: from EOS, zero and mean embeddings).
const OURS: &[&str] = &[
    "saliency",
    "gradient_x_input",
    "smoothgrad",
    "integrated_gradients",
    "ig_zero",
    "ig_mean",
    "attn_lrp",
    "cp_lrp",
    "attention_last_layer",
    "attention_rollout",
    "leave_one_out",
    "shapley_sampling",
    "kernel_shap",
    "lime",
    "context_cite",
];

/// The faithfulness metric verdicts are decided on (higher is better).
const PRIMARY: &str = "aopc_comprehensiveness";

/// "Clearly lower cost": at most this fraction of the anchor's forward-equivalents.
const CLEARLY_CHEAPER: f64 = 0.5;

struct Args {
    /// The model (a GGUF file or Hugging Face folder; default SmolLM2-135M).
    model: PathBuf,
    prompts: PathBuf,
    /// JSONL files of the anchors' explanations (Captum's, LXT's), each read in turn.
    anchors: Vec<PathBuf>,
    out: PathBuf,
    limit: Option<usize>,
    methods: Vec<String>,
    long: Option<PathBuf>,
    long_limit: Option<usize>,
    /// Explain only the prompts from this index on and stop before scoring: a shard of the run
    /// for a second process, its `ours.jsonl` lines appended to the first's afterwards.
    from: usize,
    /// Explain (into `OUT/ours.jsonl`, resumable) and stop before scoring, so that the anchors
    /// can run in another process meanwhile; a later run without it scores.
    explain_only: bool,
    /// Score only prompts `a..b` into `OUT/records-a-b.jsonl` and stop (a scoring shard).
    score: Option<(usize, usize)>,
    /// With `score`: only these methods, and no random control (re-scoring methods whose
    /// records failed).
    score_methods: Option<Vec<String>>,
    /// Build the summary and report from every `OUT/records*.jsonl` (shards merged) instead
    /// of scoring.
    merge: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        model: smollm2_gguf_path(),
        prompts: PathBuf::from("crates/explain-eval/data/factual_prompts.jsonl"),
        anchors: Vec::new(),
        out: PathBuf::from("target/faithfulness"),
        limit: None,
        methods: OURS.iter().map(|s| (*s).to_owned()).collect(),
        long: None,
        long_limit: None,
        from: 0,
        explain_only: false,
        score: None,
        score_methods: None,
        merge: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value =
            || it.next().ok_or_else(|| Error::invalid_argument(format!("{flag} needs a value")));
        match flag.as_str() {
            "--model" => args.model = value()?.into(),
            "--prompts" => args.prompts = value()?.into(),
            "--anchors" => args.anchors.push(value()?.into()),
            "--out" => args.out = value()?.into(),
            "--limit" => {
                let v = value()?;
                args.limit = Some(v.parse().map_err(|_| {
                    Error::invalid_argument(format!("--limit {v:?} is not a count"))
                })?);
            }
            "--long" => args.long = Some(value()?.into()),
            "--score" => {
                let v = value()?;
                let range =
                    v.split_once("..").and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
                args.score = Some(range.filter(|(a, b)| a < b).ok_or_else(|| {
                    Error::invalid_argument(format!("--score {v:?} is not a range a..b"))
                })?);
            }
            "--score-methods" => {
                args.score_methods = Some(
                    value()?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                );
            }
            "--merge" => args.merge = true,
            "--explain-only" => args.explain_only = true,
            "--from" => {
                let v = value()?;
                args.from = v.parse().map_err(|_| {
                    Error::invalid_argument(format!("--from {v:?} is not an index"))
                })?;
            }
            "--long-limit" => {
                let v = value()?;
                args.long_limit = Some(v.parse().map_err(|_| {
                    Error::invalid_argument(format!("--long-limit {v:?} is not a count"))
                })?);
            }
            "--methods" => {
                args.methods =
                    value()?.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            }
            other => return Err(Error::invalid_argument(format!("unknown argument {other:?}"))),
        }
    }
    Ok(args)
}

/// The `"text"` (or `"prompt"`) of every line of a JSONL file; with `limit`, that many evenly
/// spaced ones (every category of a file sorted by category), as the anchors' script picks.
fn read_texts(path: &Path, limit: Option<usize>) -> Result<Vec<String>> {
    let content = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut texts = Vec::new();
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::Json { path: path.to_path_buf(), source: e })?;
        let Some(text) = value.get("text").or_else(|| value.get("prompt")).and_then(Value::as_str)
        else {
            return Err(Error::invalid_argument(format!(
                "{}: a line has no \"text\" or \"prompt\" string",
                path.display()
            )));
        };
        texts.push(text.to_owned());
    }
    Ok(match limit {
        Some(n) if n < texts.len() => (0..n).map(|i| texts[i * texts.len() / n].clone()).collect(),
        _ => texts,
    })
}

/// Wall time and process CPU time of a piece of work, in seconds.
#[derive(Clone, Copy)]
struct Cost {
    wall: f64,
    /// `None` where the CPU clock cannot be read.
    cpu: Option<f64>,
}

impl Cost {
    /// Runs `work` and measures it.
    fn of<T>(work: impl FnOnce() -> T) -> (T, Cost) {
        let (start, start_cpu) = (Instant::now(), process_cpu_seconds());
        let out = work();
        let cpu = start_cpu.zip(process_cpu_seconds()).map(|(a, b)| b - a);
        (out, Cost { wall: start.elapsed().as_secs_f64(), cpu })
    }

    /// From an anchors' record: `seconds` and, when present, `cpu_seconds`.
    fn from_json(value: &Value, wall: &str, cpu: &str) -> Option<Cost> {
        Some(Cost { wall: value[wall].as_f64()?, cpu: value[cpu].as_f64() })
    }

    /// This cost in units of `forward`: CPU time over CPU time when both sides have it (one
    /// compute thread: the work done, however busy the machine), wall over wall otherwise.
    fn forward_equivalents(self, forward: Cost) -> f64 {
        match (self.cpu, forward.cpu) {
            (Some(c), Some(f)) if f > 0.0 => c / f,
            _ => self.wall / forward.wall,
        }
    }
}

/// Median wall and median CPU time of one no-grad forward of `ids` over 5 runs (after one
/// warm-up).
fn forward_cost(model: &dyn LanguageModel, ids: &[i64]) -> Result<Cost> {
    let _guard = tch::no_grad_guard();
    let input = tch::Tensor::from_slice(ids).unsqueeze(0);
    model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new())?;
    let (mut wall, mut cpu) = (Vec::with_capacity(5), Vec::with_capacity(5));
    for _ in 0..5 {
        let (out, cost) =
            Cost::of(|| model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new()));
        out?;
        wall.push(cost.wall);
        cpu.extend(cost.cpu);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let cpu = (cpu.len() == 5).then(|| median(cpu));
    Ok(Cost { wall: median(wall), cpu })
}

/// One prompt explained by every method, each with its cost: the forward's cost and a JSON
/// value per method (`method`, `wall`, `cpu`, and `explanation` or `error`).
fn explain_prompt(
    model: &dyn LanguageModel,
    framework: &Framework,
    ids: &[i64],
    methods: &[String],
) -> Result<(Cost, Vec<Value>)> {
    let forward = forward_cost(model, ids)?;
    let mut out = Vec::with_capacity(methods.len());
    for method in methods {
        let (explained, cost) =
            Cost::of(|| framework.explain_ids(model, ids, method, &Target::argmax()));
        out.push(match explained {
            Ok(e) => json!({"method": method, "wall": cost.wall, "cpu": cost.cpu,
                            "explanation": e}),
            Err(e) => json!({"method": method, "wall": cost.wall, "cpu": cost.cpu,
                             "error": e.to_string()}),
        });
    }
    Ok((forward, out))
}

/// The method names of a resumable line's `"methods"` array.
fn line_methods(line: &Value) -> Vec<&str> {
    line["methods"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["method"].as_str()).collect())
        .unwrap_or_default()
}

/// Per method: the explanations and their costs (seconds, forward-equivalents) per prompt.
#[derive(Default)]
struct Timed {
    explanations: Vec<Explanation>,
    seconds: Vec<f64>,
    forward_equivalents: Vec<f64>,
    failures: usize,
}

impl Timed {
    fn mean(values: &[f64]) -> f64 {
        values.iter().sum::<f64>() / values.len().max(1) as f64
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    tch::set_num_threads(1);
    let model = load(&args.model)?;
    // The model as the reports name it: its file (or folder) name.
    let label = args
        .model
        .file_stem()
        .map_or_else(|| args.model.display().to_string(), |s| s.to_string_lossy().into_owned());
    if let Some(path) = &args.long {
        let report = long_contexts(&model, &label, path, args.long_limit, &args.out)?;
        println!("{report}");
        return Ok(());
    }
    let texts = read_texts(&args.prompts, args.limit)?;
    if texts.is_empty() {
        return Err(Error::invalid_argument(format!("{} has no prompts", args.prompts.display())));
    }
    let mut framework = Framework::with_defaults();
    framework.register_as("ig_zero", IntegratedGradients::adaptive(Baseline::Zero));
    framework.register_as("ig_mean", IntegratedGradients::adaptive(Baseline::MeanEmbedding));
    for method in &args.methods {
        framework.get(method)?;
    }

    // 1. Our explanations, timed; one line per prompt in OUT/ours.jsonl, so that a rerun with
    // the same prompts and methods resumes after the last complete line.
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let ours_path = args.out.join("ours.jsonl");
    let (done, mut ours_file) =
        resume_jsonl(&ours_path, args.from, texts.len().saturating_sub(args.from), |i, v| {
            texts.get(i).map(String::as_str) == v["text"].as_str()
                && line_methods(v) == args.methods
        })?;
    if !done.is_empty() {
        eprintln!("resuming after {} prompts of {}", done.len(), ours_path.display());
    }
    let mut timed: BTreeMap<String, Timed> = BTreeMap::new();
    let mut forward_s = Vec::with_capacity(texts.len());
    let mut all_ids = Vec::with_capacity(texts.len());
    let started = Instant::now();
    for (index, text) in texts.iter().enumerate().skip(args.from) {
        let ids = model.encode(text, true)?;
        let line = match done.get(index - args.from) {
            Some(line) => line.clone(),
            None => {
                let (forward, methods) = explain_prompt(&model, &framework, &ids, &args.methods)?;
                let line = json!({
                    "index": index,
                    "text": text,
                    "forward": {"wall": forward.wall, "cpu": forward.cpu},
                    "methods": methods,
                });
                std::io::Write::write_all(&mut ours_file, format!("{line}\n").as_bytes())
                    .map_err(|e| Error::io(&ours_path, e))?;
                eprintln!(
                    "explained {}/{} prompts ({:.0} s)",
                    index + 1,
                    texts.len(),
                    started.elapsed().as_secs_f64()
                );
                line
            }
        };
        let forward = Cost::from_json(&line["forward"], "wall", "cpu")
            .ok_or_else(|| Error::invalid_argument("ours.jsonl: a line without its forward"))?;
        forward_s.push(forward.wall);
        for m in line["methods"].as_array().into_iter().flatten() {
            let method = m["method"].as_str().unwrap_or_default().to_owned();
            let entry = timed.entry(method.clone()).or_default();
            match (m.get("explanation"), Cost::from_json(m, "wall", "cpu")) {
                (Some(e), Some(cost)) if !e.is_null() => {
                    let mut e: Explanation = serde_json::from_value(e.clone()).map_err(|e| {
                        Error::invalid_argument(format!("ours.jsonl: {method}: {e}"))
                    })?;
                    // AttnLRP and CP-LRP explain the logit (as LXT does); every method is scored
                    // against the same log-probability removal curves.
                    if let explainability::Target::Token { output, .. } = &mut e.target {
                        *output = explainability::TargetOutput::LogProb;
                    }
                    entry.seconds.push(cost.wall);
                    entry.forward_equivalents.push(cost.forward_equivalents(forward));
                    entry.explanations.push(e);
                }
                _ => {
                    entry.failures += 1;
                    eprintln!("{method} failed on prompt {index}: {}", m["error"]);
                }
            }
        }
        all_ids.push(ids);
    }

    if args.from > 0 {
        eprintln!(
            "explained prompts {}..{} into {}; append its lines to the first shard's and rerun \
             that one to score all",
            args.from,
            texts.len(),
            ours_path.display()
        );
        return Ok(());
    }
    if args.explain_only {
        eprintln!(
            "explained {} prompts into {}; rerun without --explain-only to score",
            texts.len(),
            ours_path.display()
        );
        return Ok(());
    }

    // 2. The anchors' explanations, on the same ids and target.
    for path in &args.anchors {
        read_anchors(&model, path, &texts, &all_ids, &mut timed)?;
    }
    if !args.anchors.is_empty() {
        for (name, t) in timed.iter_mut().filter(|(n, _)| !args.methods.contains(n)) {
            t.failures = texts.len() - t.explanations.len();
            if t.failures > 0 {
                eprintln!("{name}: no explanation for {} of {} prompts", t.failures, texts.len());
            }
        }
    }

    // 3. One evaluator for all of them.
    let explainers: Vec<PrecomputedExplainer> = timed
        .iter()
        .map(|(name, t)| PrecomputedExplainer::new(name.clone(), t.explanations.iter().cloned()))
        .collect();
    let refs: Vec<&dyn Explainer> = explainers.iter().map(|e| e as &dyn Explainer).collect();
    // The costs were measured above with one thread; scoring is not timed, so it may use every
    // core. Faithfulness correlation (32 random subsets per explanation, more than half of the
    // scoring's forwards on these short prompts) is left out: the benchmark's metrics are
    // AOPC, deletion / insertion AUC and leave-one-out τ.
    // FAITHFULNESS_SCORE_THREADS: for scoring shards run side by side.
    let cores = std::env::var("FAITHFULNESS_SCORE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
    tch::set_num_threads(i32::try_from(cores).unwrap_or(1));
    eprintln!("scoring {} explanations per prompt with {cores} threads", timed.len());
    let config = MetricsConfig {
        fidelity: FidelityConfig { faithfulness_subsets: 0, ..FidelityConfig::causal_lm() },
        stability: None,
        randomisation: None,
        ..MetricsConfig::default()
    };
    let records_path = args.out.join("records.jsonl");
    if let Some((a, b)) = args.score {
        let b = b.min(texts.len());
        let chosen: Vec<&dyn Explainer> = match &args.score_methods {
            Some(names) => {
                refs.iter().copied().filter(|e| names.iter().any(|n| n == e.name())).collect()
            }
            None => refs.clone(),
        };
        let mut evaluator = Evaluator::new(chosen, config);
        if args.score_methods.is_some() {
            evaluator.control = None;
        }
        // The evaluator numbers the shard's prompts from 0; the merge adds `a` back, read
        // from the file's name.
        let path = args.out.join(format!("records-shard-{a}-{b}.jsonl"));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut writer = std::io::LineWriter::new(file);
        evaluator.evaluate(&model, &texts[a..b], &mut writer)?;
        eprintln!("scored prompts {a}..{b} into {}; --merge builds the report", path.display());
        return Ok(());
    }
    let summary = if args.merge {
        let mut methods: Vec<String> = timed.keys().cloned().collect();
        methods.push(explainability::eval::RandomControl::NAME.to_owned());
        merge_records(&args.out, &records_path, &methods, texts.len())?
    } else {
        let evaluator = Evaluator::new(refs, config);
        let file = std::fs::File::create(&records_path).map_err(|e| Error::io(&records_path, e))?;
        let mut writer = std::io::BufWriter::new(file);
        let summary = evaluator.evaluate(&model, &texts, &mut writer)?;
        std::io::Write::flush(&mut writer).map_err(|e| Error::io(&records_path, e))?;
        summary
    };
    println!("{}", summary.table());

    // 4. Per (method, metric): (example, value) pairs, from the records.
    let records =
        std::fs::read_to_string(&records_path).map_err(|e| Error::io(&records_path, e))?;
    let mut values: BTreeMap<(String, &str), Vec<(usize, f64)>> = BTreeMap::new();
    for line in records.lines() {
        let record: EvaluationRecord = serde_json::from_str(line)
            .map_err(|e| Error::Json { path: records_path.clone(), source: e })?;
        if record.draw.is_some() {
            continue; // the control's per-draw records; its mean is in the summary
        }
        if let Some(metrics) = record.metrics {
            for (name, value) in metrics.scalars() {
                if let Some(v) = value {
                    values
                        .entry((record.method.clone(), name))
                        .or_default()
                        .push((record.index, v));
                }
            }
        }
    }
    let report =
        write_report(&args.out, &label, &summary, &timed, &values, &forward_s, texts.len())?;
    println!("{report}");
    Ok(())
}

/// Reads the anchors' JSONL into `timed`, checking token ids and target against ours.
fn read_anchors(
    model: &dyn LanguageModel,
    path: &Path,
    texts: &[String],
    all_ids: &[Vec<i64>],
    timed: &mut BTreeMap<String, Timed>,
) -> Result<()> {
    let content = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line)
            .map_err(|e| Error::Json { path: path.to_path_buf(), source: e })?;
        let bad = |what: &str| Error::invalid_argument(format!("{}: {what}", path.display()));
        // Matched by text: an anchors file of another selection (or a run cut short) serves
        // the prompts it has; the others count as the anchor's failures.
        let text = record["text"].as_str().ok_or_else(|| bad("a record has no text"))?;
        let Some(index) = texts.iter().position(|t| t == text) else { continue };
        let ids = &all_ids[index];
        let theirs: Vec<i64> =
            record["ids"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
        if theirs != *ids {
            return Err(bad(&format!(
                "transformers tokenised prompt {index} as {theirs:?}, we as {ids:?}"
            )));
        }
        let _guard = tch::no_grad_guard();
        let input = tch::Tensor::from_slice(ids).unsqueeze(0);
        let out = model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new())?;
        let target = Target::argmax().resolve(&out.logits)?;
        let their_target = record["target_id"].as_i64().ok_or_else(|| bad("no target_id"))?;
        let Target::Token { token: explainability::TargetToken::Id(ours), .. } = target else {
            return Err(bad("the argmax target did not resolve to a token"));
        };
        if ours != their_target {
            return Err(bad(&format!(
                "prompt {index}: transformers' argmax is token {their_target}, ours {ours}"
            )));
        }
        let forward = Cost::from_json(&record, "forward_seconds", "forward_cpu_seconds")
            .ok_or_else(|| bad("no forward_seconds"))?;
        let tokens = model.token_strings(ids)?;
        let Some(methods) = record["methods"].as_object() else { return Err(bad("no methods")) };
        for (name, m) in methods {
            let scores: Vec<f64> =
                m["scores"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
            let cost = Cost::from_json(m, "seconds", "cpu_seconds")
                .ok_or_else(|| bad("a method has no seconds"))?;
            let entry = timed.entry(name.clone()).or_default();
            let e = Explanation::new(
                name.clone(),
                ids.clone(),
                tokens.clone(),
                Array1::from(scores),
                target.clone(),
            )?;
            entry.seconds.push(cost.wall);
            entry.forward_equivalents.push(cost.forward_equivalents(forward));
            entry.explanations.push(e);
        }
    }
    Ok(())
}

/// The markdown tables and the chart; returns the markdown.
#[allow(clippy::too_many_arguments)]
fn write_report(
    out: &Path,
    model: &str,
    summary: &explainability::eval::EvaluationSummary,
    timed: &BTreeMap<String, Timed>,
    values: &BTreeMap<(String, &str), Vec<(usize, f64)>>,
    forward_s: &[f64],
    prompts: usize,
) -> Result<String> {
    let is_anchor = |m: &str| m.starts_with("captum_") || m.starts_with("lxt_");
    let cost = |m: &str| timed.get(m).map_or(f64::NAN, |t| Timed::mean(&t.forward_equivalents));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{prompts} prompts, {model} (f32), one thread; one no-grad forward takes \
         {:.1} ms on average here. Cost: mean forward-equivalents (the explanation's CPU time over \
         the CPU time of one forward of the same prompt in the same framework; wall over wall where \
         no CPU clock is available) and mean wall seconds. Each metric: mean, \
         then the paired difference from the 8-draw random control with its 95 % bootstrap interval \
         (better / ≈ / worse).\n",
        1e3 * Timed::mean(forward_s)
    );
    let mut header = "| method | cost (fwd-eq.) | seconds |".to_owned();
    let mut rule = "|---|---:|---:|".to_owned();
    // The control metrics this run computed.
    let metrics: Vec<(&str, bool)> = CONTROL_METRICS
        .iter()
        .copied()
        .filter(|(m, _)| values.keys().any(|(_, metric)| metric == m))
        .collect();
    for (metric, higher) in &metrics {
        let _ = write!(header, " {metric} ({}) |", if *higher { "↑" } else { "↓" });
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    let mut rows: Vec<(&String, &Timed)> = timed.iter().collect();
    rows.sort_by(|a, b| cost(a.0).total_cmp(&cost(b.0)));
    for (name, t) in &rows {
        let label = if is_anchor(name) { format!("*{name}*") } else { (*name).clone() };
        let _ = write!(md, "| {label} | {:.1} | {:.3} |", cost(name), Timed::mean(&t.seconds));
        for (metric, _) in &metrics {
            let mean = summary.get(name, metric).map_or(f64::NAN, |s| s.mean);
            let verdict = summary
                .control_check(metric)
                .and_then(|c| c.comparisons.iter().find(|c| c.method == **name))
                .map_or(String::new(), |c| {
                    let v = match c.verdict {
                        ControlVerdict::Better => "better",
                        ControlVerdict::Indistinguishable => "≈",
                        ControlVerdict::Worse => "worse",
                    };
                    format!(
                        " ({:+.2} [{:+.2}, {:+.2}] {v})",
                        c.difference.mean, c.difference.ci_low, c.difference.ci_high
                    )
                });
            let _ = write!(md, " {mean:.3}{verdict} |");
        }
        let _ = writeln!(md);
    }
    if let Some(control) = summary.control.as_deref() {
        let _ = write!(md, "| {control} | — | — |");
        for (metric, _) in &metrics {
            let mean = summary.get(control, metric).map_or(f64::NAN, |s| s.mean);
            let _ = write!(md, " {mean:.3} |");
        }
        let _ = writeln!(md);
    }

    // Each anchor against our methods on the primary metric.
    let _ = writeln!(
        md,
        "\n**Anchors against ours** on {PRIMARY} (paired by prompt): an anchor is *beaten* when one \
         of our methods is more faithful (interval above 0) at no more cost, *matched* when one is \
         at least as faithful (interval not below 0) at ≤ {CLEARLY_CHEAPER}× its cost.\n"
    );
    let _ = writeln!(md, "| anchor | cost | {PRIMARY} | verdict | by |\n|---|---:|---:|---|---|");
    let higher = CONTROL_METRICS.iter().find(|(m, _)| *m == PRIMARY).is_none_or(|(_, h)| *h);
    let mut verdicts = Vec::new();
    for anchor in timed.keys().filter(|m| is_anchor(m)) {
        let anchor_values = values.get(&(anchor.clone(), PRIMARY)).map_or(&[][..], Vec::as_slice);
        // The most faithful of ours that qualifies (largest paired difference), beaten first.
        let mut beaten: Option<(String, explainability::eval::SummaryStats)> = None;
        let mut matched: Option<(String, explainability::eval::SummaryStats)> = None;
        for ours in timed.keys().filter(|m| !is_anchor(m)) {
            let ours_values = values.get(&(ours.clone(), PRIMARY)).map_or(&[][..], Vec::as_slice);
            let Some(c) = compare_paired(ours, ours_values, anchor_values, higher, 1000, 0) else {
                continue;
            };
            let slot = if c.verdict == ControlVerdict::Better && cost(ours) <= cost(anchor) {
                &mut beaten
            } else if c.verdict != ControlVerdict::Worse
                && cost(ours) <= CLEARLY_CHEAPER * cost(anchor)
            {
                &mut matched
            } else {
                continue;
            };
            if slot.as_ref().is_none_or(|(_, d)| c.difference.mean > d.mean) {
                *slot = Some((ours.clone(), c.difference));
            }
        }
        let anchor_mean = summary.get(anchor, PRIMARY).map_or(f64::NAN, |s| s.mean);
        let (verdict, by) = match (&beaten, &matched) {
            (Some((m, d)), _) => (
                "beaten",
                format!(
                    "{m} ({:+.2} [{:+.2}, {:+.2}], {:.1} fwd-eq.)",
                    d.mean,
                    d.ci_low,
                    d.ci_high,
                    cost(m)
                ),
            ),
            (None, Some((m, d))) => (
                "matched at lower cost",
                format!(
                    "{m} ({:+.2} [{:+.2}, {:+.2}], {:.1} fwd-eq.)",
                    d.mean,
                    d.ci_low,
                    d.ci_high,
                    cost(m)
                ),
            ),
            (None, None) => ("NOT beaten", String::new()),
        };
        let _ = writeln!(
            md,
            "| {anchor} | {:.1} | {anchor_mean:.3} | {verdict} | {by} |",
            cost(anchor)
        );
        verdicts.push(json!({ "anchor": anchor, "verdict": verdict, "by": by }));
    }

    // The chart: primary metric against log10 cost, one labelled point per method, the
    // random control as a reference line.
    let points: Vec<LabelledPoint> = rows
        .iter()
        .map(|(name, _)| LabelledPoint {
            label: (*name).clone(),
            group: if name.starts_with("captum_") {
                "Captum 0.9".to_owned()
            } else if name.starts_with("lxt_") {
                "LXT 2.1".to_owned()
            } else {
                "ours".to_owned()
            },
            x: cost(name).log10(),
            y: summary.get(name, PRIMARY).map_or(f64::NAN, |s| s.mean),
        })
        .collect();
    let control = summary
        .control
        .as_deref()
        .and_then(|c| summary.get(c, PRIMARY))
        .map(|s| ("random control", s.mean));
    let svg = labelled_scatter(
        &points,
        control,
        "cost: log10 forward-equivalents",
        &format!("{PRIMARY} (higher is more faithful)"),
        &ChartOptions::titled(format!("Faithfulness against cost, {model}, {prompts} prompts")),
    );
    let svg_path = out.join("faithfulness.svg");
    std::fs::write(&svg_path, svg.to_string()).map_err(|e| Error::io(&svg_path, e))?;
    svg.write_png(out.join("faithfulness.png"), 2.0)?;
    let md_path = out.join("faithfulness.md");
    std::fs::write(&md_path, &md).map_err(|e| Error::io(&md_path, e))?;
    let costs: BTreeMap<&String, Value> = timed
        .iter()
        .map(|(m, t)| {
            (m, json!({ "forward_equivalents": cost(m), "seconds": Timed::mean(&t.seconds), "failures": t.failures }))
        })
        .collect();
    let json_path = out.join("faithfulness.json");
    let document = json!({
        "prompts": prompts,
        "metrics": METRIC_NAMES,
        "summary": summary,
        "costs": costs,
        "anchor_verdicts": verdicts,
    });
    std::fs::write(&json_path, serde_json::to_vec_pretty(&document).unwrap_or_default())
        .map_err(|e| Error::io(&json_path, e))?;
    Ok(md)
}

/// One long context of reference/long_contexts.py.
struct LongContext {
    id: String,
    prompt: String,
    subject: String,
    answer: String,
    gold: usize,
    sentences: usize,
}

fn read_long(path: &Path, limit: Option<usize>) -> Result<Vec<LongContext>> {
    let content = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for line in content.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| Error::Json { path: path.to_path_buf(), source: e })?;
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let count = |k: &str| v[k].as_u64().map(|n| n as usize);
        let (Some(id), Some(prompt), Some(subject), Some(answer), Some(gold), Some(sentences)) = (
            text("id"),
            text("prompt"),
            text("subject"),
            text("answer"),
            count("gold"),
            count("sentences"),
        ) else {
            return Err(Error::invalid_argument(format!(
                "{}: a line lacks id, prompt, subject, answer, gold or sentences",
                path.display()
            )));
        };
        out.push(LongContext { id, prompt, subject, answer, gold, sentences });
    }
    out.truncate(limit.unwrap_or(usize::MAX));
    Ok(out)
}

/// The methods of the long-context question: (name, whether its scores are per sentence).
///
/// Budgets are smaller than the short prompts' (a forward of ≈ 600 tokens costs ≈ 1.3 CPU-s on
/// one thread): SmoothGrad 8 samples, IG 8 fixed steps, and 32 coalitions each for KernelSHAP,
/// LIME and ContextCite (ContextCite's authors report a good surrogate from 32 ablations).
/// Shapley value sampling is left out here: even one antithetic pair of orders over 61
/// sentences took 48 forward-equivalents on the first context, more than KernelSHAP, LIME and
/// ContextCite together, and the short prompts measure it.
fn long_methods() -> Vec<(&'static str, Box<dyn Explainer>, bool)> {
    use explainability::attention::AttentionExplainer;
    use explainability::gradients::{GradientXInput, RelevancePropagation, Saliency, SmoothGrad};
    use explainability::perturbation::{
        ContextCiteOptions, FeatureKind, PerturbationExplainer, PerturbationMethod,
    };
    let sentences =
        |m: PerturbationMethod| PerturbationExplainer::new(m).with_features(FeatureKind::Sentences);
    let cite = ContextCiteOptions { ablations: 32, ..ContextCiteOptions::default() };
    vec![
        ("saliency", Box::new(Saliency::default()), false),
        ("gradient_x_input", Box::new(GradientXInput), false),
        ("smoothgrad_8", Box::new(SmoothGrad { n_samples: 8, ..SmoothGrad::default() }), false),
        ("ig_eos_8", Box::new(IntegratedGradients::new(Baseline::Eos, 8)), false),
        ("attn_lrp", Box::new(RelevancePropagation::attn_lrp()), false),
        ("cp_lrp", Box::new(RelevancePropagation::cp_lrp()), false),
        ("attention_last_layer", Box::new(AttentionExplainer::last_layer()), false),
        ("attention_rollout", Box::new(AttentionExplainer::rollout()), false),
        ("leave_one_out_sentences", Box::new(sentences(PerturbationMethod::FeatureAblation)), true),
        (
            "kernel_shap_sentences_32",
            Box::new(sentences(PerturbationMethod::KernelShap { samples: 32, seed: 0 })),
            true,
        ),
        (
            "lime_sentences_32",
            Box::new(sentences(PerturbationMethod::Lime {
                samples: 32,
                kernel_width: 1.0,
                seed: 0,
            })),
            true,
        ),
        (
            "context_cite_32",
            Box::new(sentences(PerturbationMethod::ContextCite {
                ablations: cite.ablations,
                keep_probability: cite.keep_probability,
                alpha: cite.alpha,
                holdout_fraction: cite.holdout_fraction,
                seed: cite.seed,
            })),
            true,
        ),
    ]
}

/// Rank (1 = first) of `gold` among `scores`, ties counted against it.
fn rank_of(scores: &[f64], gold: usize) -> usize {
    let g = scores[gold];
    1 + scores.iter().enumerate().filter(|&(i, &s)| i != gold && s >= g).count()
}

/// One long context: whether the model answers it from its gold sentence and, if so, every
/// method's rank of the gold sentence with its cost, and the random control's.
fn long_context(
    model: &dyn LanguageModel,
    index: usize,
    context: &LongContext,
    methods: &[(&'static str, Box<dyn Explainer>, bool)],
) -> Result<Value> {
    use explainability::eval::RandomExplainer;
    use explainability::perturbation::FeatureKind;
    let ids = model.encode(&context.prompt, true)?;
    let answer = *model.encode(&context.answer, false)?.first().ok_or(Error::EmptyText)?;
    let input = tch::Tensor::from_slice(&ids).unsqueeze(0);
    let argmax = {
        let _guard = tch::no_grad_guard();
        let out = model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new())?;
        out.logits.get(0).get(-1).argmax(-1, false).int64_value(&[])
    };
    if argmax != answer {
        // Answered from elsewhere than the context: no gold sentence to find.
        return Ok(json!({"index": index, "id": context.id, "kept": false, "tokens": ids.len()}));
    }
    let tokens = model.token_strings(&ids)?;
    let spans = FeatureKind::Sentences.spans(&tokens)?;
    if spans.len() != context.sentences + 1 {
        return Err(Error::invalid_argument(format!(
            "{}: {} sentences by the tokens, {} + the question in the file",
            context.id,
            spans.len(),
            context.sentences
        )));
    }
    let gold_text = model.decode(&ids[spans[context.gold].clone()])?;
    if !gold_text.contains(&context.subject) || !gold_text.contains(context.answer.trim()) {
        return Err(Error::invalid_argument(format!(
            "{}: sentence {} is {gold_text:?}, not the gold one",
            context.id, context.gold
        )));
    }
    let forward = forward_cost(model, &ids)?;
    let context_spans = &spans[..context.sentences];
    let sentence_scores = |scores: &Array1<f64>, grouped: bool| -> Vec<f64> {
        context_spans
            .iter()
            .map(|r| {
                let sum: f64 = r.clone().map(|i| scores[i]).sum();
                if grouped { sum / r.len() as f64 } else { sum }
            })
            .collect()
    };
    let mut results = Vec::with_capacity(methods.len());
    for (name, explainer, grouped) in methods {
        let (explained, cost) = Cost::of(|| explainer.explain_ids(model, &ids, &Target::argmax()));
        results.push(match explained {
            Ok(e) => {
                let rank = rank_of(&sentence_scores(&e.scores, *grouped), context.gold);
                eprintln!(
                    "  {name}: gold sentence ranked {rank}, {:.1} s, {:.0} forward-equivalents",
                    cost.wall,
                    cost.forward_equivalents(forward)
                );
                json!({"method": name, "rank": rank, "seconds": cost.wall, "cpu": cost.cpu,
                       "forward_equivalents": cost.forward_equivalents(forward)})
            }
            Err(e) => {
                eprintln!("  {name} failed on {}: {e}", context.id);
                json!({"method": name, "error": e.to_string()})
            }
        });
    }
    // The control: 8 seeded random draws.
    let mut draws = Vec::with_capacity(8);
    for seed in 0..8 {
        let e = RandomExplainer::new(seed).explain_ids(model, &ids, &Target::argmax())?;
        draws.push(rank_of(&sentence_scores(&e.scores, false), context.gold));
    }
    Ok(json!({
        "index": index, "id": context.id, "kept": true, "tokens": ids.len(),
        "forward": {"wall": forward.wall, "cpu": forward.cpu},
        "methods": results, "control_ranks": draws,
    }))
}

/// One method on one long context.
struct LongResult {
    context: usize,
    reciprocal_rank: f64,
    hit: f64,
    seconds: f64,
    forward_equivalents: f64,
}

fn long_contexts(
    model: &dyn LanguageModel,
    label: &str,
    path: &Path,
    limit: Option<usize>,
    out: &Path,
) -> Result<String> {
    use explainability::eval::summarize;
    let contexts = read_long(path, limit)?;
    let methods = long_methods();
    let names: Vec<&str> = methods.iter().map(|m| m.0).collect();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let lines_path = out.join("long.jsonl");
    let (done, mut file) = resume_jsonl(&lines_path, 0, contexts.len(), |i, v| {
        contexts.get(i).map(|c| c.id.as_str()) == v["id"].as_str()
            && (v["kept"].as_bool() != Some(true) || line_methods(v) == names)
    })?;
    if !done.is_empty() {
        eprintln!("resuming after {} contexts of {}", done.len(), lines_path.display());
    }
    let mut results: BTreeMap<String, Vec<LongResult>> = BTreeMap::new();
    let (mut kept, mut tokens_seen) = (0, Vec::new());
    let started = Instant::now();
    for (c, context) in contexts.iter().enumerate() {
        let line = match done.get(c) {
            Some(line) => line.clone(),
            None => {
                let line = long_context(model, c, context, &methods)?;
                std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes())
                    .map_err(|e| Error::io(&lines_path, e))?;
                line
            }
        };
        if line["kept"].as_bool() == Some(true) {
            kept += 1;
            tokens_seen.push(line["tokens"].as_u64().unwrap_or(0));
            for m in line["methods"].as_array().into_iter().flatten() {
                let (Some(name), Some(rank)) = (m["method"].as_str(), m["rank"].as_u64()) else {
                    continue; // a failure, reported when it happened
                };
                results.entry(name.to_owned()).or_default().push(LongResult {
                    context: c,
                    reciprocal_rank: 1.0 / rank as f64,
                    hit: f64::from(u8::from(rank == 1)),
                    seconds: m["seconds"].as_f64().unwrap_or(f64::NAN),
                    forward_equivalents: m["forward_equivalents"].as_f64().unwrap_or(f64::NAN),
                });
            }
            let draws: Vec<u64> = line["control_ranks"]
                .as_array()
                .map(|d| d.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let n = draws.len().max(1) as f64;
            results.entry("random_control".to_owned()).or_default().push(LongResult {
                context: c,
                reciprocal_rank: draws.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / n,
                hit: draws.iter().filter(|&&r| r == 1).count() as f64 / n,
                seconds: 0.0,
                forward_equivalents: 0.0,
            });
        }
        if done.get(c).is_none() {
            eprintln!(
                "context {}/{} ({} kept, {:.0} s)",
                c + 1,
                contexts.len(),
                kept,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if kept == 0 {
        return Err(Error::invalid_argument(
            "the model answered no context from its gold sentence",
        ));
    }
    let control: Vec<(usize, f64)> = results
        .get("random_control")
        .into_iter()
        .flatten()
        .map(|r| (r.context, r.reciprocal_rank))
        .collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{kept} of {} contexts answered from their gold sentence ({}–{} tokens, 61 sentences \
         each); {label}, one thread. Sentence score: the sum of its token scores \
         (perturbation methods over sentences: the sentence's own score). Budgets per context: \
         SmoothGrad 8 samples, IG 8 steps, 32 coalitions for \
         KernelSHAP, LIME and ContextCite. Reciprocal rank of the \
         gold sentence: mean, and paired difference from the 8-draw random control (95 % \
         bootstrap interval).\n",
        contexts.len(),
        tokens_seen.iter().min().unwrap_or(&0),
        tokens_seen.iter().max().unwrap_or(&0),
    );
    let _ = writeln!(
        md,
        "| method | hit@1 | MRR | MRR − control | cost (fwd-eq.) | seconds |\n|---|---:|---:|---|---:|---:|"
    );
    let mut rows: Vec<(&String, &Vec<LongResult>)> = results.iter().collect();
    let mean = |v: &[LongResult], f: fn(&LongResult) -> f64| {
        v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
    };
    rows.sort_by(|a, b| {
        mean(b.1, |r| r.reciprocal_rank).total_cmp(&mean(a.1, |r| r.reciprocal_rank))
    });
    let mut document = Vec::new();
    for (name, v) in rows {
        let rr: Vec<(usize, f64)> = v.iter().map(|r| (r.context, r.reciprocal_rank)).collect();
        let versus = if name == "random_control" {
            "—".to_owned()
        } else {
            compare_paired(name, &rr, &control, true, 1000, 0).map_or(String::new(), |c| {
                let verdict = match c.verdict {
                    ControlVerdict::Better => "better",
                    ControlVerdict::Indistinguishable => "≈",
                    ControlVerdict::Worse => "worse",
                };
                format!(
                    "{:+.3} [{:+.3}, {:+.3}] {verdict}",
                    c.difference.mean, c.difference.ci_low, c.difference.ci_high
                )
            })
        };
        let hits: Vec<f64> = v.iter().map(|r| r.hit).collect();
        let hit = summarize(&hits, 1000, 1);
        let _ = writeln!(
            md,
            "| {name} | {:.2} [{:.2}, {:.2}] | {:.3} | {versus} | {:.1} | {:.2} |",
            hit.mean,
            hit.ci_low,
            hit.ci_high,
            mean(v, |r| r.reciprocal_rank),
            mean(v, |r| r.forward_equivalents),
            mean(v, |r| r.seconds)
        );
        document.push(json!({
            "method": name,
            "contexts": v.len(),
            "hit_at_1": hit,
            "mrr": mean(v, |r| r.reciprocal_rank),
            "forward_equivalents": mean(v, |r| r.forward_equivalents),
            "seconds": mean(v, |r| r.seconds),
        }));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let md_path = out.join("long_contexts.md");
    std::fs::write(&md_path, &md).map_err(|e| Error::io(&md_path, e))?;
    let json_path = out.join("long_contexts.json");
    let doc = json!({ "contexts": contexts.len(), "kept": kept, "methods": document });
    std::fs::write(&json_path, serde_json::to_vec_pretty(&doc).unwrap_or_default())
        .map_err(|e| Error::io(&json_path, e))?;
    Ok(md)
}

/// The summary of every `records*.jsonl` in `out` (scoring shards, re-scored methods): for each
/// (prompt, method, draw) the record with metrics wins over one with an error; the control's
/// draws are averaged per prompt and metric, as the evaluator does. Writes the merged records
/// to `merged` (sorted by prompt, method, draw).
fn merge_records(
    out: &Path,
    merged: &Path,
    methods: &[String],
    prompts: usize,
) -> Result<explainability::eval::EvaluationSummary> {
    use explainability::eval::{EvaluationSummary, MetricValues};
    let mut best: BTreeMap<(usize, String, Option<usize>), EvaluationRecord> = BTreeMap::new();
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("records") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    for path in &files {
        // records-shard-A-B.jsonl numbers its prompts from A.
        let offset: usize = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("records-shard-"))
            .and_then(|n| n.split('-').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        for line in text.lines() {
            // A torn last line (a stopped run) is skipped.
            let Ok(mut record) = serde_json::from_str::<EvaluationRecord>(line) else { continue };
            record.index += offset;
            if record.index >= prompts {
                continue;
            }
            let key = (record.index, record.method.clone(), record.draw);
            let better =
                record.metrics.is_some() || best.get(&key).is_none_or(|r| r.metrics.is_none());
            if better {
                best.insert(key, record);
            }
        }
    }
    eprintln!("merged {} records from {} files", best.len(), files.len());
    let control = methods.len() - 1;
    let mut values: MetricValues = BTreeMap::new();
    let mut failures: BTreeMap<String, usize> = methods.iter().map(|m| (m.clone(), 0)).collect();
    // (prompt) → per metric (sum, count) over the control's draws
    let mut draws: BTreeMap<usize, Vec<(f64, usize)>> = BTreeMap::new();
    for ((index, method, draw), record) in &best {
        let Some(m) = methods.iter().position(|x| x == method) else { continue };
        let Some(metrics) = &record.metrics else { continue };
        let scalars = metrics.scalars();
        if draw.is_some() {
            let sums = draws.entry(*index).or_insert_with(|| vec![(0.0, 0); scalars.len()]);
            for ((sum, count), (_, value)) in sums.iter_mut().zip(scalars) {
                if let Some(v) = value {
                    *sum += v;
                    *count += 1;
                }
            }
        } else {
            for (k, (_, value)) in scalars.into_iter().enumerate() {
                if let Some(v) = value {
                    values.entry((m, k)).or_default().push((*index, v));
                }
            }
        }
    }
    for (index, sums) in &draws {
        for (k, (sum, count)) in sums.iter().enumerate() {
            if *count > 0 {
                values.entry((control, k)).or_default().push((*index, sum / *count as f64));
            }
        }
    }
    for (m, method) in methods.iter().enumerate() {
        let scored: std::collections::BTreeSet<usize> = if m == control {
            draws.keys().copied().collect()
        } else {
            best.iter()
                .filter(|((_, x, d), r)| x == method && d.is_none() && r.metrics.is_some())
                .map(|((i, _, _), _)| *i)
                .collect()
        };
        failures.insert(method.clone(), prompts - scored.len());
    }
    let mut text = String::new();
    for record in best.values() {
        text.push_str(&serde_json::to_string(record).unwrap_or_default());
        text.push('\n');
    }
    std::fs::write(merged, text).map_err(|e| Error::io(merged, e))?;
    Ok(EvaluationSummary::from_values(
        methods.to_vec(),
        Some(control),
        prompts,
        failures,
        &values,
        1000,
        0,
    ))
}
