//! Set functions ("games") over features: what every perturbation method queries.
//!
//! A coalition is a keep-mask over the features (`true`: the feature is present, `false`: it
//! is removed). A [`Game`] returns one or more outputs per coalition; the methods of this
//! crate only ever see a game, so the same code explains a language model ([`ModelGame`]
//! (crate::ModelGame)) and an analytic set function in a test ([`FnGame`]).

use std::collections::HashMap;

use explainability_core::{Error, Result, ndarray::Array2};
use serde::{Deserialize, Serialize};

/// A set function over `n_features` features with `n_outputs` outputs.
pub trait Game {
    /// Number of players (features).
    fn n_features(&self) -> usize;

    /// Number of outputs per coalition (1 for a next-token target).
    fn n_outputs(&self) -> usize {
        1
    }

    /// The outputs of each coalition.
    ///
    /// # Shapes
    /// `coalitions`: keep-masks of `n_features` entries → `[coalitions, n_outputs]`.
    ///
    /// # Errors
    /// [`Error::MaskLength`] for a coalition of the wrong length; the game's own errors.
    fn values(&mut self, coalitions: &[Vec<bool>]) -> Result<Array2<f64>>;
}

/// A game from a closure `v(coalition) -> f64` (analytic set functions, tests).
///
/// # Examples
/// ```
/// use explain_perturbation::{FnGame, exact_shapley};
/// // v(S) = 2·[0 ∈ S] + [1 ∈ S]: additive, so φ = (2, 1).
/// let mut game = FnGame::new(2, |s: &[bool]| 2.0 * f64::from(u8::from(s[0])) + f64::from(u8::from(s[1])));
/// let a = exact_shapley(&mut game)?;
/// assert!((a.scores[[0, 0]] - 2.0).abs() < 1e-12);
/// # Ok::<(), explainability_core::Error>(())
/// ```
pub struct FnGame<F> {
    n: usize,
    f: F,
    calls: usize,
}

impl<F: FnMut(&[bool]) -> f64> FnGame<F> {
    /// A game of `n` features valued by `f`.
    pub fn new(n: usize, f: F) -> Self {
        Self { n, f, calls: 0 }
    }

    /// Coalitions evaluated so far.
    pub fn calls(&self) -> usize {
        self.calls
    }
}

impl<F: FnMut(&[bool]) -> f64> Game for FnGame<F> {
    fn n_features(&self) -> usize {
        self.n
    }

    fn values(&mut self, coalitions: &[Vec<bool>]) -> Result<Array2<f64>> {
        check_lengths(coalitions, self.n)?;
        self.calls += coalitions.len();
        let v: Vec<f64> = coalitions.iter().map(|c| (self.f)(c)).collect();
        Array2::from_shape_vec((coalitions.len(), 1), v).map_err(shape_error)
    }
}

/// Checks that every coalition has `n` entries.
///
/// # Errors
/// [`Error::MaskLength`] naming the first bad one.
pub(crate) fn check_lengths(coalitions: &[Vec<bool>], n: usize) -> Result<()> {
    match coalitions.iter().position(|c| c.len() != n) {
        Some(index) => Err(Error::MaskLength { index, len: coalitions[index].len(), expected: n }),
        None => Ok(()),
    }
}

pub(crate) fn shape_error(e: ndarray::ShapeError) -> Error {
    Error::invalid_argument(format!("internal array shape: {e}"))
}

/// Evaluates `coalitions` with each distinct one sent to the game once.
///
/// # Errors
/// [`Error::MaskLength`], the game's errors.
pub(crate) fn unique_values(
    game: &mut dyn Game,
    coalitions: &[Vec<bool>],
) -> Result<(Array2<f64>, usize)> {
    check_lengths(coalitions, game.n_features())?;
    let mut index: HashMap<&[bool], usize> = HashMap::new();
    let mut distinct: Vec<Vec<bool>> = Vec::new();
    let mut rows = Vec::with_capacity(coalitions.len());
    for c in coalitions {
        let next = distinct.len();
        let at = *index.entry(c.as_slice()).or_insert(next);
        if at == next {
            distinct.push(c.clone());
        }
        rows.push(at);
    }
    let values = game.values(&distinct)?;
    let outputs = values.ncols();
    let mut out = Array2::zeros((coalitions.len(), outputs));
    for (r, &at) in rows.iter().enumerate() {
        out.row_mut(r).assign(&values.row(at));
    }
    Ok((out, distinct.len()))
}

/// What a perturbation method returns: scores per output and feature, and its cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// `[n_outputs, n_features]` attribution of each output to each feature.
    pub scores: Array2<f64>,
    /// Distinct coalitions the method evaluated (each one perturbed input for a model game).
    pub coalitions: usize,
    /// The fitted surrogate's intercept and quality (KernelSHAP, LIME, ContextCite).
    pub surrogate: Option<SurrogateFit>,
}

/// How well a linear surrogate fits the game.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurrogateFit {
    /// Intercept per output.
    pub intercept: Vec<f64>,
    /// Coefficient of determination on the samples it was fitted on (output 0).
    pub train_r2: f64,
    /// R² on held-out samples of a fit without them (output 0), when samples were held out.
    pub heldout_r2: Option<f64>,
    /// Spearman correlation between predicted and actual held-out values (ContextCite's LDS).
    pub heldout_spearman: Option<f64>,
    /// Samples held out.
    pub heldout_samples: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_evaluated_once_and_lengths_checked() {
        let mut game = FnGame::new(2, |s: &[bool]| s.iter().filter(|&&b| b).count() as f64);
        let c = vec![vec![true, false], vec![true, true], vec![true, false]];
        let (v, distinct) = unique_values(&mut game, &c).unwrap();
        assert_eq!(distinct, 2);
        assert_eq!(game.calls(), 2);
        assert_eq!(v.column(0).to_vec(), vec![1.0, 2.0, 1.0]);
        assert!(matches!(
            unique_values(&mut game, &[vec![true]]),
            Err(Error::MaskLength { index: 0, len: 1, expected: 2 })
        ));
    }
}
