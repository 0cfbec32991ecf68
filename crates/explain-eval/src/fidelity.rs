//! Fidelity: does removing what the explanation calls important change the output?
//!
//! Every edited input is built in id or embedding space (never by decoding and re-encoding)
//! and re-run in batches through [`LanguageModel::forward_embeddings`].
//!
//! * Comprehensiveness and sufficiency at top-k% bins and their AOPC (ERASER, DeYoung et al.
//!   2020, arXiv 1911.03429): `comp(k) = f(x) − f(x ∖ top-k)`, `suff(k) = f(x) − f(top-k)`,
//!   `AOPC = mean over bins`.
//! * Deletion and insertion curves with their trapezoidal AUC over the fraction of tokens
//!   removed / inserted (Petsiuk et al. 2018, arXiv 1806.07421).
//! * Faithfulness correlation (Bhatt et al. 2020, arXiv 2005.00631): Pearson correlation,
//!   over seeded random subsets `S` of `⌈fraction · n⌉` tokens, between `Σ_{i∈S} aᵢ` and
//!   `f(x) − f(x ∖ S)`.
//! * Leave-one-out Kendall τ-b between `aᵢ` and `f(x) − f(x ∖ i)`.
//!
//! Tokens are ranked by signed score, highest first (positive evidence for the target is
//! removed first); ties by position.
//!
//! **Output.** `f` is [`Target::evaluate`] on the logits with the output replaced by
//! [`FidelityConfig::output`] for token targets — probability by default, as ERASER uses;
//! contrastive targets keep their logit difference.
//!
//! **Batching.** Edited inputs run in chunks of [`FidelityConfig::batch_size`] through
//! [`evaluate_removals`] (explainability-core): Delete rows of a causal model share batches
//! across lengths, and the unedited prefix of each row is reused from one key/value cache
//! where the model has one. A batched row equals the unbatched run up to float
//! reassociation (tested at 1e-4 in f32 on SmolLM2 with rows of every length).
//!
//! **Delete.** An input with every token deleted cannot be run: under
//! [`RemovalStrategy::Delete`] the deletion curve stops at `n − 1` removals and the insertion
//! curve starts at one token. Delete needs a last-position target (`position: None`), since
//! deleting tokens moves explicit positions.

use explainability_core::{
    Error, Explanation, ForwardOptions, Hooks, LanguageModel, Result, SplitMix64, Target,
    TargetOutput,
    tch::{self, Tensor},
};
use explainability_core::{RemovalStrategy, evaluate_removals};
use serde::{Deserialize, Serialize};

use crate::stats::{kendall_tau, pearson, trapezoid_auc};

/// Settings of [`fidelity`]. `Default` is the architecture-agnostic setting (zero embedding,
/// probability: works with explicit target positions and encoders); next-token targets of
/// causal decoders should use [`FidelityConfig::causal_lm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidelityConfig {
    /// How tokens are removed (default [`RemovalStrategy::ZeroEmbedding`]).
    pub strategy: RemovalStrategy,
    /// Top-k fractions in `(0, 1]` (default 1, 5, 10, 20, 50 %); `k = ⌈fraction · n⌉ ≥ 1`.
    pub bins: Vec<f64>,
    /// Output read for token targets (default probability, as ERASER).
    pub output: TargetOutput,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Points of the deletion / insertion curves besides the start (0: one per token).
    pub curve_steps: usize,
    /// Random subsets of the faithfulness correlation (0 skips it).
    pub faithfulness_subsets: usize,
    /// Fraction of tokens in each subset.
    pub faithfulness_fraction: f64,
    /// Whether to compute the leave-one-out Kendall τ (`n` extra rows).
    pub leave_one_out: bool,
    /// Seed of the subsets.
    pub seed: u64,
    /// Never remove special tokens (BOS/EOS/pad/unk of [`ModelInfo`]) nor count them in `n`:
    /// removing a decoder's BOS, its attention sink, puts every input off-distribution and
    /// swamps the comparison of rankings (default `true`).
    ///
    /// [`ModelInfo`]: explainability_core::ModelInfo
    pub protect_special_tokens: bool,
    /// Rank tokens by `|score|` instead of the signed score (default `false`).
    pub rank_by_absolute: bool,
    /// Never remove the first position nor count it in `n` (default `false`). For decoders
    /// whose tokenizer adds no BOS the first token plays the BOS's part as attention sink.
    pub keep_first_token: bool,
    /// Never remove the token at the explained position nor count it in `n` (default
    /// `true`). For a next-token target that token is the query itself — the position the
    /// prediction is read from — not evidence for the answer: removing it replaces the
    /// question, which every attribution method ranks low and which moves the output more
    /// than any evidence, so it would dominate the comparison of rankings.
    pub keep_target_token: bool,
}

