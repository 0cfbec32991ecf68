//! Attribution patching (AtP): the first-order estimate of every activation patch from two
//! forward passes and one backward pass.

use std::collections::HashMap;

use explainability_core::{
    ActivationCache, Error, ForwardOptions, HookFilter, HookPoint, Hooks, LanguageModel, Result,
};
use tch::{Kind, Tensor};

use crate::metric::{LogitDiff, check_pair, ids_tensor, normalise, token_strings};
use crate::patching::{
    ActivationPatching, PatchDirection, PatchSite, PatchUnit, PatchingResult, UnitGrid,
    metric_values,
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
/// attention saturation (the AtP* QK fix) is not corrected, and cancellation across paths is
/// what [`attribution_patching_grad_drop`] counters.
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
    atp(patching, model, clean, corrupted, metric, false)
}

/// Attribution patching with GradDrop (AtP*, Kramár et al. 2024, arXiv:2403.00745, §3.2): the
/// estimate of [`attribution_patching`] recomputed L times, each time with the gradient
/// through layer l's attention and MLP outputs dropped, and combined as
/// `sign(AtP) · Σ_l |AtP_l| / (L − 1)`, which counters cancellation between paths. Costs L + 1
/// backward passes. The AtP* QK fix (exact softmax for query and key nodes) does not apply to
/// the sites offered here (residual, attention and MLP outputs, head outputs and patterns).
///
/// # Errors
/// As [`attribution_patching`]; [`Error::InvalidArgument`] for a model of one layer.
pub fn attribution_patching_grad_drop(
    patching: &ActivationPatching,
    model: &dyn LanguageModel,
    clean: &[i64],
    corrupted: &[i64],
    metric: LogitDiff,
) -> Result<PatchingResult> {
    atp(patching, model, clean, corrupted, metric, true)
}

fn atp(
    patching: &ActivationPatching,
    model: &dyn LanguageModel,
    clean: &[i64],
    corrupted: &[i64],
    metric: LogitDiff,
    grad_drop: bool,
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
    let pass = |drop: Option<usize>| {
        receiver_effects(model, receiver, &points, &options, metric, &source_cache, site, drop)
    };
    let (receiver_metric, plain) = pass(None)?;
    let values = match grad_drop {
        false => unit_values(&plain, &units)?,
        true => {
            // Kramár et al. 2024, Eq. 6: sign of plain AtP × Σ_l |AtP with layer l's
            // gradient dropped| / (L − 1).
            let n_layers = model.info().n_layers;
            if n_layers < 2 {
                return Err(Error::invalid_argument("GradDrop needs a model of at least 2 layers"));
            }
            let signs = unit_values(&plain, &units)?;
            let mut total = vec![0.0; units.len()];
            for l in 0..n_layers {
                let (_, dropped) = pass(Some(l))?;
                for (t, v) in total.iter_mut().zip(unit_values(&dropped, &units)?) {
                    *t += v.abs();
                }
            }
            signs.iter().zip(total).map(|(s, t)| s.signum() * t / (n_layers - 1) as f64).collect()
        }
    };
    let estimates: Vec<f64> = values.iter().map(|v| receiver_metric + v).collect();
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

/// One receiver forward pass with the graph kept and one backward pass: the metric and, per
/// layer, the effect `(a_source − a_receiver) · ∂M/∂a` summed over each activation's last
/// dimension, as `[pos]`, or `[pos, head]` for per-head sites. With `drop`, the gradient does
/// not flow back through that layer's attention and MLP outputs (GradDrop).
#[allow(clippy::too_many_arguments)]
fn receiver_effects(
    model: &dyn LanguageModel,
    receiver: &Tensor,
    points: &[HookPoint],
    options: &ForwardOptions,
    metric: LogitDiff,
    source_cache: &ActivationCache,
    site: PatchSite,
    drop: Option<usize>,
) -> Result<(f64, HashMap<usize, Tensor>)> {
    let embeddings = model.embed(receiver)?.f_detach()?.f_set_requires_grad(true)?;
    let mut hooks = Hooks::new();
    if let Some(l) = drop {
        // The forward value is unchanged; only the backward path through layer l is cut.
        hooks.replace(
            HookFilter::points([HookPoint::attn_out(l), HookPoint::mlp_out(l)]),
            |_, t| Ok(t.f_detach()?),
        );
    }
    hooks.cache(HookFilter::points(points.to_vec()));
    let out = model.forward_embeddings(&embeddings, options, &mut hooks)?;
    let receiver_metric = metric_values(&out.logits.f_detach()?, metric)?[0];
    let value = metric.of_rows(&out.logits.f_select(1, 0)?)?.f_sum(Kind::Float)?;
    let cache = hooks.take_cache();
    let mut activations = Vec::with_capacity(points.len());
    for p in points {
        let a = cache.get(p).ok_or_else(|| Error::UnknownComponent {
            component: p.to_string(),
            reason: "the model does not fire this hook point".into(),
        })?;
        activations.push(a.shallow_clone());
    }
    // Activations that no longer reach the metric (all of them below a dropped layer 0, say)
    // have no gradient; they count as zero.
    let live: Vec<usize> =
        (0..activations.len()).filter(|&i| activations[i].requires_grad()).collect();
    let live_acts: Vec<&Tensor> = live.iter().map(|&i| &activations[i]).collect();
    let grads = if value.requires_grad() && !live_acts.is_empty() {
        Tensor::f_run_backward(&[&value], &live_acts, false, false)?
    } else {
        Vec::new()
    };
    let mut per_layer = HashMap::new();
    for (i, (p, a)) in points.iter().zip(&activations).enumerate() {
        let source_a = source_cache.require(p)?;
        let delta = source_a.f_sub(&a.f_detach()?)?.f_to_kind(Kind::Double)?;
        let g = live.iter().position(|&j| j == i).and_then(|k| grads.get(k));
        let g = match g {
            Some(g) if g.defined() => g.f_to_kind(Kind::Double)?,
            _ => delta.f_zeros_like()?,
        };
        // Layouts: [1, pos, d]; z [1, pos, head, d_head]; pattern [1, head, q, k].
        let effect = delta.f_mul(&g)?.f_sum_dim_intlist(-1, false, Kind::Double)?.f_select(0, 0)?;
        let effect = match site {
            PatchSite::HeadPattern => effect.f_transpose(0, 1)?, // [pos, head]
            _ => effect,
        };
        per_layer.insert(p.layer().unwrap_or(0), effect.f_contiguous()?);
    }
    Ok((receiver_metric, per_layer))
}

/// Each unit's effect from the per-layer effect tensors.
fn unit_values(per_layer: &HashMap<usize, Tensor>, units: &[PatchUnit]) -> Result<Vec<f64>> {
    let mut values = Vec::with_capacity(units.len());
    for unit in units {
        let effect = per_layer.get(&unit.layer).ok_or_else(|| Error::UnknownComponent {
            component: format!("layer {}", unit.layer),
            reason: "no activation was captured".into(),
        })?;
        let effect = match unit.position {
            Some(pos) => effect.f_select(0, pos as i64)?,
            None => effect.f_sum_dim_intlist(0, false, Kind::Double)?,
        };
        let effect = match unit.head {
            Some(h) => effect.f_select(0, h as i64)?,
            None => effect,
        };
        values.push(effect.f_double_value(&[])?);
    }
    Ok(values)
}
