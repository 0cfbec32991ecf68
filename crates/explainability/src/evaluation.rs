//! Evaluation of every attribution of an analysis with explain-eval's metric families:
//! fidelity (ERASER comprehensiveness / sufficiency, deletion / insertion curves,
//! faithfulness correlation, leave-one-out τ), completeness and comprehensibility. A method
//! whose evaluation fails keeps its error; the others are still evaluated.
//!
//! The random control (the method named `"random"`) is evaluated in expectation: its
//! fidelity is the mean over [`RandomControl::default`]'s draws
//! ([`random_control_fidelity`]), not the one draw the analysis displays — a single draw's
//! comprehensiveness varies by more than the gap between most methods.

use serde::{Deserialize, Serialize};

use explain_eval::{
    Completeness, Comprehensibility, FidelityConfig, FidelityReport, RandomControl, completeness,
    comprehensibility, fidelity, random_control_fidelity,
};
use explainability_core::{Explanation, LanguageModel};

use crate::analyzer::{Finding, Report};

/// Method name of the random control.
const RANDOM: &str = "random";

/// `k` of the top-k share of completeness.
pub const TOP_K_SHARE: usize = 3;

/// Largest |AOPC comprehensiveness − the random control's| below which the evaluation is
/// called inconclusive instead of naming a most faithful method.
pub const INCONCLUSIVE_BELOW: f64 = 0.05;

/// Quality of one method's attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodEvaluation {
    /// Method name.
    pub method: String,
    /// Fidelity, or `None` when it failed (see `error`).
    pub fidelity: Option<FidelityReport>,
    /// Completeness residual and top-k share.
    pub completeness: Option<Completeness>,
    /// Gini sparseness, entropy and effective number of tokens of `|a|`.
    pub comprehensibility: Comprehensibility,
    /// Why fidelity or completeness could not be computed.
    pub error: Option<String>,
}

/// Names of [`MethodEvaluation::values`], in order (arrows: which direction is better).
pub const EVALUATION_COLUMNS: [&str; 10] = [
    "comprehensiveness ↑",
    "sufficiency ↓",
    "deletion AUC ↓",
    "insertion AUC ↑",
    "faithfulness corr.",
    "LOO Kendall τ",
    "top-3 share",
    "relative residual",
    "Gini",
    "effective tokens",
];

impl MethodEvaluation {
    /// The evaluation as one row of numbers named by [`EVALUATION_COLUMNS`] (`None` where a
    /// metric was not computed), for tables.
    pub fn values(&self) -> [Option<f64>; 10] {
        let f = self.fidelity.as_ref();
        let c = self.completeness.as_ref();
        [
            f.map(|f| f.aopc_comprehensiveness),
            f.map(|f| f.aopc_sufficiency),
            f.map(|f| f.deletion_auc),
            f.map(|f| f.insertion_auc),
            f.and_then(|f| f.faithfulness_correlation),
            f.and_then(|f| f.loo_kendall_tau),
            c.map(|c| c.top_k_share),
            c.and_then(|c| c.relative_residual),
            Some(self.comprehensibility.gini),
            Some(self.comprehensibility.effective_tokens),
        ]
    }
}

/// Evaluates each explanation on `model`, the random control over `control`'s draws.
pub fn evaluate_all(
    model: &dyn LanguageModel,
    explanations: &[&Explanation],
    config: &FidelityConfig,
    control: RandomControl,
) -> Vec<MethodEvaluation> {
    explanations
        .iter()
        .map(|e| {
            let scores: Vec<f64> = e.scores.to_vec();
            let mut errors = Vec::new();
            let fidelity = if e.method == RANDOM {
                random_control_fidelity(model, e, config, control)
            } else {
                fidelity(model, e, config)
            };
            let fidelity = fidelity.map_err(|err| errors.push(format!("fidelity: {err}"))).ok();
            let completeness = completeness(e, TOP_K_SHARE)
                .map_err(|err| errors.push(format!("completeness: {err}")))
                .ok();
            MethodEvaluation {
                method: e.method.clone(),
                fidelity,
                completeness,
                comprehensibility: comprehensibility(&scores),
                error: (!errors.is_empty()).then(|| errors.join("; ")),
            }
        })
        .collect()
}

