//! The analysis system: one call runs the next-token prediction, the attention analysis,
//! every configured attribution method (with convergence deltas) and their evaluation, and
//! turns the results into a report with a summary and recommendations in English and
//! Chinese, written as JSON, Markdown and a self-contained HTML page with charts and graphs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array2, Array3, Axis};
use serde::{Deserialize, Serialize};

use explain_attention::{
    AttentionAnalysis, AttentionCapture, AttentionExplainer, AttentionMeans, AttentionReport,
};
use explain_eval::{FidelityConfig, RandomControl};
use explainability_core::{
    Error, Explanation, LanguageModel, RESOLVED_TARGET, ResolvedTarget, Result, SharedPasses,
    StepOutcome, StepRecord, Target, TokenPrediction, top_predictions,
};

use crate::comparison::{ModelComparison, TextComparison, spearman};
use crate::framework::{Framework, MethodComparison};

/// Methods the analyzer runs by default, chosen by the faithfulness benchmark
/// (docs/faithfulness.md: 200 factual prompts on SmolLM2, AOPC comprehensiveness paired against
/// the 8-draw random control): leave-one-out (the most faithful, n + 1 forwards; the budget
/// skips it on long inputs), saliency and AttnLRP (clearly above the control at one forward and
/// one backward), gradient × input (above it, barely; kept as saliency's disagreement check),
/// and the seeded random control that every sound method must beat. Integrated gradients from
/// the EOS baseline scored *below* the control there and attention rollout is shown by the
/// attention analysis itself; both stay one `Analyzer::methods` call away. On Gemma 3 270M (the
/// same benchmark) leave-one-out and AttnLRP stay clearly above the control while saliency and
/// gradient × input do not (gradient × input falls below it): the report's headline prefers
/// AttnLRP to them (`HEADLINE_ORDER`), and they stay in the set as the cheap gradient view whose
/// disagreement the report shows.
pub const ANALYZER_METHODS: &[&str] =
    &["leave_one_out", "saliency", "attn_lrp", "gradient_x_input", "random"];

/// Relative convergence delta `|δ| / |F(x) − F(x')|` above which a path attribution is
/// reported as unreliable (the adaptive quadrature's default tolerance).
pub const UNRELIABLE_DELTA_ABOVE: f64 = 0.05;
/// Mean Spearman correlation between two attribution methods below which they are said to
/// disagree.
pub const DISAGREE_BELOW: f64 = 0.3;
/// Share of rollout mass on the first token above which the report warns about an attention
/// sink.
pub const SINK_ABOVE: f64 = 0.5;

/// Longest text (in tokens) whose per-layer attention matrices an analysis keeps for its
/// charts and graphs; longer texts keep the metrics, rollout and flow only (the matrices
/// grow as layers × tokens²).
pub const STORED_ATTENTION_MAX_TOKENS: usize = 256;

/// Budgets of the analysis steps whose cost grows faster than the input, so that a long text
/// degrades gracefully instead of running for hours. Work is counted in **token-passes**:
/// tokens fed through the model, summed over forward passes, a backward pass counting as two
/// more (on SmolLM2-135M, fp32, 2 threads, a token-pass costs about 1.3–1.9 ms; see
/// docs/benchmarks.md). A step over its budget is approximated or skipped, never silently:
/// [`ComprehensiveAnalysis::steps`] says which and why. Attention flow has its own budget in
/// [`AttentionAnalysis::flow_max_edges`]. [`AnalysisBudget::unlimited`] computes everything
/// exactly, whatever it costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisBudget {
    /// Token-passes one attribution method may need by its smallest known cost (e.g. adaptive
    /// integrated gradients: 8 gradient evaluations, 26 passes); a method over it is skipped.
    /// Methods whose cost is not known always run.
    pub attribution_token_passes: u64,
    /// Token-passes of the evaluation of all methods together. Over it the evaluation is
    /// reduced step by step (deletion/insertion curves at 20 points, then no leave-one-out
    /// τ, then 2 random-control draws instead of 8, then 8 faithfulness subsets instead of
    /// 32) until it fits, and skipped when even that does not fit.
    pub evaluation_token_passes: u64,
    /// Longest text (tokens) whose per-layer head-averaged matrices are kept for the charts
    /// and graphs drawn from them (L × n² values).
    pub stored_attention_max_tokens: usize,
}

impl Default for AnalysisBudget {
    /// Budgets chosen so that a 2,048-token text on SmolLM2-135M runs the prediction, the
    /// capture, the attention steps and the one-pass gradient methods only (about ten
    /// forward-pass equivalents), aiming at a minute on two cores (docs/benchmarks.md,
    /// "Analysis at long contexts", records the measurements).
    fn default() -> Self {
        Self {
            attribution_token_passes: 32_768,
            evaluation_token_passes: 200_000,
            stored_attention_max_tokens: STORED_ATTENTION_MAX_TOKENS,
        }
    }
}

