//! Perturbation attribution on SmolLM2: every method of `explain-perturbation` explains the
//! same next-token log-probability, side by side, with its cost in forward passes and its wall
//! time. Tokens are removed by Delete (the perturbation the fidelity metrics use) unless
//! `--replace ID` is given.
//!
//! ```text
//! cargo run --release --example perturbation_attribution
//! cargo run --release --example perturbation_attribution -- --target " Paris" --replace 0 "The capital of France is"
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use explainability::perturbation::{FeatureKind, PerturbationExplainer, RemovalStrategy};
use explainability::{Explainer, LanguageModel, Target, load, smollm2_gguf_path};

#[derive(Parser, Debug)]
#[command(about = "Perturbation attributions of the next-token log-probability")]
struct Args {
    /// The prompt.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// Explain this next token (its text must be one token); default: the model's argmax.
    #[arg(long)]
    target: Option<String>,
    /// Replace removed tokens by this id instead of deleting them.
    #[arg(long)]
    replace: Option<i64>,
    /// Run only the methods with these names (e.g. `--only leave_one_out`).
    #[arg(long)]
    only: Vec<String>,
    /// Runs of each method; the median wall time is printed.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let target = match &args.target {
        None => Target::argmax(),
        Some(text) => match model.encode(text, false)?.as_slice() {
            [id] => Target::log_prob(*id),
            ids => return Err(format!("--target {text:?} is {} tokens, not one", ids.len()).into()),
        },
    };
    let strategy = args.replace.map_or(RemovalStrategy::Delete, RemovalStrategy::Replace);
    let ids = model.encode(&args.prompt, true)?;
    let tokens = model.token_strings(&ids)?;
    let methods = [
        PerturbationExplainer::leave_one_out(),
        PerturbationExplainer::occlusion(2, 1),
        PerturbationExplainer::feature_ablation(FeatureKind::Words),
        PerturbationExplainer::exact_shapley(),
        PerturbationExplainer::shapley_sampling(),
        PerturbationExplainer::kernel_shap(),
        PerturbationExplainer::lime(),
        PerturbationExplainer::context_cite().with_features(FeatureKind::Tokens),
    ];
    let mut header = format!("{:<17}", "method");
    for t in &tokens {
        header.push_str(&format!("{:>10}", format!("{t:?}")));
    }
    println!("{header}{:>9}{:>9}", "passes", "seconds");
    let mut described = false;
    let selected = methods
        .into_iter()
        .map(|m| m.with_strategy(strategy))
        .filter(|m| args.only.is_empty() || args.only.iter().any(|o| o == m.name()));
    for method in selected {
        let mut times = Vec::new();
        let mut result = None;
        for _ in 0..args.repeat.max(1) {
            let started = Instant::now();
            result = Some(method.explain_ids(&model, &ids, &target));
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let seconds = times[times.len() / 2];
        let e = match result {
            Some(Ok(e)) => e,
            Some(Err(err)) => {
                println!("{:<17}failed: {err}", method.name());
                continue;
            }
            None => continue,
        };
        if !described {
            println!(
                "target: log p({:?}) = {:.3}; removal: {strategy:?}",
                e.target_token.clone().unwrap_or_default(),
                e.target_value.unwrap_or(f64::NAN)
            );
            described = true;
        }
        let mut row = format!("{:<17}", e.method);
        for s in &e.scores {
            row.push_str(&format!("{s:>10.3}"));
        }
        let passes = e.metadata["forward_passes"].to_string();
        println!("{row}{passes:>9}{seconds:>9.2}");
        if let Some(r2) = e.metadata.get("surrogate_heldout_r2").and_then(|v| v.as_f64()) {
            println!("{:<17}surrogate held-out R² {r2:.3}", "");
        }
    }
    Ok(())
}
