//! `AttentionAnalysis` (builder) → `AttentionReport`: tokens, metrics per head/layer/model,
//! head roles, rollout and flow for a chosen position, and summary sentences in English and
//! Chinese that follow the source document's thresholds.

use explainability_core::{LanguageModel, Result};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::capture::AttentionCapture;
use crate::metrics::{AttentionMetrics, DEFAULT_SPARSITY_THRESHOLD, PatternMetrics};
use crate::roles::{HeadRole, HeadRoleScores, RoleHead};
use crate::rollout::{MaxFlowAlgorithm, attention_flow, attention_rollout};

/// Locality above which attention is "mostly local" (source document).
pub const LOCAL_ABOVE: f64 = 0.7;
/// Locality below which attention is "long-range" (source document).
pub const LONG_RANGE_BELOW: f64 = 0.3;
/// Sparsity above which attention is "very sparse" (source document).
pub const VERY_SPARSE_ABOVE: f64 = 0.8;
/// Entropy (nats) below which attention is "focused" (source document).
pub const FOCUSED_BELOW: f64 = 1.0;
/// Entropy (nats) above which attention is "diffuse" (source document).
pub const DIFFUSE_ABOVE: f64 = 3.0;
/// Role score from which a head is said to play that role.
pub const ROLE_THRESHOLD: f64 = 0.4;

/// Configuration of an attention analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionAnalysis {
    /// Threshold of the sparsity metric.
    pub sparsity_threshold: f64,
    /// Length of the random block repeated for induction / duplicate scores (0: skip roles).
    pub induction_block: usize,
    /// Seed of that block.
    pub seed: u64,
    /// Whether to compute attention flow (rollout is always computed).
    pub flow: bool,
    /// Max-flow algorithm.
    pub flow_algorithm: MaxFlowAlgorithm,
    /// Position whose rollout/flow row is reported (`None`: the last token).
    pub target_position: Option<usize>,
}

impl Default for AttentionAnalysis {
    fn default() -> Self {
        Self {
            sparsity_threshold: DEFAULT_SPARSITY_THRESHOLD,
            induction_block: 24,
            seed: 0,
            flow: true,
            flow_algorithm: MaxFlowAlgorithm::Dinics,
            target_position: None,
        }
    }
}

impl AttentionAnalysis {
    /// Default configuration.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the sparsity threshold.
    pub fn sparsity_threshold(mut self, t: f64) -> Self {
        self.sparsity_threshold = t;
        self
    }
    /// Sets the induction block length (0 skips role detection).
    pub fn induction_block(mut self, n: usize) -> Self {
        self.induction_block = n;
        self
    }
    /// Sets the seed of the induction block.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Turns attention flow on or off.
    pub fn flow(mut self, on: bool) -> Self {
        self.flow = on;
        self
    }
    /// Sets the reported position.
    pub fn target_position(mut self, position: usize) -> Self {
        self.target_position = Some(position);
        self
    }

    /// Analyses `text`.
    ///
    /// # Errors
    /// [`explainability_core::Error::EmptyText`], [`explainability_core::Error::SequenceTooLong`],
    /// invalid thresholds or positions, model errors.
    pub fn run(&self, model: &dyn LanguageModel, text: &str) -> Result<AttentionReport> {
        let capture = AttentionCapture::from_text(model, text)?;
        self.run_on_capture(model, capture)
    }

    /// Analyses an existing capture (roles still run the model on the induction block).
    ///
    /// # Errors
    /// As [`AttentionAnalysis::run`].
    pub fn run_on_capture(
        &self,
        model: &dyn LanguageModel,
        capture: AttentionCapture,
    ) -> Result<AttentionReport> {
        let metrics = AttentionMetrics::compute(&capture, self.sparsity_threshold)?;
        let roles = if self.induction_block >= 2 {
            Some(HeadRoleScores::compute(model, &capture, self.induction_block, self.seed)?)
        } else {
            None
        };
        let n = capture.len();
        let position = match self.target_position {
            None => n - 1,
            Some(p) if p < n => p,
            Some(p) => {
                return Err(explainability_core::Error::invalid_argument(format!(
                    "target position {p} is past the input's {n} tokens"
                )));
            }
        };
        let means = capture.head_means();
        let rollout = attention_rollout(&means)?.row(position).to_owned();
        let flow = if self.flow {
            Some(attention_flow(&means, position, capture.causal, self.flow_algorithm)?)
        } else {
            None
        };
        let mut report = AttentionReport {
            model: model.info().name.clone(),
            tokens: capture.tokens.clone(),
            token_ids: capture.token_ids.clone(),
            target_position: position,
            metrics,
            roles,
            rollout,
            flow,
            summary_en: Vec::new(),
            summary_zh: Vec::new(),
        };
        let (en, zh) = report.summaries();
        report.summary_en = en;
        report.summary_zh = zh;
        Ok(report)
    }
}

