//! `batched_prompts` group (issue 17 item 4): prompts per second of saliency and
//! gradient×input over 200 factual prompts on SmolLM2-135M, one prompt per forward and
//! backward pass (`explain_ids`) against several prompts per pass (`explain_batch` on groups
//! of similar length from `length_batches`, as `explain attribute --batch-size` runs them),
//! measured side by side in one run; plus the evaluation step (explanation and its metrics)
//! on the first `BATCHED_EVAL_PROMPTS` prompts (default 8), where only the explanation is
//! batched.
//!
//! Prompts: every second prompt of `factual_prompts()` (all three categories), the first 200
//! (`BATCHED_PROMPTS`);
//! target: log-probability of the argmax next token. Threads: `EXPLAINABILITY_THREADS`
//! (default 1). Batch sizes of saliency: `BATCHED_SIZES` (default `4,8,16,32`); gradient×input
//! and the evaluation run at the CLI's default, 16. Each sample explains all
//! 200 prompts, so criterion's time per iteration divided into 200 is the time per prompt.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use explain_eval::{MetricsConfig, metrics_of_explanation, prompts::factual_prompts};
use explain_gradients::{GradientXInput, Saliency};
use explain_models::{AnyModel, load, smollm2_gguf_path};
use explainability_core::{ExplainInput, Explainer, LanguageModel, Target, length_batches};

/// Prompts of the throughput measurement (`BATCHED_PROMPTS`, default 200).
fn prompt_count() -> usize {
    std::env::var("BATCHED_PROMPTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}
/// Padding bound of the groups (the CLI's `MAX_PADDING`).
const MAX_PADDING: f64 = 0.25;
/// The CLI's default `--batch-size`.
const DEFAULT_BATCH: usize = 16;

fn threads() -> i32 {
    std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Prompts of the evaluation measurement (`BATCHED_EVAL_PROMPTS`, default 8, 0 skips it; its
/// metrics run many forwards per prompt).
fn eval_prompts() -> usize {
    std::env::var("BATCHED_EVAL_PROMPTS").ok().and_then(|v| v.parse().ok()).unwrap_or(8)
}

fn sizes() -> Vec<usize> {
    std::env::var("BATCHED_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4, 8, 16, 32])
}

fn one_at_a_time(m: &dyn LanguageModel, method: &dyn Explainer, ids: &[Vec<i64>], t: &Target) {
    for ids in ids {
        let e = method.explain_ids(m, ids, t);
        assert!(e.is_ok(), "{e:?}");
    }
}

fn batched(
    m: &dyn LanguageModel,
    method: &dyn Explainer,
    ids: &[Vec<i64>],
    groups: &[Vec<usize>],
    t: &Target,
) {
    for group in groups {
        let inputs: Vec<ExplainInput<'_>> =
            group.iter().map(|&i| ExplainInput { ids: &ids[i], target: t }).collect();
        for e in method.explain_batch(m, &inputs) {
            assert!(e.is_ok(), "{e:?}");
        }
    }
}

fn batched_prompts(c: &mut Criterion) {
    tch::set_num_threads(threads());
    let model: AnyModel = match load(smollm2_gguf_path()) {
        Ok(m) => m,
        Err(e) => panic!("SmolLM2 is needed for this benchmark (run `cargo xtask setup`): {e}"),
    };
    let m: &dyn LanguageModel = &model;
    let prompts = match factual_prompts() {
        Ok(p) => p,
        Err(e) => panic!("the factual prompts do not parse: {e}"),
    };
    let n_prompts = prompt_count();
    let ids: Vec<Vec<i64>> = prompts
        .iter()
        .step_by(2)
        .take(n_prompts)
        .map(|p| m.encode(&p.prompt, true).unwrap_or_default())
        .collect();
    assert_eq!(ids.len(), n_prompts, "there are {} factual prompts", prompts.len());
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    eprintln!(
        "{} prompts, {}..={} tokens, {} tokens in all",
        ids.len(),
        lengths.iter().min().unwrap_or(&0),
        lengths.iter().max().unwrap_or(&0),
        lengths.iter().sum::<usize>()
    );
    let target = Target::argmax();
    let mut group = c.benchmark_group("batched_prompts");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(n_prompts as u64));
    // Saliency at every batch size of `BATCHED_SIZES` (to choose the CLI's default),
    // gradient×input at the CLI's default.
    let methods: [(&str, &dyn Explainer, Vec<usize>); 2] = [
        ("saliency", &Saliency::default(), sizes()),
        ("gradient_x_input", &GradientXInput, vec![DEFAULT_BATCH]),
    ];
    for (name, method, sizes) in methods {
        group.bench_function(BenchmarkId::new(name, "one_at_a_time"), |b| {
            b.iter(|| one_at_a_time(m, method, &ids, &target))
        });
        for size in sizes {
            let groups = length_batches(&lengths, size, MAX_PADDING);
            group.bench_function(BenchmarkId::new(name, format!("batch_{size}")), |b| {
                b.iter(|| batched(m, method, &ids, &groups, &target))
            });
        }
    }
    // Evaluation: the explanation (batched or not) and its metrics (per prompt; fidelity's
    // removal curves are already batched within a prompt).
    let eval_prompts = eval_prompts().min(n_prompts);
    if eval_prompts == 0 {
        group.finish();
        return;
    }
    let eval_ids = &ids[..eval_prompts];
    let eval_lengths = &lengths[..eval_prompts];
    let config = MetricsConfig { target: target.clone(), ..MetricsConfig::default() };
    let saliency = Saliency::default();
    group.throughput(Throughput::Elements(eval_prompts as u64));
    let evaluate =
        |explanations: Vec<explainability_core::Result<explainability_core::Explanation>>| {
            for e in explanations {
                let metrics = e.and_then(|e| metrics_of_explanation(m, &saliency, &e, &config));
                assert!(metrics.is_ok(), "{metrics:?}");
            }
        };
    group.bench_function(BenchmarkId::new("evaluate_saliency", "one_at_a_time"), |b| {
        b.iter(|| {
            evaluate(eval_ids.iter().map(|ids| saliency.explain_ids(m, ids, &target)).collect())
        })
    });
    let groups = length_batches(eval_lengths, DEFAULT_BATCH, MAX_PADDING);
    group.bench_function(
        BenchmarkId::new("evaluate_saliency", format!("batch_{DEFAULT_BATCH}")),
        |b| {
            b.iter(|| {
                for group in &groups {
                    let inputs: Vec<ExplainInput<'_>> = group
                        .iter()
                        .map(|&i| ExplainInput { ids: &eval_ids[i], target: &target })
                        .collect();
                    evaluate(saliency.explain_batch(m, &inputs));
                }
            })
        },
    );
    group.finish();
}

criterion_group!(benches, batched_prompts);
criterion_main!(benches);
