//! `forward` group: SmolLM2-135M forward pass at 8 and 128 tokens, plain (fused attention)
//! versus capturing every layer's attention pattern (explicit attention path).
//!
//! Threads: `EXPLAINABILITY_THREADS` (default 2), the same value `cargo xtask
//! bench-reference` gives the Hugging Face side so the ratio compares like with like.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use explain_models::{load, smollm2_gguf_path};
use explainability_core::{ForwardOptions, HookFilter, HookKind, Hooks, LanguageModel};
use tch::Tensor;

const TEXT: &str = "The history of the city begins long before the first written records. \
Farmers settled along the river, built terraces on the hills and traded grain, wool and salt \
with the villages downstream. Over the centuries the settlement grew into a market town, then \
into a walled city with a cathedral, a university and a harbour that connected it to distant \
ports. Merchants, scholars and craftsmen arrived from every direction, bringing new languages, \
recipes, songs and ideas. Today the old town is a maze of narrow streets, small squares and \
quiet courtyards, where visitors can still find the stone markers that once showed the height \
of the great floods.";

fn threads() -> i32 {
    std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn forward(c: &mut Criterion) {
    tch::set_num_threads(threads());
    let model = match load(smollm2_gguf_path()) {
        Ok(m) => m,
        Err(e) => panic!("SmolLM2 is needed for this benchmark (run `cargo xtask setup`): {e}"),
    };
    // The passage twice gives well over 128 tokens.
    let all_ids = model.encode(&format!("{TEXT} {TEXT}"), false).unwrap_or_default();
    assert!(all_ids.len() >= 128, "benchmark text must yield at least 128 tokens");
    let _guard = tch::no_grad_guard();
    let mut group = c.benchmark_group("forward");
    group.sample_size(20);
    for n in [8usize, 128] {
        let ids = Tensor::from_slice(&all_ids[..n]).unsqueeze(0);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("plain", n), &ids, |b, ids| {
            b.iter(|| {
                model
                    .forward_ids(ids, &ForwardOptions::default(), &mut Hooks::new())
                    .map(|o| o.logits)
            })
        });
        group.bench_with_input(BenchmarkId::new("capture_patterns", n), &ids, |b, ids| {
            b.iter(|| {
                let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
                let out = model.forward_ids(ids, &ForwardOptions::default(), &mut hooks);
                (out.map(|o| o.logits), hooks.take_cache())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