impl Default for FidelityConfig {
    fn default() -> Self {
        Self {
            strategy: RemovalStrategy::ZeroEmbedding,
            bins: vec![0.01, 0.05, 0.1, 0.2, 0.5],
            output: TargetOutput::Prob,
            batch_size: 16,
            curve_steps: 0,
            faithfulness_subsets: 32,
            faithfulness_fraction: 0.25,
            leave_one_out: true,
            seed: 0,
            protect_special_tokens: true,
            rank_by_absolute: false,
            keep_first_token: false,
            keep_target_token: true,
        }
    }
}

impl FidelityConfig {
    /// The setting for next-token targets of causal decoders (what [`MetricsConfig`] uses):
    /// [`RemovalStrategy::Delete`] (ERASER's own removal: the edited input is still real
    /// text), log-probability output (does not saturate at 0 the way a small probability
    /// does, and is additive over independent evidence), and both the first token (the
    /// attention sink when no BOS is added) and the explained position's token kept. The
    /// measurements behind each choice are in docs/methods.md. Needs a last-position target.
    ///
    /// [`MetricsConfig`]: crate::MetricsConfig
    pub fn causal_lm() -> Self {
        Self {
            strategy: RemovalStrategy::Delete,
            output: TargetOutput::LogProb,
            keep_first_token: true,
            keep_target_token: true,
            ..Self::default()
        }
    }
}

/// Fidelity numbers of one explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidelityReport {
    /// `f(x)`.
    pub full_value: f64,
    /// `k` per bin.
    pub ks: Vec<usize>,
    /// `f(x) − f(x ∖ top-k)` per bin (higher is better).
    pub comprehensiveness: Vec<f64>,
    /// `f(x) − f(top-k)` per bin (lower is better).
    pub sufficiency: Vec<f64>,
    /// Mean comprehensiveness over bins.
    pub aopc_comprehensiveness: f64,
    /// Mean sufficiency over bins.
    pub aopc_sufficiency: f64,
    /// `f` after removing the top `j` tokens, for the curve's `j`s.
    pub deletion_curve: Vec<f64>,
    /// `f` keeping only the top `j` tokens.
    pub insertion_curve: Vec<f64>,
    /// Trapezoidal AUC of the deletion curve on `[0, 1]` (lower is better).
    pub deletion_auc: f64,
    /// Trapezoidal AUC of the insertion curve (higher is better).
    pub insertion_auc: f64,
    /// Faithfulness correlation (`None` when skipped or degenerate).
    pub faithfulness_correlation: Option<f64>,
    /// Leave-one-out Kendall τ-b (`None` when skipped or degenerate).
    pub loo_kendall_tau: Option<f64>,
    /// Edited inputs evaluated.
    pub rows_evaluated: usize,
}

/// The target with its output replaced by `output` (token targets only).
fn with_output(target: &Target, output: TargetOutput) -> Target {
    match target {
        Target::Token { token, position, .. } => {
            Target::Token { token: *token, output, position: *position }
        }
        Target::Contrastive { .. } => target.clone(),
    }
}

/// Mask removing the tokens of `order[..j]`.
fn remove_first(order: &[usize], j: usize, n: usize) -> Vec<bool> {
    let mut mask = vec![false; n];
    for &i in &order[..j] {
        mask[i] = true;
    }
    mask
}

