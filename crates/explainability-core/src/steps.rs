//! What an analysis did at each step: computed exactly, approximated within a budget, or
//! skipped, with the reason and the time it took. Analyses whose steps grow faster than the
//! input (attention flow, evaluation re-runs, per-layer matrices) record one [`StepRecord`]
//! per step so that a report can say what it left out on a long input and why.

use serde::{Deserialize, Serialize};

/// How one step of an analysis was carried out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepOutcome {
    /// Computed as defined.
    Exact,
    /// Computed on a cheaper problem: `how` says what was computed instead, `why` which
    /// budget the exact computation exceeded.
    Approximated {
        /// What was computed instead.
        how: String,
        /// Why (the budget and what the exact step would have cost).
        why: String,
    },
    /// Not computed.
    Skipped {
        /// Why (a budget, or the user's choice).
        why: String,
    },
}

impl StepOutcome {
    /// `exact`, `approximated` or `skipped`.
    pub fn label(&self) -> &'static str {
        match self {
            StepOutcome::Exact => "exact",
            StepOutcome::Approximated { .. } => "approximated",
            StepOutcome::Skipped { .. } => "skipped",
        }
    }

    /// One sentence for a report: empty for an exact step.
    pub fn explanation(&self) -> String {
        match self {
            StepOutcome::Exact => String::new(),
            StepOutcome::Approximated { how, why } => format!("{how} ({why})"),
            StepOutcome::Skipped { why } => why.clone(),
        }
    }
}

/// One step of an analysis: its name, how it was carried out and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name (`attention.flow`, `evaluation`, …).
    pub step: String,
    /// Exact, approximated or skipped.
    #[serde(flatten)]
    pub outcome: StepOutcome,
    /// Wall-clock seconds the step took (0 for a skipped step).
    pub seconds: f64,
}

impl StepRecord {
    /// A record of `step`.
    pub fn new(step: impl Into<String>, outcome: StepOutcome, seconds: f64) -> Self {
        Self { step: step.into(), outcome, seconds }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_round_trip_through_json_with_a_flat_status() {
        let r = StepRecord::new(
            "attention.flow",
            StepOutcome::Approximated { how: "64 segments".into(), why: "budget".into() },
            1.5,
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "approximated");
        assert_eq!(json["how"], "64 segments");
        assert_eq!(serde_json::from_value::<StepRecord>(json).unwrap(), r);
        let skipped = StepRecord::new("x", StepOutcome::Skipped { why: "w".into() }, 0.0);
        assert_eq!(skipped.outcome.label(), "skipped");
        assert_eq!(skipped.outcome.explanation(), "w");
        assert_eq!(StepOutcome::Exact.explanation(), "");
    }
}
