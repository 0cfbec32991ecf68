//! The explainer framework: a registry of named explainers, one text explained by one or by
//! many methods (a failing method is reported beside the others, never fatal), and the
//! aggregation of explanations over the same tokens.

use std::sync::Arc;

use ndarray::Array1;
use serde::{Deserialize, Serialize};
use serde_json::json;

use explain_attention::AttentionExplainer;
use explain_eval::RandomExplainer;
use explain_gradients::{
    Baseline, GradientXInput, IntegratedGradients, RelevancePropagation, Saliency, SmoothGrad,
};
use explain_perturbation::{FeatureKind, PerturbationExplainer};
use explainability_core::{
    Error, ExplainInput, Explainer, Explanation, LanguageModel, Result, SharedPasses, Target,
};

/// Named explainers.
///
/// # Examples
/// ```no_run
/// use explainability::{Framework, Target, load, smollm2_gguf_path};
/// let model = load(smollm2_gguf_path())?;
/// let framework = Framework::with_defaults();
/// let e = framework.explain(&model, "The capital of France is", "gradient_x_input", &Target::argmax())?;
/// println!("{:?}", e.top_k(3));
/// # Ok::<(), explainability::Error>(())
/// ```
#[derive(Default)]
pub struct Framework {
    explainers: Vec<(String, Box<dyn Explainer>)>,
}

impl std::fmt::Debug for Framework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framework").field("methods", &self.methods()).finish()
    }
}

/// The methods [`Framework::with_defaults`] registers, in order: gradient methods, attention
/// methods, perturbation methods, and the seeded random control.
pub const DEFAULT_METHODS: &[&str] = &[
    "saliency",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "attn_lrp",
    "cp_lrp",
    "attention_last_layer",
    "attention_rollout",
    "attention_flow",
    "leave_one_out",
    "occlusion",
    "feature_ablation",
    "shapley_exact",
    "shapley_sampling",
    "kernel_shap",
    "lime",
    "context_cite",
    "random",
];

/// The methods of [`DEFAULT_METHODS`] that draw random numbers, whose seeds
/// [`Framework::with_seeds`] sets.
pub const SEEDED_METHODS: &[&str] =
    &["smoothgrad", "shapley_sampling", "kernel_shap", "lime", "context_cite", "random"];

impl Framework {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every method of the workspace under its own name (see [`DEFAULT_METHODS`]):
    /// saliency (L2), gradient×input, integrated gradients (eos-token baseline, adaptive
    /// quadrature to a 5% convergence delta: fixed-step rules do not converge on RMSNorm
    /// models, see docs/methods-gradients.md), SmoothGrad (20 samples, seed 0), AttnLRP and CP-LRP, attention of the last layer, rollout and
    /// flow; the perturbation methods of [`explain_perturbation`] with tokens removed by
    /// Delete (leave-one-out, occlusion with 3-token windows every token, feature ablation
    /// over words, exact Shapley values — at most 12 tokens, an error beyond —, Shapley
    /// sampling with 8 antithetic permutations, KernelSHAP and LIME with 64 samples, a
    /// ContextCite surrogate over sentences, all seed 0); and a seeded random control.
    pub fn with_defaults() -> Self {
        Self::with_seeds(|_| 0)
    }

    /// [`Framework::with_defaults`] with each seeded method (SmoothGrad, Shapley sampling,
    /// KernelSHAP, LIME, ContextCite and the random control, see [`SEEDED_METHODS`]) seeded
    /// with `seed_of(its name)`: a dataset job derives one seed per (run seed, record,
    /// method) so that a record's result depends on nothing else (not on the worker, the
    /// shard count or the order of records).
    pub fn with_seeds(seed_of: impl Fn(&str) -> u64) -> Self {
        let mut f = Self::new();
        f.insert(Box::new(Saliency::default()));
        f.insert(Box::new(GradientXInput));
        f.insert(Box::new(IntegratedGradients::adaptive(Baseline::Eos)));
        f.insert(Box::new(SmoothGrad { seed: seed_of("smoothgrad"), ..SmoothGrad::default() }));
        f.insert(Box::new(RelevancePropagation::attn_lrp()));
        f.insert(Box::new(RelevancePropagation::cp_lrp()));
        f.insert(Box::new(AttentionExplainer::last_layer()));
        f.insert(Box::new(AttentionExplainer::rollout()));
        f.insert(Box::new(AttentionExplainer::flow()));
        f.insert(Box::new(PerturbationExplainer::leave_one_out()));
        f.insert(Box::new(PerturbationExplainer::occlusion(3, 1)));
        f.insert(Box::new(PerturbationExplainer::feature_ablation(FeatureKind::Words)));
        f.insert(Box::new(PerturbationExplainer::exact_shapley()));
        for explainer in [
            PerturbationExplainer::shapley_sampling(),
            PerturbationExplainer::kernel_shap(),
            PerturbationExplainer::lime(),
            PerturbationExplainer::context_cite(),
        ] {
            let seed = seed_of(explainer.name());
            f.insert(Box::new(explainer.with_seed(seed)));
        }
        f.insert(Box::new(RandomExplainer::new(seed_of("random"))));
        f
    }

