//! Sentence-similarity attribution: why two texts are close according to an encoder.
//!
//! The explained scalar is the cosine similarity of the mean-pooled final hidden states of
//! the two texts (the sentence embedding of sentence-transformers models such as
//! all-MiniLM-L6-v2, arXiv:1908.10084; their L2 normalisation does not change the cosine).
//! Both texts' token embeddings are inputs, so every token of **both** texts receives an
//! attribution: gradient × input (Shrikumar et al. 2016, arXiv:1605.01713) or integrated
//! gradients (Sundararajan et al. 2017, arXiv:1703.01365) from all-zero token embeddings,
//! with the completeness delta `Σ attributions − (cos(x) − cos(x'))`.
//!
//! Works with any [`LanguageModel`]; for a BERT encoder the zero baseline keeps positions and
//! token types (they are added inside the forward pass).

use explainability_core::{Error, ForwardOptions, Hooks, LanguageModel, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::path::{PathOptions, path_integrated_gradients};

/// Attribution method for [`SentenceSimilarity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarityMethod {
    /// `∇_e cos · e`, summed over the embedding width.
    GradientXInput,
    /// Integrated gradients from zero token embeddings.
    IntegratedGradients(PathOptions),
}

/// Explains the cosine similarity of two texts' mean-pooled embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentenceSimilarity {
    /// Attribution method.
    pub method: SimilarityMethod,
    /// Whether texts are encoded with the tokenizer's special tokens (`[CLS]` … `[SEP]`),
    /// as sentence-transformers does (default true).
    pub add_special_tokens: bool,
}

/// Per-token attributions of a sentence similarity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarityAttribution {
    /// Method name (`"gradient_x_input"`, `"integrated_gradients"`).
    pub method: String,
    /// Tokens of the first text.
    pub tokens_a: Vec<String>,
    /// Tokens of the second text.
    pub tokens_b: Vec<String>,
    /// One attribution per token of the first text.
    pub attributions_a: Vec<f64>,
    /// One attribution per token of the second text.
    pub attributions_b: Vec<f64>,
    /// Cosine similarity of the two texts.
    pub similarity: f64,
    /// Similarity at the baseline (integrated gradients only).
    pub baseline_similarity: Option<f64>,
    /// `Σ attributions − (similarity − baseline_similarity)` (integrated gradients only).
    pub convergence_delta: Option<f64>,
}

impl SentenceSimilarity {
    /// Gradient × input.
    pub fn gradient_x_input() -> Self {
        Self { method: SimilarityMethod::GradientXInput, add_special_tokens: true }
    }

    /// Integrated gradients with `n_steps` Gauss–Legendre nodes.
    pub fn integrated_gradients(n_steps: usize) -> Self {
        Self {
            method: SimilarityMethod::IntegratedGradients(PathOptions {
                n_steps,
                ..PathOptions::default()
            }),
            add_special_tokens: true,
        }
    }

    /// Attributes `cos(pool(a), pool(b))` to the tokens of both texts.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::SequenceTooLong`], model and autograd errors;
    /// [`Error::InvalidArgument`] for non-finite gradients or zero-norm embeddings.
    pub fn explain(
        &self,
        model: &dyn LanguageModel,
        text_a: &str,
        text_b: &str,
    ) -> Result<SimilarityAttribution> {
        let ids_a = model.encode(text_a, self.add_special_tokens)?;
        let ids_b = model.encode(text_b, self.add_special_tokens)?;
        let to_tensor = |ids: &[i64]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(ids)?.f_unsqueeze(0)?.f_to_device(model.device())?)
        };
        let (ta, tb) = (to_tensor(&ids_a)?, to_tensor(&ids_b)?);
        model.check_ids_shape(&ta)?;
        model.check_ids_shape(&tb)?;
        let (emb_a, emb_b) = {
            let _guard = tch::no_grad_guard();
            (model.embed(&ta)?.f_squeeze_dim(0)?, model.embed(&tb)?.f_squeeze_dim(0)?)
        };
        let len_a = ids_a.len() as i64;
        let len_b = ids_b.len() as i64;
        // One input tensor [len_a + len_b, d] so both texts share one path.
        let joint = Tensor::f_cat(&[&emb_a, &emb_b], 0)?;
        let f = |points: &Tensor| -> Result<Tensor> {
            let a = points.f_narrow(1, 0, len_a)?;
            let b = points.f_narrow(1, len_a, len_b)?;
            pooled_cosine(model, &a, &b)
        };
        let (per_token, method, baseline_similarity, convergence_delta, similarity) =
            match self.method {
                SimilarityMethod::GradientXInput => {
                    let leaf = joint.f_detach()?.f_unsqueeze(0)?.f_set_requires_grad(true)?;
                    let y = f(&leaf)?;
                    let similarity = y.f_double_value(&[0])?;
                    let total = y.f_sum(Kind::Float)?;
                    let grad = Tensor::f_run_backward(&[&total], &[&leaf], false, false)?
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
                    let attr = grad
                        .f_to_kind(Kind::Double)?
                        .f_mul(&leaf.f_detach()?.f_to_kind(Kind::Double)?)?
                        .f_sum_dim_intlist(-1, false, Kind::Double)?
                        .f_squeeze_dim(0)?;
                    (attr, "gradient_x_input", None, None, similarity)
                }
                SimilarityMethod::IntegratedGradients(options) => {
                    let baseline = joint.f_zeros_like()?;
                    let r = path_integrated_gradients(f, &joint, &baseline, &options)?;
                    let attr = r.attributions.f_sum_dim_intlist(-1, false, Kind::Double)?;
                    (
                        attr,
                        "integrated_gradients",
                        Some(r.f_baseline),
                        Some(r.convergence_delta),
                        r.f_input,
                    )
                }
            };
        let values = Vec::<f64>::try_from(&per_token)?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid_argument("non-finite similarity attributions"));
        }
        let (a, b) = values.split_at(ids_a.len());
        Ok(SimilarityAttribution {
            method: method.to_owned(),
            tokens_a: model.token_strings(&ids_a)?,
            tokens_b: model.token_strings(&ids_b)?,
            attributions_a: a.to_vec(),
            attributions_b: b.to_vec(),
            similarity,
            baseline_similarity,
            convergence_delta,
        })
    }
}