impl AnalysisBudget {
    /// No budget: every step exact (what the analysis did before budgets existed).
    pub fn unlimited() -> Self {
        Self {
            attribution_token_passes: u64::MAX,
            evaluation_token_passes: u64::MAX,
            stored_attention_max_tokens: usize::MAX,
        }
    }
}

/// Smallest known cost of a registered method on `n` tokens, in token-passes (forward pass = 1,
/// backward = 2), for the methods of [`crate::Framework::with_defaults`]; `None` when unknown.
pub fn method_token_passes(method: &str, n: usize) -> Option<u64> {
    let n = n as u64;
    let passes = match method {
        "saliency" | "gradient_x_input" | "attn_lrp" | "cp_lrp" => 3,
        // Adaptive quadrature: 4 intervals × 2 nodes of gradients, and F(x), F(x').
        "integrated_gradients" => 8 * 3 + 2,
        "smoothgrad" => 20 * 3,
        "attention_last_layer" | "attention_rollout" | "attention_flow" => 2,
        "random" => 0,
        // One pass per removed token (or window) and the clean one.
        "leave_one_out" | "occlusion" => n + 1,
        "shapley_sampling" => 8 * 2 * n,
        "kernel_shap" | "lime" => 64,
        _ => return None,
    };
    Some(passes.saturating_mul(n))
}

/// Rows of one fidelity evaluation of an explanation of `n` tokens under `config`.
fn fidelity_rows(config: &FidelityConfig, n: usize) -> u64 {
    let m = n.max(1);
    let steps = if config.curve_steps == 0 { m } else { config.curve_steps.min(m) };
    let loo = if config.leave_one_out { m } else { 0 };
    (1 + 2 * config.bins.len() + 2 * (steps + 1) + config.faithfulness_subsets + loo) as u64
}

/// Token-passes of evaluating `methods` on `n` tokens (the random control `draws` times).
fn evaluation_token_passes(
    methods: &[&str],
    config: &FidelityConfig,
    draws: usize,
    n: usize,
) -> u64 {
    let calls: u64 = methods.iter().map(|m| if *m == "random" { draws as u64 } else { 1 }).sum();
    calls.saturating_mul(fidelity_rows(config, n)).saturating_mul(n as u64)
}

/// The evaluation settings that fit `budget`: the configured ones, or reduced in order (curve
/// points, leave-one-out, random draws, faithfulness subsets); `None` when nothing fits.
/// Returns the settings, the control, what was reduced and the planned token-passes.
fn plan_evaluation(
    methods: &[&str],
    config: &FidelityConfig,
    n: usize,
    budget: u64,
) -> (Option<(FidelityConfig, RandomControl)>, Vec<String>, u64) {
    let mut config = config.clone();
    let mut control = RandomControl::default();
    let mut reduced = Vec::new();
    let cost =
        |c: &FidelityConfig, r: &RandomControl| evaluation_token_passes(methods, c, r.draws, n);
    let full = cost(&config, &control);
    if full <= budget {
        return (Some((config, control)), reduced, full);
    }
    const CURVE_POINTS: usize = 20;
    if config.curve_steps == 0 || config.curve_steps > CURVE_POINTS {
        config.curve_steps = CURVE_POINTS;
        reduced.push(format!(
            "deletion/insertion curves at {CURVE_POINTS} points instead of one per token"
        ));
    }
    if cost(&config, &control) > budget && config.leave_one_out {
        config.leave_one_out = false;
        reduced.push("no leave-one-out Kendall τ".to_owned());
    }
    if cost(&config, &control) > budget && control.draws > 2 {
        control.draws = 2;
        reduced.push("random control averaged over 2 draws instead of 8".to_owned());
    }
    if cost(&config, &control) > budget && config.faithfulness_subsets > 8 {
        config.faithfulness_subsets = 8;
        reduced.push("faithfulness correlation over 8 subsets instead of 32".to_owned());
    }
    let planned = cost(&config, &control);
    if planned > budget {
        return (None, reduced, full);
    }
    (Some((config, control)), reduced, planned)
}

/// `[layer, query, key]` from one matrix per layer (`None` when there are none).
fn stack_layers(layers: &[Array2<f64>]) -> Option<Array3<f64>> {
    let views: Vec<_> = layers.iter().map(Array2::view).collect();
    ndarray::stack(Axis(0), &views).ok()
}

/// Builder of a comprehensive analysis.
///
/// # Examples
/// ```no_run
/// use explainability::{Analyzer, load, smollm2_gguf_path};
/// let model = load(smollm2_gguf_path())?;
/// let analysis = Analyzer::new().comprehensive_analysis(&model, "The capital of France is")?;
/// for line in &analysis.report.summary_en {
///     println!("{line}");
/// }
/// analysis.write_to("analysis")?;
/// # Ok::<(), explainability::Error>(())
/// ```
#[derive(Debug)]
pub struct Analyzer {
    framework: Framework,
    methods: Vec<String>,
    target: Target,
    attention: AttentionAnalysis,
    evaluate: bool,
    fidelity: FidelityConfig,
    top_k: usize,
    progress: bool,
    internals: bool,
    budget: AnalysisBudget,
}

