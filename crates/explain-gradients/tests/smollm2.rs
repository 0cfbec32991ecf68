//! Gradient methods on the real SmolLM2-135M: definitions, baselines, layer IG consistency,
//! SmoothGrad reproducibility, adaptive IG convergence, typed errors on bad input, and NaN
//! gradients located by path step and hook point (faults injected through the model's hooks).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, MutexGuard, OnceLock};

use explain_gradients::{
    AdaptiveOptions, Baseline, GradientXInput, IntegratedGradients, LayerIntegratedGradients,
    PathOptions, Quadrature, QuadratureRule, Saliency, SaliencyNorm, SmoothGrad,
};
use explain_models::{AnyModel, load, smollm2_gguf_path};
use explainability_core::{
    Error, Explainer, ForwardOptions, HookFilter, HookPoint, Hooks, LanguageModel, ModelInfo,
    ModelOutput, Target,
};
use tch::{Kind, Tensor};

const PROMPT: [i64; 5] = [504, 3575, 282, 4649, 314]; // "The capital of France is"
const PARIS: i64 = 7042;
const LONDON: i64 = 4528;

fn model() -> MutexGuard<'static, AnyModel> {
    static MODEL: OnceLock<Mutex<AnyModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(load(smollm2_gguf_path()).expect("run `cargo xtask setup`")))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn fixed(
    baseline: Baseline,
    rule: QuadratureRule,
    n_steps: usize,
    batch: Option<usize>,
) -> IntegratedGradients {
    IntegratedGradients {
        baseline,
        quadrature: Quadrature::Fixed(PathOptions { rule, n_steps, internal_batch_size: batch }),
        check_path: true,
    }
}

fn rel_close(a: &[f64], b: &[f64], tol: f64) {
    let scale = a.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1e-12);
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * scale, "{a:?} vs {b:?}");
    }
}

#[test]
fn saliency_and_gradient_x_input_follow_their_definitions() {
    let model = model();
    let target = Target::log_prob(PARIS);
    let l2 = Saliency::default().explain_ids(&*model, &PROMPT, &target).unwrap();
    let l1 = Saliency { norm: SaliencyNorm::L1 }.explain_ids(&*model, &PROMPT, &target).unwrap();
    let sum = Saliency { norm: SaliencyNorm::Sum }.explain_ids(&*model, &PROMPT, &target).unwrap();
    assert_eq!(l2.len(), 5);
    assert_eq!(l2.target_token.as_deref(), Some(" Paris"));
    assert!(l2.target_value.unwrap() < 0.0);
    for i in 0..5 {
        assert!(l2.scores[i] > 0.0 && l1.scores[i] >= l2.scores[i]);
        assert!(sum.scores[i].abs() <= l1.scores[i] + 1e-9);
    }
    // Gradient×input against a direct autograd computation on the same embeddings.
    let gxi = GradientXInput.explain_ids(&*model, &PROMPT, &target).unwrap();
    let ids = Tensor::from_slice(&PROMPT).unsqueeze(0);
    let emb = model.embed(&ids).unwrap().detach().set_requires_grad(true);
    let out = model.forward_embeddings(&emb, &Default::default(), &mut Default::default()).unwrap();
    let y = target.evaluate(&out.logits).unwrap().sum(Kind::Float);
    let g = Tensor::run_backward(&[&y], &[&emb], false, false).pop().unwrap();
    let direct: Vec<f64> =
        Vec::try_from((g * emb.detach()).sum_dim_intlist(-1, false, Kind::Double).squeeze_dim(0))
            .unwrap();
    // The same function, but the explainer computes logits for the explained position only
    // ([1, 1, vocab]) while this computes all of them ([1, 5, vocab]): the head's products
    // (a 49,152-long reduction in the backward pass) are blocked differently, and that f32
    // round-off travels through 30 layers (measured up to 3e-5 of the largest score at one
    // thread, less at two).
    rel_close(gxi.scores.as_slice().unwrap(), &direct, 1e-4);
}

