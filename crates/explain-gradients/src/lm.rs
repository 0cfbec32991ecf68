//! Shared plumbing of the language-model explainers: validating ids, embedding them,
//! resolving the target on the clean logits, the differentiable target function of
//! embeddings (its forward pass computes the LM head only for the position the target reads),
//! gradients with respect to embeddings, locating NaN/infinity, and building
//! [`Explanation`]s.

use ndarray::Array1;
use serde_json::Value;
use tch::{Kind, Tensor};

use explainability_core::{
    Error, ExplainInput, Explanation, ForwardOptions, HookFilter, HookPoint, Hooks, LanguageModel,
    ModelOutput, RESOLVED_TARGET, RelevanceRule, ResolvedTarget, Result, RightPadded, SharedPasses,
    Target, all_finite, check_positions, gradients,
};

use crate::path::Objective;

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
/// target), [`Error::NonFinite`] when F(x) is not finite, model errors.
pub(crate) fn prepare(model: &dyn LanguageModel, ids: &[i64], target: &Target) -> Result<Prepared> {
    let _guard = tch::no_grad_guard();
    Ok(prepare_inner(model, ids, target, false, None)?.0)
}

/// [`prepare`] whose clean forward pass is also differentiated: also returns `∂F/∂e`
/// (`[pos, d_model]`), so a single-gradient method costs one forward and one backward pass.
///
/// # Errors
/// As [`prepare`]; [`Error::NonFinite`] (with the hook point) for a non-finite gradient.
pub(crate) fn prepare_with_gradient(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &Target,
) -> Result<(Prepared, Tensor)> {
    prepare_with_gradient_under(model, ids, target, None)
}

/// Key of the input gradient in [`SharedPasses`] (saliency and gradient × input).
const INPUT_GRADIENT: &str = "explain_gradients::input_gradient";

/// [`prepare_with_gradient`] read from `shared` when an earlier method of the same input and
/// target stored it (then with `true`), computed and stored (with the [`ResolvedTarget`])
/// otherwise; `None` when `shared` is for another input or target.
///
/// # Errors
/// As [`prepare_with_gradient`].
fn shared_input_gradient<'s>(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &Target,
    shared: &'s mut SharedPasses,
) -> Result<Option<(bool, &'s (Prepared, Tensor))>> {
    let reused = shared.get::<(Prepared, Tensor)>(INPUT_GRADIENT, ids, target).is_some();
    if !reused {
        if !shared.is_for(ids, target) {
            return Ok(None);
        }
        let (prepared, gradient) = prepare_with_gradient(model, ids, target)?;
        let resolved = ResolvedTarget { target: prepared.target.clone(), value: prepared.value };
        shared.insert(RESOLVED_TARGET, ids, target, resolved);
        shared.insert(INPUT_GRADIENT, ids, target, (prepared, gradient));
    }
    Ok(shared.get::<(Prepared, Tensor)>(INPUT_GRADIENT, ids, target).map(|p| (reused, p)))
}

/// An explanation `finish`ed from the input gradient in `shared` (computed there by the first
/// method that needs it; the explanation's metadata says `shared_pass` when it was read), or
/// `single` when `shared` is for another input or target.
///
/// # Errors
/// As [`prepare_with_gradient`] and `finish`.
pub(crate) fn explain_from_shared_gradient(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &Target,
    shared: &mut SharedPasses,
    finish: impl FnOnce(&Prepared, &Tensor) -> Result<Explanation>,
    single: impl FnOnce() -> Result<Explanation>,
) -> Result<Explanation> {
    match shared_input_gradient(model, ids, target, shared)? {
        Some((reused, (prepared, gradient))) => {
            let mut e = finish(prepared, gradient)?;
            if reused {
                e.metadata.insert("shared_pass".into(), Value::from("input_gradient"));
            }
            Ok(e)
        }
        None => single(),
    }
}

