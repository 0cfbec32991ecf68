//! Quality of explanations: fidelity, stability, completeness, comprehensibility, sanity
//! checks and a streaming dataset evaluator.
