//! `explain`: the command line of the `explainability` workspace.
//!
//! Analyses, predictions, attributions, evaluations and model comparisons of one text, model
//! facts, and dataset jobs (JSONL in, Parquet or JSONL out) under a shard contract that makes
//! every shard idempotent and resumable (see [`job`]), merged by `explain merge`; `explain
//! serve --stdio` is the long-lived worker that Ray actors drive (integrations/ray).
//!
//! Dependencies: `clap` (arguments), `indicatif` (progress bars on stderr), `serde_json`
//! (`--json` and JSONL), `sha2` (input, output and configuration hashes, per-record seeds),
//! `arrow-array`/`arrow-schema`/`parquet` (arrow-rs: Parquet results, built without
//! compression codecs or async to bound the build time), `thiserror` (the error type).

mod commands;
mod dataset;
mod error;
mod job;
mod merge;
mod serve;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::job::{Format, JobKind};

const EXIT_CODES: &str = "Exit codes: 0 success; 1 other errors (libtorch, internal); \
2 bad command line (bad --shard, shard out of range, unknown option); \
3 bad input data (missing input file, malformed JSONL, duplicate id, empty text, bad target); \
4 model cannot be loaded (missing path, bad GGUF, unsupported architecture or tensor type); \
5 a method cannot run (unknown method, method failure on a single text); \
6 refused or inconsistent output folder (another job's results, shards failing merge's checks); \
7 writing results failed.";

/// Explain what language models do: predictions, attributions, evaluations, dataset jobs.
#[derive(Parser, Debug)]
#[command(name = "explain", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Print results as JSON (one document, or one line per result) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Intra-op threads of libtorch (default: libtorch's choice, usually the core count).
    #[arg(long, global = true, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub threads: Option<i32>,
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The model to load.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

impl ModelArgs {
    /// The path, defaulting to SmolLM2.
    pub fn path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(explainability::smollm2_gguf_path)
    }
}

/// Methods and their settings.
#[derive(Args, Debug, Clone)]
pub struct MethodArgs {
    /// Attribution methods, comma-separated, by their registered names (`explain attribute
    /// --list` lists them).
    #[arg(long, value_delimiter = ',', default_value = "saliency,gradient_x_input")]
    pub methods: Vec<String>,
    /// Run seed: each seeded method gets a seed derived from (run seed, record id, method).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Evaluation settings.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Draws of the random control.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub control_draws: u64,
    /// Stability samples per record (each costs two explanations; 0 skips stability).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub stability: u64,
    /// `k` of the completeness top-k share.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub top_k: u64,
}

/// Where a dataset job reads and writes.
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// JSONL input: one object per line with `id`, `text` and optional `target` (token text
    /// or id), `continuation`, `spans` ([[start, end], …] token spans).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Output folder of the job (parts, manifests, progress files, merged results).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run only shard I of N (`I/N`, 0-based).
    #[arg(long, conflicts_with = "shards")]
    pub shard: Option<String>,
    /// Number of logical shards; the index comes from SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX when set, otherwise every shard runs in this process.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Format of the parts and the merged results.
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    pub format: Format,
    /// Records per forward pass for the methods that batch inputs (saliency,
    /// gradient_x_input, attn_lrp, cp_lrp): records of similar length are right-padded into
    /// one pass; 1 runs every record alone. Scores equal one-at-a-time up to float summation
    /// order (docs/scale-out.md); part of the job's configuration.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch_size: u64,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Comprehensive analysis of one prompt (prediction, attention, attributions, evaluation,
    /// report files): the demo.
    Analyze(commands::AnalyzeArgs),
    /// The most likely next tokens.
    Predict {
        /// The text.
        text: String,
        /// How many tokens.
        #[arg(short, long, default_value_t = 5)]
        k: usize,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Attributions of one text (`--text`) or of a JSONL dataset (`--input`, `--out`).
    Attribute {
        /// One text to explain.
        #[arg(long, conflicts_with = "input")]
        text: Option<String>,
        /// The explained next token of `--text` (token text such as " Paris", or an id).
        #[arg(long, requires = "text")]
        target: Option<String>,
        /// List the registered methods and exit.
        #[arg(long)]
        list: bool,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        methods: MethodArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Evaluation of the methods (fidelity, completeness, comprehensibility, optionally
    /// stability) against the random control, on one text or a dataset.
    Evaluate {
        /// One text.
        #[arg(long, conflicts_with = "input")]
        text: Option<String>,
        /// The explained next token of `--text`.
        #[arg(long, requires = "text")]
        target: Option<String>,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        methods: MethodArgs,
        #[command(flatten)]
        eval: EvalArgs,
        #[command(flatten)]
        job: JobArgs,
    },
    /// Several models' predictions on one text: agreement and divergence.
    Compare {
        /// The text.
        text: String,
        /// The models (at least two; give `--model` once per model).
        #[arg(long = "model", required = true, num_args = 1)]
        models: Vec<PathBuf>,
        /// Top tokens per model.
        #[arg(short, long, default_value_t = 5)]
        k: usize,
    },
    /// Model facts; for a GGUF file also its metadata and tensor types with counts.
    Inspect {
        /// The model (default: SmolLM2).
        model: Option<PathBuf>,
        /// Do not load the model (GGUF metadata and tensors only).
        #[arg(long)]
        no_load: bool,
    },
    /// Check every shard of a job folder and merge them, with the dataset summary.
    Merge {
        /// The job's output folder.
        dir: PathBuf,
    },
    /// A long-lived worker: the model is loaded once; JSONL requests on stdin (`{"shard":
    /// I}` runs shard I of the configured job, a record object is explained), one JSON
    /// result per line on stdout.
    Serve {
        /// Read requests from stdin and write results to stdout (the only transport).
        #[arg(long, required = true)]
        stdio: bool,
        /// What each record computes.
        #[arg(long, value_enum, default_value_t = JobKind::Attribute)]
        kind: JobKind,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        methods: MethodArgs,
        #[command(flatten)]
        eval: EvalArgs,
        #[command(flatten)]
        job: JobArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        explainability::tch::set_num_threads(threads);
    }
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message());
            ExitCode::from(e.class() as u8)
        }
    }
}
