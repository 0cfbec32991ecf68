//! Compares real variants of SmolLM2 on the same prompts: the fp32 weights, the same weights
//! in bf16, and fp32 with its top induction heads mean-ablated. Prints each model's
//! prediction per prompt, who disagrees, the Jensen–Shannon divergence between next-token
//! distributions, and how similar the models' gradient×input explanations are.
//!
//! ```text
//! cargo run --release --example compare_models
//! cargo run --release --example compare_models -- --model path/to/model.gguf "Some prompt" "Another"
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use clap::Parser;
use explainability::attention::{AblatedModel, AblationMode, HeadAblation};
use explainability::{
    Framework, LanguageModel, LoadOptions, ModelComparison, Precision, Target, load_with,
    smollm2_gguf_path,
};

#[derive(Parser, Debug)]
#[command(about = "Compare fp32, bf16 and head-ablated variants of a model")]
struct Args {
    /// Prompts (default: a built-in set of factual prompts).
    prompts: Vec<String>,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Heads to ablate as LAYER.HEAD (default: SmolLM2's strongest induction heads).
    #[arg(long, value_delimiter = ',', default_value = "18.6,17.4,17.5,17.3,18.7")]
    ablate: Vec<String>,
}

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "The largest planet in the solar system is",
    "Water freezes at a temperature of",
    "The author of Romeo and Juliet is",
    "Mr and Mrs Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal. Mr Dursley",
    "One, two, three, four,",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let path = args.model.unwrap_or_else(smollm2_gguf_path);
    let fp32 = load_with(&path, LoadOptions::default())?;
    let bf16 = load_with(&path, LoadOptions::default().precision(Precision::Bf16))?;
    let heads = args
        .ablate
        .iter()
        .map(|s| {
            let (l, h) = s.split_once('.').ok_or("heads are written LAYER.HEAD")?;
            Ok((l.parse()?, h.parse()?))
        })
        .collect::<Result<Vec<(usize, usize)>, Box<dyn std::error::Error>>>()?;
    let ablated = AblatedModel::new(&fp32, HeadAblation { heads, mode: AblationMode::Mean })?;
    let models: Vec<(&str, &dyn LanguageModel)> =
        vec![("fp32", &fp32), ("bf16", &bf16), ("induction-ablated", &ablated)];
    let comparison = ModelComparison::new(models)?.top_k(3);

    let prompts: Vec<String> = if args.prompts.is_empty() {
        PROMPTS.iter().map(|p| (*p).to_owned()).collect()
    } else {
        args.prompts
    };
    for prompt in &prompts {
        let c = comparison.compare(prompt)?;
        println!("\n{prompt:?}");
        for p in &c.predictions {
            let mark = if c.disagreeing.contains(&p.model) { "  ← disagrees" } else { "" };
            println!(
                "  {:<18} {:>14} {:6.2}%  entropy {:.2}{mark}",
                p.model,
                format!("{:?}", p.prediction.token),
                100.0 * p.prediction.probability,
                p.entropy
            );
        }
        println!(
            "  JS divergence from fp32: bf16 {:.2e}, ablated {:.2e} nats",
            c.js_divergence[[0, 1]],
            c.js_divergence[[0, 2]]
        );
    }

    let framework = Framework::with_defaults();
    let methods = ["gradient_x_input", "saliency"];
    let dataset = comparison.compare_dataset(&prompts, &framework, &methods, &Target::argmax())?;
    println!(
        "\nover {} prompts: all models agree on {:.0}%",
        dataset.n_texts,
        100.0 * dataset.agreement_rate
    );
    for (i, a) in dataset.models.iter().enumerate() {
        for (j, b) in dataset.models.iter().enumerate().skip(i + 1) {
            println!(
                "  {a} vs {b}: agreement {:.0}%, mean JS {:.2e} nats",
                100.0 * dataset.pairwise_agreement[[i, j]],
                dataset.mean_js_divergence[[i, j]]
            );
        }
    }
    for s in &dataset.explanation_similarity {
        println!("  {} explanations (Spearman / top-{} Jaccard, vs fp32):", s.method, s.k);
        for (j, b) in dataset.models.iter().enumerate().skip(1) {
            println!("    {b:<18} {:.3} / {:.3}", s.spearman[[0, j]], s.top_k_jaccard[[0, j]]);
        }
    }
    Ok(())
}
