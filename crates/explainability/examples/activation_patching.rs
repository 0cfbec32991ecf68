//! Activation patching on SmolLM2: run the corrupted prompt ("Italy") with one clean ("France")
//! activation at a time, for every layer × position of the residual stream (or every head),
//! and see how much of logit(" Paris") − logit(" Rome") comes back; then the same grid
//! estimated by attribution patching (two forwards and one backward).
//!
//! ```text
//! cargo run --release --example activation_patching
//! cargo run --release --example activation_patching -- --site head-z --clean "The capital of France is" \
//!     --corrupted "The capital of Italy is" --answer " Paris" --against " Rome"
//! ```
//!
//! Pictures (SVG, PNG and an HTML page) of the patching grid and its AtP estimate go to
//! `target/activation_patching/` (`--pictures DIR`).

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use explainability::circuits::{
    ActivationPatching, InternalsPictures, LogitDiff, PatchSite, attribution_patching,
    attribution_patching_grad_drop, single_token,
};
use explainability::{LanguageModel, load, smollm2_gguf_path};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Site {
    ResidPre,
    ResidMid,
    ResidPost,
    AttnOut,
    MlpOut,
    HeadZ,
    HeadPattern,
    HeadQ,
    HeadK,
    HeadV,
}

#[derive(Parser, Debug)]
#[command(about = "Activation patching between a clean and a corrupted prompt")]
struct Args {
    /// The clean prompt.
    #[arg(long, default_value = "The capital of France is")]
    clean: String,
    /// The corrupted prompt (same number of tokens).
    #[arg(long, default_value = "The capital of Italy is")]
    corrupted: String,
    /// The clean answer.
    #[arg(long, default_value = " Paris")]
    answer: String,
    /// The corrupted answer.
    #[arg(long, default_value = " Rome")]
    against: String,
    /// The site patched.
    #[arg(long, value_enum, default_value = "resid-pre")]
    site: Site,
    /// Also run AtP with GradDrop (one extra backward pass per layer).
    #[arg(long)]
    grad_drop: bool,
    /// A .gguf file or a Hugging Face folder (default: SmolLM2 from `cargo xtask setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where to write the result as JSON.
    #[arg(long, default_value = "target/activation_patching.json")]
    out: PathBuf,
    /// Folder for the pictures (SVG, PNG) and report.html.
    #[arg(long, default_value = "target/activation_patching")]
    pictures: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = load(args.model.unwrap_or_else(smollm2_gguf_path))?;
    let clean = model.encode(&args.clean, true)?;
    let corrupted = model.encode(&args.corrupted, true)?;
    let metric =
        LogitDiff::new(single_token(&model, &args.answer)?, single_token(&model, &args.against)?);
    let site = match args.site {
        Site::ResidPre => PatchSite::ResidPre,
        Site::ResidMid => PatchSite::ResidMid,
        Site::ResidPost => PatchSite::ResidPost,
        Site::AttnOut => PatchSite::AttnOut,
        Site::MlpOut => PatchSite::MlpOut,
        Site::HeadZ => PatchSite::HeadZ,
        Site::HeadPattern => PatchSite::HeadPattern,
        Site::HeadQ => PatchSite::HeadQ,
        Site::HeadK => PatchSite::HeadK,
        Site::HeadV => PatchSite::HeadV,
    };
    let patching = ActivationPatching::new(site);
    let start = Instant::now();
    let result = patching.run(&model, &clean, &corrupted, metric)?;
    let patch_time = start.elapsed();
    let start = Instant::now();
    let atp = attribution_patching(&patching, &model, &clean, &corrupted, metric)?;
    let atp_time = start.elapsed();

    println!(
        "metric logit({:?}) − logit({:?}): clean {:.3}, corrupted {:.3}",
        args.answer, args.against, result.clean_metric, result.corrupted_metric
    );
    println!(
        "{site:?}: {} patched runs in {patch_time:.2?}; AtP in {atp_time:.2?}\n",
        result.scores.len()
    );
    println!("normalised recovery (patched − corrupted) / (clean − corrupted); rows are layers:");
    let header: Vec<String> =
        result.tokens.iter().map(|t| format!("{:>9.9}", format!("{t:?}"))).collect();
    println!("{:>9} {}", "", header.join(" "));
    for (i, layer) in result.layers.iter().enumerate() {
        for j in 0..result.scores.dim().1 {
            let label = if result.heads.is_empty() {
                format!("L{layer}")
            } else {
                format!("L{layer}H{}", result.heads[j])
            };
            let row: Vec<String> = result
                .scores
                .slice(ndarray::s![i, j, ..])
                .iter()
                .map(|v| format!("{v:>9.3}"))
                .collect();
            println!("{label:>9} {}", row.join(" "));
        }
    }
    let exact: Vec<f64> = result.scores.iter().copied().collect();
    let estimate: Vec<f64> = atp.scores.iter().copied().collect();
    println!(
        "\nAtP against activation patching: Pearson {:.3}, Spearman {:.3}",
        pearson(&exact, &estimate),
        spearman(&exact, &estimate)
    );
    if args.grad_drop {
        let start = Instant::now();
        let gd = attribution_patching_grad_drop(&patching, &model, &clean, &corrupted, metric)?;
        let gd: Vec<f64> = gd.scores.iter().copied().collect();
        println!(
            "AtP + GradDrop ({:.2?}): Pearson {:.3}, Spearman {:.3}",
            start.elapsed(),
            pearson(&exact, &gd),
            spearman(&exact, &gd)
        );
    }

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    println!("wrote {}", args.out.display());
    // The patching grid, then its AtP estimate (same axes).
    let grids = [("Activation patching".to_owned(), result), ("AtP".to_owned(), atp)];
    let pictures = InternalsPictures { patching: &grids, ..Default::default() };
    let title = format!("Activation patching: {:?} → {:?}", args.clean, args.corrupted);
    for path in pictures.write(&args.pictures, &title)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Pearson correlation of the average ranks (ties share their mean rank).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(x: &[f64]) -> Vec<f64> {
        let mut order: Vec<usize> = (0..x.len()).collect();
        order.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
                j += 1;
            }
            for k in i..=j {
                r[order[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    pearson(&ranks(a), &ranks(b))
}
