//! The model-independent path-integration core of integrated gradients
//! (Sundararajan et al. 2017, arXiv:1703.01365).
//!
//! Everything here works on a differentiable function `F: [n, ...] → [n]` and an
//! input/baseline pair of shape `[...]`: gradients along the straight path
//! `x' + α (x − x')` weighted by a [`QuadratureRule`], chunked by an internal batch size
//! (each chunk's weighted gradient sum is detached and accumulated in f64, so chunking changes
//! only the order of summation), and the convergence delta `Σ attr − (F(x) − F(x'))`.

use tch::{Kind, Tensor};

use explainability_core::{Error, Result};

use crate::quadrature::QuadratureRule;

/// Settings of a fixed-rule path integral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Quadrature rule (default Gauss–Legendre, as Captum).
    pub rule: QuadratureRule,
    /// Number of quadrature nodes (default 50, as Captum).
    pub n_steps: usize,
    /// Path points per forward/backward pass (`None`: all at once). Bounds peak memory.
    pub internal_batch_size: Option<usize>,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self { rule: QuadratureRule::GaussLegendre, n_steps: 50, internal_batch_size: None }
    }
}

/// Result of integrating gradients along a path.
#[derive(Debug)]
pub struct PathAttribution {
    /// `(x − x') ⊙ Σ_k w_k ∇F(x' + α_k (x − x'))`, same shape as the input, f64.
    pub attributions: Tensor,
    /// `F(x)`.
    pub f_input: f64,
    /// `F(x')`.
    pub f_baseline: f64,
    /// Convergence delta `Σ attributions − (F(x) − F(x'))` (signed).
    pub convergence_delta: f64,
    /// Gradient evaluations (path points differentiated).
    pub gradient_evaluations: usize,
}

/// Integrated gradients of `f` from `baseline` to `input` with a fixed quadrature rule.
///
/// # Shapes
/// `input`, `baseline`: the same shape `S`; `f` maps `[n, S...]` to `[n]`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the shapes differ or `f` returns another shape;
/// [`Error::InvalidArgument`] for `n_steps = 0` or an internal batch size of 0;
/// [`Error::NonFinite`] with the path point α for non-finite gradients; whatever `f` returns.
///
/// # Examples
/// ```
/// use explain_gradients::{PathOptions, path_integrated_gradients};
/// use tch::{Kind, Tensor};
/// // F(x) = x1 · x2 from baseline 0: each input gets x1·x2 / 2.
/// let f = |p: &Tensor| Ok(p.select(1, 0) * p.select(1, 1));
/// let x = Tensor::from_slice(&[2.0f64, 3.0]);
/// let r = path_integrated_gradients(f, &x, &x.zeros_like(), &PathOptions::default()).unwrap();
/// assert!((r.attributions.double_value(&[0]) - 3.0).abs() < 1e-12);
/// assert!(r.convergence_delta.abs() < 1e-12);
/// ```
pub fn path_integrated_gradients<F>(
    f: F,
    input: &Tensor,
    baseline: &Tensor,
    options: &PathOptions,
) -> Result<PathAttribution>
where
    F: FnMut(&Tensor) -> Result<Tensor>,
{
    fixed_path(&mut Autograd(f), input, baseline, options)
}

/// [`path_integrated_gradients`] of any [`Objective`].
pub(crate) fn fixed_path<O: Objective>(
    f: &mut O,
    input: &Tensor,
    baseline: &Tensor,
    options: &PathOptions,
) -> Result<PathAttribution> {
    check_pair(input, baseline)?;
    let chunk = chunk_size(options.internal_batch_size)?;
    let (alphas, weights) = options.rule.nodes_and_weights(options.n_steps)?;
    let group: Vec<(f64, f64)> = alphas.into_iter().zip(weights).collect();
    let mut sums = weighted_gradient_sums(f, input, baseline, &[group], chunk)?;
    let sum = sums.pop().ok_or_else(|| Error::invalid_argument("no quadrature group"))?;
    let attributions = difference(input, baseline)?.f_mul(&sum)?;
    let ends = endpoint_values(f, input, baseline)?;
    let total = attributions.f_sum(Kind::Double)?.f_double_value(&[])?;
    Ok(PathAttribution {
        attributions,
        f_input: ends.0,
        f_baseline: ends.1,
        convergence_delta: total - (ends.0 - ends.1),
        gradient_evaluations: options.n_steps,
    })
}

