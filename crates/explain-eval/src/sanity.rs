//! Model parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency
//! maps", arXiv 1810.03292): re-initialise the model's blocks cascading from the top layer
//! down, re-explain, and measure how similar the explanations stay. An explanation that
//! barely changes when the model it claims to explain is destroyed does not depend on the
//! model — the test's failing verdict.
//!
//! **Randomisation.** Every parameter tensor under the `blocks.{l}.` prefix of
//! [`LanguageModel::named_parameters`] is refilled with `mean + std · z`, `z` standard normal
//! from a private [`SplitMix64`] stream seeded by `(seed, layer, parameter index)`, where mean
//! and std are those of the original tensor (so scales — including RMSNorm gains — keep
//! their magnitude while all learned structure is gone). Embeddings, the final norm and the
//! LM head are left alone: with tied embeddings the head is the input embedding, and
//! randomising it would change the input itself rather than the computation.
//!
//! **Restoration.** The weights are written in place (the trait exposes storage-sharing
//! tensors) and copied back from a snapshot when the test ends — also on error, through a
//! drop guard — so the model is bit-identical afterwards (tested).
//!
//! **Similarity.** Per checkpoint: Spearman of the signed scores, Spearman of `|a|` (the
//! paper's main measure: a sign flip is not a change of importance) and the top-k overlap.
//! The verdict uses the `|a|` Spearman after the last checkpoint: the explanation depends on
//! the model when it falls below [`RandomisationConfig::threshold`]. When a score vector is
//! constant its ranks are undefined; two identical vectors count as similarity 1, otherwise
//! a constant vector is given similarity 0.

use explainability_core::{
    Error, Explainer, Explanation, LanguageModel, Result, SplitMix64,
    tch::{self, Kind, Tensor},
};
use serde::{Deserialize, Serialize};

use crate::stats::{spearman, top_k_overlap};

/// Settings of [`parameter_randomisation`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomisationConfig {
    /// Seed of the re-initialisation.
    pub seed: u64,
    /// Numbers of top layers randomised at which explanations are recomputed, cascading
    /// (e.g. `[1, 2, 4, 30]`: the top layer, then the top two, …). Empty: every layer count
    /// `1..=n_layers`, as in the paper. Counts beyond `n_layers` are clamped.
    pub checkpoints: Vec<usize>,
    /// `|a|`-Spearman after the last checkpoint below which the explanation is said to depend
    /// on the model (default 0.5).
    pub threshold: f64,
    /// `k` of the top-k overlap (clamped to the number of tokens; default 3).
    pub top_k: usize,
}

impl Default for RandomisationConfig {
    fn default() -> Self {
        Self { seed: 0, checkpoints: Vec::new(), threshold: 0.5, top_k: 3 }
    }
}

/// Similarity of the explanation after one cascading step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandomisationStep {
    /// How many top layers are randomised.
    pub layers_randomised: usize,
    /// The lowest randomised layer (`n_layers − layers_randomised`).
    pub lowest_layer: usize,
    /// Spearman of the signed scores against the original explanation.
    pub spearman: f64,
    /// Spearman of `|scores|` against the original's.
    pub spearman_abs: f64,
    /// Share of the original top-k (by `|a|`) still in the top-k.
    pub top_k_overlap: f64,
}

/// Result of the parameter randomisation test for one explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomisationReport {
    /// Method name.
    pub method: String,
    /// One entry per checkpoint, fewest layers first.
    pub steps: Vec<RandomisationStep>,
    /// `spearman_abs` of the last step.
    pub final_similarity: f64,
    /// Mean `spearman_abs` over the steps.
    pub mean_similarity: f64,
    /// The threshold the verdict used.
    pub threshold: f64,
    /// Verdict: `final_similarity < threshold`.
    pub depends_on_model: bool,
}

/// Rank similarity with the documented convention for constant vectors.
pub(crate) fn rank_similarity(a: &[f64], b: &[f64]) -> f64 {
    match spearman(a, b) {
        Some(s) => s,
        None if a == b => 1.0,
        None => 0.0,
    }
}

