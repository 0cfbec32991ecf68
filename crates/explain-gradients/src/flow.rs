//! Gradient flow statistics (the source document's `analyze_gradient_flow`): for one target,
//! the gradient of every named parameter — mean, standard deviation, norm, gradient-to-weight
//! norm ratio — a per-layer profile, and flags for vanishing and exploding gradients.
//!
//! Parameters are switched to `requires_grad` only for the duration of the call; a guard
//! restores their previous state even on error, so nothing leaks into later calls.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use explainability_core::{Error, Hooks, LanguageModel, Result, Target};

/// Gradient statistics of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParameterGradient {
    /// Parameter name as the model reports it.
    pub name: String,
    /// Block index parsed from a `blocks.{l}.` prefix.
    pub layer: Option<usize>,
    /// Mean of the gradient entries.
    pub mean: f64,
    /// Standard deviation of the gradient entries.
    pub std: f64,
    /// L2 norm of the gradient.
    pub norm: f64,
    /// L2 norm of the parameter.
    pub weight_norm: f64,
    /// `norm / weight_norm` (0 for an all-zero parameter).
    pub ratio: f64,
    /// Whether the target does not depend on the parameter at all.
    pub unused: bool,
    /// `norm < vanishing_threshold`.
    pub vanishing: bool,
    /// `norm > exploding_threshold`.
    pub exploding: bool,
}

/// The gradient flow of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientFlow {
    /// One entry per named parameter, in the model's order.
    pub parameters: Vec<ParameterGradient>,
    /// Per block: the L2 norm of all its parameters' gradients together.
    pub layer_norms: Vec<f64>,
    /// The resolved target.
    pub target: Target,
    /// Its value.
    pub target_value: f64,
}

/// Computes [`GradientFlow`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GradientFlowAnalysis {
    /// Gradient norms below this are flagged as vanishing (default 1e-7).
    pub vanishing_threshold: f64,
    /// Gradient norms above this are flagged as exploding (default 1e3).
    pub exploding_threshold: f64,
}

impl Default for GradientFlowAnalysis {
    fn default() -> Self {
        Self { vanishing_threshold: 1e-7, exploding_threshold: 1e3 }
    }
}

/// Restores `requires_grad` flags on drop.
struct RequiresGradGuard(Vec<(Tensor, bool)>);

impl Drop for RequiresGradGuard {
    fn drop(&mut self) {
        for (t, previous) in &self.0 {
            // Dropping cannot report errors; resetting a flag does not fail in practice.
            let _ = t.f_set_requires_grad(*previous);
        }
    }
}

impl GradientFlowAnalysis {
    /// Gradient flow of `target` on `ids`.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`];
    /// [`Error::InvalidArgument`] for a model without parameters or non-finite gradients
    /// (naming the parameter).
    pub fn analyze(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<GradientFlow> {
        let prepared = crate::lm::prepare(model, ids, target)?;
        let params = model.named_parameters();
        if params.is_empty() {
            return Err(Error::invalid_argument("the model reports no parameters"));
        }
        let guard = RequiresGradGuard(
            params.iter().map(|(_, t)| (t.shallow_clone(), t.requires_grad())).collect(),
        );
        for (_, t) in &params {
            let _ = t.f_set_requires_grad(true)?;
        }
        let ids_tensor = Tensor::f_from_slice(ids)?.f_unsqueeze(0)?.f_to_device(model.device())?;
        let grads = tch::with_grad(|| -> Result<Vec<Tensor>> {
            let tail = crate::lm::TargetTail::new(&prepared.target, ids.len() as i64)?;
            let out = model.forward_ids(&ids_tensor, &tail.options, &mut Hooks::new())?;
            let y = tail.evaluate(&out.logits)?.f_sum(Kind::Float)?;
            let inputs: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
            Ok(Tensor::f_run_backward(&[&y], &inputs, false, false)?)
        })?;
        drop(guard);
        let mut parameters = Vec::with_capacity(params.len());
        let mut layer_sq: Vec<f64> = vec![0.0; model.info().n_layers];
        for ((name, weight), grad) in params.iter().zip(grads) {
            let layer = name
                .strip_prefix("blocks.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|l| l.parse::<usize>().ok());
            let weight_norm = weight.f_to_kind(Kind::Double)?.f_norm()?.f_double_value(&[])?;
            let (mean, std, norm, unused) = if grad.defined() {
                let g = grad.f_to_kind(Kind::Double)?;
                crate::lm::check_finite(&g, &format!("gradient of {name}"))?;
                let mean = g.f_mean(Kind::Double)?.f_double_value(&[])?;
                let std = if g.numel() > 1 { g.f_std(true)?.f_double_value(&[])? } else { 0.0 };
                (mean, std, g.f_norm()?.f_double_value(&[])?, false)
            } else {
                (0.0, 0.0, 0.0, true)
            };
            if let Some(l) = layer.filter(|&l| l < layer_sq.len()) {
                layer_sq[l] += norm * norm;
            }
            parameters.push(ParameterGradient {
                name: name.clone(),
                layer,
                mean,
                std,
                norm,
                weight_norm,
                ratio: if weight_norm > 0.0 { norm / weight_norm } else { 0.0 },
                unused,
                vanishing: norm < self.vanishing_threshold,
                exploding: norm > self.exploding_threshold,
            });
        }
        Ok(GradientFlow {
            parameters,
            layer_norms: layer_sq.into_iter().map(f64::sqrt).collect(),
            target: prepared.target,
            target_value: prepared.value,
        })
    }
}