/// Fidelity of `explanation` on `model`.
///
/// # Errors
/// [`Error::InvalidArgument`] for bins outside `(0, 1]`, no bins, a faithfulness fraction
/// outside `(0, 1)`, and as [`evaluate_removals`].
pub fn fidelity(
    model: &dyn LanguageModel,
    explanation: &Explanation,
    config: &FidelityConfig,
) -> Result<FidelityReport> {
    let n = explanation.len();
    let ids = &explanation.token_ids;
    if n == 0 || ids.len() != n {
        return Err(Error::invalid_argument(format!(
            "explanation has {} ids and {n} scores",
            ids.len()
        )));
    }
    if config.bins.is_empty() || config.bins.iter().any(|&b| !(b > 0.0 && b <= 1.0)) {
        return Err(Error::invalid_argument("fidelity bins must be fractions in (0, 1]"));
    }
    if config.faithfulness_subsets > 0
        && !(config.faithfulness_fraction > 0.0 && config.faithfulness_fraction < 1.0)
    {
        return Err(Error::invalid_argument("faithfulness_fraction must lie in (0, 1)"));
    }
    let mut target = with_output(&explanation.target, config.output);
    if target.token_id().is_none() {
        let input = Tensor::from_slice(ids).unsqueeze(0).to_device(model.device());
        let out = tch::no_grad(|| {
            model.forward_ids(&input, &ForwardOptions::default(), &mut Hooks::new())
        })?;
        target = target.resolve(&out.logits)?;
    }
    let delete = config.strategy == RemovalStrategy::Delete;
    let read_at = match &target {
        Target::Token { position, .. } | Target::Contrastive { position, .. } => {
            position.unwrap_or(n - 1)
        }
    };
    let scores: Vec<f64> = explanation.scores.iter().copied().collect();
    let special = model.info().special_tokens;
    let specials: Vec<i64> =
        [special.bos, special.eos, special.pad, special.unk].into_iter().flatten().collect();
    let mut order: Vec<usize> = (0..n)
        .filter(|&i| !(config.protect_special_tokens && specials.contains(&ids[i])))
        .filter(|&i| !(config.keep_first_token && i == 0))
        .filter(|&i| !(config.keep_target_token && i == read_at))
        .collect();
    let key = |i: usize| if config.rank_by_absolute { scores[i].abs() } else { scores[i] };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let full_n = n;
    let n_removable = order.len();
    if n_removable == 0 {
        return Err(Error::invalid_argument(
            "every token of the input is a protected special token",
        ));
    }
    // Delete may remove every removable token only when a protected one remains.
    let delete = delete && n_removable == full_n;

    // `m` removable tokens, ranked in `order`; masks span all `full_n` positions.
    let m = n_removable;
    let n = full_n;
    let keep_top = |j: usize| -> Vec<bool> {
        let mut mask = vec![false; n];
        for &i in &order[j..] {
            mask[i] = true;
        }
        mask
    };
    let mut masks: Vec<Vec<bool>> = vec![vec![false; n]];
    let ks: Vec<usize> =
        config.bins.iter().map(|&b| ((b * m as f64).ceil() as usize).clamp(1, m)).collect();
    let comp_at = masks.len();
    for &k in &ks {
        // Delete cannot drop every token: the full-removal row keeps the last ranked one.
        let k = if delete { k.min(m - 1) } else { k };
        masks.push(remove_first(&order, k, n));
    }
    let suff_at = masks.len();
    for &k in &ks {
        masks.push(keep_top(k));
    }
    let steps = if config.curve_steps == 0 { m } else { config.curve_steps.min(m) };
    let points: Vec<usize> = (0..=steps).map(|j| (j * m + steps / 2) / steps).collect();
    let del_at = masks.len();
    for &j in &points {
        masks.push(remove_first(&order, if delete { j.min(m - 1) } else { j }, n));
    }
    let ins_at = masks.len();
    for &j in &points {
        masks.push(keep_top(if delete { j.max(1) } else { j }));
    }
    let faith_at = masks.len();
    let mut subset_sums = Vec::with_capacity(config.faithfulness_subsets);
    if config.faithfulness_subsets > 0 {
        let size = ((config.faithfulness_fraction * m as f64).ceil() as usize).clamp(1, m);
        let size = if delete { size.min(m - 1) } else { size };
        let mut seed = config.seed;
        for &id in ids {
            seed = seed.rotate_left(9) ^ (id as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        }
        let mut rng = SplitMix64::new(seed);
        for _ in 0..config.faithfulness_subsets {
            // partial Fisher–Yates over the removable positions
            let mut perm = order.clone();
            for i in 0..size {
                let j = i + rng.below((m - i) as u64) as usize;
                perm.swap(i, j);
            }
            subset_sums.push(perm[..size].iter().map(|&i| scores[i]).sum::<f64>());
            masks.push(remove_first(&perm, size, n));
        }
    }
    let loo_at = masks.len();
    let loo = config.leave_one_out && !(delete && m == 1);
    let mut loo_positions = order.clone();
    loo_positions.sort_unstable();
    if loo {
        for &i in &loo_positions {
            let mut mask = vec![false; n];
            mask[i] = true;
            masks.push(mask);
        }
    }
    let v = evaluate_removals(model, ids, &target, config.strategy, &masks, config.batch_size)?;
    let full = v[0];
    let comprehensiveness: Vec<f64> = v[comp_at..suff_at].iter().map(|x| full - x).collect();
    let sufficiency: Vec<f64> = v[suff_at..del_at].iter().map(|x| full - x).collect();
    let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
    let deletion_curve = v[del_at..ins_at].to_vec();
    let insertion_curve = v[ins_at..faith_at].to_vec();
    let faithfulness_correlation = if config.faithfulness_subsets > 0 {
        let drops: Vec<f64> = v[faith_at..loo_at].iter().map(|x| full - x).collect();
        pearson(&subset_sums, &drops)
    } else {
        None
    };
    let loo_kendall_tau = if loo {
        let effects: Vec<f64> = v[loo_at..].iter().map(|x| full - x).collect();
        let own: Vec<f64> = loo_positions.iter().map(|&i| scores[i]).collect();
        kendall_tau(&own, &effects)
    } else {
        None
    };
    Ok(FidelityReport {
        full_value: full,
        aopc_comprehensiveness: mean(&comprehensiveness),
        aopc_sufficiency: mean(&sufficiency),
        ks,
        comprehensiveness,
        sufficiency,
        deletion_auc: trapezoid_auc(&deletion_curve),
        insertion_auc: trapezoid_auc(&insertion_curve),
        deletion_curve,
        insertion_curve,
        faithfulness_correlation,
        loo_kendall_tau,
        rows_evaluated: masks.len(),
    })
}
