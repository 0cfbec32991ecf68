//! A language model as a [`Game`] ([`ModelGame`]: features are token spans, a coalition's
//! value is the target on the input with the absent features removed) and the
//! [`PerturbationExplainer`] that runs any method of this crate on it.

use std::ops::Range;

use explainability_core::{
    Error, Explainer, Explanation, ForwardOptions, Hooks, KeyValueCache, LanguageModel,
    RemovalOptions, RemovalStrategy, Result, Target, evaluate_removals, evaluate_removals_with,
    ndarray::Array1,
    tch::{self, Tensor},
};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::features::{FeatureKind, token_scores};
use crate::game::{Attribution, Game, check_lengths};
use crate::methods::{
    ContextCiteOptions, context_cite, exact_shapley, feature_ablation, kernel_shap, lime,
    shapley_sampling,
};

/// A language model's target as a set function of token spans.
///
/// `v(S)` is the (resolved) target on `ids` with the tokens of every feature outside `S`
/// removed by the [`RemovalStrategy`]; edited inputs run through
/// [`evaluate_removals_with`] in batches (Delete rows of every length share a batch on causal
/// models). `v(N)` comes from the forward pass that resolved the target, so it costs nothing
/// more; on causal models with a key/value cache that pass also keeps the input's keys and
/// values, and every edited input runs only from its first changed position on
/// ([`ModelGame::with_prefix_reuse`]). Under Delete, a coalition that removes every token is evaluated on the
/// model's BOS token alone (its EOS token when it has no BOS): the model's prediction from an
/// empty context.
pub struct ModelGame<'a> {
    model: &'a dyn LanguageModel,
    ids: Vec<i64>,
    features: Vec<Range<usize>>,
    strategy: RemovalStrategy,
    target: Target,
    batch_size: usize,
    full_value: f64,
    forward_rows: usize,
    /// The unedited input's keys and values, when prefixes are reused.
    input_cache: Option<KeyValueCache>,
    reuse_prefix: bool,
    positions_run: usize,
    positions_reused: usize,
}

impl std::fmt::Debug for ModelGame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelGame")
            .field("model", &self.model.info().name)
            .field("features", &self.features)
            .field("strategy", &self.strategy)
            .field("target", &self.target)
            .finish()
    }
}

impl<'a> ModelGame<'a> {
    /// The game of `target` on `ids` over `features`; runs the unperturbed input once to
    /// resolve an argmax target and record `v(N)`.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::SpanOutOfRange`] for a feature outside the input,
    /// [`Error::InvalidArgument`] for `batch_size == 0` or an explicit target position under
    /// Delete; model and target errors.
    pub fn new(
        model: &'a dyn LanguageModel,
        ids: &[i64],
        features: Vec<Range<usize>>,
        strategy: RemovalStrategy,
        target: &Target,
        batch_size: usize,
    ) -> Result<Self> {
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        if batch_size == 0 {
            return Err(Error::invalid_argument("batch_size must be at least 1"));
        }
        for f in &features {
            if f.start >= f.end || f.end > ids.len() {
                return Err(Error::SpanOutOfRange { start: f.start, end: f.end, len: ids.len() });
            }
        }
        let explicit = match target {
            Target::Token { position, .. } | Target::Contrastive { position, .. } => *position,
        };
        if strategy == RemovalStrategy::Delete && explicit.is_some() {
            return Err(Error::invalid_argument(
                "RemovalStrategy::Delete needs a last-position target (position: None)",
            ));
        }
        let _guard = tch::no_grad_guard();
        let input = Tensor::from_slice(ids).unsqueeze(0).to_device(model.device());
        let cache = model.info().causal && model.supports_key_value_cache();
        let options = ForwardOptions { return_key_values: cache, ..ForwardOptions::default() };
        let out = model.forward_ids(&input, &options, &mut Hooks::new())?;
        let target = target.resolve(&out.logits)?;
        let full_value = target.evaluate(&out.logits)?.f_double_value(&[0])?;
        Ok(Self {
            model,
            ids: ids.to_vec(),
            features,
            strategy,
            target,
            batch_size,
            full_value,
            forward_rows: 1,
            input_cache: out.key_values,
            reuse_prefix: true,
            positions_run: ids.len(),
            positions_reused: 0,
        })
    }