/// In-place re-initialisation of layers, undone by [`Randomised::restore`] or on drop.
struct Randomised {
    /// (parameter sharing storage with the model, snapshot of its original values).
    saved: Vec<(Tensor, Tensor)>,
}

impl Randomised {
    fn new() -> Self {
        Self { saved: Vec::new() }
    }

    /// Re-initialises every `blocks.{layer}.` parameter.
    fn randomise_layer(
        &mut self,
        model: &dyn LanguageModel,
        layer: usize,
        seed: u64,
    ) -> Result<()> {
        let prefix = format!("blocks.{layer}.");
        let _guard = tch::no_grad_guard();
        let mut found = false;
        for (index, (name, param)) in model.named_parameters().into_iter().enumerate() {
            if !name.starts_with(&prefix) {
                continue;
            }
            found = true;
            let mut snapshot = param.f_empty_like()?;
            snapshot.f_copy_(&param)?;
            let values = param.f_to_kind(Kind::Double)?;
            let numel = param.numel();
            let mean = values.f_mean(Kind::Double)?.f_double_value(&[])?;
            let std = if numel > 1 { values.f_std(true)?.f_double_value(&[])? } else { 0.0 };
            let mut rng = SplitMix64::new(
                seed ^ (layer as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93),
            );
            let fresh = normals(&mut rng, numel)?
                .f_mul_scalar(std)?
                .f_add_scalar(mean)?
                .f_view(param.size().as_slice())?
                .f_to_kind(param.kind())?
                .f_to_device(param.device())?;
            let mut target = param.shallow_clone();
            target.f_copy_(&fresh)?;
            self.saved.push((param, snapshot));
        }
        if found {
            Ok(())
        } else {
            Err(Error::invalid_argument(format!(
                "the model exposes no parameters under `{prefix}`: cannot randomise layer {layer}"
            )))
        }
    }

    /// Copies every snapshot back.
    fn restore(mut self) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (param, snapshot) in self.saved.drain(..).rev() {
            let mut target = param;
            target.f_copy_(&snapshot)?;
        }
        Ok(())
    }
}

impl Drop for Randomised {
    fn drop(&mut self) {
        // Reached with entries only when an error interrupted the test; restoring is
        // best-effort here because drop cannot report errors.
        let _guard = tch::no_grad_guard();
        for (param, snapshot) in self.saved.drain(..).rev() {
            let mut target = param;
            let _ = target.f_copy_(&snapshot);
        }
    }
}

/// `n` standard normal draws (f32 tensor): Box–Muller on two 32-bit uniforms per 64-bit
/// draw, the transcendental part vectorised by libtorch.
fn normals(rng: &mut SplitMix64, n: usize) -> Result<Tensor> {
    let scale = 1.0 / 4_294_967_296.0_f64;
    let mut u1 = Vec::with_capacity(n);
    let mut u2 = Vec::with_capacity(n);
    for _ in 0..n {
        let bits = rng.next_u64();
        // (0, 1]: the logarithm stays finite
        u1.push((((bits >> 32) + 1) as f64 * scale) as f32);
        u2.push(((bits & 0xFFFF_FFFF) as f64 * scale) as f32);
    }
    let radius = Tensor::from_slice(&u1).f_log()?.f_mul_scalar(-2.0)?.f_sqrt()?;
    let angle = Tensor::from_slice(&u2).f_mul_scalar(std::f64::consts::TAU)?.f_cos()?;
    Ok(radius.f_mul(&angle)?)
}

