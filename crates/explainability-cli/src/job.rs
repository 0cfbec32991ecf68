//! Dataset jobs and the shard contract.
//!
//! **Shards.** A job cuts the valid records of its input into a fixed number `N` of logical
//! shards, independent of how many workers run them: shard `I` holds the records with index
//! in `[I·n/N, (I+1)·n/N)` (contiguous blocks of the input order, so that merging
//! concatenates parts in shard order and gets the input order back). `N` is part of the job's
//! configuration and never changes on resume; workers can come and go.
//!
//! **Seeds.** Every seeded method gets `seed = sha256(run seed, record id, method)` (first 8
//! bytes, little-endian) before each record ([`record_seed`]): a record's result depends on
//! nothing else — not on the worker, the shard count or the order of records.
//!
//! **Files.** In the output folder `DIR`:
//! - `_job.json`: the job configuration and its hash; a run against a folder holding another
//!   configuration is refused, naming what differs;
//! - `_partial/part-I-of-N.jsonl`: one line per finished record (its row and its timings),
//!   appended and flushed as the shard runs; a rerun drops a torn last line and continues
//!   from the first record without a complete line;
//! - `_tmp/part-I-of-N.<pid>.parquet`, written, synced and renamed to
//!   `part-I-of-N.parquet` (or `.jsonl` with `--format jsonl`), then
//!   `_manifest/part-I-of-N.json` (records, output sha256, config hash, input sha256, code
//!   version) written the same way; a rerun skips a shard whose manifest exists and whose
//!   part matches it;
//! - `_timings/part-I-of-N.jsonl`: seconds per record and method. Timings are kept out of
//!   the parts, so that a part's bytes depend only on the inputs and the configuration: the
//!   same job run by one process, by several, or resumed after a crash writes byte-identical
//!   parts and merged results (on the same hardware, libtorch build and `--threads`).
//!
//! **Batches.** With `--batch-size B > 1`, a shard's records run in consecutive windows of
//! `B ×` [`BATCHES_PER_WINDOW`] records; the methods that batch inputs run each window in
//! batches of similar length ([`process_records`]), and the window's lines are appended when
//! it is done. The grouping depends only on the window's records, and a resumed run
//! recomputes the batches of its missing records whole, so the bytes stay those of an
//! uninterrupted run. `B` is part of the configuration (a batch's float summation order
//! differs from one record's in the last bits).
//!
//! A failing record is written with its error and never stops the run.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use explainability::eval::{
    ExampleMetrics, METRIC_NAMES, MetricsConfig, RandomControl, RandomExplainer, StabilityConfig,
    completeness, comprehensibility, metrics_of_explanation, random_control_fidelity,
};
use explainability::perturbation::{FeatureKind, PerturbationExplainer};
use explainability::{ExplainInput, Explanation, Framework, LanguageModel, length_batches};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataset::{Dataset, IndexedRecord, InputRecord, file_sha256, hex, resolve_target};
use crate::error::{CliError, CliResult};
use crate::table;

/// What a job computes per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Attributions of every method.
    Attribute,
    /// Attributions and their metrics, with the random control.
    Evaluate,
}

/// Format of the parts and of the merged result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Apache Parquet (one row per record).
    Parquet,
    /// JSON lines (one row per record).
    Jsonl,
}

impl Format {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        }
    }
}

/// Settings of an evaluation job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSettings {
    /// Draws of the random control.
    pub control_draws: usize,
    /// Stability samples (0: not measured).
    pub stability_samples: usize,
    /// `k` of the completeness top-k share.
    pub top_k: usize,
}

/// Everything that determines a job's results; its hash names the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    /// What is computed.
    pub kind: JobKind,
    /// The model's facts (name, architecture, sizes) and, for a file, its length in bytes.
    pub model: serde_json::Value,
    /// Method names, in order.
    pub methods: Vec<String>,
    /// The run seed.
    pub seed: u64,
    /// Number of logical shards.
    pub shards: usize,
    /// Output format.
    pub format: Format,
    /// sha256 of the input file.
    pub input_sha256: String,
    /// Valid records in the input.
    pub input_records: usize,
    /// Evaluation settings (evaluation jobs).
    pub evaluation: Option<EvaluationSettings>,
    /// Records per forward pass of the methods that batch inputs (see [`process_records`]);
    /// part of the configuration because a batch's float summation order differs from one
    /// record's in the last bits.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Version of this program.
    pub code_version: String,
}

