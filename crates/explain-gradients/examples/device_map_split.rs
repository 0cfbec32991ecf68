//! A CPU + CUDA split of SmolLM2 against the CPU alone (issue 15 item 3): logits and gradient ×
//! input (plain autograd and block-wise recomputation) must agree within 1e-5 relative. Needs a
//! machine with CUDA (it stops with `DeviceUnavailable` otherwise); run it where one is lent:
//!
//! ```text
//! cargo run --release -p explain-gradients --example device_map_split -- [SPLIT_MAP]
//! ```
//!
//! The default map puts blocks 0-14 with the embedding on `cuda:0` and blocks 15-29 with the
//! head on the CPU, so activations cross devices at block 15 and gradients cross back.
//! Prints one JSON line with the differences and exits with an error when one exceeds 1e-5.

use explain_gradients::GradientXInput;
use explain_models::{AnyModel, DeviceMap, load, smollm2_gguf_path};
use explainability_core::{
    Error, Explainer, ForwardOptions, Hooks, LanguageModel, RecomputedBackward, Result, Target,
};
use serde_json::json;
use tch::Tensor;

fn relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn run(model: &AnyModel, ids: &[i64]) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let logits = {
        let _guard = tch::no_grad_guard();
        let t = Tensor::f_from_slice(ids)?.f_unsqueeze(0)?;
        let out = model.forward_ids(&t, &ForwardOptions::default(), &mut Hooks::new())?;
        Vec::<f64>::try_from(out.logits.f_get(0)?.f_get(-1)?.f_to_device(tch::Device::Cpu)?)?
    };
    let plain = GradientXInput.explain_ids(model, ids, &Target::argmax())?.scores.to_vec();
    let bounded = RecomputedBackward::new(model);
    let recomputed = GradientXInput.explain_ids(&bounded, ids, &Target::argmax())?.scores.to_vec();
    Ok((logits, plain, recomputed))
}

fn main() -> Result<()> {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "0-14:cuda:0,15-29:cpu".to_owned());
    let mut model = load(smollm2_gguf_path())?;
    let ids = model.encode("The capital of France is a city whose river", true)?;
    let single = run(&model, &ids)?;
    let AnyModel::Decoder(decoder) = &mut model else {
        return Err(Error::invalid_argument("SmolLM2 is a decoder"));
    };
    let placement = decoder.place(&DeviceMap::parse(&spec, &[])?, 0)?;
    let split = run(&model, &ids)?;
    let diffs = [
        relative(&single.0, &split.0),
        relative(&single.1, &split.1),
        relative(&single.2, &split.2),
    ];
    println!(
        "{}",
        json!({
            "placement": placement.to_string(),
            "logits_relative_difference": diffs[0],
            "gxi_relative_difference": diffs[1],
            "gxi_recomputed_relative_difference": diffs[2],
        })
    );
    if diffs.iter().any(|d| d.is_nan() || *d > 1e-5) {
        return Err(Error::invalid_argument(format!("split differs from one device: {diffs:?}")));
    }
    Ok(())
}
