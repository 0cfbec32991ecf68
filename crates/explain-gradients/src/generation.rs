//! Attribution of generated sequences: for a prompt and a continuation `y_1..y_T`, the matrix
//! whose row `t` attributes `log p(y_t | x, y_<t)` to every earlier position (prompt and
//! earlier generated tokens), by gradient×input, saliency or integrated gradients.
//!
//! Captum's `LLMGradientAttribution` and Inseq run one attribution per output token. With a
//! causal model, one forward pass over the whole sequence yields every row's target (position
//! `t` never sees later positions), so all rows share forward passes here: each row's
//! gradient is taken from the same graph (`keep_graph`), and for IG every interpolated batch
//! serves all rows.

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tch::{Kind, Tensor};

use explainability_core::{
    Error, ForwardOptions, Hooks, LanguageModel, ModelOutput, Result, check_positions, gradients,
};

use crate::gradient::SaliencyNorm;
use crate::integrated::Baseline;
use crate::lm::check_finite;
use crate::path::{PathOptions, chunk_size, difference, path_points};

/// The method used for every row of a generation attribution.
#[derive(Debug, Clone)]
pub enum GenerationMethod {
    /// `Σ_d e · ∂ log p / ∂e`.
    GradientXInput,
    /// A norm of `∂ log p / ∂e` (non-negative for L1/L2).
    Saliency(SaliencyNorm),
    /// Integrated gradients from `baseline` with fixed quadrature; per-row deltas reported.
    /// Every position (prompt and continuation) moves along the path.
    IntegratedGradients {
        /// Baseline of the whole sequence (prompt and continuation).
        baseline: Baseline,
        /// Quadrature settings.
        path: PathOptions,
    },
    /// Integrated gradients of the prompt only: the generated tokens keep their embeddings on
    /// the whole path, so row `t` is integrated gradients of `log p(y_t | x, y_<t)` with respect
    /// to the prompt `x`, and the columns of generated tokens are 0. This is what Captum's
    /// `LLMGradientAttribution` with `LayerIntegratedGradients` on the embedding layer computes
    /// (one full IG per output token there; one shared path here). Per-row deltas reported.
    PromptIntegratedGradients {
        /// Baseline of the prompt (the continuation's rows are ignored).
        baseline: Baseline,
        /// Quadrature settings.
        path: PathOptions,
    },
}

impl GenerationMethod {
    fn name(&self) -> &'static str {
        match self {
            GenerationMethod::GradientXInput => "gradient_x_input",
            GenerationMethod::Saliency(_) => "saliency",
            GenerationMethod::IntegratedGradients { .. } => "integrated_gradients",
            GenerationMethod::PromptIntegratedGradients { .. } => "prompt_integrated_gradients",
        }
    }
}

/// Attribution matrix of a generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceAttribution {
    /// Method name.
    pub method: String,
    /// Prompt followed by the continuation.
    pub token_ids: Vec<i64>,
    /// A readable string per token of `token_ids`.
    pub tokens: Vec<String>,
    /// Number of prompt tokens.
    pub prompt_len: usize,
    /// `[T_out, T_prompt + T_out]`: row `t` attributes generated token `t`'s log-probability;
    /// entries at or after that token's own position are exactly 0.
    pub scores: Array2<f64>,
    /// `log p(y_t | x, y_<t)` per row.
    pub target_log_probs: Vec<f64>,
    /// Per-row convergence deltas (integrated gradients only).
    pub convergence_deltas: Option<Vec<f64>>,
    /// Method settings.
    pub metadata: std::collections::BTreeMap<String, Value>,
}

impl SequenceAttribution {
    /// The generated token ids.
    pub fn generated(&self) -> &[i64] {
        &self.token_ids[self.prompt_len..]
    }
}

/// Greedy continuation of `prompt` by up to `max_new_tokens` tokens (stops after eos).
///
/// # Errors
/// [`Error::InvalidArgument`] for `max_new_tokens = 0`; [`Error::EmptyText`],
/// [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`]; model errors.
pub fn greedy_continuation(
    model: &dyn LanguageModel,
    prompt: &[i64],
    max_new_tokens: usize,
) -> Result<Vec<i64>> {
    if max_new_tokens == 0 {
        return Err(Error::invalid_argument("max_new_tokens must be at least 1"));
    }
    if prompt.is_empty() {
        return Err(Error::EmptyText);
    }
    check_positions((prompt.len() + max_new_tokens) as i64, model.info().max_positions)?;
    let _guard = tch::no_grad_guard();
    let mut ids = prompt.to_vec();
    let mut out = Vec::with_capacity(max_new_tokens);
    for _ in 0..max_new_tokens {
        let t = Tensor::f_from_slice(&ids)?.f_unsqueeze(0)?.f_to_device(model.device())?;
        let last = ForwardOptions {
            logits_from: Some(ids.len().saturating_sub(1)),
            ..ForwardOptions::default()
        };
        let logits = model.forward_ids(&t, &last, &mut Hooks::new())?.logits;
        let next =
            logits.f_select(0, 0)?.f_select(0, -1)?.f_argmax(-1, false)?.f_int64_value(&[])?;
        ids.push(next);
        out.push(next);
        if Some(next) == model.info().special_tokens.eos {
            break;
        }
    }
    Ok(out)
}

