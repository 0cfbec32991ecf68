//! Quadrature rules on [0, 1] for path integrals: left/right/middle Riemann sums, the true
//! trapezoid rule, Captum's (biased) trapezoid for compatibility, and Gauss–Legendre of any
//! order (nodes by Newton's method on the Legendre polynomial, in f64).

use serde::{Deserialize, Serialize};

use explainability_core::{Error, Result};

/// A quadrature rule on [0, 1].
///
/// With `m` nodes: left Riemann uses `α_k = k/m`, right `(k+1)/m`, middle `(k+½)/m`, all with
/// weight `1/m`. [`QuadratureRule::Trapezoid`] is the true trapezoid rule: nodes `k/(m−1)`,
/// weights `1/(m−1)` with both ends halved, so the weights sum to 1 and it is exact on linear
/// integrands. Captum's `riemann_trapezoid` uses the same nodes but weights `1/m` with halved
/// ends, summing to `(m−1)/m` (0.9 at m = 10): it is offered only as
/// [`QuadratureRule::CaptumTrapezoid`] for parity. Gauss–Legendre (the default, as in Captum)
/// is exact for polynomials of degree `2m − 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QuadratureRule {
    /// Left Riemann sum.
    LeftRiemann,
    /// Right Riemann sum.
    RightRiemann,
    /// Midpoint rule.
    MiddleRiemann,
    /// The true trapezoid rule (needs at least 2 nodes).
    Trapezoid,
    /// Captum's `riemann_trapezoid` (weights sum to `(m−1)/m`; for parity only).
    CaptumTrapezoid,
    /// Gauss–Legendre on [0, 1] (default).
    #[default]
    GaussLegendre,
}

impl QuadratureRule {
    /// Stable name (`"gauss_legendre"`, `"trapezoid"`, …).
    pub fn name(self) -> &'static str {
        match self {
            QuadratureRule::LeftRiemann => "riemann_left",
            QuadratureRule::RightRiemann => "riemann_right",
            QuadratureRule::MiddleRiemann => "riemann_middle",
            QuadratureRule::Trapezoid => "trapezoid",
            QuadratureRule::CaptumTrapezoid => "captum_trapezoid",
            QuadratureRule::GaussLegendre => "gauss_legendre",
        }
    }

    /// Nodes `α_k` (ascending) and weights `w_k` of the `m`-point rule on [0, 1].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `m = 0`, and for `m = 1` with the trapezoid rules.
    pub fn nodes_and_weights(self, m: usize) -> Result<(Vec<f64>, Vec<f64>)> {
        if m == 0 {
            return Err(Error::invalid_argument("n_steps must be at least 1"));
        }
        let mf = m as f64;
        Ok(match self {
            QuadratureRule::LeftRiemann => {
                ((0..m).map(|k| k as f64 / mf).collect(), vec![1.0 / mf; m])
            }
            QuadratureRule::RightRiemann => {
                ((0..m).map(|k| (k + 1) as f64 / mf).collect(), vec![1.0 / mf; m])
            }
            QuadratureRule::MiddleRiemann => {
                ((0..m).map(|k| (k as f64 + 0.5) / mf).collect(), vec![1.0 / mf; m])
            }
            QuadratureRule::Trapezoid | QuadratureRule::CaptumTrapezoid => {
                if m < 2 {
                    return Err(Error::invalid_argument(
                        "the trapezoid rule needs at least 2 steps (both ends of the path)",
                    ));
                }
                let h = 1.0 / (mf - 1.0);
                let base = if self == QuadratureRule::Trapezoid { h } else { 1.0 / mf };
                let nodes = (0..m).map(|k| k as f64 * h).collect();
                let mut weights = vec![base; m];
                weights[0] *= 0.5;
                weights[m - 1] *= 0.5;
                (nodes, weights)
            }
            QuadratureRule::GaussLegendre => gauss_legendre(m),
        })
    }
}

/// Gauss–Legendre nodes and weights mapped from [−1, 1] to [0, 1], ascending.
fn gauss_legendre(m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; m];
    let mut weights = vec![0.0; m];
    let mf = m as f64;
    // Roots are symmetric; compute the upper half by Newton from Tricomi's initial guess.
    for i in 0..m.div_ceil(2) {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (mf + 0.5)).cos();
        let mut derivative = 1.0;
        for _ in 0..100 {
            let (p, dp) = legendre_and_derivative(m, x);
            derivative = dp;
            let step = p / dp;
            x -= step;
            if step.abs() < 1e-16 {
                break;
            }
        }
        let (_, dp) = legendre_and_derivative(m, x);
        if dp != 0.0 {
            derivative = dp;
        }
        let w = 2.0 / ((1.0 - x * x) * derivative * derivative);
        // x is the i-th largest root; −x the i-th smallest.
        nodes[m - 1 - i] = 0.5 * (1.0 + x);
        nodes[i] = 0.5 * (1.0 - x);
        weights[m - 1 - i] = 0.5 * w;
        weights[i] = 0.5 * w;
    }
    (nodes, weights)
}

