//! The methods on analytic set functions, where the right answer is known exactly:
//! exact Shapley against a brute-force average over all n! orders; the efficiency, symmetry
//! and dummy axioms; KernelSHAP equal to exact Shapley values (enumerated kernel: any game;
//! sampled kernel: additive games); LIME and ContextCite recovering additive games; Shapley
//! sampling converging and satisfying efficiency exactly; seeded determinism; typed errors.
//!
//! Tolerances: 1e-9 where both sides are exact f64 sums of a few hundred terms; the
//! regressions carry a 1e-10 relative ridge (see `solve`), so 1e-7 there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::needless_range_loop)]

use approx::assert_abs_diff_eq;
use explain_perturbation::{
    ContextCiteOptions, FnGame, MAX_EXACT_FEATURES, context_cite, exact_shapley, feature_ablation,
    kernel_shap, kernel_shap_with, lime, lime_with, shapley_sampling,
};
use explainability_core::{Error, SplitMix64};
use proptest::prelude::*;

/// A game given by a table of 2ⁿ values indexed by the coalition's bit mask.
fn table_game(table: Vec<f64>, n: usize) -> FnGame<impl FnMut(&[bool]) -> f64> {
    FnGame::new(n, move |s: &[bool]| {
        table[s.iter().enumerate().fold(0, |m, (i, &b)| m | usize::from(b) << i)]
    })
}

fn random_table(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..1usize << n).map(|_| rng.normal()).collect()
}

/// Shapley values as the mean marginal contribution over all n! orders (Heap's algorithm).
fn brute_force(table: &[f64], n: usize) -> Vec<f64> {
    fn heap(k: usize, p: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k == 1 {
            out.push(p.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, p, out);
            if k.is_multiple_of(2) { p.swap(i, k - 1) } else { p.swap(0, k - 1) }
        }
    }
    let mut orders = Vec::new();
    heap(n, &mut (0..n).collect(), &mut orders);
    let mut phi = vec![0.0; n];
    for order in &orders {
        let mut m = 0usize;
        for &i in order {
            phi[i] += table[m | 1 << i] - table[m];
            m |= 1 << i;
        }
    }
    phi.iter().map(|p| p / orders.len() as f64).collect()
}

#[test]
fn exact_shapley_equals_the_average_over_all_orders() {
    for n in 1..=6 {
        let table = random_table(n, n as u64);
        let a = exact_shapley(&mut table_game(table.clone(), n)).unwrap();
        let expected = brute_force(&table, n);
        for i in 0..n {
            assert_abs_diff_eq!(a.scores[[0, i]], expected[i], epsilon = 1e-9);
        }
        assert_eq!(a.coalitions, 1 << n);
        // efficiency
        let total: f64 = a.scores.row(0).sum();
        assert_abs_diff_eq!(total, table[(1 << n) - 1] - table[0], epsilon = 1e-9);
    }
}

#[test]
fn symmetry_and_dummy_axioms() {
    // v depends on features 0 and 1 symmetrically, interacts them, ignores feature 3.
    let v = |s: &[bool]| {
        let (a, b, c) =
            (f64::from(u8::from(s[0])), f64::from(u8::from(s[1])), f64::from(u8::from(s[2])));
        3.0 * a * b + a + b - 2.0 * c + a * c + b * c
    };
    let exact = exact_shapley(&mut FnGame::new(4, v)).unwrap();
    assert_abs_diff_eq!(exact.scores[[0, 0]], exact.scores[[0, 1]], epsilon = 1e-12);
    assert_abs_diff_eq!(exact.scores[[0, 3]], 0.0, epsilon = 1e-12);
    // the enumerated kernel gives the same values
    let ks = kernel_shap(&mut FnGame::new(4, v), 14, 0).unwrap();
    for i in 0..4 {
        assert_abs_diff_eq!(ks.scores[[0, i]], exact.scores[[0, i]], epsilon = 1e-7);
    }
    // the dummy has no marginal contribution in any order
    let sampled = shapley_sampling(&mut FnGame::new(4, v), 10, true, 3).unwrap();
    assert_abs_diff_eq!(sampled.scores[[0, 3]], 0.0, epsilon = 1e-12);
    let loo = feature_ablation(&mut FnGame::new(4, v)).unwrap();
    assert_abs_diff_eq!(loo.scores[[0, 3]], 0.0, epsilon = 1e-12);
}

