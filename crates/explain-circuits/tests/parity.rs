//! Logit lens, direct logit attribution and activation patching against TransformerLens 4.3 on
//! the same tiny seeded GPT-2-style and Llama-style Hugging Face checkpoints (reference and
//! checkpoints written by `reference/circuits_reference.py`; run through `cargo xtask parity`).
//!
//! Tolerance 1e-4 on logits, log-probabilities and logit differences: f32 forward passes of
//! a few dozen accumulations on both sides, differing in summation order only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use explain_circuits::{
    ActivationPatching, DlaComponentKind, LogitDiff, PatchSite, attribution_patching,
    direct_logit_attribution, lens_logits,
};
use explain_models::load;
use explainability_core::LanguageModel;
use serde_json::Value;
use tch::Kind;

const TOL: f64 = 1e-4;

fn dir() -> PathBuf {
    std::env::var_os("EXPLAINABILITY_PARITY_DIR")
        .map(|d| PathBuf::from(d).join("circuits"))
        .unwrap_or_else(|| panic!("EXPLAINABILITY_PARITY_DIR is not set: run `cargo xtask parity`"))
}

fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn check(kind: &str) {
    let dir = dir();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{kind}.json"))).unwrap())
            .unwrap();
    let model = load(dir.join(kind)).unwrap();
    let (clean, corrupted) = (ids(&reference["clean"]), ids(&reference["corrupted"]));
    let metric = LogitDiff::new(
        reference["answer"].as_i64().unwrap(),
        reference["against"].as_i64().unwrap(),
    );
    let n_layers = model.info().n_layers;
    let mut report = Vec::new();

    // Logit lens: log-probabilities of fixed probe tokens at every entry and position.
    let lens =
        lens_logits(&model, &clean).unwrap().to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    let probe = ids(&reference["lens_probe_ids"]);
    let probe_t = tch::Tensor::from_slice(&probe);
    let ours: Vec<f64> = Vec::try_from(lens.index_select(-1, &probe_t).flatten(0, -1)).unwrap();
    let d = max_diff(&ours, &floats(&reference["lens_probe"]));
    report.push(format!("lens probe log-probs {d:.2e}"));
    assert!(d < TOL, "{kind}: logit lens differs by {d}");
    let last = lens.select(1, clean.len() as i64 - 1); // [entry, vocab]
    let ours: Vec<f64> = Vec::try_from(last.flatten(0, -1)).unwrap();
    let d = max_diff(&ours, &floats(&reference["lens_log_probs_last_pos"]));
    report.push(format!("lens last position (all vocab) {d:.2e}"));
    assert!(d < TOL, "{kind}: logit lens at the last position differs by {d}");

    // DLA.
    let dla = direct_logit_attribution(&model, &clean, metric).unwrap();
    let d = (dla.metric_value - reference["logit_diff"].as_f64().unwrap()).abs();
    assert!(d < TOL, "{kind}: logit difference {d}");
    let embed = dla.components.iter().find(|c| c.kind == DlaComponentKind::Embed).unwrap().value;
    let per_layer = |kind_: DlaComponentKind, with_heads: bool| -> Vec<f64> {
        (0..n_layers)
            .map(|l| {
                dla.components
                    .iter()
                    .filter(|c| {
                        c.layer == Some(l)
                            && (c.kind == kind_ || (with_heads && c.kind == DlaComponentKind::Head))
                    })
                    .map(|c| c.value)
                    .sum()
            })
            .collect()
    };
    let attn = per_layer(DlaComponentKind::AttnRest, true);
    let mlp = per_layer(DlaComponentKind::Mlp, false);
    let heads: Vec<f64> = dla.heads.iter().copied().collect();
    let bias: f64 = dla
        .components
        .iter()
        .filter(|c| c.kind == DlaComponentKind::NormBias)
        .map(|c| c.value)
        .sum();
    let diffs = [
        ("embed", (embed - reference["dla_embed"].as_f64().unwrap()).abs()),
        ("attn_out", max_diff(&attn, &floats(&reference["dla_attn_out"]))),
        ("mlp_out", max_diff(&mlp, &floats(&reference["dla_mlp_out"]))),
        ("heads", max_diff(&heads, &floats(&reference["dla_heads"]))),
        ("final-norm bias", (bias - reference["dla_unembed_bias"].as_f64().unwrap()).abs()),
    ];
    for (what, d) in diffs {
        report.push(format!("DLA {what} {d:.2e}"));
        assert!(d < TOL, "{kind}: DLA {what} differs by {d}");
    }

    // Activation patching (denoising), raw patched metrics as TransformerLens returns them.
    let resid = ActivationPatching::new(PatchSite::ResidPre)
        .run(&model, &clean, &corrupted, metric)
        .unwrap();
    let d = (resid.clean_metric - reference["clean_metric"].as_f64().unwrap())
        .abs()
        .max((resid.corrupted_metric - reference["corrupted_metric"].as_f64().unwrap()).abs());
    assert!(d < TOL, "{kind}: clean/corrupted metric {d}");
    let ours: Vec<f64> = resid.patched.iter().copied().collect(); // [layer, 1, pos]
    let d = max_diff(&ours, &floats(&reference["patch_resid_pre"]));
    report.push(format!("patch resid_pre {d:.2e}"));
    assert!(d < TOL, "{kind}: resid_pre patching differs by {d}");
    let heads =
        ActivationPatching::new(PatchSite::HeadZ).run(&model, &clean, &corrupted, metric).unwrap();
    // Ours [layer, head, pos]; TransformerLens [layer, pos, head].
    let ours: Vec<f64> = heads.patched.view().permuted_axes([0, 2, 1]).iter().copied().collect();
    let d = max_diff(&ours, &floats(&reference["patch_head_out_by_pos"]));
    report.push(format!("patch head out by pos {d:.2e}"));
    assert!(d < TOL, "{kind}: per-head patching differs by {d}");
    // Queries, keys and values per head and position (key/value heads for k and v); the
    // reference patches TransformerLens's hook_q / hook_k (before RoPE) where ours patches
    // them after it: at the same position RoPE is the same linear map in both runs, so the
    // patched runs are the same.
    for (site, key) in [
        (PatchSite::HeadQ, "patch_head_q_by_pos"),
        (PatchSite::HeadK, "patch_head_k_by_pos"),
        (PatchSite::HeadV, "patch_head_v_by_pos"),
    ] {
        let result = ActivationPatching::new(site).run(&model, &clean, &corrupted, metric).unwrap();
        let ours: Vec<f64> =
            result.patched.view().permuted_axes([0, 2, 1]).iter().copied().collect();
        let expected = floats(&reference[key]);
        assert_eq!(ours.len(), expected.len(), "{kind}: {key} shape");
        let d = max_diff(&ours, &expected);
        report.push(format!("{key} {d:.2e}"));
        assert!(d < TOL, "{kind}: {key} differs by {d}");
    }

    // AtP of resid_pre against the reference's hooks-and-autograd AtP.
    let atp = attribution_patching(
        &ActivationPatching::new(PatchSite::ResidPre),
        &model,
        &clean,
        &corrupted,
        metric,
    )
    .unwrap();
    let ours: Vec<f64> = atp.patched.iter().copied().collect();
    let d = max_diff(&ours, &floats(&reference["atp_resid_pre"]));
    report.push(format!("AtP resid_pre {d:.2e}"));
    assert!(d < TOL, "{kind}: AtP differs by {d}");
    eprintln!("{kind}: {}", report.join(", "));
}

#[test]
fn gpt2_matches_transformer_lens() {
    check("gpt2");
}

#[test]
fn llama_matches_transformer_lens() {
    check("llama");
}
