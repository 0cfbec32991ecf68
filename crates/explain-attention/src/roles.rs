//! Head roles scored per head (TransformerLens `detect_head` style) and head ablation through
//! a replacing hook on `blocks.{l}.attn.hook_z`, so that a role can be tested causally.
//!
//! Role scores (each the mean attention a head pays to the key the role predicts):
//! - previous-token: A[i, i − 1] over i ≥ 1;
//! - self: A[i, i];
//! - first-token (attention sink): A[i, 0] over i ≥ 1;
//! - duplicate-token: Σ_{j < i, tok_j = tok_i} A[i, j] over positions whose token occurred
//!   before;
//! - induction: on a random sequence repeated twice (`r r`, seeded), A[i, i − n + 1] over the
//!   second copy — attending to the token *after* the previous occurrence of the current one
//!   (Olsson et al. 2022, arXiv:2209.11895).

use std::collections::HashMap;

use explainability_core::{
    Error, ForwardOptions, HookFilter, HookPoint, Hooks, LanguageModel, ModelInfo, Result,
    SplitMix64,
};
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::capture::AttentionCapture;

/// A head role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HeadRole {
    /// Attends to the previous token.
    PreviousToken,
    /// Attends to earlier copies of the current token.
    DuplicateToken,
    /// Attends to the token after an earlier copy of the current token.
    Induction,
    /// Attends to the first token (attention sink).
    FirstToken,
    /// Attends to itself.
    SelfToken,
}

impl HeadRole {
    /// Every role.
    pub const ALL: [HeadRole; 5] = [
        HeadRole::PreviousToken,
        HeadRole::DuplicateToken,
        HeadRole::Induction,
        HeadRole::FirstToken,
        HeadRole::SelfToken,
    ];

    /// English name.
    pub fn name_en(self) -> &'static str {
        match self {
            HeadRole::PreviousToken => "previous-token",
            HeadRole::DuplicateToken => "duplicate-token",
            HeadRole::Induction => "induction",
            HeadRole::FirstToken => "first-token (attention sink)",
            HeadRole::SelfToken => "self",
        }
    }

    /// Chinese name.
    pub fn name_zh(self) -> &'static str {
        match self {
            HeadRole::PreviousToken => "前一词元",
            HeadRole::DuplicateToken => "重复词元",
            HeadRole::Induction => "归纳",
            HeadRole::FirstToken => "首词元（注意力汇聚）",
            HeadRole::SelfToken => "自身",
        }
    }
}

/// Mean attention to the previous token.
pub fn previous_token_score(p: ArrayView2<'_, f32>) -> f64 {
    mean((1..p.nrows()).map(|i| f64::from(p[[i, i - 1]])))
}

/// Mean attention to the query's own position.
pub fn self_score(p: ArrayView2<'_, f32>) -> f64 {
    mean((0..p.nrows()).map(|i| f64::from(p[[i, i]])))
}

/// Mean attention to the first token, over queries after it.
pub fn first_token_score(p: ArrayView2<'_, f32>) -> f64 {
    mean((1..p.nrows()).map(|i| f64::from(p[[i, 0]])))
}

/// Mean attention to earlier copies of the current token, over queries that have one.
pub fn duplicate_token_score(p: ArrayView2<'_, f32>, ids: &[i64]) -> f64 {
    mean((0..p.nrows().min(ids.len())).filter_map(|i| {
        let earlier: Vec<usize> = (0..i).filter(|&j| ids[j] == ids[i]).collect();
        (!earlier.is_empty()).then(|| earlier.iter().map(|&j| f64::from(p[[i, j]])).sum())
    }))
}

/// Mean attention to the token after the previous occurrence of the current token, over
/// queries that have a previous occurrence followed by another token.
pub fn induction_score(p: ArrayView2<'_, f32>, ids: &[i64]) -> f64 {
    let mut last_seen: HashMap<i64, usize> = HashMap::new();
    let mut scores = Vec::new();
    for i in 0..p.nrows().min(ids.len()) {
        if let Some(&j) = last_seen.get(&ids[i])
            && j + 1 < i
        {
            scores.push(f64::from(p[[i, j + 1]]));
        }
        last_seen.insert(ids[i], i);
    }
    mean(scores.into_iter())
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Role scores of every head, `[layer, head]` per role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadRoleScores {
    /// Score grids by role.
    pub scores: Vec<(HeadRole, Array2<f64>)>,
    /// Length `n` of the random block repeated for the induction score.
    pub induction_block: usize,
    /// Seed of the random block.
    pub seed: u64,
}

/// A head with a role and its score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoleHead {
    /// Layer.
    pub layer: usize,
    /// Query head.
    pub head: usize,
    /// Role score.
    pub score: f64,
}