/// [`prepare_with_gradient`] with the forward pass in a relevance-propagation mode
/// ([`ForwardOptions::relevance`]): the returned gradient times the embeddings is then the
/// LRP relevance of the embeddings.
///
/// # Errors
/// As [`prepare_with_gradient`].
pub(crate) fn prepare_with_gradient_under(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &Target,
    relevance: Option<RelevanceRule>,
) -> Result<(Prepared, Tensor)> {
    let (prepared, gradient) =
        tch::with_grad(|| prepare_inner(model, ids, target, true, relevance))?;
    let gradient =
        gradient.ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
    Ok((prepared, gradient))
}

fn prepare_inner(
    model: &dyn LanguageModel,
    ids: &[i64],
    target: &Target,
    with_gradient: bool,
    relevance: Option<RelevanceRule>,
) -> Result<(Prepared, Option<Tensor>)> {
    check_positions(ids.len() as i64, model.info().max_positions)?;
    let ids_tensor = Tensor::f_from_slice(ids)?.f_unsqueeze(0)?.f_to_device(model.device())?;
    let embeddings = {
        let _guard = tch::no_grad_guard();
        model.embed(&ids_tensor)?.f_detach()?
    };
    let mut tail = TargetTail::new(target, ids.len() as i64)?;
    tail.options.relevance = relevance;
    let (shifted, y, gradient) = if with_gradient {
        let input = embeddings.f_detach()?.f_set_requires_grad(true)?;
        let mut resolved = None;
        let g = gradients(
            model,
            &input,
            &[&input],
            &tail.options,
            &mut Hooks::new(),
            &mut |output: &ModelOutput| {
                let shifted =
                    tail.target_for(&output.logits)?.resolve(&output.logits.f_detach()?)?;
                let y = shifted.evaluate(&output.logits)?;
                resolved = Some(shifted);
                Ok(y)
            },
        )?;
        let shifted = resolved.ok_or_else(|| Error::invalid_argument("no target resolved"))?;
        let grad = g.gradients.into_iter().flatten().next();
        (shifted, g.value, grad)
    } else {
        let output = model.forward_embeddings(&embeddings, &tail.options, &mut Hooks::new())?;
        let shifted = tail.target_for(&output.logits)?.resolve(&output.logits.f_detach()?)?;
        let y = shifted.evaluate(&output.logits)?;
        (shifted, y, None)
    };
    let value = y.f_double_value(&[0])?;
    // The resolved target keeps the caller's position (resolution only fixes an argmax id).
    let mut target = shifted;
    let (Target::Token { position, .. } | Target::Contrastive { position, .. }) = &mut target;
    *position = match tail.original {
        Target::Token { position, .. } | Target::Contrastive { position, .. } => position,
    };
    if !value.is_finite() {
        return Err(Error::NonFinite {
            what: format!("the target F(x) = {value}"),
            alpha: None,
            hook_point: first_non_finite_activation(model, &embeddings)?,
        });
    }
    let gradient = if let Some(grad) = gradient {
        if let Err(e) = check_finite(&grad, "gradient with respect to the embeddings") {
            return Err(with_location(e, |_| locate_non_finite(model, &embeddings, &target, None)));
        }
        Some(grad.f_select(0, 0)?)
    } else {
        None
    };
    let prepared =
        Prepared { ids: ids.to_vec(), embeddings: embeddings.f_select(0, 0)?, target, value };
    Ok((prepared, gradient))
}