impl Default for Analyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl Analyzer {
    /// Defaults: [`ANALYZER_METHODS`] from [`Framework::with_defaults`], the argmax next
    /// token's log-probability as target, attention analysis with head roles and flow,
    /// evaluation on, top 5 predictions, progress bars on.
    pub fn new() -> Self {
        Self {
            framework: Framework::with_defaults(),
            methods: ANALYZER_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            target: Target::argmax(),
            attention: AttentionAnalysis::new(),
            evaluate: true,
            fidelity: FidelityConfig::default(),
            top_k: 5,
            progress: true,
            internals: false,
            budget: AnalysisBudget::default(),
        }
    }

    /// Budgets of the steps that grow faster than the input (default
    /// [`AnalysisBudget::default`]; [`AnalysisBudget::unlimited`] for everything exact).
    pub fn budget(mut self, budget: AnalysisBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Uses `framework` for the attribution methods.
    pub fn framework(mut self, framework: Framework) -> Self {
        self.framework = framework;
        self
    }

    /// The attribution methods to run, by registered name.
    pub fn methods(mut self, methods: &[&str]) -> Self {
        self.methods = methods.iter().map(|m| (*m).to_owned()).collect();
        self
    }

    /// The target explained (default: log-probability of the argmax next token).
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Configuration of the attention analysis.
    pub fn attention(mut self, attention: AttentionAnalysis) -> Self {
        self.attention = attention;
        self
    }

    /// Whether to evaluate the attributions (fidelity, completeness, comprehensibility).
    pub fn evaluate(mut self, on: bool) -> Self {
        self.evaluate = on;
        self
    }

    /// Settings of the fidelity evaluation (removal strategy, bins, …).
    pub fn fidelity(mut self, config: FidelityConfig) -> Self {
        self.fidelity = config;
        self
    }

    /// How many next-token candidates to list.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = k.max(1);
        self
    }

    /// Whether to add the model-internals step (off by default): the logit lens and the
    /// direct logit attribution of the prediction against the runner-up
    /// ([`InternalsReport`](crate::InternalsReport)), summarised in the report and drawn in
    /// its HTML page. Needs a model with a final norm (decoders).
    pub fn internals(mut self, on: bool) -> Self {
        self.internals = on;
        self
    }