#[test]
fn integrated_gradients_reports_completeness_and_chunking_only_reorders() {
    let model = model();
    let target = Target::log_prob(PARIS);
    let whole = fixed(Baseline::Eos, QuadratureRule::GaussLegendre, 16, None)
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    let chunked = fixed(Baseline::Eos, QuadratureRule::GaussLegendre, 16, Some(5))
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    let delta = whole.convergence_delta.unwrap();
    let f_base = whole.metadata["f_baseline"].as_f64().unwrap();
    let fx = whole.target_value.unwrap();
    // Σ scores − delta = F(x) − F(x'), by construction up to f64 summation.
    assert!((whole.scores.sum() - delta - (fx - f_base)).abs() < 1e-9);
    // REFERENCES.md: F(x) − F(eos baseline) = 17.05.
    assert!((fx - f_base - 17.05).abs() < 0.05, "F difference {}", fx - f_base);
    // Batched matmuls of another batch size round differently in f32: the LM head is one
    // [rows, 576] × [576, 49152] product, blocked differently for 16 and 5 rows, and this
    // path's spiky integrand (|delta| 30 % of the change at 16 steps) amplifies the
    // difference: 3.1e-4 of the largest score measured (before the head ran as a 2-D
    // product it was computed row by row and agreed to 1e-4). Summation order alone is
    // proven exact in f64 by the proptest `chunking_changes_only_summation_order`.
    rel_close(whole.scores.as_slice().unwrap(), chunked.scores.as_slice().unwrap(), 1e-3);
    assert_eq!(whole.metadata["gradient_evaluations"], 16);
    assert_eq!(whole.metadata["baseline"], "eos");
}

#[test]
fn baselines_resolve_and_a_baseline_equal_to_the_input_gives_zero() {
    let model = model();
    let target = Target::log_prob(PARIS);
    let ids = Tensor::from_slice(&PROMPT).unsqueeze(0);
    let emb = model.embed(&ids).unwrap().detach();
    let same = fixed(Baseline::Custom(emb.shallow_clone()), QuadratureRule::GaussLegendre, 4, None)
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    assert!(same.scores.iter().all(|&s| s == 0.0));
    // F(x) and F(x') are two rows of one batch: f32 kernels may round them differently.
    assert!(same.convergence_delta.unwrap().abs() < 1e-5);
    for baseline in [Baseline::Zero, Baseline::Token(2), Baseline::MeanEmbedding] {
        let e = fixed(baseline, QuadratureRule::MiddleRiemann, 4, None)
            .explain_ids(&*model, &PROMPT, &target)
            .unwrap();
        assert!(e.scores.iter().all(|s| s.is_finite()));
    }
    // Token(eos id) and Eos are the same baseline.
    let a = fixed(Baseline::Token(2), QuadratureRule::Trapezoid, 3, None)
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    let b = fixed(Baseline::Eos, QuadratureRule::Trapezoid, 3, None)
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    assert_eq!(a.scores, b.scores);
}

#[test]
fn layer_ig_at_the_first_residual_equals_embedding_ig() {
    // blocks.0.hook_resid_pre is the embedding itself, so both must agree.
    let model = model();
    let target = Target::contrastive(PARIS, LONDON);
    let q = Quadrature::Fixed(PathOptions { n_steps: 8, ..PathOptions::default() });
    let ig = IntegratedGradients { baseline: Baseline::Eos, quadrature: q, check_path: false }
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    let lig = LayerIntegratedGradients {
        point: HookPoint::resid_pre(0),
        baseline: Baseline::Eos,
        quadrature: q,
    }
    .explain_ids(&*model, &PROMPT, &target)
    .unwrap();
    rel_close(ig.scores.as_slice().unwrap(), lig.scores.as_slice().unwrap(), 1e-4);
    // A deeper layer: completeness bookkeeping holds there too.
    let deep = LayerIntegratedGradients { point: HookPoint::resid_mid(20), ..lig_default() }
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    let fb = deep.metadata["f_baseline"].as_f64().unwrap();
    assert!(
        (deep.scores.sum() - deep.convergence_delta.unwrap() - (deep.target_value.unwrap() - fb))
            .abs()
            < 1e-6
    );
    assert_eq!(deep.metadata["hook_point"], "blocks.20.hook_resid_mid");
}

