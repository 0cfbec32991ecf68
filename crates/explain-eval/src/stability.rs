//! Stability of an explanation under small changes that should not matter.
//!
//! * Max-sensitivity (Yeh et al. 2019, arXiv 1901.09392):
//!   `max_k ‖a − a_k‖ / ‖a‖` over explanations `a_k` of inputs whose embeddings carry
//!   uniform noise in `[−r, r]` per entry.
//! * Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, arXiv 1806.08049):
//!   `max_k ‖a − a_k‖ / ‖x − x_k‖` under Gaussian noise of standard deviation `r`, with `x`
//!   the input embeddings (Frobenius norm).
//! * Rank stability under those perturbations: mean Spearman and top-k overlap between `a`
//!   and the `a_k` of the uniform draws.
//! * Rank stability across runs of a stochastic explainer ([`seed_stability`]): mean and
//!   minimum pairwise Spearman and top-k overlap over `n` seeds.
//!
//! `r = radius · std(x)`, the standard deviation of the input's embedding entries, so the
//! radius is relative to the model's embedding scale.
//!
//! **How noise reaches any explainer.** The explainer runs on a wrapper model whose `embed`
//! adds a fixed noise tensor to every batch row whose ids equal the explained input, and
//! passes every other row (baselines, edited copies) through untouched; everything else is
//! delegated. So gradient methods, path methods and attention read the perturbed input
//! without knowing it, and the explained target stays the one resolved on the clean input.
//!
//! **Randomness.** Draws come from a private [`SplitMix64`] seeded by the configured seed
//! mixed with the token ids: the same seed gives bit-identical results, and each example has
//! its own stream independent of evaluation order.

use explainability_core::{
    Error, Explainer, Explanation, ForwardOptions, Hooks, LanguageModel, ModelInfo, ModelOutput,
    Result, SplitMix64, Target,
    tch::{self, Device, Kind, Tensor},
};
use serde::{Deserialize, Serialize};

use crate::sanity::rank_similarity;
use crate::stats::top_k_overlap;

/// Settings of [`stability`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StabilityConfig {
    /// Perturbed inputs per noise family (default 8; each costs one explanation).
    pub samples: usize,
    /// Noise radius relative to the standard deviation of the input's embedding entries
    /// (default 0.1).
    pub radius: f64,
    /// `k` of the top-k overlap (default 3).
    pub top_k: usize,
    /// Seed of the noise.
    pub seed: u64,
}

impl Default for StabilityConfig {
    fn default() -> Self {
        Self { samples: 8, radius: 0.1, top_k: 3, seed: 0 }
    }
}

/// Stability numbers of one explanation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StabilityReport {
    /// `max_k ‖a − a_k‖ / ‖a‖` under uniform noise (lower is better). For an all-zero `a` it
    /// is 0 when every `a_k` is zero too, `None` otherwise (unbounded).
    pub max_sensitivity: Option<f64>,
    /// Mean of the same ratio over the draws (`None` as above).
    pub mean_sensitivity: Option<f64>,
    /// `max_k ‖a − a_k‖ / ‖x − x_k‖` under Gaussian noise (lower is better).
    pub local_lipschitz: f64,
    /// Mean Spearman between `a` and the `a_k` of the uniform draws (higher is better).
    pub perturbation_spearman: f64,
    /// Mean top-k overlap between `a` and those `a_k`.
    pub perturbation_top_k_overlap: f64,
    /// Draws per family.
    pub samples: usize,
    /// The absolute noise scale `r` used.
    pub noise_scale: f64,
}

/// Rank stability of a stochastic explainer across seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankStability {
    /// Runs compared.
    pub runs: usize,
    /// Mean pairwise Spearman.
    pub mean_spearman: f64,
    /// Smallest pairwise Spearman.
    pub min_spearman: f64,
    /// Mean pairwise top-k overlap.
    pub mean_top_k_overlap: f64,
}