fn one() -> usize {
    1
}

impl JobConfig {
    /// sha256 of the configuration's JSON (hex).
    ///
    /// # Errors
    /// Never in practice (the configuration serialises).
    pub fn hash(&self) -> CliResult<String> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| CliError::Output(format!("cannot serialise the job: {e}")))?;
        Ok(hex(&Sha256::digest(bytes)))
    }

    /// The column names of the result rows' method fields, including the control's.
    pub fn result_methods(&self) -> Vec<String> {
        let mut m = self.methods.clone();
        if self.kind == JobKind::Evaluate {
            m.push(RandomControl::NAME.to_owned());
        }
        m
    }
}

/// The identity of a model for the job configuration: its facts and, for a file, its length.
pub fn model_identity(model: &dyn LanguageModel, path: &Path) -> serde_json::Value {
    let file_len = std::fs::metadata(path).ok().filter(|m| m.is_file()).map(|m| m.len());
    serde_json::json!({ "info": model.info(), "file_len": file_len })
}

/// One method's result on one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodRow {
    /// Method name.
    pub method: String,
    /// One score per token (absent on failure, and for the control).
    pub scores: Option<Vec<f64>>,
    /// The explained quantity on the full input.
    pub target_value: Option<f64>,
    /// Convergence delta (path methods).
    pub convergence_delta: Option<f64>,
    /// Metrics in the order of `METRIC_NAMES` (evaluation jobs).
    pub metrics: Option<Vec<Option<f64>>>,
    /// Why the method failed on this record.
    pub error: Option<String>,
}

/// One record's results: one row of the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordRow {
    /// Index of the record among the input's valid records.
    pub index: usize,
    /// The record's id.
    pub id: String,
    /// The text.
    pub text: String,
    /// Token ids.
    pub token_ids: Vec<i64>,
    /// A readable string per token.
    pub tokens: Vec<String>,
    /// The explained token's id (when resolved).
    pub target_id: Option<i64>,
    /// The explained token's text.
    pub target_token: Option<String>,
    /// One entry per method (the control last in evaluation jobs).
    pub methods: Vec<MethodRow>,
    /// Why the whole record failed (bad target, empty text, …).
    pub error: Option<String>,
}

/// Seconds a record took, per method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordTiming {
    /// The record's id.
    pub id: String,
    /// Seconds per method.
    pub seconds: BTreeMap<String, f64>,
}

/// A line of a shard's progress file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ProgressLine {
    row: RecordRow,
    timing: RecordTiming,
}

/// A finished shard's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// Shard index.
    pub shard: usize,
    /// Number of shards.
    pub shards: usize,
    /// Records in the part.
    pub records: usize,
    /// File name of the part (inside the output folder).
    pub file: String,
    /// sha256 of the part's bytes.
    pub sha256: String,
    /// Hash of the job configuration.
    pub config_hash: String,
    /// sha256 of the input.
    pub input_sha256: String,
    /// Version of the program that wrote it.
    pub code_version: String,
}

/// The job file `_job.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFile {
    /// The configuration.
    pub config: JobConfig,
    /// Its hash.
    pub config_hash: String,
}