impl HeadRoleScores {
    /// Scores every head: previous-token, first-token and self on `capture` (the text being
    /// explained); duplicate-token and induction on a seeded random block of `block` tokens
    /// repeated twice (run through the same model), where both roles are well defined.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `block < 2`; model errors (a repeated block longer than
    /// the context window gives [`Error::SequenceTooLong`]).
    pub fn compute(
        model: &dyn LanguageModel,
        capture: &AttentionCapture,
        block: usize,
        seed: u64,
    ) -> Result<Self> {
        if block < 2 {
            return Err(Error::invalid_argument("the induction block needs at least 2 tokens"));
        }
        let ids = repeated_random_tokens(model.info(), block, seed);
        let repeated = AttentionCapture::from_ids(model, &ids)?;
        let grid = |cap: &AttentionCapture, f: &dyn Fn(ArrayView2<'_, f32>) -> f64| {
            Array2::from_shape_fn((cap.n_layers(), cap.n_heads()), |(l, h)| {
                f(cap.patterns[l].index_axis(Axis(0), h))
            })
        };
        let scores = vec![
            (HeadRole::PreviousToken, grid(capture, &previous_token_score)),
            (HeadRole::DuplicateToken, grid(&repeated, &|p| duplicate_token_score(p, &ids))),
            (HeadRole::Induction, grid(&repeated, &|p| induction_score(p, &ids))),
            (HeadRole::FirstToken, grid(capture, &first_token_score)),
            (HeadRole::SelfToken, grid(capture, &self_score)),
        ];
        Ok(Self { scores, induction_block: block, seed })
    }

    /// The score grid of one role.
    pub fn grid(&self, role: HeadRole) -> Option<&Array2<f64>> {
        self.scores.iter().find(|(r, _)| *r == role).map(|(_, g)| g)
    }

    /// Heads of `role` sorted by decreasing score, at most `k`.
    pub fn top(&self, role: HeadRole, k: usize) -> Vec<RoleHead> {
        let Some(grid) = self.grid(role) else { return Vec::new() };
        let mut heads: Vec<RoleHead> = grid
            .indexed_iter()
            .map(|((layer, head), &score)| RoleHead { layer, head, score })
            .collect();
        heads.sort_by(|a, b| {
            b.score.total_cmp(&a.score).then((a.layer, a.head).cmp(&(b.layer, b.head)))
        });
        heads.truncate(k);
        heads
    }

    /// Heads whose score for `role` is at least `threshold`.
    pub fn above(&self, role: HeadRole, threshold: f64) -> Vec<RoleHead> {
        self.top(role, usize::MAX).into_iter().filter(|h| h.score >= threshold).collect()
    }
}

/// A random block of `block` token ids repeated twice, prefixed with BOS when the model has
/// one. Ids avoid the special tokens and come from a seeded private generator.
pub fn repeated_random_tokens(info: &ModelInfo, block: usize, seed: u64) -> Vec<i64> {
    let special = [
        info.special_tokens.bos,
        info.special_tokens.eos,
        info.special_tokens.pad,
        info.special_tokens.unk,
    ];
    // Skip the low ids where tokenizers keep their special and control tokens.
    let low = (info.vocab_size / 100).clamp(1, 1000) as u64;
    let span = (info.vocab_size as u64).saturating_sub(low).max(1);
    let mut rng = SplitMix64::new(seed ^ 0x5DEE_CE66_D1CE_5EED);
    let mut block_ids = Vec::with_capacity(block);
    while block_ids.len() < block {
        let id = (low + rng.below(span)) as i64;
        if !special.contains(&Some(id)) && !block_ids.contains(&id) {
            block_ids.push(id);
        }
    }
    let mut ids = Vec::with_capacity(2 * block + 1);
    if let Some(bos) = info.special_tokens.bos {
        ids.push(bos);
    }
    ids.extend_from_slice(&block_ids);
    ids.extend_from_slice(&block_ids);
    ids
}

/// How an ablated head's output is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AblationMode {
    /// `z` of the head set to zero.
    Zero,
    /// `z` of the head replaced by its mean over positions of the same input. The mean runs
    /// over every position, so in a causal model later positions inform earlier ones (a mean
    /// over a reference dataset would not); the induction test reads it as "this head's
    /// position-specific output removed".
    Mean,
}

/// Heads to ablate through `blocks.{l}.attn.hook_z`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadAblation {
    /// `(layer, head)` pairs.
    pub heads: Vec<(usize, usize)>,
    /// Replacement.
    pub mode: AblationMode,
}

impl HeadAblation {
    /// Checks every head against the model.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`], [`Error::HeadOutOfRange`].
    pub fn validate(&self, info: &ModelInfo) -> Result<()> {
        for &(layer, head) in &self.heads {
            info.check_layer(layer)?;
            info.check_head(head)?;
        }
        Ok(())
    }