#[test]
fn feature_ablation_is_the_drop_when_each_feature_is_left_out() {
    let table = random_table(5, 9);
    let full = table[31];
    let a = feature_ablation(&mut table_game(table.clone(), 5)).unwrap();
    for i in 0..5 {
        assert_abs_diff_eq!(a.scores[[0, i]], full - table[31 & !(1 << i)], epsilon = 1e-12);
    }
    assert_eq!(a.coalitions, 6);
}

#[test]
fn kernel_shap_with_every_coalition_is_exact_shapley_on_any_game() {
    for n in 2..=7 {
        let table = random_table(n, 100 + n as u64);
        let exact = exact_shapley(&mut table_game(table.clone(), n)).unwrap();
        let ks = kernel_shap(&mut table_game(table.clone(), n), 1 << n, 0).unwrap();
        for i in 0..n {
            assert_abs_diff_eq!(ks.scores[[0, i]], exact.scores[[0, i]], epsilon = 1e-7);
        }
    }
}

#[test]
fn sampled_kernel_shap_lime_and_context_cite_recover_additive_games() {
    // v(S) = c + Σ_{i∈S} a_i over 16 features: more than exact Shapley allows.
    let n = 16;
    let a: Vec<f64> = (0..n).map(|i| (i as f64 - 7.5) / 3.0).collect();
    let additive =
        |s: &[bool]| 0.7 + s.iter().zip(&a).map(|(&b, x)| if b { *x } else { 0.0 }).sum::<f64>();
    let ks = kernel_shap(&mut FnGame::new(n, additive), 200, 5).unwrap();
    let lm = lime(&mut FnGame::new(n, additive), 200, 1.0, 5).unwrap();
    let options =
        ContextCiteOptions { ablations: 256, alpha: 1e-6, ..ContextCiteOptions::default() };
    let cc = context_cite(&mut FnGame::new(n, additive), &options).unwrap();
    for i in 0..n {
        assert_abs_diff_eq!(ks.scores[[0, i]], a[i], epsilon = 1e-7);
        assert_abs_diff_eq!(lm.scores[[0, i]], a[i], epsilon = 1e-7);
        // LASSO shrinks each standardised coefficient by α: |Δ| ≤ α / std ≈ 2α
        assert_abs_diff_eq!(cc.scores[[0, i]], a[i], epsilon = 1e-4);
    }
    let fit = lm.surrogate.unwrap();
    assert_abs_diff_eq!(fit.intercept[0], 0.7, epsilon = 1e-7);
    assert_abs_diff_eq!(fit.train_r2, 1.0, epsilon = 1e-9);
    let fit = cc.surrogate.unwrap();
    assert_eq!(fit.heldout_samples, 52);
    assert!(fit.heldout_r2.unwrap() > 0.999_99, "{fit:?}");
    assert!(fit.heldout_spearman.unwrap() > 0.99, "{fit:?}"); // ties among repeated masks
    assert!(ks.coalitions <= 202);
}

#[test]
fn context_cite_finds_the_few_sources_that_matter() {
    // Sparse game with an interaction: sources 2 and 5 matter, the rest is noise-free zero.
    let v = |s: &[bool]| {
        let (x, y) = (f64::from(u8::from(s[2])), f64::from(u8::from(s[5])));
        4.0 * x + 2.0 * y + 0.5 * x * y
    };
    let a = context_cite(&mut FnGame::new(10, v), &ContextCiteOptions::default()).unwrap();
    let scores = a.scores.row(0);
    let mut order: Vec<usize> = (0..10).collect();
    order.sort_by(|&i, &j| scores[j].abs().total_cmp(&scores[i].abs()));
    assert_eq!(&order[..2], &[2, 5]);
    for i in [0, 1, 3, 4, 6, 7, 8, 9] {
        assert!(scores[i].abs() < 0.05, "source {i}: {}", scores[i]);
    }
    assert!(a.surrogate.unwrap().heldout_r2.unwrap() > 0.95);
}