/// [`prepare_with_gradient_under`] for several inputs in one right-padded forward and
/// backward pass ([`RightPadded`]): the objective is the sum of the rows' targets, and rows
/// are independent (padded keys get zero attention, positions restart at 0 in every row), so
/// row `i` of the gradient is input `i`'s own. Entry `i` is `None` when input `i`'s value or
/// gradient is not finite: the caller then runs it alone, which locates the non-finite value
/// as [`prepare_with_gradient`] does.
///
/// # Errors
/// Errors that concern the batch as a whole (an id outside the vocabulary, a bad target
/// position, model errors): the caller falls back to one input at a time.
pub(crate) fn prepare_batch_with_gradient(
    model: &dyn LanguageModel,
    inputs: &[ExplainInput<'_>],
    relevance: Option<RelevanceRule>,
) -> Result<Vec<Option<(Prepared, Tensor)>>> {
    let batch = RightPadded::new(model, inputs)?;
    let embeddings = {
        let _guard = tch::no_grad_guard();
        model.embed(&batch.ids)?.f_detach()?
    };
    let mut options = batch.options(model.info().causal)?;
    options.relevance = relevance;
    let mut resolved: Vec<Target> = Vec::with_capacity(inputs.len());
    let g = tch::with_grad(|| {
        let leaf = embeddings.f_detach()?.f_set_requires_grad(true)?;
        gradients(
            model,
            &leaf,
            &[&leaf],
            &options,
            &mut Hooks::new(),
            &mut |output: &ModelOutput| {
                resolved.clear();
                let mut values = Vec::with_capacity(inputs.len());
                for (row, input) in inputs.iter().enumerate() {
                    let logits = batch.row_logits(&output.logits, row)?;
                    let target = input
                        .target
                        .from_position(batch.reads[row])?
                        .resolve(&logits.f_detach()?)?;
                    values.push(target.evaluate(&logits)?);
                    resolved.push(target);
                }
                Ok(Tensor::f_cat(&values, 0)?)
            },
        )
    })?;
    let gradient = g
        .gradients
        .into_iter()
        .flatten()
        .next()
        .ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
    let values: Vec<f64> = Vec::<f64>::try_from(
        &g.value.f_detach()?.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?,
    )?;
    let mut out = Vec::with_capacity(inputs.len());
    for (row, ((input, mut target), value)) in inputs.iter().zip(resolved).zip(values).enumerate() {
        let grad = batch.unpad(&gradient, row)?;
        if !value.is_finite() || !all_finite(&grad)? {
            out.push(None);
            continue;
        }
        // The resolved target keeps the caller's position (resolution only fixes an argmax id).
        let (Target::Token { position, .. } | Target::Contrastive { position, .. }) = &mut target;
        *position = match input.target {
            Target::Token { position, .. } | Target::Contrastive { position, .. } => *position,
        };
        let prepared = Prepared {
            ids: input.ids.to_vec(),
            embeddings: batch.unpad(&embeddings, row)?,
            target,
            value,
        };
        out.push(Some((prepared, grad)));
    }
    Ok(out)
}

/// Explains `inputs` as one batch ([`prepare_batch_with_gradient`]) and `finish`es each
/// row; runs `single` for every input when the batch fails as a whole, and for each input
/// whose batched result is not finite or whose `finish` fails — so that every error is the
/// one-input path's.
pub(crate) fn explain_batch_with(
    model: &dyn LanguageModel,
    inputs: &[ExplainInput<'_>],
    relevance: Option<RelevanceRule>,
    single: impl Fn(&ExplainInput<'_>) -> Result<Explanation>,
    finish: impl Fn(&Prepared, &Tensor) -> Result<Explanation>,
) -> Vec<Result<Explanation>> {
    if inputs.len() < 2 {
        return inputs.iter().map(&single).collect();
    }
    match prepare_batch_with_gradient(model, inputs, relevance) {
        Ok(rows) => inputs
            .iter()
            .zip(rows)
            .map(|(input, row)| match row {
                Some((prepared, gradient)) => {
                    finish(&prepared, &gradient).or_else(|_| single(input))
                }
                None => single(input),
            })
            .collect(),
        Err(_) => inputs.iter().map(&single).collect(),
    }
}

/// The forward options and target that compute logits only from the explained position on
/// ([`ForwardOptions::logits_from`]): the LM head (SmolLM2: 49152 × 576, a fifth of the
/// model's multiply-adds per token) runs for one position instead of all of them.
pub(crate) struct TargetTail {
    /// Options with `logits_from` set to the explained position.
    pub options: ForwardOptions,
    /// The target reading the shortened logits.
    pub shifted: Target,
    /// The target as given (reads full logits).
    pub original: Target,
    /// Positions of the sequence.
    pub seq: i64,
}

impl TargetTail {
    /// For `target` on sequences of `seq` positions.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a target position past the sequence,
    /// [`Error::EmptyText`] for an empty one.
    pub fn new(target: &Target, seq: i64) -> Result<Self> {
        // An empty sequence has no last position.
        let from = usize::try_from(target.position_index(seq)?).map_err(|_| Error::EmptyText)?;
        Ok(Self {
            options: ForwardOptions { logits_from: Some(from), ..ForwardOptions::default() },
            shifted: target.from_position(from)?,
            original: target.clone(),
            seq,
        })
    }

    /// The target matching `logits`: the shifted one, or the original when the model ignored
    /// `logits_from` and returned every position (a [`LanguageModel`] of another crate).
    pub fn target_for(&self, logits: &Tensor) -> Result<&Target> {
        Ok(if logits.size().get(1).copied() == Some(self.seq) && self.seq > 1 {
            &self.original
        } else {
            &self.shifted
        })
    }

    /// The target scalar per batch row of `logits`.
    pub fn evaluate(&self, logits: &Tensor) -> Result<Tensor> {
        self.target_for(logits)?.evaluate(logits)
    }
}

/// The target as a function of a batch of embeddings `[n, pos, d]` → `[n]`; logits are
/// computed only for the position the target reads, and gradients are taken the way the
/// model's [`LanguageModel::backward_memory`] says.
pub(crate) struct ModelTarget<'a> {
    model: &'a dyn LanguageModel,
    target: &'a Target,
    tail: Option<TargetTail>,
}

impl ModelTarget<'_> {
    fn tail(&mut self, points: &Tensor) -> Result<&TargetTail> {
        let seq = points.size().get(1).copied().unwrap_or(0);
        if self.tail.as_ref().is_none_or(|t| t.seq != seq) {
            self.tail = Some(TargetTail::new(self.target, seq)?);
        }
        self.tail.as_ref().ok_or_else(|| Error::invalid_argument("no target tail"))
    }
}

impl Objective for ModelTarget<'_> {
    fn values(&mut self, points: &Tensor) -> Result<Tensor> {
        let model = self.model;
        let tail = self.tail(points)?;
        let output = model.forward_embeddings(points, &tail.options, &mut Hooks::new())?;
        tail.evaluate(&output.logits)
    }

    fn values_and_gradient(&mut self, points: &Tensor) -> Result<(Tensor, Tensor)> {
        let model = self.model;
        let tail = self.tail(points)?;
        let leaf = points.f_detach()?.f_set_requires_grad(true)?;
        let mut objective = |output: &ModelOutput| tail.evaluate(&output.logits);
        let g =
            gradients(model, &leaf, &[&leaf], &tail.options, &mut Hooks::new(), &mut objective)?;
        let grad = g
            .gradients
            .into_iter()
            .flatten()
            .next()
            .ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
        Ok((g.value, grad))
    }
}

