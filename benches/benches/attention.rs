//! `attention` group: attention rollout and attention flow on SmolLM2-sized inputs (30 layers,
//! causal head-averaged patterns drawn from a fixed seed), 16 and 64 tokens. Flow runs the
//! band-restricted Dinic's max-flow of `explain-attention` for the last token.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use explain_attention::{MaxFlowAlgorithm, attention_flow, attention_rollout};
use ndarray::{Array2, Axis};

const LAYERS: usize = 30;

/// Causal row-stochastic layers from a fixed linear congruential sequence.
fn layers(n: usize) -> Vec<Array2<f64>> {
    let mut state = 42u64;
    let mut next = || {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 / (1u64 << 53) as f64).powi(4)
    };
    (0..LAYERS)
        .map(|_| {
            let mut a =
                Array2::from_shape_fn((n, n), |(i, j)| if j <= i { next() + 1e-4 } else { 0.0 });
            for mut row in a.axis_iter_mut(Axis(0)) {
                let s = row.sum();
                row.mapv_inplace(|v| v / s);
            }
            a
        })
        .collect()
}

fn attention(c: &mut Criterion) {
    let mut group = c.benchmark_group("attention");
    group.sample_size(10);
    for n in [16usize, 64] {
        let a = layers(n);
        group.bench_with_input(BenchmarkId::new("rollout", n), &a, |b, a| {
            b.iter(|| attention_rollout(a))
        });
        group.bench_with_input(BenchmarkId::new("flow_last_token", n), &a, |b, a| {
            b.iter(|| attention_flow(a, n - 1, true, MaxFlowAlgorithm::Dinics))
        });
    }
    group.finish();
}

criterion_group!(benches, attention);
criterion_main!(benches);
