//! Shared vocabulary of the `explainability` workspace.
//!
//! - [`Error`] / [`Result`]: the one error type every crate returns.
//! - [`HookPoint`] / [`HookKind`]: named activation sites, spelled as TransformerLens does.
//! - [`Hooks`], [`HookFilter`], [`ActivationCache`]: read, replace or store activations
//!   during a forward pass.
//! - [`LanguageModel`]: what explainers need from a model (tokenise, embed, run from
//!   embeddings with hooks, logits, facts in [`ModelInfo`]).
//! - [`Explanation`], [`Target`], [`Explainer`]: what explainers produce, what they explain,
//!   and the trait every method implements.
//! - [`ExplainInput`], [`length_batches`], [`RightPadded`]: several inputs per forward pass
//!   ([`Explainer::explain_batch`]), grouped by length, right-padded with a mask.
//! - [`KeyValueCache`]: a prefix's keys and values, to continue a causal model's forward.
//! - [`evaluate_removals`] / [`RemovalStrategy`]: the one implementation of re-running a
//!   model on inputs with tokens removed (batched, with prefix reuse), used by the fidelity
//!   metrics and the perturbation explainers alike; [`pearson`] / [`spearman`] correlations.
//! - [`BlockwiseForward`], [`BackwardMemory`], [`gradients`]: a forward pass run block by
//!   block, and gradients that recompute each block instead of holding its activations.
//! - [`SharedPasses`]: passes several methods explaining one input share (the input
//!   gradient, the attention capture, the resolved target).
//! - [`ProcessMemory`]: resident and peak memory of the process, for measurements.
//! - [`RelevanceRule`], [`divide_gradient`], [`identity_rule`]: layer-wise relevance
//!   propagation (AttnLRP, CP-LRP) as a mode of a model's own forward pass.

mod batching;
mod blockwise;
mod correlation;
mod error;
mod explanation;
mod hook_point;
mod hooks;
mod jsonl;
pub mod memory;
mod model;
mod relevance;
mod removal;
mod rng;
mod shared;
mod steps;

pub use batching::{ExplainInput, RightPadded, all_finite, length_batches};
pub use blockwise::{
    BackwardMemory, BlockwiseForward, Gradients, Objective, RecomputedBackward, gradients,
};
pub use correlation::{pearson, spearman};
pub use error::{Error, Result};
pub use explanation::{Explainer, Explanation, Target, TargetOutput, TargetToken};
pub use hook_point::{HookKind, HookPoint};
pub use hooks::{ActivationCache, HookFilter, Hooks, ReadFn, ReplaceFn};
pub use jsonl::resume_jsonl;
pub use memory::{ProcessMemory, process_cpu_seconds};
pub use model::{
    Architecture, ForwardOptions, KeyValueCache, LanguageModel, LayerKeyValues, ModelInfo,
    ModelOutput, NormScale, SpecialTokens, TokenPrediction, check_positions, top_predictions,
};
pub use relevance::{IDENTITY_RULE_EPSILON, RelevanceRule, divide_gradient, identity_rule};
pub use removal::{
    RemovalOptions, RemovalStrategy, RemovalValues, evaluate_removals, evaluate_removals_with,
};
pub use rng::SplitMix64;
pub use shared::{RESOLVED_TARGET, ResolvedTarget, SharedPasses};
pub use steps::{StepOutcome, StepRecord};

/// Re-export of ndarray, in which explanations hold their scores.
pub use ndarray;
/// Re-export of the tensor library, so dependants use the same version.
pub use tch;