/// The [`ModelTarget`] of `target` on `model`.
pub(crate) fn target_function<'a>(
    model: &'a dyn LanguageModel,
    target: &'a Target,
) -> ModelTarget<'a> {
    ModelTarget { model, target, tail: None }
}

/// Gradients of `Σ_n F(points_n)` with respect to `points` (`[n, ...]`), detached.
///
/// # Errors
/// As `f`; [`Error::NonFinite`] when the gradient is not finite.
pub(crate) fn batch_gradient<O: Objective>(f: &mut O, points: &Tensor) -> Result<(Tensor, Tensor)> {
    let (y, grad) = f.values_and_gradient(points)?;
    check_finite(&grad, "gradient with respect to the embeddings")?;
    Ok((grad.f_detach()?, y))
}

/// [`Error::NonFinite`] when `t` holds NaN or infinity.
pub(crate) fn check_finite(t: &Tensor, what: &str) -> Result<()> {
    if t.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
        return Err(Error::NonFinite { what: what.to_string(), alpha: None, hook_point: None });
    }
    Ok(())
}

/// The hook points searched for NaN/infinity, in the order the forward pass fires them
/// (residual stream and block outputs only: asking for attention patterns would change the
/// attention kernel).
fn diagnostic_points(n_layers: usize) -> Vec<HookPoint> {
    let mut points = vec![HookPoint::embed()];
    for l in 0..n_layers {
        points.extend([
            HookPoint::resid_pre(l),
            HookPoint::attn_out(l),
            HookPoint::resid_mid(l),
            HookPoint::mlp_out(l),
            HookPoint::resid_post(l),
        ]);
    }
    points.push(HookPoint::ln_final());
    points
}

