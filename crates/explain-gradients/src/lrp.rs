//! Layer-wise relevance propagation for transformers at the cost of one gradient: AttnLRP
//! (Achtibat et al. 2024, arXiv:2402.05602) and CP-LRP (Ali et al. 2022, arXiv:2202.07304),
//! run as a relevance mode of the model's own forward pass
//! ([`ForwardOptions::relevance`](explainability_core::ForwardOptions::relevance)).
//!
//! The relevance of an embedding entry is `e ⊙ ∂F/∂e` under the rewritten backward pass
//! (Arras et al. 2025, arXiv:2502.15886); a token's relevance is the sum over `d_model`.
//! LRP conserves relevance: `Σ R ≈ F(x)`, short of what biases absorb (every linear bias,
//! LayerNorm's bias, positions added inside the model) and of the softmax rule's bias term, so
//! the gap is reported as the explanation's convergence delta (`Σ R − F(x)`, with an implicit
//! zero baseline).

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::Kind;

use explainability_core::{
    Error, ExplainInput, Explainer, Explanation, LanguageModel, RelevanceRule, Result, Target,
    TargetOutput,
};

use crate::lm::{explain_batch_with, explanation, prepare_with_gradient_under, sum_over_features};

/// AttnLRP or CP-LRP on token embeddings, for any model whose forward pass honours
/// [`ForwardOptions::relevance`](explainability_core::ForwardOptions::relevance) (every
/// decoder family and BERT here).
///
/// Cost: one forward and one backward pass, as gradient×input.
///
/// A token target is explained through its token's logit whatever its
/// [`TargetOutput`] (LRP puts relevance in at a pre-softmax output); a contrastive target is a
/// logit difference already (for GPT-2, whose logits are mostly negative, LXT recommends one).
///
/// # Examples
/// ```no_run
/// use explain_gradients::RelevancePropagation;
/// use explainability_core::{Explainer, Target};
/// # fn run(model: &dyn explainability_core::LanguageModel) -> explainability_core::Result<()> {
/// let e = RelevancePropagation::attn_lrp().explain(model, "The capital of France is", &Target::argmax())?;
/// println!("{:?} (Σ R − F(x) = {:?})", e.top_k(3), e.convergence_delta);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelevancePropagation {
    /// The propagation rules.
    pub rule: RelevanceRule,
}

/// How well relevance was conserved from the target to the embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Conservation {
    /// `Σ R` over every token and embedding dimension.
    pub relevance_sum: f64,
    /// `F(x)`, the target's value (the relevance put in at the output).
    pub target_value: f64,
    /// `Σ R − F(x)`.
    pub delta: f64,
    /// `|Σ R − F(x)| / |F(x)|` (infinite when `F(x) = 0` and `Σ R ≠ 0`).
    pub relative_error: f64,
}

impl Conservation {
    fn new(relevance_sum: f64, target_value: f64) -> Self {
        let delta = relevance_sum - target_value;
        let relative_error = if target_value != 0.0 {
            delta.abs() / target_value.abs()
        } else if delta == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        Self { relevance_sum, target_value, delta, relative_error }
    }
}

/// Relevance of every embedding entry, per token, and its conservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relevance {
    /// Token ids.
    pub ids: Vec<i64>,
    /// The target, resolved (argmax fixed).
    pub target: Target,
    /// `[pos, d_model]` relevance of each embedding entry.
    pub per_dimension: Array2<f64>,
    /// Relevance per token (sum over `d_model`).
    pub per_token: Vec<f64>,
    /// `Σ R` against `F(x)`.
    pub conservation: Conservation,
}

impl RelevancePropagation {
    /// AttnLRP (registered as `attn_lrp`).
    pub fn attn_lrp() -> Self {
        Self { rule: RelevanceRule::AttnLrp }
    }

    /// CP-LRP (registered as `cp_lrp`).
    pub fn cp_lrp() -> Self {
        Self { rule: RelevanceRule::CpLrp }
    }

