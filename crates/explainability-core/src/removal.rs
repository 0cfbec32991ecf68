//! Re-running a model on edited inputs: tokens removed by Delete, Replace(id) or a zero
//! embedding ([`RemovalStrategy`]), rows run in batches, and on causal models the unedited
//! prefix of every row reused from one key/value cache ([`evaluate_removals_with`]).
//!
//! This is the one implementation of perturbed re-runs: the fidelity metrics (explain-eval)
//! and the perturbation explainers (explain-perturbation) both call it, so an explanation and
//! its evaluation perturb the input the same way.
//!
//! **Batching.** Replace and zero-embedding edits keep the length; Delete edits on a causal
//! model share batches across lengths, right-padded with zero embeddings to the longest row
//! and read at each row's own last position (a causal model's real positions never see later
//! padding, so no attention mask is needed); on a non-causal model Delete rows are grouped by
//! length instead.
//!
//! **Prefix reuse.** On a causal model whose forward takes a key/value cache
//! ([`LanguageModel::supports_key_value_cache`]), positions before a row's first removed
//! token are the unedited input's positions, with the same keys and values. The unedited
//! input's keys and values are computed once; rows are sorted by their first changed
//! position (latest first) and batched, and each batch runs only the positions from its
//! earliest first change on, continuing from the cached prefix. A batch is cut early where
//! taking the next row (an earlier first change) would make its rows recompute more positions
//! than another pass costs ([`PASS_OVERHEAD_POSITIONS`]): ablating 32 four-token spans of 128
//! tokens then runs 19 forward-equivalents instead of 33 (one batch from position 0), and
//! leave-one-out over `n` tokens about `n²/2` positions instead of `n²`. A reused row equals the full
//! recomputation up to float reassociation (tested at 1e-4 on SmolLM2).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::explanation::Target;
use crate::hooks::Hooks;
use crate::model::{ForwardOptions, KeyValueCache, LanguageModel};

/// How a token is removed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalStrategy {
    /// Drop the token: the sequence gets shorter.
    Delete,
    /// Replace the token id by this id (e.g. a pad or unk token).
    Replace(i64),
    /// Keep the position but zero its input embedding.
    ZeroEmbedding,
}

/// Settings of [`evaluate_removals_with`].
#[derive(Debug, Clone, Copy)]
pub struct RemovalOptions<'a> {
    /// Edited rows per forward pass.
    pub batch_size: usize,
    /// Reuse the unedited prefix's keys and values where the model allows it (causal models
    /// with [`LanguageModel::supports_key_value_cache`]); otherwise every row runs in full.
    pub reuse_prefix: bool,
    /// The unedited input's keys and values (`[1, …, n, …]`), when the caller already has
    /// them; computed (one forward of the input) when `None` and needed.
    pub input_cache: Option<&'a KeyValueCache>,
}

impl RemovalOptions<'_> {
    /// `batch_size` rows per forward, prefix reuse on, no cache given.
    pub fn new(batch_size: usize) -> Self {
        Self { batch_size, reuse_prefix: true, input_cache: None }
    }
}

/// What [`evaluate_removals_with`] computed, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovalValues {
    /// The target on each edited input, in the order of the masks.
    pub values: Vec<f64>,
    /// Token positions run through the model, padding included (the unedited input's own
    /// forward, when it was run to fill the cache, included). Divided by the input's length
    /// this is the cost in forward-equivalents.
    pub positions_run: usize,
    /// Positions of edited rows taken from the cache instead of being recomputed.
    pub positions_reused: usize,
    /// Whether the prefix was reused.
    pub reused_prefix: bool,
}

/// Evaluates the (resolved) `target` on `ids` with each mask's `true` positions removed, in
/// batches of `batch_size` rows, reusing the unedited prefix on causal models with a
/// key/value cache (see the module docs); [`evaluate_removals_with`] says what it cost and
/// can turn the reuse off.
///
/// # Errors
/// [`Error::InvalidArgument`] for a mask of the wrong length, a Delete mask removing every
/// token, an explicit target position under Delete, or `batch_size == 0`; model errors.
pub fn evaluate_removals(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &Target,
    strategy: RemovalStrategy,
    masks: &[Vec<bool>],
    batch_size: usize,
) -> Result<Vec<f64>> {
    let options = RemovalOptions::new(batch_size);
    Ok(evaluate_removals_with(model, ids, target, strategy, masks, &options)?.values)
}

/// One edited row: its mask index, length, first position that differs from the input (at
/// most the position it is read at) and `[1, len, d]` embeddings.
struct Row {
    mask: usize,
    len: usize,
    start: usize,
    embeddings: Tensor,
}

