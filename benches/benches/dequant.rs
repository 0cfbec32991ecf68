//! `dequant` group: our GGUF dequantisation kernels on 1 Mi values of random blocks of every
//! supported quantised type (f16 scales set to finite values), with 1 thread and with
//! `EXPLAINABILITY_THREADS` (default 2); throughput in values per second.
//!
//! The side-by-side with gguf-py's numpy reference on the whole Gemma 3 270M file is
//! `cargo xtask bench-dequant` (docs/benchmarks.md).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::num::NonZeroUsize;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use explain_models::gguf::{dequantize_into, ggml_type_name};
use explainability_core::SplitMix64;

/// Values per benchmark input.
const VALUES: usize = 1 << 20;

/// (GGML type id, values per block, bytes per block, offsets of the f16 scale fields).
const TYPES: [(u32, usize, usize, &[usize]); 11] = [
    (2, 32, 18, &[0]),        // Q4_0
    (3, 32, 20, &[0, 2]),     // Q4_1
    (6, 32, 22, &[0]),        // Q5_0
    (7, 32, 24, &[0, 2]),     // Q5_1
    (8, 32, 34, &[0]),        // Q8_0
    (20, 32, 18, &[0]),       // IQ4_NL
    (10, 256, 84, &[80, 82]), // Q2_K
    (11, 256, 110, &[108]),   // Q3_K
    (12, 256, 144, &[0, 2]),  // Q4_K
    (13, 256, 176, &[0, 2]),  // Q5_K
    (14, 256, 210, &[208]),   // Q6_K
];

fn threads() -> usize {
    std::env::var("EXPLAINABILITY_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// Random blocks whose f16 fields hold small finite scales (as real files do).
fn random_blocks(block_values: usize, block_bytes: usize, scales: &[usize]) -> Vec<u8> {
    let mut rng = SplitMix64::new(7);
    let blocks = VALUES / block_values;
    let mut bytes: Vec<u8> =
        (0..blocks * block_bytes).map(|_| (rng.next_u64() >> 56) as u8).collect();
    for block in bytes.chunks_mut(block_bytes) {
        for &at in scales {
            // f16 with exponent 8..15 and a random mantissa: ~2^-7 .. 1.
            let bits: u16 = 0x2000 | ((rng.next_u64() >> 54) as u16 & 0x0FFF);
            if let Some(field) = block.get_mut(at..at + 2) {
                field.copy_from_slice(&bits.to_le_bytes());
            }
        }
    }
    bytes
}

fn dequant(c: &mut Criterion) {
    let mut group = c.benchmark_group("dequant");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(VALUES as u64));
    let mut out = vec![0f32; VALUES];
    let counts: Vec<usize> = if threads() > 1 { vec![1, threads()] } else { vec![1] };
    for (ggml_type, block_values, block_bytes, scales) in TYPES {
        let bytes = random_blocks(block_values, block_bytes, scales);
        for &n in &counts {
            let threads = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
            group.bench_with_input(
                BenchmarkId::new(ggml_type_name(ggml_type), format!("{n}_threads")),
                &bytes,
                |bench, bytes| {
                    bench.iter(|| {
                        if let Err(e) = dequantize_into(ggml_type, bytes, &mut out, threads) {
                            panic!("dequantising {}: {e}", ggml_type_name(ggml_type));
                        }
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, dequant);
criterion_main!(benches);