/// `seed = sha256(run seed, record id, method)`, first 8 bytes little-endian.
pub fn record_seed(run_seed: u64, id: &str, method: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(run_seed.to_le_bytes());
    h.update((id.len() as u64).to_le_bytes());
    h.update(id.as_bytes());
    h.update(method.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Parses `I/N`.
///
/// # Errors
/// [`CliError::Usage`] for another syntax, `N = 0` or `I ≥ N`.
pub fn parse_shard(s: &str) -> CliResult<(usize, usize)> {
    let bad = || CliError::Usage(format!("--shard {s:?}: expected I/N with 0 ≤ I < N, e.g. 3/16"));
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    check_shard(i, n)?;
    Ok((i, n))
}

/// Checks `0 ≤ i < n`.
///
/// # Errors
/// [`CliError::Usage`] otherwise.
pub fn check_shard(i: usize, n: usize) -> CliResult<()> {
    if n == 0 {
        return Err(CliError::Usage("the number of shards must be at least 1".into()));
    }
    if i >= n {
        return Err(CliError::Usage(format!(
            "shard index {i} is out of range: there are {n} shards (0 to {})",
            n - 1
        )));
    }
    Ok(())
}

/// The shard index from the environment: `SLURM_ARRAY_TASK_ID`, else `JOB_COMPLETION_INDEX`.
///
/// # Errors
/// [`CliError::Usage`] for a value that is not an index.
pub fn shard_from_env() -> CliResult<Option<usize>> {
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            return v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| CliError::Usage(format!("{var}={v:?} is not a shard index")));
        }
    }
    Ok(None)
}

/// The records of shard `i` of `n` among `total`: `[i·total/n, (i+1)·total/n)`.
pub fn shard_range(i: usize, n: usize, total: usize) -> std::ops::Range<usize> {
    let bound = |k: usize| ((k as u128 * total as u128) / n.max(1) as u128) as usize;
    bound(i)..bound(i + 1)
}

/// A job bound to a model, an input and an output folder.
pub struct Job<'a> {
    /// The model.
    pub model: &'a dyn LanguageModel,
    /// The configuration.
    pub config: JobConfig,
    /// Its hash.
    pub config_hash: String,
    /// The records.
    pub dataset: Dataset,
    /// The output folder.
    pub out: PathBuf,
    /// Exit abruptly after this many records written by this process (the
    /// `EXPLAIN_FAIL_AFTER` test hook).
    pub fail_after: Option<usize>,
    /// Stop working (sleep until killed) after this many records written by this process
    /// (the `EXPLAIN_PAUSE_AFTER` test hook: a test kills the worker with SIGKILL at a known
    /// point).
    pub pause_after: Option<usize>,
}

/// What happened to one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardStatus {
    /// Already finished by an earlier run: skipped.
    Skipped,
    /// Run to the end now (`resumed_from` records were already there).
    Done,
}

/// A shard's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    /// Shard index.
    pub shard: usize,
    /// Number of shards.
    pub shards: usize,
    /// Records in the shard.
    pub records: usize,
    /// Records found complete in the progress file of an earlier, interrupted run.
    pub resumed_from: usize,
    /// Records that failed (written with their error).
    pub failed: usize,
    /// Skipped or done.
    pub status: ShardStatus,
}

