//! Comprehensibility of an attribution vector, computed on `|a|`: Gini sparseness
//! (Hurley & Rickard 2009, arXiv 0811.4706; Chalasani et al. 2020, arXiv 1810.06583),
//! entropy complexity (Bhatt et al. 2020, arXiv 2005.00631) and the effective number of
//! tokens `exp(entropy)`.
//!
//! An all-zero (or empty) attribution carries no preference: it is given Gini 0, entropy
//! `ln d` (the uniform distribution) and `d` effective tokens.

use serde::{Deserialize, Serialize};

/// The three comprehensibility numbers of one attribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Comprehensibility {
    /// Gini index of `|a|`, in `[0, (d − 1)/d]`; higher is sparser.
    pub gini: f64,
    /// Shannon entropy of `p = |a| / Σ|a|` (nats), in `[0, ln d]`; lower is simpler.
    pub entropy: f64,
    /// `exp(entropy)`, in `[1, d]`: how many tokens the attribution is spread over.
    pub effective_tokens: f64,
}

/// Gini index of `|a|`: `Σᵢ (2i − d − 1) |a|₍ᵢ₎ / (d Σ|a|)` with `|a|` sorted ascending and
/// `i` 1-based. One non-zero entry gives `(d − 1)/d`; equal entries give 0; all zeros give 0.
pub fn gini_sparseness(scores: &[f64]) -> f64 {
    let d = scores.len();
    let mut abs: Vec<f64> = scores.iter().map(|s| s.abs()).collect();
    let total: f64 = abs.iter().sum();
    if d == 0 || total <= 0.0 || !total.is_finite() {
        return 0.0;
    }
    abs.sort_by(f64::total_cmp);
    let weighted: f64 =
        abs.iter().enumerate().map(|(i, a)| (2.0 * (i + 1) as f64 - d as f64 - 1.0) * a).sum();
    weighted / (d as f64 * total)
}

/// Entropy (nats) of `|a| / Σ|a|`; `ln d` for an all-zero attribution, 0 for an empty one.
pub fn entropy_complexity(scores: &[f64]) -> f64 {
    let d = scores.len();
    let total: f64 = scores.iter().map(|s| s.abs()).sum();
    if d == 0 {
        return 0.0;
    }
    if total <= 0.0 || !total.is_finite() {
        return (d as f64).ln();
    }
    -scores.iter().map(|s| s.abs() / total).filter(|&p| p > 0.0).map(|p| p * p.ln()).sum::<f64>()
}

/// `exp(entropy_complexity)`, in `[1, d]`.
pub fn effective_tokens(scores: &[f64]) -> f64 {
    entropy_complexity(scores).exp()
}

/// All three numbers at once.
pub fn comprehensibility(scores: &[f64]) -> Comprehensibility {
    let entropy = entropy_complexity(scores);
    Comprehensibility { gini: gini_sparseness(scores), entropy, effective_tokens: entropy.exp() }
}