    /// Whether edited inputs reuse the unedited prefix's keys and values (default true; only
    /// causal models with a key/value cache can). Off, every edited input runs in full: the
    /// path the reuse is tested against.
    pub fn with_prefix_reuse(mut self, reuse: bool) -> Self {
        self.reuse_prefix = reuse;
        if !reuse {
            self.input_cache = None;
        }
        self
    }

    /// Token positions run through the model so far (padding and the unedited input
    /// included); divided by the input's length, the cost in forward-equivalents.
    pub fn positions_run(&self) -> usize {
        self.positions_run
    }

    /// Positions of edited inputs taken from the prefix cache instead of being recomputed.
    pub fn positions_reused(&self) -> usize {
        self.positions_reused
    }

    /// The cost so far in forward passes of the unedited input
    /// ([`ModelGame::positions_run`] over the input's length).
    pub fn forward_equivalents(&self) -> f64 {
        self.positions_run as f64 / self.ids.len() as f64
    }

    /// The resolved target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `v(N)`: the target on the unperturbed input.
    pub fn full_value(&self) -> f64 {
        self.full_value
    }

    /// The features (token spans).
    pub fn features(&self) -> &[Range<usize>] {
        &self.features
    }

    /// Sequences run through the model so far, the unperturbed input included.
    pub fn forward_rows(&self) -> usize {
        self.forward_rows
    }

    /// The token id that stands for an empty context under Delete.
    fn empty_context(&self) -> Result<i64> {
        let special = self.model.info().special_tokens;
        special.bos.or(special.eos).ok_or_else(|| {
            Error::invalid_argument(
                "Delete would remove every token and the model has no BOS or EOS token to \
                 stand for an empty context: keep a token out of the features or use Replace",
            )
        })
    }
}

impl Game for ModelGame<'_> {
    fn n_features(&self) -> usize {
        self.features.len()
    }

    fn values(&mut self, coalitions: &[Vec<bool>]) -> Result<Array2<f64>> {
        check_lengths(coalitions, self.features.len())?;
        let n = self.ids.len();
        let mut out = Array2::zeros((coalitions.len(), 1));
        let mut masks = Vec::new();
        let mut at = Vec::new();
        let mut empty = Vec::new();
        for (r, c) in coalitions.iter().enumerate() {
            let mut removed = vec![false; n];
            for (f, span) in self.features.iter().enumerate() {
                if !c[f] {
                    removed[span.clone()].iter_mut().for_each(|x| *x = true);
                }
            }
            // features may overlap: a token is kept only when no absent feature covers it
            if removed.iter().all(|&x| !x) {
                out[[r, 0]] = self.full_value;
            } else if self.strategy == RemovalStrategy::Delete && removed.iter().all(|&x| x) {
                empty.push(r);
            } else {
                masks.push(removed);
                at.push(r);
            }
        }
        if !masks.is_empty() {
            let options = RemovalOptions {
                batch_size: self.batch_size,
                reuse_prefix: self.reuse_prefix,
                input_cache: self.input_cache.as_ref(),
            };
            let run = evaluate_removals_with(
                self.model,
                &self.ids,
                &self.target,
                self.strategy,
                &masks,
                &options,
            )?;
            self.forward_rows += masks.len();
            self.positions_run += run.positions_run;
            self.positions_reused += run.positions_reused;
            for (r, value) in at.into_iter().zip(run.values) {
                out[[r, 0]] = value;
            }
        }
        if !empty.is_empty() {
            let context = self.empty_context()?;
            let v = evaluate_removals(
                self.model,
                &[context],
                &self.target,
                RemovalStrategy::Delete,
                &[vec![false]],
                1,
            )?;
            self.forward_rows += 1;
            self.positions_run += 1;
            for r in empty {
                out[[r, 0]] = v[0];
            }
        }
        Ok(out)
    }
}

