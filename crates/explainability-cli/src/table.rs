//! Result rows as Apache Parquet through arrow-rs: one row per record, with the columns
//! `index`, `id`, `text`, `token_ids` (list of int64), `tokens` (list of string),
//! `target_id`, `target_token`, `error`, and per method `M`: `M.scores` (list of float64),
//! `M.target_value`, `M.convergence_delta`, `M.error` and, in evaluation jobs, one float64
//! column `M.<metric>` per metric name of `explain_eval::METRIC_NAMES` (the random control
//! `random_control` has only the metric and error columns). Absent values are nulls.
//!
//! Files are written uncompressed (the `parquet` crate is built without codecs to keep the
//! build small); every Parquet reader (pandas, polars, DuckDB, Spark) reads them.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{Field, Schema};
use explainability::eval::{METRIC_NAMES, RandomControl};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

use crate::error::{CliError, CliResult};
use crate::job::{JobConfig, JobKind, MethodRow, RecordRow};

fn parquet_error(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Parquet { path: path.to_path_buf(), message: e.to_string() }
}

/// The rows as one record batch with the columns of the module documentation.
///
/// # Errors
/// [`CliError::Parquet`] (`path` names the file in the message).
pub fn record_batch(rows: &[RecordRow], config: &JobConfig, path: &Path) -> CliResult<RecordBatch> {
    let mut columns: Vec<(String, ArrayRef)> = vec![
        (
            "index".into(),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.index as u64))),
        ),
        ("id".into(), Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str())))),
        (
            "text".into(),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.text.as_str()))),
        ),
    ];
    let mut ids = ListBuilder::new(Int64Builder::new());
    let mut tokens = ListBuilder::new(StringBuilder::new());
    for r in rows {
        ids.values().append_slice(&r.token_ids);
        ids.append(true);
        for t in &r.tokens {
            tokens.values().append_value(t);
        }
        tokens.append(true);
    }
    columns.push(("token_ids".into(), Arc::new(ids.finish())));
    columns.push(("tokens".into(), Arc::new(tokens.finish())));
    columns.push((
        "target_id".into(),
        Arc::new(arrow_array::Int64Array::from(
            rows.iter().map(|r| r.target_id).collect::<Vec<_>>(),
        )),
    ));
    columns.push(("target_token".into(), strings(rows.iter().map(|r| r.target_token.as_deref()))));
    columns.push(("error".into(), strings(rows.iter().map(|r| r.error.as_deref()))));
    let evaluate = config.kind == JobKind::Evaluate;
    for (k, method) in config.result_methods().iter().enumerate() {
        let is_control = method == RandomControl::NAME;
        if !is_control {
            let mut scores = ListBuilder::new(Float64Builder::new());
            for r in rows {
                match method_entry(r, k, method).and_then(|m| m.scores.as_ref()) {
                    Some(s) => {
                        scores.values().append_slice(s);
                        scores.append(true);
                    }
                    None => scores.append(false),
                }
            }
            columns.push((format!("{method}.scores"), Arc::new(scores.finish())));
            columns.push((
                format!("{method}.target_value"),
                floats(
                    rows.iter().map(|r| method_entry(r, k, method).and_then(|m| m.target_value)),
                ),
            ));
            columns.push((
                format!("{method}.convergence_delta"),
                floats(
                    rows.iter()
                        .map(|r| method_entry(r, k, method).and_then(|m| m.convergence_delta)),
                ),
            ));
        }
        columns.push((
            format!("{method}.error"),
            strings(
                rows.iter().map(|r| method_entry(r, k, method).and_then(|m| m.error.as_deref())),
            ),
        ));
        if evaluate {
            for (j, metric) in METRIC_NAMES.iter().enumerate() {
                columns.push((
                    format!("{method}.{metric}"),
                    floats(rows.iter().map(|r| {
                        method_entry(r, k, method)
                            .and_then(|m| m.metrics.as_ref())
                            .and_then(|v| v.get(j).copied().flatten())
                    })),
                ));
            }
        }
    }
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, array)| Field::new(name, array.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|(_, a)| a).collect())
        .map_err(|e| parquet_error(path, e))
}

/// Method `k` of a row, when it is `method`.
fn method_entry<'r>(row: &'r RecordRow, k: usize, method: &str) -> Option<&'r MethodRow> {
    row.methods.get(k).filter(|m| m.method == method)
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

fn floats(values: impl Iterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(values.collect::<Float64Array>())
}