    /// Adds the replacing hooks to `hooks`.
    ///
    /// # Errors
    /// As [`HeadAblation::validate`].
    pub fn install(&self, info: &ModelInfo, hooks: &mut Hooks<'_>) -> Result<()> {
        self.validate(info)?;
        let mut by_layer: HashMap<usize, Vec<i64>> = HashMap::new();
        for &(layer, head) in &self.heads {
            by_layer.entry(layer).or_default().push(head as i64);
        }
        let mode = self.mode;
        let points: Vec<HookPoint> = by_layer.keys().map(|&l| HookPoint::z(l)).collect();
        hooks.replace(HookFilter::points(points), move |point, z| {
            // z: [batch, pos, head, d_head]
            let heads = point.layer().and_then(|l| by_layer.get(&l)).cloned().unwrap_or_default();
            let index = Tensor::from_slice(&heads).to_device(z.device());
            let selected = z.f_index_select(2, &index)?;
            let replacement = match mode {
                AblationMode::Zero => selected.f_zeros_like()?,
                AblationMode::Mean => selected
                    .f_mean_dim(1, true, selected.kind())?
                    .f_expand_as(&selected)?
                    .f_contiguous()?,
            };
            Ok(z.f_index_copy(2, &index, &replacement)?)
        });
        Ok(())
    }

    /// Mean next-token cross-entropy (nats) of `ids` over target positions `from..` (each
    /// position predicts the next id), with these heads ablated. An empty ablation gives the
    /// clean loss.
    ///
    /// # Errors
    /// As [`HeadAblation::validate`]; [`Error::InvalidArgument`] when no position is scored.
    pub fn loss(&self, model: &dyn LanguageModel, ids: &[i64], from: usize) -> Result<f64> {
        if from + 1 >= ids.len() {
            return Err(Error::invalid_argument(format!(
                "no next-token targets: {} ids, scoring from position {from}",
                ids.len()
            )));
        }
        let mut hooks = Hooks::new();
        self.install(model.info(), &mut hooks)?;
        let input = Tensor::from_slice(ids).unsqueeze(0).to_device(model.device());
        let _guard = tch::no_grad_guard();
        let out = model.forward_ids(&input, &ForwardOptions::default(), &mut hooks)?;
        let n = (ids.len() - 1 - from) as i64;
        let log_probs = out
            .logits
            .f_select(0, 0)?
            .f_narrow(0, from as i64, n)?
            .f_log_softmax(-1, Kind::Float)?;
        let targets = Tensor::from_slice(&ids[from + 1..]).to_device(model.device()).unsqueeze(1);
        let picked = log_probs.f_gather(1, &targets, false)?;
        Ok(-picked.f_mean(Kind::Double)?.f_double_value(&[])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    #[test]
    fn role_scores_on_hand_made_patterns() {
        let prev = array![
            [1.0f32, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0]
        ];
        assert_abs_diff_eq!(previous_token_score(prev.view()), 1.0);
        assert_abs_diff_eq!(self_score(prev.view()), 0.25);
        assert_abs_diff_eq!(first_token_score(prev.view()), 1.0 / 3.0);
        // ids a b a b: position 2 (a) has an earlier a at 0 → induction attends to 1.
        let ids = [7, 8, 7, 8];
        let induction = array![
            [1.0f32, 0.0, 0.0, 0.0],
            [0.5, 0.5, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0]
        ];
        assert_abs_diff_eq!(induction_score(induction.view(), &ids), 1.0);
        let duplicate = array![
            [1.0f32, 0.0, 0.0, 0.0],
            [0.5, 0.5, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.5, 0.0, 0.5]
        ];
        assert_abs_diff_eq!(duplicate_token_score(duplicate.view(), &ids), 0.75);
        assert_abs_diff_eq!(induction_score(duplicate.view(), &ids), 0.0);
        // No repeats: the score is defined (0), not NaN.
        assert_abs_diff_eq!(induction_score(prev.view(), &[1, 2, 3, 4]), 0.0);
        assert_abs_diff_eq!(previous_token_score(array![[1.0f32]].view()), 0.0);
    }

    #[test]
    fn random_block_is_seeded_distinct_and_repeated() {
        let info = ModelInfo {
            name: "t".into(),
            architecture: explainability_core::Architecture::Llama,
            n_layers: 1,
            n_heads: 1,
            n_kv_heads: 1,
            d_model: 4,
            d_head: 4,
            d_mlp: 4,
            vocab_size: 1000,
            max_positions: 64,
            causal: true,
            special_tokens: explainability_core::SpecialTokens {
                bos: Some(1),
                ..Default::default()
            },
        };
        let a = repeated_random_tokens(&info, 10, 3);
        assert_eq!(a, repeated_random_tokens(&info, 10, 3));
        assert_ne!(a, repeated_random_tokens(&info, 10, 4));
        assert_eq!(a.len(), 21);
        assert_eq!(a[0], 1);
        assert_eq!(&a[1..11], &a[11..21]);
        let mut block = a[1..11].to_vec();
        block.sort();
        block.dedup();
        assert_eq!(block.len(), 10);
        assert!(a[1..].iter().all(|&id| (10..1000).contains(&id)));
    }
}
