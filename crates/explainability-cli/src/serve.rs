//! `explain serve --stdio`: a long-lived worker. The model is loaded once; each line on stdin
//! is a request and gets exactly one JSON line on stdout, in order:
//! - `{"shard": I}` runs shard `I` of the job configured on the command line (`--input`,
//!   `--out`, `--shards N`) and answers `{"shard": I, "status": "done" | "skipped",
//!   "records": …, "resumed_from": …, "failed": …}`; running a finished shard again is a
//!   harmless skip, so a driver may retry freely;
//! - a record object (`{"id": …, "text": …, …}`, the dataset format) answers its result row;
//! - anything else answers `{"error": "…", "line": n}` and the worker keeps serving.
//!
//! End of input ends the worker (exit 0).

use std::io::{BufRead, Write};
use std::path::Path;

use explainability::Precision;
use serde::Deserialize;

use crate::commands::{build_job, job_config, load};
use crate::dataset::{IndexedRecord, InputRecord};
use crate::error::{CliError, CliResult};
use crate::job::{self, JobKind};
use crate::{EvalArgs, JobArgs, MethodArgs};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardRequest {
    shard: usize,
}

/// Serves requests; see the module documentation.
///
/// # Errors
/// Set-up errors (model, job folder, unknown methods); request errors are answered.
pub fn serve(
    kind: JobKind,
    model_path: &Path,
    methods: &MethodArgs,
    eval: &EvalArgs,
    job_args: &JobArgs,
) -> CliResult<()> {
    job::check_methods(&methods.methods)?;
    let model = load(model_path, Precision::F32)?;
    let job = match (&job_args.input, &job_args.out) {
        (Some(input), Some(out)) => {
            let job =
                build_job(kind, &model, model_path, methods, Some(eval), job_args, input, out)?;
            job.prepare()?;
            Some(job)
        }
        (None, None) => None,
        _ => return Err(CliError::Usage("serve needs both --input and --out, or neither".into())),
    };
    let config = match &job {
        Some(j) => j.config.clone(),
        None => job_config(kind, &model, model_path, methods, Some(eval), job_args),
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for (i, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|e| CliError::Input(format!("cannot read stdin: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = if let Ok(request) = serde_json::from_str::<ShardRequest>(&line) {
            match &job {
                Some(job) => job
                    .run_shard(request.shard)
                    .map_err(|e| e.message())
                    .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())),
                None => {
                    Err("this worker has no job: start it with --input, --out and --shards"
                        .to_owned())
                }
            }
        } else {
            match serde_json::from_str::<InputRecord>(&line) {
                Ok(record) => {
                    let indexed = IndexedRecord { index: i, line: i + 1, record };
                    let (row, timing) = job::process_record(&model, &config, &indexed);
                    serde_json::to_value(serde_json::json!({ "row": row, "timing": timing }))
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!(
                    "not a request (expected {{\"shard\": I}} or a record with id and text): {e}"
                )),
            }
        };
        let value =
            answer.unwrap_or_else(|message| serde_json::json!({ "error": message, "line": i + 1 }));
        let write = serde_json::to_writer(&mut stdout, &value)
            .map_err(std::io::Error::other)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if let Err(e) = write {
            return Err(CliError::write("<stdout>", e));
        }
    }
    Ok(())
}