    /// Whether to show progress bars.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Runs everything on `text`.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::SequenceTooLong`], [`Error::UnknownMethod`] for a
    /// method that is not registered, and failures of the prediction or the attention
    /// analysis. A failing attribution method is reported in the result instead.
    pub fn comprehensive_analysis(
        &self,
        model: &dyn LanguageModel,
        text: &str,
    ) -> Result<ComprehensiveAnalysis> {
        for m in &self.methods {
            self.framework.get(m)?;
        }
        let steps_total = 3 + u64::from(self.evaluate) + u64::from(self.internals);
        let bar = self.bar(steps_total);
        let mut timings = BTreeMap::new();
        let mut steps: Vec<StepRecord> = Vec::new();
        let mut clock = Instant::now();
        let mut lap = |step: &str| {
            timings.insert(step.to_owned(), clock.elapsed().as_secs_f64());
            clock = Instant::now();
        };
        bar.set_message("prediction");
        let ids = model.encode(text, true)?;
        let n = ids.len();
        let tokens = model.token_strings(&ids)?;
        let prediction_clock = Instant::now();
        // One forward pass gives the prediction and the attention capture.
        let (capture, logits) = AttentionCapture::from_ids_with_logits(model, &ids)?;
        let top = top_predictions(model, &logits, self.top_k)?;
        // Seconds per token-pass, measured on that forward pass: the estimates shown beside
        // each later step.
        let per_token_pass = prediction_clock.elapsed().as_secs_f64() / n.max(1) as f64;
        let estimate = |token_passes: u64| token_passes as f64 * per_token_pass;
        let prediction = top.first().cloned().ok_or_else(|| {
            Error::invalid_argument("the model returned no next-token candidates")
        })?;
        // Passes the attribution methods share: the target resolved on these logits and,
        // for the attention methods, the head means of this capture.
        let mut shared = SharedPasses::new(&ids, &self.target);
        let resolved = self.target.resolve(&logits)?;
        let value = resolved.evaluate(&logits)?.f_double_value(&[0])?;
        shared.insert(
            RESOLVED_TARGET,
            &ids,
            &self.target,
            ResolvedTarget { target: resolved, value },
        );
        drop(logits);
        bar.inc(1);
        lap("prediction");

        bar.set_message("attention");
        let store_layers = n <= self.budget.stored_attention_max_tokens;
        let means = (store_layers || self.methods.iter().any(|m| m.starts_with("attention_")))
            .then(|| AttentionMeans::of(&capture));
        let layer_attention = if store_layers {
            steps.push(StepRecord::new("attention.layer_matrices", StepOutcome::Exact, 0.0));
            means.as_ref().and_then(|m| stack_layers(&m.means))
        } else {
            steps.push(StepRecord::new(
                "attention.layer_matrices",
                StepOutcome::Skipped {
                    why: format!(
                        "{n} tokens is over the {} of stored_attention_max_tokens: the per-layer matrices ({} layers × {n}² values) and the charts and graphs drawn from them (last-layer heatmap, layered-attention and attention-flow graphs) are left out",
                        self.budget.stored_attention_max_tokens,
                        capture.n_layers()
                    ),
                },
                0.0,
            ));
            None
        };
        let attention = self.attention.run_on_capture_with_progress(model, capture, &mut |s| {
            let message = match s.estimate_seconds {
                Some(e) => format!("{} ({})", s.step, eta(e)),
                None => s.step,
            };
            bar.set_message(message);
        })?;
        steps.extend(attention.steps.iter().cloned());
        bar.inc(1);
        lap("attention");

        let mut methods: Vec<&str> = Vec::new();
        let mut planned = 0u64;
        for m in &self.methods {
            match method_token_passes(m, n) {
                Some(cost) if cost > self.budget.attribution_token_passes => {
                    steps.push(StepRecord::new(
                        format!("attribution.{m}"),
                        StepOutcome::Skipped {
                            why: format!(
                                "{m} needs at least {cost} token-passes on {n} tokens, over the budget of {} (attribution_token_passes)",
                                self.budget.attribution_token_passes
                            ),
                        },
                        0.0,
                    ));
                }
                cost => {
                    planned = planned.saturating_add(cost.unwrap_or(0));
                    methods.push(m.as_str());
                }
            }
        }
        bar.set_message(format!("attributions ({})", eta(estimate(planned))));
        let attribution_clock = Instant::now();
        if let Some(means) = means {
            AttentionExplainer::share_means(&mut shared, &ids, &self.target, means);
        }
        let attributions = self.framework.compare_methods_shared(
            model,
            text,
            &ids,
            &methods,
            &self.target,
            &mut shared,
        )?;
        drop(shared);
        steps.push(StepRecord::new(
            "attributions",
            StepOutcome::Exact,
            attribution_clock.elapsed().as_secs_f64(),
        ));
        let agreement = MethodAgreement::of(&attributions.explanations());
        bar.inc(1);
        lap("attributions");

        let evaluation = if self.evaluate {
            let explanations = attributions.explanations();
            let evaluated: Vec<&str> = explanations.iter().map(|e| e.method.as_str()).collect();
            let (plan, reduced, planned) =
                plan_evaluation(&evaluated, &self.fidelity, n, self.budget.evaluation_token_passes);
            let why = |planned: u64| {
                format!(
                    "evaluating {} methods on {n} tokens needs {planned} token-passes, over the budget of {} (evaluation_token_passes)",
                    evaluated.len(),
                    self.budget.evaluation_token_passes
                )
            };
            match plan {
                Some((config, control)) => {
                    bar.set_message(format!("evaluation ({})", eta(estimate(planned))));
                    let eval_clock = Instant::now();
                    let e = crate::evaluation::evaluate_all(model, &explanations, &config, control);
                    let outcome = if reduced.is_empty() {
                        StepOutcome::Exact
                    } else {
                        StepOutcome::Approximated {
                            how: reduced.join("; "),
                            why: why(evaluation_token_passes(
                                &evaluated,
                                &self.fidelity,
                                RandomControl::default().draws,
                                n,
                            )),
                        }
                    };
                    steps.push(StepRecord::new(
                        "evaluation",
                        outcome,
                        eval_clock.elapsed().as_secs_f64(),
                    ));
                    bar.inc(1);
                    lap("evaluation");
                    Some(e)
                }
                None => {
                    steps.push(StepRecord::new(
                        "evaluation",
                        StepOutcome::Skipped {
                            why: format!("{} even with the cheapest settings", why(planned)),
                        },
                        0.0,
                    ));
                    bar.inc(1);
                    None
                }
            }
        } else {
            steps.push(StepRecord::new(
                "evaluation",
                StepOutcome::Skipped { why: "evaluation is turned off".into() },
                0.0,
            ));
            None
        };
        let internals = if self.internals {
            bar.set_message("internals");
            let clock = Instant::now();
            let report =
                crate::internals::InternalsReport::compute(model, &ids, &prediction, top.get(1))?;
            // The lens covers a fixed window of the last positions and DLA one position: the
            // step grows linearly with the input and needs no budget.
            steps.push(StepRecord::new(
                "internals",
                StepOutcome::Exact,
                clock.elapsed().as_secs_f64(),
            ));
            bar.inc(1);
            lap("internals");
            Some(report)
        } else {
            None
        };
        bar.finish_and_clear();

        let mut analysis = ComprehensiveAnalysis {
            model: model.info().name.clone(),
            text: text.to_owned(),
            token_ids: ids,
            tokens,
            prediction,
            top_k: top,
            attention,
            layer_attention,
            attributions,
            agreement,
            evaluation,
            timings,
            steps,
            report: Report::default(),
            internals,
        };
        analysis.report = analysis.generate_report();
        Ok(analysis)
    }