/// A differentiable function of a batch of points, `[n, ...] → [n]`: its values, and its values
/// with the gradient of their sum. Model targets implement it so that the way gradients are
/// taken ([`explainability_core::BackwardMemory`]) is decided in one place.
pub(crate) trait Objective {
    /// `F` of each point (under the caller's gradient mode).
    ///
    /// # Errors
    /// Whatever the function returns.
    fn values(&mut self, points: &Tensor) -> Result<Tensor>;

    /// `(F(points)` detached, `∇ Σ_n F(points_n))`.
    ///
    /// # Errors
    /// Whatever the function returns; autograd errors.
    fn values_and_gradient(&mut self, points: &Tensor) -> Result<(Tensor, Tensor)>;
}

/// A closure differentiated by plain autograd.
pub(crate) struct Autograd<F>(pub F);

impl<F: FnMut(&Tensor) -> Result<Tensor>> Objective for Autograd<F> {
    fn values(&mut self, points: &Tensor) -> Result<Tensor> {
        (self.0)(points)
    }

    fn values_and_gradient(&mut self, points: &Tensor) -> Result<(Tensor, Tensor)> {
        tch::with_grad(|| {
            let leaf = points.f_detach()?.f_set_requires_grad(true)?;
            let y = (self.0)(&leaf)?;
            check_values(&y, points.size()[0])?;
            let total = y.f_sum(Kind::Float)?;
            let grad = Tensor::f_run_backward(&[&total], &[&leaf], false, false)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::invalid_argument("autograd returned no gradient"))?;
            Ok((y.f_detach()?, grad))
        })
    }
}

/// Checks that a path function returned one scalar per point.
pub(crate) fn check_values(y: &Tensor, n: i64) -> Result<()> {
    if y.size() != [n] {
        return Err(Error::ShapeMismatch {
            what: "path function output".into(),
            expected: format!("[{n}] (one scalar per path point)"),
            actual: y.size(),
        });
    }
    Ok(())
}

/// Checks that input and baseline have the same shape.
pub(crate) fn check_pair(input: &Tensor, baseline: &Tensor) -> Result<()> {
    if input.size() != baseline.size() {
        return Err(Error::ShapeMismatch {
            what: "baseline".into(),
            expected: format!("the input's shape {:?}", input.size()),
            actual: baseline.size(),
        });
    }
    Ok(())
}

