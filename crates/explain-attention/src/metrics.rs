//! Pattern metrics of the source document — locality, sparsity, entropy, focus — plus the
//! normalised entropy and the mean attended distance, per head, per layer and for the model.
//!
//! Every metric is computed over **valid** entries only: in a causal pattern row `i` has
//! `i + 1` valid keys. Counting the masked future entries (as a naive computation over the
//! full square does) inflates sparsity and distorts the rest; see docs/methods.md.

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::capture::AttentionCapture;
use explainability_core::{Error, Result};

/// Default threshold below which an attention weight counts as "sparse" (source document).
pub const DEFAULT_SPARSITY_THRESHOLD: f64 = 0.01;

/// The metrics of one attention pattern (or a mean of several).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct PatternMetrics {
    /// mean_i 1 / (1 + Σ_j |i − j| A_ij): 1 when every query attends to itself.
    pub locality: f64,
    /// Fraction of valid entries below the sparsity threshold.
    pub sparsity: f64,
    /// mean_i −Σ_j A_ij ln A_ij (nats).
    pub entropy: f64,
    /// mean over rows with ≥ 2 valid keys of the row entropy / ln(valid keys), in [0, 1].
    pub normalized_entropy: f64,
    /// mean_i max_j A_ij.
    pub focus: f64,
    /// mean_i Σ_j |i − j| A_ij: how far back (or away) a query looks on average.
    pub mean_distance: f64,
}

impl PatternMetrics {
    /// Metrics of one `[query, key]` pattern. `causal` restricts row `i` to keys `0..=i`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a non-square or empty pattern; [`Error::InvalidArgument`]
    /// for a threshold outside [0, 1] or non-finite weights.
    pub fn of_pattern(pattern: ArrayView2<'_, f32>, causal: bool, threshold: f64) -> Result<Self> {
        let (q, k) = pattern.dim();
        if q != k || q == 0 {
            return Err(Error::ShapeMismatch {
                what: "attention pattern".into(),
                expected: "a non-empty square [query, key] matrix".into(),
                actual: vec![q as i64, k as i64],
            });
        }
        if !(0.0..=1.0).contains(&threshold) {
            return Err(Error::invalid_argument(format!(
                "sparsity threshold must lie in [0, 1], got {threshold}"
            )));
        }
        let mut m = PatternMetrics::default();
        let (mut valid_entries, mut sparse_entries) = (0usize, 0usize);
        let mut normalized_rows = 0usize;
        for (i, row) in pattern.axis_iter(Axis(0)).enumerate() {
            let n_valid = if causal { i + 1 } else { k };
            let (mut distance, mut entropy, mut max) = (0.0, 0.0, 0.0f64);
            for (j, &a) in row.iter().take(n_valid).enumerate() {
                let a = f64::from(a);
                if !a.is_finite() {
                    return Err(Error::invalid_argument(format!(
                        "attention weight at ({i}, {j}) is {a}"
                    )));
                }
                distance += (i as f64 - j as f64).abs() * a;
                if a > 0.0 {
                    entropy -= a * a.ln();
                }
                max = max.max(a);
                valid_entries += 1;
                if a < threshold {
                    sparse_entries += 1;
                }
            }
            m.locality += 1.0 / (1.0 + distance);
            m.mean_distance += distance;
            m.entropy += entropy;
            m.focus += max;
            if n_valid >= 2 {
                m.normalized_entropy += entropy / (n_valid as f64).ln();
                normalized_rows += 1;
            }
        }
        let rows = q as f64;
        m.locality /= rows;
        m.mean_distance /= rows;
        m.entropy /= rows;
        m.focus /= rows;
        m.normalized_entropy =
            if normalized_rows > 0 { m.normalized_entropy / normalized_rows as f64 } else { 0.0 };
        m.sparsity = sparse_entries as f64 / valid_entries as f64;
        Ok(m)
    }

    /// The element-wise mean of several metrics.
    pub fn mean(items: &[PatternMetrics]) -> PatternMetrics {
        let n = items.len().max(1) as f64;
        let sum = |f: fn(&PatternMetrics) -> f64| items.iter().map(f).sum::<f64>() / n;
        PatternMetrics {
            locality: sum(|m| m.locality),
            sparsity: sum(|m| m.sparsity),
            entropy: sum(|m| m.entropy),
            normalized_entropy: sum(|m| m.normalized_entropy),
            focus: sum(|m| m.focus),
            mean_distance: sum(|m| m.mean_distance),
        }
    }
}

/// Metrics per head, per layer (mean over heads) and for the model (mean over layers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionMetrics {
    /// The sparsity threshold used.
    pub sparsity_threshold: f64,
    /// `[layer][head]`.
    pub heads: Vec<Vec<PatternMetrics>>,
    /// `[layer]`, the mean over the layer's heads.
    pub layers: Vec<PatternMetrics>,
    /// The mean over layers.
    pub model: PatternMetrics,
}

impl AttentionMetrics {
    /// Computes every metric of a capture.
    ///
    /// # Errors
    /// As [`PatternMetrics::of_pattern`].
    pub fn compute(capture: &AttentionCapture, sparsity_threshold: f64) -> Result<Self> {
        let mut heads = Vec::with_capacity(capture.n_layers());
        for layer in &capture.patterns {
            let per_head = layer
                .axis_iter(Axis(0))
                .map(|p| PatternMetrics::of_pattern(p, capture.causal, sparsity_threshold))
                .collect::<Result<Vec<_>>>()?;
            heads.push(per_head);
        }
        let layers: Vec<PatternMetrics> = heads.iter().map(|h| PatternMetrics::mean(h)).collect();
        let model = PatternMetrics::mean(&layers);
        Ok(Self { sparsity_threshold, heads, layers, model })
    }

