//! Integrated gradients on language models (Sundararajan et al. 2017, arXiv:1703.01365):
//! with respect to token embeddings ([`IntegratedGradients`]) or to the residual stream at a
//! hook point ([`LayerIntegratedGradients`]), uniform or adaptive quadrature, with the
//! baselines of [`Baseline`] and a check for paths whose change is concentrated near α = 0.

use serde_json::{Value, json};
use tch::{Kind, Tensor};

use explainability_core::{
    Error, Explainer, Explanation, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks,
    LanguageModel, ModelOutput, Result, Target, gradients,
};

use crate::adaptive::{AdaptiveOptions, adaptive_path};
use crate::lm::{
    ModelTarget, Prepared, TargetTail, explanation, locate_non_finite, prepare, sum_over_features,
    target_function, with_location,
};
use crate::path::{Objective, PathOptions, fixed_path, path_points, path_values};

/// The reference input integrated gradients starts from.
///
/// Attention mask and positions are identical for input and baseline (both are unpadded
/// sequences of the input's length); only the embeddings differ.
#[derive(Debug)]
pub enum Baseline {
    /// All-zero embeddings. On RMSNorm models the path is almost flat except very near
    /// α = 0; explanations flag it and suggest [`Baseline::Eos`].
    Zero,
    /// The embedding of one token id at every position.
    Token(i64),
    /// The model's end-of-sequence token at every position (recommended for decoders).
    Eos,
    /// The mean of all rows of the embedding matrix at every position.
    MeanEmbedding,
    /// Given embeddings, `[pos, d_model]` or `[1, pos, d_model]`.
    Custom(Tensor),
}

impl Clone for Baseline {
    fn clone(&self) -> Self {
        match self {
            Baseline::Zero => Baseline::Zero,
            Baseline::Token(id) => Baseline::Token(*id),
            Baseline::Eos => Baseline::Eos,
            Baseline::MeanEmbedding => Baseline::MeanEmbedding,
            Baseline::Custom(t) => Baseline::Custom(t.shallow_clone()),
        }
    }
}

impl Baseline {
    /// Stable description (`"zero"`, `"token:2"`, `"eos"`, …).
    pub fn describe(&self) -> String {
        match self {
            Baseline::Zero => "zero".into(),
            Baseline::Token(id) => format!("token:{id}"),
            Baseline::Eos => "eos".into(),
            Baseline::MeanEmbedding => "mean_embedding".into(),
            Baseline::Custom(_) => "custom".into(),
        }
    }

    /// The baseline embeddings for an input whose embeddings are `embeddings` (`[pos, d]`).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for a token outside the vocabulary,
    /// [`Error::InvalidArgument`] for [`Baseline::Eos`] on a model without one,
    /// [`Error::ShapeMismatch`] for custom embeddings of another shape.
    pub fn embeddings(&self, model: &dyn LanguageModel, embeddings: &Tensor) -> Result<Tensor> {
        let size = embeddings.size();
        let _guard = tch::no_grad_guard();
        let token = |id: i64| -> Result<Tensor> {
            let vocab = model.info().vocab_size;
            if !(0..vocab as i64).contains(&id) {
                return Err(Error::TokenOutOfRange { id, vocab_size: vocab });
            }
            let ids = Tensor::f_full([1, size[0]], id, (Kind::Int64, model.device()))?;
            Ok(model.embed(&ids)?.f_select(0, 0)?.f_detach()?)
        };
        match self {
            Baseline::Zero => Ok(embeddings.f_zeros_like()?),
            Baseline::Token(id) => token(*id),
            Baseline::Eos => match model.info().special_tokens.eos {
                Some(id) => token(id),
                None => Err(Error::invalid_argument("the model has no end-of-sequence token")),
            },
            Baseline::MeanEmbedding => {
                let vocab = model.info().vocab_size as i64;
                let mut sum = Tensor::f_zeros([size[1]], (Kind::Double, model.device()))?;
                let mut start = 0;
                while start < vocab {
                    let end = (start + 8192).min(vocab);
                    let ids = Tensor::f_arange_start(start, end, (Kind::Int64, model.device()))?
                        .f_unsqueeze(1)?;
                    let rows = model.embed(&ids)?.f_to_kind(Kind::Double)?;
                    sum =
                        sum.f_add(&rows.f_sum_dim_intlist(&[0i64, 1][..], false, Kind::Double)?)?;
                    start = end;
                }
                let mean = sum.f_div_scalar(vocab as f64)?.f_to_kind(embeddings.kind())?;
                Ok(mean.f_unsqueeze(0)?.f_expand(&size, false)?.f_contiguous()?)
            }
            Baseline::Custom(t) => {
                let t = if t.dim() == 3 && t.size()[0] == 1 {
                    t.f_select(0, 0)?
                } else {
                    t.shallow_clone()
                };
                if t.size() != size {
                    return Err(Error::ShapeMismatch {
                        what: "custom baseline".into(),
                        expected: format!("[{}, {}] (the input's embeddings)", size[0], size[1]),
                        actual: t.size(),
                    });
                }
                Ok(t.f_to_kind(embeddings.kind())?.f_to_device(embeddings.device())?.f_detach()?)
            }
        }
    }
}

