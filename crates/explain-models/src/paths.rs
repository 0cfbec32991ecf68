//! Where `cargo xtask setup` puts the real models, so examples and tests find them.

use std::path::PathBuf;

use crate::pins::{GEMMA3_270M, MINILM, SMOLLM2};

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
    default_model_dir().join(SMOLLM2.folder()).join(SMOLLM2.model_path)
}

/// The Gemma 3 270M Q4_K_M GGUF file assembled by `cargo xtask setup`.
pub fn gemma3_gguf_path() -> PathBuf {
    default_model_dir().join(GEMMA3_270M.folder()).join(GEMMA3_270M.file)
}

/// The all-MiniLM-L6-v2 Hugging Face folder fetched by `cargo xtask setup`.
pub fn minilm_dir() -> PathBuf {
    default_model_dir().join(MINILM.folder()).join(MINILM.model_path)
}
