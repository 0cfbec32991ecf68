//! Several inputs per forward pass: [`ExplainInput`] (one input of
//! [`Explainer::explain_batch`](crate::Explainer::explain_batch)), [`length_batches`] (groups
//! inputs of similar length so that padding stays bounded) and [`RightPadded`] (a batch of
//! token ids right-padded to its longest row, with the attention mask and each row's read
//! position).
//!
//! **Why right padding is exact up to float order.** Every row keeps positions `0..len`
//! (the default position ids), padded keys receive exactly zero attention through
//! [`ForwardOptions::attention_mask`], and on a causal model a real position never sees a
//! later one anyway; so a row's real activations, logits and gradients are those of the row
//! run alone, except that matrix products now have other shapes (more rows, longer key
//! axes with zero weights), which can change float summation order in the last bits.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::explanation::Target;
use crate::model::{ForwardOptions, LanguageModel, check_positions};

/// One input of a batched explanation: token ids and the target explained on them.
#[derive(Debug, Clone, Copy)]
pub struct ExplainInput<'a> {
    /// Token ids (no special tokens added).
    pub ids: &'a [i64],
    /// The explained quantity.
    pub target: &'a Target,
}

/// Groups inputs of lengths `lengths` into batches of at most `batch_size` inputs whose
/// padding is bounded: inputs are ordered by length (ties by index, so the grouping is a
/// deterministic function of the lengths), and a batch is closed before an input whose
/// length would make the batch's padded positions (`rows × longest`) exceed
/// `(1 + max_padding) ×` its real positions. Every index appears in exactly one batch;
/// within a batch indices are ordered by length. `batch_size == 0` is treated as 1.
///
/// # Examples
/// ```
/// use explainability_core::length_batches;
/// // lengths 3, 9, 4, 10: the short ones together, the long ones together.
/// assert_eq!(length_batches(&[3, 9, 4, 10], 4, 0.25), vec![vec![0, 2], vec![1, 3]]);
/// ```
pub fn length_batches(lengths: &[usize], batch_size: usize, max_padding: f64) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut real = 0usize;
    for i in order {
        let len = lengths[i];
        // Sorted ascending: the new input is the longest of the batch.
        let padded = (current.len() + 1) * len;
        let fits = current.len() < batch_size
            && (padded as f64) <= (1.0 + max_padding.max(0.0)) * ((real + len) as f64);
        if !current.is_empty() && !fits {
            batches.push(std::mem::take(&mut current));
            real = 0;
        }
        current.push(i);
        real += len;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// A batch of token ids right-padded to its longest row.
#[derive(Debug)]
pub struct RightPadded {
    /// `[rows, longest]` ids on the model's device (padding holds the row's first id, a
    /// valid id that the mask hides).
    pub ids: Tensor,
    /// `[rows, longest]` int64 attention mask: 1 for real tokens, 0 for padding.
    pub mask: Tensor,
    /// Real length of each row.
    pub lengths: Vec<usize>,
    /// Position whose prediction each row's target reads.
    pub reads: Vec<usize>,
}

impl RightPadded {
    /// Pads `inputs` (checked against the model's context window and their targets'
    /// positions).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no input; [`Error::EmptyText`],
    /// [`Error::SequenceTooLong`] and target-position errors of any input.
    pub fn new(model: &dyn LanguageModel, inputs: &[ExplainInput<'_>]) -> Result<Self> {
        let longest = inputs.iter().map(|i| i.ids.len()).max().unwrap_or(0);
        if inputs.is_empty() {
            return Err(Error::invalid_argument("a batch needs at least one input"));
        }
        let mut flat = Vec::with_capacity(inputs.len() * longest);
        let mut mask = Vec::with_capacity(inputs.len() * longest);
        let mut lengths = Vec::with_capacity(inputs.len());
        let mut reads = Vec::with_capacity(inputs.len());
        for input in inputs {
            let len = input.ids.len();
            check_positions(len as i64, model.info().max_positions)?;
            reads.push(input.target.position_index(len as i64)? as usize);
            let pad = input.ids[0];
            flat.extend_from_slice(input.ids);
            flat.extend(std::iter::repeat_n(pad, longest - len));
            mask.extend(std::iter::repeat_n(1i64, len));
            mask.extend(std::iter::repeat_n(0i64, longest - len));
            lengths.push(len);
        }
        let shape = [inputs.len() as i64, longest as i64];
        let device = model.device();
        Ok(Self {
            ids: Tensor::f_from_slice(&flat)?.f_view(shape)?.f_to_device(device)?,
            mask: Tensor::f_from_slice(&mask)?.f_view(shape)?.f_to_device(device)?,
            lengths,
            reads,
        })
    }

    /// Rows of the batch.
    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// Positions of the longest row.
    pub fn longest(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    /// Forward options with the attention mask and logits from the earliest read position
    /// on ([`ForwardOptions::logits_from`]).
    ///
    /// # Errors
    /// libtorch errors.
    pub fn options(&self, causal: bool) -> Result<ForwardOptions> {
        let padded = self.lengths.iter().any(|&l| l != self.longest());
        Ok(ForwardOptions {
            attention_mask: (padded && !causal).then(|| self.mask.shallow_clone()),
            logits_from: Some(self.logits_from()),
            ..ForwardOptions::default()
        })
    }

    /// The first position whose logits [`RightPadded::options`] asks for.
    pub fn logits_from(&self) -> usize {
        self.reads.iter().copied().min().unwrap_or(0)
    }

    /// Row `row`'s logits at its read position as a `[1, 1, vocab]` tensor, from the logits
    /// of a forward pass under [`RightPadded::options`] (or of a model that ignored
    /// `logits_from` and returned every position).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a row outside the batch; shape errors.
    pub fn row_logits(&self, logits: &Tensor, row: usize) -> Result<Tensor> {
        let read = *self.reads.get(row).ok_or_else(|| {
            Error::invalid_argument(format!("row {row} is outside a batch of {}", self.rows()))
        })?;
        let computed = logits.size().get(1).copied().unwrap_or(0);
        let offset = if computed == self.longest() as i64 { 0 } else { self.logits_from() };
        Ok(logits
            .f_select(0, row as i64)?
            .f_narrow(0, (read - offset) as i64, 1)?
            .f_unsqueeze(0)?)
    }

    /// Row `row` of `[rows, longest, ...]` without its padding: `[len, ...]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a row outside the batch; shape errors.
    pub fn unpad(&self, batched: &Tensor, row: usize) -> Result<Tensor> {
        let len = *self.lengths.get(row).ok_or_else(|| {
            Error::invalid_argument(format!("row {row} is outside a batch of {}", self.rows()))
        })?;
        Ok(batched.f_select(0, row as i64)?.f_narrow(0, 0, len as i64)?)
    }
}

/// Whether every element of `t` is finite.
///
/// # Errors
/// libtorch errors.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    Ok(t.f_isfinite()?.f_all()?.f_to_kind(Kind::Int64)?.f_int64_value(&[])? != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_index_once_and_bound_padding() {
        let lengths = [5, 1, 12, 6, 5, 30, 7, 6, 5, 11];
        for size in [1, 2, 4, 16] {
            let batches = length_batches(&lengths, size, 0.25);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            for b in &batches {
                assert!(!b.is_empty() && b.len() <= size);
                let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
                let real: usize = b.iter().map(|&i| lengths[i]).sum();
                assert!(b.len() == 1 || (b.len() * longest) as f64 <= 1.25 * real as f64);
            }
        }
        // deterministic: ties broken by index
        assert_eq!(length_batches(&[4, 4, 4], 2, 0.0), vec![vec![0, 1], vec![2]]);
        assert!(length_batches(&[], 8, 0.25).is_empty());
        assert_eq!(length_batches(&[3], 0, 0.25), vec![vec![0]]);
    }
}
