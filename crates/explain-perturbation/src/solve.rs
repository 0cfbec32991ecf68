//! The small linear solvers the surrogate methods need: weighted least squares (KernelSHAP,
//! LIME) and LASSO by coordinate descent (ContextCite), both in f64.
//!
//! Problems here have at most a few hundred columns, so normal equations solved by Cholesky
//! are fast and, in f64, accurate enough; a relative ridge of [`RIDGE`] keeps them positive
//! definite when a feature never varies in the samples (the ridge limit of least squares is
//! its minimum-norm solution, which is what `numpy.linalg.lstsq` returns there).
//! linfa's solvers were considered and not used: they pull in BLAS/LAPACK bindings for
//! problems of this size, and neither takes sample weights in its LASSO.

use explainability_core::{Error, Result};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

/// Ridge added to the normal equations, relative to their mean diagonal.
pub const RIDGE: f64 = 1e-10;

/// A fitted linear model `y ≈ intercept + x · coef`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearFit {
    /// Intercept (0 when fitted without one).
    pub intercept: f64,
    /// One coefficient per column.
    pub coef: Array1<f64>,
}

impl LinearFit {
    /// Predictions for the rows of `x`.
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Array1<f64> {
        x.dot(&self.coef) + self.intercept
    }
}

fn check(x: ArrayView2<'_, f64>, y: ArrayView1<'_, f64>, w: ArrayView1<'_, f64>) -> Result<()> {
    if x.nrows() != y.len() || w.len() != y.len() {
        return Err(Error::invalid_argument(format!(
            "regression with {} rows, {} targets and {} weights",
            x.nrows(),
            y.len(),
            w.len()
        )));
    }
    if y.is_empty() {
        return Err(Error::invalid_argument("regression on zero samples"));
    }
    if w.iter().any(|&v| !(v >= 0.0 && v.is_finite())) || w.sum() <= 0.0 {
        return Err(Error::invalid_argument("sample weights must be finite, ≥ 0, not all 0"));
    }
    if y.iter().chain(x.iter()).any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "regression data".into(),
            alpha: None,
            hook_point: None,
        });
    }
    Ok(())
}

/// Solves `a · z = b` for symmetric positive definite `a` by Cholesky.
fn cholesky_solve(mut a: Array2<f64>, b: Array1<f64>) -> Result<Array1<f64>> {
    let n = b.len();
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= a[[j, k]] * a[[j, k]];
        }
        if d.is_nan() || d <= 0.0 {
            return Err(Error::invalid_argument(
                "normal equations are not positive definite (degenerate samples)",
            ));
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..n {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= a[[i, k]] * a[[j, k]];
            }
            a[[i, j]] = s / d;
        }
    }
    let mut z = b;
    for i in 0..n {
        let mut s = z[i];
        for k in 0..i {
            s -= a[[i, k]] * z[k];
        }
        z[i] = s / a[[i, i]];
    }
    for i in (0..n).rev() {
        let mut s = z[i];
        for k in i + 1..n {
            s -= a[[k, i]] * z[k];
        }
        z[i] = s / a[[i, i]];
    }
    Ok(z)
}

/// Weighted least squares: minimises `Σ_r w_r (y_r − b − x_r · c)²` (`b = 0` without
/// `intercept`).
///
/// # Errors
/// [`Error::InvalidArgument`] for mismatched lengths, no samples or bad weights;
/// [`Error::NonFinite`] for NaN or infinite data.
pub fn weighted_least_squares(
    x: ArrayView2<'_, f64>,
    y: ArrayView1<'_, f64>,
    w: ArrayView1<'_, f64>,
    intercept: bool,
) -> Result<LinearFit> {
    check(x, y, w)?;
    let total = w.sum();
    // Centre on the weighted means: the intercept drops out and the system is better
    // conditioned.
    let (x_mean, y_mean) = if intercept {
        let xm = x.t().dot(&w) / total;
        (xm, w.dot(&y) / total)
    } else {
        (Array1::zeros(x.ncols()), 0.0)
    };
    let xc = &x - &x_mean.view().insert_axis(Axis(0));
    let yc = &y - y_mean;
    let xw = &xc * &w.view().insert_axis(Axis(1));
    let mut a = xw.t().dot(&xc);
    let b = xw.t().dot(&yc);
    let p = a.nrows();
    if p == 0 {
        return Ok(LinearFit { intercept: y_mean, coef: Array1::zeros(0) });
    }
    let scale = (a.diag().sum() / p as f64).max(f64::MIN_POSITIVE);
    for j in 0..p {
        a[[j, j]] += RIDGE * scale;
    }
    let coef = cholesky_solve(a, b)?;
    Ok(LinearFit { intercept: y_mean - x_mean.dot(&coef), coef })
}

