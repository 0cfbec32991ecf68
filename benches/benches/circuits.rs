//! `circuits` group: explain-circuits on SmolLM2-135M with the pair that
//! `cargo xtask bench-circuits` runs beside TransformerLens 4.3 (`reference/bench_circuits.py`):
//! clean "The Eiffel Tower is located in the city of", corrupted "The Colosseum is located in
//! the city of" (10 tokens each), metric logit(" Paris") − logit(" Rome") at the last position.
//!
//! - `patch_resid_pre`: activation patching (denoising) of every (layer, position) of
//!   `resid_pre`, 30 × 10 = 300 patched runs, batches of 32 — TransformerLens's
//!   `get_act_patch_resid_pre`;
//! - `atp_head_z`: attribution patching of every head's output at every position
//!   (`attn.hook_z`, 30 layers × 9 heads × 10 positions): one clean forward, one corrupted
//!   forward and one backward;
//! - `forward`: one forward pass of the clean prompt with logits at the last position (the
//!   unit of the forward-equivalents: AtP's wall time ÷ this, same process).
//!
//! Each case first runs once untimed (wall time printed); when `EXPLAINABILITY_BENCH_OUT`
//! names a file, the ids, the metric tokens and the patched metric grid are written there so
//! that the comparison checks equal results in the same run.
//!
//! Threads: `EXPLAINABILITY_THREADS` (default 2). Sample size: criterion's minimum (10).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use explain_circuits::{
    ActivationPatching, LogitDiff, PatchSite, attribution_patching, single_token,
};
use explain_models::{load, smollm2_gguf_path};
use explainability_core::{ForwardOptions, Hooks, LanguageModel};
use serde_json::json;

const CLEAN: &str = "The Eiffel Tower is located in the city of";
const CORRUPTED: &str = "The Colosseum is located in the city of";
const ANSWER: &str = " Paris";
const AGAINST: &str = " Rome";

fn threads() -> i32 {
    std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn circuits(c: &mut Criterion) {
    tch::set_num_threads(threads());
    let model = match load(smollm2_gguf_path()) {
        Ok(m) => m,
        Err(e) => panic!("SmolLM2 is needed for this benchmark (run `cargo xtask setup`): {e}"),
    };
    let m: &dyn LanguageModel = &model;
    let (clean, corrupted, metric) = match (|| {
        let clean = m.encode(CLEAN, false)?;
        let corrupted = m.encode(CORRUPTED, false)?;
        let metric = LogitDiff::new(single_token(m, ANSWER)?, single_token(m, AGAINST)?);
        Ok::<_, explainability_core::Error>((clean, corrupted, metric))
    })() {
        Ok(v) => v,
        Err(e) => panic!("cannot prepare the prompts: {e}"),
    };
    assert_eq!(clean.len(), corrupted.len(), "the bench pair must have equal lengths");
    let n = clean.len();
    let resid = ActivationPatching::new(PatchSite::ResidPre);
    let heads = ActivationPatching::new(PatchSite::HeadZ);
    let input = match tch::Tensor::f_from_slice(&clean).and_then(|t| t.f_unsqueeze(0)) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let last = ForwardOptions { logits_from: Some(n - 1), ..Default::default() };
    let forward = || {
        let _guard = tch::no_grad_guard();
        m.forward_ids(&input, &last, &mut Hooks::new())
    };

    // One untimed run of each: the results for the comparison and the single-run costs.
    let timed = |f: &dyn Fn() -> Result<(), explainability_core::Error>| {
        let started = Instant::now();
        if let Err(e) = f() {
            panic!("{e}");
        }
        started.elapsed().as_secs_f64()
    };
    let forward_s = (0..3).map(|_| timed(&|| forward().map(|_| ()))).fold(f64::INFINITY, f64::min);
    let started = Instant::now();
    let patched = match resid.run(m, &clean, &corrupted, metric) {
        Ok(r) => r,
        Err(e) => panic!("patch_resid_pre: {e}"),
    };
    let patch_s = started.elapsed().as_secs_f64();
    let atp_s = timed(&|| attribution_patching(&heads, m, &clean, &corrupted, metric).map(|_| ()));
    println!(
        "circuits/{n} tokens: forward {:.1} ms (best of 3), patch_resid_pre {patch_s:.2} s \
         ({} runs), atp_head_z {:.3} s = {:.2} forward-equivalents (one run)",
        forward_s * 1e3,
        patched.patched.len(),
        atp_s,
        atp_s / forward_s
    );
    if let Ok(path) = std::env::var("EXPLAINABILITY_BENCH_OUT") {
        let report = json!({
            "clean": clean,
            "corrupted": corrupted,
            "answer": metric.answer,
            "against": metric.against,
            "clean_metric": patched.clean_metric,
            "corrupted_metric": patched.corrupted_metric,
            "patched": patched.patched.index_axis(ndarray::Axis(1), 0).outer_iter()
                .map(|row| row.to_vec()).collect::<Vec<_>>(),
            "seconds_one_run": { "forward": forward_s, "patch_resid_pre": patch_s, "atp_head_z": atp_s },
            "batch_size": resid.batch_size,
        });
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            panic!("cannot write {path}: {e}");
        }
    }

    let mut group = c.benchmark_group("circuits");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_with_input(BenchmarkId::new("forward", n), &(), |b, ()| b.iter(forward));
    group.bench_with_input(BenchmarkId::new("atp_head_z", n), &(), |b, ()| {
        b.iter(|| attribution_patching(&heads, m, &clean, &corrupted, metric))
    });
    group.bench_with_input(BenchmarkId::new("patch_resid_pre", n), &(), |b, ()| {
        b.iter(|| resid.run(m, &clean, &corrupted, metric))
    });
    group.finish();
}

criterion_group!(benches, circuits);
criterion_main!(benches);
