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
//! - [`RelevanceRule`], [`divide_gradient`], [`identity_rule`]: layer-wise relevance
//!   propagation (AttnLRP, CP-LRP) as a mode of a model's own forward pass.

mod error;
mod explanation;
mod hook_point;
mod hooks;
mod model;
mod relevance;
mod rng;

pub use error::{Error, Result};
pub use explanation::{Explainer, Explanation, Target, TargetOutput, TargetToken};
pub use hook_point::{HookKind, HookPoint};
pub use hooks::{ActivationCache, HookFilter, Hooks, ReadFn, ReplaceFn};
pub use model::{
    Architecture, ForwardOptions, LanguageModel, ModelInfo, ModelOutput, NormScale, SpecialTokens,
    TokenPrediction, check_positions,
};
pub use relevance::{IDENTITY_RULE_EPSILON, RelevanceRule, divide_gradient, identity_rule};
pub use rng::SplitMix64;

/// Re-export of ndarray, in which explanations hold their scores.
pub use ndarray;
/// Re-export of the tensor library, so dependants use the same version.
pub use tch;
