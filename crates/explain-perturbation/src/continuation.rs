//! Continuation targets: how each prompt feature drives the log-probability of every token of
//! a given continuation (Captum `LLMAttribution`'s `seq_attr` and `token_attr`).
//!
//! [`ContinuationGame`] has `1 + T` outputs for a continuation `y_1..y_T`: the sequence's
//! total `Σ_t log p(y_t | prompt, y_<t)` first, then each `log p(y_t | …)`. Only prompt
//! tokens are perturbed; the continuation is teacher-forced after the edited prompt. Each
//! output `t` is evaluated on the input `prompt ++ y_<t` with a last-position target, through
//! the same batched removals as [`ModelGame`](crate::ModelGame), so Delete works (positions
//! shift, the read position stays the last); that costs `T` rows per coalition, where reading
//! all `T` positions of one row would cost one (a saving left to the KV-reuse work).

use std::ops::Range;

use explainability_core::{Error, LanguageModel, Result, Target};
use explainability_core::{RemovalStrategy, evaluate_removals};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::explainer::PerturbationExplainer;
use crate::game::{Game, check_lengths};

/// A prompt's token spans as players, a teacher-forced continuation's log-probabilities as
/// outputs (`[total, y_1, …, y_T]`).
pub struct ContinuationGame<'a> {
    model: &'a dyn LanguageModel,
    prompt: Vec<i64>,
    continuation: Vec<i64>,
    features: Vec<Range<usize>>,
    strategy: RemovalStrategy,
    batch_size: usize,
    forward_rows: usize,
}

impl<'a> ContinuationGame<'a> {
    /// The game of `continuation` after `prompt` over `features` (spans of the prompt).
    ///
    /// # Errors
    /// [`Error::EmptyText`] for an empty prompt; [`Error::InvalidArgument`] for an empty
    /// continuation or `batch_size == 0`; [`Error::SpanOutOfRange`] for a feature outside the
    /// prompt; [`Error::TokenOutOfRange`] for a continuation id outside the vocabulary.
    pub fn new(
        model: &'a dyn LanguageModel,
        prompt: &[i64],
        continuation: &[i64],
        features: Vec<Range<usize>>,
        strategy: RemovalStrategy,
        batch_size: usize,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::EmptyText);
        }
        if continuation.is_empty() {
            return Err(Error::invalid_argument("the continuation to explain is empty"));
        }
        if batch_size == 0 {
            return Err(Error::invalid_argument("batch_size must be at least 1"));
        }
        let vocab = model.info().vocab_size;
        if let Some(&id) = continuation.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, vocab_size: vocab });
        }
        for f in &features {
            if f.start >= f.end || f.end > prompt.len() {
                return Err(Error::SpanOutOfRange {
                    start: f.start,
                    end: f.end,
                    len: prompt.len(),
                });
            }
        }
        Ok(Self {
            model,
            prompt: prompt.to_vec(),
            continuation: continuation.to_vec(),
            features,
            strategy,
            batch_size,
            forward_rows: 0,
        })
    }

    /// Sequences run through the model so far.
    pub fn forward_rows(&self) -> usize {
        self.forward_rows
    }
}

impl Game for ContinuationGame<'_> {
    fn n_features(&self) -> usize {
        self.features.len()
    }

    fn n_outputs(&self) -> usize {
        1 + self.continuation.len()
    }

    fn values(&mut self, coalitions: &[Vec<bool>]) -> Result<Array2<f64>> {
        check_lengths(coalitions, self.features.len())?;
        let n = self.prompt.len();
        let outputs = self.n_outputs();
        let mut out = Array2::zeros((coalitions.len(), outputs));
        let mut masks = Vec::new();
        let mut at = Vec::new();
        let mut empty = Vec::new();
        for (r, c) in coalitions.iter().enumerate() {
            let mut removed = vec![false; n];
            for (f, span) in self.features.iter().enumerate() {
                if !c[f] {
                    removed[span.clone()].iter_mut().for_each(|x| *x = true);
                }
            }
            if self.strategy == RemovalStrategy::Delete && removed.iter().all(|&x| x) {
                empty.push(r);
            } else {
                masks.push(removed);
                at.push(r);
            }
        }
        let special = self.model.info().special_tokens;
        for (t, &next) in self.continuation.iter().enumerate() {
            let target = Target::log_prob(next);
            let forced = &self.continuation[..t];
            if !masks.is_empty() {
                let ids: Vec<i64> = self.prompt.iter().chain(forced).copied().collect();
                let extended: Vec<Vec<bool>> = masks
                    .iter()
                    .map(|m| m.iter().copied().chain(std::iter::repeat_n(false, t)).collect())
                    .collect();
                let v = evaluate_removals(
                    self.model,
                    &ids,
                    &target,
                    self.strategy,
                    &extended,
                    self.batch_size,
                )?;
                self.forward_rows += extended.len();
                for (&r, value) in at.iter().zip(v) {
                    out[[r, t + 1]] = value;
                }
            }
            if !empty.is_empty() {
                let context = special.bos.or(special.eos).ok_or_else(|| {
                    Error::invalid_argument(
                        "Delete would remove the whole prompt and the model has no BOS or EOS \
                         token to stand for an empty context",
                    )
                })?;
                let ids: Vec<i64> =
                    std::iter::once(context).chain(forced.iter().copied()).collect();
                let v = evaluate_removals(
                    self.model,
                    &ids,
                    &target,
                    RemovalStrategy::Delete,
                    &[vec![false; ids.len()]],
                    1,
                )?;
                self.forward_rows += 1;
                for &r in &empty {
                    out[[r, t + 1]] = v[0];
                }
            }
        }
        for mut row in out.rows_mut() {
            row[0] = row.iter().skip(1).sum();
        }
        Ok(out)
    }
}

