//! `cargo xtask faithfulness`: the faithfulness-versus-cost benchmark (docs/faithfulness.md).
//! The anchors' own attributions (Captum, `reference/faithfulness_anchors.py`) and ours
//! (`faithfulness` example of the `explainability` crate) on the same prompts, one thread each,
//! scored by one evaluator; the example writes `target/faithfulness/` (records, summary JSON,
//! markdown tables, the chart).

use std::time::Instant;

use std::path::PathBuf;

use crate::pins::{GEMMA3_270M, SMOLLM2};
use crate::project::{Project, Result, THREADS_ENV, run, seconds};

/// What `cargo xtask faithfulness` takes.
pub struct Options {
    /// `smollm2` (default) or `gemma3`.
    pub model: String,
    /// The prompt file (JSONL with a "text" or "prompt" field per line).
    pub prompts: String,
    /// Only the first N prompts.
    pub limit: Option<usize>,
    /// Skip the anchors (ours only).
    pub no_anchors: bool,
    /// Reuse `target/faithfulness/anchors.jsonl` and `anchors-lxt.jsonl` from an earlier run.
    pub reuse_anchors: bool,
}

impl Options {
    /// Parses `[--model smollm2|gemma3] [--prompts FILE] [--limit N] [--no-anchors]
    /// [--reuse-anchors]`.
    ///
    /// # Errors
    /// On an unknown flag or a flag without its value.
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut options = Self {
            model: "smollm2".to_owned(),
            prompts: "crates/explain-eval/data/factual_prompts.jsonl".to_owned(),
            limit: None,
            no_anchors: false,
            reuse_anchors: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--model" => {
                    let model = it.next().ok_or("--model needs smollm2 or gemma3")?;
                    if !["smollm2", "gemma3"].contains(&model.as_str()) {
                        return Err(format!("--model {model:?}: expected smollm2 or gemma3").into());
                    }
                    options.model = model.clone();
                }
                "--prompts" => {
                    options.prompts = it.next().ok_or("--prompts needs a file")?.clone();
                }
                "--limit" => {
                    let n = it.next().ok_or("--limit needs a number")?;
                    options.limit = Some(
                        n.parse().map_err(|_| format!("--limit expects a number, got {n:?}"))?,
                    );
                }
                "--no-anchors" => options.no_anchors = true,
                "--reuse-anchors" => options.reuse_anchors = true,
                other => return Err(format!("faithfulness: unexpected argument {other:?}").into()),
            }
        }
        Ok(options)
    }
}

/// Runs the anchors, then ours and the evaluation; see the module documentation.
///
/// # Errors
/// When either side fails.
pub fn faithfulness(project: &Project, options: &Options) -> Result<()> {
    let start = Instant::now();
    // SmolLM2's results in target/faithfulness, another model's beside them.
    let (gguf, folder): (PathBuf, &str) = match options.model.as_str() {
        "gemma3" => (project.chunked_model_path(&GEMMA3_270M), "faithfulness-gemma3"),
        _ => (project.model_path(&SMOLLM2), "faithfulness"),
    };
    let out = project.target_dir()?.join(folder);
    std::fs::create_dir_all(&out)?;
    let anchors = out.join("anchors.jsonl");
    let lxt_anchors = out.join("anchors-lxt.jsonl");
    let limit = options.limit.map(|n| n.to_string());
    let reuse = options.reuse_anchors && anchors.exists();
    if !options.no_anchors && !reuse {
        println!("faithfulness: the anchors (Captum), one thread");
        let mut python = project.python();
        python
            .arg("reference/faithfulness_anchors.py")
            .arg("--gguf")
            .arg(&gguf)
            .arg("--prompts")
            .arg(&options.prompts)
            .arg("--out")
            .arg(&anchors)
            // A rerun keeps the complete records of an earlier, interrupted run.
            .arg("--resume")
            .env("OMP_NUM_THREADS", "1")
            .env(THREADS_ENV, "1")
            .env("TQDM_DISABLE", "1");
        if let Some(n) = &limit {
            python.arg("--limit").arg(n);
        }
        run("the anchors' attributions", &mut python)?;
        println!("faithfulness: LXT's AttnLRP (its reference environment), one thread");
        let mut lxt = project.lxt_python();
        lxt.arg("reference/lxt_reference.py")
            .arg("--gguf")
            .arg(&gguf)
            .arg("--faithfulness-prompts")
            .arg(&options.prompts)
            .arg("--faithfulness-out")
            .arg(&lxt_anchors)
            // The ids the Captum anchors ran on (checked against ours): transformers 4.52
            // tokenises Gemma 3 differently.
            .arg("--faithfulness-ids")
            .arg(&anchors)
            .args(["--rule", "attn_lrp", "--threads", "1", "--resume"])
            .env("OMP_NUM_THREADS", "1")
            .env("TQDM_DISABLE", "1");
        if let Some(n) = &limit {
            lxt.arg("--limit").arg(n);
        }
        run("LXT's attributions", &mut lxt)?;
    }
    println!("faithfulness: ours and the evaluation, one thread");
    let mut ours = project.cargo();
    ours.args(["run", "--release", "-p", "explainability", "--example", "faithfulness", "--"])
        .arg("--model")
        .arg(&gguf)
        .arg("--prompts")
        .arg(&options.prompts)
        .arg("--out")
        .arg(&out)
        .env("OMP_NUM_THREADS", "1")
        .env(THREADS_ENV, "1");
    if !options.no_anchors {
        ours.arg("--anchors").arg(&anchors).arg("--anchors").arg(&lxt_anchors);
    }
    if let Some(n) = &limit {
        ours.arg("--limit").arg(n);
    }
    run("the faithfulness example", &mut ours)?;
    println!(
        "faithfulness: done in {}; tables in {}, chart in {}",
        seconds(start),
        out.join("faithfulness.md").display(),
        out.join("faithfulness.svg").display()
    );
    Ok(())
}