    fn insert(&mut self, explainer: Box<dyn Explainer>) {
        let name = explainer.name().to_owned();
        self.explainers.retain(|(n, _)| *n != name);
        self.explainers.push((name, explainer));
    }

    /// Registers `explainer` under its own name, replacing one of the same name.
    pub fn register(&mut self, explainer: impl Explainer + 'static) -> &mut Self {
        self.insert(Box::new(explainer));
        self
    }

    /// Registers `explainer` under `name` (e.g. two IG configurations side by side),
    /// replacing one of the same name.
    pub fn register_as(
        &mut self,
        name: impl Into<String>,
        explainer: impl Explainer + 'static,
    ) -> &mut Self {
        let name = name.into();
        self.explainers.retain(|(n, _)| *n != name);
        self.explainers.push((name, Box::new(explainer)));
        self
    }

    /// Registered names, in registration order.
    pub fn methods(&self) -> Vec<&str> {
        self.explainers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The explainer registered as `name`.
    ///
    /// # Errors
    /// [`Error::UnknownMethod`] naming the registered ones.
    pub fn get(&self, name: &str) -> Result<&dyn Explainer> {
        self.explainers.iter().find(|(n, _)| n == name).map(|(_, e)| e.as_ref()).ok_or_else(|| {
            Error::UnknownMethod {
                name: name.to_owned(),
                known: self.methods().into_iter().map(str::to_owned).collect(),
            }
        })
    }

    /// Explains `target` on `text` with the method registered as `method`; the explanation's
    /// `method` is the registered name.
    ///
    /// # Errors
    /// [`Error::UnknownMethod`], and the method's own errors.
    pub fn explain(
        &self,
        model: &dyn LanguageModel,
        text: &str,
        method: &str,
        target: &Target,
    ) -> Result<Explanation> {
        let ids = model.encode(text, true)?;
        self.explain_ids(model, &ids, method, target)
    }

    /// As [`Framework::explain`] on token ids.
    ///
    /// # Errors
    /// As [`Framework::explain`].
    pub fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        method: &str,
        target: &Target,
    ) -> Result<Explanation> {
        let mut e = self.get(method)?.explain_ids(model, ids, target)?;
        e.method = method.to_owned();
        Ok(e)
    }