/// Attribution of a continuation to the prompt's tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuationAttribution {
    /// Method name.
    pub method: String,
    /// Prompt token ids.
    pub prompt_ids: Vec<i64>,
    /// Prompt tokens, readable.
    pub prompt_tokens: Vec<String>,
    /// Continuation token ids.
    pub continuation_ids: Vec<i64>,
    /// Continuation tokens, readable.
    pub continuation_tokens: Vec<String>,
    /// Per prompt token: attribution of the continuation's total log-probability
    /// (Captum's `seq_attr`).
    pub seq_attr: Array1<f64>,
    /// `[T, prompt]`: attribution of each continuation token's log-probability (Captum's
    /// `token_attr`).
    pub token_attr: Array2<f64>,
    /// `[total, log p(y_1), …]` on the unperturbed prompt.
    pub full_values: Vec<f64>,
    /// Sequences run through the model.
    pub forward_passes: usize,
}

impl ContinuationAttribution {
    /// Attribution of the log-probability of the continuation's tokens `span` (a span
    /// target: e.g. the answer inside a longer response): the sum of their `token_attr` rows
    /// (every method here is linear in its outputs, so this equals explaining the span's
    /// total log-probability).
    ///
    /// # Errors
    /// [`Error::SpanOutOfRange`] for an empty span or one past the continuation.
    pub fn span(&self, span: Range<usize>) -> Result<Array1<f64>> {
        let t = self.token_attr.nrows();
        if span.start >= span.end || span.end > t {
            return Err(Error::SpanOutOfRange { start: span.start, end: span.end, len: t });
        }
        Ok(self.token_attr.slice(ndarray::s![span, ..]).sum_axis(ndarray::Axis(0)))
    }
}

impl PerturbationExplainer {
    /// Explains every token of `continuation` after `prompt` (token ids, no special tokens
    /// added): per prompt token, the attribution of the continuation's total log-probability
    /// and of each of its tokens. Features are taken from the prompt only.
    ///
    /// # Errors
    /// As [`ContinuationGame::new`], [`FeatureKind::spans`](crate::FeatureKind::spans) and the
    /// method.
    pub fn explain_continuation(
        &self,
        model: &dyn LanguageModel,
        prompt: &[i64],
        continuation: &[i64],
    ) -> Result<ContinuationAttribution> {
        let prompt_tokens = model.token_strings(prompt)?;
        let spans = self.feature_spans(&prompt_tokens)?;
        let mut game = ContinuationGame::new(
            model,
            prompt,
            continuation,
            spans.clone(),
            self.strategy,
            self.batch_size,
        )?;
        let full = game.values(&[vec![true; spans.len()]])?.row(0).to_vec();
        let attribution = self.attribute(&mut game)?;
        let n = prompt.len();
        let per_token = |o: usize| {
            let feature_scores = attribution.scores.row(o).to_vec();
            crate::features::token_scores(&spans, &feature_scores, n)
        };
        let t = continuation.len();
        let mut token_attr = Array2::zeros((t, n));
        for row in 0..t {
            token_attr.row_mut(row).assign(&Array1::from(per_token(row + 1)));
        }
        Ok(ContinuationAttribution {
            method: explainability_core::Explainer::name(self).to_owned(),
            prompt_ids: prompt.to_vec(),
            prompt_tokens,
            continuation_ids: continuation.to_vec(),
            continuation_tokens: model.token_strings(continuation)?,
            seq_attr: Array1::from(per_token(0)),
            token_attr,
            full_values: full,
            forward_passes: game.forward_rows(),
        })
    }
}
