//! `explainability`: explain what large language models do, on libtorch.
//!
//! This facade re-exports the workspace's crates so that one dependency brings everything:
//! - [`core`]: errors, hook points, hooks, the [`LanguageModel`] trait;
//! - [`models`]: the one hooked decoder (every family a configuration), BERT encoders, and
//!   their GGUF / Hugging Face / Ollama loaders;
//! - [`attention`]: captured patterns, pattern metrics, head roles and ablation, attention
//!   rollout and flow, and a bilingual [`AttentionReport`];
//! - [`gradients`]: saliency, gradient×input, SmoothGrad, integrated gradients (exact
//!   quadrature rules and completeness-guided adaptive quadrature), layer IG, generation
//!   attribution, sentence-similarity attribution and gradient flow;
//! - [`circuits`]: logit lens, direct logit attribution, activation patching and attribution
//!   patching (AtP) over hook points;
//! - [`perturbation`]: leave-one-out, occlusion, feature ablation, exact and sampled Shapley
//!   values, KernelSHAP, LIME and a ContextCite surrogate;
//! - [`eval`]: fidelity, completeness, comprehensibility, sanity checks and the random control;
//! - [`viz`]: explanation graphs, charts and the self-contained HTML report.
//!
//! On top of them this crate adds the [`Framework`] (explainers registered by name, method
//! comparison with failures kept, aggregation), [`ModelComparison`] (several models with one
//! vocabulary: predictions, divergences, explanation similarity) and the [`Analyzer`]
//! (prediction, attention, attributions, their evaluation and a bilingual report in one call).
//!
//! # Using it from another crate
//! libtorch is not a cargo dependency: the README's "Using it from your own crate" says how to
//! provide it at build time (`LIBTORCH`, or `LIBTORCH_USE_PYTORCH`; `cargo xtask env` prints the
//! exports for this checkout's copy) and at run time (a `build.rs` that adds an rpath and keeps
//! `libtorch_cuda` linked), and CI builds that example crate outside the workspace. [`tch`] and
//! [`ndarray`] are re-exported, at the versions our types use, so a dependent crate needs
//! neither of its own.
//!
//! # Examples
//! The most likely next tokens:
//! ```no_run
//! use explainability::{load, LanguageModel};
//! let model = load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let best = &model.top_next_tokens("The capital of France is", 1)?[0];
//! println!("{} ({:.1}%)", best.token, 100.0 * best.probability);
//! # Ok::<(), explainability::Error>(())
//! ```
//!
//! Loading on another device or at another precision, then one method by name:
//! ```no_run
//! use explainability::tch::Device;
//! use explainability::{Framework, LoadOptions, Precision, Target, load_with};
//! let options =
//!     LoadOptions::default().device(Device::cuda_if_available()).precision(Precision::Bf16);
//! let model = load_with("SmolLM2-135M-Instruct.Q4_1.gguf", options)?;
//! let ig = Framework::with_defaults().explain(
//!     &model,
//!     "The capital of France is",
//!     "integrated_gradients",
//!     &Target::argmax(),
//! )?;
//! println!("{:?}", ig.top_k(3));
//! # Ok::<(), explainability::Error>(())
//! ```

mod analyzer;
mod comparison;
mod evaluation;
mod framework;
mod internals;
mod visualize;

pub use analyzer::{
    ANALYZER_METHODS, AnalysisBudget, Analyzer, ComprehensiveAnalysis, DISAGREE_BELOW, Finding,
    MethodAgreement, Report, SINK_ABOVE, STORED_ATTENTION_MAX_TOKENS, UNRELIABLE_DELTA_ABOVE,
    method_token_passes,
};
pub use evaluation::{EVALUATION_COLUMNS, INCONCLUSIVE_BELOW, MethodEvaluation, TOP_K_SHARE};
pub use internals::{
    INTERNALS_LENS_POSITIONS, INTERNALS_LENS_TOP_K, INTERNALS_TOP_COMPONENTS, InternalsReport,
};
pub use visualize::{FLOW_THRESHOLD, INTERACTION_THRESHOLD, LAYERED_ATTENTION_THRESHOLD};

pub use comparison::{
    DatasetComparison, ExplanationSimilarity, ModelComparison, ModelPrediction, TextComparison,
    TextFailure, spearman, top_k_jaccard,
};
pub use framework::{
    Aggregation, DEFAULT_METHODS, Framework, MethodComparison, MethodFailure, MethodOutcome,
    SEEDED_METHODS, aggregate,
};

pub use explain_attention as attention;
pub use explain_circuits as circuits;
pub use explain_eval as eval;
pub use explain_gradients as gradients;
pub use explain_models as models;
pub use explain_perturbation as perturbation;
pub use explain_viz as viz;
pub use explainability_core as core;

pub use explain_attention::{AttentionAnalysis, AttentionCapture, AttentionReport};
pub use explain_models::{
    AnyModel, DecoderModel, Family, LoadOptions, MODEL_DIR_ENV, Precision, SUPPORTED_FAMILIES,
    default_model_dir, load, load_with, minilm_dir, smollm2_gguf_path,
};
/// The `ndarray` in which explanations hold their scores (re-exported from core).
pub use explainability_core::ndarray;
/// The `tch` whose tensors and devices appear in this API (re-exported from core): use it
/// instead of a `tch` dependency of your own, so the versions always match.
pub use explainability_core::tch;
pub use explainability_core::{
    ActivationCache, Architecture, Error, ExplainInput, Explainer, Explanation, ForwardOptions,
    HookFilter, HookKind, HookPoint, Hooks, LanguageModel, ModelInfo, ModelOutput, Result,
    SharedPasses, SpecialTokens, StepOutcome, StepRecord, Target, TargetOutput, TargetToken,
    TokenPrediction, length_batches,
};

/// The README's code blocks, compiled as doctests so that the README stays true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
