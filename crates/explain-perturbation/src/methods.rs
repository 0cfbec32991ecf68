//! The perturbation methods, each a function of a [`Game`]:
//!
//! * [`feature_ablation`]: `φ_i = v(N) − v(N ∖ {i})` (leave-one-out when features are tokens;
//!   occlusion when they are sliding windows; Zeiler & Fergus 2014, arXiv 1311.2901).
//! * [`exact_shapley`]: Shapley values (Shapley 1953) by enumerating all `2ⁿ` coalitions,
//!   `n ≤` [`MAX_EXACT_FEATURES`].
//! * [`shapley_sampling`]: the permutation estimator (Castro et al. 2009; Štrumbelj &
//!   Kononenko 2010), optionally with antithetic (reversed) permutations.
//! * [`kernel_shap`]: KernelSHAP (Lundberg & Lee 2017, arXiv 1705.07874): weighted least
//!   squares under the Shapley kernel with the efficiency constraint imposed exactly.
//! * [`lime`]: LIME (Ribeiro et al. 2016, arXiv 1602.04938) with Captum's defaults: Bernoulli(½)
//!   masks, exponential kernel on the cosine distance to the full input.
//! * [`context_cite`]: ContextCite (Cohen-Wang et al. 2024, arXiv 2409.00729): Bernoulli
//!   keep-masks, LASSO on standardised masks, held-out fit reported.
//!
//! Every function evaluates all the coalitions it needs in one [`Game::values`] call (so a
//! model game runs them in batches), each distinct coalition once.

use explainability_core::{Error, Result, SplitMix64};
use ndarray::{Array1, Array2, ArrayView1, Axis};

use crate::game::{Attribution, Game, SurrogateFit, check_lengths, unique_values};
use crate::solve::{lasso, r_squared, weighted_least_squares};

/// The most features [`exact_shapley`] enumerates (`2¹²` = 4096 coalitions).
pub const MAX_EXACT_FEATURES: usize = 12;

fn no_features(method: &str) -> Error {
    Error::invalid_argument(format!("{method}: the game has no features"))
}

fn full(n: usize) -> Vec<bool> {
    vec![true; n]
}

/// Feature ablation: `φ_i = v(N) − v(N ∖ {i})` per output. `n + 1` coalitions.
///
/// # Errors
/// [`Error::InvalidArgument`] for a game without features; the game's errors.
pub fn feature_ablation(game: &mut dyn Game) -> Result<Attribution> {
    let n = game.n_features();
    if n == 0 {
        return Err(no_features("feature_ablation"));
    }
    let mut coalitions = vec![full(n)];
    for i in 0..n {
        let mut c = full(n);
        c[i] = false;
        coalitions.push(c);
    }
    let (v, distinct) = unique_values(game, &coalitions)?;
    let mut scores = Array2::zeros((v.ncols(), n));
    for i in 0..n {
        let drop = &v.row(0) - &v.row(i + 1);
        scores.column_mut(i).assign(&drop);
    }
    Ok(Attribution { scores, coalitions: distinct, surrogate: None })
}

/// The coalition of the set bits of `mask`.
fn coalition_of(mask: usize, n: usize) -> Vec<bool> {
    (0..n).map(|i| mask >> i & 1 == 1).collect()
}

/// Exact Shapley values `φ_i = Σ_{S ⊆ N∖i} |S|!(n−|S|−1)!/n! · (v(S ∪ i) − v(S))`, all `2ⁿ`
/// coalitions evaluated once each.
///
/// # Errors
/// [`Error::TooManyFeatures`] beyond [`MAX_EXACT_FEATURES`]; [`Error::InvalidArgument`] for
/// no features; the game's errors.
pub fn exact_shapley(game: &mut dyn Game) -> Result<Attribution> {
    let n = game.n_features();
    if n == 0 {
        return Err(no_features("shapley_exact"));
    }
    if n > MAX_EXACT_FEATURES {
        return Err(Error::TooManyFeatures {
            method: "shapley_exact".into(),
            n_features: n,
            max: MAX_EXACT_FEATURES,
        });
    }
    let coalitions: Vec<Vec<bool>> = (0..1usize << n).map(|m| coalition_of(m, n)).collect();
    let (v, distinct) = unique_values(game, &coalitions)?;
    // weight of a coalition of size s not containing i: s!(n−s−1)!/n! = 1/(n·C(n−1, s))
    let weight: Vec<f64> = (0..n).map(|s| 1.0 / (n as f64 * binomial(n - 1, s))).collect();
    let mut scores = Array2::zeros((v.ncols(), n));
    for mask in 0..1usize << n {
        let s = mask.count_ones() as usize;
        for i in 0..n {
            if mask >> i & 1 == 0 {
                let gain = &v.row(mask | 1 << i) - &v.row(mask);
                scores.column_mut(i).scaled_add(weight[s], &gain);
            }
        }
    }
    Ok(Attribution { scores, coalitions: distinct, surrogate: None })
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, j| acc * (n - j) as f64 / (j + 1) as f64)
}