/// The checkpoints as sorted, deduplicated layer counts in `1..=n_layers`.
fn checkpoints(config: &RandomisationConfig, n_layers: usize) -> Result<Vec<usize>> {
    if n_layers == 0 {
        return Err(Error::invalid_argument("the model has no layers to randomise"));
    }
    if config.top_k == 0 {
        return Err(Error::invalid_argument("randomisation top_k must be at least 1"));
    }
    if !config.threshold.is_finite() {
        return Err(Error::invalid_argument("randomisation threshold must be finite"));
    }
    let mut counts: Vec<usize> = if config.checkpoints.is_empty() {
        (1..=n_layers).collect()
    } else {
        config.checkpoints.iter().map(|&c| c.min(n_layers)).collect()
    };
    if counts.contains(&0) {
        return Err(Error::invalid_argument("randomisation checkpoints must be at least 1"));
    }
    counts.sort_unstable();
    counts.dedup();
    Ok(counts)
}

/// Parameter randomisation test of `explainer` on one explanation it produced (`original`,
/// re-explained on the same ids and resolved target).
///
/// # Errors
/// [`Error::InvalidArgument`] for a zero checkpoint or `top_k`, a model without layers or
/// without `blocks.{l}.` parameters; explainer and model errors (the weights are restored
/// in every case).
pub fn parameter_randomisation(
    model: &dyn LanguageModel,
    explainer: &dyn Explainer,
    original: &Explanation,
    config: &RandomisationConfig,
) -> Result<RandomisationReport> {
    let mut reports =
        parameter_randomisation_many(model, explainer, std::slice::from_ref(original), config)?;
    reports.pop().ok_or_else(|| Error::invalid_argument("no randomisation report produced"))
}

/// [`parameter_randomisation`] for many explanations of one explainer: the model is
/// randomised once per checkpoint and every input re-explained under it, so the cost of
/// re-initialisation is shared.
///
/// # Errors
/// As [`parameter_randomisation`]; [`Error::InvalidArgument`] for no explanations.
pub fn parameter_randomisation_many(
    model: &dyn LanguageModel,
    explainer: &dyn Explainer,
    originals: &[Explanation],
    config: &RandomisationConfig,
) -> Result<Vec<RandomisationReport>> {
    if originals.is_empty() {
        return Err(Error::invalid_argument("parameter randomisation of zero explanations"));
    }
    let n_layers = model.info().n_layers;
    let counts = checkpoints(config, n_layers)?;
    let original_scores: Vec<Vec<f64>> =
        originals.iter().map(|e| e.scores.iter().copied().collect()).collect();
    let mut steps: Vec<Vec<RandomisationStep>> = vec![Vec::new(); originals.len()];
    let mut randomised = Randomised::new();
    let mut done = 0;
    for &count in &counts {
        while done < count {
            randomised.randomise_layer(model, n_layers - 1 - done, config.seed)?;
            done += 1;
        }
        for ((original, scores), out) in originals.iter().zip(&original_scores).zip(&mut steps) {
            let e = explainer.explain_ids(model, &original.token_ids, &original.target)?;
            let now: Vec<f64> = e.scores.iter().copied().collect();
            if now.len() != scores.len() {
                return Err(Error::invalid_argument(format!(
                    "{}: re-explanation has {} scores for {} tokens",
                    explainer.name(),
                    now.len(),
                    scores.len()
                )));
            }
            let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
            out.push(RandomisationStep {
                layers_randomised: count,
                lowest_layer: n_layers - count,
                spearman: rank_similarity(scores, &now),
                spearman_abs: rank_similarity(&abs(scores), &abs(&now)),
                top_k_overlap: top_k_overlap(scores, &now, config.top_k),
            });
        }
    }
    randomised.restore()?;
    Ok(originals
        .iter()
        .zip(steps)
        .map(|(original, steps)| {
            let final_similarity = steps.last().map_or(1.0, |s| s.spearman_abs);
            let mean_similarity =
                steps.iter().map(|s| s.spearman_abs).sum::<f64>() / steps.len().max(1) as f64;
            RandomisationReport {
                method: original.method.clone(),
                steps,
                final_similarity,
                mean_similarity,
                threshold: config.threshold,
                depends_on_model: final_similarity < config.threshold,
            }
        })
        .collect())
}
