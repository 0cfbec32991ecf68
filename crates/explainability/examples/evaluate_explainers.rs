//! Evaluates the available explainers on a small built-in set of factual prompts with
//! explain-eval: fidelity (ERASER comprehensiveness / sufficiency, deletion / insertion AUC,
//! faithfulness correlation, leave-one-out τ), stability under embedding noise,
//! completeness and comprehensibility, streamed to a JSONL file, each method checked against
//! the evaluator's random control (is the control worst? paired differences with bootstrap
//! intervals), then the model parameter randomisation sanity check per explainer. Prints the
//! summary tables.
//!
//! ```text
//! cargo run --release --example evaluate_explainers
//! ```

use explainability::{
    Explainer, LanguageModel,
    attention::AttentionExplainer,
    eval::{
        Evaluator, FidelityConfig, MetricsConfig, RandomExplainer, RandomisationConfig,
        StabilityConfig, parameter_randomisation_many,
    },
    gradients::{Baseline, GradientXInput, IntegratedGradients, Saliency},
    load, smollm2_gguf_path,
};

const PROMPTS: [&str; 3] = [
    "The capital of France is",
    "The chemical symbol for gold is",
    "Romeo and Juliet was written by William",
];

fn main() -> explainability::Result<()> {
    let model = load(smollm2_gguf_path())?;
    let random = RandomExplainer::new(0);
    let saliency = Saliency::default();
    // 16 fixed Gauss–Legendre steps keep the example under a minute; the adaptive rule
    // (`IntegratedGradients::adaptive`) converges further at up to 256 gradient evaluations.
    let ig = IntegratedGradients::new(Baseline::Eos, 16);
    let rollout = AttentionExplainer::rollout();
    // The evaluator adds its own random control (8 seeded draws per prompt, averaged) and says
    // for every metric whether it comes out worst; the single-draw `random` explainer is kept
    // for the randomisation check below.
    let explainers: Vec<&dyn Explainer> = vec![&saliency, &GradientXInput, &ig, &rollout];

    // Fidelity with the causal-LM setting, bins 10/20/50 %, curves at 2 points instead of every
    // token and 8
    // faithfulness subsets (each distinct length of a Delete edit costs a forward pass).
    let config = MetricsConfig {
        fidelity: FidelityConfig {
            bins: vec![0.1, 0.2, 0.5],
            curve_steps: 2,
            faithfulness_subsets: 8,
            ..FidelityConfig::causal_lm()
        },
        stability: Some(StabilityConfig { samples: 1, ..StabilityConfig::default() }),
        ..MetricsConfig::default()
    };
    let evaluator = Evaluator::new(explainers.clone(), config.clone());
    let out = std::env::temp_dir().join("evaluate_explainers.jsonl");
    let file = std::fs::File::create(&out).map_err(|e| explainability::Error::io(&out, e))?;
    let mut writer = std::io::BufWriter::new(file);
    let start = std::time::Instant::now();
    let summary = evaluator.evaluate(&model, PROMPTS, &mut writer)?;
    println!(
        "{} prompts in {:.1} s, per-example records in {}\n",
        summary.examples,
        start.elapsed().as_secs_f64(),
        out.display()
    );
    println!("{}", summary.table());

    // Sanity check: randomise the blocks top-down (top layer, then all) and compare.
    let n_layers = model.info().n_layers;
    let sanity =
        RandomisationConfig { checkpoints: vec![1, n_layers], ..RandomisationConfig::default() };
    println!("model parameter randomisation (|a| Spearman after 1 / {n_layers} layers):");
    let start = std::time::Instant::now();
    for explainer in explainers.iter().copied().chain([&random as &dyn Explainer]) {
        let originals: Vec<_> = PROMPTS
            .iter()
            .map(|p| explainer.explain(&model, p, &config.target))
            .collect::<explainability::Result<_>>()?;
        let reports = parameter_randomisation_many(&model, explainer, &originals, &sanity)?;
        let mean_at = |i: usize| {
            let at: Vec<f64> =
                reports.iter().filter_map(|r| r.steps.get(i)).map(|s| s.spearman_abs).collect();
            at.iter().sum::<f64>() / at.len().max(1) as f64
        };
        let passed = reports.iter().filter(|r| r.depends_on_model).count();
        println!(
            "{:<22} {:>7.3} {:>7.3}   depends on the model in {passed}/{} prompts",
            explainer.name(),
            mean_at(0),
            mean_at(1),
            reports.len()
        );
    }
    println!("randomisation in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