/// A uniformly random permutation of `0..n` (Fisher–Yates).
fn permutation(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// Shapley value sampling: the mean marginal contribution of each feature over `permutations`
/// random orders, each order adding features one by one to the empty coalition (Captum's
/// `ShapleyValueSampling`). With `antithetic`, every second order is the reverse of the one
/// before (a variance reduction). Each order's contributions sum to `v(N) − v(∅)`, so the
/// estimate satisfies efficiency exactly. At most `permutations · (n − 1) + 2` coalitions.
///
/// # Errors
/// [`Error::NoSamples`] for zero permutations; as [`feature_ablation`].
pub fn shapley_sampling(
    game: &mut dyn Game,
    permutations: usize,
    antithetic: bool,
    seed: u64,
) -> Result<Attribution> {
    let n = game.n_features();
    if permutations == 0 {
        return Err(Error::NoSamples {
            method: "shapley_sampling".into(),
            parameter: "permutations".into(),
        });
    }
    if n == 0 {
        return Err(no_features("shapley_sampling"));
    }
    let mut rng = SplitMix64::new(seed);
    let mut orders: Vec<Vec<usize>> = Vec::with_capacity(permutations);
    while orders.len() < permutations {
        let p = permutation(n, &mut rng);
        if antithetic && orders.len() + 1 < permutations {
            let mut reversed = p.clone();
            reversed.reverse();
            orders.push(p);
            orders.push(reversed);
        } else {
            orders.push(p);
        }
    }
    let mut coalitions = Vec::with_capacity(permutations * (n + 1));
    for order in &orders {
        let mut c = vec![false; n];
        coalitions.push(c.clone());
        for &i in order {
            c[i] = true;
            coalitions.push(c.clone());
        }
    }
    let (v, distinct) = unique_values(game, &coalitions)?;
    let mut scores = Array2::zeros((v.ncols(), n));
    for (k, order) in orders.iter().enumerate() {
        let base = k * (n + 1);
        for (step, &i) in order.iter().enumerate() {
            let gain = &v.row(base + step + 1) - &v.row(base + step);
            scores.column_mut(i).scaled_add(1.0, &gain);
        }
    }
    scores /= orders.len() as f64;
    Ok(Attribution { scores, coalitions: distinct, surrogate: None })
}

/// The Shapley kernel weight of a coalition of `s` of `n` features:
/// `(n − 1) / (C(n, s) · s · (n − s))` (infinite for `s ∈ {0, n}`, which the efficiency
/// constraint handles).
pub fn shapley_kernel(n: usize, s: usize) -> f64 {
    if s == 0 || s >= n {
        return f64::INFINITY;
    }
    (n - 1) as f64 / (binomial(n, s) * s as f64 * (n - s) as f64)
}

/// KernelSHAP with `samples` coalitions. When `samples ≥ 2ⁿ − 2` every proper coalition is
/// enumerated with its exact Shapley-kernel weight, and the result is exactly the Shapley
/// values (Lundberg & Lee 2017, Theorem 2); otherwise coalition sizes are drawn with
/// probability `∝ 1/(s(n − s))`, members uniformly, each sample weighted 1 (the kernel
/// sampled, as the SHAP package and Captum do). See [`kernel_shap_with`].
///
/// # Errors
/// [`Error::NoSamples`] for zero samples; as [`kernel_shap_with`].
pub fn kernel_shap(game: &mut dyn Game, samples: usize, seed: u64) -> Result<Attribution> {
    let n = game.n_features();
    if samples == 0 {
        return Err(Error::NoSamples { method: "kernel_shap".into(), parameter: "samples".into() });
    }
    if n == 0 {
        return Err(no_features("kernel_shap"));
    }
    if n < usize::BITS as usize - 1 && samples >= (1usize << n).saturating_sub(2) {
        let coalitions: Vec<Vec<bool>> =
            (1..(1usize << n) - 1).map(|m| coalition_of(m, n)).collect();
        let weights: Vec<f64> = coalitions
            .iter()
            .map(|c| shapley_kernel(n, c.iter().filter(|&&b| b).count()))
            .collect();
        return kernel_shap_with(game, &coalitions, &weights);
    }
    let mut rng = SplitMix64::new(seed);
    let size_weight: Vec<f64> = (1..n).map(|s| 1.0 / (s * (n - s)) as f64).collect();
    let total: f64 = size_weight.iter().sum();
    let mut coalitions = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut u = rng.uniform() * total;
        let mut size = n - 1;
        for (k, w) in size_weight.iter().enumerate() {
            if u < *w {
                size = k + 1;
                break;
            }
            u -= w;
        }
        let order = permutation(n, &mut rng);
        let mut c = vec![false; n];
        for &i in &order[..size] {
            c[i] = true;
        }
        coalitions.push(c);
    }
    kernel_shap_with(game, &coalitions, &vec![1.0; samples])
}

