//! The exact integrated-gradients anchors of REFERENCES.md on analytic functions in f64:
//! completeness, `Σ c_i x_i²`, `x1·x2` symmetry, ignored inputs, baseline = input, sign flip,
//! implementation invariance, trapezoid exactness, and chunking invariance (proptest).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use approx::assert_relative_eq;
use explain_gradients::{PathOptions, QuadratureRule, path_integrated_gradients};
use explainability_core::{Error, Result};
use tch::{Kind, Tensor};

const RULES: [QuadratureRule; 5] = [
    QuadratureRule::LeftRiemann,
    QuadratureRule::RightRiemann,
    QuadratureRule::MiddleRiemann,
    QuadratureRule::Trapezoid,
    QuadratureRule::GaussLegendre,
];

fn t(values: &[f64]) -> Tensor {
    Tensor::from_slice(values)
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn opts(rule: QuadratureRule, n_steps: usize) -> PathOptions {
    PathOptions { rule, n_steps, internal_batch_size: None }
}

/// F(x) = Σ c_i x_i² on rows of [n, 3].
fn quadratic(p: &Tensor) -> Result<Tensor> {
    let c = t(&[1.0, -2.0, 0.5]);
    Ok(p.f_square()?.f_mul(&c)?.f_sum_dim_intlist(1, false, Kind::Double)?)
}

#[test]
fn linear_model_is_exactly_complete_for_every_rule() {
    let w = t(&[0.3, -1.2, 2.0, 0.0]);
    let f = |p: &Tensor| Ok(p.f_mul(&w)?.f_sum_dim_intlist(1, false, Kind::Double)?);
    let x = t(&[1.0, 2.0, -3.0, 4.0]);
    let base = t(&[0.5, 0.0, 1.0, -1.0]);
    for rule in RULES {
        let r = path_integrated_gradients(f, &x, &base, &opts(rule, 7)).unwrap();
        // Constant gradient: every rule whose weights sum to 1 is exact up to round-off.
        assert!(r.convergence_delta.abs() < 1e-12, "{rule:?}: {}", r.convergence_delta);
        let expected = [0.3 * 0.5, -1.2 * 2.0, 2.0 * -4.0, 0.0];
        for (a, e) in values(&r.attributions).iter().zip(expected) {
            assert_relative_eq!(*a, e, epsilon = 1e-12);
        }
        assert_eq!(r.gradient_evaluations, 7);
    }
}

#[test]
fn quadratic_attributions_are_exact_with_gauss_legendre() {
    let x = t(&[1.5, -2.0, 3.0]);
    let base = t(&[0.5, 1.0, -1.0]);
    // The integrand is linear in α, so 1-point GL (the midpoint) is already exact; the true
    // trapezoid rule too.
    for (rule, m) in [
        (QuadratureRule::GaussLegendre, 1),
        (QuadratureRule::GaussLegendre, 50),
        (QuadratureRule::Trapezoid, 2),
        (QuadratureRule::MiddleRiemann, 1),
    ] {
        let r = path_integrated_gradients(quadratic, &x, &base, &opts(rule, m)).unwrap();
        let expected = [1.0 * (2.25 - 0.25), -2.0 * (4.0 - 1.0), 0.5 * (9.0 - 1.0)];
        for (a, e) in values(&r.attributions).iter().zip(expected) {
            assert_relative_eq!(*a, e, epsilon = 1e-12);
        }
        assert!(r.convergence_delta.abs() < 1e-12);
    }
    // Left Riemann is biased on this integrand; the delta reports it.
    let r = path_integrated_gradients(quadratic, &x, &base, &opts(QuadratureRule::LeftRiemann, 4))
        .unwrap();
    assert!(r.convergence_delta.abs() > 1e-3);
}

#[test]
fn product_splits_symmetrically_and_ignored_input_gets_zero() {
    // F = x1·x2 (x3 ignored), baseline 0 → x1·x2/2 each, 0 for x3.
    let f = |p: &Tensor| Ok(p.f_select(1, 0)?.f_mul(&p.f_select(1, 1)?)?);
    let x = t(&[2.0, 5.0, 7.0]);
    let r =
        path_integrated_gradients(f, &x, &x.zeros_like(), &opts(QuadratureRule::GaussLegendre, 3))
            .unwrap();
    let a = values(&r.attributions);
    assert_relative_eq!(a[0], 5.0, epsilon = 1e-12);
    assert_relative_eq!(a[1], 5.0, epsilon = 1e-12);
    assert_eq!(a[2], 0.0);
    assert_relative_eq!(r.f_input, 10.0, epsilon = 1e-12);
    assert_eq!(r.f_baseline, 0.0);
}

#[test]
fn baseline_equal_to_input_gives_zero_and_swapping_flips_the_sign() {
    let f = |p: &Tensor| Ok(p.f_sin()?.f_sum_dim_intlist(1, false, Kind::Double)?.f_exp()?);
    let x = t(&[0.4, -1.3, 2.2]);
    let base = t(&[-0.7, 0.9, 0.1]);
    let same = path_integrated_gradients(f, &x, &x, &PathOptions::default()).unwrap();
    assert!(values(&same.attributions).iter().all(|&a| a == 0.0));
    assert_eq!(same.convergence_delta, 0.0);
    for rule in
        [QuadratureRule::GaussLegendre, QuadratureRule::MiddleRiemann, QuadratureRule::Trapezoid]
    {
        let fwd = path_integrated_gradients(f, &x, &base, &opts(rule, 16)).unwrap();
        let back = path_integrated_gradients(f, &base, &x, &opts(rule, 16)).unwrap();
        for (a, b) in values(&fwd.attributions).iter().zip(values(&back.attributions)) {
            // Symmetric rules: the reversed path visits the same points with the same weights.
            assert_relative_eq!(*a, -b, epsilon = 1e-12);
        }
        assert_relative_eq!(fwd.convergence_delta, -back.convergence_delta, epsilon = 1e-12);
    }
}

#[test]
fn functionally_identical_networks_get_identical_attributions() {
    // (a + b)² written two ways.
    let f1 = |p: &Tensor| Ok(p.f_sum_dim_intlist(1, false, Kind::Double)?.f_square()?);
    let f2 = |p: &Tensor| {
        let a = p.f_select(1, 0)?;
        let b = p.f_select(1, 1)?;
        Ok(a.f_square()?.f_add(&b.f_square()?)?.f_add(&a.f_mul(&b)?.f_mul_scalar(2.0)?)?)
    };
    let x = t(&[1.2, -0.4]);
    let base = t(&[0.0, 0.3]);
    let r1 = path_integrated_gradients(f1, &x, &base, &PathOptions::default()).unwrap();
    let r2 = path_integrated_gradients(f2, &x, &base, &PathOptions::default()).unwrap();
    for (a, b) in values(&r1.attributions).iter().zip(values(&r2.attributions)) {
        assert_relative_eq!(*a, b, epsilon = 1e-12);
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let x = t(&[1.0, 2.0]);
    assert!(matches!(
        path_integrated_gradients(quadratic, &x, &t(&[1.0]), &PathOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    let o = PathOptions { n_steps: 0, ..PathOptions::default() };
    assert!(matches!(
        path_integrated_gradients(quadratic, &x, &x, &o),
        Err(Error::InvalidArgument { .. })
    ));
    let o = PathOptions { internal_batch_size: Some(0), ..PathOptions::default() };
    assert!(matches!(
        path_integrated_gradients(quadratic, &x, &x, &o),
        Err(Error::InvalidArgument { .. })
    ));
    // A function returning one value for the whole batch is rejected.
    let bad = |p: &Tensor| Ok(p.f_sum(Kind::Double)?);
    assert!(matches!(
        path_integrated_gradients(bad, &x, &x.zeros_like(), &PathOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    // Non-finite gradients are reported with the path point, not returned: √ has an infinite
    // derivative at α = 0, the first node of the left Riemann rule.
    let sqrt = |p: &Tensor| Ok(p.f_sqrt()?.f_sum_dim_intlist(1, false, Kind::Double)?);
    let o =
        PathOptions { rule: QuadratureRule::LeftRiemann, n_steps: 4, internal_batch_size: None };
    assert!(matches!(
        path_integrated_gradients(sqrt, &x, &x.zeros_like(), &o),
        Err(Error::NonFinite { alpha: Some(0.0), hook_point: None, .. })
    ));
    // So are non-finite values of F (here ln 0 at the baseline).
    let log = |p: &Tensor| Ok(p.f_log()?.f_sum_dim_intlist(1, false, Kind::Double)?);
    let o = PathOptions { rule: QuadratureRule::MiddleRiemann, ..o };
    assert!(matches!(
        path_integrated_gradients(log, &x, &x.zeros_like(), &o),
        Err(Error::NonFinite { alpha: Some(0.0), .. })
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(32))]
    #[test]
    fn chunking_changes_only_summation_order(
        x in proptest::collection::vec(-2.0f64..2.0, 6),
        base in proptest::collection::vec(-2.0f64..2.0, 6),
        steps in 1usize..40,
        batch in 1usize..50,
        rule in 0usize..5,
    ) {
        let rule = RULES[rule];
        let steps = if rule == QuadratureRule::Trapezoid { steps.max(2) } else { steps };
        let f = |p: &Tensor| {
            let rolled = p.f_roll([1], [2])?;
            Ok(p.f_tanh()?.f_mul(&rolled)?.f_sum_dim_intlist(&[1i64, 2][..], false, Kind::Double)?)
        };
        let (x, base) = (t(&x).view([2, 3]), t(&base).view([2, 3]));
        let whole = path_integrated_gradients(f, &x, &base, &opts(rule, steps)).unwrap();
        let o = PathOptions { rule, n_steps: steps, internal_batch_size: Some(batch) };
        let chunked = path_integrated_gradients(f, &x, &base, &o).unwrap();
        for (a, b) in values(&whole.attributions).iter().zip(values(&chunked.attributions)) {
            proptest::prop_assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()));
        }
        proptest::prop_assert!((whole.convergence_delta - chunked.convergence_delta).abs() < 1e-12);
    }

    #[test]
    fn batch_order_does_not_matter(perm_seed in 0u64..1000) {
        // Swapping the two rows of a 2-row input swaps the attributions row for row.
        let f = |p: &Tensor| Ok(p.f_exp()?.f_prod_dim_int(2, false, Kind::Double)?.f_sum_dim_intlist(1, false, Kind::Double)?);
        let s = (perm_seed as f64) / 1000.0;
        let x = t(&[s, 0.5, -0.2, 1.0 - s]).view([2, 2]);
        let swapped = x.flip([0]);
        let a = path_integrated_gradients(f, &x, &x.zeros_like(), &PathOptions::default()).unwrap();
        let b = path_integrated_gradients(f, &swapped, &x.zeros_like(), &PathOptions::default()).unwrap();
        for (u, v) in values(&a.attributions.flip([0])).iter().zip(values(&b.attributions)) {
            proptest::prop_assert!((u - v).abs() < 1e-12);
        }
    }
}