/// Which perturbation method a [`PerturbationExplainer`] runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PerturbationMethod {
    /// `v(N) − v(N ∖ {i})` per feature ([`feature_ablation`]).
    FeatureAblation,
    /// Exact Shapley values ([`exact_shapley`], at most 12 features).
    ExactShapley,
    /// Permutation-sampled Shapley values ([`shapley_sampling`]).
    ShapleySampling {
        /// Random orders.
        permutations: usize,
        /// Pair each order with its reverse.
        antithetic: bool,
        /// Seed of the orders.
        seed: u64,
    },
    /// KernelSHAP ([`kernel_shap`]).
    KernelShap {
        /// Sampled coalitions (exact enumeration when at least `2ⁿ − 2`).
        samples: usize,
        /// Seed of the coalitions.
        seed: u64,
    },
    /// LIME ([`lime`]).
    Lime {
        /// Bernoulli(½) masks.
        samples: usize,
        /// Width of the exponential kernel on the cosine distance (Captum: 1).
        kernel_width: f64,
        /// Seed of the masks.
        seed: u64,
    },
    /// ContextCite-style LASSO surrogate ([`context_cite`]).
    ContextCite {
        /// Random ablations.
        ablations: usize,
        /// Probability that a feature is kept.
        keep_probability: f64,
        /// LASSO α on standardised masks.
        alpha: f64,
        /// Fraction of ablations held out to measure the fit.
        holdout_fraction: f64,
        /// Seed of the masks.
        seed: u64,
    },
}

/// A perturbation explainer: a [`PerturbationMethod`] over [`FeatureKind`] features, tokens
/// removed by a [`RemovalStrategy`], perturbed inputs run `batch_size` at a time.
///
/// Each token's score is its feature's attribution (the mean over the features covering it
/// for overlapping windows; 0 for tokens in no feature). Metadata: `features` (token spans),
/// `feature_scores`, `strategy`, `forward_passes` (sequences run, the unperturbed input
/// included), `forward_equivalents` (token positions run over the input's length: the cost
/// after prefix reuse), `positions_reused`, `coalitions`, the method's settings and, for surrogates, their fit
/// (`surrogate_train_r2`, `surrogate_heldout_r2`, `surrogate_heldout_spearman`).
///
/// Delete (the default) needs a last-position target; use Replace or ZeroEmbedding for an
/// explicit position.
///
/// # Examples
/// ```no_run
/// use explain_perturbation::PerturbationExplainer;
/// use explainability_core::{Explainer, Target};
/// let model = explain_models::load(explain_models::smollm2_gguf_path())?;
/// let e = PerturbationExplainer::leave_one_out().explain(&model, "The capital of France is", &Target::argmax())?;
/// println!("{:?} after {} forward passes", e.top_k(2), e.metadata["forward_passes"]);
/// # Ok::<(), explainability_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerturbationExplainer {
    /// The method.
    pub method: PerturbationMethod,
    /// How tokens are grouped into features.
    pub features: FeatureKind,
    /// How a removed token is removed.
    pub strategy: RemovalStrategy,
    /// Perturbed inputs per forward pass.
    pub batch_size: usize,
    /// Never perturb the first token (the attention sink of a decoder without BOS).
    pub keep_first_token: bool,
    /// Reuse the keys and values of the positions before each edited input's first change
    /// (causal models with a key/value cache; default true). The attributions equal those
    /// without reuse up to float reassociation; the cost drops (leave-one-out: about half).
    #[serde(default = "reuse_by_default")]
    pub reuse_prefix: bool,
}

fn reuse_by_default() -> bool {
    true
}