/// The result of an attention analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionReport {
    /// Model name.
    pub model: String,
    /// A readable string per token.
    pub tokens: Vec<String>,
    /// Token ids.
    pub token_ids: Vec<i64>,
    /// Position whose rollout and flow rows are reported.
    pub target_position: usize,
    /// Metrics per head, layer and model.
    pub metrics: AttentionMetrics,
    /// Head role scores (absent when role detection was skipped).
    pub roles: Option<HeadRoleScores>,
    /// Rollout row of the target position: share of each input token.
    pub rollout: Array1<f64>,
    /// Flow row of the target position (absent when flow was skipped).
    pub flow: Option<Array1<f64>>,
    /// Summary sentences in English.
    pub summary_en: Vec<String>,
    /// The same sentences in Chinese.
    pub summary_zh: Vec<String>,
}

impl AttentionReport {
    /// Heads of each role at or above [`ROLE_THRESHOLD`], best first (at most 3 each).
    pub fn role_heads(&self) -> Vec<(HeadRole, Vec<RoleHead>)> {
        let Some(roles) = &self.roles else { return Vec::new() };
        HeadRole::ALL
            .iter()
            .map(|&r| (r, roles.above(r, ROLE_THRESHOLD).into_iter().take(3).collect()))
            .collect()
    }

    fn summaries(&self) -> (Vec<String>, Vec<String>) {
        let m: &PatternMetrics = &self.metrics.model;
        let mut en = Vec::new();
        let mut zh = Vec::new();
        if m.locality > LOCAL_ABOVE {
            en.push(format!(
                "Attention is mostly local (locality {:.2} > {LOCAL_ABOVE}).",
                m.locality
            ));
            zh.push(format!("注意力主要集中在局部（局部性 {:.2} > {LOCAL_ABOVE}）。", m.locality));
        } else if m.locality < LONG_RANGE_BELOW {
            en.push(format!(
                "Attention reaches mostly long-range dependencies (locality {:.2} < {LONG_RANGE_BELOW}).",
                m.locality
            ));
            zh.push(format!(
                "注意力主要捕捉长距离依赖（局部性 {:.2} < {LONG_RANGE_BELOW}）。",
                m.locality
            ));
        } else {
            en.push(format!(
                "Attention mixes local and long-range context (locality {:.2}).",
                m.locality
            ));
            zh.push(format!("注意力兼顾局部与长距离上下文（局部性 {:.2}）。", m.locality));
        }
        if m.sparsity > VERY_SPARSE_ABOVE {
            en.push(format!(
                "Attention is very sparse: {:.0}% of valid weights are below {}.",
                100.0 * m.sparsity,
                self.metrics.sparsity_threshold
            ));
            zh.push(format!(
                "注意力非常稀疏：{:.0}% 的有效权重低于 {}。",
                100.0 * m.sparsity,
                self.metrics.sparsity_threshold
            ));
        }
        if m.entropy < FOCUSED_BELOW {
            en.push(format!(
                "Attention is focused (mean entropy {:.2} nats < {FOCUSED_BELOW}).",
                m.entropy
            ));
            zh.push(format!("注意力较为集中（平均熵 {:.2} < {FOCUSED_BELOW}）。", m.entropy));
        } else if m.entropy > DIFFUSE_ABOVE {
            en.push(format!(
                "Attention is diffuse (mean entropy {:.2} nats > {DIFFUSE_ABOVE}).",
                m.entropy
            ));
            zh.push(format!("注意力较为分散（平均熵 {:.2} > {DIFFUSE_ABOVE}）。", m.entropy));
        }
        for (role, heads) in self.role_heads() {
            if heads.is_empty() {
                continue;
            }
            let list: Vec<String> = heads
                .iter()
                .map(|h| format!("L{}.H{} ({:.2})", h.layer, h.head, h.score))
                .collect();
            en.push(format!("{} heads: {}.", capitalise(role.name_en()), list.join(", ")));
            zh.push(format!("{}注意力头：{}。", role.name_zh(), list.join("、")));
        }
        let target = self.tokens.get(self.target_position).cloned().unwrap_or_default();
        if let Some((j, share)) = argmax(&self.rollout) {
            let token = self.tokens.get(j).cloned().unwrap_or_default();
            en.push(format!(
                "By attention rollout, position {} ({target:?}) draws most on token {j} ({token:?}, {:.0}%).",
                self.target_position,
                100.0 * share
            ));
            zh.push(format!(
                "按注意力展开（rollout），位置 {}（{target:?}）最依赖第 {j} 个词元（{token:?}，{:.0}%）。",
                self.target_position,
                100.0 * share
            ));
        }
        (en, zh)
    }
}

fn argmax(v: &Array1<f64>) -> Option<(usize, f64)> {
    v.iter().copied().enumerate().max_by(|a, b| a.1.total_cmp(&b.1))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
