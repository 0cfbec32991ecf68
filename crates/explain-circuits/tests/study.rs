//! The issue-18 study on SmolLM2 or Gemma 3 270M (`STUDY_MODEL=smollm2|gemma3`; outside CI:
//! `#[ignore]`, slow), and its committed results drawn (`the_committed_study_draws`, fast, no
//! model): Meng et al. 2022's causal
//! tracing averaged over the factual prompt set, AtP against activation patching over every
//! head × position with and without the AtP* fixes, direct logit attribution of the answer
//! against the runner-up per head and layer, and induction heads found by patching against
//! explain-attention's induction score. Writes one JSON file per part to `STUDY_OUT`;
//! docs/methods-circuits.md reports the numbers.
//!
//! ```text
//! STUDY_PROMPTS=50 STUDY_SAMPLES=3 STUDY_PARTS=tracing STUDY_OUT=target/study OMP_NUM_THREADS=1 \
//!     cargo test -p explain-circuits --test study -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use explain_attention::{AttentionCapture, induction_score, repeated_random_tokens};
use explain_circuits::{
    ActivationPatching, AtpFixes, CausalTrace, CausalTracing, DlaComponentKind, LogitDiff,
    PatchSite, TOKEN_GROUPS, TraceKind, attribution_patching_with, average_by_token_group,
    direct_logit_attribution,
};
use explain_eval::prompts::{FactualCategory, TokenizedFactual, factual_prompts, factual_top1};
use explain_eval::{spearman, top_k_overlap};
use explain_models::{gemma3_gguf_path, load, smollm2_gguf_path};
use explainability_core::LanguageModel;
use ndarray::{Array2, Axis};
use serde_json::json;

struct Args {
    /// The model: `smollm2` (SmolLM2-135M Q4_1) or `gemma3` (Gemma 3 270M Q4_K_M).
    model: String,
    /// Prompts traced (round-robin over the categories, from those the model gets right).
    prompts: usize,
    /// Noise draws per prompt (paper: 10).
    samples: usize,
    /// Clean/corrupted pairs for AtP against activation patching.
    pairs: usize,
    /// Length of the random block repeated for the induction heads.
    block: usize,
    /// Where the block's tokens come from: `random` (explain-attention's
    /// `repeated_random_tokens`: any id of the vocabulary) or `words` (tokens that are a space
    /// and three or more lower-case ASCII letters, e.g. " table").
    block_tokens: String,
    /// Seed of the repeated block (the corrupted run's block uses `seed + 1`).
    block_seed: u64,
    /// Output folder.
    out: PathBuf,
    /// Parts to run (tracing, atp, dla, induction), each writing its own JSON file.
    parts: Vec<String>,
}

