//! The library in twenty lines: load SmolLM2, predict, attribute the prediction to the input
//! tokens with integrated gradients, and summarise where the model attends.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use explainability::{
    AttentionAnalysis, Framework, LanguageModel, Target, load, smollm2_gguf_path,
};

fn main() -> explainability::Result<()> {
    let model = load(smollm2_gguf_path())?;
    let text = "The capital of France is";
    let best = &model.top_next_tokens(text, 1)?[0];
    println!("{text:?} → {:?} ({:.1}%)", best.token, 100.0 * best.probability);

    let ig = Framework::with_defaults().explain(
        &model,
        text,
        "integrated_gradients",
        &Target::argmax(),
    )?;
    for (token, score) in ig.tokens.iter().zip(&ig.scores) {
        println!("{token:>12} {score:+.3}");
    }
    println!("convergence delta: {:+.4}", ig.convergence_delta.unwrap_or(f64::NAN));

    for line in AttentionAnalysis::new().run(&model, text)?.summary_en {
        println!("{line}");
    }
    Ok(())
}
