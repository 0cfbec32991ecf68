//! The `explain` binary, run as a user runs it: results on the real SmolLM2 weights, and every
//! error path a user can reach, each with its exit code and a Display message (never a Debug
//! dump of the error).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn explain() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_explain"));
    c.env("OMP_NUM_THREADS", "1").env("MKL_NUM_THREADS", "1");
    c.env_remove("SLURM_ARRAY_TASK_ID").env_remove("JOB_COMPLETION_INDEX");
    c.env_remove("EXPLAIN_FAIL_AFTER").env_remove("EXPLAIN_PAUSE_AFTER");
    c
}

fn run(args: &[&str]) -> Output {
    explain().args(args).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and a Display message on stderr (no Debug struct syntax).
fn assert_fails(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(err.contains(needle), "stderr should contain {needle:?}: {err}");
    let error_line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(!error_line.contains(" { "), "Debug output in the error: {error_line}");
}

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("explain-cli-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn smollm2() -> String {
    explainability::smollm2_gguf_path().display().to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn help_documents_the_exit_codes() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for sub in
        ["analyze", "predict", "attribute", "evaluate", "compare", "inspect", "merge", "serve"]
    {
        assert!(out.contains(sub), "{sub} missing from --help");
    }
    assert!(out.contains("Exit codes") && out.contains("6 refused"));
    assert_fails(&run(&["attribute", "--no-such-flag"]), 2, "unexpected argument");
}

#[test]
fn predict_and_attribute_one_text() {
    let o =
        run(&["predict", "The capital of France is", "-k", "3", "--json", "--model", &smollm2()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["predictions"][0]["token"], " Paris");
    assert_eq!(v["predictions"].as_array().unwrap().len(), 3);

    let o = run(&[
        "attribute",
        "--text",
        "The capital of France is",
        "--methods",
        "saliency,gradient_x_input",
        "--json",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let row = json(&o);
    assert_eq!(row["target_token"], " Paris");
    let n = row["tokens"].as_array().unwrap().len();
    assert_eq!(n, 5);
    for m in row["methods"].as_array().unwrap() {
        assert_eq!(m["scores"].as_array().unwrap().len(), n, "{m}");
        assert!(m["error"].is_null());
    }
    // Human output: the methods and the explained token.
    let o = run(&["attribute", "--text", "The capital of France is", "--target", " London"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("explained next token: \" London\"") && out.contains("gradient_x_input"),
        "{out}"
    );
}

#[test]
fn user_errors_have_their_exit_codes_and_display_messages() {
    let dir = tempdir();
    let d = dir.path();
    // model class (4)
    assert_fails(&run(&["predict", "Hi", "--model", "/no/such/model.gguf"]), 4, "does not exist");
    let bad = write(d, "bad.gguf", "GGXX this is not a model file at all");
    let bad = bad.to_str().unwrap();
    assert_fails(&run(&["predict", "Hi", "--model", bad]), 4, "is not a GGUF file");
    assert_fails(&run(&["inspect", bad, "--no-load"]), 4, "is not a GGUF file");
    assert_fails(&run(&["inspect", "/no/such/file.gguf"]), 4, "does not exist");
    // method class (5): checked before the model loads
    assert_fails(
        &run(&["attribute", "--text", "Hi", "--methods", "saliency,no_such_method"]),
        5,
        "no explainer named \"no_such_method\"",
    );
    // usage class (2)
    let input = write(d, "in.jsonl", "{\"id\": 1, \"text\": \"Hello there\"}\n");
    let input = input.to_str().unwrap();
    let out = d.join("out");
    let out = out.to_str().unwrap();
    for (shard, needle) in [("3", "expected I/N"), ("a/2", "expected I/N"), ("2/2", "out of range")]
    {
        assert_fails(
            &run(&["attribute", "--input", input, "--out", out, "--shard", shard]),
            2,
            needle,
        );
    }
    assert_fails(&run(&["attribute", "--input", input]), 2, "needs --out");
    assert_fails(&run(&["attribute"]), 2, "give a text");
    let mut env_shard = explain();
    env_shard.env("SLURM_ARRAY_TASK_ID", "5");
    let o = env_shard
        .args(["attribute", "--input", input, "--out", out, "--shards", "2"])
        .output()
        .unwrap();
    assert_fails(&o, 2, "shard index 5 is out of range");
    // input class (3)
    let missing = d.join("missing.jsonl");
    assert_fails(
        &run(&["attribute", "--input", missing.to_str().unwrap(), "--out", out]),
        3,
        "cannot read input",
    );
    let dup = write(
        d,
        "dup.jsonl",
        "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n",
    );
    assert_fails(
        &run(&["attribute", "--input", dup.to_str().unwrap(), "--out", out]),
        3,
        "duplicate id \"a\" on lines 1 and 2",
    );
    let none = write(d, "none.jsonl", "not json\n");
    assert_fails(
        &run(&["attribute", "--input", none.to_str().unwrap(), "--out", out]),
        3,
        "no valid record",
    );
    assert_fails(
        &run(&["attribute", "--text", "The capital of France is", "--target", " Paris is nice"]),
        3,
        "is 3 tokens for this model, not one",
    );
    // output class (6)
    assert_fails(&run(&["merge", d.to_str().unwrap()]), 6, "is not a job output folder");
}

/// A dataset with one malformed line and one record that fails (an empty text).
const DATASET: &str = r#"{"id": "r0", "text": "The capital of France is"}
{"id": "r1", "text": "One, two, three,", "target": " four"}
this line is not JSON
{"id": 2, "text": "The cat sat on the", "continuation": " mat and slept"}
{"id": "r3", "text": ""}
{"id": "r4", "text": "Paris is the capital of", "spans": [[0, 2], [2, 5]]}
{"id": "r5", "text": "Water boils at a hundred"}
{"id": "r6", "text": "The opposite of hot is"}
{"id": "r7", "text": "Monday, Tuesday,"}
"#;

const JOB: &[&str] = &["attribute", "--methods", "saliency,feature_ablation", "--threads", "1"];

fn job(input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = explain();
    c.args(JOB).args(["--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    c.args(extra);
    c
}

fn merged_sha(out: &Path) -> String {
    let o = run(&["merge", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let sha = v["sha256"].as_str().unwrap().to_owned();
    let bytes = std::fs::read(out.join("results.parquet")).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");
    assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
    sha
}

#[test]
fn shards_resume_after_kill_and_merge_to_identical_bytes() {
    let dir = tempdir();
    let d = dir.path();
    let input = write(d, "in.jsonl", DATASET);

    // 1. One process runs all 3 shards.
    let one = d.join("one");
    let o = job(&input, &one, &["--shards", "3"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("in.jsonl:3: skipped"), "bad line reported: {}", stderr(&o));
    assert_eq!(stdout(&o).matches(": done").count(), 3, "{}", stdout(&o));
    let reference = merged_sha(&one);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["records"], 8);
    assert_eq!(summary["failed_records"], 1, "the empty text fails, the run goes on");
    // A rerun skips every shard.
    let o = job(&input, &one, &["--shards", "3"]).output().unwrap();
    assert_eq!(stdout(&o).matches("skipped").count(), 3, "{}", stdout(&o));

    // 2. Two workers at once (shards 0 and 1), then a third (shard 2 from the environment).
    let two = d.join("two");
    let a = job(&input, &two, &["--shard", "0/3"]).spawn().unwrap();
    let b = job(&input, &two, &["--shard", "1/3"]).spawn().unwrap();
    assert!(a.wait_with_output().unwrap().status.success());
    assert!(b.wait_with_output().unwrap().status.success());
    let o =
        job(&input, &two, &["--shards", "3"]).env("JOB_COMPLETION_INDEX", "2").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(merged_sha(&two), reference, "two workers and one process write the same bytes");

    // 3. A worker killed with SIGKILL in the middle of shard 0 (after 1 of its 2 records),
    //    a torn line appended as a crash mid-write leaves it, then a resumed run.
    let killed = d.join("killed");
    let mut child =
        job(&input, &killed, &["--shards", "3"]).env("EXPLAIN_PAUSE_AFTER", "1").spawn().unwrap();
    let partial = killed.join("_partial").join("part-00000-of-00003.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(&partial).map_or(0, |s| s.lines().count()) < 1 {
        assert!(std::time::Instant::now() < deadline, "the worker never wrote a record");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    assert!(!child.wait().unwrap().success());
    assert!(!killed.join("part-00000-of-00003.parquet").exists());
    let mut torn = std::fs::OpenOptions::new().append(true).open(&partial).unwrap();
    std::io::Write::write_all(&mut torn, b"{\"row\": {\"index\": 1, \"id\": \"r1\", \"te").unwrap();
    drop(torn);
    assert_fails(&run(&["merge", killed.to_str().unwrap()]), 6, "shard 0 is unfinished");
    let o = job(&input, &killed, &["--shards", "3"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("shard 0/3: 2 records, 0 failed: done (resumed after 1 records)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(merged_sha(&killed), reference, "resumed after kill -9: same bytes");

    // 4. The same folder with another configuration is refused, naming what differs.
    let o = explain()
        .args(["attribute", "--methods", "saliency", "--input", input.to_str().unwrap()])
        .args(["--out", one.to_str().unwrap(), "--shards", "3"])
        .output()
        .unwrap();
    assert_fails(&o, 6, "methods: [\"saliency\",\"feature_ablation\"] there, [\"saliency\"] now");

    // 5. A tampered part fails merge's check.
    let part = two.join("part-00001-of-00003.parquet");
    let mut bytes = std::fs::read(&part).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    assert_fails(&run(&["merge", two.to_str().unwrap()]), 6, "does not match its manifest");
}

/// Records of several lengths (one of a single token), a target id outside the vocabulary
/// (its methods fail inside a batch), a target that is not one token (the record fails) and
/// an empty text.
const BATCH_DATASET: &str = r#"{"id": "a", "text": "The capital of France is"}
{"id": "b", "text": "Paris"}
{"id": "c", "text": "The Eiffel Tower is located in the city of", "target": " Paris"}
{"id": "d", "text": "The capital of Italy is", "target": 999999}
{"id": "e", "text": "The capital of Spain is"}
{"id": "f", "text": "Water is made of hydrogen and", "target": " two tokens"}
{"id": "g", "text": ""}
{"id": "h", "text": "In the year 1969 the first people to walk on the moon were"}
{"id": "i", "text": "The capital of Japan is", "continuation": " Tokyo"}
"#;

/// The merged `results.parquet` of a job folder: every column as JSON values.
fn parquet_columns(out: &Path) -> Vec<(String, Vec<serde_json::Value>)> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
    use arrow_schema::DataType;
    let file = std::fs::File::open(out.join("results.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut columns: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for (k, field) in batch.schema().fields().iter().enumerate() {
            if columns.len() <= k {
                columns.push((field.name().clone(), Vec::new()));
            }
            let a = batch.column(k);
            for row in 0..a.len() {
                let v = if a.is_null(row) {
                    serde_json::Value::Null
                } else {
                    match a.data_type() {
                        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(row).into(),
                        DataType::Int64 => a.as_primitive::<Int64Type>().value(row).into(),
                        DataType::Float64 => a.as_primitive::<Float64Type>().value(row).into(),
                        DataType::Utf8 => a.as_string::<i32>().value(row).into(),
                        DataType::List(_) => {
                            let item = a.as_list::<i32>().value(row);
                            (0..item.len())
                                .map(|j| match item.data_type() {
                                    DataType::Int64 => {
                                        item.as_primitive::<Int64Type>().value(j).into()
                                    }
                                    DataType::Float64 => {
                                        item.as_primitive::<Float64Type>().value(j).into()
                                    }
                                    _ => item.as_string::<i32>().value(j).into(),
                                })
                                .collect::<Vec<serde_json::Value>>()
                                .into()
                        }
                        other => panic!("unexpected column type {other}"),
                    }
                };
                columns[k].1.push(v);
            }
        }
    }
    columns
}

/// Float values equal within `tol` relative to the largest |value| of their list (or of the
/// value itself); everything else exactly equal.
fn assert_close(name: &str, a: &serde_json::Value, b: &serde_json::Value, tol: f64) {
    match (a, b) {
        (serde_json::Value::Array(x), serde_json::Value::Array(y))
            if x.iter().all(serde_json::Value::is_f64) && !x.is_empty() =>
        {
            assert_eq!(x.len(), y.len(), "{name}");
            let scale = x.iter().map(|v| v.as_f64().unwrap().abs()).fold(1e-12, f64::max);
            for (u, v) in x.iter().zip(y) {
                let d = (u.as_f64().unwrap() - v.as_f64().unwrap()).abs();
                assert!(d <= tol * scale, "{name}: {a} vs {b}");
            }
        }
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) if x.is_f64() => {
            let (u, v) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((u - v).abs() <= tol * u.abs().max(1.0), "{name}: {u} vs {v}");
        }
        _ => assert_eq!(a, b, "{name}"),
    }
}

#[test]
fn batched_jobs_write_the_results_of_one_record_at_a_time() {
    let dir = tempdir();
    let d = dir.path();
    let input = write(d, "in.jsonl", BATCH_DATASET);
    let methods = "saliency,gradient_x_input,leave_one_out";
    let run_job = |out: &Path, batch: &str| {
        let o = explain()
            .args(["attribute", "--methods", methods, "--threads", "1", "--batch-size", batch])
            .args(["--input", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .args(["--shards", "2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        merged_sha(out);
        parquet_columns(out)
    };
    let one = run_job(&d.join("one"), "1");
    let four = run_job(&d.join("four"), "4");
    assert_eq!(
        one.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        four.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // Same tolerance as explain-gradients' tests/batched.rs: float summation order only.
    for ((name, a), (_, b)) in one.iter().zip(&four) {
        assert_eq!(a.len(), 9, "{name}");
        for (x, y) in a.iter().zip(b) {
            assert_close(name, x, y, 1e-4);
        }
    }
    let column = |name: &str| &one.iter().find(|(n, _)| n == name).unwrap().1;
    // The bad target id fails its record's methods only; the two-token target and the empty
    // text fail their records; every other record has scores.
    let errors = column("saliency.error");
    assert!(errors[3].as_str().unwrap().contains("999999"), "{errors:?}");
    let record_errors = column("error");
    assert!(record_errors[5].is_string() && record_errors[6].is_string(), "{record_errors:?}");
    let scores = column("gradient_x_input.scores");
    for i in [0, 1, 2, 4, 7, 8] {
        assert!(scores[i].is_array(), "record {i}: {scores:?}");
    }
    assert_eq!(scores[1].as_array().unwrap().len(), 1, "the one-token record");
    // The batch size is part of the configuration: a rerun with another is refused.
    let o = explain()
        .args(["attribute", "--methods", methods, "--batch-size", "8", "--shards", "2"])
        .args(["--input", input.to_str().unwrap(), "--out", d.join("four").to_str().unwrap()])
        .output()
        .unwrap();
    assert_fails(&o, 6, "batch_size: 4 there, 8 now");
}
