//! The Llama forward pass on tiny seeded random models: hook sites, the explicit vs fused
//! attention paths, grouped-query attention, padding, replacing hooks, dtypes, bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use approx::assert_abs_diff_eq;
use explain_models::{Decoder, LlamaConfig};
use explainability_core::{Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks};
use tch::{Device, Kind, Tensor};

fn config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 3,
        n_heads: 6,
        n_kv_heads: 2,
        d_model: 48,
        d_head: 8,
        d_mlp: 64,
        vocab_size: 97,
        max_positions: 32,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        attention_bias: false,
    }
}

fn model() -> Decoder {
    Decoder::random(config().into(), 7, Kind::Float, Device::Cpu).unwrap()
}

fn ids(values: &[i64]) -> Tensor {
    Tensor::from_slice(values).unsqueeze(0)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn every_hook_point_fires_once_in_forward_order_with_documented_shapes() {
    let model = model();
    let cfg = model.config().clone();
    let mut fired: Vec<(HookPoint, Vec<i64>)> = Vec::new();
    {
        let mut hooks = Hooks::new();
        hooks.read(HookFilter::all(), |p, t| {
            fired.push((*p, t.size()));
            Ok(())
        });
        let e = model.embed(&ids(&[1, 2, 3, 4, 5])).unwrap();
        model.forward(&e, &ForwardOptions::default(), &mut hooks).unwrap();
    }
    let points: Vec<HookPoint> = fired.iter().map(|(p, _)| *p).collect();
    // Every point but the post-norm ones of sandwich-norm families.
    let expected: Vec<HookPoint> = HookPoint::all(cfg.n_layers)
        .into_iter()
        .filter(|p| !matches!(p.kind(), HookKind::Ln1Post | HookKind::Ln2Post))
        .collect();
    assert_eq!(points, expected);
    let (t, d, h, kv, dh, mlp) = (5, 48, 6, 2, 8, 64);
    for (p, shape) in &fired {
        let expected: Vec<i64> = match p.kind() {
            HookKind::Embed
            | HookKind::ResidPre
            | HookKind::AttnOut
            | HookKind::ResidMid
            | HookKind::MlpOut
            | HookKind::ResidPost
            | HookKind::LnFinal => vec![1, t, d],
            HookKind::Q | HookKind::Z => vec![1, t, h, dh],
            HookKind::K | HookKind::V => vec![1, t, kv, dh],
            HookKind::AttnScores | HookKind::Pattern => vec![1, h, t, t],
            HookKind::MlpPost => vec![1, t, mlp],
            other => panic!("unexpected hook kind {other:?}"),
        };
        assert_eq!(shape, &expected, "shape at {p}");
    }
}

#[test]
fn explicit_attention_path_equals_fused_path() {
    let model = model();
    let e = model.embed(&ids(&[3, 1, 4, 1, 5, 9, 2, 6])).unwrap();
    let plain = model.forward(&e, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
    let explicit = model.forward(&e, &ForwardOptions::default(), &mut hooks).unwrap();
    // Same maths, different kernels: f32 rounding only.
    assert!(max_abs_diff(&plain.logits, &explicit.logits) < 1e-4);
    assert_eq!(hooks.cached().len(), 3);
}

#[test]
fn patterns_are_causal_probabilities() {
    let model = model();
    let (_, cache) = {
        let e = model.embed(&ids(&[10, 20, 30, 40, 50, 60])).unwrap();
        let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
        let out = model.forward(&e, &ForwardOptions::default(), &mut hooks).unwrap();
        (out, hooks.take_cache())
    };
    for (point, pattern) in cache.iter() {
        let sums = pattern.sum_dim_intlist(-1, false, Kind::Double);
        assert!(max_abs_diff(&sums, &sums.ones_like()) < 1e-6, "{point} rows sum to 1");
        let future = pattern.triu(1);
        assert_eq!(future.abs().max().double_value(&[]), 0.0, "{point} future is exactly 0");
        assert!(pattern.min().double_value(&[]) >= 0.0);
    }
}

#[test]
fn grouped_query_heads_share_their_kv_head() {
    // With all query weights of a group equal, the three query heads reading one kv head
    // must produce identical patterns; heads of other groups differ.
    let model = model();
    let mut hooks = Hooks::new();
    hooks.replace(HookFilter::kind(HookKind::Q), |_, q| {
        // q: [batch, pos, head, d_head]; copy head 0 into heads 1 and 2 (group of kv head 0)
        // and head 3 into heads 4 and 5 (group of kv head 1).
        let h0 = q.narrow(2, 0, 1);
        let h3 = q.narrow(2, 3, 1);
        Ok(Tensor::cat(&[&h0, &h0, &h0, &h3, &h3, &h3], 2))
    });
    hooks.cache(HookFilter::point(HookPoint::pattern(1)));
    let e = model.embed(&ids(&[5, 6, 7, 8, 9])).unwrap();
    model.forward(&e, &ForwardOptions::default(), &mut hooks).unwrap();
    let p = hooks.cached().get(&HookPoint::pattern(1)).unwrap().shallow_clone();
    let head = |h: i64| p.select(1, h);
    assert!(max_abs_diff(&head(0), &head(1)) < 1e-7);
    assert!(max_abs_diff(&head(0), &head(2)) < 1e-7);
    assert!(max_abs_diff(&head(3), &head(5)) < 1e-7);
    assert!(max_abs_diff(&head(0), &head(3)) > 1e-4, "different kv heads give different patterns");
}

#[test]
fn replacing_hooks_change_the_output_and_identity_replacement_does_not() {
    let model = model();
    let e = model.embed(&ids(&[11, 12, 13, 14])).unwrap();
    let base = model.forward(&e, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    let mut identity = Hooks::new();
    identity.replace(HookFilter::all(), |_, t| Ok(t.shallow_clone()));
    let same = model.forward(&e, &ForwardOptions::default(), &mut identity).unwrap();
    assert!(max_abs_diff(&base.logits, &same.logits) < 1e-4);

    // Zero-ablating the whole attention output of every layer leaves an MLP-only model:
    // position 0's logits then do not depend on the other tokens.
    let mut ablate = Hooks::new();
    ablate.replace(HookFilter::kind(HookKind::AttnOut), |_, t| Ok(t.zeros_like()));
    let a = model.forward(&e, &ForwardOptions::default(), &mut ablate).unwrap();
    assert!(max_abs_diff(&base.logits, &a.logits) > 1e-3);
    let e2 = model.embed(&ids(&[11, 50, 60, 70])).unwrap();
    let mut ablate2 = Hooks::new();
    ablate2.replace(HookFilter::kind(HookKind::AttnOut), |_, t| Ok(t.zeros_like()));
    let b = model.forward(&e2, &ForwardOptions::default(), &mut ablate2).unwrap();
    assert!(max_abs_diff(&a.logits.select(1, 0), &b.logits.select(1, 0)) < 1e-6);
}

#[test]
fn causality_later_tokens_do_not_change_earlier_logits() {
    let model = model();
    let a = model.embed(&ids(&[1, 2, 3, 4, 5, 6])).unwrap();
    let b = model.embed(&ids(&[1, 2, 3, 90, 91, 92])).unwrap();
    let la = model.forward(&a, &ForwardOptions::default(), &mut Hooks::new()).unwrap().logits;
    let lb = model.forward(&b, &ForwardOptions::default(), &mut Hooks::new()).unwrap().logits;
    assert!(max_abs_diff(&la.narrow(1, 0, 3), &lb.narrow(1, 0, 3)) < 1e-5);
    assert!(max_abs_diff(&la.narrow(1, 3, 3), &lb.narrow(1, 3, 3)) > 1e-3);
}

#[test]
fn right_padding_gives_zero_attention_to_pads_and_unchanged_real_logits() {
    let model = model();
    let short = ids(&[7, 8, 9]);
    let padded = Tensor::from_slice2(&[[7i64, 8, 9, 0, 0], [1, 2, 3, 4, 5]]);
    let mask = Tensor::from_slice2(&[[1i64, 1, 1, 0, 0], [1, 1, 1, 1, 1]]);
    let single = model
        .forward(&model.embed(&short).unwrap(), &ForwardOptions::default(), &mut Hooks::new())
        .unwrap();
    let options = ForwardOptions { attention_mask: Some(mask), ..Default::default() };
    let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
    let batched = model.forward(&model.embed(&padded).unwrap(), &options, &mut hooks).unwrap();
    let real = batched.logits.select(0, 0).narrow(0, 0, 3);
    assert!(max_abs_diff(&real, &single.logits.select(0, 0)) < 1e-5);
    for (point, pattern) in hooks.cached().iter() {
        // Keys 3 and 4 of row 0 are padding: exactly zero attention from real queries.
        let to_pads = pattern.select(0, 0).narrow(1, 0, 3).narrow(2, 3, 2);
        assert_eq!(to_pads.abs().max().double_value(&[]), 0.0, "{point}");
        let sums = pattern.sum_dim_intlist(-1, false, Kind::Double);
        assert!(max_abs_diff(&sums, &sums.ones_like()) < 1e-6, "{point} rows sum to 1");
    }
}

#[test]
fn left_padding_with_position_ids_matches_the_unpadded_run() {
    let model = model();
    let single = model
        .forward(
            &model.embed(&ids(&[7, 8, 9])).unwrap(),
            &ForwardOptions::default(),
            &mut Hooks::new(),
        )
        .unwrap();
    let options = ForwardOptions {
        attention_mask: Some(Tensor::from_slice2(&[[0i64, 0, 1, 1, 1]])),
        position_ids: Some(Tensor::from_slice2(&[[0i64, 0, 0, 1, 2]])),
        ..Default::default()
    };
    let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
    let padded = model
        .forward(
            &model.embed(&Tensor::from_slice2(&[[0i64, 0, 7, 8, 9]])).unwrap(),
            &options,
            &mut hooks,
        )
        .unwrap();
    let real = padded.logits.narrow(1, 2, 3);
    assert!(max_abs_diff(&real, &single.logits) < 1e-5);
    for (_, pattern) in hooks.cached().iter() {
        assert!(!bool::try_from(pattern.isnan().any()).unwrap(), "no NaN on padding rows");
        let to_pads = pattern.narrow(2, 2, 3).narrow(3, 0, 2);
        assert_eq!(to_pads.abs().max().double_value(&[]), 0.0);
    }
}

#[test]
fn logits_from_computes_only_the_tail_positions_and_targets_follow() {
    let model = model();
    let e = model.embed(&ids(&[4, 5, 6, 7, 8])).unwrap();
    let full = model.forward(&e, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    let tail_options = ForwardOptions { logits_from: Some(3), ..Default::default() };
    let tail = model.forward(&e, &tail_options, &mut Hooks::new()).unwrap();
    assert_eq!(tail.logits.size(), vec![1, 2, 97]);
    // Same rows, but a matmul of another shape may block its sums differently: f32 rounding.
    assert!(max_abs_diff(&tail.logits, &full.logits.narrow(1, 3, 2)) < 1e-5);
    assert_eq!(tail.final_hidden.size(), full.final_hidden.size(), "hidden stays whole");
    let target = explainability_core::Target::Token {
        token: explainability_core::TargetToken::Id(11),
        output: explainability_core::TargetOutput::LogProb,
        position: Some(3),
    };
    let on_full = target.evaluate(&full.logits).unwrap().double_value(&[0]);
    let on_tail = target.from_position(3).unwrap().evaluate(&tail.logits).unwrap();
    assert_abs_diff_eq!(on_full, on_tail.double_value(&[0]), epsilon = 1e-5);
    assert!(matches!(target.from_position(4), Err(Error::InvalidArgument { .. })));
    let past = ForwardOptions { logits_from: Some(5), ..Default::default() };
    assert!(matches!(
        model.forward(&e, &past, &mut Hooks::new()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn gradients_flow_to_embeddings() {
    let model = model();
    let e = model.embed(&ids(&[4, 5, 6])).unwrap().detach().set_requires_grad(true);
    let out = model.forward(&e, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    let target = out.logits.select(1, -1).select(1, 17).sum(Kind::Float);
    let grads = Tensor::run_backward(&[target], &[&e], false, false);
    assert_eq!(grads[0].size(), vec![1, 3, 48]);
    // Every position influences the last one through attention.
    let per_pos = grads[0].abs().sum_dim_intlist(-1, false, Kind::Float);
    assert!(per_pos.min().double_value(&[]) > 0.0);
}

#[test]
fn half_precisions_run_and_stay_close_to_f32() {
    let cfg = config();
    let f32_model = Decoder::random(cfg.clone().into(), 7, Kind::Float, Device::Cpu).unwrap();
    let bf16_model = Decoder::random(cfg.into(), 7, Kind::BFloat16, Device::Cpu).unwrap();
    let t = ids(&[1, 2, 3, 4]);
    let a = f32_model
        .forward(&f32_model.embed(&t).unwrap(), &ForwardOptions::default(), &mut Hooks::new())
        .unwrap();
    let mut hooks = Hooks::caching(HookFilter::kind(HookKind::Pattern));
    let b = bf16_model
        .forward(&bf16_model.embed(&t).unwrap(), &ForwardOptions::default(), &mut hooks)
        .unwrap();
    assert_eq!(b.logits.kind(), Kind::Float, "logits are f32 whatever the weights");
    assert_eq!(hooks.cached().get(&HookPoint::pattern(0)).unwrap().kind(), Kind::BFloat16);
    let scale = a.logits.abs().max().double_value(&[]);
    // bf16 keeps 8 bits of mantissa: a few percent of the logit scale.
    let diff = max_abs_diff(&a.logits, &b.logits);
    assert!(diff < 0.05 * scale.max(1.0), "bf16 differs by {diff} at logit scale {scale}");
}

#[test]
fn rope_only_depends_on_relative_position_for_scores() {
    // Shifting all positions by a constant leaves attention scores unchanged.
    let model = model();
    let e = model.embed(&ids(&[1, 2, 3, 4])).unwrap();
    let run = |offset: i64| {
        let pos = Tensor::arange_start(offset, offset + 4, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let options = ForwardOptions { position_ids: Some(pos), ..Default::default() };
        let mut hooks = Hooks::caching(HookFilter::point(HookPoint::pattern(0)));
        model.forward(&e, &options, &mut hooks).unwrap();
        hooks.take_cache().remove(&HookPoint::pattern(0)).unwrap()
    };
    assert!(max_abs_diff(&run(0), &run(9)) < 1e-5);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let model = model();
    assert!(matches!(
        model.embed(&ids(&[1, 97])),
        Err(Error::TokenOutOfRange { id: 97, vocab_size: 97 })
    ));
    assert!(matches!(model.embed(&ids(&[-1])), Err(Error::TokenOutOfRange { id: -1, .. })));
    assert!(matches!(
        model.embed(&Tensor::zeros([1, 0], (Kind::Int64, Device::Cpu))),
        Err(Error::EmptyText)
    ));
    assert!(matches!(
        model.embed(&Tensor::zeros([1, 33], (Kind::Int64, Device::Cpu))),
        Err(Error::SequenceTooLong { len: 33, max: 32 })
    ));
    assert!(matches!(
        model.embed(&Tensor::zeros([3], (Kind::Int64, Device::Cpu))),
        Err(Error::ShapeMismatch { .. })
    ));
    let wrong_width = Tensor::zeros([1, 3, 47], (Kind::Float, Device::Cpu));
    assert!(matches!(
        model.forward(&wrong_width, &ForwardOptions::default(), &mut Hooks::new()),
        Err(Error::ShapeMismatch { what, .. }) if what == "embeddings"
    ));
    let e = model.embed(&ids(&[1, 2])).unwrap();
    let bad_mask = ForwardOptions {
        attention_mask: Some(Tensor::ones([1, 3], (Kind::Int64, Device::Cpu))),
        ..Default::default()
    };
    assert!(matches!(
        model.forward(&e, &bad_mask, &mut Hooks::new()),
        Err(Error::ShapeMismatch { what, .. }) if what == "attention_mask"
    ));
    let bad_pos = ForwardOptions {
        position_ids: Some(Tensor::from_slice2(&[[0i64, 40]])),
        ..Default::default()
    };
    assert!(matches!(
        model.forward(&e, &bad_pos, &mut Hooks::new()),
        Err(Error::InvalidArgument { .. })
    ));
    let mut bad_hook = Hooks::new();
    bad_hook.replace(HookFilter::point(HookPoint::pattern(0)), |_, t| Ok(t.narrow(3, 0, 1)));
    assert!(matches!(
        model.forward(&e, &ForwardOptions::default(), &mut bad_hook),
        Err(Error::HookShapeMismatch { point, .. }) if point == "blocks.0.attn.hook_pattern"
    ));
    let mut bad = config();
    bad.n_kv_heads = 4;
    assert!(matches!(
        Decoder::random(bad.into(), 0, Kind::Float, Device::Cpu),
        Err(Error::InvalidConfig { reason }) if reason.contains("multiple")
    ));
}

#[test]
fn named_parameters_share_storage_with_the_model() {
    let model = model();
    let params = model.named_parameters();
    assert_eq!(params.len(), 1 + 3 * 9 + 1, "embed, 9 per block, final norm (tied head)");
    assert!(params.iter().any(|(n, _)| n == "blocks.2.attn.W_Q"));
    let e = model.embed(&ids(&[1, 2, 3])).unwrap();
    let before = model.forward(&e, &ForwardOptions::default(), &mut Hooks::new()).unwrap().logits;
    {
        let _guard = tch::no_grad_guard();
        let (_, w) = params.iter().find(|(n, _)| n == "blocks.2.mlp.W_out").unwrap();
        let mut w = w.shallow_clone();
        let _ = w.zero_();
    }
    let after = model.forward(&e, &ForwardOptions::default(), &mut Hooks::new()).unwrap().logits;
    assert!(max_abs_diff(&before, &after) > 1e-4);
    assert_abs_diff_eq!(
        model.named_parameters()[0].1.size().iter().product::<i64>() as f64,
        (97 * 48) as f64
    );
}
