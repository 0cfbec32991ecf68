//! Small statistics used by the metrics: Pearson, Spearman, Kendall τ-b, trapezoidal AUC,
//! top-k overlap and the summary statistics of the evaluator (mean, std, percentile
//! bootstrap interval).

use explainability_core::SplitMix64;
use serde::{Deserialize, Serialize};

pub use explainability_core::{pearson, spearman};

/// Kendall τ-b (tie-corrected); `None` with fewer than two points or a constant input.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 || y.len() != n {
        return None;
    }
    let (mut concordant, mut discordant, mut tie_x, mut tie_y) =
        (0.0_f64, 0.0_f64, 0.0_f64, 0.0_f64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = (x[i] - x[j]).signum() * f64::from(u8::from(x[i] != x[j]));
            let dy = (y[i] - y[j]).signum() * f64::from(u8::from(y[i] != y[j]));
            if dx == 0.0 && dy == 0.0 {
                continue;
            } else if dx == 0.0 {
                tie_x += 1.0;
            } else if dy == 0.0 {
                tie_y += 1.0;
            } else if dx == dy {
                concordant += 1.0;
            } else {
                discordant += 1.0;
            }
        }
    }
    let denom = ((concordant + discordant + tie_x) * (concordant + discordant + tie_y)).sqrt();
    if denom <= 0.0 {
        return None;
    }
    Some((concordant - discordant) / denom)
}

/// Trapezoidal area under `ys` sampled at equally spaced points of `[0, 1]`
/// (`ys.len() − 1` intervals); a single point gives that value, none gives 0.
pub fn trapezoid_auc(ys: &[f64]) -> f64 {
    match ys.len() {
        0 => 0.0,
        1 => ys[0],
        n => {
            let h = 1.0 / (n - 1) as f64;
            ys.windows(2).map(|w| (w[0] + w[1]) * h / 2.0).sum()
        }
    }
}

/// Indices of the `k` largest `|x|` (ties by position).
fn top_k_indices(x: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[b].abs().total_cmp(&x[a].abs()).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Share of the `k` largest `|a|` that are also among the `k` largest `|b|`, in `[0, 1]`
/// (`k` clamped to the length; 1 for empty inputs or `k == 0`).
pub fn top_k_overlap(a: &[f64], b: &[f64], k: usize) -> f64 {
    let k = k.min(a.len()).min(b.len());
    if k == 0 {
        return 1.0;
    }
    let top_b = top_k_indices(b, k);
    let shared = top_k_indices(a, k).iter().filter(|i| top_b.contains(i)).count();
    shared as f64 / k as f64
}

/// Mean, sample standard deviation and a percentile-bootstrap 95 % interval of the mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SummaryStats {
    /// Number of values.
    pub n: usize,
    /// Mean (NaN for no values).
    pub mean: f64,
    /// Sample standard deviation (`n − 1`; 0 for one value, NaN for none).
    pub std: f64,
    /// 2.5th percentile of the bootstrap means.
    pub ci_low: f64,
    /// 97.5th percentile of the bootstrap means.
    pub ci_high: f64,
}

/// [`SummaryStats`] of `values` with `resamples` bootstrap resamples from a [`SplitMix64`]
/// seeded with `seed` (percentiles by linear interpolation; one value gives a zero-width
/// interval). No values give `n = 0` and NaN everywhere.
pub fn summarize(values: &[f64], resamples: usize, seed: u64) -> SummaryStats {
    let n = values.len();
    if n == 0 {
        return SummaryStats {
            n,
            mean: f64::NAN,
            std: f64::NAN,
            ci_low: f64::NAN,
            ci_high: f64::NAN,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    if n == 1 || resamples == 0 {
        return SummaryStats { n, mean, std, ci_low: mean, ci_high: mean };
    }
    let mut rng = SplitMix64::new(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.below(n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let pos = q * (means.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        means[lo] + (means[hi] - means[lo]) * (pos - lo as f64)
    };
    SummaryStats { n, mean, std, ci_low: quantile(0.025), ci_high: quantile(0.975) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn closed_forms() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&x, &[2.0, 4.0, 6.0, 8.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[1.0, 10.0, 100.0, 1000.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((kendall_tau(&x, &[4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        // one swapped pair out of six: (5 − 1) / 6
        assert!((kendall_tau(&x, &[1.0, 2.0, 4.0, 3.0]).unwrap() - 4.0 / 6.0).abs() < 1e-12);
        assert!(pearson(&x, &[1.0; 4]).is_none());
        assert!((trapezoid_auc(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
        assert!((trapezoid_auc(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-12);
        assert!(
            (top_k_overlap(&[3.0, -2.0, 1.0, 0.0], &[0.0, 5.0, 4.0, 1.0], 2) - 0.5).abs() < 1e-12
        );
        assert_eq!(top_k_overlap(&[1.0], &[2.0], 5), 1.0);
    }

    #[test]
    fn summary_statistics() {
        let s = summarize(&[1.0, 2.0, 3.0, 4.0], 2000, 1);
        assert!((s.mean - 2.5).abs() < 1e-12);
        assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(s.ci_low < s.mean && s.mean < s.ci_high);
        assert!(s.ci_low >= 1.0 && s.ci_high <= 4.0);
        assert_eq!(summarize(&[1.0, 2.0, 3.0, 4.0], 2000, 1), s); // seeded
        let one = summarize(&[7.0], 100, 0);
        assert_eq!((one.std, one.ci_low, one.ci_high), (0.0, 7.0, 7.0));
        assert!(summarize(&[], 100, 0).mean.is_nan());
    }
}
