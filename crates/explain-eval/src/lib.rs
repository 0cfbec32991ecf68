//! Quality of explanations: fidelity, stability, completeness, comprehensibility, the
//! parameter-randomisation sanity check, a dataset evaluator and a seeded random control
//! explainer.
//!
//! * [`comprehensibility`]: Gini sparseness, entropy complexity and effective number of tokens
//!   of `|a|`.
//! * [`completeness`]: IG residual relative to `|F(x) − F(x')|` and the top-k share of `|a|`.
//! * [`fidelity`]: ERASER comprehensiveness / sufficiency with AOPC (arXiv 1911.03429),
//!   deletion and insertion curves, faithfulness correlation (arXiv 2005.00631) and
//!   leave-one-out Kendall τ, every edited input re-run in batches.
//! * [`stability`]: max-sensitivity (arXiv 1901.09392) and local Lipschitz estimate
//!   (arXiv 1806.08049) under embedding noise, rank stability under perturbation and
//!   across seeds ([`seed_stability`]).
//! * [`parameter_randomisation`]: cascading model parameter randomisation (Adebayo et al.
//!   2018, arXiv 1810.03292) with a verdict on whether the explanation depends on the model.
//! * [`compute_all_metrics`] and [`Evaluator`]: every family for one explainer and text, or
//!   many explainers over a dataset streamed to JSONL with a bootstrap summary table.
//! * [`RandomExplainer`]: the control every real method should beat.
//! * [`PrecomputedExplainer`]: explanations made elsewhere (another tool, a timed pass), scored
//!   by the same metrics.
//! * [`prompts::FACTUAL`]: the 20 factual prompts of the SmolLM2 sanity checks.

mod completeness;
mod comprehensibility;
mod evaluator;
mod fidelity;
mod precomputed;
pub mod prompts;
mod random;
mod sanity;
mod stability;
mod stats;

pub use completeness::{Completeness, completeness};
pub use comprehensibility::{
    Comprehensibility, comprehensibility, effective_tokens, entropy_complexity, gini_sparseness,
};
pub use evaluator::{
    CONTROL_METRICS, ControlCheck, ControlComparison, ControlVerdict, EvaluationRecord,
    EvaluationSummary, Evaluator, ExampleMetrics, FLOAT_TIE, METRIC_NAMES, MetricValues,
    MetricsConfig, RandomControl, SMALL_SAMPLE, Scalars, SummaryRow, compare_paired,
    compute_all_metrics, metrics_of_explanation, random_control_fidelity,
};
/// Re-exported from explainability-core, where the edited re-runs live (so that sibling crates
/// need not depend on this one); paths through `explain_eval` keep working.
pub use explainability_core::{
    RemovalOptions, RemovalStrategy, RemovalValues, evaluate_removals, evaluate_removals_with,
};
pub use fidelity::{FidelityConfig, FidelityReport, fidelity};
pub use precomputed::PrecomputedExplainer;
pub use random::RandomExplainer;
pub use sanity::{
    RandomisationConfig, RandomisationReport, RandomisationStep, parameter_randomisation,
    parameter_randomisation_many,
};
pub use stability::{RankStability, StabilityConfig, StabilityReport, seed_stability, stability};
pub use stats::{
    SummaryStats, kendall_tau, pearson, spearman, summarize, top_k_overlap, trapezoid_auc,
};