/// Adds the evaluation's metrics and findings to `report`: each method's metrics under
/// `eval.<method>.<metric>`, the most faithful method, and every method that does not beat
/// the random control on comprehensiveness.
pub fn findings(evaluation: &[MethodEvaluation], report: &mut Report) {
    for m in evaluation {
        let key = |name: &str| format!("eval.{}.{name}", m.method);
        if let Some(f) = &m.fidelity {
            report.metrics.insert(key("aopc_comprehensiveness"), f.aopc_comprehensiveness);
            report.metrics.insert(key("aopc_sufficiency"), f.aopc_sufficiency);
            report.metrics.insert(key("deletion_auc"), f.deletion_auc);
            report.metrics.insert(key("insertion_auc"), f.insertion_auc);
            if let Some(v) = f.faithfulness_correlation {
                report.metrics.insert(key("faithfulness_correlation"), v);
            }
            if let Some(v) = f.loo_kendall_tau {
                report.metrics.insert(key("loo_kendall_tau"), v);
            }
        }
        if let Some(c) = &m.completeness {
            report.metrics.insert(key("top_k_share"), c.top_k_share);
            if let Some(r) = c.relative_residual {
                report.metrics.insert(key("relative_residual"), r);
            }
        }
        report.metrics.insert(key("gini"), m.comprehensibility.gini);
        report.metrics.insert(key("effective_tokens"), m.comprehensibility.effective_tokens);
        if let Some(error) = &m.error {
            report.recommendations.push(Finding::new(
                "evaluation_failed",
                format!("{}: evaluation failed ({error}).", m.method),
                format!("{}：评估失败（{error}）。", m.method),
            ));
        }
    }
    let aopc = |m: &MethodEvaluation| m.fidelity.as_ref().map(|f| f.aopc_comprehensiveness);
    let Some(random) = evaluation.iter().find(|m| m.method == RANDOM).and_then(aopc) else {
        return;
    };
    let mut real: Vec<(&str, f64)> = evaluation
        .iter()
        .filter(|m| m.method != RANDOM)
        .filter_map(|m| aopc(m).map(|v| (m.method.as_str(), v)))
        .collect();
    real.sort_by(|a, b| b.1.total_cmp(&a.1));
    let spread = real.iter().map(|(_, v)| (v - random).abs()).fold(0.0_f64, f64::max);
    if !real.is_empty() && spread < INCONCLUSIVE_BELOW {
        report.recommendations.push(Finding::new(
            "evaluation_inconclusive",
            format!("Removal-based fidelity cannot tell the methods apart on this input: every method's comprehensiveness is within {INCONCLUSIVE_BELOW} of the random control ({random:.3}). Removing any token changes the prediction about equally (typical of very short prompts); evaluate on longer texts or a dataset (explain-eval's evaluator) before ranking methods."),
            format!("基于移除的保真度无法在该输入上区分各方法：所有方法的全面性与随机对照（{random:.3}）相差不到 {INCONCLUSIVE_BELOW}。移除任一词元对预测的影响几乎相同（极短提示中常见）；在比较方法之前，请在更长的文本或数据集上评估（explain-eval 的评估器）。"),
        ));
        return;
    }
    if let Some(&(best, v)) = real.first() {
        report.summary_en.push(format!(
            "Most faithful by comprehensiveness: {best} (AOPC {v:.3}; the random control scores {random:.3})."
        ));
        report.summary_zh.push(format!(
            "按全面性（comprehensiveness）最忠实的方法：{best}（AOPC {v:.3}；随机对照为 {random:.3}）。"
        ));
    }
    for &(method, v) in &real {
        if v <= random {
            report.recommendations.push(Finding::new(
                "no_better_than_random",
                format!("{method} is no better than the random control on comprehensiveness (AOPC {v:.3} ≤ {random:.3}): removing its top tokens changes the prediction no more than removing random ones, so its ranking should not be trusted for this input."),
                format!("{method} 在全面性上不优于随机对照（AOPC {v:.3} ≤ {random:.3}）：移除其最重要的词元对预测的影响不比随机移除更大，因此不应信任它对该输入给出的排序。"),
            ));
        }
    }
}

/// The evaluation as a Markdown section.
pub fn markdown_table(evaluation: &[MethodEvaluation]) -> String {
    let mut s = String::from(
        "\n## Evaluation\n\nComprehensiveness (AOPC, higher is better), sufficiency (AOPC, lower is better), deletion AUC (lower is better), insertion AUC (higher is better), faithfulness correlation, leave-one-out Kendall τ, top-3 share of |a|, relative completeness residual, Gini sparseness, effective number of tokens.\n\n| method | compr. | suff. | del. AUC | ins. AUC | faithf. | LOO τ | top-3 | residual | Gini | eff. tokens |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in evaluation {
        let cells: Vec<String> = m
            .values()
            .iter()
            .map(|v| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.3}")))
            .collect();
        s.push_str(&format!("| {} | {} |\n", m.method, cells.join(" | ")));
    }
    s
}