#[test]
fn shapley_sampling_is_efficient_seeded_and_converges() {
    let n = 6;
    let table = random_table(n, 42);
    let exact = exact_shapley(&mut table_game(table.clone(), n)).unwrap();
    for antithetic in [false, true] {
        let one = shapley_sampling(&mut table_game(table.clone(), n), 3, antithetic, 1).unwrap();
        assert_abs_diff_eq!(one.scores.row(0).sum(), table[63] - table[0], epsilon = 1e-12);
        let again = shapley_sampling(&mut table_game(table.clone(), n), 3, antithetic, 1).unwrap();
        assert_eq!(one, again, "same seed, same result");
        let other = shapley_sampling(&mut table_game(table.clone(), n), 3, antithetic, 2).unwrap();
        assert_ne!(one.scores, other.scores);
        let many =
            shapley_sampling(&mut table_game(table.clone(), n), 4000, antithetic, 7).unwrap();
        for i in 0..n {
            // standard error of a mean of 4000 marginal contributions of O(1) spread
            assert_abs_diff_eq!(many.scores[[0, i]], exact.scores[[0, i]], epsilon = 0.08);
        }
    }
    // antithetic orders come in reversed pairs: on a game whose marginal contributions depend
    // only on the number of features before (v = f(|S|)), a pair averages out the position.
    let symmetric = |s: &[bool]| (s.iter().filter(|&&b| b).count() as f64).powi(2);
    let pair = shapley_sampling(&mut FnGame::new(4, symmetric), 2, true, 0).unwrap();
    let exact = exact_shapley(&mut FnGame::new(4, symmetric)).unwrap();
    for i in 0..4 {
        assert_abs_diff_eq!(pair.scores[[0, i]], exact.scores[[0, i]], epsilon = 1e-12);
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let v = |s: &[bool]| f64::from(u8::from(s[0]));
    assert!(matches!(
        exact_shapley(&mut FnGame::new(MAX_EXACT_FEATURES + 1, v)),
        Err(Error::TooManyFeatures { n_features: 13, max: 12, .. })
    ));
    assert!(matches!(
        shapley_sampling(&mut FnGame::new(3, v), 0, false, 0),
        Err(Error::NoSamples { .. })
    ));
    assert!(matches!(kernel_shap(&mut FnGame::new(3, v), 0, 0), Err(Error::NoSamples { .. })));
    assert!(matches!(lime(&mut FnGame::new(3, v), 0, 1.0, 0), Err(Error::NoSamples { .. })));
    let zero = ContextCiteOptions { ablations: 0, ..ContextCiteOptions::default() };
    assert!(matches!(context_cite(&mut FnGame::new(3, v), &zero), Err(Error::NoSamples { .. })));
    assert!(matches!(
        kernel_shap_with(
            &mut FnGame::new(3, v),
            &[vec![true, false, true], vec![true]],
            &[1.0, 1.0]
        ),
        Err(Error::MaskLength { index: 1, len: 1, expected: 3 })
    ));
    assert!(matches!(
        lime_with(&mut FnGame::new(3, v), &[vec![true; 4]], 1.0),
        Err(Error::MaskLength { index: 0, len: 4, expected: 3 })
    ));
    assert!(matches!(lime_with(&mut FnGame::new(3, v), &[], 1.0), Err(Error::NoSamples { .. })));
    assert!(matches!(
        lime_with(&mut FnGame::new(3, v), &[vec![true; 3]], 0.0),
        Err(Error::InvalidArgument { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Efficiency and agreement with brute force on random games; KernelSHAP with every
    /// coalition agrees with both.
    #[test]
    fn shapley_axioms_hold_on_random_games(n in 1usize..6, seed in any::<u64>()) {
        let table = random_table(n, seed);
        let exact = exact_shapley(&mut table_game(table.clone(), n)).unwrap();
        let brute = brute_force(&table, n);
        let full = (1usize << n) - 1;
        prop_assert!((exact.scores.row(0).sum() - (table[full] - table[0])).abs() < 1e-9);
        let ks = kernel_shap(&mut table_game(table.clone(), n), 1 << n, 0).unwrap();
        for i in 0..n {
            prop_assert!((exact.scores[[0, i]] - brute[i]).abs() < 1e-9);
            prop_assert!((ks.scores[[0, i]] - brute[i]).abs() < 1e-6);
        }
    }
}