impl<'a> Job<'a> {
    /// Prepares the output folder: writes `_job.json`, or checks that the one there has the
    /// same configuration.
    ///
    /// # Errors
    /// [`CliError::Output`] naming the fields that differ; [`CliError::Write`].
    pub fn prepare(&self) -> CliResult<()> {
        for sub in ["", "_tmp", "_partial", "_manifest", "_timings"] {
            let dir = self.out.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| CliError::write(&dir, e))?;
        }
        let path = self.out.join("_job.json");
        let file = JobFile { config: self.config.clone(), config_hash: self.config_hash.clone() };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let existing: JobFile = serde_json::from_slice(&bytes).map_err(|e| {
                    CliError::Output(format!("{} is not a job file: {e}", path.display()))
                })?;
                if existing.config_hash != self.config_hash {
                    return Err(CliError::Output(format!(
                        "{} holds the results of another job configuration ({}); use another \
                         output folder, or remove it to start over",
                        self.out.display(),
                        differences(&existing.config, &self.config)
                    )));
                }
                Ok(())
            }
            Err(_) => write_atomically(&self.out, &path, &to_json_bytes(&file)?),
        }
    }

    /// Runs shard `shard` (skipped when already finished).
    ///
    /// # Errors
    /// [`CliError::Write`] and Parquet errors; record failures are written, not returned.
    pub fn run_shard(&self, shard: usize) -> CliResult<ShardReport> {
        let n = self.config.shards;
        check_shard(shard, n)?;
        let range = shard_range(shard, n, self.dataset.records.len());
        let records = &self.dataset.records[range];
        let name = part_name(shard, n);
        let ext = self.config.format.extension();
        let part = self.out.join(format!("{name}.{ext}"));
        let manifest_path = self.out.join("_manifest").join(format!("{name}.json"));
        if let Ok(manifest) = read_manifest(&manifest_path)
            && manifest.config_hash == self.config_hash
            && file_sha256(&part).ok().as_deref() == Some(manifest.sha256.as_str())
        {
            return Ok(ShardReport {
                shard,
                shards: n,
                records: records.len(),
                resumed_from: records.len(),
                failed: 0,
                status: ShardStatus::Skipped,
            });
        }
        let partial = self.out.join("_partial").join(format!("{name}.jsonl"));
        let resumed_from = read_progress(&partial, records)?.len();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(|e| CliError::write(&partial, e))?;
        let bar = progress_bar(records.len(), &format!("shard {shard}/{n}"));
        bar.set_position(resumed_from as u64);
        let window = window_len(self.config.batch_size);
        let mut written = 0usize;
        for start in (0..records.len()).step_by(window) {
            let end = (start + window).min(records.len());
            if end <= resumed_from {
                continue;
            }
            // Records of the window already in the progress file are recomputed only where
            // they share a batch with missing ones, so that the missing ones get exactly the
            // batches (and bits) of an uninterrupted run.
            let done = resumed_from.saturating_sub(start);
            let results = process_records(self.model, &self.config, &records[start..end], done);
            for (row, timing) in results.into_iter().skip(done) {
                if self.fail_after == Some(written) {
                    // Test hook: die like a killed worker, without cleaning up.
                    std::process::exit(86);
                }
                if self.pause_after == Some(written) {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
                let mut line = to_json_bytes(&ProgressLine { row, timing })?;
                line.push(b'\n');
                file.write_all(&line)
                    .and_then(|()| file.flush())
                    .map_err(|e| CliError::write(&partial, e))?;
                written += 1;
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        // Re-read the whole progress file: the timings of earlier runs are in it.
        let lines = read_progress(&partial, records)?;
        let rows: Vec<RecordRow> = lines.iter().map(|l| l.row.clone()).collect();
        let failed = rows.iter().filter(|r| row_failed(r)).count();
        let bytes = match self.config.format {
            Format::Parquet => table::parquet_bytes(&rows, &self.config, &part)?,
            Format::Jsonl => jsonl_bytes(&rows)?,
        };
        write_atomically(&self.out, &part, &bytes)?;
        let timings: Vec<u8> = lines.iter().try_fold(Vec::new(), |mut acc, l| {
            acc.extend(to_json_bytes(&l.timing)?);
            acc.push(b'\n');
            Ok::<_, CliError>(acc)
        })?;
        let timings_path = self.out.join("_timings").join(format!("{name}.jsonl"));
        write_atomically(&self.out, &timings_path, &timings)?;
        let manifest = ShardManifest {
            shard,
            shards: n,
            records: rows.len(),
            file: format!("{name}.{ext}"),
            sha256: hex(&Sha256::digest(&bytes)),
            config_hash: self.config_hash.clone(),
            input_sha256: self.config.input_sha256.clone(),
            code_version: self.config.code_version.clone(),
        };
        write_atomically(&self.out, &manifest_path, &to_json_bytes(&manifest)?)?;
        let _ = std::fs::remove_file(&partial);
        Ok(ShardReport {
            shard,
            shards: n,
            records: rows.len(),
            resumed_from,
            failed,
            status: ShardStatus::Done,
        })
    }
}

/// Whether a row holds any error.
pub fn row_failed(row: &RecordRow) -> bool {
    row.error.is_some() || row.methods.iter().any(|m| m.error.is_some())
}

/// `part-I-of-N`.
pub fn part_name(shard: usize, shards: usize) -> String {
    format!("part-{shard:05}-of-{shards:05}")
}

/// Reads a manifest.
///
/// # Errors
/// [`CliError::Output`] when missing or unreadable.
pub fn read_manifest(path: &Path) -> CliResult<ShardManifest> {
    let bytes = std::fs::read(path)
        .map_err(|e| CliError::Output(format!("cannot read manifest {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::Output(format!("manifest {} is malformed: {e}", path.display())))
}

/// The complete lines of a progress file that match the shard's records in order; the file
/// is truncated after them (a torn last line, or lines of other records, are dropped).
fn read_progress(path: &Path, records: &[IndexedRecord]) -> CliResult<Vec<ProgressLine>> {
    let Ok(file) = std::fs::File::open(path) else { return Ok(Vec::new()) };
    let mut reader = std::io::BufReader::new(file);
    let mut lines = Vec::new();
    let mut good_len = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(|e| CliError::write(path, e))?;
        if read == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        let Ok(line) = serde_json::from_slice::<ProgressLine>(&buf) else { break };
        match records.get(lines.len()) {
            Some(r) if r.record.id == line.row.id && r.index == line.row.index => {}
            _ => break,
        }
        good_len += read as u64;
        lines.push(line);
    }
    let file =
        std::fs::OpenOptions::new().write(true).open(path).map_err(|e| CliError::write(path, e))?;
    file.set_len(good_len).map_err(|e| CliError::write(path, e))?;
    Ok(lines)
}

/// Writes `bytes` to `_tmp` under `out`, syncs, and renames onto `path`.
///
/// # Errors
/// [`CliError::Write`].
pub fn write_atomically(out: &Path, path: &Path, bytes: &[u8]) -> CliResult<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = out.join("_tmp").join(format!("{name}.{}.tmp", std::process::id()));
    if let Some(dir) = tmp.parent() {
        std::fs::create_dir_all(dir).map_err(|e| CliError::write(dir, e))?;
    }
    let mut file = std::fs::File::create(&tmp).map_err(|e| CliError::write(&tmp, e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| CliError::write(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CliError::write(path, e))
}

/// Pretty JSON bytes.
///
/// # Errors
/// [`CliError::Output`] (never in practice).
pub fn to_json_bytes<T: Serialize>(value: &T) -> CliResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| CliError::Output(format!("cannot serialise: {e}")))
}

/// Rows as JSON lines.
///
/// # Errors
/// As [`to_json_bytes`].
pub fn jsonl_bytes(rows: &[RecordRow]) -> CliResult<Vec<u8>> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(to_json_bytes(row)?);
        out.push(b'\n');
    }
    Ok(out)
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: usize, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} records ({eta} left)",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

/// The top-level fields in which two configurations differ, in words.
fn differences(old: &JobConfig, new: &JobConfig) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return "the configurations differ".into();
    };
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| {
            let short = |v: &serde_json::Value| {
                let s = v.to_string();
                if s.chars().count() > 80 {
                    format!("{}…", s.chars().take(80).collect::<String>())
                } else {
                    s
                }
            };
            format!("{k}: {} there, {} now", short(v), b.get(k).map_or("none".into(), short))
        })
        .collect();
    if diffs.is_empty() { "the configurations differ".into() } else { diffs.join("; ") }
}

