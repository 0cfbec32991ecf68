//! `AttentionAnalysis` (builder) → `AttentionReport`: tokens, metrics per head/layer/model,
//! head roles, rollout and flow for a chosen position, and summary sentences in English and
//! Chinese that follow the source document's thresholds.

use std::time::Instant;

use explainability_core::{LanguageModel, Result, StepOutcome, StepRecord};
use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::capture::AttentionCapture;
use crate::metrics::{AttentionMetrics, DEFAULT_SPARSITY_THRESHOLD, PatternMetrics};
use crate::roles::{HeadRole, HeadRoleScores, RoleHead};
use crate::rollout::{
    DEFAULT_FLOW_MAX_EDGES, FlowRow, MaxFlowAlgorithm, attention_flow_budgeted, flow_edges,
    rollout_row,
};

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
    /// Edge budget of attention flow (see [`attention_flow_budgeted`]): exact while the row's
    /// max-flow problems hold at most this many edges, on a coarsened graph beyond.
    #[serde(default = "default_flow_max_edges")]
    pub flow_max_edges: u64,
}

fn default_flow_max_edges() -> u64 {
    DEFAULT_FLOW_MAX_EDGES
}

/// Rough throughput of the max-flow step (edges per second, both cores of the 2-core
/// reference machine), used only to show an estimate before the step starts.
pub const FLOW_EDGES_PER_SECOND: f64 = 2.0e7;

/// A step of an analysis about to start, with an estimate of its duration when one exists;
/// handed to the progress callback of [`AttentionAnalysis::run_on_capture_with_progress`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepStart {
    /// Step name (`attention.metrics`, `attention.roles`, `attention.rollout`,
    /// `attention.flow`).
    pub step: String,
    /// Estimated seconds, when the step can estimate itself.
    pub estimate_seconds: Option<f64>,
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
            flow_max_edges: DEFAULT_FLOW_MAX_EDGES,
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
    /// Sets the edge budget of attention flow (`u64::MAX`: always exact, whatever it costs).
    pub fn flow_max_edges(mut self, edges: u64) -> Self {
        self.flow_max_edges = edges;
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
        self.run_on_capture_with_progress(model, capture, &mut |_| {})
    }

    /// [`AttentionAnalysis::run_on_capture`], calling `progress` as each step starts. Every
    /// step is recorded in [`AttentionReport::steps`] (exact, approximated or skipped, and its
    /// seconds). Costs per step for `n` tokens, L layers and H heads: metrics O(L·H·n²) (one
    /// pass over the captured patterns, which are that size), roles O(L·H·n) plus one forward
    /// pass of a fixed-length block, rollout O(L·n²) (one row), flow L·n³/6 edges when exact
    /// (bounded by [`AttentionAnalysis::flow_max_edges`]).
    ///
    /// # Errors
    /// As [`AttentionAnalysis::run`].
    pub fn run_on_capture_with_progress(
        &self,
        model: &dyn LanguageModel,
        capture: AttentionCapture,
        progress: &mut dyn FnMut(StepStart),
    ) -> Result<AttentionReport> {
        let mut steps = Vec::new();
        let mut start = |step: &str, estimate_seconds: Option<f64>| {
            progress(StepStart { step: step.to_owned(), estimate_seconds });
            Instant::now()
        };
        let n = capture.len();
        let position = match self.target_position {
            None => n.saturating_sub(1),
            Some(p) if p < n => p,
            Some(p) => {
                return Err(explainability_core::Error::invalid_argument(format!(
                    "target position {p} is past the input's {n} tokens"
                )));
            }
        };
        let clock = start("attention.metrics", None);
        let metrics = AttentionMetrics::compute(&capture, self.sparsity_threshold)?;
        steps.push(StepRecord::new("attention.metrics", StepOutcome::Exact, secs(clock)));
        let roles = if self.induction_block >= 2 {
            let clock = start("attention.roles", None);
            let roles = HeadRoleScores::compute(model, &capture, self.induction_block, self.seed)?;
            steps.push(StepRecord::new("attention.roles", StepOutcome::Exact, secs(clock)));
            Some(roles)
        } else {
            steps.push(StepRecord::new(
                "attention.roles",
                StepOutcome::Skipped { why: "the induction block is shorter than 2 tokens".into() },
                0.0,
            ));
            None
        };
        let clock = start("attention.rollout", None);
        let means = capture.head_means();
        let rollout = rollout_row(&means, position)?;
        steps.push(StepRecord::new("attention.rollout", StepOutcome::Exact, secs(clock)));
        let flow = if self.flow {
            let layers = means.len();
            let exact_edges = flow_edges(
                layers,
                if capture.causal { position + 1 } else { n },
                position,
                capture.causal,
            );
            let planned = exact_edges.min(self.flow_max_edges);
            let clock = start("attention.flow", Some(planned as f64 / FLOW_EDGES_PER_SECOND));
            let row = attention_flow_budgeted(
                &means,
                position,
                capture.causal,
                self.flow_algorithm,
                self.flow_max_edges,
            )?;
            steps.push(StepRecord::new(
                "attention.flow",
                flow_outcome(&row, exact_edges, self.flow_max_edges),
                secs(clock),
            ));
            Some(row)
        } else {
            steps.push(StepRecord::new(
                "attention.flow",
                StepOutcome::Skipped { why: "attention flow is turned off".into() },
                0.0,
            ));
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
            flow: flow.as_ref().map(|f| f.scores.clone()),
            flow_segments: flow.and_then(|f| f.segments),
            steps,
            summary_en: Vec::new(),
            summary_zh: Vec::new(),
        };
        let (en, zh) = report.summaries();
        report.summary_en = en;
        report.summary_zh = zh;
        Ok(report)
    }
}

fn secs(clock: Instant) -> f64 {
    clock.elapsed().as_secs_f64()
}

/// Exact, or approximated with the segments and the budget that forced them.
fn flow_outcome(row: &FlowRow, exact_edges: u64, budget: u64) -> StepOutcome {
    match &row.segments {
        None => StepOutcome::Exact,
        Some(segments) => {
            let longest = segments.iter().map(|s| s[1] - s[0]).max().unwrap_or(1);
            StepOutcome::Approximated {
                how: format!(
                    "max-flow on the graph coarsened to {} contiguous token segments (up to {longest} tokens each, the target alone); each segment's flow, an upper bound of its exact flow, is shared equally by its tokens",
                    segments.len()
                ),
                why: format!(
                    "the exact row needs {exact_edges} edges of max-flow problems, over the budget of {budget} (flow_max_edges)"
                ),
            }
        }
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
    /// Token segments `[start, end)` the flow graph was coarsened to when the exact flow was
    /// over budget (`None`: exact, or no flow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_segments: Option<Vec<[usize; 2]>>,
    /// What each step did (exact, approximated or skipped, and why) and its seconds.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
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
