//! `explain merge DIR`: checks every shard of a job against its manifest (present, same
//! configuration, same bytes, the expected number of records), concatenates the parts in
//! shard order into `DIR/results.parquet` (or `.jsonl`) and computes the dataset summary from
//! the per-record rows (never in the workers): `DIR/summary.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use explainability::eval::{EvaluationSummary, METRIC_NAMES, MetricValues};
use serde::{Deserialize, Serialize};

use crate::dataset::{file_sha256, hex};
use crate::error::{CliError, CliResult};
use crate::job::{
    Format, JobFile, JobKind, RecordRow, part_name, read_manifest, shard_range, to_json_bytes,
    write_atomically,
};
use crate::table::{self, SummaryInput};

/// Bootstrap resamples of the merged evaluation summary.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// Successes and failures of one method over the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodCount {
    /// Method name.
    pub method: String,
    /// Records on which it succeeded.
    pub succeeded: usize,
    /// Records on which it failed.
    pub failed: usize,
}

/// What `merge` found and wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeReport {
    /// Number of shards checked.
    pub shards: usize,
    /// Records in the merged result.
    pub records: usize,
    /// Records that failed as a whole.
    pub failed_records: usize,
    /// Per method counts.
    pub methods: Vec<MethodCount>,
    /// The merged file.
    pub output: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// The evaluation summary (evaluation jobs).
    pub evaluation: Option<EvaluationSummary>,
}

/// Merges the job in `dir`; see the module documentation.
///
/// # Errors
/// [`CliError::Output`] listing the shards that are missing or do not match; Parquet and
/// write errors.
pub fn merge(dir: &Path) -> CliResult<MergeReport> {
    let job_path = dir.join("_job.json");
    let bytes = std::fs::read(&job_path).map_err(|e| {
        CliError::Output(format!(
            "{} is not a job output folder (cannot read {}: {e})",
            dir.display(),
            job_path.display()
        ))
    })?;
    let job: JobFile = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::Output(format!("{} is malformed: {e}", job_path.display())))?;
    let config = &job.config;
    let n = config.shards;
    let mut problems = Vec::new();
    let mut parts = Vec::new();
    for shard in 0..n {
        let name = part_name(shard, n);
        let manifest = match read_manifest(&dir.join("_manifest").join(format!("{name}.json"))) {
            Ok(m) => m,
            Err(_) => {
                let partial = dir.join("_partial").join(format!("{name}.jsonl"));
                problems.push(if partial.exists() {
                    format!("shard {shard} is unfinished (a progress file exists: rerun the job)")
                } else {
                    format!("shard {shard} has not run")
                });
                continue;
            }
        };
        let part = dir.join(&manifest.file);
        let expected = shard_range(shard, n, config.input_records).len();
        if manifest.config_hash != job.config_hash {
            problems.push(format!("shard {shard} was written by another job configuration"));
        } else if manifest.records != expected {
            problems.push(format!(
                "shard {shard} holds {} records, expected {expected}",
                manifest.records
            ));
        } else {
            match file_sha256(&part) {
                Ok(sha) if sha == manifest.sha256 => parts.push(part),
                Ok(_) => problems.push(format!(
                    "shard {shard}: {} does not match its manifest's sha256",
                    part.display()
                )),
                Err(_) => problems.push(format!("shard {shard}: {} is missing", part.display())),
            }
        }
    }
    if !problems.is_empty() {
        let shown: Vec<&str> = problems.iter().take(10).map(String::as_str).collect();
        let more = problems.len().saturating_sub(10);
        return Err(CliError::Output(format!(
            "cannot merge {}: {} of {n} shards are not finished or do not check out: {}{}",
            dir.display(),
            problems.len(),
            shown.join("; "),
            if more > 0 { format!("; and {more} more") } else { String::new() }
        )));
    }
    let output = dir.join(format!("results.{}", config.format.extension()));
    let (bytes, inputs) = match config.format {
        Format::Parquet => {
            let mut batches = Vec::new();
            for p in &parts {
                batches.extend(table::read_parquet(p)?);
            }
            let inputs = table::summary_inputs(&batches, config, &output)?;
            (table::batches_to_parquet(&batches, &output)?, inputs)
        }
        Format::Jsonl => {
            let mut bytes = Vec::new();
            let mut rows = Vec::new();
            for p in &parts {
                let part = std::fs::read(p)
                    .map_err(|e| CliError::Output(format!("cannot read {}: {e}", p.display())))?;
                for line in part.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    rows.push(serde_json::from_slice::<RecordRow>(line).map_err(|e| {
                        CliError::Output(format!("{} holds a malformed row: {e}", p.display()))
                    })?);
                }
                bytes.extend(part);
            }
            (bytes, table::summary_inputs_of_rows(&rows, config))
        }
    };
    write_atomically(dir, &output, &bytes)?;
    let methods = config.result_methods();
    let counts = methods
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let failed = inputs
                .iter()
                .filter(|i| i.record_failed || i.methods.get(k).is_some_and(|x| x.0))
                .count();
            MethodCount { method: m.clone(), succeeded: inputs.len() - failed, failed }
        })
        .collect();
    let evaluation = (config.kind == JobKind::Evaluate)
        .then(|| evaluation_summary(&methods, &inputs, config.seed));
    let report = MergeReport {
        shards: n,
        records: inputs.len(),
        failed_records: inputs.iter().filter(|i| i.record_failed).count(),
        methods: counts,
        output: output.clone(),
        sha256: hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        evaluation,
    };
    write_atomically(dir, &dir.join("summary.json"), &to_json_bytes(&report)?)?;
    Ok(report)
}

/// The evaluator's summary (means, bootstrap intervals, control checks) of merged rows.
fn evaluation_summary(methods: &[String], inputs: &[SummaryInput], seed: u64) -> EvaluationSummary {
    let mut values: MetricValues = BTreeMap::new();
    let mut failures: BTreeMap<String, usize> = methods.iter().map(|m| (m.clone(), 0)).collect();
    for input in inputs {
        for (m, method) in methods.iter().enumerate() {
            match input.methods.get(m) {
                Some((false, metrics)) if !input.record_failed && !metrics.is_empty() => {
                    for (k, v) in metrics.iter().enumerate().take(METRIC_NAMES.len()) {
                        if let Some(v) = v.filter(|v| v.is_finite()) {
                            values.entry((m, k)).or_default().push((input.index, v));
                        }
                    }
                }
                _ => *failures.entry(method.clone()).or_default() += 1,
            }
        }
    }
    let control = methods.len().checked_sub(1);
    EvaluationSummary::from_values(
        methods.to_vec(),
        control,
        inputs.len(),
        failures,
        &values,
        BOOTSTRAP_RESAMPLES,
        seed,
    )
}