    /// [`Framework::explain_ids`] sharing passes with the other methods that explain the same
    /// input for the same target ([`Explainer::explain_ids_shared`]): saliency and gradient ×
    /// input run one forward and backward pass between them, the attention methods one
    /// capture, and the target is resolved once.
    ///
    /// # Errors
    /// As [`Framework::explain_ids`].
    pub fn explain_ids_shared(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        method: &str,
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<Explanation> {
        let mut e = self.get(method)?.explain_ids_shared(model, ids, target, shared)?;
        e.method = method.to_owned();
        Ok(e)
    }

    /// Explains several inputs with the method registered as `method`, as
    /// [`Explainer::explain_batch`] does: several inputs per forward pass for methods that
    /// allow it ([`Framework::batches_inputs`]), one at a time otherwise; entry `i` is input
    /// `i`'s explanation or error.
    ///
    /// # Errors
    /// [`Error::UnknownMethod`]; each input's own errors are in its entry.
    pub fn explain_batch_ids(
        &self,
        model: &dyn LanguageModel,
        inputs: &[ExplainInput<'_>],
        method: &str,
    ) -> Result<Vec<Result<Explanation>>> {
        let explainer = self.get(method)?;
        Ok(explainer
            .explain_batch(model, inputs)
            .into_iter()
            .map(|r| {
                r.map(|mut e| {
                    e.method = method.to_owned();
                    e
                })
            })
            .collect())
    }

    /// Whether the method registered as `method` runs several inputs per forward pass in
    /// [`Framework::explain_batch_ids`].
    ///
    /// # Errors
    /// [`Error::UnknownMethod`].
    pub fn batches_inputs(&self, method: &str) -> Result<bool> {
        Ok(self.get(method)?.batches_inputs())
    }

    /// Explains `text` with each of `methods` (all registered ones when empty). A method that
    /// fails (or is not registered) yields its error in the result; the others still run.
    ///
    /// # Errors
    /// Only errors that concern every method: [`Error::EmptyText`] and tokenizer failures.
    pub fn compare_methods(
        &self,
        model: &dyn LanguageModel,
        text: &str,
        methods: &[&str],
        target: &Target,
    ) -> Result<MethodComparison> {
        let ids = model.encode(text, true)?;
        let mut shared = SharedPasses::new(&ids, target);
        self.compare_methods_shared(model, text, &ids, methods, target, &mut shared)
    }

    /// [`Framework::compare_methods`] on token ids, with passes already in `shared` (a
    /// caller that captured the attention or resolved the target passes them on) and the
    /// methods sharing theirs ([`Framework::explain_ids_shared`]). A method's seconds are
    /// those of the passes it ran: one that found a pass computed pays nothing for it.
    ///
    /// # Errors
    /// As [`Framework::compare_methods`].
    pub fn compare_methods_shared(
        &self,
        model: &dyn LanguageModel,
        text: &str,
        ids: &[i64],
        methods: &[&str],
        target: &Target,
        shared: &mut SharedPasses,
    ) -> Result<MethodComparison> {
        let tokens = model.token_strings(ids)?;
        let methods: Vec<&str> = if methods.is_empty() { self.methods() } else { methods.to_vec() };
        let outcomes = methods
            .into_iter()
            .map(|m| {
                let started = std::time::Instant::now();
                let result = self.explain_ids_shared(model, ids, m, target, shared);
                MethodOutcome::new(m, result, started.elapsed().as_secs_f64())
            })
            .collect();
        Ok(MethodComparison { text: text.to_owned(), token_ids: ids.to_vec(), tokens, outcomes })
    }
}

/// Why a method failed, kept beside the other methods' results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodFailure {
    /// The error's message (with its sources).
    pub message: String,
    /// The error itself, while in memory (not serialised).
    #[serde(skip)]
    pub error: Option<Arc<Error>>,
}

/// One method's result in a [`MethodComparison`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodOutcome {
    /// Registered name.
    pub method: String,
    /// The explanation, when the method succeeded.
    pub explanation: Option<Explanation>,
    /// The failure, when it did not.
    pub failure: Option<MethodFailure>,
    /// Wall time of the method, seconds.
    pub seconds: f64,
}

impl MethodOutcome {
    fn new(method: &str, result: Result<Explanation>, seconds: f64) -> Self {
        let (explanation, failure) = match result {
            Ok(e) => (Some(e), None),
            Err(e) => {
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    message.push_str(": ");
                    message.push_str(&s.to_string());
                    source = s.source();
                }
                (None, Some(MethodFailure { message, error: Some(Arc::new(e)) }))
            }
        };
        Self { method: method.to_owned(), explanation, failure, seconds }
    }
}

/// Every requested method's explanation (or failure) of one text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodComparison {
    /// The text.
    pub text: String,
    /// Its token ids.
    pub token_ids: Vec<i64>,
    /// A readable string per token.
    pub tokens: Vec<String>,
    /// One outcome per method, in the requested order.
    pub outcomes: Vec<MethodOutcome>,
}

impl MethodComparison {
    /// The successful explanations.
    pub fn explanations(&self) -> Vec<&Explanation> {
        self.outcomes.iter().filter_map(|o| o.explanation.as_ref()).collect()
    }

    /// `(method, failure)` of the methods that failed.
    pub fn failures(&self) -> Vec<(&str, &MethodFailure)> {
        self.outcomes
            .iter()
            .filter_map(|o| o.failure.as_ref().map(|f| (o.method.as_str(), f)))
            .collect()
    }
}

/// How [`aggregate`] combines explanations of the same tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregation {
    /// Mean of the scores after dividing each explanation by its largest |score| (signs
    /// kept; an all-zero explanation contributes zeros).
    MeanNormalised,
    /// Tokens in the top `k` by |score| of every explanation keep their mean normalised
    /// |score|; all others get 0. The intersection is in the metadata.
    TopKIntersection {
        /// How many top tokens of each explanation are intersected.
        k: usize,
    },
    /// Borda-style rank aggregation: `1 − mean_m r_m(i) / (n − 1)` where `r_m(i)` is token
    /// `i`'s rank by |score| under method `m` (0 = most important; ties share their mean
    /// rank). 1 is the unanimous top token.
    Rank,
}