    /// Compares `model` (under `name`) with `others` on `text`.
    ///
    /// # Errors
    /// As [`ModelComparison::new`] and [`ModelComparison::compare`].
    pub fn compare_with_other_models<'m>(
        &self,
        name: &str,
        model: &'m dyn LanguageModel,
        others: Vec<(String, &'m dyn LanguageModel)>,
        text: &str,
    ) -> Result<TextComparison> {
        let mut all: Vec<(String, &'m dyn LanguageModel)> = vec![(name.to_owned(), model)];
        all.extend(others);
        ModelComparison::new(all)?.top_k(self.top_k).progress(self.progress).compare(text)
    }

    fn bar(&self, steps: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps);
        if let Ok(style) =
            ProgressStyle::with_template("analysis: [{bar:20}] {pos}/{len} {elapsed:>4} {msg}")
        {
            bar.set_style(style);
        }
        bar
    }
}

/// Pairwise Spearman correlation between the methods' scores on the same tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodAgreement {
    /// Methods, in order.
    pub methods: Vec<String>,
    /// Spearman correlation per pair.
    pub spearman: Array2<f64>,
}

impl MethodAgreement {
    fn of(explanations: &[&Explanation]) -> Self {
        let n = explanations.len();
        let spearman = Array2::from_shape_fn((n, n), |(a, b)| {
            spearman(&explanations[a].scores, &explanations[b].scores)
        });
        Self { methods: explanations.iter().map(|e| e.method.clone()).collect(), spearman }
    }
}

/// One finding of the report, in both languages, with a stable code for programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identifier (`weak_locality`, `unreliable_attribution`, …).
    pub code: String,
    /// English text.
    pub en: String,
    /// Chinese text.
    pub zh: String,
}

impl Finding {
    pub(crate) fn new(code: &str, en: String, zh: String) -> Self {
        Self { code: code.to_owned(), en, zh }
    }
}

/// The readable part of an analysis: named metrics, summary and recommendations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Flat named metrics (`attention.locality`, `integrated_gradients.relative_delta`, …).
    pub metrics: BTreeMap<String, f64>,
    /// Summary sentences, English.
    pub summary_en: Vec<String>,
    /// Summary sentences, Chinese.
    pub summary_zh: Vec<String>,
    /// Recommendations, each in both languages.
    pub recommendations: Vec<Finding>,
}

/// Everything [`Analyzer::comprehensive_analysis`] computed for one text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComprehensiveAnalysis {
    /// Model name.
    pub model: String,
    /// The text.
    pub text: String,
    /// Its token ids.
    pub token_ids: Vec<i64>,
    /// A readable string per token.
    pub tokens: Vec<String>,
    /// The most likely next token.
    pub prediction: TokenPrediction,
    /// The top next-token candidates.
    pub top_k: Vec<TokenPrediction>,
    /// Attention metrics, roles, rollout, flow and summaries.
    pub attention: AttentionReport,
    /// Head-averaged attention per layer, `[layer, query, key]`, kept for the attention
    /// charts and graphs when the text has at most [`STORED_ATTENTION_MAX_TOKENS`] tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_attention: Option<Array3<f64>>,
    /// Every method's attribution (or failure).
    pub attributions: MethodComparison,
    /// How far the methods agree.
    pub agreement: MethodAgreement,
    /// Quality of each attribution, when evaluated.
    pub evaluation: Option<Vec<crate::evaluation::MethodEvaluation>>,
    /// Seconds spent per step (`prediction`, `attention`, `attributions`, `evaluation`).
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
    /// What each budgeted step did (exact, approximated or skipped, and why), with its
    /// seconds: the attention steps, each attribution method skipped, the evaluation and the
    /// per-layer matrices (see [`AnalysisBudget`]).
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// Summary and recommendations.
    pub report: Report,
    /// Logit lens and direct logit attribution of the prediction, when
    /// [`Analyzer::internals`] was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internals: Option<crate::internals::InternalsReport>,
}