impl Args {
    fn from_env() -> Self {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
        let num = |k: &str, d: &str| var(k, d).parse().expect(k);
        Self {
            model: var("STUDY_MODEL", "smollm2"),
            prompts: num("STUDY_PROMPTS", "50"),
            samples: num("STUDY_SAMPLES", "10"),
            pairs: num("STUDY_PAIRS", "4"),
            block: num("STUDY_BLOCK", "12"),
            block_tokens: var("STUDY_BLOCK_TOKENS", "random"),
            block_seed: var("STUDY_BLOCK_SEED", "1").parse().expect("STUDY_BLOCK_SEED"),
            out: PathBuf::from(var("STUDY_OUT", "target/circuits-study")),
            parts: var("STUDY_PARTS", "tracing,atp,dla,induction")
                .split(',')
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// Reads one JSON file of the committed study (`docs/circuits-study/`).
fn committed(name: &str) -> serde_json::Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/circuits-study").join(name);
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

/// A JSON array of arrays of numbers (null: NaN) as a matrix.
fn matrix(value: &serde_json::Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
        .collect();
    let (n, m) = (rows.len(), rows.first().map_or(0, Vec::len));
    Array2::from_shape_vec((n, m), rows.concat()).unwrap()
}

/// The committed study drawn, for SmolLM2 and Gemma 3: the token-group averages of the three
/// trace kinds and the induction heads by patching and by induction score, one cell per
/// (group, layer) or (layer, head), each peak of the JSON in its picture's tooltips. Fast (no
/// model); the SVGs go to `STUDY_PICTURES` (default: the test's temporary folder);
/// `STUDY_PICTURES=$PWD/docs/circuits-study` refreshes the committed pictures.
#[test]
fn the_committed_study_draws() {
    let out = std::env::var("STUDY_PICTURES").map_or_else(
        |_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("study-pictures"),
        PathBuf::from,
    );
    fs::create_dir_all(&out).unwrap();
    // SmolLM2's traces and Gemma 3's (its SVGs under gemma3/).
    let folders = [("", "SmolLM2-135M"), ("gemma3/", "Gemma 3 270M")];
    for ((folder, model), kind) in
        folders.iter().flat_map(|f| ["hidden", "mlp", "attention"].map(|k| (f, k)))
    {
        fs::create_dir_all(out.join(folder)).unwrap();
        let json = committed(&format!("{folder}tracing-{kind}.json"));
        let part = &json["kinds"][kind];
        let average = matrix(&part["average"]);
        assert_eq!(average.nrows(), TOKEN_GROUPS.len());
        let counts: [usize; 6] =
            std::array::from_fn(|g| part["group_counts"][g].as_u64().unwrap() as usize);
        let title = format!(
            "{model} causal tracing, {kind}: average indirect effect over {} prompts",
            counts[5]
        );
        let svg = explain_circuits::token_group_heatmap(&average, &counts, &title).unwrap();
        assert_eq!(svg.as_str().matches("<rect class=\"cell").count(), 6 * average.ncols());
        let peak = &part["peak"];
        let layer = peak["layer"].as_u64().unwrap();
        let tip = format!(
            "{} ({}), layer {layer} · average indirect effect: {}",
            peak["group"].as_str().unwrap(),
            counts
                [TOKEN_GROUPS.iter().position(|g| *g == peak["group"].as_str().unwrap()).unwrap()],
            explain_viz::format_score(peak["effect"].as_f64().unwrap())
        );
        assert!(svg.as_str().contains(&tip), "{tip}");
        svg.write(out.join(format!("{folder}tracing-{kind}.svg"))).unwrap();
    }
    for (folder, model) in folders {
        let induction = committed(&format!("{folder}induction.json"));
        fs::create_dir_all(out.join(folder)).unwrap();
        for (key, metric) in
            [("by_patching", "recovery by patching hook_z"), ("by_attention", "induction score")]
        {
            let grid = matrix(&induction[key]);
            let svg = explain_viz::charts::layer_head_heatmap(&grid, metric)
                .to_svg(&explain_viz::charts::ChartOptions::titled(format!(
                    "{model} induction heads: {metric}"
                )))
                .unwrap();
            assert_eq!(svg.as_str().matches("<rect class=\"cell").count(), grid.len());
            // The top head of the JSON is the largest cell of the grid.
            let top = &induction["result"][format!("top_{key}")][0];
            let (l, h) = (top["layer"].as_u64().unwrap() as usize, top["head"].as_u64().unwrap());
            let max = grid.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert!((grid[(l, h as usize)] - max).abs() < 1e-12, "{folder}{key}: L{l}H{h}");
            svg.write(out.join(format!("{folder}induction-{key}.svg"))).unwrap();
        }
    }
}

#[test]
#[ignore = "the full study takes tens of minutes; run it by hand"]
fn study() {
    run().unwrap();
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    tch::set_num_threads(1);
    let start = Instant::now();
    fs::create_dir_all(&args.out)?;
    let model = match args.model.as_str() {
        "smollm2" => load(smollm2_gguf_path())?,
        "gemma3" => load(gemma3_gguf_path())?,
        other => return Err(format!("STUDY_MODEL={other}: expected smollm2 or gemma3").into()),
    };

    if args.parts.iter().all(|p| p == "induction") {
        // No prompt set needed.
        let value = induction_part(&model, &args)?;
        fs::write(args.out.join("induction.json"), serde_json::to_string_pretty(&value)?)?;
        eprintln!("done in {:.0?}; {}", start.elapsed(), args.out.display());
        return Ok(());
    }

    // 1. The prompts the model ranks top-1.
    let all = factual_prompts()?;
    let kept = factual_top1(&model, &all)?;
    let count = |c: FactualCategory, v: &[TokenizedFactual]| {
        v.iter().filter(|t| t.prompt.category == c).count()
    };
    let cats = [
        FactualCategory::CountryCapital,
        FactualCategory::ElementSymbol,
        FactualCategory::StateCapital,
    ];
    let filter: Vec<_> = cats
        .iter()
        .map(|&c| json!({"category": c, "total": all.iter().filter(|p| p.category == c).count(), "top1": count(c, &kept)}))
        .collect();
    eprintln!("top-1 filter: {filter:?} ({:.0?})", start.elapsed());
    let mut by_cat: Vec<std::collections::VecDeque<&TokenizedFactual>> =
        cats.iter().map(|&c| kept.iter().filter(|t| t.prompt.category == c).collect()).collect();
    let mut chosen = Vec::new();
    while chosen.len() < args.prompts && by_cat.iter().any(|q| !q.is_empty()) {
        for q in &mut by_cat {
            if chosen.len() < args.prompts
                && let Some(t) = q.pop_front()
            {
                chosen.push(t);
            }
        }
    }

    let part = |name: &str| args.parts.iter().any(|p| p == name);
    let write = |name: &str, value: serde_json::Value| -> std::io::Result<()> {
        fs::write(args.out.join(format!("{name}.json")), serde_json::to_string_pretty(&value)?)
    };
    write(
        "prompts",
        json!({
            "model": model.info().name, "threads": 1, "filter": filter,
            "traced": chosen.iter().map(|t| &t.prompt.prompt).collect::<Vec<_>>(),
        }),
    )?;

    // 2. Causal tracing.
    let mut tracing = serde_json::Map::new();
    let kinds: Vec<TraceKind> = [TraceKind::Hidden, TraceKind::Mlp, TraceKind::Attention]
        .into_iter()
        .filter(|k| part("tracing") || part(&format!("tracing-{k:?}").to_lowercase()))
        .collect();
    for kind in kinds {
        let t0 = Instant::now();
        let config = CausalTracing { samples: args.samples, ..CausalTracing::new(kind) };
        let mut traces: Vec<CausalTrace> = Vec::new();
        for (i, t) in chosen.iter().enumerate() {
            traces.push(config.run(&model, &t.ids, t.subject.clone(), t.answer_id)?);
            eprintln!(
                "{kind:?} {}/{} {:?} ({:.0?})",
                i + 1,
                chosen.len(),
                t.prompt.subject,
                t0.elapsed()
            );
        }
        let (avg, counts) = average_by_token_group(&traces);
        // Standard error of each group × layer mean over the prompts that have the group.
        let groups: Vec<Array2<f64>> = traces.iter().map(CausalTrace::by_token_group).collect();
        let standard_error = Array2::from_shape_fn(avg.dim(), |(g, l)| {
            let v: Vec<f64> = groups.iter().map(|x| x[(g, l)]).filter(|v| !v.is_nan()).collect();
            let n = v.len() as f64;
            if v.len() < 2 {
                return f64::NAN;
            }
            let mean = v.iter().sum::<f64>() / n;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
        });
        let peak = |row: usize| {
            let r = avg.row(row);
            let (l, v) = r
                .iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |b, (l, &v)| if v > b.1 { (l, v) } else { b });
            json!({"layer": l, "effect": v, "standard_error": standard_error[(row, l)]})
        };
        let (mut best, mut best_v) = ((0, 0), f64::NEG_INFINITY);
        for ((g, l), &v) in avg.indexed_iter() {
            if v > best_v {
                (best, best_v) = ((g, l), v);
            }
        }
        let name = format!("{kind:?}").to_lowercase();
        let clean: f64 =
            traces.iter().map(|t| t.clean_probability).sum::<f64>() / traces.len() as f64;
        let corrupted: f64 =
            traces.iter().map(|t| t.corrupted_probability).sum::<f64>() / traces.len() as f64;
        eprintln!(
            "{name}: peak {} at layer {} ({best_v:.4}); last subject token peak {}; {:.0?}",
            TOKEN_GROUPS[best.0],
            best.1,
            peak(2),
            t0.elapsed()
        );
        tracing.insert(
            name,
            json!({
                "average": avg.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
                "standard_error": standard_error.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
                "groups": TOKEN_GROUPS, "group_counts": counts,
                "peak": {"group": TOKEN_GROUPS[best.0], "layer": best.1, "effect": best_v},
                "peak_by_group": (0..6).map(peak).collect::<Vec<_>>(),
                "clean_probability": clean, "corrupted_probability": corrupted,
                "seconds": t0.elapsed().as_secs_f64(),
            }),
        );
    }

    for kind in kinds_run(&tracing) {
        write(
            &format!("tracing-{kind}"),
            json!({"samples": args.samples, "kinds": {kind.clone(): tracing[&kind].clone()}, "seconds": start.elapsed().as_secs_f64()}),
        )?;
    }

    // 3. AtP against activation patching over heads × positions, per site and fix.
    let t0 = Instant::now();
    // Pairs of prompts of one category with the same tokens around one-to-one subjects, each
    // prompt used once.
    let mut pairs: Vec<(&TokenizedFactual, &TokenizedFactual)> = Vec::new();
    let mut used = vec![false; kept.len()];
    let wanted = if part("atp") { args.pairs } else { 0 };
    for i in 0..kept.len() {
        for j in i + 1..kept.len() {
            let (a, b) = (&kept[i], &kept[j]);
            if pairs.len() < wanted
                && !used[i]
                && !used[j]
                && a.prompt.category == b.prompt.category
                && a.ids.len() == b.ids.len()
                && a.subject == b.subject
                && a.answer_id != b.answer_id
            {
                pairs.push((a, b));
                (used[i], used[j]) = (true, true);
            }
        }
    }
    let fixes = [
        ("AtP", AtpFixes::default()),
        ("QK fix", AtpFixes { qk_fix: true, grad_drop: false }),
        ("GradDrop", AtpFixes { qk_fix: false, grad_drop: true }),
        ("AtP*", AtpFixes::STAR),
    ];
    let mut atp_rows = Vec::new();
    let wanted_sites = std::env::var("STUDY_SITES").unwrap_or_else(|_| "z,q,k".into());
    let site_on = |name: &str| wanted_sites.split(',').any(|s| s == name);
    let sites: Vec<PatchSite> = if part("atp") {
        [("z", PatchSite::HeadZ), ("q", PatchSite::HeadQ), ("k", PatchSite::HeadK)]
            .into_iter()
            .filter(|(n, _)| site_on(n))
            .map(|(_, s)| s)
            .collect()
    } else {
        Vec::new()
    };
    for site in sites {
        let mut exact_all = Vec::new();
        let mut est_all: Vec<Vec<f64>> = vec![Vec::new(); fixes.len()];
        let mut per_pair: Vec<Vec<f64>> = vec![Vec::new(); fixes.len()];
        for (clean, corrupted) in &pairs {
            let metric = LogitDiff::new(clean.answer_id, corrupted.answer_id);
            let patching = ActivationPatching::new(site);
            let exact = patching.run(&model, &clean.ids, &corrupted.ids, metric)?;
            let e: Vec<f64> = exact.patched.iter().map(|v| v - exact.corrupted_metric).collect();
            for (k, (_, f)) in fixes.iter().enumerate() {
                let est = attribution_patching_with(
                    &patching,
                    &model,
                    &clean.ids,
                    &corrupted.ids,
                    metric,
                    *f,
                )?;
                let a: Vec<f64> = est.patched.iter().map(|v| v - est.corrupted_metric).collect();
                per_pair[k].push(spearman(&e, &a).unwrap_or(f64::NAN));
                est_all[k].extend(a);
            }
            exact_all.extend(e);
        }
        for (k, (name, _)) in fixes.iter().enumerate() {
            let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
            let row = json!({
                "site": format!("{site:?}"), "estimate": name, "units": exact_all.len(),
                "spearman_pooled": spearman(&exact_all, &est_all[k]),
                "spearman_abs_pooled": spearman(&abs(&exact_all), &abs(&est_all[k])),
                "spearman_per_pair": per_pair[k],
                "top20_overlap_abs": top_k_overlap(&abs(&exact_all), &abs(&est_all[k]), 20),
            });
            eprintln!("{row}");
            atp_rows.push(row);
        }
    }
    if part("atp") {
        write(
            &format!("atp-{}", wanted_sites.replace(',', "")),
            json!({
                "pairs": pairs.iter().map(|(a, b)| [&a.prompt.prompt, &b.prompt.prompt]).collect::<Vec<_>>(),
                "rows": atp_rows, "seconds": t0.elapsed().as_secs_f64(),
            }),
        )?;
    }
    // 4. Direct logit attribution of logit(answer) − logit(runner-up) on the traced prompts:
    // which heads and MLPs write the answer (heads split behind Gemma's post-attention norm).
    if part("dla") {
        write("dla", dla_part(&model, &chosen)?)?;
    }
    if part("induction") {
        write("induction", induction_part(&model, &args)?)?;
    }
    eprintln!("done in {:.0?}; {}", start.elapsed(), args.out.display());
    Ok(())
}

/// DLA of logit(answer) − logit(runner-up) at the last position of every prompt: the mean
/// layer × head grid, the mean attention (heads and rest) and MLP term per layer, the heads
/// with the largest mean, how often each head is among a prompt's three largest components,
/// and the largest |Σ components − logit difference|.
fn dla_part(
    model: &dyn LanguageModel,
    prompts: &[&TokenizedFactual],
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let info = model.info().clone();
    let (n_layers, n_heads) = (info.n_layers, info.n_heads);
    let mut heads = Array2::<f64>::zeros((n_layers, n_heads));
    let mut layers = Array2::<f64>::zeros((n_layers, 2));
    let (mut embed, mut metric_sum, mut worst) = (0.0, 0.0, 0.0f64);
    let mut in_top3 = std::collections::BTreeMap::<String, usize>::new();
    for t in prompts {
        let runner_up = {
            let _g = tch::no_grad_guard();
            let ids = tch::Tensor::from_slice(&t.ids).unsqueeze(0);
            let options = explainability_core::ForwardOptions {
                logits_from: Some(t.ids.len() - 1),
                ..Default::default()
            };
            let logits = model
                .forward_ids(&ids, &options, &mut explainability_core::Hooks::new())?
                .logits
                .select(1, 0)
                .select(0, 0);
            let (_, top) = logits.topk(2, -1, true, true);
            top.int64_value(&[1])
        };
        let dla = direct_logit_attribution(model, &t.ids, LogitDiff::new(t.answer_id, runner_up))?;
        assert_eq!(dla.heads.dim(), (n_layers, n_heads), "heads are split");
        heads += &dla.heads;
        for c in &dla.components {
            match (c.kind, c.layer) {
                (DlaComponentKind::Head | DlaComponentKind::AttnRest, Some(l)) => {
                    layers[(l, 0)] += c.value;
                }
                (DlaComponentKind::Mlp, Some(l)) => layers[(l, 1)] += c.value,
                (DlaComponentKind::Embed, _) => embed += c.value,
                _ => {}
            }
        }
        let mut sorted = dla.components.clone();
        sorted.sort_by(|a, b| b.value.total_cmp(&a.value));
        for c in sorted.iter().take(3) {
            *in_top3.entry(c.label.clone()).or_default() += 1;
        }
        metric_sum += dla.metric_value;
        worst = worst.max((dla.total - dla.metric_value).abs());
    }
    let n = prompts.len().max(1) as f64;
    heads /= n;
    layers /= n;
    let mut ranked: Vec<((usize, usize), f64)> =
        heads.indexed_iter().map(|(i, &v)| (i, v)).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut top3: Vec<(String, usize)> = in_top3.into_iter().collect();
    top3.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let result = json!({
        "prompts": prompts.len(),
        "metric": "logit(answer) − logit(runner-up) at the last position",
        "mean_metric": metric_sum / n,
        "mean_embed": embed / n,
        "mean_attention_total": layers.column(0).sum(),
        "mean_mlp_total": layers.column(1).sum(),
        "max_abs_total_minus_metric": worst,
        "top_heads_by_mean": ranked.iter().take(10).map(|((l, h), v)| json!({"layer": l, "head": h, "mean": v})).collect::<Vec<_>>(),
        "bottom_heads_by_mean": ranked.iter().rev().take(5).map(|((l, h), v)| json!({"layer": l, "head": h, "mean": v})).collect::<Vec<_>>(),
        "top3_counts": top3.iter().take(12).map(|(c, k)| json!({"component": c, "prompts": k})).collect::<Vec<_>>(),
        "seconds": t0.elapsed().as_secs_f64(),
    });
    eprintln!("{result}");
    Ok(json!({
        "result": result,
        "heads_mean": heads.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
        "layers_mean_attention_mlp": layers.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
    }))
}

fn kinds_run(tracing: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    tracing.keys().cloned().collect()
}

/// `block` distinct tokens that are a space and three or more lower-case ASCII letters
/// (" table"), a seeded draw, repeated after a BOS token (the layout of
/// `repeated_random_tokens`).
fn repeated_word_tokens(
    model: &dyn LanguageModel,
    block: usize,
    seed: u64,
) -> Result<Vec<i64>, Box<dyn std::error::Error>> {
    let info = model.info();
    let all: Vec<i64> = (0..info.vocab_size as i64).collect();
    let words: Vec<i64> = all
        .iter()
        .zip(model.token_strings(&all)?)
        .filter(|(_, t)| {
            t.strip_prefix(' ')
                .is_some_and(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()))
        })
        .map(|(&id, _)| id)
        .collect();
    if words.len() < 2 * block {
        return Err(format!("only {} word tokens in the vocabulary", words.len()).into());
    }
    // SplitMix64: a seeded draw without a dependency.
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut chosen = Vec::with_capacity(block);
    while chosen.len() < block {
        let id = words[(next() % words.len() as u64) as usize];
        if !chosen.contains(&id) {
            chosen.push(id);
        }
    }
    let mut ids: Vec<i64> = info.special_tokens.bos.into_iter().collect();
    ids.extend_from_slice(&chosen);
    ids.extend_from_slice(&chosen);
    Ok(ids)
}

/// Part 5, induction heads: patching every head's output (all positions) from the repeated
/// block into a run whose first block is another block, against the induction score; and
/// whether the model follows the set-up at all (top-1 accuracy and mean log-probability of the
/// next token over the second block against the first).
fn induction_part(
    model: &dyn LanguageModel,
    args: &Args,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let info = model.info().clone();
    let block_of = |seed: u64| -> Result<Vec<i64>, Box<dyn std::error::Error>> {
        match args.block_tokens.as_str() {
            "random" => Ok(repeated_random_tokens(&info, args.block, seed)),
            "words" => repeated_word_tokens(model, args.block, seed),
            other => Err(format!("STUDY_BLOCK_TOKENS={other}: expected random or words").into()),
        }
    };
    let repeated = block_of(args.block_seed)?;
    let other = block_of(args.block_seed + 1)?;
    let bos = usize::from(info.special_tokens.bos.is_some());
    // Does the model follow the set-up? Next-token top-1 and log-probability, first block
    // (nothing to copy) against the second (everything to copy).
    let (first, second) = {
        let _guard = tch::no_grad_guard();
        let input = tch::Tensor::from_slice(&repeated).unsqueeze(0);
        let out = model.forward_ids(
            &input,
            &explainability_core::ForwardOptions::default(),
            &mut explainability_core::Hooks::new(),
        )?;
        let log_probs = out.logits.get(0).log_softmax(-1, tch::Kind::Double);
        let argmax: Vec<i64> = Vec::try_from(log_probs.argmax(-1, false))?;
        let stats = |range: std::ops::Range<usize>| -> (f64, f64) {
            let n = range.len() as f64;
            let (mut hits, mut lp) = (0.0, 0.0);
            for i in range {
                hits += f64::from(u8::from(argmax[i] == repeated[i + 1]));
                lp += log_probs.double_value(&[i as i64, repeated[i + 1]]);
            }
            (hits / n, lp / n)
        };
        // Positions predicting a token of block one (after its first) and of block two.
        (stats(bos..bos + args.block - 1), stats(bos + args.block..repeated.len() - 1))
    };
    eprintln!(
        "next-token top-1 / mean log-prob: first block {:.2} / {:.2}, second block {:.2} / {:.2}",
        first.0, first.1, second.0, second.1
    );
    let n = repeated.len() - 1; // drop the last token: it is the answer
    let clean = repeated[..n].to_vec();
    let mut corrupted = clean.clone();
    corrupted[bos..bos + args.block].copy_from_slice(&other[bos..bos + args.block]);
    let metric = LogitDiff::logit(repeated[n]);
    let patching =
        ActivationPatching { all_positions: true, ..ActivationPatching::new(PatchSite::HeadZ) };
    let result = patching.run(model, &clean, &corrupted, metric)?;
    let by_patching: Array2<f64> = result.scores.index_axis(Axis(2), 0).to_owned();
    let capture = AttentionCapture::from_ids(model, &repeated)?;
    let by_attention = Array2::from_shape_fn((info.n_layers, info.n_heads), |(l, h)| {
        induction_score(capture.patterns[l].index_axis(Axis(0), h), &repeated)
    });
    let (p, a): (Vec<f64>, Vec<f64>) =
        (by_patching.iter().copied().collect(), by_attention.iter().copied().collect());
    let top = |v: &Array2<f64>, k: usize| {
        let mut idx: Vec<((usize, usize), f64)> = v.indexed_iter().map(|(i, &x)| (i, x)).collect();
        idx.sort_by(|x, y| y.1.total_cmp(&x.1));
        idx.into_iter()
            .take(k)
            .map(|((l, h), x)| json!({"layer": l, "head": h, "score": x}))
            .collect::<Vec<_>>()
    };
    let induction = json!({
        "block": args.block, "block_tokens": args.block_tokens, "block_seed": args.block_seed,
        "tokens": model.token_strings(&repeated)?,
        "first_block_top1": first.0, "first_block_log_prob": first.1,
        "second_block_top1": second.0, "second_block_log_prob": second.1,
        "clean_metric": result.clean_metric, "corrupted_metric": result.corrupted_metric,
        "spearman": spearman(&p, &a), "top10_overlap": top_k_overlap(&p, &a, 10), "top5_overlap": top_k_overlap(&p, &a, 5),
        "top_by_patching": top(&by_patching, 10), "top_by_attention": top(&by_attention, 10),
        "seconds": t0.elapsed().as_secs_f64(),
    });
    eprintln!("{induction}");
    Ok(
        json!({"result": induction, "by_patching": by_patching.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>(), "by_attention": by_attention.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>()}),
    )
}