/// KernelSHAP on given coalitions and weights: with `φ₀ = v(∅)` and `Δ = v(N) − v(∅)`,
/// minimises `Σ_z w_z (v(z) − φ₀ − Σ_i z_i φ_i)²` subject to `Σ_i φ_i = Δ`, by eliminating
/// the last feature (`φ_n = Δ − Σ_{i<n} φ_i`) and solving the remaining weighted least
/// squares. `v(∅)` and `v(N)` are always evaluated.
///
/// # Errors
/// [`Error::MaskLength`] for a coalition of the wrong length; [`Error::InvalidArgument`] for
/// a weight per coalition missing, negative weights or no features; the game's errors.
pub fn kernel_shap_with(
    game: &mut dyn Game,
    coalitions: &[Vec<bool>],
    weights: &[f64],
) -> Result<Attribution> {
    let n = game.n_features();
    if n == 0 {
        return Err(no_features("kernel_shap"));
    }
    check_lengths(coalitions, n)?;
    if weights.len() != coalitions.len() {
        return Err(Error::invalid_argument(format!(
            "kernel_shap: {} weights for {} coalitions",
            weights.len(),
            coalitions.len()
        )));
    }
    let mut all = vec![vec![false; n], full(n)];
    all.extend_from_slice(coalitions);
    let (v, distinct) = unique_values(game, &all)?;
    let outputs = v.ncols();
    let mut scores = Array2::zeros((outputs, n));
    let mut intercept = Vec::with_capacity(outputs);
    let m = coalitions.len();
    let z = |r: usize, i: usize| f64::from(u8::from(coalitions[r][i]));
    let x = Array2::from_shape_fn((m, n - 1), |(r, i)| z(r, i) - z(r, n - 1));
    let w = Array1::from(weights.to_vec());
    let mut train_r2 = f64::NAN;
    for o in 0..outputs {
        let empty = v[[0, o]];
        let delta = v[[1, o]] - empty;
        if n == 1 {
            scores[[o, 0]] = delta;
            intercept.push(empty);
            continue;
        }
        let y = Array1::from_shape_fn(m, |r| v[[r + 2, o]] - empty - z(r, n - 1) * delta);
        let fit = if m == 0 {
            None
        } else {
            Some(weighted_least_squares(x.view(), y.view(), w.view(), false)?)
        };
        let coef = fit.as_ref().map_or_else(|| Array1::zeros(n - 1), |f| f.coef.clone());
        let last = delta - coef.sum();
        for i in 0..n - 1 {
            scores[[o, i]] = coef[i];
        }
        scores[[o, n - 1]] = last;
        intercept.push(empty);
        if o == 0 && m > 0 {
            let predicted = Array1::from_shape_fn(m, |r| {
                empty + (0..n).map(|i| z(r, i) * scores[[0, i]]).sum::<f64>()
            });
            let actual = v.column(0).slice(ndarray::s![2..]).to_owned();
            train_r2 = r_squared(actual.view(), predicted.view(), w.view()).unwrap_or(f64::NAN);
        }
    }
    let surrogate = SurrogateFit {
        intercept,
        train_r2,
        heldout_r2: None,
        heldout_spearman: None,
        heldout_samples: 0,
    };
    Ok(Attribution { scores, coalitions: distinct, surrogate: Some(surrogate) })
}

