//! A decoder placed by a device map (issue 15 item 3): every part sits on its planned device,
//! the forward pass (plain and block-wise) and the recomputed backward pass give the unplaced
//! model's results, and impossible placements are typed errors (item 7). This machine has only
//! a CPU, so the maps here split the model over CPU "devices"; the same code moves activations
//! between a GPU and the CPU (`explain-gradients/examples/device_map_split.rs` checks that
//! split against one device where CUDA exists).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_models::{
    AnyModel, DeviceBudget, DeviceMap, LoadOptions, Weights, load_with, smollm2_gguf_path,
};
use explainability_core::{
    Error, ForwardOptions, Hooks, LanguageModel, RecomputedBackward, gradients,
};
use tch::{Device, Kind, Tensor};

fn load(weights: Weights) -> AnyModel {
    load_with(smollm2_gguf_path(), LoadOptions::default().weights(weights)).unwrap()
}

fn decoder(model: &mut AnyModel) -> &mut explain_models::DecoderModel {
    match model {
        AnyModel::Decoder(m) => m,
        AnyModel::Bert(_) => unreachable!("SmolLM2 is a decoder"),
    }
}

fn ids(model: &AnyModel) -> Tensor {
    Tensor::from_slice(&model.encode("The capital of France is", true).unwrap()).unsqueeze(0)
}

fn logits(model: &AnyModel) -> Tensor {
    let _guard = tch::no_grad_guard();
    model.forward_ids(&ids(model), &ForwardOptions::default(), &mut Hooks::new()).unwrap().logits
}

/// ∂ log p(argmax) / ∂ embeddings through the block-wise recomputed backward pass.
fn recomputed_gradient(model: &AnyModel) -> Tensor {
    let bounded = RecomputedBackward::new(model);
    let emb = model.embed(&ids(model)).unwrap().detach().set_requires_grad(true);
    let g = gradients(
        &bounded,
        &emb,
        &[&emb],
        &ForwardOptions::default(),
        &mut Hooks::new(),
        &mut |out| Ok(out.logits.get(0).get(-1).log_softmax(-1, Kind::Float).max().unsqueeze(0)),
    )
    .unwrap();
    g.gradients[0][0].shallow_clone()
}

#[test]
fn a_split_placement_computes_what_one_device_computes() {
    for weights in [Weights::Resident, Weights::Streamed] {
        let mut model = load(weights);
        let (before, grad_before) = (logits(&model), recomputed_gradient(&model));
        let map = DeviceMap::parse("0-9:cpu,10-19:cpu,20-29:cpu", &[]).unwrap();
        let placement = decoder(&mut model).place(&map, 0).unwrap();
        assert_eq!(placement.blocks.len(), 30);
        // Every part is where the plan put it.
        let decoder_model = decoder(&mut model);
        assert_eq!(decoder_model.transformer().placement(), placement);
        for (name, t) in model.named_parameters() {
            let planned = match name.strip_prefix("blocks.") {
                Some(rest) => {
                    placement.blocks[rest.split('.').next().unwrap().parse::<usize>().unwrap()]
                }
                None if name.starts_with("ln_final") || name.starts_with("unembed") => {
                    placement.head
                }
                None => placement.embed,
            };
            assert_eq!(t.device(), planned, "{name}");
        }
        assert!(logits(&model).equal(&before), "{weights:?}: placed logits differ");
        assert!(recomputed_gradient(&model).equal(&grad_before), "{weights:?}: gradients differ");
    }
}

#[test]
fn impossible_placements_are_typed_errors() {
    let mut model = load(Weights::Resident);
    let before = logits(&model);
    let m = decoder(&mut model);
    // A device this machine does not have: refused before anything moves.
    if !tch::Cuda::is_available() || tch::Cuda::device_count() < 4 {
        let map = DeviceMap::parse("0-14:cpu,15-29:cuda:3", &[]).unwrap();
        assert!(matches!(m.place(&map, 0),
            Err(Error::DeviceUnavailable { requested }) if requested == "cuda:3"));
    }
    // Caps nothing fits: SmolLM2's f32 weights are 513 MiB.
    let tiny = DeviceMap::Auto(vec![DeviceBudget { device: Device::Cpu, max_bytes: 100 << 20 }]);
    let err = m.place(&tiny, 0).unwrap_err();
    assert!(matches!(err, Error::DeviceMap { .. }), "{err}");
    assert!(err.to_string().contains("MiB"), "{err}");
    // A reserve larger than the cap.
    let roomy = DeviceMap::Auto(vec![DeviceBudget { device: Device::Cpu, max_bytes: 1 << 30 }]);
    assert!(matches!(m.place(&roomy, 2 << 30), Err(Error::DeviceMap { .. })));
    // Ranges that do not cover the model's 30 blocks.
    let short = DeviceMap::parse("0-9:cpu", &[]).unwrap();
    assert!(
        matches!(m.place(&short, 0), Err(Error::DeviceMap { reason }) if reason.contains("30"))
    );
    // Nothing moved: the model still computes what it did.
    assert!(logits(&model).equal(&before));
    // A cap that fits plans onto the one device.
    let m = decoder(&mut model);
    let placement = m.place(&roomy, 64 << 20).unwrap();
    assert!(placement.is_single());
}