/// Attributes each token of a continuation to all earlier tokens with one method.
#[derive(Debug, Clone)]
pub struct GenerationAttribution {
    /// Method of every row.
    pub method: GenerationMethod,
}

impl GenerationAttribution {
    /// Attribution of a given `continuation` of `prompt`.
    ///
    /// # Shapes
    /// Result scores: `[continuation.len(), prompt.len() + continuation.len()]`.
    ///
    /// # Errors
    /// [`Error::EmptyText`] for an empty prompt, [`Error::InvalidArgument`] for an empty
    /// continuation or bad method settings, [`Error::TokenOutOfRange`],
    /// [`Error::SequenceTooLong`], [`Error::ShapeMismatch`] for a custom baseline of another
    /// shape; model errors.
    pub fn attribute(
        &self,
        model: &dyn LanguageModel,
        prompt: &[i64],
        continuation: &[i64],
    ) -> Result<SequenceAttribution> {
        if prompt.is_empty() {
            return Err(Error::EmptyText);
        }
        if continuation.is_empty() {
            return Err(Error::invalid_argument("the continuation to attribute is empty"));
        }
        let vocab = model.info().vocab_size;
        for &id in prompt.iter().chain(continuation) {
            if !(0..vocab as i64).contains(&id) {
                return Err(Error::TokenOutOfRange { id, vocab_size: vocab });
            }
        }
        let ids: Vec<i64> = prompt.iter().chain(continuation).copied().collect();
        check_positions(ids.len() as i64, model.info().max_positions)?;
        let (p, t_out, len) = (prompt.len(), continuation.len(), ids.len());
        let device = model.device();
        let ids_tensor = Tensor::f_from_slice(&ids)?.f_unsqueeze(0)?.f_to_device(device)?;
        let embeddings = {
            let _guard = tch::no_grad_guard();
            model.embed(&ids_tensor)?.f_detach()?.f_select(0, 0)? // [L, d]
        };
        let targets = Tensor::f_from_slice(continuation)?.f_to_device(device)?;
        // [n, L, d] → [n, T] log-probabilities of every generated token.
        // Logits only from the last prompt position on: the LM head runs for the T positions
        // whose predictions are attributed (plus the last, unused), not for the prompt.
        let options = ForwardOptions { logits_from: Some(p - 1), ..ForwardOptions::default() };
        let log_probs_of = |output: &ModelOutput| -> Result<Tensor> {
            let logits = &output.logits;
            let n = logits.size()[0];
            // A model that ignores `logits_from` returns every position.
            let start = if logits.size()[1] == len as i64 { p as i64 - 1 } else { 0 };
            let lp = logits.f_narrow(1, start, t_out as i64)?.f_log_softmax(-1, Kind::Float)?;
            let index =
                targets.f_view([1, t_out as i64, 1])?.f_expand([n, t_out as i64, 1], false)?;
            Ok(lp.f_gather(-1, &index, false)?.f_squeeze_dim(-1)?)
        };
        let f = |emb: &Tensor| -> Result<Tensor> {
            log_probs_of(&model.forward_embeddings(emb, &options, &mut Hooks::new())?)
        };
        let rows_of =
            |points: &Tensor| row_gradients(model, &options, &log_probs_of, points, t_out);
        let mut metadata = std::collections::BTreeMap::new();
        let (rows, log_probs, deltas): (Vec<Vec<f64>>, Vec<f64>, Option<Vec<f64>>) = match &self
            .method
        {
            GenerationMethod::GradientXInput | GenerationMethod::Saliency(_) => {
                let (grads, values) = rows_of(&embeddings.f_unsqueeze(0)?)?;
                let mut rows = Vec::with_capacity(t_out);
                for g in grads {
                    let g = g.f_select(0, 0)?;
                    rows.push(match &self.method {
                        GenerationMethod::Saliency(norm) => {
                            metadata.insert("norm".into(), json!(norm.name()));
                            norm.reduce(&g)?
                        }
                        _ => crate::lm::sum_over_features(&g.f_mul(&embeddings)?)?,
                    });
                }
                (
                    rows,
                    Vec::<f64>::try_from(&values.f_select(0, 0)?.f_to_kind(Kind::Double)?)?,
                    None,
                )
            }
            GenerationMethod::IntegratedGradients { baseline, path }
            | GenerationMethod::PromptIntegratedGradients { baseline, path } => {
                let mut base = baseline.embeddings(model, &embeddings)?;
                if matches!(self.method, GenerationMethod::PromptIntegratedGradients { .. }) {
                    // The continuation stays at its own embeddings along the whole path.
                    base = Tensor::f_cat(
                        &[
                            base.f_narrow(0, 0, p as i64)?,
                            embeddings.f_narrow(0, p as i64, t_out as i64)?,
                        ],
                        0,
                    )?;
                }
                let chunk = chunk_size(path.internal_batch_size)?;
                let (alphas, weights) = path.rule.nodes_and_weights(path.n_steps)?;
                let zero = embeddings.f_zeros_like()?.f_to_kind(Kind::Double)?;
                let mut sums: Vec<Tensor> = (0..t_out).map(|_| zero.shallow_clone()).collect();
                for (a_part, w_part) in
                    alphas.chunks(chunk.max(1)).zip(weights.chunks(chunk.max(1)))
                {
                    let points = path_points(&embeddings, &base, a_part)?;
                    let (grads, _) = rows_of(&points)?;
                    let w =
                        Tensor::f_from_slice(w_part)?.f_to_device(device)?.f_view([-1, 1, 1])?;
                    for (sum, g) in sums.iter_mut().zip(grads) {
                        let weighted = g.f_to_kind(Kind::Double)?.f_mul(&w)?.f_sum_dim_intlist(
                            0,
                            false,
                            Kind::Double,
                        )?;
                        *sum = sum.f_add(&weighted)?;
                    }
                }
                let diff = difference(&embeddings, &base)?;
                let ends = {
                    let _guard = tch::no_grad_guard();
                    f(&Tensor::f_stack(&[embeddings.shallow_clone(), base.shallow_clone()], 0)?)?
                        .f_to_kind(Kind::Double)?
                };
                let fx = Vec::<f64>::try_from(&ends.f_select(0, 0)?)?;
                let fb = Vec::<f64>::try_from(&ends.f_select(0, 1)?)?;
                let mut rows = Vec::with_capacity(t_out);
                let mut deltas = Vec::with_capacity(t_out);
                for (t, sum) in sums.iter().enumerate() {
                    let row = crate::lm::sum_over_features(&diff.f_mul(sum)?)?;
                    // Only positions before the generated token's own can contribute.
                    let visible: f64 = row[..p + t].iter().sum();
                    deltas.push(visible - (fx[t] - fb[t]));
                    rows.push(row);
                }
                metadata.insert("baseline".into(), json!(baseline.describe()));
                metadata.insert("quadrature".into(), json!(path.rule.name()));
                metadata.insert("n_steps".into(), json!(path.n_steps));
                metadata.insert("f_baseline".into(), json!(fb));
                (rows, fx, Some(deltas))
            }
        };
        let mut scores = Array2::<f64>::zeros((t_out, len));
        for (t, row) in rows.iter().enumerate() {
            for (j, &v) in row.iter().enumerate().take(p + t) {
                scores[[t, j]] = v;
            }
        }
        Ok(SequenceAttribution {
            method: self.method.name().to_string(),
            tokens: model.token_strings(&ids)?,
            token_ids: ids,
            prompt_len: p,
            scores,
            target_log_probs: log_probs,
            convergence_deltas: deltas,
            metadata,
        })
    }