/// Combines explanations of the same tokens and target into one.
///
/// # Errors
/// [`Error::IncompatibleExplanations`] for no explanations, other tokens or another target;
/// [`Error::InvalidArgument`] for `k = 0` or non-finite scores.
///
/// # Examples
/// ```
/// use explainability::{Aggregation, Explanation, Target, aggregate};
/// use ndarray::array;
/// let e = |s| Explanation::new("m", vec![1, 2, 3], vec!["a".into(), "b".into(), "c".into()], s, Target::argmax()).unwrap();
/// let a = e(array![2.0, 1.0, 0.0]);
/// let b = e(array![0.0, 4.0, 2.0]);
/// let mean = aggregate(&[a.clone(), b.clone()], Aggregation::MeanNormalised).unwrap();
/// assert_eq!(mean.scores.to_vec(), vec![0.5, 0.75, 0.25]);
/// let top = aggregate(&[a, b], Aggregation::TopKIntersection { k: 2 }).unwrap();
/// assert_eq!(top.scores.to_vec(), vec![0.0, 0.75, 0.0]);
/// ```
pub fn aggregate(explanations: &[Explanation], how: Aggregation) -> Result<Explanation> {
    let first = check_compatible(explanations)?;
    let n = first.len();
    let normalised: Vec<Array1<f64>> = explanations.iter().map(normalise_max_abs).collect();
    let mut metadata = vec![(
        "methods",
        json!(explanations.iter().map(|e| e.method.as_str()).collect::<Vec<_>>()),
    )];
    let scores = match how {
        Aggregation::MeanNormalised => mean(&normalised, n),
        Aggregation::TopKIntersection { k } => {
            if k == 0 {
                return Err(Error::invalid_argument("top-k intersection with k = 0"));
            }
            let mut keep = vec![true; n];
            for e in explanations {
                let top: Vec<usize> = e.ranking().into_iter().take(k).collect();
                for (i, kept) in keep.iter_mut().enumerate() {
                    *kept &= top.contains(&i);
                }
            }
            let magnitude =
                mean(&normalised.iter().map(|s| s.mapv(f64::abs)).collect::<Vec<_>>(), n);
            let intersection: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
            metadata.push(("k", json!(k)));
            metadata.push(("intersection", json!(intersection)));
            Array1::from_shape_fn(n, |i| if keep[i] { magnitude[i] } else { 0.0 })
        }
        Aggregation::Rank => {
            let ranks: Vec<Array1<f64>> = explanations.iter().map(|e| ranks(&e.scores)).collect();
            let mean_rank = mean(&ranks, n);
            if n == 1 { Array1::ones(1) } else { mean_rank.mapv(|r| 1.0 - r / (n - 1) as f64) }
        }
    };
    let name = match how {
        Aggregation::MeanNormalised => "aggregate_mean_normalised",
        Aggregation::TopKIntersection { .. } => "aggregate_top_k_intersection",
        Aggregation::Rank => "aggregate_rank",
    };
    let mut out = Explanation::new(
        name,
        first.token_ids.clone(),
        first.tokens.clone(),
        scores,
        first.target.clone(),
    )?;
    out.target_token = first.target_token.clone();
    out.target_value = first.target_value;
    for (k, v) in metadata {
        out.metadata.insert(k.to_owned(), v);
    }
    Ok(out)
}

/// The first explanation, after checking that all share tokens and target and hold finite
/// scores.
fn check_compatible(explanations: &[Explanation]) -> Result<&Explanation> {
    let first = explanations.first().ok_or_else(|| Error::IncompatibleExplanations {
        reason: "no explanations to combine".into(),
    })?;
    for e in explanations {
        if e.token_ids != first.token_ids {
            return Err(Error::IncompatibleExplanations {
                reason: format!(
                    "{} explains {} tokens {:?}, {} explains {} tokens {:?}",
                    first.method,
                    first.len(),
                    first.token_ids,
                    e.method,
                    e.len(),
                    e.token_ids
                ),
            });
        }
        if e.target != first.target {
            return Err(Error::IncompatibleExplanations {
                reason: format!(
                    "{} explains {:?}, {} explains {:?}",
                    first.method, first.target, e.method, e.target
                ),
            });
        }
        if e.scores.iter().any(|s| !s.is_finite()) {
            return Err(Error::invalid_argument(format!("{} has non-finite scores", e.method)));
        }
    }
    Ok(first)
}

fn normalise_max_abs(e: &Explanation) -> Array1<f64> {
    let max = e.scores.iter().fold(0.0f64, |m, s| m.max(s.abs()));
    if max > 0.0 { e.scores.mapv(|s| s / max) } else { Array1::zeros(e.len()) }
}