    /// One metric as a `[layer, head]` grid (for heatmaps).
    pub fn grid(&self, metric: fn(&PatternMetrics) -> f64) -> Array2<f64> {
        let n_layers = self.heads.len();
        let n_heads = self.heads.first().map_or(0, Vec::len);
        Array2::from_shape_fn((n_layers, n_heads), |(l, h)| metric(&self.heads[l][h]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    #[test]
    fn identity_pattern_is_perfectly_local_focused_and_certain() {
        let eye = Array2::<f32>::eye(4);
        let m = PatternMetrics::of_pattern(eye.view(), true, 0.01).unwrap();
        assert_abs_diff_eq!(m.locality, 1.0);
        assert_abs_diff_eq!(m.focus, 1.0);
        assert_abs_diff_eq!(m.entropy, 0.0);
        assert_abs_diff_eq!(m.mean_distance, 0.0);
        // Valid entries: 1 + 2 + 3 + 4 = 10, of which the 6 off-diagonal ones are zero.
        assert_abs_diff_eq!(m.sparsity, 0.6);
    }

    #[test]
    fn uniform_causal_pattern_has_maximal_normalised_entropy() {
        // Row i attends uniformly to keys 0..=i.
        let p = Array2::from_shape_fn(
            (4, 4),
            |(i, j)| if j <= i { 1.0 / (i as f32 + 1.0) } else { 0.0 },
        );
        let m = PatternMetrics::of_pattern(p.view(), true, 0.01).unwrap();
        let expected_entropy = (0.0 + 2f64.ln() + 3f64.ln() + 4f64.ln()) / 4.0;
        assert_abs_diff_eq!(m.entropy, expected_entropy, epsilon = 1e-6);
        assert_abs_diff_eq!(m.normalized_entropy, 1.0, epsilon = 1e-6);
        assert_abs_diff_eq!(m.sparsity, 0.0);
        assert_abs_diff_eq!(m.focus, (1.0 + 0.5 + 1.0 / 3.0 + 0.25) / 4.0, epsilon = 1e-6);
        // Distances: row 1: 0.5, row 2: (2+1)/3 = 1, row 3: (3+2+1)/4 = 1.5.
        assert_abs_diff_eq!(m.mean_distance, (0.0 + 0.5 + 1.0 + 1.5) / 4.0, epsilon = 1e-6);
        let locality = (1.0 + 1.0 / 1.5 + 0.5 + 1.0 / 2.5) / 4.0;
        assert_abs_diff_eq!(m.locality, locality, epsilon = 1e-6);
    }

    #[test]
    fn masked_future_does_not_count_as_sparse() {
        // Previous-token head: causal valid entries are 1 + 2 + 3 = 6, three of them zero.
        let p = array![[1.0f32, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let causal = PatternMetrics::of_pattern(p.view(), true, 0.01).unwrap();
        let naive = PatternMetrics::of_pattern(p.view(), false, 0.01).unwrap();
        assert_abs_diff_eq!(causal.sparsity, 0.5);
        assert_abs_diff_eq!(naive.sparsity, 6.0 / 9.0);
    }

    #[test]
    fn bad_patterns_are_typed_errors() {
        let rect = Array2::<f32>::zeros((2, 3));
        assert!(matches!(
            PatternMetrics::of_pattern(rect.view(), true, 0.01),
            Err(Error::ShapeMismatch { .. })
        ));
        let empty = Array2::<f32>::zeros((0, 0));
        assert!(matches!(
            PatternMetrics::of_pattern(empty.view(), true, 0.01),
            Err(Error::ShapeMismatch { .. })
        ));
        let nan = array![[f32::NAN]];
        assert!(matches!(
            PatternMetrics::of_pattern(nan.view(), true, 0.01),
            Err(Error::InvalidArgument { .. })
        ));
        let eye = Array2::<f32>::eye(2);
        assert!(matches!(
            PatternMetrics::of_pattern(eye.view(), true, 1.5),
            Err(Error::InvalidArgument { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn metrics_stay_in_their_ranges(raw in proptest::collection::vec(0.0f32..1.0, 36), causal: bool) {
            // Random row-stochastic 6×6 pattern (causal rows renormalised over valid keys).
            let mut p = Array2::from_shape_vec((6, 6), raw).unwrap();
            for (i, mut row) in p.axis_iter_mut(Axis(0)).enumerate() {
                let n = if causal { i + 1 } else { 6 };
                for j in n..6 { row[j] = 0.0; }
                let s: f32 = row.iter().sum::<f32>() + 1e-6;
                row.mapv_inplace(|a| a / s);
            }
            let m = PatternMetrics::of_pattern(p.view(), causal, 0.01).unwrap();
            proptest::prop_assert!(m.locality > 0.0 && m.locality <= 1.0 + 1e-9);
            proptest::prop_assert!((0.0..=1.0).contains(&m.sparsity));
            proptest::prop_assert!(m.entropy >= -1e-9 && m.entropy <= 6f64.ln() + 1e-6);
            proptest::prop_assert!(m.normalized_entropy >= -1e-9 && m.normalized_entropy <= 1.0 + 1e-5);
            proptest::prop_assert!(m.focus > 0.0 && m.focus <= 1.0 + 1e-6);
            proptest::prop_assert!(m.mean_distance >= 0.0 && m.mean_distance <= 5.0 + 1e-6);
        }
    }
}
