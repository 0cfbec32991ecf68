//! Prompt sets shared by the tests, benchmarks and examples.

/// Twenty factual prompts with a single obvious next token each ("The capital of France is" →
/// " Paris"), written for the SmolLM2 sanity checks of this crate (not selected by any metric).
/// `tests/smollm2.rs` and the `eval` benchmark use them; docs/methods.md reports measurements
/// on them.
pub const FACTUAL: [&str; 20] = [
    "The capital of France is",
    "The capital of Germany is",
    "The capital of Italy is",
    "The capital of Japan is",
    "The capital of Spain is",
    "Water is made of hydrogen and",
    "The largest planet in the solar system is",
    "Romeo and Juliet was written by William",
    "The Eiffel Tower is located in the city of",
    "The chemical symbol for gold is",
    "The first president of the United States was George",
    "The opposite of hot is",
    "The currency of Japan is the",
    "The Great Wall is in",
    "The sun rises in the",
    "A week has seven",
    "The freezing point of water is zero degrees",
    "The largest ocean on Earth is the",
    "The currency of the United Kingdom is the",
    "Mount Everest is the highest mountain in the",
];
