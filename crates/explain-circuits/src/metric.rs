//! What the methods measure: the logit difference between an answer and a contrasting token
//! at one position, and the prompt helpers every method shares (ids, single tokens, position
//! checks, parameters by name).

use explainability_core::{Error, LanguageModel, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `logit(answer) − logit(against)` at one position (the last by default), or the answer's
/// logit alone when there is nothing to contrast it with.
///
/// The metric of activation patching in Wang et al. 2022 (IOI, arXiv:2211.00593) and
/// Heimersheim & Nanda 2024 ("How to use and interpret activation patching",
/// arXiv:2404.15255): a difference of logits, not of probabilities, so that it is linear in
/// the final residual and comparable across patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogitDiff {
    /// Token whose logit counts positively (" Paris").
    pub answer: i64,
    /// Token whose logit counts negatively (" London"), if any.
    pub against: Option<i64>,
    /// Position whose next-token logits are read; `None` is the last position.
    pub position: Option<usize>,
}

impl LogitDiff {
    /// `logit(answer) − logit(against)` at the last position.
    pub fn new(answer: i64, against: i64) -> Self {
        Self { answer, against: Some(against), position: None }
    }

    /// `logit(answer)` at the last position.
    pub fn logit(answer: i64) -> Self {
        Self { answer, against: None, position: None }
    }

    /// The same metric read at `position`.
    pub fn at(self, position: usize) -> Self {
        Self { position: Some(position), ..self }
    }

    /// The position read in a prompt of `len` tokens.
    ///
    /// # Errors
    /// [`Error::PositionOutOfRange`].
    pub fn position_in(&self, len: usize) -> Result<usize> {
        let position = self.position.unwrap_or(len.saturating_sub(1));
        check_position(position, len)?;
        Ok(position)
    }

    /// Checks the tokens against the vocabulary.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`].
    pub fn check(&self, vocab_size: usize) -> Result<()> {
        for id in std::iter::once(self.answer).chain(self.against) {
            if id < 0 || id as usize >= vocab_size {
                return Err(Error::TokenOutOfRange { id, vocab_size });
            }
        }
        Ok(())
    }

    /// The metric of each row of `logits` (`[batch, vocab]`, the position already selected).
    ///
    /// # Errors
    /// Tensor errors.
    pub(crate) fn of_rows(&self, logits: &Tensor) -> Result<Tensor> {
        let answer = logits.f_select(-1, self.answer)?;
        Ok(match self.against {
            Some(against) => answer.f_sub(&logits.f_select(-1, against)?)?,
            None => answer,
        })
    }

    /// The unembedding direction whose dot product with a final-normalised state is this
    /// metric (before any final soft-capping): `W_U[answer] − W_U[against]`, `[d_model]`.
    ///
    /// # Errors
    /// [`Error::MissingWeight`] when the model exposes neither `unembed.W_U` nor `embed.W_E`.
    pub(crate) fn direction(&self, model: &dyn LanguageModel) -> Result<Tensor> {
        let w_u = unembedding(model)?;
        let answer = w_u.f_get(self.answer)?;
        Ok(match self.against {
            Some(against) => answer.f_sub(&w_u.f_get(against)?)?,
            None => answer,
        }
        .f_to_kind(Kind::Float)?)
    }
}

/// The unembedding matrix `[vocab, d_model]`: `unembed.W_U`, or `embed.W_E` when tied.
pub(crate) fn unembedding(model: &dyn LanguageModel) -> Result<Tensor> {
    let params = model.named_parameters();
    let find = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    find("unembed.W_U")
        .or_else(|| find("embed.W_E"))
        .map(Tensor::shallow_clone)
        .ok_or_else(|| Error::MissingWeight { name: "unembed.W_U".into() })
}

/// A parameter by canonical name.
pub(crate) fn parameter(model: &dyn LanguageModel, name: &str) -> Result<Tensor> {
    model
        .named_parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::MissingWeight { name: name.into() })
}

/// Whether the model has a parameter of this name.
pub(crate) fn has_parameter(model: &dyn LanguageModel, name: &str) -> bool {
    model.named_parameters().iter().any(|(n, _)| n == name)
}

/// The id of `text` when it is exactly one token (without special tokens), e.g. `" Paris"`.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is several tokens; tokenizer errors.
pub fn single_token(model: &dyn LanguageModel, text: &str) -> Result<i64> {
    let ids = model.encode(text, false)?;
    match ids.as_slice() {
        [id] => Ok(*id),
        _ => Err(Error::invalid_argument(format!(
            "{text:?} is {} tokens, not one: {ids:?}",
            ids.len()
        ))),
    }
}

/// Checks a position against an input length.
///
/// # Errors
/// [`Error::PositionOutOfRange`].
pub fn check_position(position: usize, len: usize) -> Result<()> {
    if position < len { Ok(()) } else { Err(Error::PositionOutOfRange { position, len }) }
}

/// `ids` as a `[1, pos]` tensor on the model's device, checked against the vocabulary and
/// the context window.
pub(crate) fn ids_tensor(model: &dyn LanguageModel, ids: &[i64]) -> Result<Tensor> {
    let tensor = Tensor::f_from_slice(ids)?.f_unsqueeze(0)?.f_to_device(model.device())?;
    model.check_ids_shape(&tensor)?;
    let vocab_size = model.info().vocab_size;
    if let Some(&id) = ids.iter().find(|&&id| id < 0 || id as usize >= vocab_size) {
        return Err(Error::TokenOutOfRange { id, vocab_size });
    }
    Ok(tensor)
}

/// Clean and corrupted prompts of equal length.
///
/// # Errors
/// [`Error::PromptLengthMismatch`], [`Error::EmptyText`].
pub(crate) fn check_pair(clean: &[i64], corrupted: &[i64]) -> Result<usize> {
    if clean.len() != corrupted.len() {
        return Err(Error::PromptLengthMismatch { clean: clean.len(), corrupted: corrupted.len() });
    }
    if clean.is_empty() {
        return Err(Error::EmptyText);
    }
    Ok(clean.len())
}

/// Token strings of `ids`, or the ids themselves where the tokenizer does not know them
/// (tiny random models with a borrowed tokenizer).
pub(crate) fn token_strings(model: &dyn LanguageModel, ids: &[i64]) -> Vec<String> {
    model.token_strings(ids).unwrap_or_else(|_| ids.iter().map(|id| format!("#{id}")).collect())
}

/// Normalises a metric: `(value − corrupted) / (clean − corrupted)`; 0 when clean and
/// corrupted agree (nothing to recover).
pub(crate) fn normalise(value: f64, clean: f64, corrupted: f64) -> f64 {
    let span = clean - corrupted;
    if span == 0.0 { 0.0 } else { (value - corrupted) / span }
}
