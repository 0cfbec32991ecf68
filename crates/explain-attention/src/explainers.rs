//! Attention as an [`Explainer`]: one score per input token read from the attention of the
//! explained position — raw (last layer, mean over heads), rolled out, or as max-flow (Abnar &
//! Zuidema 2020, arXiv:2005.00928).
//!
//! Attention says where information was routed, not which output it supports: these scores
//! are the same for every target token at a position, and non-negative. They are offered so
//! that attention can be compared with gradient attributions on the same footing (and
//! evaluated by the same fidelity metrics), which is where its limits show.

use explainability_core::{
    Error, Explainer, Explanation, LanguageModel, ResolvedTarget, Result, SharedPasses, Target,
};
use ndarray::{Array1, Array2, Axis};
use serde_json::json;

use crate::capture::AttentionCapture;
use crate::rollout::{
    DEFAULT_FLOW_MAX_EDGES, FlowRow, MaxFlowAlgorithm, attention_flow_budgeted, rollout_row,
};

/// Which attention-derived score an [`AttentionExplainer`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionScore {
    /// Row of the explained position in the last layer's pattern, averaged over heads.
    LastLayer,
    /// Row of the explained position in the attention rollout over all layers.
    Rollout,
    /// Attention flow from the explained position's top node to every input token.
    Flow,
}

/// Explains a position by the attention paid from it: see [`AttentionScore`].
#[derive(Debug, Clone, Copy)]
pub struct AttentionExplainer {
    score: AttentionScore,
}

impl AttentionExplainer {
    /// An explainer reporting `score`.
    pub fn new(score: AttentionScore) -> Self {
        Self { score }
    }

    /// Last layer, mean over heads.
    pub fn last_layer() -> Self {
        Self::new(AttentionScore::LastLayer)
    }

    /// Attention rollout.
    pub fn rollout() -> Self {
        Self::new(AttentionScore::Rollout)
    }

    /// Attention flow.
    pub fn flow() -> Self {
        Self::new(AttentionScore::Flow)
    }

    /// Scores of every input token for the query at `position`, from a capture.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a position past the input or an empty capture.
    ///
    /// Flow is computed within [`DEFAULT_FLOW_MAX_EDGES`] (coarsened beyond it, see
    /// [`attention_flow_budgeted`]); [`AttentionExplainer::flow_row`] says which.
    pub fn scores(&self, capture: &AttentionCapture, position: usize) -> Result<Array1<f64>> {
        Ok(self.scores_of_means(&AttentionMeans::of(capture), position)?.0)
    }

    /// The attention-flow row of `position` within [`DEFAULT_FLOW_MAX_EDGES`], with the
    /// segments it was coarsened to when the exact row was over that budget.
    ///
    /// # Errors
    /// As [`AttentionExplainer::scores`].
    pub fn flow_row(&self, capture: &AttentionCapture, position: usize) -> Result<FlowRow> {
        flow_of_means(&AttentionMeans::of(capture), position)
    }

    /// Scores for `position` from head means, with the flow's segments when it was coarsened.
    fn scores_of_means(&self, means: &AttentionMeans, position: usize) -> Result<Scored> {
        if position >= means.tokens.len() {
            return Err(Error::invalid_argument(format!(
                "position {position} is past the input's {} tokens",
                means.tokens.len()
            )));
        }
        let last = means
            .means
            .last()
            .ok_or_else(|| Error::invalid_argument("attention capture of zero layers"))?;
        Ok(match self.score {
            AttentionScore::LastLayer => (last.index_axis(Axis(0), position).to_owned(), None),
            AttentionScore::Rollout => (rollout_row(&means.means, position)?, None),
            AttentionScore::Flow => {
                let row = flow_of_means(means, position)?;
                (row.scores, row.segments)
            }
        })
    }

    /// Stores `means` (of `ids`) in `shared`, for attention explainers of the same input and
    /// target that run later: a caller that already captured the attention (the analyzer)
    /// spares them a capture of their own. Returns whether it was stored (`shared` is for
    /// `ids` and `target`).
    pub fn share_means(
        shared: &mut SharedPasses,
        ids: &[i64],
        target: &Target,
        means: AttentionMeans,
    ) -> bool {
        shared.insert(HEAD_MEANS, ids, target, means)
    }

