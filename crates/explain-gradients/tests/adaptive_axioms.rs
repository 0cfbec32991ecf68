//! Adaptive integrated gradients on analytic functions in f64: it converges where uniform
//! quadrature does not (a sharp transition next to the baseline), stays exact where the rule is
//! exact, reports its budget honestly, and rejects bad settings with typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_gradients::{
    AdaptiveOptions, PathOptions, QuadratureRule, adaptive_integrated_gradients,
    path_integrated_gradients,
};
use explainability_core::{Error, Result};
use tch::{Kind, Tensor};

/// F(x) = Σ_i tanh(200 x_i) + x_i²: almost all change of tanh happens within 1% of the path.
fn steep(p: &Tensor) -> Result<Tensor> {
    let t = p.f_mul_scalar(200.0)?.f_tanh()?.f_add(&p.f_square()?)?;
    Ok(t.f_sum_dim_intlist(1, false, Kind::Double)?)
}

#[test]
fn adaptive_converges_where_uniform_quadrature_does_not() {
    let x = Tensor::from_slice(&[1.0f64, -0.5, 2.0]);
    let base = x.zeros_like();
    let uniform = path_integrated_gradients(
        steep,
        &x,
        &base,
        &PathOptions {
            rule: QuadratureRule::GaussLegendre,
            n_steps: 16,
            internal_batch_size: None,
        },
    )
    .unwrap();
    let change = uniform.f_input - uniform.f_baseline;
    assert!(uniform.convergence_delta.abs() > 0.05 * change.abs());
    let options = AdaptiveOptions { tolerance: 1e-3, ..AdaptiveOptions::default() };
    let a = adaptive_integrated_gradients(steep, &x, &base, &options).unwrap();
    assert!(a.converged);
    assert!(a.convergence_delta.abs() <= 1e-3 * change.abs());
    assert!(a.error_bound >= a.convergence_delta.abs());
    assert!(a.gradient_evaluations <= options.max_gradient_evaluations);
    // Each coordinate's exact attribution: tanh(200 x_i) + x_i² (separable F).
    let got = Vec::<f64>::try_from(&a.attributions).unwrap();
    for (g, xi) in got.iter().zip([1.0f64, -0.5, 2.0]) {
        let exact = (200.0 * xi).tanh() + xi * xi;
        assert!((g - exact).abs() < 2e-3 * change.abs(), "{g} vs {exact}");
    }
    // Intervals tile [0, 1] and are finer near the baseline.
    assert_eq!(a.intervals.first().unwrap().0, 0.0);
    assert_eq!(a.intervals.last().unwrap().1, 1.0);
    assert!(a.intervals.windows(2).all(|w| w[0].1 == w[1].0));
    let first = a.intervals[0].1 - a.intervals[0].0;
    let last = a.intervals.last().unwrap().1 - a.intervals.last().unwrap().0;
    assert!(first < last);
}

#[test]
fn adaptive_stops_at_once_when_the_rule_is_exact_and_flags_a_short_budget() {
    let x = Tensor::from_slice(&[1.5f64, -2.0]);
    let base = Tensor::from_slice(&[0.5f64, 1.0]);
    let quad = |p: &Tensor| Ok(p.f_square()?.f_sum_dim_intlist(1, false, Kind::Double)?);
    let a = adaptive_integrated_gradients(quad, &x, &base, &AdaptiveOptions::default()).unwrap();
    assert!(a.converged);
    assert_eq!(a.gradient_evaluations, 8);
    assert_eq!(a.intervals.len(), 4);
    let short = AdaptiveOptions {
        tolerance: 1e-9,
        max_gradient_evaluations: 24,
        strict: true,
        ..AdaptiveOptions::default()
    };
    let y = Tensor::from_slice(&[1.0f64, 2.0]);
    let a = adaptive_integrated_gradients(steep, &y, &y.zeros_like(), &short).unwrap();
    assert!(!a.converged);
    assert!(a.gradient_evaluations <= 24);
    // Chunking changes only the summation order.
    let chunked = AdaptiveOptions { internal_batch_size: Some(3), ..short };
    let b = adaptive_integrated_gradients(steep, &y, &y.zeros_like(), &chunked).unwrap();
    assert!((a.convergence_delta - b.convergence_delta).abs() < 1e-12);
}

#[test]
fn bad_adaptive_settings_are_typed_errors() {
    let x = Tensor::from_slice(&[1.0f64]);
    let b = x.zeros_like();
    for o in [
        AdaptiveOptions { tolerance: 0.0, ..AdaptiveOptions::default() },
        AdaptiveOptions { tolerance: f64::NAN, ..AdaptiveOptions::default() },
        AdaptiveOptions { initial_intervals: 0, ..AdaptiveOptions::default() },
        AdaptiveOptions { nodes_per_interval: 0, ..AdaptiveOptions::default() },
        AdaptiveOptions { refine_per_round: 0, ..AdaptiveOptions::default() },
        AdaptiveOptions { max_gradient_evaluations: 7, ..AdaptiveOptions::default() },
        AdaptiveOptions { internal_batch_size: Some(0), ..AdaptiveOptions::default() },
    ] {
        assert!(matches!(
            adaptive_integrated_gradients(steep, &x, &b, &o),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        adaptive_integrated_gradients(
            steep,
            &x,
            &Tensor::from_slice(&[0.0f64, 1.0]),
            &AdaptiveOptions::default()
        ),
        Err(Error::ShapeMismatch { .. })
    ));
}