impl PerturbationExplainer {
    /// `method` over single tokens, removed by Delete (the perturbation the fidelity metrics
    /// use, so the explanation answers the question they ask), 32 inputs per batch, every
    /// token perturbed.
    pub fn new(method: PerturbationMethod) -> Self {
        Self {
            method,
            features: FeatureKind::Tokens,
            strategy: RemovalStrategy::Delete,
            batch_size: 32,
            keep_first_token: false,
            reuse_prefix: true,
        }
    }

    /// Leave-one-out: feature ablation of single tokens (`n` perturbed inputs).
    pub fn leave_one_out() -> Self {
        Self::new(PerturbationMethod::FeatureAblation)
    }

    /// Occlusion with sliding windows of `width` tokens every `stride`.
    pub fn occlusion(width: usize, stride: usize) -> Self {
        Self { features: FeatureKind::Windows { width, stride }, ..Self::leave_one_out() }
    }

    /// Feature ablation over `features` (words, sentences, spans).
    pub fn feature_ablation(features: FeatureKind) -> Self {
        Self { features, ..Self::leave_one_out() }
    }

    /// Exact Shapley values (`2ⁿ` inputs, `n ≤ 12`).
    pub fn exact_shapley() -> Self {
        Self::new(PerturbationMethod::ExactShapley)
    }

    /// Shapley value sampling: 8 antithetic permutations, seed 0.
    pub fn shapley_sampling() -> Self {
        Self::new(PerturbationMethod::ShapleySampling {
            permutations: 8,
            antithetic: true,
            seed: 0,
        })
    }

    /// KernelSHAP with 64 coalitions, seed 0 (exact below 7 features).
    pub fn kernel_shap() -> Self {
        Self::new(PerturbationMethod::KernelShap { samples: 64, seed: 0 })
    }

    /// LIME with 64 masks, Captum's kernel width 1, seed 0.
    pub fn lime() -> Self {
        Self::new(PerturbationMethod::Lime { samples: 64, kernel_width: 1.0, seed: 0 })
    }

    /// ContextCite over sentences with its own defaults (64 ablations, keep ½, α = 0.01) and a
    /// 20 % hold-out.
    pub fn context_cite() -> Self {
        let o = ContextCiteOptions::default();
        Self {
            features: FeatureKind::Sentences,
            ..Self::new(PerturbationMethod::ContextCite {
                ablations: o.ablations,
                keep_probability: o.keep_probability,
                alpha: o.alpha,
                holdout_fraction: o.holdout_fraction,
                seed: o.seed,
            })
        }
    }