fn mean(rows: &[Array1<f64>], n: usize) -> Array1<f64> {
    let mut sum = Array1::<f64>::zeros(n);
    for r in rows {
        sum += r;
    }
    sum / rows.len().max(1) as f64
}

/// Ranks by decreasing |score| (0 = largest), ties sharing their mean rank.
pub(crate) fn ranks(scores: &Array1<f64>) -> Array1<f64> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].abs().total_cmp(&scores[a].abs()));
    let mut out = Array1::<f64>::zeros(n);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && scores[order[j + 1]].abs() == scores[order[i]].abs() {
            j += 1;
        }
        let shared = (i + j) as f64 / 2.0;
        for &idx in &order[i..=j] {
            out[idx] = shared;
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;

    fn e(method: &str, scores: Array1<f64>) -> Explanation {
        let n = scores.len();
        Explanation::new(
            method,
            (0..n as i64).collect(),
            (0..n).map(|i| format!("t{i}")).collect(),
            scores,
            Target::log_prob(1),
        )
        .unwrap()
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&array![1.0, -3.0, 1.0, 0.0]).to_vec(), vec![1.5, 0.0, 1.5, 3.0]);
    }

    #[test]
    fn aggregations_by_hand() {
        let a = e("a", array![2.0, -1.0, 0.0, 0.5]);
        let b = e("b", array![0.0, 4.0, 2.0, 1.0]);
        let mean = aggregate(&[a.clone(), b.clone()], Aggregation::MeanNormalised).unwrap();
        for (got, want) in mean.scores.iter().zip([0.5, 0.25, 0.25, 0.25]) {
            assert_abs_diff_eq!(*got, want, epsilon = 1e-12);
        }
        // a's ranks: [0, 1, 3, 2]; b's: [3, 0, 1, 2] → mean [1.5, 0.5, 2, 2] → 1 − r/3.
        let rank = aggregate(&[a.clone(), b.clone()], Aggregation::Rank).unwrap();
        for (got, want) in rank.scores.iter().zip([0.5, 5.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0]) {
            assert_abs_diff_eq!(*got, want, epsilon = 1e-12);
        }
        let top =
            aggregate(&[a.clone(), b.clone()], Aggregation::TopKIntersection { k: 2 }).unwrap();
        assert_eq!(top.metadata["intersection"], json!([1]));
        assert_abs_diff_eq!(top.scores[1], 0.75, epsilon = 1e-12);
        assert_eq!(top.scores.iter().filter(|s| **s != 0.0).count(), 1);
        // Aggregating one explanation with itself changes nothing in the ordering.
        let same = aggregate(&[a.clone(), a.clone()], Aggregation::MeanNormalised).unwrap();
        assert_eq!(same.ranking(), a.ranking());
    }

    #[test]
    fn incompatible_inputs_are_typed_errors() {
        assert!(matches!(
            aggregate(&[], Aggregation::Rank),
            Err(Error::IncompatibleExplanations { .. })
        ));
        let a = e("a", array![1.0, 2.0]);
        let b = e("b", array![1.0, 2.0, 3.0]);
        assert!(matches!(
            aggregate(&[a.clone(), b], Aggregation::Rank),
            Err(Error::IncompatibleExplanations { .. })
        ));
        let mut other_target = a.clone();
        other_target.target = Target::log_prob(2);
        assert!(matches!(
            aggregate(&[a.clone(), other_target], Aggregation::MeanNormalised),
            Err(Error::IncompatibleExplanations { .. })
        ));
        assert!(matches!(
            aggregate(std::slice::from_ref(&a), Aggregation::TopKIntersection { k: 0 }),
            Err(Error::InvalidArgument { .. })
        ));
        let zero = e("z", array![0.0, 0.0]);
        let m = aggregate(&[zero.clone(), zero], Aggregation::MeanNormalised).unwrap();
        assert_eq!(m.scores.to_vec(), vec![0.0, 0.0], "all-zero input is defined, not NaN");
    }

    #[test]
    fn unknown_methods_name_the_registered_ones() {
        let f = Framework::with_defaults();
        assert_eq!(f.methods(), DEFAULT_METHODS.to_vec());
        assert_eq!(Framework::with_seeds(|_| 7).methods(), DEFAULT_METHODS.to_vec());
        assert_eq!(f.get("lime").map(|e| e.name().to_owned()).ok(), Some("lime".to_owned()));
        match f.get("no_such_method") {
            Err(Error::UnknownMethod { name, known }) => {
                assert_eq!(name, "no_such_method");
                assert!(known.contains(&"saliency".to_owned()));
            }
            other => panic!("expected UnknownMethod, got {:?}", other.map(|e| e.name().to_owned())),
        }
    }
}
