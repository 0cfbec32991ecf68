//! `explainability`: explain what large language models do, on libtorch.
//!
//! This facade re-exports the workspace's crates so that one dependency brings everything:
//! - [`core`]: errors, hook points, hooks, the [`LanguageModel`] trait;
//! - [`models`]: the hooked Llama-family implementation and its GGUF / Hugging Face loaders;
//! - [`attention`]: captured patterns, pattern metrics, head roles and ablation, attention
//!   rollout and flow, and a bilingual [`AttentionReport`];
//! - [`gradients`]: saliency, gradient×input, SmoothGrad, integrated gradients (exact
//!   quadrature rules and completeness-guided adaptive quadrature), layer IG, generation
//!   attribution and gradient flow.
//!
//! # Examples
//! ```no_run
//! use explainability::{load, LanguageModel};
//! let model = load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let best = &model.top_next_tokens("The capital of France is", 1)?[0];
//! println!("{} ({:.1}%)", best.token, 100.0 * best.probability);
//! # Ok::<(), explainability::Error>(())
//! ```

pub use explain_attention as attention;
pub use explain_eval as eval;
pub use explain_gradients as gradients;
pub use explain_models as models;
pub use explain_viz as viz;
pub use explainability_core as core;

pub use explain_attention::{AttentionAnalysis, AttentionCapture, AttentionReport};
pub use explain_models::{
    LlamaModel, LoadOptions, MODEL_DIR_ENV, Precision, default_model_dir, load, load_with,
    minilm_dir, smollm2_gguf_path,
};
pub use explainability_core::{
    ActivationCache, Architecture, Error, Explainer, Explanation, ForwardOptions, HookFilter,
    HookKind, HookPoint, Hooks, LanguageModel, ModelInfo, ModelOutput, Result, SpecialTokens,
    Target, TokenPrediction,
};

/// The README's code blocks, compiled as doctests so that the README stays true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