    /// Greedy-generates up to `max_new_tokens` tokens after `prompt` and attributes them.
    ///
    /// # Errors
    /// As [`greedy_continuation`] and [`GenerationAttribution::attribute`].
    pub fn attribute_greedy(
        &self,
        model: &dyn LanguageModel,
        prompt: &[i64],
        max_new_tokens: usize,
    ) -> Result<SequenceAttribution> {
        let continuation = greedy_continuation(model, prompt, max_new_tokens)?;
        self.attribute(model, prompt, &continuation)
    }
}

/// One forward pass over `points` (`[n, L, d]`) and one backward pass per output row
/// ([`gradients`] with a `[n, T]` objective, so that the model's
/// [`LanguageModel::backward_memory`] applies): the gradient of `Σ_n F(points_n)_t` for every
/// `t`, plus the values `[n, T]`.
fn row_gradients(
    model: &dyn LanguageModel,
    options: &ForwardOptions,
    log_probs_of: &dyn Fn(&ModelOutput) -> Result<Tensor>,
    points: &Tensor,
    t_out: usize,
) -> Result<(Vec<Tensor>, Tensor)> {
    let leaf = points.f_detach()?.f_set_requires_grad(true)?;
    let mut objective = |output: &ModelOutput| log_probs_of(output);
    let g = gradients(model, &leaf, &[&leaf], options, &mut Hooks::new(), &mut objective)?;
    let mut grads = Vec::with_capacity(t_out);
    for (t, per_leaf) in g.gradients.into_iter().enumerate() {
        let grad = per_leaf
            .into_iter()
            .next()
            .ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
        check_finite(&grad, &format!("gradient of generated token {t}"))?;
        grads.push(grad);
    }
    Ok((grads, g.value))
}
