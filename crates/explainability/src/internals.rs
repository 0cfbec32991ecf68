//! The analyzer's optional internals step ([`Analyzer::internals`](crate::Analyzer::internals)):
//! the logit lens and the direct logit attribution of its prediction, with a short summary
//! (where the prediction first becomes top-1, the largest components) for the reports.

use serde::{Deserialize, Serialize};

use explain_circuits::{
    DirectLogitAttribution, DlaComponent, LensTarget, LogitDiff, LogitLens, LogitLensResult,
    direct_logit_attribution,
};
use explainability_core::{Error, LanguageModel, Result, TokenPrediction};

/// How many of the last positions the analyzer's logit lens reads (its logits grow as layers
/// × positions × vocabulary, so a long text is read at its end).
pub const INTERNALS_LENS_POSITIONS: usize = 12;
/// Top tokens per cell of the analyzer's logit lens.
pub const INTERNALS_LENS_TOP_K: usize = 3;
/// How many DLA components the summary names (largest |value| first).
pub const INTERNALS_TOP_COMPONENTS: usize = 5;

/// The internals of one prediction: logit lens and direct logit attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InternalsReport {
    /// The predicted token (the lens's target and the DLA's answer).
    pub prediction: TokenPrediction,
    /// The runner-up the DLA contrasts with (`None`: the DLA explains the logit itself).
    pub against: Option<TokenPrediction>,
    /// The logit lens over the last [`INTERNALS_LENS_POSITIONS`] positions, target: the
    /// prediction.
    pub lens: LogitLensResult,
    /// Direct logit attribution of `logit(prediction) − logit(runner-up)` at the last position
    /// (final-norm scale frozen at the real final residual).
    pub dla: DirectLogitAttribution,
    /// First lens entry (hook point) where the prediction is top-1 at the last position.
    pub first_top1: Option<String>,
    /// The entry from which the prediction stays top-1 through the output.
    pub stays_top1_from: Option<String>,
    /// The [`INTERNALS_TOP_COMPONENTS`] DLA components with the largest |value|.
    pub top_components: Vec<DlaComponent>,
}

impl InternalsReport {
    /// Runs the lens and the DLA for `prediction` (contrasted with `against` when given) on
    /// `ids`.
    ///
    /// # Errors
    /// [`Error::EmptyText`] for no tokens; as [`LogitLens::run_positions`] and
    /// [`direct_logit_attribution`] ([`Error::UnsupportedOperation`] for a model without a
    /// final norm, e.g. a BERT encoder).
    pub fn compute(
        model: &dyn LanguageModel,
        ids: &[i64],
        prediction: &TokenPrediction,
        against: Option<&TokenPrediction>,
    ) -> Result<Self> {
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        let start = ids.len().saturating_sub(INTERNALS_LENS_POSITIONS);
        let lens =
            LogitLens { top_k: INTERNALS_LENS_TOP_K, target: LensTarget::Token(prediction.id) }
                .run_positions(model, ids, start..ids.len())?;
        let metric = match against {
            Some(b) => LogitDiff::new(prediction.id, b.id),
            None => LogitDiff::logit(prediction.id),
        };
        let dla = direct_logit_attribution(model, ids, metric)?;
        let ranks: Vec<Option<usize>> =
            lens.cells.iter().map(|row| row.last().and_then(|c| c.target_rank)).collect();
        let first_top1 = ranks.iter().position(|r| *r == Some(0));
        let stays = ranks
            .iter()
            .rposition(|r| *r != Some(0))
            .map_or(Some(0), |i| (i + 1 < ranks.len()).then_some(i + 1));
        let label = |i: Option<usize>| i.and_then(|i| lens.labels.get(i).cloned());
        let mut top_components = dla.components.clone();
        top_components.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
        top_components.truncate(INTERNALS_TOP_COMPONENTS);
        Ok(Self {
            prediction: prediction.clone(),
            against: against.cloned(),
            first_top1: label(first_top1),
            stays_top1_from: label(stays),
            lens,
            dla,
            top_components,
        })
    }

