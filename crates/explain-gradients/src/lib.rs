//! Gradient attribution for language models on libtorch.
//!
//! - [`QuadratureRule`], [`PathOptions`], [`path_integrated_gradients`],
//!   [`AdaptiveOptions`], [`adaptive_integrated_gradients`]: the model-independent
//!   integrated-gradients core (Sundararajan et al. 2017, arXiv:1703.01365) with exact
//!   quadrature rules, chunking, the convergence delta, and completeness-guided adaptive
//!   quadrature.
//! - Explainers on any [`LanguageModel`](explainability_core::LanguageModel), with respect to
//!   token embeddings: [`Saliency`], [`GradientXInput`], [`SmoothGrad`],
//!   [`IntegratedGradients`]; with respect to the residual stream:
//!   [`LayerIntegratedGradients`].
//! - [`RelevancePropagation`]: AttnLRP and CP-LRP (`attn_lrp`, `cp_lrp`) as a relevance mode
//!   of the model's own forward pass, one forward and one backward pass, with the
//!   per-dimension relevance map and its [`Conservation`].
//! - [`GenerationAttribution`]: the `[T_out, T_prompt + T_out]` matrix attributing each
//!   generated token's log-probability to every earlier token, rows sharing forward passes.
//! - [`SentenceSimilarity`]: attributes the cosine similarity of two texts' mean-pooled
//!   embeddings to the tokens of both texts.
//! - [`GradientFlowAnalysis`]: per-parameter and per-layer gradient statistics for a target.
//!
//! Every method takes gradients with `f_run_backward` with respect to embedding (or layer)
//! activations, never by reading embedding-weight gradients (the tied LM head would pollute
//! them).

mod adaptive;
mod flow;
mod generation;
mod gradient;
mod integrated;
mod lm;
mod lrp;
mod path;
mod quadrature;
mod similarity;

pub use adaptive::{AdaptiveAttribution, AdaptiveOptions, adaptive_integrated_gradients};
pub use flow::{GradientFlow, GradientFlowAnalysis, ParameterGradient};
pub use generation::{
    GenerationAttribution, GenerationMethod, SequenceAttribution, greedy_continuation,
};
pub use gradient::{GradientXInput, Saliency, SaliencyNorm, SmoothGrad};
pub use integrated::{Baseline, IntegratedGradients, LayerIntegratedGradients, Quadrature};
pub use lrp::{Conservation, Relevance, RelevancePropagation};
pub use path::{PathAttribution, PathOptions, path_integrated_gradients};
pub use quadrature::QuadratureRule;
pub use similarity::{SentenceSimilarity, SimilarityAttribution, SimilarityMethod, pooled_cosine};