/// Cosine similarity of the mean-pooled final hidden states of two batches of embeddings.
///
/// # Shapes
/// `emb_a`: `[n, pos_a, d]`, `emb_b`: `[n, pos_b, d]` → `[n]` (f64).
///
/// # Errors
/// Model errors.
pub fn pooled_cosine(model: &dyn LanguageModel, emb_a: &Tensor, emb_b: &Tensor) -> Result<Tensor> {
    let pool = |emb: &Tensor| -> Result<Tensor> {
        // Only the hidden states are read: ask for the logits of the last position alone.
        let last = emb.size().get(1).copied().unwrap_or(1).max(1) - 1;
        let options = ForwardOptions { logits_from: Some(last as usize), ..Default::default() };
        let out = model.forward_embeddings(emb, &options, &mut Hooks::new())?;
        Ok(out.final_hidden.f_to_kind(Kind::Double)?.f_mean_dim(1, false, Kind::Double)?)
    };
    let (a, b) = (pool(emb_a)?, pool(emb_b)?);
    let dot = a.f_mul(&b)?.f_sum_dim_intlist(-1, false, Kind::Double)?;
    let norms = a.f_norm_scalaropt_dim(2.0, [-1], false)?.f_mul(&b.f_norm_scalaropt_dim(
        2.0,
        [-1],
        false,
    )?)?;
    Ok(dot.f_div(&norms.f_clamp_min(1e-12)?)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use explain_models::{BertModel, LoadOptions, minilm_dir};

    use super::*;

    #[test]
    fn minilm_similarity_attributions_cover_both_texts_and_are_complete() {
        let model = BertModel::from_hf_dir(&minilm_dir(), LoadOptions::default()).unwrap();
        let a = "A man is playing a guitar.";
        let b = "Someone plays an instrument.";
        let gxi = SentenceSimilarity::gradient_x_input().explain(&model, a, b).unwrap();
        assert_eq!(gxi.tokens_a.len(), 9);
        assert_eq!(gxi.tokens_b.len(), 7);
        assert_eq!(gxi.attributions_a.len(), 9);
        assert_eq!(gxi.attributions_b.len(), 7);
        assert_eq!(gxi.tokens_a[0], "[CLS]");
        // sentence-transformers gives 0.6674 for this pair (see explain-models' bert test).
        approx::assert_abs_diff_eq!(gxi.similarity, 0.667_446, epsilon = 1e-4);
        assert!(gxi.attributions_a.iter().chain(&gxi.attributions_b).any(|v| v.abs() > 1e-6));

        let ig = SentenceSimilarity::integrated_gradients(24).explain(&model, a, b).unwrap();
        // The same f32 forward in a batch of one versus a batch of two endpoints.
        approx::assert_abs_diff_eq!(ig.similarity, gxi.similarity, epsilon = 1e-6);
        let total: f64 = ig.attributions_a.iter().chain(&ig.attributions_b).sum();
        let delta = ig.convergence_delta.unwrap();
        approx::assert_abs_diff_eq!(
            total - (ig.similarity - ig.baseline_similarity.unwrap()),
            delta,
            epsilon = 1e-9
        );
        // Completeness: 24 Gauss–Legendre nodes on a smooth path leave a small gap relative
        // to the explained change.
        let change = (ig.similarity - ig.baseline_similarity.unwrap()).abs();
        assert!(delta.abs() < 0.05 * change.max(1e-3), "delta {delta} vs change {change}");
    }

    #[test]
    fn pooled_cosine_of_a_text_with_itself_is_one() {
        let model = BertModel::from_hf_dir(&minilm_dir(), LoadOptions::default()).unwrap();
        let ids = model.ids_tensor("hello world").unwrap();
        let _guard = tch::no_grad_guard();
        let e = model.embed(&ids).unwrap();
        let c = pooled_cosine(&model, &e, &e).unwrap();
        approx::assert_abs_diff_eq!(c.double_value(&[0]), 1.0, epsilon = 1e-12);
    }
}
