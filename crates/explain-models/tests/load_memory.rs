//! Peak memory of a bf16 load of the real Gemma 3 270M Q4_K_M GGUF (issue 14, item 6): the
//! growth of the process's peak resident set over libtorch's baseline stays within 1.3× the
//! bf16 weights. This file holds one test so that the process's peak is this load's alone.
//!
//! What would break it: an f32 copy of a tensor (the 262144 × 640 embedding alone is 640 MiB
//! in f32, 1.25× the whole bf16 model), the file's mapped pages kept resident (241 MiB, 0.47×),
//! or a fresh f32 copy of every dequantised chunk handed to libtorch (glibc then keeps ≈ 110 MiB
//! of freed chunks resident: measured 1.65×; 1.49× before the pages were released per chunk;
//! 1.25× now).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_models::{LoadOptions, Precision, gemma3_gguf_path, load_with};
use explainability_core::{LanguageModel, ProcessMemory};

#[test]
fn a_bf16_gemma_load_peaks_within_1_3_times_its_weights() {
    // libtorch's allocator and thread pool first: they are the baseline, not the load.
    let warm = tch::Tensor::ones([1024, 1024], (tch::Kind::Float, tch::Device::Cpu));
    let _ = warm.sum(tch::Kind::Float).double_value(&[]);
    let Some(baseline) = ProcessMemory::now() else {
        eprintln!("no /proc/self/status here: peak memory is not measurable");
        return;
    };
    let model = load_with(gemma3_gguf_path(), LoadOptions::default().precision(Precision::Bf16))
        .expect("Gemma 3 GGUF (cargo xtask setup)");
    let peak = ProcessMemory::now().expect("read once already").peak_bytes;
    let weights: u64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64)
        .sum();
    // Every parameter is bf16 (norm weights included) and the head is the embedding.
    assert!(
        model.named_parameters().iter().all(|(_, t)| t.kind() == tch::Kind::BFloat16),
        "a parameter is not bf16"
    );
    // 268,098,176 parameters × 2 bytes; an untied head would add 320 MiB.
    assert_eq!(weights, 536_196_352, "bf16 bytes of Gemma 3 270M with a tied head");
    let ratio = (peak - baseline.peak_bytes.max(baseline.resident_bytes)) as f64 / weights as f64;
    eprintln!(
        "peak {:.0} MiB, baseline {:.0} MiB, weights {:.0} MiB: ratio {ratio:.3}",
        peak as f64 / 1048576.0,
        baseline.peak_mib(),
        weights as f64 / 1048576.0
    );
    assert!(ratio <= 1.3, "peak growth {ratio:.3}× the bf16 weights (bound 1.3×)");
}