/// The rows as the bytes of a Parquet file.
///
/// # Errors
/// [`CliError::Parquet`].
pub fn parquet_bytes(rows: &[RecordRow], config: &JobConfig, path: &Path) -> CliResult<Vec<u8>> {
    let batch = record_batch(rows, config, path)?;
    batches_to_parquet(&[batch], path)
}

/// Record batches of one schema as the bytes of a Parquet file (uncompressed; the writer's
/// defaults otherwise, so equal batches give equal bytes).
///
/// # Errors
/// [`CliError::Parquet`] for no batches or batches of several schemas.
pub fn batches_to_parquet(batches: &[RecordBatch], path: &Path) -> CliResult<Vec<u8>> {
    let first = batches.first().ok_or_else(|| parquet_error(path, "no record batches"))?;
    let props = WriterProperties::builder().build();
    let mut writer = ArrowWriter::try_new(Vec::new(), first.schema(), Some(props))
        .map_err(|e| parquet_error(path, e))?;
    for b in batches {
        if b.schema() != first.schema() {
            return Err(parquet_error(path, "parts have different columns"));
        }
        writer.write(b).map_err(|e| parquet_error(path, e))?;
    }
    writer.into_inner().map_err(|e| parquet_error(path, e))
}

/// Reads every record batch of a Parquet file.
///
/// # Errors
/// [`CliError::Parquet`] for an unreadable or torn file.
pub fn read_parquet(path: &Path) -> CliResult<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| parquet_error(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| parquet_error(path, e))?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| parquet_error(path, e))
}

/// One record's outcome per method, as the summary needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryInput {
    /// Record index.
    pub index: usize,
    /// Whether the whole record failed.
    pub record_failed: bool,
    /// Per result method: its error (if any) and its metric values.
    pub methods: Vec<(bool, Vec<Option<f64>>)>,
}

/// The summary inputs of Parquet batches.
///
/// # Errors
/// [`CliError::Parquet`] for a missing or mistyped column.
pub fn summary_inputs(
    batches: &[RecordBatch],
    config: &JobConfig,
    path: &Path,
) -> CliResult<Vec<SummaryInput>> {
    let mut out = Vec::new();
    let methods = config.result_methods();
    for batch in batches {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| parquet_error(path, format!("no column {name}")))
        };
        let as_strings = |a: &ArrayRef, name: &str| {
            a.as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| parquet_error(path, format!("column {name} is not strings")))
        };
        let as_floats = |a: &ArrayRef, name: &str| {
            a.as_any()
                .downcast_ref::<Float64Array>()
                .cloned()
                .ok_or_else(|| parquet_error(path, format!("column {name} is not float64")))
        };
        let index = column("index")?
            .as_any()
            .downcast_ref::<UInt64Array>()
            .cloned()
            .ok_or_else(|| parquet_error(path, "column index is not uint64"))?;
        let error = as_strings(column("error")?, "error")?;
        let mut per_method = Vec::new();
        for m in &methods {
            let name = format!("{m}.error");
            let errors = as_strings(column(&name)?, &name)?;
            let mut metrics = Vec::new();
            if config.kind == JobKind::Evaluate {
                for metric in METRIC_NAMES {
                    let name = format!("{m}.{metric}");
                    metrics.push(as_floats(column(&name)?, &name)?);
                }
            }
            per_method.push((errors, metrics));
        }
        for row in 0..batch.num_rows() {
            out.push(SummaryInput {
                index: index.value(row) as usize,
                record_failed: error.is_valid(row),
                methods: per_method
                    .iter()
                    .map(|(errors, metrics)| {
                        (
                            errors.is_valid(row),
                            metrics.iter().map(|a| a.is_valid(row).then(|| a.value(row))).collect(),
                        )
                    })
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// The summary inputs of JSONL rows.
pub fn summary_inputs_of_rows(rows: &[RecordRow], config: &JobConfig) -> Vec<SummaryInput> {
    let methods = config.result_methods();
    rows.iter()
        .map(|r| SummaryInput {
            index: r.index,
            record_failed: r.error.is_some(),
            methods: methods
                .iter()
                .enumerate()
                .map(|(k, m)| match r.methods.get(k).filter(|x| &x.method == m) {
                    Some(x) => (x.error.is_some(), x.metrics.clone().unwrap_or_default()),
                    None => (false, Vec::new()),
                })
                .collect(),
        })
        .collect()
}