/// The framework for one record: per-record seeds, and the record's spans as the features of
/// the perturbation methods that group tokens.
fn record_framework(run_seed: u64, record: &InputRecord) -> Framework {
    let mut framework = Framework::with_seeds(|m| record_seed(run_seed, &record.id, m));
    if let Some(spans) = &record.spans {
        let features = FeatureKind::Spans(spans.iter().map(|[a, b]| *a..*b).collect());
        let seed = |m: &str| record_seed(run_seed, &record.id, m);
        framework.register_as(
            "feature_ablation",
            PerturbationExplainer::feature_ablation(features.clone()),
        );
        for (name, explainer) in [
            ("shapley_exact", PerturbationExplainer::exact_shapley()),
            ("shapley_sampling", PerturbationExplainer::shapley_sampling()),
            ("kernel_shap", PerturbationExplainer::kernel_shap()),
            ("lime", PerturbationExplainer::lime()),
            ("context_cite", PerturbationExplainer::context_cite()),
        ] {
            framework
                .register_as(name, explainer.with_features(features.clone()).with_seed(seed(name)));
        }
    }
    framework
}

/// Checks that every method is registered.
///
/// # Errors
/// The library's [`explainability::Error::UnknownMethod`].
pub fn check_methods(methods: &[String]) -> CliResult<()> {
    let framework = Framework::with_defaults();
    for m in methods {
        framework.get(m)?;
    }
    Ok(())
}