    /// The relevance of `ids`' embeddings for `target`, with the per-dimension map.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`],
    /// [`Error::NonFinite`], model errors.
    pub fn relevance(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Relevance> {
        let (prepared, per_dimension, per_token, conservation) =
            self.compute(model, ids, target)?;
        let dims = per_dimension.size();
        let (pos, d) = match dims.as_slice() {
            [pos, d] => (*pos as usize, *d as usize),
            _ => {
                return Err(Error::ShapeMismatch {
                    what: "relevance".into(),
                    expected: "[pos, d_model]".into(),
                    actual: dims,
                });
            }
        };
        let flat: Vec<f64> = Vec::<f64>::try_from(&per_dimension.f_flatten(0, -1)?)?;
        let per_dimension = Array2::from_shape_vec((pos, d), flat)
            .map_err(|e| Error::invalid_argument(format!("relevance map: {e}")))?;
        Ok(Relevance {
            ids: prepared.ids,
            target: prepared.target,
            per_dimension,
            per_token,
            conservation,
        })
    }

    #[allow(clippy::type_complexity)]
    fn compute(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<(crate::lm::Prepared, tch::Tensor, Vec<f64>, Conservation)> {
        let target = logit_target(target);
        let (prepared, gradient) =
            prepare_with_gradient_under(model, ids, &target, Some(self.rule))?;
        let (relevance, per_token, conservation) = Self::relevance_of(&prepared, &gradient)?;
        Ok((prepared, relevance, per_token, conservation))
    }

    /// The relevance map, per-token relevance and conservation from the relevance-mode
    /// gradient.
    fn relevance_of(
        prepared: &crate::lm::Prepared,
        gradient: &tch::Tensor,
    ) -> Result<(tch::Tensor, Vec<f64>, Conservation)> {
        let relevance = gradient
            .f_to_kind(Kind::Double)?
            .f_mul(&prepared.embeddings.f_to_kind(Kind::Double)?)?;
        let per_token = sum_over_features(&relevance)?;
        let conservation = Conservation::new(per_token.iter().sum(), prepared.value);
        Ok((relevance, per_token, conservation))
    }
}

/// The logit of a token target's token (LRP puts relevance in at a logit, as LXT does; a
/// log-probability or probability target is explained through its token's logit); contrastive
/// targets are logit differences already.
fn logit_target(target: &Target) -> Target {
    match target {
        Target::Token { token, position, .. } => {
            Target::Token { token: *token, output: TargetOutput::Logit, position: *position }
        }
        other => other.clone(),
    }
}

impl Explainer for RelevancePropagation {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        let (prepared, _, scores, c) = self.compute(model, ids, target)?;
        self.finish(model, &prepared, scores, c)
    }

    /// One right-padded forward and backward pass in relevance mode for all inputs (see
    /// [`Explainer::explain_batch`]).
    fn explain_batch(
        &self,
        model: &dyn LanguageModel,
        inputs: &[ExplainInput<'_>],
    ) -> Vec<Result<Explanation>> {
        let targets: Vec<Target> = inputs.iter().map(|i| logit_target(i.target)).collect();
        let logit_inputs: Vec<ExplainInput<'_>> = inputs
            .iter()
            .zip(&targets)
            .map(|(i, target)| ExplainInput { ids: i.ids, target })
            .collect();
        explain_batch_with(
            model,
            &logit_inputs,
            Some(self.rule),
            // the logit target of a logit target is itself
            |i| self.explain_ids(model, i.ids, i.target),
            |prepared, gradient| {
                let (_, scores, c) = Self::relevance_of(prepared, gradient)?;
                self.finish(model, prepared, scores, c)
            },
        )
    }

    fn batches_inputs(&self) -> bool {
        true
    }
}

impl RelevancePropagation {
    fn finish(
        &self,
        model: &dyn LanguageModel,
        prepared: &crate::lm::Prepared,
        scores: Vec<f64>,
        c: Conservation,
    ) -> Result<Explanation> {
        let mut e = explanation(
            model,
            self.name(),
            prepared,
            scores,
            vec![
                ("rule", json!(self.rule.name())),
                ("explained_output", json!("logit")),
                ("relevance_sum", json!(c.relevance_sum)),
                ("conservation_relative_error", json!(c.relative_error)),
                // LRP decomposes F(x) itself: its implicit baseline value is zero.
                ("f_baseline", json!(0.0)),
            ],
        )?;
        e.convergence_delta = Some(c.delta);
        Ok(e)
    }
}