/// As [`evaluate_removals`], with the settings of [`RemovalOptions`] and the cost reported.
///
/// # Errors
/// As [`evaluate_removals`]; [`Error::ShapeMismatch`] for an `input_cache` that does not
/// cover the input.
pub fn evaluate_removals_with(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &Target,
    strategy: RemovalStrategy,
    masks: &[Vec<bool>],
    options: &RemovalOptions<'_>,
) -> Result<RemovalValues> {
    let batch_size = options.batch_size;
    if batch_size == 0 {
        return Err(Error::invalid_argument("batch_size must be at least 1"));
    }
    if ids.is_empty() {
        return Err(Error::EmptyText);
    }
    let explicit = match target {
        Target::Token { position, .. } | Target::Contrastive { position, .. } => *position,
    };
    if strategy == RemovalStrategy::Delete && explicit.is_some() {
        return Err(Error::invalid_argument(
            "RemovalStrategy::Delete needs a last-position target (position: None)",
        ));
    }
    if let Some(p) = explicit
        && p >= ids.len()
    {
        return Err(Error::invalid_argument(format!(
            "target position {p} is past the {} tokens of the input",
            ids.len()
        )));
    }
    let n = ids.len();
    let device = model.device();
    let _guard = tch::no_grad_guard();
    let base = Tensor::from_slice(ids).unsqueeze(0).to_device(device);
    let embedded = model.embed(&base)?;
    // the position read in a row of `len` positions
    let read = |len: usize| explicit.unwrap_or(len - 1);
    let mut rows: Vec<Row> = Vec::with_capacity(masks.len());
    for (m, mask) in masks.iter().enumerate() {
        if mask.len() != n {
            return Err(Error::invalid_argument(format!(
                "mask {m} has {} entries for {n} tokens",
                mask.len()
            )));
        }
        let row = match strategy {
            RemovalStrategy::Delete => {
                let kept: Vec<i64> = (0..n).filter(|&i| !mask[i]).map(|i| i as i64).collect();
                if kept.is_empty() {
                    return Err(Error::invalid_argument(
                        "Delete cannot remove every token of the input",
                    ));
                }
                let index = Tensor::from_slice(&kept).to_device(device);
                embedded.f_index_select(1, &index)?
            }
            RemovalStrategy::Replace(id) => {
                let edited: Vec<i64> =
                    ids.iter().zip(mask).map(|(&t, &r)| if r { id } else { t }).collect();
                model.embed(&Tensor::from_slice(&edited).unsqueeze(0).to_device(device))?
            }
            RemovalStrategy::ZeroEmbedding => {
                let keep: Vec<f32> = mask.iter().map(|&r| if r { 0.0 } else { 1.0 }).collect();
                let keep = Tensor::from_slice(&keep)
                    .to_device(device)
                    .f_to_kind(embedded.kind())?
                    .f_view([1, n as i64, 1])?;
                embedded.f_mul(&keep)?
            }
        };
        let len = row.size()[1] as usize;
        // Positions before the first removed token are the input's own; a row is always run
        // from its read position at the latest, so that its logit is computed.
        let first_change = mask.iter().position(|&r| r).unwrap_or(n);
        rows.push(Row { mask: m, len, start: first_change.min(read(len)), embeddings: row });
    }
    let reuse = options.reuse_prefix && model.info().causal && model.supports_key_value_cache();
    let mut values = vec![0.0; masks.len()];
    let mut cost = Cost::default();
    if reuse {
        let computed;
        let cache = match options.input_cache {
            Some(cache) => {
                if cache.len() != n || cache.batch() != 1 {
                    return Err(Error::ShapeMismatch {
                        what: "input_cache".into(),
                        expected: format!("one row of {n} positions"),
                        actual: vec![cache.batch() as i64, cache.len() as i64],
                    });
                }
                cache
            }
            None => {
                let options = ForwardOptions {
                    return_key_values: true,
                    logits_from: Some(n - 1),
                    ..ForwardOptions::default()
                };
                let out = model.forward_embeddings(&embedded, &options, &mut Hooks::new())?;
                cost.run += n;
                computed = out.key_values.ok_or_else(|| Error::UnsupportedOperation {
                    model: model.info().name.clone(),
                    operation: "returning keys and values".into(),
                })?;
                &computed
            }
        };
        // Latest first change first, so that a batch's rows share most of their prefix.
        rows.sort_by(|a, b| {
            b.start.cmp(&a.start).then(b.len.cmp(&a.len)).then(a.mask.cmp(&b.mask))
        });
        for chunk in bounded_batches(&rows, batch_size, &read, true) {
            let shared = chunk.iter().map(|r| r.start).min().unwrap_or(0);
            let past = if shared > 0 {
                Some(cache.prefix(shared)?.repeat_row(0, chunk.len())?)
            } else {
                None
            };
            run_batch(model, target, chunk, shared, past, &read, &mut values, &mut cost)?;
        }
    } else {
        // Longest first. Delete rows of a causal model share batches across lengths;
        // otherwise a batch holds rows of one length.
        rows.sort_by(|a, b| b.len.cmp(&a.len).then(a.mask.cmp(&b.mask)));
        let batches: Vec<&[Row]> = if strategy == RemovalStrategy::Delete && model.info().causal {
            bounded_batches(&rows, batch_size, &read, false)
        } else {
            rows.chunk_by(|a, b| a.len == b.len).flat_map(|same| same.chunks(batch_size)).collect()
        };
        for chunk in batches {
            run_batch(model, target, chunk, 0, None, &read, &mut values, &mut cost)?;
        }
    }
    Ok(RemovalValues {
        values,
        positions_run: cost.run,
        positions_reused: cost.reused,
        reused_prefix: reuse,
    })
}