fn lig_default() -> LayerIntegratedGradients {
    LayerIntegratedGradients {
        quadrature: Quadrature::Fixed(PathOptions { n_steps: 8, ..PathOptions::default() }),
        ..LayerIntegratedGradients::new(HookPoint::resid_post(29))
    }
}

#[test]
fn smoothgrad_is_reproducible_from_its_seed_alone() {
    let model = model();
    let target = Target::log_prob(PARIS);
    let sg = SmoothGrad { n_samples: 6, internal_batch_size: Some(4), ..SmoothGrad::default() };
    tch::manual_seed(1);
    let a = sg.explain_ids(&*model, &PROMPT, &target).unwrap();
    tch::manual_seed(2);
    let _ = Tensor::randn([100], (Kind::Float, tch::Device::Cpu));
    let b = sg.explain_ids(&*model, &PROMPT, &target).unwrap();
    assert_eq!(a.scores, b.scores);
    let c = SmoothGrad { seed: 7, ..sg }.explain_ids(&*model, &PROMPT, &target).unwrap();
    assert_ne!(a.scores, c.scores);
    // No noise: SmoothGrad is saliency.
    let plain = SmoothGrad { noise_level: 0.0, n_samples: 2, ..sg }
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    let sal = Saliency::default().explain_ids(&*model, &PROMPT, &target).unwrap();
    // Batch of 2 versus batch of 1: f32 kernel round-off (observed 2e-5 relative).
    rel_close(plain.scores.as_slice().unwrap(), sal.scores.as_slice().unwrap(), 1e-4);
}

#[test]
fn adaptive_ig_reaches_five_percent_within_its_budget() {
    let model = model();
    let target = Target::log_prob(PARIS);
    let e = IntegratedGradients::adaptive(Baseline::Eos)
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    let fb = e.metadata["f_baseline"].as_f64().unwrap();
    let change = e.target_value.unwrap() - fb;
    let delta = e.convergence_delta.unwrap();
    let evals = e.metadata["gradient_evaluations"].as_u64().unwrap();
    println!("adaptive: delta {delta:.4} of {change:.4} with {evals} gradient evaluations");
    assert!(delta.abs() <= 0.05 * change.abs(), "delta {delta} of {change}");
    assert!(evals <= AdaptiveOptions::default().max_gradient_evaluations as u64);
    assert_eq!(e.metadata["converged"], true);
}

#[test]
fn zero_baseline_path_is_flagged() {
    let model = model();
    let e = fixed(Baseline::Zero, QuadratureRule::GaussLegendre, 4, None)
        .explain_ids(&*model, &PROMPT, &Target::log_prob(PARIS))
        .unwrap();
    let share = e.metadata["path_variation_below_0.02"].as_f64().unwrap();
    println!(
        "zero baseline: {share:.3} variation below alpha 0.02: {}",
        e.metadata["path_profile"]
    );
    assert!(e.metadata.contains_key("warning_path_discontinuity"), "share {share}");
    let eos = fixed(Baseline::Eos, QuadratureRule::GaussLegendre, 4, None)
        .explain_ids(&*model, &PROMPT, &Target::log_prob(PARIS))
        .unwrap();
    println!("eos: {}", eos.metadata["path_profile"]);
    assert!(!eos.metadata.contains_key("warning_path_discontinuity"));
}

