//! Single-gradient methods on embeddings: saliency (Simonyan et al. 2013, arXiv:1312.6034),
//! gradient×input (Shrikumar et al. 2016, arXiv:1605.01713) and SmoothGrad (Smilkov et al.
//! 2017, arXiv:1706.03825) with a private seeded generator.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::{Kind, Tensor};

use explainability_core::{
    Error, ExplainInput, Explainer, Explanation, LanguageModel, Result, SharedPasses, SplitMix64,
    Target,
};

use crate::lm::{
    Prepared, explain_batch_with, explain_from_shared_gradient, explanation, prepare,
    prepare_with_gradient, sum_over_features, target_function,
};

/// How a `[pos, d_model]` gradient becomes one score per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SaliencyNorm {
    /// `‖∂F/∂e_t‖₂` (default).
    #[default]
    L2,
    /// `‖∂F/∂e_t‖₁`.
    L1,
    /// `Σ_d ∂F/∂e_{t,d}` (signed).
    Sum,
}

impl SaliencyNorm {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            SaliencyNorm::L2 => "l2",
            SaliencyNorm::L1 => "l1",
            SaliencyNorm::Sum => "sum",
        }
    }

    /// Reduces `[..., d]` over the last axis to f64 scores.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn reduce(self, gradient: &Tensor) -> Result<Vec<f64>> {
        let g = gradient.f_to_kind(Kind::Double)?;
        let s = match self {
            SaliencyNorm::L2 => {
                g.f_square()?.f_sum_dim_intlist(-1, false, Kind::Double)?.f_sqrt()?
            }
            SaliencyNorm::L1 => g.f_abs()?.f_sum_dim_intlist(-1, false, Kind::Double)?,
            SaliencyNorm::Sum => g.f_sum_dim_intlist(-1, false, Kind::Double)?,
        };
        Ok(Vec::<f64>::try_from(&s.f_flatten(0, -1)?)?)
    }
}

/// Gradient of the target with respect to the token embeddings, reduced per token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saliency {
    /// Reduction over `d_model`.
    pub norm: SaliencyNorm,
}

impl Explainer for Saliency {
    fn name(&self) -> &str {
        "saliency"
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        let (prepared, gradient) = prepare_with_gradient(model, ids, target)?;
        self.finish(model, &prepared, &gradient)
    }

