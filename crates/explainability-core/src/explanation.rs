//! What explainers produce and what they explain: [`Explanation`] (one score per input token,
//! serialisable), [`Target`] (which scalar of the model's output is explained) and the
//! [`Explainer`] trait every method implements.

use std::collections::BTreeMap;

use ndarray::Array1;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::batching::ExplainInput;
use crate::error::{Error, Result};
use crate::model::LanguageModel;
use crate::shared::SharedPasses;

/// Which token a next-token target is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetToken {
    /// The model's most likely token at the explained position (resolved on the unperturbed
    /// input and then held fixed).
    Argmax,
    /// A given token id.
    Id(i64),
}

/// Which quantity of that token is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TargetOutput {
    /// `log softmax(logits)[token]` (default: additive across independent evidence).
    #[default]
    LogProb,
    /// `softmax(logits)[token]`.
    Prob,
    /// The raw logit.
    Logit,
}

/// The scalar of the model's output an explanation is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// A quantity of one next token, read at `position` (`None`: the last position).
    Token {
        /// Which token.
        token: TargetToken,
        /// Which quantity.
        output: TargetOutput,
        /// Position whose prediction is explained (`None`: last).
        position: Option<usize>,
    },
    /// `logit[token] − logit[foil]` at `position` (e.g. " Paris" versus " London").
    Contrastive {
        /// The token argued for.
        token: i64,
        /// The alternative argued against.
        foil: i64,
        /// Position whose prediction is explained (`None`: last).
        position: Option<usize>,
    },
}

impl Default for Target {
    fn default() -> Self {
        Self::argmax()
    }
}

impl Target {
    /// Log-probability of the argmax next token at the last position.
    pub fn argmax() -> Self {
        Target::Token { token: TargetToken::Argmax, output: TargetOutput::LogProb, position: None }
    }

    /// Log-probability of `id` as the next token after the last position.
    pub fn log_prob(id: i64) -> Self {
        Target::Token { token: TargetToken::Id(id), output: TargetOutput::LogProb, position: None }
    }

    /// Logit difference `token − foil` at the last position.
    pub fn contrastive(token: i64, foil: i64) -> Self {
        Target::Contrastive { token, foil, position: None }
    }

    /// Replaces [`TargetToken::Argmax`] by the argmax id of `logits` (`[batch, pos, vocab]`,
    /// row 0), so that perturbed inputs are scored on the same token; checks ids and position.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`], [`Error::InvalidArgument`] for a position past the input.
    pub fn resolve(&self, logits: &Tensor) -> Result<Target> {
        let (seq, vocab) = logits_dims(logits)?;
        let check_id = |id: i64| check_token(id, vocab);
        let position = self.position_index(seq)?;
        Ok(match *self {
            Target::Token { token: TargetToken::Argmax, output, position: p } => {
                let id = logits
                    .f_select(0, 0)?
                    .f_select(0, position)?
                    .f_argmax(-1, false)?
                    .f_int64_value(&[])?;
                Target::Token { token: TargetToken::Id(id), output, position: p }
            }
            Target::Token { token: TargetToken::Id(id), .. } => {
                check_id(id)?;
                self.clone()
            }
            Target::Contrastive { token, foil, .. } => {
                check_id(token)?;
                check_id(foil)?;
                self.clone()
            }
        })
    }

    /// The same target read from logits that start at position `from` (the logits of a
    /// forward pass with [`ForwardOptions::logits_from`](crate::ForwardOptions) set):
    /// an explicit position `p` becomes `p − from`; the last position stays the last.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the explicit position lies before `from`.
    pub fn from_position(&self, from: usize) -> Result<Target> {
        let mut shifted = self.clone();
        let (Target::Token { position, .. } | Target::Contrastive { position, .. }) = &mut shifted;
        if let Some(p) = position {
            *p = p.checked_sub(from).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "target position {p} lies before the first computed logit position {from}"
                ))
            })?;
        }
        Ok(shifted)
    }

    /// The position index explained, for a sequence of `seq` positions.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the position is past the sequence.
    pub fn position_index(&self, seq: i64) -> Result<i64> {
        let position = match self {
            Target::Token { position, .. } | Target::Contrastive { position, .. } => *position,
        };
        match position {
            None => Ok(seq - 1),
            Some(p) if (p as i64) < seq => Ok(p as i64),
            Some(p) => Err(Error::invalid_argument(format!(
                "target position {p} is past the input's {seq} positions"
            ))),
        }
    }

    /// The target scalar for every batch row, differentiable.
    ///
    /// # Shapes
    /// `logits`: `[batch, pos, vocab]` → `[batch]` (f32).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the target still holds [`TargetToken::Argmax`]
    /// (call [`Target::resolve`] first); shape and range errors.
    pub fn evaluate(&self, logits: &Tensor) -> Result<Tensor> {
        let (seq, vocab) = logits_dims(logits)?;
        let position = self.position_index(seq)?;
        let last = logits.f_select(1, position)?.f_to_kind(Kind::Float)?; // [batch, vocab]
        match *self {
            Target::Token { token: TargetToken::Argmax, .. } => Err(Error::invalid_argument(
                "resolve an argmax target against the unperturbed logits before evaluating it",
            )),
            Target::Token { token: TargetToken::Id(id), output, .. } => {
                check_token(id, vocab)?;
                let values = match output {
                    TargetOutput::LogProb => last.f_log_softmax(-1, Kind::Float)?,
                    TargetOutput::Prob => last.f_softmax(-1, Kind::Float)?,
                    TargetOutput::Logit => last,
                };
                Ok(values.f_select(1, id)?)
            }
            Target::Contrastive { token, foil, .. } => {
                check_token(token, vocab)?;
                check_token(foil, vocab)?;
                Ok(last.f_select(1, token)?.f_sub(&last.f_select(1, foil)?)?)
            }
        }
    }

    /// The token id the target is about (`None` while unresolved).
    pub fn token_id(&self) -> Option<i64> {
        match self {
            Target::Token { token: TargetToken::Id(id), .. } => Some(*id),
            Target::Token { token: TargetToken::Argmax, .. } => None,
            Target::Contrastive { token, .. } => Some(*token),
        }
    }
}