/// The first hook point whose activation is not finite when running `embeddings`
/// (`[n, pos, d]`), `None` when all are finite.
///
/// # Errors
/// Model errors.
pub(crate) fn first_non_finite_activation(
    model: &dyn LanguageModel,
    embeddings: &Tensor,
) -> Result<Option<String>> {
    let _guard = tch::no_grad_guard();
    let points = diagnostic_points(model.info().n_layers);
    let mut hooks = Hooks::caching(HookFilter::points(points.iter().copied()));
    let seq = embeddings.size().get(1).copied().unwrap_or(1);
    let options =
        ForwardOptions { logits_from: Some(seq.max(1) as usize - 1), ..Default::default() };
    model.forward_embeddings(embeddings, &options, &mut hooks)?;
    for point in &points {
        if let Some(t) = hooks.cached().get(point)
            && !all_finite(t)?
        {
            return Ok(Some(point.to_string()));
        }
    }
    Ok(None)
}

/// Where NaN or infinity first appears when the gradient of `target` is taken at one point:
/// the first hook point (in firing order) whose activation is not finite; when every
/// activation is finite, the hook point where the gradient first turns non-finite on its way
/// back from the output (the latest point whose gradient is not finite while every later one
/// is). `replacement` replaces one activation first (layer attribution).
///
/// # Shapes
/// `embeddings`: `[1, pos, d_model]`; a replacement: that activation's shape.
///
/// # Errors
/// Model errors.
pub(crate) fn locate_non_finite(
    model: &dyn LanguageModel,
    embeddings: &Tensor,
    target: &Target,
    replacement: Option<(HookPoint, Tensor)>,
) -> Result<Option<String>> {
    let points = diagnostic_points(model.info().n_layers);
    let seq = embeddings.size().get(1).copied().unwrap_or(0);
    let tail = TargetTail::new(target, seq)?;
    tch::with_grad(|| {
        let leaf = embeddings.f_detach()?.f_set_requires_grad(true)?;
        let mut hooks = Hooks::new();
        if let Some((point, value)) = replacement {
            let value = value.f_detach()?.f_set_requires_grad(true)?;
            hooks.replace(HookFilter::point(point), move |_, _| Ok(value.shallow_clone()));
        }
        hooks.cache(HookFilter::points(points.iter().copied()));
        let output = model.forward_embeddings(&leaf, &tail.options, &mut hooks)?;
        let cached: Vec<(HookPoint, Tensor)> = points
            .iter()
            .filter_map(|p| hooks.cached().get(p).map(|t| (*p, t.shallow_clone())))
            .collect();
        for (point, t) in &cached {
            if !all_finite(t)? {
                return Ok(Some(point.to_string()));
            }
        }
        let y = tail.evaluate(&output.logits)?.f_sum(Kind::Float)?;
        let attached: Vec<&(HookPoint, Tensor)> =
            cached.iter().filter(|(_, t)| t.requires_grad()).collect();
        let inputs: Vec<&Tensor> = attached.iter().map(|(_, t)| t).collect();
        let grads = Tensor::f_run_backward(&[&y], &inputs, false, false)?;
        for ((point, _), g) in attached.iter().zip(grads).rev() {
            if g.defined() && !all_finite(&g)? {
                return Ok(Some(point.to_string()));
            }
        }
        Ok(None)
    })
}

/// Fills in the hook point of an [`Error::NonFinite`] that lacks one; `locate` gets the path
/// point α when the error names one (the path core knows α but not the model). Other errors
/// pass through.
pub(crate) fn with_location(
    error: Error,
    locate: impl FnOnce(f64) -> Result<Option<String>>,
) -> Error {
    match error {
        Error::NonFinite { what, alpha, hook_point: None } => {
            // A failure of the diagnosis itself must not hide the original error.
            let hook_point = locate(alpha.unwrap_or(1.0)).ok().flatten();
            Error::NonFinite { what, alpha, hook_point }
        }
        other => other,
    }
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