#[test]
fn bad_input_gives_typed_errors() {
    let model = model();
    let m = &*model;
    let ig = IntegratedGradients::default();
    assert!(matches!(
        ig.explain_ids(m, &PROMPT, &Target::log_prob(49152)),
        Err(Error::TokenOutOfRange { id: 49152, .. })
    ));
    assert!(matches!(
        Saliency::default().explain_ids(m, &PROMPT, &Target::contrastive(PARIS, -1)),
        Err(Error::TokenOutOfRange { id: -1, .. })
    ));
    assert!(matches!(GradientXInput.explain_ids(m, &[], &Target::argmax()), Err(Error::EmptyText)));
    assert!(matches!(
        fixed(Baseline::Eos, QuadratureRule::GaussLegendre, 0, None).explain_ids(
            m,
            &PROMPT,
            &Target::argmax()
        ),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        fixed(Baseline::Eos, QuadratureRule::GaussLegendre, 4, Some(0)).explain_ids(
            m,
            &PROMPT,
            &Target::argmax()
        ),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        fixed(Baseline::Token(60000), QuadratureRule::GaussLegendre, 4, None).explain_ids(
            m,
            &PROMPT,
            &Target::argmax()
        ),
        Err(Error::TokenOutOfRange { id: 60000, .. })
    ));
    let wrong = Tensor::zeros([4, 576], (Kind::Float, tch::Device::Cpu));
    assert!(matches!(
        fixed(Baseline::Custom(wrong), QuadratureRule::GaussLegendre, 4, None).explain_ids(
            m,
            &PROMPT,
            &Target::argmax()
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        LayerIntegratedGradients::new(HookPoint::resid_post(30)).explain_ids(
            m,
            &PROMPT,
            &Target::argmax()
        ),
        Err(Error::LayerOutOfRange { layer: 30, n_layers: 30 })
    ));
    assert!(matches!(
        LayerIntegratedGradients::new(HookPoint::pattern(3)).explain_ids(
            m,
            &PROMPT,
            &Target::argmax()
        ),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        SmoothGrad { n_samples: 0, ..SmoothGrad::default() }.explain_ids(
            m,
            &PROMPT,
            &Target::argmax()
        ),
        Err(Error::InvalidArgument { .. })
    ));
    let a = AdaptiveOptions { max_gradient_evaluations: 3, ..AdaptiveOptions::default() };
    let adaptive = IntegratedGradients {
        quadrature: Quadrature::Adaptive(a),
        ..IntegratedGradients::default()
    };
    assert!(matches!(
        adaptive.explain_ids(m, &PROMPT, &Target::argmax()),
        Err(Error::InvalidArgument { .. })
    ));
    let long = vec![504i64; m.info().max_positions + 1];
    assert!(matches!(
        Saliency::default().explain_ids(m, &long, &Target::argmax()),
        Err(Error::SequenceTooLong { .. })
    ));
}

#[test]
fn uniform_gauss_legendre_does_not_converge_but_adaptive_does() {
    // REFERENCES.md: eos baseline, deltas 5.8 / −5.1 / −24.0 at 10 / 50 / 200 steps for an F
    // difference of 17.05. Our f32 forward is not bit-identical to the reference's, and the
    // integrand is spiky, so the deltas agree only roughly; what must hold is that they are
    // large and not monotone, while adaptive quadrature meets 5% with fewer evaluations.
    let model = model();
    let target = Target::log_prob(PARIS);
    let mut deltas = Vec::new();
    for steps in [10usize, 50, 200] {
        let start = std::time::Instant::now();
        let e = fixed(Baseline::Eos, QuadratureRule::GaussLegendre, steps, Some(50))
            .explain_ids(&*model, &PROMPT, &target)
            .unwrap();
        let d = e.convergence_delta.unwrap();
        println!("GL {steps:>3} steps: delta {d:+.3} ({:.2?})", start.elapsed());
        deltas.push(d);
    }
    let start = std::time::Instant::now();
    let e = IntegratedGradients::adaptive(Baseline::Eos)
        .explain_ids(&*model, &PROMPT, &target)
        .unwrap();
    println!(
        "adaptive: delta {:+.3}, {} gradient + {} forward evaluations, {} intervals ({:.2?})",
        e.convergence_delta.unwrap(),
        e.metadata["gradient_evaluations"],
        e.metadata["forward_evaluations"],
        e.metadata["intervals"],
        start.elapsed()
    );
    // Measured here: +5.761, −5.130, −23.998 (reference 5.8, −5.1, −24.0). The tolerance of 1
    // allows other CPUs' kernel round-off on a spiky integrand.
    for (d, reference) in deltas.iter().zip([5.8, -5.1, -24.0]) {
        assert!((d - reference).abs() < 1.0, "{deltas:?}");
    }
    assert!(e.convergence_delta.unwrap().abs() <= 0.05 * 17.05);
}

#[test]
fn gradient_flow_covers_every_parameter_and_leaks_no_requires_grad() {
    let model = model();
    let flow = explain_gradients::GradientFlowAnalysis::default()
        .analyze(&*model, &PROMPT, &Target::log_prob(PARIS))
        .unwrap();
    let params = model.named_parameters();
    assert_eq!(flow.parameters.len(), params.len());
    assert!(params.iter().all(|(_, t)| !t.requires_grad()));
    assert_eq!(flow.layer_norms.len(), 30);
    assert!(flow.layer_norms.iter().all(|n| n.is_finite() && *n > 0.0));
    let q0 = flow.parameters.iter().find(|p| p.name == "blocks.0.attn.W_Q").unwrap();
    assert_eq!(q0.layer, Some(0));
    assert!(q0.norm > 0.0 && q0.ratio > 0.0 && !q0.unused);
    assert!(serde_json::to_string(&flow).is_ok());
}

/// SmolLM2 with a fault injected through its own hook mechanism at one hook point.
struct Faulty<'m> {
    inner: &'m AnyModel,
    point: HookPoint,
    /// `false`: `x + 0·sqrt(0·x)`, the same values forward but NaN gradients backward
    /// (0·∞); `true`: the activation becomes NaN.
    nan_values: bool,
}