/// `(pos, vocab)` of `[batch, pos, vocab]` logits.
fn logits_dims(logits: &Tensor) -> Result<(i64, i64)> {
    match logits.size().as_slice() {
        &[_, seq, vocab] => Ok((seq, vocab)),
        _ => Err(Error::ShapeMismatch {
            what: "logits".into(),
            expected: "[batch, pos, vocab]".into(),
            actual: logits.size(),
        }),
    }
}

/// Checks a token id against the vocabulary size.
fn check_token(id: i64, vocab: i64) -> Result<()> {
    if (0..vocab).contains(&id) {
        Ok(())
    } else {
        Err(Error::TokenOutOfRange { id, vocab_size: vocab as usize })
    }
}

/// One explanation: a score per input token for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// Method name (`"integrated_gradients"`, `"attention_rollout"`, …).
    pub method: String,
    /// Input token ids.
    pub token_ids: Vec<i64>,
    /// A readable string per token.
    pub tokens: Vec<String>,
    /// One score per token (signed where the method is signed).
    pub scores: Array1<f64>,
    /// The resolved target.
    pub target: Target,
    /// Readable form of the target token, where there is one.
    pub target_token: Option<String>,
    /// `F(x)`, the target's value on the input, where the method computed it.
    pub target_value: Option<f64>,
    /// Path methods: `Σ attributions − (F(x) − F(baseline))`.
    pub convergence_delta: Option<f64>,
    /// Method-specific facts (steps, baseline, rule, evaluations used, warnings).
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl Explanation {
    /// A new explanation; checks that tokens, ids and scores have one entry per token.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on mismatched lengths or an empty explanation.
    pub fn new(
        method: impl Into<String>,
        token_ids: Vec<i64>,
        tokens: Vec<String>,
        scores: Array1<f64>,
        target: Target,
    ) -> Result<Self> {
        let method = method.into();
        if token_ids.is_empty() {
            return Err(Error::invalid_argument(format!("{method}: explanation of zero tokens")));
        }
        if tokens.len() != token_ids.len() || scores.len() != token_ids.len() {
            return Err(Error::invalid_argument(format!(
                "{method}: {} ids, {} token strings and {} scores must match",
                token_ids.len(),
                tokens.len(),
                scores.len()
            )));
        }
        Ok(Self {
            method,
            token_ids,
            tokens,
            scores,
            target,
            target_token: None,
            target_value: None,
            convergence_delta: None,
            metadata: BTreeMap::new(),
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether the explanation has no tokens (never true for a constructed one).
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Token indices sorted by decreasing |score| (ties by position).
    pub fn ranking(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_by(|&a, &b| {
            self.scores[b].abs().total_cmp(&self.scores[a].abs()).then(a.cmp(&b))
        });
        order
    }

    /// The `k` tokens with the largest |score|, as (index, token, score).
    pub fn top_k(&self, k: usize) -> Vec<(usize, &str, f64)> {
        self.ranking()
            .into_iter()
            .take(k)
            .map(|i| (i, self.tokens[i].as_str(), self.scores[i]))
            .collect()
    }
}

/// A method that explains a model's target with one score per input token.
pub trait Explainer {
    /// Stable method name.
    fn name(&self) -> &str;

    /// Explains `target` on the token ids `ids` (no special tokens added).
    ///
    /// # Errors
    /// Model and method errors.
    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation>;

    /// Explains `target` on `text` (tokenised with the model's defaults).
    ///
    /// # Errors
    /// [`Error::EmptyText`] and as [`Explainer::explain_ids`].
    fn explain(
        &self,
        model: &dyn LanguageModel,
        text: &str,
        target: &Target,
    ) -> Result<Explanation> {
        let ids = model.encode(text, true)?;
        self.explain_ids(model, &ids, target)
    }

    /// Explains several inputs, each with its own target: entry `i` of the result is what
    /// [`Explainer::explain_ids`] gives for input `i`, and one input's failure never fails
    /// the others. The default runs them one at a time. A method whose inputs are independent
    /// rows of one computation overrides it (and [`Explainer::batches_inputs`]) to run them
    /// as one right-padded batch ([`RightPadded`](crate::RightPadded)), equal to one at a
    /// time up to float summation order; it falls back to one at a time for the whole call
    /// when the batch fails, and for an input whose batched result is not finite (so that
    /// errors are exactly those of [`Explainer::explain_ids`]). Group inputs of similar
    /// length first ([`length_batches`](crate::length_batches)): every input is padded to
    /// the longest.
    fn explain_batch(
        &self,
        model: &dyn LanguageModel,
        inputs: &[ExplainInput<'_>],
    ) -> Vec<Result<Explanation>> {
        inputs.iter().map(|i| self.explain_ids(model, i.ids, i.target)).collect()
    }

    /// Whether [`Explainer::explain_batch`] runs several inputs per forward pass (default:
    /// false, one at a time).
    fn batches_inputs(&self) -> bool {
        false
    }

    /// [`Explainer::explain_ids`] when other methods explain the same input for the same
    /// target: reads the passes an earlier method stored in `shared` (the input gradient,
    /// the attention capture, the resolved target) and stores its own for later ones, so
    /// that a pass runs once however many methods need it. The explanation equals
    /// [`Explainer::explain_ids`]'s. The default ignores `shared`.
    ///
    /// # Errors
    /// As [`Explainer::explain_ids`].
    fn explain_ids_shared(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<Explanation> {
        let _ = shared;
        self.explain_ids(model, ids, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn logits() -> Tensor {
        // batch 1, 2 positions, vocab 3; position 1 prefers token 2.
        Tensor::from_slice(&[0.0f32, 1.0, 0.5, 1.0, 0.0, 3.0]).view([1, 2, 3])
    }

    #[test]
    fn targets_evaluate_their_definitions() {
        let l = logits();
        let t = Target::argmax().resolve(&l).unwrap();
        assert_eq!(t.token_id(), Some(2));
        let lp = t.evaluate(&l).unwrap().double_value(&[0]);
        let expected = 3.0 - (1f64.exp() + 1.0 + 3f64.exp()).ln();
        assert!((lp - expected).abs() < 1e-6);
        let c = Target::contrastive(2, 0).evaluate(&l).unwrap().double_value(&[0]);
        assert!((c - 2.0).abs() < 1e-6);
        let at0 = Target::Token {
            token: TargetToken::Id(1),
            output: TargetOutput::Logit,
            position: Some(0),
        };
        assert_eq!(at0.evaluate(&l).unwrap().double_value(&[0]), 1.0);
        let p =
            Target::Token { token: TargetToken::Id(2), output: TargetOutput::Prob, position: None };
        assert!((p.evaluate(&l).unwrap().double_value(&[0]) - expected.exp()).abs() < 1e-6);
    }

    #[test]
    fn bad_targets_are_typed_errors() {
        let l = logits();
        assert!(matches!(
            Target::log_prob(3).resolve(&l),
            Err(Error::TokenOutOfRange { id: 3, vocab_size: 3 })
        ));
        assert!(matches!(
            Target::contrastive(0, -1).evaluate(&l),
            Err(Error::TokenOutOfRange { id: -1, .. })
        ));
        assert!(matches!(Target::argmax().evaluate(&l), Err(Error::InvalidArgument { .. })));
        let far = Target::Token {
            token: TargetToken::Id(0),
            output: TargetOutput::Logit,
            position: Some(2),
        };
        assert!(matches!(far.resolve(&l), Err(Error::InvalidArgument { .. })));
        let flat = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        assert!(matches!(Target::argmax().resolve(&flat), Err(Error::ShapeMismatch { .. })));
    }

    #[test]
    fn explanations_check_lengths_rank_and_serialise() {
        let e = Explanation::new(
            "m",
            vec![5, 6, 7],
            vec!["a".into(), "b".into(), "c".into()],
            Array1::from(vec![0.1, -0.5, 0.3]),
            Target::log_prob(1),
        )
        .unwrap();
        assert_eq!(e.ranking(), vec![1, 2, 0]);
        assert_eq!(e.top_k(1), vec![(1, "b", -0.5)]);
        let json = serde_json::to_string(&e).unwrap();
        let back: Explanation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        assert!(matches!(
            Explanation::new("m", vec![1], vec![], Array1::zeros(1), Target::argmax()),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            Explanation::new("m", vec![], vec![], Array1::zeros(0), Target::argmax()),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