/// How the path integral is computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quadrature {
    /// A fixed rule with a fixed number of steps (Captum's behaviour).
    Fixed(PathOptions),
    /// Completeness-guided adaptive refinement (see [`AdaptiveOptions`]).
    Adaptive(AdaptiveOptions),
}

impl Default for Quadrature {
    fn default() -> Self {
        Quadrature::Fixed(PathOptions::default())
    }
}

/// End of the stretch next to the baseline that the path check looks at.
const SLIVER_ALPHA: f64 = 0.02;
/// Total variation of F on `[0, SLIVER_ALPHA]`, relative to `|F(x) − F(x')|`, above which the
/// path is flagged (a smooth path has about `SLIVER_ALPHA`).
const SLIVER_SHARE: f64 = 0.5;

/// A finished path integral plus what explanations report about it.
struct Integrated {
    attributions: Tensor,
    f_input: f64,
    delta: f64,
    metadata: Vec<(&'static str, Value)>,
}

/// Runs the path integral of `f` and collects metadata (steps, evaluations, convergence,
/// the path profile and its warning).
fn integrate<O: Objective>(
    mut f: O,
    input: &Tensor,
    baseline: &Tensor,
    quadrature: &Quadrature,
    check_path: bool,
) -> Result<Integrated> {
    let mut metadata: Vec<(&'static str, Value)> = Vec::new();
    let (attributions, f_input, f_baseline, delta) = match quadrature {
        Quadrature::Fixed(o) => {
            let r = fixed_path(&mut f, input, baseline, o)?;
            metadata.push(("quadrature", json!(o.rule.name())));
            metadata.push(("n_steps", json!(o.n_steps)));
            metadata.push(("internal_batch_size", json!(o.internal_batch_size)));
            metadata.push(("gradient_evaluations", json!(r.gradient_evaluations)));
            (r.attributions, r.f_input, r.f_baseline, r.convergence_delta)
        }
        Quadrature::Adaptive(o) => {
            let r = adaptive_path(&mut f, input, baseline, o)?;
            metadata.push(("quadrature", json!("adaptive_gauss_legendre")));
            metadata.push(("tolerance", json!(o.tolerance)));
            metadata.push(("gradient_evaluations", json!(r.gradient_evaluations)));
            metadata.push(("forward_evaluations", json!(r.forward_evaluations)));
            metadata.push(("max_gradient_evaluations", json!(o.max_gradient_evaluations)));
            metadata.push(("intervals", json!(r.intervals.len())));
            metadata.push(("error_bound", json!(r.error_bound)));
            metadata.push(("converged", json!(r.converged)));
            if !r.converged {
                metadata.push((
                    "warning_not_converged",
                    json!(format!(
                        "|delta| = {:.4} exceeds {} of |F(x) - F(x')| = {:.4} after {} gradient evaluations; raise max_gradient_evaluations",
                        r.convergence_delta.abs(),
                        o.tolerance,
                        (r.f_input - r.f_baseline).abs(),
                        r.gradient_evaluations
                    )),
                ));
            }
            (r.attributions, r.f_input, r.f_baseline, r.convergence_delta)
        }
    };
    metadata.push(("f_baseline", json!(f_baseline)));
    metadata.push((
        "relative_delta",
        json!(delta / (f_input - f_baseline).abs().max(f64::MIN_POSITIVE)),
    ));
    if check_path {
        let alphas = [0.0, 1e-4, 1e-3, 0.005, SLIVER_ALPHA, 0.1, 0.25, 0.5, 0.75, 1.0];
        let values = path_values(&mut f, input, baseline, &alphas, alphas.len())?;
        // Total variation of F over [0, SLIVER_ALPHA] relative to |F(x) − F(x')|: a smooth
        // path spends about SLIVER_ALPHA of it there; a path that jumps next to the baseline
        // (and possibly back) spends more than the whole change.
        let total = (values[9] - values[0]).abs();
        let near: f64 = values[..5].windows(2).map(|w| (w[1] - w[0]).abs()).sum();
        let share = if total == 0.0 { 0.0 } else { near / total };
        metadata.push((
            "path_profile",
            json!(alphas.iter().zip(&values).map(|(a, v)| [*a, *v]).collect::<Vec<_>>()),
        ));
        metadata.push(("path_variation_below_0.02", json!(share)));
        if share > SLIVER_SHARE {
            metadata.push((
                "warning_path_discontinuity",
                json!(format!(
                    "F varies by {:.0}% of F(x) - F(x') for alpha < {SLIVER_ALPHA}: the straight path is almost flat except next to the baseline (typical of a zero baseline on RMSNorm models), so fixed-step integrated gradients will not converge; use the eos-token baseline (Baseline::Eos) or adaptive quadrature",
                    100.0 * share
                )),
            ));
        }
    }
    Ok(Integrated { attributions, f_input, delta, metadata })
}

/// Integrated gradients with respect to the token embeddings; one score per token,
/// `Σ_d attr_{t,d}`. The convergence delta is always reported.
#[derive(Debug, Clone)]
pub struct IntegratedGradients {
    /// Starting point of the path (default [`Baseline::Eos`]).
    pub baseline: Baseline,
    /// Quadrature (default: Gauss–Legendre, 50 steps).
    pub quadrature: Quadrature,
    /// Evaluate F at a few α to detect paths that change only near the baseline (8 forward
    /// passes; default on).
    pub check_path: bool,
}

impl Default for IntegratedGradients {
    fn default() -> Self {
        Self { baseline: Baseline::Eos, quadrature: Quadrature::default(), check_path: true }
    }
}

impl IntegratedGradients {
    /// Uniform Gauss–Legendre with `n_steps` from `baseline`.
    pub fn new(baseline: Baseline, n_steps: usize) -> Self {
        Self {
            baseline,
            quadrature: Quadrature::Fixed(PathOptions { n_steps, ..PathOptions::default() }),
            check_path: true,
        }
    }

    /// Adaptive quadrature from `baseline` with default settings.
    pub fn adaptive(baseline: Baseline) -> Self {
        Self {
            baseline,
            quadrature: Quadrature::Adaptive(AdaptiveOptions::default()),
            check_path: true,
        }
    }

    /// Explains and also returns the per-dimension attributions `[pos, d_model]` (f64).
    ///
    /// # Errors
    /// As [`Explainer::explain_ids`].
    pub fn explain_with_attributions(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<(Explanation, Tensor)> {
        let prepared = prepare(model, ids, target)?;
        let base = self.baseline.embeddings(model, &prepared.embeddings)?;
        let f = batched_over_path(model, &prepared.target);
        let mut r = integrate(f, &prepared.embeddings, &base, &self.quadrature, self.check_path)
            .map_err(|e| {
                with_location(e, |a| {
                    let point = path_points(&prepared.embeddings, &base, &[a])?;
                    locate_non_finite(model, &point, &prepared.target, None)
                })
            })?;
        let scores = sum_over_features(&r.attributions)?;
        let metadata = std::mem::take(&mut r.metadata);
        let e =
            finish(model, "integrated_gradients", &prepared, scores, &r, metadata, &self.baseline)?;
        Ok((e, r.attributions))
    }
}

/// `F` of a `[n, pos, d]` batch of path points (points arrive without a batch axis of their
/// own: the path core stacks `[pos, d]` points on a new leading axis).
fn batched_over_path<'a>(model: &'a dyn LanguageModel, target: &'a Target) -> ModelTarget<'a> {
    target_function(model, target)
}

fn finish(
    model: &dyn LanguageModel,
    method: &str,
    prepared: &Prepared,
    scores: Vec<f64>,
    integrated: &Integrated,
    mut metadata: Vec<(&'static str, Value)>,
    baseline: &Baseline,
) -> Result<Explanation> {
    metadata.push(("baseline", json!(baseline.describe())));
    let mut e = explanation(model, method, prepared, scores, metadata)?;
    e.convergence_delta = Some(integrated.delta);
    // F(x) as evaluated next to F(x'), so that Σ scores − delta = F(x) − F(x') exactly.
    e.target_value = Some(integrated.f_input);
    Ok(e)
}

impl Explainer for IntegratedGradients {
    fn name(&self) -> &str {
        "integrated_gradients"
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        Ok(self.explain_with_attributions(model, ids, target)?.0)
    }
}

/// Integrated gradients with respect to the residual stream at a hook point
/// (`blocks.{l}.hook_resid_pre|mid|post`): the activation is replaced, through a replacing
/// hook, by points on the straight path from the baseline input's activation to the input's;
/// one score per position, `Σ_d attr`.
#[derive(Debug, Clone)]
pub struct LayerIntegratedGradients {
    /// Residual hook point attributed to.
    pub point: HookPoint,
    /// Baseline input whose activation starts the path (default [`Baseline::Eos`]).
    pub baseline: Baseline,
    /// Quadrature (default: Gauss–Legendre, 50 steps).
    pub quadrature: Quadrature,
}

impl LayerIntegratedGradients {
    /// Layer IG at `point` with defaults.
    pub fn new(point: HookPoint) -> Self {
        Self { point, baseline: Baseline::Eos, quadrature: Quadrature::default() }
    }

    fn check_point(&self, model: &dyn LanguageModel) -> Result<()> {
        match self.point.kind() {
            HookKind::ResidPre | HookKind::ResidMid | HookKind::ResidPost => {}
            other => {
                return Err(Error::invalid_argument(format!(
                    "layer integrated gradients attributes to residual hook points, not {other:?} ({})",
                    self.point
                )));
            }
        }
        model.info().check_layer(self.point.layer().unwrap_or(usize::MAX))
    }
}

/// The activation at `point` when running `embeddings` (`[pos, d]`), detached, `[pos, d]`.
fn capture(model: &dyn LanguageModel, embeddings: &Tensor, point: HookPoint) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let mut hooks = Hooks::caching(HookFilter::point(point));
    // Only the activation is wanted: the LM head runs for the last position alone.
    let last = (embeddings.size()[0] - 1).max(0) as usize;
    let options = ForwardOptions { logits_from: Some(last), ..ForwardOptions::default() };
    model.forward_embeddings(&embeddings.f_unsqueeze(0)?, &options, &mut hooks)?;
    Ok(hooks.cached().require(&point)?.f_detach()?.f_select(0, 0)?)
}

/// The target as a function of the activation at a residual hook point (`[n, pos, d]` →
/// `[n]`), the embeddings fixed.
struct LayerTarget<'a> {
    model: &'a dyn LanguageModel,
    point: HookPoint,
    /// `[pos, d]`.
    embeddings: &'a Tensor,
    tail: &'a TargetTail,
}

impl LayerTarget<'_> {
    /// The embeddings repeated for `acts.size()[0]` rows, and hooks replacing the activation.
    fn setup(&self, acts: &Tensor) -> Result<(Tensor, Hooks<'static>)> {
        let n = acts.size()[0];
        let size = self.embeddings.size();
        let batch = self.embeddings.f_unsqueeze(0)?.f_expand([n, size[0], size[1]], false)?;
        let replacement = acts.shallow_clone();
        let mut hooks = Hooks::new();
        hooks.replace(HookFilter::point(self.point), move |_, _| Ok(replacement.shallow_clone()));
        Ok((batch, hooks))
    }
}

impl Objective for LayerTarget<'_> {
    fn values(&mut self, acts: &Tensor) -> Result<Tensor> {
        let (batch, mut hooks) = self.setup(acts)?;
        let output = self.model.forward_embeddings(&batch, &self.tail.options, &mut hooks)?;
        self.tail.evaluate(&output.logits)
    }

