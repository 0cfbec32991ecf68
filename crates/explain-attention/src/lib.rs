//! Attention explainability on any [`explainability_core::LanguageModel`].
//!
//! - [`AttentionCapture`]: every layer's attention probabilities per query head, captured
//!   through the `blocks.{l}.attn.hook_pattern` hook points of the model's own forward pass.
//! - [`PatternMetrics`] / [`AttentionMetrics`]: locality, sparsity, entropy (raw and
//!   normalised), focus and mean attended distance over valid entries only, per head, layer
//!   and model.
//! - [`HeadRoleScores`]: previous-token, duplicate-token, induction, first-token and self
//!   heads; [`HeadAblation`] zero- or mean-ablates heads through `hook_z` to test a role
//!   causally; [`AblatedModel`] is a model with heads ablated, usable by every explainer.
//! - [`attention_rollout`] and [`attention_flow`] (Abnar & Zuidema 2020, arXiv:2005.00928);
//!   [`rollout_row`] for one row in O(L·n²), [`attention_flow_budgeted`] exact within an edge
//!   budget and on a coarsened graph (an upper bound per token segment) beyond it.
//! - [`AttentionExplainer`]: attention (last layer, rollout or flow) as an
//!   [`explainability_core::Explainer`], to compare and evaluate it beside gradient methods.
//! - [`AttentionAnalysis`] → [`AttentionReport`] with summaries in English and Chinese.
//!
//! # Examples
//! ```no_run
//! use explain_attention::AttentionAnalysis;
//! let model = explain_models::load(explain_models::smollm2_gguf_path())?;
//! let report = AttentionAnalysis::new().run(&model, "The capital of France is")?;
//! for line in &report.summary_en {
//!     println!("{line}");
//! }
//! # Ok::<(), explainability_core::Error>(())
//! ```

mod ablated;
mod capture;
mod explainers;
mod metrics;
mod report;
mod roles;
mod rollout;

pub use ablated::AblatedModel;
pub use capture::AttentionCapture;
pub use explainers::{AttentionExplainer, AttentionMeans, AttentionScore};
pub use metrics::{AttentionMetrics, DEFAULT_SPARSITY_THRESHOLD, PatternMetrics};
pub use report::{
    AttentionAnalysis, AttentionReport, DIFFUSE_ABOVE, FLOW_EDGES_PER_SECOND, FOCUSED_BELOW,
    LOCAL_ABOVE, LONG_RANGE_BELOW, ROLE_THRESHOLD, StepStart, VERY_SPARSE_ABOVE,
};
pub use roles::{
    AblationMode, HeadAblation, HeadRole, HeadRoleScores, RoleHead, duplicate_token_score,
    first_token_score, induction_score, previous_token_score, repeated_random_tokens, self_score,
};
pub use rollout::{
    DEFAULT_FLOW_MAX_EDGES, FlowRow, MaxFlowAlgorithm, attention_flow, attention_flow_budgeted,
    attention_flow_segments, attention_rollout, augmented, flow_edges, flow_segments, rollout_row,
};
