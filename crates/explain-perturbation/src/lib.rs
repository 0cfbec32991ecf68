//! Perturbation attribution for language models: which input tokens (or words, sentences,
//! spans) does the model's output depend on, measured by removing them and re-running it.
//!
//! Every method is a function of a [`Game`] — a set function `v(S)` over features — so that
//! one implementation explains a language model ([`ModelGame`]) and is tested on analytic set
//! functions ([`FnGame`]) against exact values:
//!
//! | method | cost in perturbed inputs | reference |
//! |---|---|---|
//! | [`feature_ablation`] (leave-one-out, occlusion windows, word/sentence/span groups) | `n` | Zeiler & Fergus 2014, arXiv 1311.2901 |
//! | [`exact_shapley`] (`n ≤` [`MAX_EXACT_FEATURES`]) | `2ⁿ − 1` | Shapley 1953 |
//! | [`shapley_sampling`] (antithetic option) | `≤ permutations · (n − 1) + 1` | Castro et al. 2009 |
//! | [`kernel_shap`] / [`kernel_shap_with`] | `samples + 1` | Lundberg & Lee 2017, arXiv 1705.07874 |
//! | [`lime`] / [`lime_with`] | `samples` | Ribeiro et al. 2016, arXiv 1602.04938 |
//! | [`context_cite`] (LASSO surrogate, held-out fit) | `ablations` | Cohen-Wang et al. 2024, arXiv 2409.00729 |
//!
//! `v(N)` comes free with resolving the target. Each distinct coalition is evaluated once.
//!
//! [`PerturbationExplainer`] implements [`Explainer`](explainability_core::Explainer) for
//! next-token and contrastive targets: features from [`FeatureKind`], tokens removed by
//! Delete, Replace(id) or a zero embedding ([`RemovalStrategy`]) and the edited inputs run in
//! batches by [`evaluate_removals`] (explainability-core) — the same code the fidelity
//! metrics use, so an explanation and its evaluation perturb the input the same way. On
//! causal models with a key/value cache every edited input reuses the keys and values of
//! the positions before its first change, computed once with the unedited input
//! ([`PerturbationExplainer::reuse_prefix`]; attributions equal the full recomputation up to
//! float reassociation). The explanation's metadata reports the cost (`forward_passes`,
//! `forward_equivalents`, `positions_reused`).
//! [`PerturbationExplainer::explain_continuation`] attributes every token of a given
//! continuation (Captum's `seq_attr` / `token_attr`) through a [`ContinuationGame`].
//!
//! Dependencies: explainability-core only among the workspace's crates (removal, batching and
//! the Spearman correlation live there); ndarray for the small regressions, solved by the hand-written, tested
//! solvers of [`solve`] (weighted least squares by Cholesky, LASSO by coordinate descent).

mod continuation;
mod explainer;
mod features;
mod game;
mod methods;
pub mod solve;

pub use continuation::{ContinuationAttribution, ContinuationGame};
pub use explainability_core::{RemovalStrategy, evaluate_removals};
pub use explainer::{ModelGame, PerturbationExplainer, PerturbationMethod};
pub use features::{FeatureKind, token_scores};
pub use game::{Attribution, FnGame, Game, SurrogateFit};
pub use methods::{
    ContextCiteOptions, MAX_EXACT_FEATURES, context_cite, exact_shapley, feature_ablation,
    kernel_shap, kernel_shap_with, lime, lime_kernel, lime_with, shapley_kernel, shapley_sampling,
};