impl LanguageModel for Faulty<'_> {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }
    fn device(&self) -> tch::Device {
        self.inner.device()
    }
    fn kind(&self) -> Kind {
        self.inner.kind()
    }
    fn encode(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> explainability_core::Result<Vec<i64>> {
        self.inner.encode(text, add_special_tokens)
    }
    fn decode(&self, ids: &[i64]) -> explainability_core::Result<String> {
        self.inner.decode(ids)
    }
    fn token_strings(&self, ids: &[i64]) -> explainability_core::Result<Vec<String>> {
        self.inner.token_strings(ids)
    }
    fn embed(&self, ids: &Tensor) -> explainability_core::Result<Tensor> {
        self.inner.embed(ids)
    }
    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> explainability_core::Result<ModelOutput> {
        let nan_values = self.nan_values;
        hooks.replace(HookFilter::point(self.point), move |_, x| {
            Ok(if nan_values { x * f64::NAN } else { x + (x * 0.0).sqrt() * 0.0 })
        });
        self.inner.forward_embeddings(embeddings, options, hooks)
    }
    fn unembed(&self, final_hidden: &Tensor) -> explainability_core::Result<Tensor> {
        self.inner.unembed(final_hidden)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.inner.named_parameters()
    }
}

fn non_finite(
    r: explainability_core::Result<explainability_core::Explanation>,
) -> (Option<f64>, Option<String>) {
    match r {
        Err(Error::NonFinite { alpha, hook_point, what }) => {
            println!("non-finite {what}: alpha {alpha:?} at {hook_point:?}");
            (alpha, hook_point)
        }
        other => panic!("expected Error::NonFinite, got {other:?}"),
    }
}