/// LASSO by cyclic coordinate descent, with scikit-learn's objective
/// `1/(2 Σw) Σ_r w_r (y_r − b − x_r · c)² + α ‖c‖₁` (unit weights: `1/(2n)`), intercept
/// fitted by centring.
///
/// Stops when no coefficient moves by more than `tol` times the largest coefficient (or after
/// `max_iter` sweeps).
///
/// # Errors
/// As [`weighted_least_squares`]; [`Error::InvalidArgument`] for a negative `alpha`.
pub fn lasso(
    x: ArrayView2<'_, f64>,
    y: ArrayView1<'_, f64>,
    w: ArrayView1<'_, f64>,
    alpha: f64,
    max_iter: usize,
    tol: f64,
) -> Result<LinearFit> {
    check(x, y, w)?;
    if !(alpha >= 0.0 && alpha.is_finite()) {
        return Err(Error::invalid_argument(format!("LASSO alpha {alpha} must be finite and ≥ 0")));
    }
    let total = w.sum();
    let w = &w / total; // weights summing to 1: the objective's 1/(Σw)
    let x_mean = x.t().dot(&w);
    let y_mean = w.dot(&y);
    let xc = &x - &x_mean.view().insert_axis(Axis(0));
    let mut residual = &y - y_mean;
    let p = x.ncols();
    // Σ_r w_r x_rj²: the curvature of coordinate j
    let curvature: Vec<f64> = (0..p).map(|j| (&xc.column(j) * &xc.column(j)).dot(&w)).collect();
    let mut coef = Array1::<f64>::zeros(p);
    for _ in 0..max_iter {
        let mut largest_step: f64 = 0.0;
        for j in 0..p {
            if curvature[j] <= 0.0 {
                continue;
            }
            let column = xc.column(j);
            let old = coef[j];
            // ρ = Σ w x_j (r + x_j c_j)
            let rho = (&column * &w).dot(&residual) + curvature[j] * old;
            let new = soft_threshold(rho, alpha) / curvature[j];
            if new != old {
                residual.scaled_add(old - new, &column);
                coef[j] = new;
                largest_step = largest_step.max((new - old).abs());
            }
        }
        let largest = coef.iter().fold(0.0f64, |m, c| m.max(c.abs()));
        if largest_step <= tol * largest.max(f64::MIN_POSITIVE) || largest == 0.0 {
            break;
        }
    }
    Ok(LinearFit { intercept: y_mean - x_mean.dot(&coef), coef })
}

fn soft_threshold(z: f64, gamma: f64) -> f64 {
    if z > gamma {
        z - gamma
    } else if z < -gamma {
        z + gamma
    } else {
        0.0
    }
}

