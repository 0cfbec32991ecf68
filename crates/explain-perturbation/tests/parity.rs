//! Parity with Captum (placeholder until the reference exists).
