//! Shared plumbing of the language-model explainers: validating ids, embedding them,
//! resolving the target on the clean logits, the differentiable target function of
//! embeddings, gradients with respect to embeddings, and building [`Explanation`]s.

use ndarray::Array1;
use serde_json::Value;
use tch::{Kind, Tensor};

use explainability_core::{
    Error, Explanation, ForwardOptions, Hooks, LanguageModel, Result, Target, check_positions,
};

/// An input ready to be explained.
pub(crate) struct Prepared {
    /// Token ids.
    pub ids: Vec<i64>,
    /// `[pos, d_model]` embeddings of the ids, detached.
    pub embeddings: Tensor,
    /// The target resolved on the clean logits (argmax fixed, ids checked).
    pub target: Target,
    /// `F(x)`.
    pub value: f64,
}

/// Checks `ids`, embeds them, runs the clean forward pass and resolves `target`.
///
/// # Errors
/// [`Error::EmptyText`], [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`] (ids or
/// target), model errors.
pub(crate) fn prepare(model: &dyn LanguageModel, ids: &[i64], target: &Target) -> Result<Prepared> {
    check_positions(ids.len() as i64, model.info().max_positions)?;
    let ids_tensor = Tensor::f_from_slice(ids)?.f_unsqueeze(0)?.f_to_device(model.device())?;
    let _guard = tch::no_grad_guard();
    let embeddings = model.embed(&ids_tensor)?.f_detach()?;
    let output =
        model.forward_embeddings(&embeddings, &ForwardOptions::default(), &mut Hooks::new())?;
    let target = target.resolve(&output.logits)?;
    let value = target.evaluate(&output.logits)?.f_double_value(&[0])?;
    Ok(Prepared { ids: ids.to_vec(), embeddings: embeddings.f_select(0, 0)?, target, value })
}

/// The target as a function of a batch of embeddings `[n, pos, d]` → `[n]`.
pub(crate) fn target_function<'a>(
    model: &'a dyn LanguageModel,
    target: &'a Target,
) -> impl FnMut(&Tensor) -> Result<Tensor> + 'a {
    move |embeddings: &Tensor| {
        let output =
            model.forward_embeddings(embeddings, &ForwardOptions::default(), &mut Hooks::new())?;
        target.evaluate(&output.logits)
    }
}

/// Gradients of `Σ_n F(points_n)` with respect to `points` (`[n, ...]`), detached.
///
/// # Errors
/// As `f`; [`Error::InvalidArgument`] when the gradient is not finite.
pub(crate) fn batch_gradient<F>(f: &mut F, points: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    tch::with_grad(|| {
        let leaf = points.f_detach()?.f_set_requires_grad(true)?;
        let y = f(&leaf)?;
        let total = y.f_sum(Kind::Float)?;
        let grad = Tensor::f_run_backward(&[&total], &[&leaf], false, false)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
        check_finite(&grad, "gradient with respect to the embeddings")?;
        Ok((grad, y.f_detach()?))
    })
}

/// [`Error::InvalidArgument`] when `t` holds NaN or infinity.
pub(crate) fn check_finite(t: &Tensor, what: &str) -> Result<()> {
    if t.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(Error::invalid_argument(format!("{what} is not finite (NaN or infinity)")));
    }
    Ok(())
}

/// `[pos, d]` → per-position sum over `d` as f64.
pub(crate) fn sum_over_features(t: &Tensor) -> Result<Vec<f64>> {
    let s = t.f_to_kind(Kind::Double)?.f_sum_dim_intlist(-1, false, Kind::Double)?;
    Ok(Vec::<f64>::try_from(&s)?)
}

/// An explanation of `prepared` with `scores`, the target token's string and metadata.
pub(crate) fn explanation(
    model: &dyn LanguageModel,
    method: &str,
    prepared: &Prepared,
    scores: Vec<f64>,
    metadata: Vec<(&str, Value)>,
) -> Result<Explanation> {
    let tokens = model.token_strings(&prepared.ids)?;
    let mut e = Explanation::new(
        method,
        prepared.ids.clone(),
        tokens,
        Array1::from(scores),
        prepared.target.clone(),
    )?;
    if let Some(id) = prepared.target.token_id() {
        e.target_token = model.token_strings(&[id])?.into_iter().next();
    }
    e.target_value = Some(prepared.value);
    for (k, v) in metadata {
        e.metadata.insert(k.to_string(), v);
    }
    Ok(e)
}