    fn explain_from_means(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
        means: &AttentionMeans,
        resolved: ResolvedTarget,
    ) -> Result<Explanation> {
        let position = target.position_index(ids.len() as i64)? as usize;
        let (scores, segments) = self.scores_of_means(means, position)?;
        let mut e = Explanation::new(
            self.name(),
            ids.to_vec(),
            means.tokens.clone(),
            scores,
            resolved.target,
        )?;
        if let Some(id) = e.target.token_id() {
            e.target_token = model.token_strings(&[id])?.into_iter().next();
        }
        e.target_value = Some(resolved.value);
        e.metadata.insert("position".into(), json!(position));
        e.metadata.insert("target_dependent".into(), json!(false));
        if let Some(segments) = segments {
            e.metadata.insert("approximated".into(), json!(format!(
                "attention flow on a graph coarsened to {} token segments (the exact row is over the edge budget of {DEFAULT_FLOW_MAX_EDGES})",
                segments.len()
            )));
            e.metadata.insert("flow_segments".into(), json!(segments));
        }
        Ok(e)
    }
}

/// Scores per token, and the segments of a coarsened flow.
type Scored = (Array1<f64>, Option<Vec<[usize; 2]>>);

/// Key of the [`AttentionMeans`] entry in [`SharedPasses`].
const HEAD_MEANS: &str = "explain_attention::head_means";

/// What the attention explainers read from a capture: each layer's head-averaged pattern
/// (f64, `[query, key]`), the tokens and whether the model is causal — a head's share of the
/// capture's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMeans {
    /// A readable string per token.
    pub tokens: Vec<String>,
    /// Whether row `i` has `i + 1` valid keys.
    pub causal: bool,
    /// One `[query, key]` mean over heads per layer.
    pub means: Vec<Array2<f64>>,
}

impl AttentionMeans {
    /// The head means of `capture`.
    pub fn of(capture: &AttentionCapture) -> Self {
        Self { tokens: capture.tokens.clone(), causal: capture.causal, means: capture.head_means() }
    }
}

fn flow_of_means(means: &AttentionMeans, position: usize) -> Result<FlowRow> {
    attention_flow_budgeted(
        &means.means,
        position,
        means.causal,
        MaxFlowAlgorithm::default(),
        DEFAULT_FLOW_MAX_EDGES,
    )
}

impl Explainer for AttentionExplainer {
    fn name(&self) -> &str {
        match self.score {
            AttentionScore::LastLayer => "attention_last_layer",
            AttentionScore::Rollout => "attention_rollout",
            AttentionScore::Flow => "attention_flow",
        }
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        let means = AttentionMeans::of(&AttentionCapture::from_ids(model, ids)?);
        // The target is resolved (argmax fixed, ids checked) on the clean logits so that the
        // explanation names what it is about, although attention does not depend on it.
        let resolved = ResolvedTarget::of(model, ids, target)?;
        self.explain_from_means(model, ids, target, &means, resolved)
    }

    /// One capture (its head means) and one target resolution for every attention
    /// explainer of the input, and for other methods that resolve the target.
    fn explain_ids_shared(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<Explanation> {
        if !shared.is_for(ids, target) {
            return self.explain_ids(model, ids, target);
        }
        let reused = shared.get::<AttentionMeans>(HEAD_MEANS, ids, target).is_some();
        if !reused {
            let means = AttentionMeans::of(&AttentionCapture::from_ids(model, ids)?);
            shared.insert(HEAD_MEANS, ids, target, means);
        }
        let resolved = shared.resolve(model, ids, target)?;
        let means = shared
            .get::<AttentionMeans>(HEAD_MEANS, ids, target)
            .ok_or_else(|| Error::invalid_argument("attention means were not stored"))?;
        let mut e = self.explain_from_means(model, ids, target, means, resolved)?;
        if reused {
            e.metadata.insert("shared_pass".into(), json!("attention_head_means"));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ndarray::Array3;

    fn capture() -> AttentionCapture {
        // One layer, one head: row 1 attends 0.25 / 0.75.
        let p = Array3::from_shape_vec((1, 2, 2), vec![1.0f32, 0.0, 0.25, 0.75]).unwrap();
        AttentionCapture {
            token_ids: vec![5, 6],
            tokens: vec!["a".into(), "b".into()],
            causal: true,
            patterns: vec![p],
        }
    }

    #[test]
    fn scores_read_the_explained_row() {
        let c = capture();
        let last = AttentionExplainer::last_layer().scores(&c, 1).unwrap();
        assert_eq!(last.to_vec(), vec![0.25, 0.75]);
        // Rollout of one layer: (A + I) row-normalised → [0.125, 0.875].
        let roll = AttentionExplainer::rollout().scores(&c, 1).unwrap();
        assert!((roll[0] - 0.125).abs() < 1e-12 && (roll[1] - 0.875).abs() < 1e-12);
        // With one layer, flow equals the augmented row.
        let flow = AttentionExplainer::flow().scores(&c, 1).unwrap();
        assert!((flow[0] - 0.125).abs() < 1e-9 && (flow[1] - 0.875).abs() < 1e-9);
        assert!(matches!(
            AttentionExplainer::rollout().scores(&c, 2),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