impl ComprehensiveAnalysis {
    /// Builds the report from the results: metrics, summary sentences and recommendations
    /// (attention: weak locality, very sparse or diffuse attention, attention sinks;
    /// attributions: large convergence deltas, discontinuous paths, methods that disagree,
    /// methods no better than the random control).
    pub fn generate_report(&self) -> Report {
        let mut r = Report::default();
        let m = &self.attention.metrics.model;
        for (k, v) in [
            ("attention.locality", m.locality),
            ("attention.sparsity", m.sparsity),
            ("attention.entropy", m.entropy),
            ("attention.normalized_entropy", m.normalized_entropy),
            ("attention.focus", m.focus),
            ("attention.mean_distance", m.mean_distance),
            ("prediction.probability", self.prediction.probability),
        ] {
            r.metrics.insert(k.to_owned(), v);
        }
        r.summary_en.push(format!(
            "{} predicts {:?} after {:?} with probability {:.1}%.",
            self.model,
            self.prediction.token,
            self.text,
            100.0 * self.prediction.probability
        ));
        r.summary_zh.push(format!(
            "{} 在 {:?} 之后预测 {:?}，概率 {:.1}%。",
            self.model,
            self.text,
            self.prediction.token,
            100.0 * self.prediction.probability
        ));
        r.summary_en.extend(self.attention.summary_en.iter().cloned());
        r.summary_zh.extend(self.attention.summary_zh.iter().cloned());
        self.attention_findings(&mut r);
        self.attribution_findings(&mut r);
        self.budget_findings(&mut r);
        if let Some(evaluation) = &self.evaluation {
            crate::evaluation::findings(evaluation, &mut r);
        }
        if let Some(internals) = &self.internals {
            r.summary_en.extend(internals.summary_en());
            r.summary_zh.extend(internals.summary_zh());
            r.metrics.insert("internals.dla_metric".into(), internals.dla.metric_value);
            r.metrics.insert("internals.dla_total".into(), internals.dla.total);
        }
        r
    }

    fn attention_findings(&self, r: &mut Report) {
        use explain_attention::{DIFFUSE_ABOVE, LONG_RANGE_BELOW, VERY_SPARSE_ABOVE};
        let m = &self.attention.metrics.model;
        if m.locality < LONG_RANGE_BELOW {
            r.recommendations.push(Finding::new(
                "weak_locality",
                format!("Locality is weak ({:.2}): attention reaches far back, so explanations that only look at nearby tokens will miss context; prefer rollout/flow or gradient methods over last-layer attention.", m.locality),
                format!("局部性较弱（{:.2}）：注意力跨越较远距离，只看邻近词元的解释会遗漏上下文；建议使用 rollout/flow 或梯度方法，而不是仅看最后一层注意力。", m.locality),
            ));
        }
        if m.sparsity > VERY_SPARSE_ABOVE {
            r.recommendations.push(Finding::new(
                "very_sparse_attention",
                format!("Attention is very sparse ({:.0}% of weights below the threshold): a few heads carry the routing; inspect the top heads and test them by ablation before trusting averages.", 100.0 * m.sparsity),
                format!("注意力非常稀疏（{:.0}% 的权重低于阈值）：少数注意力头承担了信息路由；在信任平均值之前，先检查主要的注意力头并用消融验证。", 100.0 * m.sparsity),
            ));
        }
        if m.entropy > DIFFUSE_ABOVE {
            r.recommendations.push(Finding::new(
                "diffuse_attention",
                format!("Attention is diffuse (entropy {:.2} nats): raw attention weights say little here; rely on gradient attributions.", m.entropy),
                format!("注意力较为分散（熵 {:.2}）：原始注意力权重的解释力有限；请以梯度归因为准。", m.entropy),
            ));
        }
        if let Some(&first) = self.attention.rollout.first()
            && first > SINK_ABOVE
            && self.tokens.len() > 1
        {
            r.metrics.insert("attention.rollout_first_token".into(), first);
            r.recommendations.push(Finding::new(
                "attention_sink",
                format!("Attention rollout puts {:.0}% on the first token (an attention sink that compounds over layers); read rollout with care and compare with attention flow.", 100.0 * first),
                format!("注意力展开（rollout）将 {:.0}% 的权重放在第一个词元上（注意力汇聚点在层间累积）；解读 rollout 时需谨慎，并与注意力流对比。", 100.0 * first),
            ));
        }
    }

    /// Steps approximated or skipped for a budget (not those the user turned off).
    pub fn degraded_steps(&self) -> Vec<&StepRecord> {
        self.steps
            .iter()
            .filter(|s| match &s.outcome {
                StepOutcome::Exact => false,
                StepOutcome::Approximated { .. } => true,
                StepOutcome::Skipped { why } => !why.contains("turned off"),
            })
            .collect()
    }

    fn budget_findings(&self, r: &mut Report) {
        let degraded = self.degraded_steps();
        if degraded.is_empty() {
            return;
        }
        let list: Vec<String> =
            degraded.iter().map(|s| format!("{} ({})", s.step, s.outcome.label())).collect();
        let zh_list: Vec<String> = degraded
            .iter()
            .map(|s| {
                let label = if matches!(s.outcome, StepOutcome::Skipped { .. }) {
                    "已跳过"
                } else {
                    "近似计算"
                };
                format!("{}（{label}）", s.step)
            })
            .collect();
        r.recommendations.push(Finding::new(
            "budget_degraded",
            format!("To stay within the analysis budgets on {} tokens, some steps were approximated or skipped: {}. The Steps section says how and why; raise the budgets (Analyzer::budget, AttentionAnalysis::flow_max_edges, or `explain analyze --exact`) to compute them exactly.", self.tokens.len(), list.join(", ")),
            format!("为了在 {} 个词元上不超出分析预算，部分步骤做了近似或被跳过：{}。“步骤”一节说明了方式与原因；提高预算（Analyzer::budget、AttentionAnalysis::flow_max_edges 或 `explain analyze --exact`）即可精确计算。", self.tokens.len(), zh_list.join("、")),
        ));
    }

