//! The recomputed backward pass holds only the residual stream at block boundaries: saliency on
//! 512 tokens of SmolLM2 raises the peak resident set by far less than the activations plain
//! autograd holds. Its own test binary (one test, one process), so the peak is this test's.
//!
//! Measured by the `long_context` example at 512 tokens: plain autograd raises the peak by
//! 473 MiB (≈ 0.9 MiB per token of held activations), the recomputed pass by 90 MiB (31
//! residual states, ≈ 36 MiB, plus one block's activations). The bound, 250 MiB, sits between
//! the two with room for allocator slack on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_gradients::{Saliency, SaliencyNorm};
use explain_models::{load, smollm2_gguf_path};
use explainability_core::{Explainer, LanguageModel, RecomputedBackward, Target};

const TOKENS: usize = 512;
const BOUND_MIB: f64 = 250.0;

fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

#[test]
fn recomputed_saliency_on_512_tokens_stays_within_the_residual_budget() {
    tch::set_num_threads(1);
    let model = load(smollm2_gguf_path()).expect("run `cargo xtask setup`");
    let text = "The river left its banks in the spring, and the village moved to the hill. ";
    let one = model.encode(text, false).unwrap();
    let ids: Vec<i64> = one.iter().copied().cycle().take(TOKENS).collect();
    let bounded = RecomputedBackward::new(&model);
    // Warm-up on a short input (allocator pools, thread-local buffers), then reset the peak to
    // the current resident set (Linux `clear_refs` value 5).
    Saliency::default().explain_ids(&bounded, &ids[..64], &Target::argmax()).unwrap();
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_mib("VmHWM:");
    assert!(before <= status_mib("VmRSS:") + 16.0, "the peak was not reset");
    let e =
        Saliency { norm: SaliencyNorm::L2 }.explain_ids(&bounded, &ids, &Target::argmax()).unwrap();
    let growth = status_mib("VmHWM:") - before;
    eprintln!("peak grew by {growth:.0} MiB");
    assert_eq!(e.scores.len(), TOKENS);
    assert!(e.scores.iter().all(|s| s.is_finite()));
    assert!(
        growth < BOUND_MIB,
        "recomputed saliency on {TOKENS} tokens raised the peak by {growth:.0} MiB"
    );
}