/// Weighted coefficient of determination `1 − SS_res / SS_tot` (`None` when `y` is constant).
pub fn r_squared(
    y: ArrayView1<'_, f64>,
    predicted: ArrayView1<'_, f64>,
    w: ArrayView1<'_, f64>,
) -> Option<f64> {
    let total = w.sum();
    if total <= 0.0 {
        return None;
    }
    let mean = w.dot(&y) / total;
    let ss_tot: f64 = y.iter().zip(w).map(|(v, w)| w * (v - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(predicted).zip(w).map(|((v, p), w)| w * (v - p).powi(2)).sum();
    (ss_tot > 0.0).then(|| 1.0 - ss_res / ss_tot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    #[test]
    fn least_squares_recovers_an_exact_linear_model() {
        let x = array![[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 3.0], [0.5, -1.0]];
        let y = x.dot(&array![3.0, -1.0]) + 2.0;
        let w = array![1.0, 2.0, 0.5, 1.0, 3.0];
        let fit = weighted_least_squares(x.view(), y.view(), w.view(), true).unwrap();
        // exact data: any weights give the generating coefficients (up to the 1e-10 ridge)
        assert_abs_diff_eq!(fit.intercept, 2.0, epsilon = 1e-8);
        assert_abs_diff_eq!(fit.coef[0], 3.0, epsilon = 1e-8);
        assert_abs_diff_eq!(fit.coef[1], -1.0, epsilon = 1e-8);
    }

    #[test]
    fn weighted_simple_regression_matches_its_closed_form() {
        // slope = Σw(x−x̄)(y−ȳ) / Σw(x−x̄)², weighted means
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0];
        let ys = [1.0, 2.5, 2.0, 4.5, 4.0];
        let ws = [1.0, 0.5, 2.0, 1.0, 0.25];
        let sw: f64 = ws.iter().sum();
        let xm = xs.iter().zip(&ws).map(|(x, w)| x * w).sum::<f64>() / sw;
        let ym = ys.iter().zip(&ws).map(|(y, w)| y * w).sum::<f64>() / sw;
        let sxy: f64 = (0..5).map(|i| ws[i] * (xs[i] - xm) * (ys[i] - ym)).sum();
        let sxx: f64 = (0..5).map(|i| ws[i] * (xs[i] - xm).powi(2)).sum();
        let slope = sxy / sxx;
        let x = Array2::from_shape_vec((5, 1), xs.to_vec()).unwrap();
        let fit = weighted_least_squares(
            x.view(),
            Array1::from(ys.to_vec()).view(),
            Array1::from(ws.to_vec()).view(),
            true,
        )
        .unwrap();
        assert_abs_diff_eq!(fit.coef[0], slope, epsilon = 1e-9);
        assert_abs_diff_eq!(fit.intercept, ym - slope * xm, epsilon = 1e-9);
    }

    #[test]
    fn a_constant_column_gets_the_minimum_norm_coefficient() {
        let x = array![[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]];
        let y = array![1.0, 3.0, 5.0];
        let w = Array1::ones(3);
        let fit = weighted_least_squares(x.view(), y.view(), w.view(), true).unwrap();
        assert_abs_diff_eq!(fit.coef[0], 0.0, epsilon = 1e-6);
        assert_abs_diff_eq!(fit.coef[1], 2.0, epsilon = 1e-6);
    }

    #[test]
    fn lasso_on_an_orthogonal_design_soft_thresholds_least_squares() {
        // A 2³ factorial ±1 design: centred, orthogonal columns with Σx²/n = 1, so the LASSO
        // solution is S(xᵀy/n, α) per coordinate (closed form).
        let mut rows = Vec::new();
        for r in 0..8 {
            for j in 0..3 {
                rows.push(if r >> j & 1 == 1 { 1.0 } else { -1.0 });
            }
        }
        let x = Array2::from_shape_vec((8, 3), rows).unwrap();
        let y = x.dot(&array![2.0, -0.3, 0.05]) + array![0.1, -0.2, 0.0, 0.3, -0.1, 0.0, 0.2, -0.3];
        let w = Array1::ones(8);
        let alpha = 0.1;
        let fit = lasso(x.view(), y.view(), w.view(), alpha, 1000, 1e-12).unwrap();
        let ym = y.mean().unwrap();
        for j in 0..3 {
            let ols = x.column(j).dot(&y) / 8.0;
            assert_abs_diff_eq!(fit.coef[j], soft_threshold(ols, alpha), epsilon = 1e-12);
        }
        assert_abs_diff_eq!(fit.coef[2], 0.0);
        assert_abs_diff_eq!(fit.intercept, ym, epsilon = 1e-12);
        // α = 0 is least squares
        let ls = lasso(x.view(), y.view(), w.view(), 0.0, 1000, 1e-14).unwrap();
        let wls = weighted_least_squares(x.view(), y.view(), w.view(), true).unwrap();
        for j in 0..3 {
            assert_abs_diff_eq!(ls.coef[j], wls.coef[j], epsilon = 1e-8);
        }
    }

    #[test]
    fn bad_regressions_are_typed_errors() {
        let x = array![[1.0], [2.0]];
        let y = array![1.0];
        let w = array![1.0, 1.0];
        assert!(matches!(
            weighted_least_squares(x.view(), y.view(), w.view(), true),
            Err(Error::InvalidArgument { .. })
        ));
        let y = array![1.0, f64::NAN];
        assert!(matches!(
            weighted_least_squares(x.view(), y.view(), w.view(), true),
            Err(Error::NonFinite { .. })
        ));
        let y = array![1.0, 2.0];
        assert!(matches!(
            lasso(x.view(), y.view(), w.view(), -1.0, 10, 1e-9),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(r_squared(y.view(), y.view(), w.view()), Some(1.0));
    }
}