/// The most positions a batch computes logits for: a batch's logits run from its earliest read
/// position to the end of its longest row, `[rows, span, vocab]` floats. Rows of a Delete batch
/// differ in length (a Shapley permutation deletes 0 … n tokens), and unbounded this reached
/// `[32, 600, 49152]` (3.8 GB, 11.5 GB for the process) on a 600-token context.
const MAX_LOGIT_SPAN: usize = 32;

/// What one more forward pass costs beyond the positions it runs, in positions: on a CPU the
/// weights are read once per pass whatever its rows, about the time of 16–20 positions of
/// SmolLM2-135M on one thread (a 1-token forward ≈ 45 ms, a 128-token one ≈ 0.32 s).
pub const PASS_OVERHEAD_POSITIONS: usize = 16;

/// Consecutive runs of `rows` (in their order) of at most `batch_size` rows whose logit span
/// (longest row's end minus earliest read position) is at most [`MAX_LOGIT_SPAN`]; a row whose
/// own span is longer (an explicit read position far before its end) gets a batch of its own.
/// With `by_start` (rows sorted by latest first change, run from their batch's earliest one),
/// a batch also ends where taking the next row would make the rows already in it recompute
/// more than [`PASS_OVERHEAD_POSITIONS`] extra positions.
fn bounded_batches<'r>(
    rows: &'r [Row],
    batch_size: usize,
    read: &dyn Fn(usize) -> usize,
    by_start: bool,
) -> Vec<&'r [Row]> {
    let mut out = Vec::new();
    let mut start = 0;
    let (mut earliest, mut end, mut shared) = (usize::MAX, 0, usize::MAX);
    for (i, row) in rows.iter().enumerate() {
        let (e, n) = (earliest.min(read(row.len)), end.max(row.len));
        let recomputed = (i - start) * shared.saturating_sub(row.start);
        if i > start
            && (i - start == batch_size
                || n - e > MAX_LOGIT_SPAN
                || (by_start && recomputed > PASS_OVERHEAD_POSITIONS))
        {
            out.push(&rows[start..i]);
            start = i;
            (earliest, end, shared) = (read(row.len), row.len, row.start);
        } else {
            (earliest, end, shared) = (e, n, shared.min(row.start));
        }
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

#[derive(Default)]
struct Cost {
    run: usize,
    reused: usize,
}

/// Runs one batch of rows from position `shared` on (after `past`, the input's first `shared`
/// positions), right-padded with zero embeddings to the longest row, and stores each row's
/// target value.
#[allow(clippy::too_many_arguments)]
fn run_batch(
    model: &dyn LanguageModel,
    target: &Target,
    chunk: &[Row],
    shared: usize,
    past: Option<KeyValueCache>,
    read: &dyn Fn(usize) -> usize,
    values: &mut [f64],
    cost: &mut Cost,
) -> Result<()> {
    let longest = chunk.iter().map(|r| r.len).max().unwrap_or(0) - shared;
    // every row's read position is at or after `shared`; logits from the earliest one
    let from = chunk.iter().map(|r| read(r.len)).min().unwrap_or(shared) - shared;
    let mut batch = Vec::with_capacity(chunk.len());
    for row in chunk {
        let own = row.len - shared;
        let suffix = row.embeddings.f_narrow(1, shared as i64, own as i64)?;
        batch.push(if own == longest {
            suffix
        } else {
            // Padding after a row's last real position cannot reach it (causal), and rows of
            // one length need none.
            let d = suffix.size()[2];
            let pad =
                Tensor::f_zeros([1, (longest - own) as i64, d], (suffix.kind(), suffix.device()))?;
            Tensor::f_cat(&[&suffix, &pad], 1)?
        });
    }
    let batch = Tensor::f_cat(&batch, 0)?;
    let options = ForwardOptions {
        logits_from: Some(from),
        past_key_values: past,
        ..ForwardOptions::default()
    };
    let out = model.forward_embeddings(&batch, &options, &mut Hooks::new())?;
    cost.run += chunk.len() * longest;
    cost.reused += chunk.len() * shared;
    // each row's read position, as the only position of a [rows, 1, vocab] tensor
    let mut at = Vec::with_capacity(chunk.len());
    for (i, row) in chunk.iter().enumerate() {
        let position = (read(row.len) - shared - from) as i64;
        at.push(out.logits.f_select(0, i as i64)?.f_narrow(0, position, 1)?);
    }
    let at = Tensor::f_stack(&at, 0)?;
    let v = target
        .from_position(shared + from)?
        .evaluate(&at)?
        .f_to_kind(Kind::Double)?
        .f_to_device(tch::Device::Cpu)?;
    let v: Vec<f64> = Vec::<f64>::try_from(&v)?;
    for (row, value) in chunk.iter().zip(v) {
        values[row.mask] = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(lens: &[usize]) -> Vec<Row> {
        lens.iter()
            .enumerate()
            .map(|(mask, &len)| Row {
                mask,
                len,
                start: 0,
                embeddings: Tensor::zeros([1], tch::kind::FLOAT_CPU),
            })
            .collect()
    }

    fn lens(batches: &[&[Row]]) -> Vec<Vec<usize>> {
        batches.iter().map(|b| b.iter().map(|r| r.len).collect()).collect()
    }

    #[test]
    fn batches_bound_their_logit_span_and_size() {
        let last = |len: usize| len - 1;
        // A Shapley-like spread of lengths, longest first: the span (end − earliest read)
        // stays within MAX_LOGIT_SPAN, and no batch exceeds its size.
        let spread: Vec<usize> = (0..100).map(|i| 600 - 6 * i).collect();
        let r = rows(&spread);
        let batches = bounded_batches(&r, 32, &last, false);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 100);
        for b in &batches {
            let end = b.iter().map(|r| r.len).max().unwrap();
            let earliest = b.iter().map(|r| last(r.len)).min().unwrap();
            assert!(end - earliest <= MAX_LOGIT_SPAN, "{:?}", lens(&batches));
        }
        // Rows of one length fill batches up to their size.
        let r = rows(&[9; 70]);
        assert_eq!(
            bounded_batches(&r, 32, &last, false).iter().map(|b| b.len()).collect::<Vec<_>>(),
            [32, 32, 6]
        );
        // A row whose own span is too long (an explicit early read position) stands alone.
        let r = rows(&[100, 100, 100]);
        let early = |_: usize| 10;
        assert_eq!(lens(&bounded_batches(&r, 32, &early, false)), [[100], [100], [100]]);
        assert!(bounded_batches(&rows(&[]), 32, &last, false).is_empty());
    }

    #[test]
    fn batches_by_first_change_stop_where_the_prefix_recomputed_outgrows_a_pass() {
        // 32 four-token spans of 128 tokens (Replace: every row 128 long), latest first
        // change first, as prefix reuse sorts them.
        let starts: Vec<usize> = (0..32).rev().map(|k| 4 * k).collect();
        let r: Vec<Row> = starts
            .iter()
            .enumerate()
            .map(|(mask, &start)| Row {
                mask,
                len: 128,
                start,
                embeddings: Tensor::zeros([1], tch::kind::FLOAT_CPU),
            })
            .collect();
        let last = |len: usize| len - 1;
        let batches = bounded_batches(&r, 32, &last, true);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 32);
        let positions = |batches: &[&[Row]]| -> usize {
            batches.iter().map(|b| b.len() * (128 - b.iter().map(|r| r.start).min().unwrap())).sum()
        };
        // Every batch but the first would have recomputed more than a pass costs had it taken
        // the row before it; none recomputes more than that inside itself.
        for b in &batches {
            let shared = b.iter().map(|r| r.start).min().unwrap();
            let inner: usize = b.iter().map(|r| r.start - shared).sum();
            assert!(inner <= PASS_OVERHEAD_POSITIONS * b.len(), "{inner}");
        }
        // One batch from position 0 runs 32 × 128 positions; the cut batches about 60 % of it
        // (19.4 forward-equivalents of 128 tokens with the input's own forward, against 33).
        let whole = bounded_batches(&r, 32, &last, false);
        assert_eq!(whole.len(), 1);
        assert_eq!(positions(&whole), 32 * 128);
        assert_eq!(positions(&batches), 2356);
        assert_eq!(batches.len(), 7);
    }
}