/// `P_m(x)` and `P_m'(x)` by the three-term recurrence.
fn legendre_and_derivative(m: usize, x: f64) -> (f64, f64) {
    let (mut p0, mut p1) = (1.0, x);
    for k in 2..=m {
        let kf = k as f64;
        let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
        p0 = p1;
        p1 = p2;
    }
    if m == 0 {
        return (1.0, 0.0);
    }
    let p = p1;
    let dp = m as f64 * (x * p - p0) / (x * x - 1.0);
    (p, dp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use approx::assert_relative_eq;

    const RULES: [QuadratureRule; 5] = [
        QuadratureRule::LeftRiemann,
        QuadratureRule::RightRiemann,
        QuadratureRule::MiddleRiemann,
        QuadratureRule::Trapezoid,
        QuadratureRule::GaussLegendre,
    ];

    #[test]
    fn gauss_legendre_anchors() {
        // REFERENCES.md anchors; f64 round-off only.
        let (a, w) = QuadratureRule::GaussLegendre.nodes_and_weights(2).unwrap();
        let d = 0.5 / 3f64.sqrt();
        assert_relative_eq!(a[0], 0.5 - d, epsilon = 1e-15);
        assert_relative_eq!(a[1], 0.5 + d, epsilon = 1e-15);
        assert_relative_eq!(w[0], 0.5, epsilon = 1e-15);
        assert_relative_eq!(w[1], 0.5, epsilon = 1e-15);
        let (a, w) = QuadratureRule::GaussLegendre.nodes_and_weights(3).unwrap();
        let d = 0.5 * (3.0f64 / 5.0).sqrt();
        assert_relative_eq!(a[0], 0.5 - d, epsilon = 1e-15);
        assert_relative_eq!(a[1], 0.5, epsilon = 1e-15);
        assert_relative_eq!(a[2], 0.5 + d, epsilon = 1e-15);
        for (got, want) in w.iter().zip([5.0 / 18.0, 4.0 / 9.0, 5.0 / 18.0]) {
            assert_relative_eq!(*got, want, epsilon = 1e-15);
        }
        let (a, w) = QuadratureRule::GaussLegendre.nodes_and_weights(1).unwrap();
        assert_eq!((a, w), (vec![0.5], vec![1.0]));
    }

    #[test]
    fn gauss_legendre_is_exact_to_degree_2m_minus_1() {
        for m in [4usize, 10, 50, 200] {
            let (a, w) = QuadratureRule::GaussLegendre.nodes_and_weights(m).unwrap();
            assert!(a.windows(2).all(|p| p[0] < p[1]), "m={m} nodes not ascending");
            assert!(a.iter().all(|&x| x > 0.0 && x < 1.0));
            let degree = (2 * m - 1).min(40) as i32;
            let integral: f64 = a.iter().zip(&w).map(|(x, w)| w * x.powi(degree)).sum();
            // ∫₀¹ x^d dx = 1/(d+1); tolerance: accumulated f64 round-off over m terms.
            assert_relative_eq!(integral, 1.0 / f64::from(degree + 1), epsilon = 1e-13);
        }
    }

    #[test]
    fn riemann_and_trapezoid_nodes() {
        let (a, w) = QuadratureRule::Trapezoid.nodes_and_weights(5).unwrap();
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(w, vec![0.125, 0.25, 0.25, 0.25, 0.125]);
        let (_, w) = QuadratureRule::CaptumTrapezoid.nodes_and_weights(10).unwrap();
        assert_relative_eq!(w.iter().sum::<f64>(), 0.9, epsilon = 1e-15);
        let (a, _) = QuadratureRule::LeftRiemann.nodes_and_weights(4).unwrap();
        assert_eq!(a, vec![0.0, 0.25, 0.5, 0.75]);
        let (a, _) = QuadratureRule::RightRiemann.nodes_and_weights(4).unwrap();
        assert_eq!(a, vec![0.25, 0.5, 0.75, 1.0]);
        let (a, _) = QuadratureRule::MiddleRiemann.nodes_and_weights(4).unwrap();
        assert_eq!(a, vec![0.125, 0.375, 0.625, 0.875]);
    }

    #[test]
    fn bad_step_counts_are_typed_errors() {
        for rule in RULES {
            assert!(matches!(rule.nodes_and_weights(0), Err(Error::InvalidArgument { .. })));
        }
        assert!(matches!(
            QuadratureRule::Trapezoid.nodes_and_weights(1),
            Err(Error::InvalidArgument { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn weights_sum_to_one(m in 2usize..300, r in 0usize..5) {
            let (a, w) = RULES[r].nodes_and_weights(m).unwrap();
            proptest::prop_assert_eq!(a.len(), m);
            proptest::prop_assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            proptest::prop_assert!(a.iter().all(|&x| (0.0..=1.0).contains(&x)));
        }
    }
}