#[test]
fn nan_gradients_are_reported_with_the_step_and_the_layer() {
    let model = model();
    let faulty = Faulty { inner: &model, point: HookPoint::resid_mid(7), nan_values: false };
    let target = Target::log_prob(PARIS);
    // The fault leaves the forward values intact: F(x) is finite, only gradients are NaN.
    let (alpha, point) = non_finite(Saliency::default().explain_ids(&faulty, &PROMPT, &target));
    assert_eq!((alpha, point.as_deref()), (None, Some("blocks.7.hook_resid_mid")));
    let ig = fixed(Baseline::Eos, QuadratureRule::GaussLegendre, 4, Some(1));
    let (alpha, point) = non_finite(ig.explain_ids(&faulty, &PROMPT, &target));
    let first = QuadratureRule::GaussLegendre.nodes_and_weights(4).unwrap().0[0];
    assert_eq!(alpha, Some(first));
    assert_eq!(point.as_deref(), Some("blocks.7.hook_resid_mid"));
    // Layer IG above the fault sees finite gradients; below it, the fault is located too.
    let above = LayerIntegratedGradients { point: HookPoint::resid_post(7), ..lig_default() };
    assert!(above.explain_ids(&faulty, &PROMPT, &target).is_ok());
    let below = LayerIntegratedGradients { point: HookPoint::resid_pre(3), ..lig_default() };
    let (alpha, point) = non_finite(below.explain_ids(&faulty, &PROMPT, &target));
    assert!(alpha.is_some());
    assert_eq!(point.as_deref(), Some("blocks.7.hook_resid_mid"));
    // NaN values in block 12's attention: F(x) itself is NaN, found at the block's output.
    let broken = Faulty { inner: &model, point: HookPoint::z(12), nan_values: true };
    let (alpha, point) = non_finite(GradientXInput.explain_ids(&broken, &PROMPT, &target));
    assert_eq!((alpha, point.as_deref()), (None, Some("blocks.12.hook_attn_out")));
    // The message names both.
    let message = ig.explain_ids(&faulty, &PROMPT, &target).unwrap_err().to_string();
    assert!(
        message.contains("alpha = ") && message.contains("blocks.7.hook_resid_mid"),
        "{message}"
    );
}

/// Every gradient method on SmolLM2 gives the same attributions with the backward pass
/// recomputed block by block as with plain autograd: identical f32 forward kernels, the
/// gradient summed in another order, so 1e-6 relative to the largest score.
#[test]
fn recomputed_backward_equals_stored_on_smollm2() {
    let model = model();
    let bounded = explainability_core::RecomputedBackward::new(&*model);
    let ids: Vec<i64> = PROMPT.iter().chain(&PROMPT).chain(&PROMPT).copied().collect();
    let methods: Vec<Box<dyn Explainer>> = vec![
        Box::new(Saliency { norm: SaliencyNorm::L2 }),
        Box::new(GradientXInput),
        Box::new(SmoothGrad { n_samples: 2, ..SmoothGrad::default() }),
        Box::new(fixed(Baseline::Eos, QuadratureRule::GaussLegendre, 6, Some(3))),
        Box::new(LayerIntegratedGradients {
            quadrature: Quadrature::Fixed(PathOptions { n_steps: 4, ..PathOptions::default() }),
            ..LayerIntegratedGradients::new(HookPoint::resid_mid(20))
        }),
    ];
    for method in methods {
        let plain = method.explain_ids(&*model, &ids, &Target::argmax()).unwrap();
        let recomputed = method.explain_ids(&bounded, &ids, &Target::argmax()).unwrap();
        let (a, b) = (plain.scores.to_vec(), recomputed.scores.to_vec());
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(diff <= 1e-6 * scale, "{}: {diff:e} of {scale:e}", method.name());
    }
}