    /// What the DLA explains, e.g. `logit(" Paris") − logit(" the")`.
    pub fn metric_text(&self) -> String {
        match &self.against {
            Some(b) => format!("logit({:?}) − logit({:?})", self.prediction.token, b.token),
            None => format!("logit({:?})", self.prediction.token),
        }
    }

    /// Summary sentences, English.
    pub fn summary_en(&self) -> Vec<String> {
        let t = &self.prediction.token;
        let lens = match (&self.first_top1, &self.stays_top1_from) {
            (Some(first), Some(stays)) if first == stays => format!(
                "Logit lens: {t:?} becomes the top-1 next token at {first} and stays top-1 to the output."
            ),
            (Some(first), Some(stays)) => format!(
                "Logit lens: {t:?} is first top-1 at {first} and stays top-1 from {stays} on."
            ),
            (Some(first), None) => format!("Logit lens: {t:?} is first top-1 at {first}."),
            (None, _) => format!(
                "Logit lens: {t:?} is never top-1 through the final norm (the model's output can differ when logits are soft-capped)."
            ),
        };
        vec![
            lens,
            format!(
                "Direct logit attribution of {} = {:.3} (Σ components {:.3}); largest: {}.",
                self.metric_text(),
                self.dla.metric_value,
                self.dla.total,
                self.components_text()
            ),
        ]
    }

    /// Summary sentences, Chinese.
    pub fn summary_zh(&self) -> Vec<String> {
        let t = &self.prediction.token;
        let lens = match &self.first_top1 {
            Some(first) => format!(
                "Logit lens：{t:?} 在 {first} 首次成为第一预测{}。",
                self.stays_top1_from
                    .as_ref()
                    .map_or_else(String::new, |s| format!("，自 {s} 起保持第一"))
            ),
            None => format!("Logit lens：{t:?} 在经过最终归一化后从未成为第一预测。"),
        };
        vec![
            lens,
            format!(
                "{} 的直接 logit 归因 = {:.3}（各组件之和 {:.3}）；最大的组件：{}。",
                self.metric_text(),
                self.dla.metric_value,
                self.dla.total,
                self.components_text()
            ),
        ]
    }

    fn components_text(&self) -> String {
        self.top_components
            .iter()
            .map(|c| format!("{} {:+.3}", c.label, c.value))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The section as Markdown: the lens at the last position (entry, top tokens, the
    /// prediction's rank and log-probability) and the largest DLA components.
    pub fn to_markdown(&self) -> String {
        let md = |t: &str| format!("{t:?}").replace('|', "\\|");
        let mut s = String::from("\n## Model internals\n\n");
        for line in self.summary_en() {
            s.push_str(&format!("- {line}\n"));
        }
        s.push_str(&format!(
            "\n### Logit lens at the last position (target {})\n\n| entry | top tokens | rank | log p |\n|---|---|---|---|\n",
            md(&self.prediction.token)
        ));
        for (label, row) in self.lens.labels.iter().zip(&self.lens.cells) {
            let Some(cell) = row.last() else { continue };
            let top: Vec<String> =
                cell.top.iter().map(|t| format!("{} {:.3}", md(&t.token), t.probability)).collect();
            s.push_str(&format!(
                "| {label} | {} | {} | {} |\n",
                top.join(", "),
                cell.target_rank.map_or_else(|| "–".to_owned(), |r| r.to_string()),
                cell.target_log_prob.map_or_else(|| "–".to_owned(), |v| format!("{v:.3}"))
            ));
        }
        s.push_str(&format!(
            "\n### Direct logit attribution of {} (model {:.4}, Σ components {:.4})\n\n| component | value |\n|---|---|\n",
            self.metric_text().replace('|', "\\|"),
            self.dla.metric_value,
            self.dla.total
        ));
        for c in &self.top_components {
            s.push_str(&format!("| {} | {:+.4} |\n", c.label, c.value));
        }
        s
    }
}