/// Batches of a window (see [`window_len`]): records of a window are grouped by length
/// into batches whose padding is at most this share of their real tokens
/// ([`length_batches`]).
pub const MAX_PADDING: f64 = 0.25;

/// Batches per window: a shard's records are processed in consecutive windows of
/// `batch_size × BATCHES_PER_WINDOW` records, each window grouped by length into batches and
/// written (in input order) when it is done.
pub const BATCHES_PER_WINDOW: usize = 4;

/// Records per window for a batch size (1 without batching: every record is written as soon
/// as it is done).
pub fn window_len(batch_size: usize) -> usize {
    if batch_size <= 1 { 1 } else { batch_size * BATCHES_PER_WINDOW }
}

/// Computes one record's row (never fails: errors go into the row).
pub fn process_record(
    model: &dyn LanguageModel,
    config: &JobConfig,
    indexed: &IndexedRecord,
) -> (RecordRow, RecordTiming) {
    let mut rows = process_records(model, config, std::slice::from_ref(indexed), 0);
    rows.pop().unwrap_or_else(|| (empty_row(indexed), empty_timing(&indexed.record)))
}

/// Computes the rows of `records` (one window of a shard), in their order; the first
/// `done` records are already written, and are computed only as batch-mates of later ones
/// (their rows are returned as computed, or empty).
///
/// Methods that batch inputs ([`Framework::batches_inputs`]: saliency, gradient×input,
/// AttnLRP, CP-LRP) run the window's records in batches of at most `config.batch_size`
/// records of similar length ([`length_batches`] with [`MAX_PADDING`]); the grouping depends
/// only on the window's records, so a record's result does not depend on where a run
/// resumed. A batch that fails as a whole is rerun one record at a time by the library, so a
/// bad record never fails its batch-mates. Other methods, metrics and the random control run
/// per record. Seeds stay per (run seed, record id, method). A batched method's time is the
/// batch's divided evenly among its records.
pub fn process_records(
    model: &dyn LanguageModel,
    config: &JobConfig,
    records: &[IndexedRecord],
    done: usize,
) -> Vec<(RecordRow, RecordTiming)> {
    // Each record's ids and target, or its error.
    let inputs: Vec<CliResult<RecordInput>> =
        records.iter().map(|r| record_input(model, &r.record)).collect();
    let mut batched: Vec<BTreeMap<String, (CliResult<Explanation>, f64)>> =
        records.iter().map(|_| BTreeMap::new()).collect();
    if config.batch_size > 1 {
        let shared = Framework::with_defaults();
        let valid: Vec<usize> = (0..records.len()).filter(|&i| inputs[i].is_ok()).collect();
        let lengths: Vec<usize> =
            valid.iter().map(|&i| inputs[i].as_ref().map(|x| x.ids.len()).unwrap_or(0)).collect();
        let groups = length_batches(&lengths, config.batch_size, MAX_PADDING);
        for method in &config.methods {
            if !shared.batches_inputs(method).unwrap_or(false) {
                continue;
            }
            for group in &groups {
                let members: Vec<usize> = group.iter().map(|&g| valid[g]).collect();
                if members.iter().all(|&i| i < done) {
                    continue;
                }
                let explain_inputs: Vec<ExplainInput<'_>> = members
                    .iter()
                    .filter_map(|&i| inputs[i].as_ref().ok())
                    .map(|x| ExplainInput { ids: &x.ids, target: &x.target })
                    .collect();
                let started = Instant::now();
                let results = shared.explain_batch_ids(model, &explain_inputs, method);
                let seconds = started.elapsed().as_secs_f64() / members.len().max(1) as f64;
                // An unknown method is left to the per-record path, which reports it.
                if let Ok(results) = results {
                    for (&i, result) in members.iter().zip(results) {
                        batched[i]
                            .insert(method.clone(), (result.map_err(CliError::from), seconds));
                    }
                }
            }
        }
    }
    records
        .iter()
        .zip(inputs)
        .zip(batched)
        .enumerate()
        .map(|(i, ((indexed, input), mut precomputed))| {
            let mut row = empty_row(indexed);
            let mut timing = empty_timing(&indexed.record);
            if i < done {
                return (row, timing);
            }
            let filled = input.and_then(|input| {
                fill_record(
                    model,
                    config,
                    &indexed.record,
                    input,
                    &mut precomputed,
                    &mut row,
                    &mut timing,
                )
            });
            if let Err(e) = filled {
                row.error = Some(e.message());
            }
            (row, timing)
        })
        .collect()
}