    /// The step records as a Markdown section (empty when there are none).
    fn steps_markdown(&self) -> String {
        if self.steps.is_empty() {
            return String::new();
        }
        let mut s = String::from(
            "\n## Steps / 步骤\n\n| step | status | seconds | how / why |\n|---|---|---|---|\n",
        );
        for step in &self.steps {
            s.push_str(&format!(
                "| {} | {} | {:.2} | {} |\n",
                step.step,
                step.outcome.label(),
                step.seconds,
                step.outcome.explanation().replace('|', "\\|")
            ));
        }
        s
    }

    fn attribution_findings(&self, r: &mut Report) {
        for (method, failure) in self.attributions.failures() {
            r.recommendations.push(Finding::new(
                "method_failed",
                format!("{method} failed: {}", failure.message),
                format!("{method} 运行失败：{}", failure.message),
            ));
        }
        for e in self.attributions.explanations() {
            if let Some(v) = e.target_value {
                r.metrics.insert(format!("{}.target_value", e.method), v);
            }
            let Some(delta) = e.convergence_delta else { continue };
            r.metrics.insert(format!("{}.convergence_delta", e.method), delta);
            let total: f64 = e.scores.sum() - delta;
            let relative = if total.abs() > 0.0 { (delta / total).abs() } else { delta.abs() };
            r.metrics.insert(format!("{}.relative_delta", e.method), relative);
            if relative > UNRELIABLE_DELTA_ABOVE {
                r.recommendations.push(Finding::new(
                    "unreliable_attribution",
                    format!("{}: the convergence delta is {:.0}% of F(x) − F(baseline) (above {:.0}%): the attributions do not add up to the output change; use adaptive quadrature (IntegratedGradients::adaptive) or more steps.", e.method, 100.0 * relative, 100.0 * UNRELIABLE_DELTA_ABOVE),
                    format!("{}：收敛误差为 F(x) − F(基线) 的 {:.0}%（超过 {:.0}%）：归因之和与输出变化不符；请使用自适应积分（IntegratedGradients::adaptive）或增加步数。", e.method, 100.0 * relative, 100.0 * UNRELIABLE_DELTA_ABOVE),
                ));
            }
            if let Some(warning) = e.metadata.get("warning_path_discontinuity") {
                r.recommendations.push(Finding::new(
                    "path_discontinuity",
                    format!("{}: {}", e.method, warning.as_str().unwrap_or_default()),
                    format!("{}：积分路径在基线附近几乎不连续（RMSNorm 模型使用零基线时常见）；请改用 eos 词元基线或自适应积分。", e.method),
                ));
            }
        }
        let a = &self.agreement;
        for i in 0..a.methods.len() {
            for j in i + 1..a.methods.len() {
                let (mi, mj) = (&a.methods[i], &a.methods[j]);
                if is_control(mi) || is_control(mj) || !is_gradient(mi) || !is_gradient(mj) {
                    continue;
                }
                let rho = a.spearman[[i, j]];
                r.metrics.insert(format!("agreement.{mi}.{mj}"), rho);
                if rho < DISAGREE_BELOW {
                    r.recommendations.push(Finding::new(
                        "methods_disagree",
                        format!("{mi} and {mj} disagree (Spearman {rho:.2} < {DISAGREE_BELOW}): do not trust either ranking alone; check which one passes the fidelity tests."),
                        format!("{mi} 与 {mj} 的结论不一致（Spearman {rho:.2} < {DISAGREE_BELOW}）：不要单独相信任一排序；请查看哪一种通过了保真度检验。"),
                    ));
                }
            }
        }
        if let Some(e) =
            self.attributions.explanations().into_iter().find(|e| is_gradient(&e.method))
        {
            let top: Vec<String> =
                e.top_k(3).into_iter().map(|(_, t, s)| format!("{t:?} ({s:+.3})")).collect();
            r.summary_en.push(format!(
                "By {}, the tokens that drive the prediction most are {}.",
                e.method,
                top.join(", ")
            ));
            r.summary_zh.push(format!(
                "按 {}，对预测影响最大的词元是 {}。",
                e.method,
                top.join("、")
            ));
        }
    }