/// Seed of one example's stream: `seed` mixed with the ids.
pub(crate) fn example_seed(seed: u64, ids: &[i64]) -> u64 {
    let mut s = seed ^ 0x5851_F42D_4C95_7F2D;
    for &id in ids {
        s = s.rotate_left(11) ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    s
}

/// A model whose `embed` adds `noise` to the rows equal to `ids`; all else delegated.
struct PerturbedEmbeddings<'a> {
    inner: &'a dyn LanguageModel,
    ids: Vec<i64>,
    /// `[pos, d_model]` in the model's kind, on its device.
    noise: Tensor,
}

impl LanguageModel for PerturbedEmbeddings<'_> {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
    fn device(&self) -> Device {
        self.inner.device()
    }
    fn kind(&self) -> Kind {
        self.inner.kind()
    }
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        self.inner.encode(text, add_special_tokens)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        self.inner.decode(ids)
    }
    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.inner.token_strings(ids)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let embedded = self.inner.embed(ids)?;
        let size = ids.size();
        if size.len() != 2 || size[1] as usize != self.ids.len() {
            return Ok(embedded);
        }
        let flat: Vec<i64> =
            Vec::<i64>::try_from(&ids.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
        let n = self.ids.len();
        let rows: Vec<f32> =
            flat.chunks(n).map(|row| if row == self.ids.as_slice() { 1.0 } else { 0.0 }).collect();
        if rows.iter().all(|&r| r == 0.0) {
            return Ok(embedded);
        }
        let select = Tensor::from_slice(&rows)
            .f_to_kind(embedded.kind())?
            .f_to_device(embedded.device())?
            .f_view([-1, 1, 1])?;
        Ok(embedded.f_add(&select.f_mul(&self.noise.f_unsqueeze(0)?)?)?)
    }
    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        self.inner.forward_embeddings(embeddings, options, hooks)
    }
    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        self.inner.unembed(final_hidden)
    }
    fn final_norm(
        &self,
        residual: &Tensor,
        scale: explainability_core::NormScale<'_>,
    ) -> Result<Tensor> {
        self.inner.final_norm(residual, scale)
    }

    fn norm_at(
        &self,
        point: explainability_core::HookPoint,
        input: &Tensor,
        scale: explainability_core::NormScale<'_>,
    ) -> Result<Tensor> {
        self.inner.norm_at(point, input, scale)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner.named_parameters()
    }
}

/// Euclidean distance of two score vectors.
fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// Scores of `explanation` as a vector, checked against `n` tokens.
fn scores_of(explanation: &Explanation, n: usize, method: &str) -> Result<Vec<f64>> {
    if explanation.len() != n {
        return Err(Error::invalid_argument(format!(
            "{method}: explanation has {} scores for {n} tokens",
            explanation.len()
        )));
    }
    Ok(explanation.scores.iter().copied().collect())
}