fn empty_row(indexed: &IndexedRecord) -> RecordRow {
    RecordRow {
        index: indexed.index,
        id: indexed.record.id.clone(),
        text: indexed.record.text.clone(),
        token_ids: Vec::new(),
        tokens: Vec::new(),
        target_id: None,
        target_token: None,
        methods: Vec::new(),
        error: None,
    }
}

fn empty_timing(record: &InputRecord) -> RecordTiming {
    RecordTiming { id: record.id.clone(), seconds: BTreeMap::new() }
}

/// A record's token ids, token strings and target.
struct RecordInput {
    ids: Vec<i64>,
    tokens: Vec<String>,
    target: explainability::Target,
}

fn record_input(model: &dyn LanguageModel, record: &InputRecord) -> CliResult<RecordInput> {
    let ids = model.encode(&record.text, true)?;
    if ids.is_empty() {
        return Err(explainability::Error::EmptyText.into());
    }
    let tokens = model.token_strings(&ids)?;
    let target = resolve_target(model, record)?;
    Ok(RecordInput { ids, tokens, target })
}

/// Fills `row` with every method's result: from `precomputed` (batched methods: the
/// explanation and seconds per record) where present, computed here otherwise.
fn fill_record(
    model: &dyn LanguageModel,
    config: &JobConfig,
    record: &InputRecord,
    input: RecordInput,
    precomputed: &mut BTreeMap<String, (CliResult<Explanation>, f64)>,
    row: &mut RecordRow,
    timing: &mut RecordTiming,
) -> CliResult<()> {
    let RecordInput { ids, tokens, target } = input;
    row.tokens = tokens;
    row.token_ids = ids.clone();
    let framework = record_framework(config.seed, record);
    let metrics_config = config.evaluation.as_ref().map(|s| MetricsConfig {
        target: target.clone(),
        stability: (s.stability_samples > 0).then(|| StabilityConfig {
            samples: s.stability_samples,
            ..StabilityConfig::default()
        }),
        top_k: s.top_k,
        ..MetricsConfig::default()
    });
    for method in &config.methods {
        let started = Instant::now();
        let mut m = MethodRow {
            method: method.clone(),
            scores: None,
            target_value: None,
            convergence_delta: None,
            metrics: None,
            error: None,
        };
        let (result, explained_seconds) = match precomputed.remove(method) {
            Some((result, seconds)) => (result, seconds),
            None => {
                (framework.explain_ids(model, &ids, method, &target).map_err(CliError::from), 0.0)
            }
        };
        match result {
            Ok(e) => {
                if row.target_token.is_none() {
                    row.target_token = e.target_token.clone();
                    row.target_id = target_id_of(&e.target);
                }
                m.scores = Some(e.scores.to_vec());
                m.target_value = e.target_value;
                m.convergence_delta = e.convergence_delta;
                if let Some(mc) = &metrics_config {
                    let metrics = framework.get(method).map_err(CliError::from).and_then(|ex| {
                        metrics_of_explanation(model, ex, &e, mc).map_err(CliError::from)
                    });
                    match metrics {
                        Ok(x) => m.metrics = Some(scalars(&x)),
                        Err(err) => m.error = Some(err.message()),
                    }
                }
            }
            Err(err) => m.error = Some(err.message()),
        }
        timing.seconds.insert(method.clone(), explained_seconds + started.elapsed().as_secs_f64());
        row.methods.push(m);
    }
    if let (Some(settings), Some(mc)) = (&config.evaluation, &metrics_config) {
        let started = Instant::now();
        let control = RandomControl {
            seed: record_seed(config.seed, &record.id, RandomControl::NAME),
            draws: settings.control_draws,
        };
        let mut m = MethodRow {
            method: RandomControl::NAME.to_owned(),
            scores: None,
            target_value: None,
            convergence_delta: None,
            metrics: None,
            error: None,
        };
        match control_metrics(model, &ids, &target, mc, control) {
            Ok(x) => m.metrics = Some(scalars(&x)),
            Err(err) => m.error = Some(err.message()),
        }
        timing.seconds.insert(RandomControl::NAME.to_owned(), started.elapsed().as_secs_f64());
        row.methods.push(m);
    }
    if row.target_token.is_none()
        && let Some(id) = target_id_of(&target)
    {
        row.target_id = Some(id);
        row.target_token = model.token_strings(&[id]).ok().and_then(|t| t.into_iter().next());
    }
    Ok(())
}