    /// The analysis as pretty JSON.
    ///
    /// # Errors
    /// [`Error::Json`] (not expected for these types).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|source| Error::Json { path: PathBuf::from("<analysis>"), source })
    }

    /// An analysis read back from [`ComprehensiveAnalysis::to_json`].
    ///
    /// # Errors
    /// [`Error::Json`].
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|source| Error::Json { path: PathBuf::from("<analysis>"), source })
    }

    /// The report as Markdown: prediction, summary, recommendations, metrics and the
    /// attribution table.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let md = |t: &str| t.replace('|', "\\|").replace('\n', " ");
        s.push_str(&format!("# Explanation of {}\n\n", md(&self.model)));
        s.push_str(&format!("Text: `{}`\n\n", self.text.replace('`', "'")));
        s.push_str("## Prediction\n\n| token | probability |\n|---|---|\n");
        for p in &self.top_k {
            s.push_str(&format!("| {:?} | {:.4} |\n", md(&p.token), p.probability));
        }
        s.push_str("\n## Summary\n\n");
        for line in &self.report.summary_en {
            s.push_str(&format!("- {line}\n"));
        }
        s.push_str("\n## 摘要\n\n");
        for line in &self.report.summary_zh {
            s.push_str(&format!("- {line}\n"));
        }
        s.push_str("\n## Recommendations / 建议\n\n");
        if self.report.recommendations.is_empty() {
            s.push_str("- None: no rule fired. / 无。\n");
        }
        for f in &self.report.recommendations {
            s.push_str(&format!("- **{}**: {}\n  - {}\n", f.code, f.en, f.zh));
        }
        s.push_str("\n## Attributions\n\n| token |");
        let explanations = self.attributions.explanations();
        for e in &explanations {
            s.push_str(&format!(" {} |", e.method));
        }
        s.push_str("\n|---|");
        s.push_str(&"---|".repeat(explanations.len()));
        s.push('\n');
        for (i, t) in self.tokens.iter().enumerate() {
            s.push_str(&format!("| {:?} |", md(t)));
            for e in &explanations {
                s.push_str(&format!(" {:+.4} |", e.scores[i]));
            }
            s.push('\n');
        }
        if let Some(evaluation) = &self.evaluation {
            s.push_str(&crate::evaluation::markdown_table(evaluation));
        }
        if let Some(internals) = &self.internals {
            s.push_str(&internals.to_markdown());
        }
        s.push_str("\n## Metrics\n\n| metric | value |\n|---|---|\n");
        for (k, v) in &self.report.metrics {
            s.push_str(&format!("| {k} | {v:.4} |\n"));
        }
        s.push_str(&self.steps_markdown());
        s
    }

    /// Writes `analysis.json`, `report.md`, `report.html` and the charts and graphs into
    /// `dir` (created if missing); returns the paths written.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn write_to(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut written = Vec::new();
        let mut write = |name: &str, contents: &[u8]| -> Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))?;
            written.push(path);
            Ok(())
        };
        write("analysis.json", self.to_json()?.as_bytes())?;
        write("report.md", self.to_markdown().as_bytes())?;
        written.extend(self.generate_visualizations(dir)?);
        Ok(written)
    }
}

/// "about 3 s" for a progress message.
fn eta(seconds: f64) -> String {
    if seconds < 1.0 { "under 1 s".to_owned() } else { format!("about {seconds:.0} s") }
}

fn is_control(method: &str) -> bool {
    method == "random"
}

fn is_gradient(method: &str) -> bool {
    !method.starts_with("attention") && !is_control(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evaluation_is_reduced_step_by_step_until_it_fits() {
        let methods = ["saliency", "integrated_gradients", "random"];
        let config = FidelityConfig::default();
        let n = 512;
        let full = evaluation_token_passes(&methods, &config, 8, n);
        // Rows per call: 1 + 2·5 bins + 2·(512 + 1) curve points + 32 subsets + 512 LOO.
        assert_eq!(full, 10 * (1 + 10 + 1026 + 32 + 512) * 512);
        let (plan, reduced, planned) = plan_evaluation(&methods, &config, n, full);
        assert!(plan.is_some() && reduced.is_empty() && planned == full);

        let (plan, reduced, planned) = plan_evaluation(&methods, &config, n, full / 4);
        let (c, control) = plan.unwrap();
        assert_eq!((c.curve_steps, c.leave_one_out, control.draws), (20, false, 8));
        assert_eq!(reduced.len(), 2);
        assert!(planned <= full / 4);

        let cheapest = 4 * (1 + 10 + 42 + 8) * 512;
        let (plan, reduced, planned) = plan_evaluation(&methods, &config, n, cheapest as u64);
        let (c, control) = plan.unwrap();
        assert_eq!((c.faithfulness_subsets, control.draws), (8, 2));
        assert_eq!((reduced.len(), planned), (4, cheapest as u64));

        let (plan, _, _) = plan_evaluation(&methods, &config, n, cheapest as u64 - 1);
        assert!(plan.is_none());
    }

    #[test]
    fn known_methods_have_costs_and_unknown_ones_none() {
        assert_eq!(method_token_passes("integrated_gradients", 100), Some(2600));
        assert_eq!(method_token_passes("random", 100), Some(0));
        assert_eq!(method_token_passes("leave_one_out", 10), Some(110));
        assert_eq!(method_token_passes("my_method", 10), None);
        // A budget that is never reached keeps every step.
        assert_eq!(AnalysisBudget::unlimited().evaluation_token_passes, u64::MAX);
    }
}
