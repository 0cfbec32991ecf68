//! Inside the model: where a prediction is computed.
//!
//! - [`LogitLens`]: every residual stream read through the final norm and the unembedding
//!   (top tokens, a target's rank and log-probability, KL to the final distribution).
//! - [`direct_logit_attribution`]: the final residual split into the embedding, every head,
//!   every MLP and the biases, projected on an answer direction (" Paris" − " London") with
//!   the final norm's scale frozen (and, in sandwich-norm families such as Gemma 3, each head
//!   through the post-attention norm with its scale frozen); the components sum to the logit
//!   difference.
//! - [`ActivationPatching`]: clean/corrupted prompts of equal length, noising or denoising,
//!   over resid_pre/mid/post, attn_out, mlp_out (layer × position) and per-head outputs and
//!   patterns (layer × head × position), many patched runs per forward batch, scored by the
//!   normalised logit difference.
//! - [`attribution_patching`]: AtP, the gradient estimate of every patch of a site from two
//!   forwards and one backward; [`attribution_patching_grad_drop`] adds AtP*'s GradDrop.
//! - [`CausalTracing`]: Meng et al.'s noised subject with one clean hidden state (or a window
//!   of MLP / attention outputs) restored at a time.
//!
//! - Pictures (through explain-viz, SVG and PNG): [`PatchingResult::heatmap`],
//!   [`CausalTrace::heatmap`], [`DirectLogitAttribution::head_heatmap`] /
//!   [`DirectLogitAttribution::layer_heatmap`], [`LogitLensResult::table`],
//!   [`token_group_heatmap`], and [`report_section`] for an HTML report.
//!
//! Everything talks to the model through [`LanguageModel`](explainability_core::LanguageModel)
//! and hook points only: activations are read and replaced by [`Hooks`](explainability_core::Hooks),
//! the final norm is [`LanguageModel::final_norm`](explainability_core::LanguageModel::final_norm)
//! and a post-attention norm [`LanguageModel::norm_at`](explainability_core::LanguageModel::norm_at),
//! and the output projection `blocks.{l}.attn.W_O` and unembedding (`unembed.W_U`, or
//! `embed.W_E` when tied) come from `named_parameters`. Results are plain serde structs.
//!
//! Dependencies: `tch` (tensors), `ndarray` (result grids), `serde` (results), explain-viz
//! (pictures).

mod atp;
mod dla;
mod lens;
mod metric;
mod patching;
mod pictures;
mod tracing;

pub use atp::{
    AtpFixes, attribution_patching, attribution_patching_grad_drop, attribution_patching_with,
};
pub use dla::{DirectLogitAttribution, DlaComponent, DlaComponentKind, direct_logit_attribution};
pub use lens::{
    LensCell, LensTarget, LensToken, LogitLens, LogitLensResult, lens_logits, lens_points,
    lens_residuals,
};
pub use metric::{LogitDiff, check_position, single_token};
pub use patching::{ActivationPatching, PatchDirection, PatchSite, PatchUnit, PatchingResult};
pub use pictures::{InternalsPictures, report_section, site_name, token_group_heatmap};
pub use tracing::{CausalTrace, CausalTracing, TOKEN_GROUPS, TraceKind, average_by_token_group};
