//! `gradients` group: every gradient method of `explain-gradients` on SmolLM2-135M, with the
//! settings `cargo xtask bench-reference` runs beside Captum (`reference/bench_captum.py`):
//! integrated gradients with 50 Gauss–Legendre steps from an all-eos baseline on a 5-token
//! and a 60-token prompt (target: log-probability of the argmax next token), saliency and
//! gradient×input, and generation attribution of a 10-token continuation with IG at 20 steps
//! (prompt positions only, as Captum's `LLMGradientAttribution` with
//! `LayerIntegratedGradients`); plus SmoothGrad, layer IG, adaptive IG and gradient flow, which
//! have no Captum counterpart here.
//!
//! `EXPLAINABILITY_BENCH_MODEL` (a GGUF file or Hugging Face folder) runs the group on that model
//! instead (`cargo xtask bench-lrp --model gemma3` sets it for the AttnLRP rows); the 5-token
//! prompt is then its own tokens of "The capital of France is".
//!
//! Threads: `EXPLAINABILITY_THREADS` (default 2). Sample sizes are criterion's minimum (10):
//! one IG call on 60 tokens is 3000 token-passes forward and backward.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use explain_gradients::{
    Baseline, GenerationAttribution, GenerationMethod, GradientFlowAnalysis, GradientXInput,
    IntegratedGradients, LayerIntegratedGradients, PathOptions, Quadrature, QuadratureRule,
    RelevancePropagation, Saliency, SmoothGrad,
};
use explain_models::{AnyModel, load, smollm2_gguf_path};
use explainability_core::{Explainer, HookPoint, LanguageModel, Target};
use std::time::Duration;

/// "The capital of France is" in SmolLM2's tokens.
const SHORT: [i64; 5] = [504, 3575, 282, 4649, 314];
const SHORT_TEXT: &str = "The capital of France is";
/// Another model for the group (its path).
const MODEL_ENV: &str = "EXPLAINABILITY_BENCH_MODEL";
/// Its 10-token greedy continuation (" Paris.\n\nThe answer is: 2"), as
/// `reference/captum_reference.py` finds it with transformers.
const CONTINUATION: [i64; 10] = [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34];
/// The text of `reference/bench_reference.py`; its first 60 tokens are the long prompt.
const TEXT: &str = "Attention weights show where a transformer looks when it predicts the next \
token, and gradients show which inputs would change that prediction most. Neither is the whole \
story, so careful analyses compare several methods on the same text and check whether the \
explanations agree. ";
const LONG: usize = 60;
/// A long context for AttnLRP (the long-context benchmark's contexts are ≈ 600 tokens).
const CONTEXT: usize = 512;

fn threads() -> i32 {
    std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn fixed(n_steps: usize) -> Quadrature {
    Quadrature::Fixed(PathOptions {
        rule: QuadratureRule::GaussLegendre,
        n_steps,
        internal_batch_size: None,
    })
}

/// The first `n` tokens of `TEXT` repeated.
fn long_prompt(model: &AnyModel, n: usize) -> Vec<i64> {
    let mut text = TEXT.to_string();
    loop {
        let ids = model.encode(&text, false).unwrap_or_default();
        if ids.len() >= n {
            return ids[..n].to_vec();
        }
        text.push_str(TEXT);
    }
}

fn gradients(c: &mut Criterion) {
    tch::set_num_threads(threads());
    let other = std::env::var_os(MODEL_ENV).map(std::path::PathBuf::from);
    let path = other.clone().unwrap_or_else(smollm2_gguf_path);
    let model = match load(&path) {
        Ok(m) => m,
        Err(e) => {
            panic!("{} is needed for this benchmark (`cargo xtask setup`): {e}", path.display())
        }
    };
    let m: &dyn LanguageModel = &model;
    let short = match other {
        Some(_) => match model.encode(SHORT_TEXT, false) {
            Ok(ids) if !ids.is_empty() => ids,
            other => panic!("{} cannot encode {SHORT_TEXT:?}: {other:?}", path.display()),
        },
        None => SHORT.to_vec(),
    };
    let target = Target::argmax();
    let long = long_prompt(&model, LONG);
    let mut group = c.benchmark_group("gradients");
    // Flat sampling: every sample runs the same (small) number of iterations; criterion's
    // linear mode would run 55 iterations of a multi-second call.
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    let ig =
        IntegratedGradients { baseline: Baseline::Eos, quadrature: fixed(50), check_path: false };
    for (n, ids) in [(short.len(), short.clone()), (LONG, long.clone())] {
        group.bench_with_input(BenchmarkId::new("ig_gl50", n), &ids, |b, ids| {
            b.iter(|| ig.explain_ids(m, ids, &target))
        });
    }
    group.bench_function(BenchmarkId::new("saliency", 5), |b| {
        b.iter(|| Saliency::default().explain_ids(m, &short, &target))
    });
    group.bench_function(BenchmarkId::new("gradient_x_input", 5), |b| {
        b.iter(|| GradientXInput.explain_ids(m, &short, &target))
    });
    let generation = GenerationAttribution {
        method: GenerationMethod::PromptIntegratedGradients {
            baseline: Baseline::Eos,
            path: PathOptions { n_steps: 20, ..PathOptions::default() },
        },
    };
    group.bench_function(BenchmarkId::new("generation_prompt_ig20", CONTINUATION.len()), |b| {
        b.iter(|| generation.attribute(m, &short, &CONTINUATION))
    });
    let smooth = SmoothGrad { n_samples: 10, ..SmoothGrad::default() };
    group.bench_function(BenchmarkId::new("smoothgrad_10", 5), |b| {
        b.iter(|| smooth.explain_ids(m, &short, &target))
    });
    let layer = LayerIntegratedGradients {
        point: HookPoint::resid_mid(15),
        baseline: Baseline::Eos,
        quadrature: fixed(50),
    };
    group.bench_function(BenchmarkId::new("layer_ig_gl50", 5), |b| {
        b.iter(|| layer.explain_ids(m, &short, &target))
    });
    let adaptive =
        IntegratedGradients { check_path: false, ..IntegratedGradients::adaptive(Baseline::Eos) };
    group.bench_function(BenchmarkId::new("adaptive_ig", 5), |b| {
        b.iter(|| adaptive.explain_ids(m, &short, &target))
    });
    // AttnLRP and CP-LRP: one forward and one backward pass in relevance mode (the logit of
    // the argmax token), beside LXT 2.1 in `cargo xtask bench-reference` / `bench-lrp`.
    let context = long_prompt(&model, CONTEXT);
    for (n, ids) in [(short.len(), short.clone()), (LONG, long.clone()), (CONTEXT, context)] {
        group.bench_with_input(BenchmarkId::new("attn_lrp", n), &ids, |b, ids| {
            b.iter(|| RelevancePropagation::attn_lrp().explain_ids(m, ids, &target))
        });
    }
    group.bench_function(BenchmarkId::new("cp_lrp", 5), |b| {
        b.iter(|| RelevancePropagation::cp_lrp().explain_ids(m, &short, &target))
    });
    group.bench_function(BenchmarkId::new("gradient_flow", 5), |b| {
        b.iter(|| GradientFlowAnalysis::default().analyze(m, &short, &target))
    });
    group.finish();
}

criterion_group!(benches, gradients);
criterion_main!(benches);
