//! `cargo xtask parity`: Hugging Face transformers' outputs on the same GGUF weights, written by
//! `reference/parity_reference.py` into `target/parity`, and gguf-py's dequantisation of every
//! tensor of the Gemma 3 file (`reference/gguf_dequant_reference.py`), then our parity tests
//! against them.
//!
//! Data contract (the Rust tests `crates/{explain-models,explain-attention,explain-gradients,
//! explain-circuits,explain-perturbation}/tests/parity.rs` read it from the folder in
//! `EXPLAINABILITY_PARITY_DIR`): see `reference/README.md`; Captum's attributions go to
//! `captum_reference.json`, its perturbation attributions (`reference/captum_perturbation.py`)
//! to `captum_perturbation.json`, the GGUF tokenizer references
//! (`reference/tokenizer_reference.py`) to `tokenizer/`, which
//! `crates/explain-models/tests/tokenizer_parity.rs` reads.

use std::fs;
use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::ci::TEST_PROFILE;
use crate::pins::{GEMMA3_270M, LXT_PACKAGES, MINILM, PYTHON_PACKAGES, SMOLLM2};
use crate::project::{PARITY_DIR_ENV, Project, Result, run, seconds};
use crate::setup::hex;

/// Files the reference script writes; all must exist for the outputs to count as present.
const OUTPUTS: &[&str] = &[
    "smollm2_reference.safetensors",
    "tokenizer_reference.json",
    "meta.json",
    "captum_reference.json",
    "captum_perturbation.json",
    "arch/arch_reference.safetensors",
    "tokenizer/gemma3_reference.json",
    "tokenizer/llama3_tiny.gguf",
    "tokenizer/llama3_tiny_reference.json",
    "tokenizer/qwen2_tiny.gguf",
    "tokenizer/qwen2_tiny_reference.json",
    "gguf_dequant_reference.json",
    "gemma3/gemma3_reference.safetensors",
    "gemma3/gemma3_meta.json",
    "circuits/gpt2.json",
    "circuits/llama.json",
    "lxt/attn_lrp.json",
    "lxt/cp_lrp.json",
];

/// Files under `reference/` whose content determines the outputs.
const INPUTS: &[&str] = &[
    "parity_reference.py",
    "captum_reference.py",
    "captum_perturbation.py",
    "hf_smollm2.py",
    "parity_prompts.json",
    "tokenizer_corpus.json",
    "arch_reference.py",
    "tokenizer_reference.py",
    "gguf_dequant_reference.py",
    "gemma_reference.py",
    "circuits_reference.py",
    "lxt_reference.py",
];