/// Bernoulli keep-masks: each feature kept with probability `keep`.
fn bernoulli_masks(n: usize, count: usize, keep: f64, rng: &mut SplitMix64) -> Vec<Vec<bool>> {
    (0..count).map(|_| (0..n).map(|_| rng.uniform() < keep).collect()).collect()
}

/// LIME's similarity as Captum computes it by default: `exp(−d² / (2 w²))` with `d` the
/// cosine distance between the all-ones mask and `coalition` (1 for the empty coalition).
pub fn lime_kernel(coalition: &[bool], kernel_width: f64) -> f64 {
    let n = coalition.len() as f64;
    let kept = coalition.iter().filter(|&&b| b).count() as f64;
    let cosine = if kept == 0.0 { 0.0 } else { kept / (n * kept).sqrt() };
    let d = 1.0 - cosine;
    (-(d * d) / (2.0 * kernel_width * kernel_width)).exp()
}

/// LIME with `samples` Bernoulli(½) keep-masks, weighted by [`lime_kernel`], fitted by
/// weighted least squares with an intercept. Captum's `Lime` defaults to a LASSO (α = 0.01)
/// through scikit-learn instead; least squares is the unbiased fit and has no
/// hyperparameter (see [`lime_with`] for given masks).
///
/// # Errors
/// [`Error::NoSamples`] for zero samples; as [`lime_with`].
pub fn lime(
    game: &mut dyn Game,
    samples: usize,
    kernel_width: f64,
    seed: u64,
) -> Result<Attribution> {
    if samples == 0 {
        return Err(Error::NoSamples { method: "lime".into(), parameter: "samples".into() });
    }
    let n = game.n_features();
    let coalitions = bernoulli_masks(n, samples, 0.5, &mut SplitMix64::new(seed));
    lime_with(game, &coalitions, kernel_width)
}

/// LIME on given keep-masks: weighted least squares of the outputs on the masks (with an
/// intercept), weights [`lime_kernel`].
///
/// # Errors
/// [`Error::MaskLength`]; [`Error::InvalidArgument`] for a kernel width that is not
/// positive, no features or no masks; the game's errors.
pub fn lime_with(
    game: &mut dyn Game,
    coalitions: &[Vec<bool>],
    kernel_width: f64,
) -> Result<Attribution> {
    let n = game.n_features();
    if n == 0 {
        return Err(no_features("lime"));
    }
    if coalitions.is_empty() {
        return Err(Error::NoSamples { method: "lime".into(), parameter: "masks".into() });
    }
    if !(kernel_width > 0.0 && kernel_width.is_finite()) {
        return Err(Error::invalid_argument(format!(
            "lime: kernel width {kernel_width} must be positive"
        )));
    }
    check_lengths(coalitions, n)?;
    let (v, distinct) = unique_values(game, coalitions)?;
    let x = masks_matrix(coalitions, n);
    let w = Array1::from_iter(coalitions.iter().map(|c| lime_kernel(c, kernel_width)));
    let mut scores = Array2::zeros((v.ncols(), n));
    let mut intercept = Vec::new();
    let mut train_r2 = f64::NAN;
    for o in 0..v.ncols() {
        let y = v.column(o);
        let fit = weighted_least_squares(x.view(), y, w.view(), true)?;
        scores.row_mut(o).assign(&fit.coef);
        intercept.push(fit.intercept);
        if o == 0 {
            train_r2 = r_squared(y, fit.predict(x.view()).view(), w.view()).unwrap_or(f64::NAN);
        }
    }
    let surrogate = SurrogateFit {
        intercept,
        train_r2,
        heldout_r2: None,
        heldout_spearman: None,
        heldout_samples: 0,
    };
    Ok(Attribution { scores, coalitions: distinct, surrogate: Some(surrogate) })
}

fn masks_matrix(coalitions: &[Vec<bool>], n: usize) -> Array2<f64> {
    Array2::from_shape_fn((coalitions.len(), n), |(r, i)| f64::from(u8::from(coalitions[r][i])))
}

/// Settings of [`context_cite`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContextCiteOptions {
    /// Random ablations (ContextCite's default 64; raise above the number of features for
    /// per-token use on short prompts).
    pub ablations: usize,
    /// Probability that a feature is kept in a mask (ContextCite: ½).
    pub keep_probability: f64,
    /// LASSO α on standardised masks (ContextCite: 0.01).
    pub alpha: f64,
    /// Fraction of the ablations held out to measure the surrogate's fit (0: none).
    pub holdout_fraction: f64,
    /// Seed of the masks.
    pub seed: u64,
}