    fn values_and_gradient(&mut self, acts: &Tensor) -> Result<(Tensor, Tensor)> {
        let leaf = acts.f_detach()?.f_set_requires_grad(true)?;
        let (batch, mut hooks) = self.setup(&leaf)?;
        let tail = self.tail;
        let mut objective = |output: &ModelOutput| tail.evaluate(&output.logits);
        let g = gradients(self.model, &batch, &[&leaf], &tail.options, &mut hooks, &mut objective)?;
        let grad = g
            .gradients
            .into_iter()
            .flatten()
            .next()
            .ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
        Ok((g.value, grad))
    }
}

impl Explainer for LayerIntegratedGradients {
    fn name(&self) -> &str {
        "layer_integrated_gradients"
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        self.check_point(model)?;
        let prepared = prepare(model, ids, target)?;
        let base = self.baseline.embeddings(model, &prepared.embeddings)?;
        let act_input = capture(model, &prepared.embeddings, self.point)?;
        let act_base = capture(model, &base, self.point)?;
        let point = self.point;
        let embeddings = &prepared.embeddings;
        let tail = TargetTail::new(&prepared.target, embeddings.size()[0])?;
        let f = LayerTarget { model, point, embeddings, tail: &tail };
        let mut r = integrate(f, &act_input, &act_base, &self.quadrature, false).map_err(|e| {
            with_location(e, |a| {
                let acts = path_points(&act_input, &act_base, &[a])?;
                let replacement = Some((point, acts));
                locate_non_finite(model, &embeddings.f_unsqueeze(0)?, &prepared.target, replacement)
            })
        })?;
        let scores = sum_over_features(&r.attributions)?;
        let mut metadata = std::mem::take(&mut r.metadata);
        metadata.push(("hook_point", json!(self.point.to_string())));
        finish(model, self.name(), &prepared, scores, &r, metadata, &self.baseline)
    }
}
