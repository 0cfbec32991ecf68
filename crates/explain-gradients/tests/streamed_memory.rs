//! Streamed quantised weights keep the weights out of memory (issue 15 item 2): loading SmolLM2
//! with `Weights::Streamed` and taking gradient × input on 128 tokens raises the process's peak
//! resident set by far less than the model's dequantised f32 weights. Its own test binary (one
//! test, one process), so the peak is this test's.
//!
//! What it measures: the peak over libtorch's baseline, load included. The dequantised weights
//! are 513 MiB (134.5 M parameters in f32, tied head); a model holding them — a resident load,
//! or streaming whose dequantised blocks autograd kept alive across blocks — exceeds the bound
//! by itself. Streaming holds the tokenizer, the norms, one block's matrices (14 MiB), the
//! dequantised head while the head's backward pass runs (108 MiB), the 31 saved residual states
//! and one block's activations; the `streamed_weights` example measures ≈ 200 MiB of growth
//! (docs/benchmarks.md). The bound, 350 MiB, sits between with room for allocator slack.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_gradients::GradientXInput;
use explain_models::{LoadOptions, Weights, load_with, smollm2_gguf_path};
use explainability_core::{Explainer, LanguageModel, ProcessMemory, Target};

const TOKENS: usize = 128;
const BOUND_MIB: f64 = 350.0;
/// SmolLM2-135M's parameters (tied head) in f32.
const DEQUANTISED_MIB: f64 = 134_515_008.0 * 4.0 / 1048576.0;

#[test]
fn streamed_smollm2_gradients_peak_far_below_its_dequantised_weights() {
    tch::set_num_threads(1);
    // libtorch's allocator and thread pool first: they are the baseline, not the model.
    let warm = tch::Tensor::ones([512, 512], (tch::Kind::Float, tch::Device::Cpu));
    let _ = warm.matmul(&warm).sum(tch::Kind::Float).double_value(&[]);
    let Some(baseline) = ProcessMemory::now() else {
        eprintln!("no /proc/self/status here: peak memory is not measurable");
        return;
    };
    let model =
        load_with(smollm2_gguf_path(), LoadOptions::default().weights(Weights::Streamed)).unwrap();
    let text = "The river left its banks in the spring, and the village moved to the hill. ";
    let one = model.encode(text, false).unwrap();
    let ids: Vec<i64> = one.iter().copied().cycle().take(TOKENS).collect();
    let e = GradientXInput.explain_ids(&model, &ids, &Target::argmax()).unwrap();
    assert_eq!(e.scores.len(), TOKENS);
    assert!(e.scores.iter().all(|s| s.is_finite()));
    let peak = ProcessMemory::now().unwrap().peak_bytes;
    let growth = (peak - baseline.peak_bytes.max(baseline.resident_bytes)) as f64 / 1048576.0;
    eprintln!(
        "peak grew by {growth:.0} MiB (dequantised weights {DEQUANTISED_MIB:.0} MiB, bound \
         {BOUND_MIB:.0} MiB)"
    );
    const { assert!(BOUND_MIB < DEQUANTISED_MIB * 0.75, "the bound must catch held weights") };
    assert!(
        growth < BOUND_MIB,
        "streamed G×I on {TOKENS} tokens raised the peak by {growth:.0} MiB"
    );
}