/// The random control's metrics: fidelity is the mean over the draws
/// ([`random_control_fidelity`]); completeness and comprehensibility are those of the first
/// draw.
fn control_metrics(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &explainability::Target,
    config: &MetricsConfig,
    control: RandomControl,
) -> CliResult<ExampleMetrics> {
    use explainability::Explainer;
    let first = RandomExplainer::new(control.seed).explain_ids(model, ids, target)?;
    let scores: Vec<f64> = first.scores.to_vec();
    Ok(ExampleMetrics {
        method: RandomControl::NAME.to_owned(),
        n_tokens: first.len(),
        fidelity: random_control_fidelity(model, &first, &config.fidelity, control)?,
        stability: None,
        completeness: completeness(&first, config.top_k)?,
        comprehensibility: comprehensibility(&scores),
        randomisation: None,
    })
}

fn scalars(m: &ExampleMetrics) -> Vec<Option<f64>> {
    let s = m.scalars();
    debug_assert_eq!(s.len(), METRIC_NAMES.len());
    s.iter().map(|(_, v)| *v).collect()
}

fn target_id_of(target: &explainability::Target) -> Option<i64> {
    use explainability::{Target, TargetToken};
    match target {
        Target::Token { token: TargetToken::Id(id), .. } => Some(*id),
        Target::Contrastive { token, .. } => Some(*token),
        Target::Token { token: TargetToken::Argmax, .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_records_once_in_order() {
        for total in [0, 1, 7, 100] {
            for n in [1, 3, 16] {
                let covered: Vec<usize> = (0..n).flat_map(|i| shard_range(i, n, total)).collect();
                assert_eq!(covered, (0..total).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(parse_shard("3/16").ok(), Some((3, 16)));
        assert!(matches!(parse_shard("16/16"), Err(CliError::Usage(_))));
        assert!(matches!(parse_shard("a/b"), Err(CliError::Usage(_))));
        assert!(matches!(parse_shard("3"), Err(CliError::Usage(_))));
        assert!(matches!(parse_shard("0/0"), Err(CliError::Usage(_))));
    }

    #[test]
    fn seeds_depend_on_run_record_and_method_only() {
        let s = record_seed(1, "a", "lime");
        assert_eq!(s, record_seed(1, "a", "lime"));
        assert_ne!(s, record_seed(2, "a", "lime"));
        assert_ne!(s, record_seed(1, "b", "lime"));
        assert_ne!(s, record_seed(1, "a", "kernel_shap"));
        // the id's length is hashed: ("ab", "c…") and ("a", "bc…") differ
        assert_ne!(record_seed(0, "ab", "c"), record_seed(0, "a", "bc"));
    }
}