    /// The same explainer with another removal strategy.
    pub fn with_strategy(mut self, strategy: RemovalStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The same explainer with other features.
    pub fn with_features(mut self, features: FeatureKind) -> Self {
        self.features = features;
        self
    }

    /// The same explainer with prefix reuse on or off ([`PerturbationExplainer::reuse_prefix`]).
    pub fn with_prefix_reuse(mut self, reuse: bool) -> Self {
        self.reuse_prefix = reuse;
        self
    }

    /// The same explainer with `seed` for its random draws (methods that draw none are
    /// returned unchanged).
    pub fn with_seed(mut self, seed: u64) -> Self {
        match &mut self.method {
            PerturbationMethod::ShapleySampling { seed: s, .. }
            | PerturbationMethod::KernelShap { seed: s, .. }
            | PerturbationMethod::Lime { seed: s, .. }
            | PerturbationMethod::ContextCite { seed: s, .. } => *s = seed,
            PerturbationMethod::FeatureAblation | PerturbationMethod::ExactShapley => {}
        }
        self
    }

    /// The same explainer with another batch size.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Runs the method on a game.
    ///
    /// # Errors
    /// The method's errors.
    pub fn attribute(&self, game: &mut dyn Game) -> Result<Attribution> {
        match &self.method {
            PerturbationMethod::FeatureAblation => feature_ablation(game),
            PerturbationMethod::ExactShapley => exact_shapley(game),
            &PerturbationMethod::ShapleySampling { permutations, antithetic, seed } => {
                shapley_sampling(game, permutations, antithetic, seed)
            }
            &PerturbationMethod::KernelShap { samples, seed } => kernel_shap(game, samples, seed),
            &PerturbationMethod::Lime { samples, kernel_width, seed } => {
                lime(game, samples, kernel_width, seed)
            }
            &PerturbationMethod::ContextCite {
                ablations,
                keep_probability,
                alpha,
                holdout_fraction,
                seed,
            } => context_cite(
                game,
                &ContextCiteOptions { ablations, keep_probability, alpha, holdout_fraction, seed },
            ),
        }
    }

    /// The token spans this explainer perturbs on `tokens`.
    ///
    /// # Errors
    /// As [`FeatureKind::spans`].
    pub fn feature_spans(&self, tokens: &[String]) -> Result<Vec<Range<usize>>> {
        let spans = self.features.spans(tokens)?;
        Ok(if self.keep_first_token {
            spans.into_iter().map(|s| s.start.max(1)..s.end).filter(|s| s.start < s.end).collect()
        } else {
            spans
        })
    }
}

impl Explainer for PerturbationExplainer {
    fn name(&self) -> &str {
        match (&self.method, &self.features) {
            (PerturbationMethod::FeatureAblation, FeatureKind::Tokens) => "leave_one_out",
            (PerturbationMethod::FeatureAblation, FeatureKind::Windows { .. }) => "occlusion",
            (PerturbationMethod::FeatureAblation, _) => "feature_ablation",
            (PerturbationMethod::ExactShapley, _) => "shapley_exact",
            (PerturbationMethod::ShapleySampling { .. }, _) => "shapley_sampling",
            (PerturbationMethod::KernelShap { .. }, _) => "kernel_shap",
            (PerturbationMethod::Lime { .. }, _) => "lime",
            (PerturbationMethod::ContextCite { .. }, _) => "context_cite",
        }
    }

    fn explain_ids(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        target: &Target,
    ) -> Result<Explanation> {
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        let tokens = model.token_strings(ids)?;
        let spans = self.feature_spans(&tokens)?;
        if spans.is_empty() {
            return Err(Error::invalid_argument("no token is left to perturb"));
        }
        let mut game =
            ModelGame::new(model, ids, spans.clone(), self.strategy, target, self.batch_size)?
                .with_prefix_reuse(self.reuse_prefix);
        let attribution = self.attribute(&mut game)?;
        let feature_scores: Vec<f64> = attribution.scores.row(0).to_vec();
        let scores = token_scores(&spans, &feature_scores, ids.len());
        let mut e = Explanation::new(
            self.name(),
            ids.to_vec(),
            tokens,
            Array1::from(scores),
            game.target().clone(),
        )?;
        e.target_value = Some(game.full_value());
        if let Some(id) = e.target.token_id() {
            e.target_token = model.token_strings(&[id])?.pop();
        }
        let m = &mut e.metadata;
        m.insert("method_settings".into(), json!(self.method));
        m.insert(
            "features".into(),
            json!(spans.iter().map(|s| [s.start, s.end]).collect::<Vec<_>>()),
        );
        m.insert("feature_scores".into(), json!(feature_scores));
        m.insert("strategy".into(), json!(self.strategy));
        m.insert("batch_size".into(), json!(self.batch_size));
        m.insert("forward_passes".into(), json!(game.forward_rows()));
        m.insert("forward_equivalents".into(), json!(game.forward_equivalents()));
        m.insert("positions_reused".into(), json!(game.positions_reused()));
        m.insert("coalitions".into(), json!(attribution.coalitions));
        if let Some(fit) = &attribution.surrogate {
            m.insert("surrogate_intercept".into(), json!(fit.intercept[0]));
            m.insert("surrogate_train_r2".into(), json!(fit.train_r2));
            m.insert("surrogate_heldout_r2".into(), json!(fit.heldout_r2));
            m.insert("surrogate_heldout_spearman".into(), json!(fit.heldout_spearman));
            m.insert("surrogate_heldout_samples".into(), json!(fit.heldout_samples));
        }
        Ok(e)
    }
}