    /// One right-padded forward and backward pass for all inputs (see
    /// [`Explainer::explain_batch`]).
    fn explain_batch(
        &self,
        model: &dyn LanguageModel,
        inputs: &[ExplainInput<'_>],
    ) -> Vec<Result<Explanation>> {
        explain_batch_with(
            model,
            inputs,
            None,
            |i| self.explain_ids(model, i.ids, i.target),
            |prepared, gradient| self.finish(model, prepared, gradient),
        )
    }

    fn batches_inputs(&self) -> bool {
        true
    }

    /// One forward and backward pass for saliency and gradient × input together.
    fn explain_ids_shared(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<Explanation> {
        explain_from_shared_gradient(
            model,
            ids,
            target,
            shared,
            |prepared, gradient| self.finish(model, prepared, gradient),
            || self.explain_ids(model, ids, target),
        )
    }
}

impl Saliency {
    fn finish(
        &self,
        model: &dyn LanguageModel,
        prepared: &Prepared,
        gradient: &Tensor,
    ) -> Result<Explanation> {
        let scores = self.norm.reduce(gradient)?;
        explanation(model, self.name(), prepared, scores, vec![("norm", json!(self.norm.name()))])
    }
}

/// `Σ_d e_{t,d} · ∂F/∂e_{t,d}` per token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradientXInput;

impl Explainer for GradientXInput {
    fn name(&self) -> &str {
        "gradient_x_input"
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        let (prepared, gradient) = prepare_with_gradient(model, ids, target)?;
        self.finish(model, &prepared, &gradient)
    }

    /// One right-padded forward and backward pass for all inputs (see
    /// [`Explainer::explain_batch`]).
    fn explain_batch(
        &self,
        model: &dyn LanguageModel,
        inputs: &[ExplainInput<'_>],
    ) -> Vec<Result<Explanation>> {
        explain_batch_with(
            model,
            inputs,
            None,
            |i| self.explain_ids(model, i.ids, i.target),
            |prepared, gradient| self.finish(model, prepared, gradient),
        )
    }

    fn batches_inputs(&self) -> bool {
        true
    }

    /// One forward and backward pass for saliency and gradient × input together.
    fn explain_ids_shared(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<Explanation> {
        explain_from_shared_gradient(
            model,
            ids,
            target,
            shared,
            |prepared, gradient| self.finish(model, prepared, gradient),
            || self.explain_ids(model, ids, target),
        )
    }
}

impl GradientXInput {
    fn finish(
        &self,
        model: &dyn LanguageModel,
        prepared: &Prepared,
        gradient: &Tensor,
    ) -> Result<Explanation> {
        let product = gradient.f_mul(&prepared.embeddings)?;
        let scores = sum_over_features(&product)?;
        explanation(model, self.name(), prepared, scores, Vec::new())
    }
}

/// Mean gradient over noisy copies of the embeddings, reduced per token like [`Saliency`].
///
/// The noise is Gaussian with `σ = noise_level · (max(e) − min(e))` over the input's
/// embeddings, as Smilkov et al. scale it, drawn from a private SplitMix64 generator seeded by
/// `seed`: results are bit-identical for a seed and independent of libtorch's global RNG and
/// of other threads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SmoothGrad {
    /// Noisy copies (default 20).
    pub n_samples: usize,
    /// σ relative to the embedding range (default 0.1).
    pub noise_level: f64,
    /// Generator seed.
    pub seed: u64,
    /// Reduction over `d_model`.
    pub norm: SaliencyNorm,
    /// Copies per forward/backward pass (`None`: all at once).
    pub internal_batch_size: Option<usize>,
}

impl Default for SmoothGrad {
    fn default() -> Self {
        Self {
            n_samples: 20,
            noise_level: 0.1,
            seed: 0,
            norm: SaliencyNorm::L2,
            internal_batch_size: None,
        }
    }
}

impl Explainer for SmoothGrad {
    fn name(&self) -> &str {
        "smoothgrad"
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        if self.n_samples == 0 {
            return Err(Error::invalid_argument("SmoothGrad needs at least one sample"));
        }
        if !(self.noise_level.is_finite() && self.noise_level >= 0.0) {
            return Err(Error::invalid_argument(format!(
                "noise_level must be finite and non-negative, got {}",
                self.noise_level
            )));
        }
        let chunk = crate::path::chunk_size(self.internal_batch_size)?;
        let prepared = prepare(model, ids, target)?;
        let e = &prepared.embeddings;
        let range = e.f_max()?.f_double_value(&[])? - e.f_min()?.f_double_value(&[])?;
        let sigma = self.noise_level * range;
        let mut rng = SplitMix64::new(self.seed);
        let mut f = target_function(model, &prepared.target);
        let mut sum = e.f_zeros_like()?.f_to_kind(Kind::Double)?;
        let mut done = 0;
        while done < self.n_samples {
            let n = chunk.min(self.n_samples - done);
            let numel = (n as i64) * e.numel() as i64;
            let noise: Vec<f32> = (0..numel).map(|_| (rng.normal() * sigma) as f32).collect();
            let mut shape = vec![n as i64];
            shape.extend(e.size());
            let noise = Tensor::f_from_slice(&noise)?
                .f_reshape(&shape)?
                .f_to_kind(e.kind())?
                .f_to_device(e.device())?;
            let points = e.f_unsqueeze(0)?.f_add(&noise)?;
            let (grad, _) = crate::lm::batch_gradient(&mut f, &points)?;
            sum = sum.f_add(&grad.f_to_kind(Kind::Double)?.f_sum_dim_intlist(
                0,
                false,
                Kind::Double,
            )?)?;
            done += n;
        }
        let mean = sum.f_div_scalar(self.n_samples as f64)?;
        let scores = self.norm.reduce(&mean)?;
        explanation(
            model,
            self.name(),
            &prepared,
            scores,
            vec![
                ("n_samples", json!(self.n_samples)),
                ("noise_level", json!(self.noise_level)),
                ("sigma", json!(sigma)),
                ("seed", json!(self.seed)),
                ("norm", json!(self.norm.name())),
            ],
        )
    }
}