/// Stability of `explainer` around `original` (one of its explanations): max-sensitivity,
/// local Lipschitz estimate and rank stability under embedding noise.
///
/// # Errors
/// [`Error::InvalidArgument`] for zero samples, zero `top_k`, a radius that is not finite and
/// positive, an explanation whose ids and scores disagree; explainer and model errors.
pub fn stability(
    model: &dyn LanguageModel,
    explainer: &dyn Explainer,
    original: &Explanation,
    config: &StabilityConfig,
) -> Result<StabilityReport> {
    if config.samples == 0 || config.top_k == 0 {
        return Err(Error::invalid_argument("stability needs samples ≥ 1 and top_k ≥ 1"));
    }
    if !(config.radius.is_finite() && config.radius > 0.0) {
        return Err(Error::invalid_argument(format!(
            "stability radius must be finite and positive, got {}",
            config.radius
        )));
    }
    let ids = &original.token_ids;
    let n = ids.len();
    if n == 0 || original.len() != n {
        return Err(Error::invalid_argument(format!(
            "explanation has {} ids and {} scores",
            n,
            original.len()
        )));
    }
    let a = scores_of(original, n, explainer.name())?;
    let d = model.info().d_model;
    let scale = {
        let _guard = tch::no_grad_guard();
        let e = model.embed(&Tensor::from_slice(ids).unsqueeze(0).to_device(model.device()))?;
        e.f_to_kind(Kind::Double)?.f_std(true)?.f_double_value(&[])?
    };
    let r = config.radius * if scale > 0.0 && scale.is_finite() { scale } else { 1.0 };
    let mut rng = SplitMix64::new(example_seed(config.seed, ids));
    let norm_a = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (mut sens, mut spear, mut overlap) = (Vec::new(), 0.0, 0.0);
    let mut unbounded = false;
    let mut lipschitz = 0.0_f64;
    for family in [Noise::Uniform, Noise::Gaussian] {
        for _ in 0..config.samples {
            let draws: Vec<f64> = (0..n * d)
                .map(|_| match family {
                    Noise::Uniform => r * (2.0 * rng.uniform() - 1.0),
                    Noise::Gaussian => r * rng.normal(),
                })
                .collect();
            let noise_norm = draws.iter().map(|x| x * x).sum::<f64>().sqrt();
            let noise: Vec<f32> = draws.iter().map(|&x| x as f32).collect();
            let noise = Tensor::from_slice(&noise)
                .f_view([n as i64, d as i64])?
                .f_to_kind(model.kind())?
                .f_to_device(model.device())?;
            let perturbed = PerturbedEmbeddings { inner: model, ids: ids.clone(), noise };
            let e = explainer.explain_ids(&perturbed, ids, &original.target)?;
            let ak = scores_of(&e, n, explainer.name())?;
            let dist = distance(&a, &ak);
            match family {
                Noise::Uniform => {
                    if norm_a > 0.0 {
                        sens.push(dist / norm_a);
                    } else if dist > 0.0 {
                        unbounded = true;
                    } else {
                        sens.push(0.0);
                    }
                    spear += rank_similarity(&a, &ak);
                    overlap += top_k_overlap(&a, &ak, config.top_k);
                }
                Noise::Gaussian => {
                    if noise_norm > 0.0 {
                        lipschitz = lipschitz.max(dist / noise_norm);
                    }
                }
            }
        }
    }
    let k = config.samples as f64;
    let (max_sensitivity, mean_sensitivity) = if unbounded {
        (None, None)
    } else {
        (sens.iter().copied().reduce(f64::max), Some(sens.iter().sum::<f64>() / k))
    };
    Ok(StabilityReport {
        max_sensitivity,
        mean_sensitivity,
        local_lipschitz: lipschitz,
        perturbation_spearman: spear / k,
        perturbation_top_k_overlap: overlap / k,
        samples: config.samples,
        noise_scale: r,
    })
}

/// The two noise families of [`stability`].
#[derive(Clone, Copy)]
enum Noise {
    Uniform,
    Gaussian,
}

/// Rank stability of a stochastic explainer across `runs` seeds: `make(seed)` builds the
/// explainer for one run (seeds derived from `seed` and the ids), all runs explain `ids`
/// for `target`, and every pair is compared.
///
/// # Errors
/// [`Error::InvalidArgument`] for fewer than two runs or `top_k == 0`; explainer errors.
pub fn seed_stability(
    model: &dyn LanguageModel,
    make: &dyn Fn(u64) -> Box<dyn Explainer>,
    ids: &[i64],
    target: &Target,
    runs: usize,
    top_k: usize,
    seed: u64,
) -> Result<RankStability> {
    if runs < 2 || top_k == 0 {
        return Err(Error::invalid_argument("seed stability needs runs ≥ 2 and top_k ≥ 1"));
    }
    let mut rng = SplitMix64::new(example_seed(seed, ids));
    let mut all: Vec<Vec<f64>> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let explainer = make(rng.next_u64());
        let e = explainer.explain_ids(model, ids, target)?;
        all.push(scores_of(&e, ids.len(), explainer.name())?);
    }
    let (mut sum, mut min, mut overlap, mut pairs) = (0.0, f64::INFINITY, 0.0, 0.0);
    for i in 0..runs {
        for j in i + 1..runs {
            let s = rank_similarity(&all[i], &all[j]);
            sum += s;
            min = min.min(s);
            overlap += top_k_overlap(&all[i], &all[j], top_k);
            pairs += 1.0;
        }
    }
    Ok(RankStability {
        runs,
        mean_spearman: sum / pairs,
        min_spearman: min,
        mean_top_k_overlap: overlap / pairs,
    })
}
