//! Completeness of an explanation: how much of the output change it accounts for.
//!
//! For path methods (Integrated Gradients, Sundararajan et al. 2017, arXiv 1703.01365) the
//! completeness axiom says `Σ a = F(x) − F(x')`; the explanation carries
//! `convergence_delta = Σ a − (F(x) − F(x'))`, and the relative residual
//! `|δ| / |F(x) − F(x')|` is reported. `F(x')` is read from the `f_baseline` metadata entry
//! explain-gradients writes, or recovered as `F(x) − (Σ a − δ)`.

use explainability_core::{Error, Explanation, Result};
use serde::{Deserialize, Serialize};

/// Completeness numbers of one explanation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Completeness {
    /// `Σ a`.
    pub attribution_sum: f64,
    /// `|δ|` where the explanation carries a convergence delta.
    pub residual: Option<f64>,
    /// `|δ| / |F(x) − F(x')|` (`None` without a delta or when the output change is zero).
    pub relative_residual: Option<f64>,
    /// Share of `Σ|a|` held by the `k` largest `|a|` (1 for an all-zero attribution).
    pub top_k_share: f64,
    /// The `k` used (clamped to the number of tokens).
    pub k: usize,
}

/// Completeness of `explanation` with the top-`k` share.
///
/// # Errors
/// [`Error::InvalidArgument`] for `k == 0`.
pub fn completeness(explanation: &Explanation, k: usize) -> Result<Completeness> {
    if k == 0 {
        return Err(Error::invalid_argument("completeness: k must be at least 1"));
    }
    let scores = explanation
        .scores
        .as_slice()
        .map(<[f64]>::to_vec)
        .unwrap_or_else(|| explanation.scores.iter().copied().collect());
    let attribution_sum: f64 = scores.iter().sum();
    let k = k.min(scores.len());
    let mut abs: Vec<f64> = scores.iter().map(|s| s.abs()).collect();
    abs.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = abs.iter().sum();
    let top_k_share = if total > 0.0 { abs[..k].iter().sum::<f64>() / total } else { 1.0 };
    let residual = explanation.convergence_delta.map(f64::abs);
    let change = match (explanation.convergence_delta, explanation.target_value) {
        (Some(delta), Some(fx)) => {
            let fb = explanation
                .metadata
                .get("f_baseline")
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(fx - (attribution_sum - delta));
            Some(fx - fb)
        }
        (Some(delta), None) => Some(attribution_sum - delta),
        _ => None,
    };
    let relative_residual = match (residual, change) {
        (Some(r), Some(c)) if c.abs() > 0.0 => Some(r / c.abs()),
        _ => None,
    };
    Ok(Completeness { attribution_sum, residual, relative_residual, top_k_share, k })
}
