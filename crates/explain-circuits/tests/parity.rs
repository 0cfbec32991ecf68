//! Parity with TransformerLens (placeholder until the reference lands).
