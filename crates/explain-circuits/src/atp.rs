//! Attribution patching (AtP): the first-order estimate of every activation patch from two
//! forward passes and one backward pass.

use explainability_core::{
    Error, ForwardOptions, HookFilter, HookPoint, Hooks, LanguageModel, Result,
};
use tch::{Kind, Tensor};

use crate::metric::{LogitDiff, check_pair, ids_tensor, normalise, token_strings};
use crate::patching::{
    ActivationPatching, PatchDirection, PatchingResult, UnitGrid, metric_values,
};

/// Attribution patching: `M(patched) ≈ M(receiver) + (a_source − a_receiver) · ∂M/∂a`, for
/// every unit of [`ActivationPatching`] at once.
///
/// Nanda 2023, "Attribution Patching: Activation Patching At Industrial Scale"; Kramár et al.
/// 2024, "AtP*" (arXiv:2403.00745), whose Eq. 3 this is. The receiving prompt runs once with
/// gradients (the corrupted one for [`PatchDirection::Denoising`], the clean one for
/// [`PatchDirection::Noising`]), the source prompt once without, and one backward pass gives
/// the gradient at every activation of the site; a unit's estimate is the dot product over
/// its entries (the d_model of a position, a head's d_head, a pattern row's keys). Results
/// have the layout and normalisation of [`ActivationPatching::run`], with `patched` holding
/// the estimates. The estimate is exact when the metric is linear in the patched activation;
/// attention saturation (the AtP* QK fix) and cancellation across paths (GradDrop) are not
/// corrected here.
///
/// # Errors
/// As [`ActivationPatching::run`] (`batch_size` is not used).
pub fn attribution_patching(
    patching: &ActivationPatching,
    model: &dyn LanguageModel,
    clean: &[i64],
    corrupted: &[i64],
    metric: LogitDiff,
) -> Result<PatchingResult> {
    let len = check_pair(clean, corrupted)?;
    metric.check(model.info().vocab_size)?;
    let position = metric.position_in(len)?;
    let UnitGrid { layers, heads, positions, units } = patching.units(model, len)?;
    let site = patching.site;
    let kind = site.hook_kind();
    let points: Vec<HookPoint> = layers.iter().map(|&l| HookPoint::new(kind, l)).collect();
    let clean_ids = ids_tensor(model, clean)?;
    let corrupted_ids = ids_tensor(model, corrupted)?;
    let (receiver, source) = match patching.direction {
        PatchDirection::Denoising => (&corrupted_ids, &clean_ids),
        PatchDirection::Noising => (&clean_ids, &corrupted_ids),
    };
    let options = ForwardOptions { logits_from: Some(position), ..Default::default() };

    // Source run: activations only.
    let (source_metric, source_cache) = {
        let _guard = tch::no_grad_guard();
        let mut hooks = Hooks::new();
        hooks.cache_detached(HookFilter::points(points.clone()));
        let out = model.forward_ids(source, &options, &mut hooks)?;
        (metric_values(&out.logits, metric)?[0], hooks.take_cache())
    };
    // Receiver run with the graph kept, then one backward pass to every activation.
    let embeddings = model.embed(receiver)?.f_detach()?.f_set_requires_grad(true)?;
    let mut hooks = Hooks::new();
    hooks.cache(HookFilter::points(points.clone()));
    let out = model.forward_embeddings(&embeddings, &options, &mut hooks)?;
    let receiver_metric = metric_values(&out.logits.f_detach()?, metric)?[0];
    let value = metric.of_rows(&out.logits.f_select(1, 0)?)?.f_sum(Kind::Float)?;
    let cache = hooks.take_cache();
    let mut activations = Vec::with_capacity(points.len());
    for p in &points {
        let a = cache.get(p).ok_or_else(|| Error::UnknownComponent {
            component: p.to_string(),
            reason: "the model does not fire this hook point".into(),
        })?;
        activations.push(a.shallow_clone());
    }
    let grads = Tensor::f_run_backward(&[value], &activations, false, false)?;

    // Per-layer effect tensors, summed over each unit's entries.
    let mut estimates = Vec::with_capacity(units.len());
    let mut per_layer = std::collections::HashMap::new();
    for ((p, a), g) in points.iter().zip(&activations).zip(&grads) {
        let source_a = source_cache.require(p)?;
        let delta = source_a.f_sub(&a.f_detach()?)?.f_to_kind(Kind::Double)?;
        let g = if g.defined() { g.f_to_kind(Kind::Double)? } else { delta.f_zeros_like()? };
        // Layouts: [1, pos, d]; z [1, pos, head, d_head]; pattern [1, head, q, k].
        let effect = delta.f_mul(&g)?.f_sum_dim_intlist(-1, false, Kind::Double)?.f_select(0, 0)?;
        let effect = match site {
            crate::PatchSite::HeadPattern => effect.f_transpose(0, 1)?, // [pos, head]
            _ => effect,
        };
        per_layer.insert(p.layer().unwrap_or(0), effect.f_contiguous()?);
    }
    for unit in &units {
        let effect = &per_layer[&unit.layer];
        let effect = match unit.position {
            Some(pos) => effect.f_select(0, pos as i64)?,
            None => effect.f_sum_dim_intlist(0, false, Kind::Double)?,
        };
        let effect = match unit.head {
            Some(h) => effect.f_select(0, h as i64)?,
            None => effect,
        };
        estimates.push(receiver_metric + effect.f_double_value(&[])?);
    }
    let (clean_metric, corrupted_metric) = match patching.direction {
        PatchDirection::Denoising => (source_metric, receiver_metric),
        PatchDirection::Noising => (receiver_metric, source_metric),
    };
    let shape = (layers.len(), heads.len().max(1), positions.len().max(1));
    let patched = ndarray::Array3::from_shape_vec(shape, estimates)
        .map_err(|e| Error::invalid_argument(e.to_string()))?;
    let scores = patched.mapv(|v| normalise(v, clean_metric, corrupted_metric));
    Ok(PatchingResult {
        site,
        direction: patching.direction,
        tokens: token_strings(model, clean),
        layers,
        heads,
        positions,
        clean_metric,
        corrupted_metric,
        patched,
        scores,
    })
}
