//! `eval` groups: the metric kernels (comprehensibility, rank statistics, bootstrap summary),
//! fidelity of one SmolLM2 explanation with its edited inputs re-run in batches of 16 versus
//! one edit per forward pass (default and causal-LM settings), and a full evaluation of one
//! explainer (gradient × input: explanation, fidelity, completeness, comprehensibility) over
//! 20 factual prompts.
//!
//! Threads: `EXPLAINABILITY_THREADS` (default 2).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use explain_eval::{
    Evaluator, FidelityConfig, MetricsConfig, comprehensibility, fidelity, kendall_tau, spearman,
    summarize,
};
use explain_gradients::GradientXInput;
use explain_models::{load, smollm2_gguf_path};
use explainability_core::{Explainer, SplitMix64, Target};

use explain_eval::prompts::FACTUAL as PROMPTS;

fn threads() -> i32 {
    std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn kernels(c: &mut Criterion) {
    let mut rng = SplitMix64::new(1);
    let a: Vec<f64> = (0..128).map(|_| rng.normal()).collect();
    let b: Vec<f64> = (0..128).map(|_| rng.normal()).collect();
    let values: Vec<f64> = (0..20).map(|_| rng.uniform()).collect();
    let mut group = c.benchmark_group("eval_kernels");
    group.sample_size(20).measurement_time(Duration::from_secs(2));
    group.bench_function("comprehensibility_128", |bench| bench.iter(|| comprehensibility(&a)));
    group.bench_function("spearman_128", |bench| bench.iter(|| spearman(&a, &b)));
    group.bench_function("kendall_tau_128", |bench| bench.iter(|| kendall_tau(&a, &b)));
    group
        .bench_function("bootstrap_1000_of_20", |bench| bench.iter(|| summarize(&values, 1000, 0)));
    group.finish();
}

fn smollm2(c: &mut Criterion) {
    tch::set_num_threads(threads());
    let model = match load(smollm2_gguf_path()) {
        Ok(m) => m,
        Err(e) => panic!("SmolLM2 is needed for this benchmark (run `cargo xtask setup`): {e}"),
    };
    let prompt = "The Eiffel Tower is located in the city of";
    let explanation = match GradientXInput.explain(&model, prompt, &Target::argmax()) {
        Ok(e) => e,
        Err(e) => panic!("explaining the benchmark prompt failed: {e}"),
    };
    // Default config (zero embedding: every edited row has the full length, one batch per 16
    // rows) and the causal-LM config (Delete: rows grouped by length), each with its edited
    // inputs re-run in batches of 16 versus one edit per forward pass.
    let mut group = c.benchmark_group("eval_fidelity");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for (name, base) in
        [("zero_embedding", FidelityConfig::default()), ("causal_lm", FidelityConfig::causal_lm())]
    {
        for batch_size in [16usize, 1] {
            let config = FidelityConfig { batch_size, ..base.clone() };
            group.bench_with_input(
                BenchmarkId::new(name, format!("batch_{batch_size}")),
                &config,
                |bench, config| bench.iter(|| fidelity(&model, &explanation, config)),
            );
        }
    }
    group.finish();

    // Explanation + fidelity (causal_lm, curves at 4 points, 8 faithfulness subsets) +
    // completeness + comprehensibility of every prompt,
    // streamed to a sink; stability is left out to keep the run short (it costs 2 × samples
    // explanations per prompt and is measured by the explainer benches).
    let mut group = c.benchmark_group("eval_full");
    group.sample_size(10).measurement_time(Duration::from_secs(60));
    let config = MetricsConfig {
        fidelity: FidelityConfig {
            curve_steps: 4,
            faithfulness_subsets: 8,
            ..FidelityConfig::causal_lm()
        },
        stability: None,
        ..MetricsConfig::default()
    };
    let mut evaluator = Evaluator::new(vec![&GradientXInput], config);
    evaluator.progress = false;
    evaluator.control = None; // one explainer; the random control's draws are not timed here
    group.bench_function("gradient_x_input_20_prompts", |bench| {
        bench.iter(|| evaluator.evaluate(&model, PROMPTS, &mut std::io::sink()))
    });
    group.finish();
}

criterion_group!(benches, kernels, smollm2);
criterion_main!(benches);