/// Writes the reference outputs unless they are up to date (or `regenerate`), then runs the
/// parity test.
///
/// # Errors
/// When the script or the test fails.
pub fn parity(project: &Project, regenerate: bool) -> Result<()> {
    factual_prompts(project)?;
    let out = project.target_dir()?.join("parity");
    let stamp = out.join("inputs.sha256");
    let fingerprint = fingerprint(&project.root.join("reference"))?;
    let present = OUTPUTS.iter().all(|file| out.join(file).is_file());
    let current = fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == fingerprint);
    if present && current && !regenerate {
        println!("parity: reference outputs in {} are up to date", out.display());
    } else {
        let start = Instant::now();
        let _ = fs::remove_file(&stamp);
        let mut command = project.python();
        command
            .arg("reference/parity_reference.py")
            .arg("--gguf")
            .arg(project.model_path(&SMOLLM2))
            .arg("--out")
            .arg(&out);
        println!("parity: writing the Hugging Face reference outputs to {}", out.display());
        run("parity reference", &mut command)?;
        let mut captum = project.python();
        captum
            .arg("reference/captum_reference.py")
            .arg("--gguf")
            .arg(project.model_path(&SMOLLM2))
            .arg("--out")
            .arg(out.join("captum_reference.json"));
        println!("parity: writing the Captum reference attributions");
        run("captum reference", &mut captum)?;
        let mut perturbation = project.python();
        perturbation
            .arg("reference/captum_perturbation.py")
            .arg("--gguf")
            .arg(project.model_path(&SMOLLM2))
            .arg("--out")
            .arg(out.join("captum_perturbation.json"));
        println!("parity: writing the Captum perturbation reference attributions");
        run("captum perturbation reference", &mut perturbation)?;
        // GPT-2, Qwen2, BERT and MiniLM references (tests/parity.rs reads `arch/`).
        let mut arch = project.python();
        arch.arg("reference/arch_reference.py")
            .arg("--minilm")
            .arg(project.model_path(&MINILM))
            .arg("--out")
            .arg(out.join("arch"));
        println!("parity: writing the architecture references");
        run("architecture reference", &mut arch)?;
        // GGUF tokenizers: Gemma 3 and small Llama 3 / Qwen2 byte-level files
        // (tests/tokenizer_parity.rs reads `tokenizer/`).
        let gemma3 = project.chunked_model_path(&GEMMA3_270M);
        let mut tokenizer = project.python();
        tokenizer
            .arg("reference/tokenizer_reference.py")
            .arg("--gemma")
            .arg(&gemma3)
            .arg("--out")
            .arg(out.join("tokenizer"));
        println!("parity: writing the GGUF tokenizer references");
        run("tokenizer reference", &mut tokenizer)?;
        // gguf-py's dequantisation of every Gemma 3 tensor (tests/gguf_parity.rs).
        let mut dequant = project.python();
        dequant
            .arg("reference/gguf_dequant_reference.py")
            .arg("--gguf")
            .arg(&gemma3)
            .arg("--out")
            .arg(out.join("gguf_dequant_reference.json"));
        println!("parity: writing gguf-py's dequantisation of the Gemma 3 file");
        run("gguf dequantisation reference", &mut dequant)?;
        // transformers' forward pass on the real Gemma 3 file (tests/parity.rs reads `gemma3/`).
        let mut gemma = project.python();
        gemma
            .arg("reference/gemma_reference.py")
            .arg("--gguf")
            .arg(&gemma3)
            .arg("--out")
            .arg(out.join("gemma3"));
        println!("parity: writing transformers' outputs on the Gemma 3 file");
        run("gemma reference", &mut gemma)?;
        // TransformerLens's logit lens, DLA and activation patching on tiny GPT-2 and Llama
        // checkpoints (explain-circuits' tests/parity.rs reads `circuits/`).
        let mut circuits = project.python();
        circuits
            .arg("reference/circuits_reference.py")
            .arg("--minilm")
            .arg(project.model_path(&MINILM))
            .arg("--out")
            .arg(out.join("circuits"));
        println!("parity: writing the TransformerLens references");
        run("circuits reference", &mut circuits)?;
        // LXT 2.1's AttnLRP and CP-LRP on SmolLM2, in its own reference environment
        // (explain-gradients' tests/parity.rs reads `lxt/`); LXT's patches are global to a
        // process, so one run per rule.
        for rule in ["attn_lrp", "cp_lrp"] {
            let mut lxt = project.lxt_python();
            lxt.arg("reference/lxt_reference.py")
                .arg("--gguf")
                .arg(project.model_path(&SMOLLM2))
                .arg("--prompts")
                .arg(project.root.join("reference/parity_prompts.json"))
                .args(["--rule", rule])
                .arg("--out")
                .arg(out.join("lxt").join(format!("{rule}.json")));
            println!("parity: writing LXT's {rule} relevances");
            run("lxt reference", &mut lxt)?;
        }
        fs::write(&stamp, format!("{fingerprint}\n"))?;
        println!("parity: reference outputs written in {}", seconds(start));
    }
    // One cargo invocation for every crate with a parity test, so they share one build.
    let mut command = project.cargo();
    command.arg("test").args(TEST_PROFILE);
    for package in PARITY_PACKAGES {
        command.args(["-p", package]);
    }
    let features: Vec<String> = PARITY_PACKAGES.iter().map(|p| format!("{p}/parity")).collect();
    command.args(["--features", &features.join(","), "--test", "parity"]).env(PARITY_DIR_ENV, &out);
    run("parity test", &mut command)?;
    // Same features for explain-models as above, so this reuses that build.
    let mut models = project.cargo();
    models
        .arg("test")
        .args(TEST_PROFILE)
        .args(["-p", "explain-models", "--features", "explain-models/parity"])
        .args(["--test", "tokenizer_parity", "--test", "gguf_parity"])
        .env(PARITY_DIR_ENV, &out);
    run("tokenizer and gguf dequantisation parity tests", &mut models)
}

/// The committed factual prompt set must be what `reference/factual_prompts.py` generates
/// from the pinned `countryinfo`, `periodictable` and `us` packages, byte for byte.
fn factual_prompts(project: &Project) -> Result<()> {
    for (script, committed) in GENERATED_DATA {
        let name = Path::new(committed).file_name().map(|n| n.to_string_lossy().into_owned());
        let fresh = project.target_dir()?.join("parity").join(name.unwrap_or_default());
        if let Some(dir) = fresh.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut command = project.python();
        command.arg(script).arg("--out").arg(&fresh);
        run(script, &mut command)?;
        let (a, b) = (fs::read(project.root.join(committed))?, fs::read(&fresh)?);
        if a != b {
            return Err(format!(
                "{committed} differs from what {script} generates ({}): regenerate it with \
                 `.venv/bin/python {script} --out {committed}` and commit it",
                fresh.display()
            )
            .into());
        }
        println!("parity: {committed} regenerates byte-identical");
    }
    Ok(())
}

/// Data files generated from packaged data, as (script, committed file): the factual prompt
/// set (explain-eval's `prompts::FACTUAL_PROMPTS_JSONL`) and the long contexts of the
/// faithfulness benchmark.
const GENERATED_DATA: [(&str, &str); 2] = [
    ("reference/factual_prompts.py", "crates/explain-eval/data/factual_prompts.jsonl"),
    ("reference/long_contexts.py", "crates/explain-eval/data/long_contexts.jsonl"),
];

/// Crates with a `parity` feature and a `tests/parity.rs` that reads the reference outputs
/// (explain-models also has `tests/tokenizer_parity.rs` and `tests/gguf_parity.rs`).
const PARITY_PACKAGES: &[&str] = &[
    "explain-models",
    "explain-attention",
    "explain-gradients",
    "explain-circuits",
    "explain-perturbation",
];

/// sha256 over everything the reference outputs depend on: the script and its data files, the
/// model wheel's checksum and the pinned torch/transformers versions.
fn fingerprint(reference: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for file in INPUTS {
        let path = reference.join(file);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hasher.update(file.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    hasher.update(SMOLLM2.sha256.as_bytes());
    hasher.update(MINILM.sha256.as_bytes());
    hasher.update(GEMMA3_270M.sha256.as_bytes());
    for (name, version) in PYTHON_PACKAGES.iter().chain(LXT_PACKAGES) {
        hasher.update(format!("{name}=={version};").as_bytes());
    }
    Ok(hex(&hasher.finalize()))
}