/// Validates an internal batch size (`None`: unbounded).
pub(crate) fn chunk_size(internal_batch_size: Option<usize>) -> Result<usize> {
    match internal_batch_size {
        Some(0) => Err(Error::invalid_argument("internal_batch_size must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(usize::MAX),
    }
}

/// `x − x'` in f64.
pub(crate) fn difference(input: &Tensor, baseline: &Tensor) -> Result<Tensor> {
    Ok(input.f_to_kind(Kind::Double)?.f_sub(&baseline.f_to_kind(Kind::Double)?)?)
}

/// Points `x' + α (x − x')` for the given α, stacked on a new leading axis, detached; the
/// endpoints α = 0 and α = 1 are the baseline and the input exactly.
pub(crate) fn path_points(input: &Tensor, baseline: &Tensor, alphas: &[f64]) -> Result<Tensor> {
    let diff = input.f_sub(baseline)?;
    let mut rows = Vec::with_capacity(alphas.len());
    for &a in alphas {
        let row = if a == 0.0 {
            baseline.shallow_clone()
        } else if a == 1.0 {
            input.shallow_clone()
        } else {
            baseline.f_add(&diff.f_mul_scalar(a)?)?
        };
        rows.push(row);
    }
    Ok(Tensor::f_stack(&rows, 0)?.f_detach()?)
}

/// Runs `f` on `points` (`[n, ...]`) and checks it returns `[n]`.
pub(crate) fn evaluate<O: Objective>(f: &mut O, points: &Tensor) -> Result<Tensor> {
    let y = f.values(points)?;
    check_values(&y, points.size()[0])?;
    Ok(y)
}

/// `F` along the path at `alphas`, without gradients, `chunk` points per call.
///
/// # Errors
/// As `f`, shape errors, and [`Error::NonFinite`] with the α of a non-finite value.
pub(crate) fn path_values<O: Objective>(
    f: &mut O,
    input: &Tensor,
    baseline: &Tensor,
    alphas: &[f64],
    chunk: usize,
) -> Result<Vec<f64>> {
    let _guard = tch::no_grad_guard();
    let mut values = Vec::with_capacity(alphas.len());
    for part in alphas.chunks(chunk.max(1)) {
        let points = path_points(input, baseline, part)?;
        let y = evaluate(f, &points)?.f_to_kind(Kind::Double)?;
        let y = Vec::<f64>::try_from(&y)?;
        if let Some((a, v)) = part.iter().zip(&y).find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: format!("the target F = {v}"),
                alpha: Some(*a),
                hook_point: None,
            });
        }
        values.extend(y);
    }
    Ok(values)
}

/// `(F(x), F(x'))` in one call.
pub(crate) fn endpoint_values<O: Objective>(
    f: &mut O,
    input: &Tensor,
    baseline: &Tensor,
) -> Result<(f64, f64)> {
    let v = path_values(f, input, baseline, &[1.0, 0.0], 2)?;
    Ok((v[0], v[1]))
}

/// For each group of `(α, w)` nodes, `Σ w ∇F(x' + α (x − x'))` (f64, the input's shape).
/// All nodes of all groups are evaluated together, `chunk` points per forward/backward pass;
/// each chunk's contribution is detached before it is accumulated.
///
/// # Errors
/// As `f`; [`Error::NonFinite`] with the α when a gradient is not finite.
pub(crate) fn weighted_gradient_sums<O: Objective>(
    f: &mut O,
    input: &Tensor,
    baseline: &Tensor,
    groups: &[Vec<(f64, f64)>],
    chunk: usize,
) -> Result<Vec<Tensor>> {
    let nodes: Vec<(usize, f64, f64)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, nodes)| nodes.iter().map(move |&(a, w)| (g, a, w)))
        .collect();
    let zeros = input.f_zeros_like()?.f_to_kind(Kind::Double)?;
    let mut sums: Vec<Tensor> = groups.iter().map(|_| zeros.shallow_clone()).collect();
    tch::with_grad(|| -> Result<()> {
        for part in nodes.chunks(chunk.max(1)) {
            let alphas: Vec<f64> = part.iter().map(|n| n.1).collect();
            let points = path_points(input, baseline, &alphas)?;
            let (y, grad) = f.values_and_gradient(&points)?;
            check_values(&y, points.size()[0])?;
            let grad = grad.f_detach()?.f_to_kind(Kind::Double)?;
            for (i, &(g, a, w)) in part.iter().enumerate() {
                let row = grad.f_select(0, i as i64)?;
                if row.f_isfinite()?.f_all()?.f_int64_value(&[])? == 0 {
                    return Err(Error::NonFinite {
                        what: "the gradient along the integration path".into(),
                        alpha: Some(a),
                        hook_point: None,
                    });
                }
                sums[g] = sums[g].f_add(&row.f_mul_scalar(w)?)?;
            }
        }
        Ok(())
    })?;
    Ok(sums)
}