impl Default for ContextCiteOptions {
    fn default() -> Self {
        Self { ablations: 64, keep_probability: 0.5, alpha: 0.01, holdout_fraction: 0.2, seed: 0 }
    }
}

/// LASSO of `y` on masks standardised column-wise (scikit-learn's `StandardScaler`), with the
/// coefficients mapped back to mask units, as ContextCite's `LassoRegression` does.
fn standardised_lasso(
    x: &Array2<f64>,
    y: ArrayView1<'_, f64>,
    alpha: f64,
) -> Result<(f64, Array1<f64>)> {
    let mean = x.mean_axis(Axis(0)).ok_or_else(|| Error::invalid_argument("no samples"))?;
    let std = x.std_axis(Axis(0), 0.0).mapv(|s| if s > 0.0 { s } else { 1.0 });
    let scaled = (x - &mean.view().insert_axis(Axis(0))) / std.view().insert_axis(Axis(0));
    let fit = lasso(scaled.view(), y, Array1::ones(y.len()).view(), alpha, 10_000, 1e-10)?;
    let coef = &fit.coef / &std;
    let intercept = fit.intercept - mean.dot(&coef);
    Ok((intercept, coef))
}

/// ContextCite-style surrogate: `ablations` Bernoulli keep-masks over the features, a LASSO
/// of each output on the (standardised) masks; the weights are the attributions. The first
/// `⌈holdout_fraction · ablations⌉` masks are held out of a first fit to report its R² and
/// Spearman correlation (ContextCite's linear datamodeling score) on them; the returned
/// weights are then fitted on all masks.
///
/// # Errors
/// [`Error::NoSamples`] for zero ablations; [`Error::InvalidArgument`] for a keep
/// probability outside (0, 1), a holdout fraction outside [0, 1) or no features; the game's
/// errors.
pub fn context_cite(game: &mut dyn Game, options: &ContextCiteOptions) -> Result<Attribution> {
    let n = game.n_features();
    if options.ablations == 0 {
        return Err(Error::NoSamples {
            method: "context_cite".into(),
            parameter: "ablations".into(),
        });
    }
    if n == 0 {
        return Err(no_features("context_cite"));
    }
    if !(options.keep_probability > 0.0 && options.keep_probability < 1.0) {
        return Err(Error::invalid_argument("context_cite: keep probability must lie in (0, 1)"));
    }
    if !(0.0..1.0).contains(&options.holdout_fraction) {
        return Err(Error::invalid_argument("context_cite: holdout fraction must lie in [0, 1)"));
    }
    let mut rng = SplitMix64::new(options.seed);
    let coalitions = bernoulli_masks(n, options.ablations, options.keep_probability, &mut rng);
    let (v, distinct) = unique_values(game, &coalitions)?;
    let x = masks_matrix(&coalitions, n);
    let m = coalitions.len();
    let held = ((options.holdout_fraction * m as f64).ceil() as usize).min(m);
    let (mut heldout_r2, mut heldout_spearman) = (None, None);
    if held >= 2 && m - held >= 2 {
        let train_x = x.slice(ndarray::s![held.., ..]).to_owned();
        let train_y = v.slice(ndarray::s![held.., 0]);
        let (b, c) = standardised_lasso(&train_x, train_y, options.alpha)?;
        let test_x = x.slice(ndarray::s![..held, ..]);
        let predicted = test_x.dot(&c) + b;
        let actual = v.slice(ndarray::s![..held, 0]);
        heldout_r2 = r_squared(actual, predicted.view(), Array1::ones(held).view());
        heldout_spearman = explainability_core::spearman(&actual.to_vec(), &predicted.to_vec());
    }
    let mut scores = Array2::zeros((v.ncols(), n));
    let mut intercept = Vec::new();
    let mut train_r2 = f64::NAN;
    for o in 0..v.ncols() {
        let (b, c) = standardised_lasso(&x, v.column(o), options.alpha)?;
        if o == 0 {
            let predicted = x.dot(&c) + b;
            train_r2 = r_squared(v.column(0), predicted.view(), Array1::ones(m).view())
                .unwrap_or(f64::NAN);
        }
        scores.row_mut(o).assign(&c);
        intercept.push(b);
    }
    let surrogate =
        SurrogateFit { intercept, train_r2, heldout_r2, heldout_spearman, heldout_samples: held };
    Ok(Attribution { scores, coalitions: distinct, surrogate: Some(surrogate) })
}
