//! Captured patterns against transformers' `output_attentions` on the same SmolLM2 weights
//! (reference written by `reference/parity_reference.py`; run through `cargo xtask parity`).
//! Tolerance 1e-5: probabilities bounded by 1, softmax in f32 on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use explain_attention::AttentionCapture;
use explain_models::{load, smollm2_gguf_path};
use tch::Tensor;

#[test]
fn captured_patterns_equal_transformers_output_attentions() {
    let dir =
        std::env::var_os("EXPLAINABILITY_PARITY_DIR").map(PathBuf::from).unwrap_or_else(|| {
            panic!("EXPLAINABILITY_PARITY_DIR is not set: run `cargo xtask parity`")
        });
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("smollm2_reference.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let model = load(smollm2_gguf_path()).unwrap();
    for name in ["english", "chinese", "code", "one_token", "long"] {
        let ids: Vec<i64> = Vec::try_from(&reference[&format!("{name}.input_ids")]).unwrap();
        let capture = AttentionCapture::from_ids(&model, &ids).unwrap();
        assert_eq!(capture.n_layers(), 30);
        for (l, ours) in capture.patterns.iter().enumerate() {
            let hf: Vec<f32> =
                Vec::try_from(reference[&format!("{name}.attn.{l}")].flatten(0, -1)).unwrap();
            let worst = ours.iter().zip(&hf).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert_eq!(ours.len(), hf.len(), "{name} layer {l} shape");
            assert!(worst < 1e-5, "{name} layer {l}: max |Δ| {worst}");
        }
    }
}
