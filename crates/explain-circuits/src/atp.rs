//! Attribution patching (AtP): the first-order estimate of every activation patch from two
//! forward passes and one backward pass.

use std::collections::HashMap;

use explainability_core::{
    ActivationCache, Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel,
    Result,
};
use serde::{Deserialize, Serialize};
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
/// 2024, "AtP*" (arXiv:2403.00745), whose Eq. 3 this is. The receiving prompt (the corrupted
/// one for [`PatchDirection::Denoising`], the clean one for [`PatchDirection::Noising`]) and
/// the source prompt run as one batch of two — one forward pass, the weights read once for
/// both — and one backward pass from the receiver's metric gives the gradient at every
/// activation of the site; a unit's estimate is the dot product over
/// its entries (the d_model of a position, a head's d_head, a pattern row's keys). Results
/// have the layout and normalisation of [`ActivationPatching::run`], with `patched` holding
/// the estimates. The estimate is exact when the metric is linear in the patched activation;
/// attention saturation is what the AtP* QK fix counters and cancellation across paths what
/// GradDrop counters ([`attribution_patching_with`], [`AtpFixes`]).
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
    atp(patching, model, clean, corrupted, metric, AtpFixes::default())
}

/// Which of the AtP* fixes (Kramár et al. 2024, arXiv:2403.00745) an attribution patching
/// run applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AtpFixes {
    /// §3.1.1, for [`PatchSite::HeadQ`] and [`PatchSite::HeadK`] (ignored elsewhere): the
    /// attention scores of the patched query (or key) are recomputed exactly, each patched
    /// pattern row goes through the real softmax, and only the effect of the pattern change
    /// on the metric is linearised, `Σ (A' − A) · ∂M/∂A`. This removes the false negatives of
    /// plain AtP where the softmax saturates.
    pub qk_fix: bool,
    /// §3.1.2: GradDrop, as [`attribution_patching_grad_drop`].
    pub grad_drop: bool,
}

impl AtpFixes {
    /// Both fixes: AtP*.
    pub const STAR: AtpFixes = AtpFixes { qk_fix: true, grad_drop: true };
}

/// Attribution patching with a choice of the AtP* fixes ([`AtpFixes`]);
/// `AtpFixes::default()` is [`attribution_patching`], [`AtpFixes::STAR`] is AtP*.
///
/// With the QK fix, a query or key unit costs no extra forward pass: per layer, the
/// receiver's scores, pattern and `∂M/∂pattern` (one backward pass) and the source's queries
/// or keys give every patched row exactly (a key unit changes one column of every query row
/// of the heads that read it). The attention scale is fitted from the cached scores and
/// `q·kᵀ` (it is `1/√d_head` or the family's own).
///
/// # Errors
/// As [`attribution_patching`]; [`Error::InvalidArgument`] for GradDrop on a one-layer model;
/// [`Error::UnsupportedOperation`] for the QK fix on a model whose scores are not a scaled
/// dot product of `hook_q` and `hook_k` (soft-capped or biased scores).
pub fn attribution_patching_with(
    patching: &ActivationPatching,
    model: &dyn LanguageModel,
    clean: &[i64],
    corrupted: &[i64],
    metric: LogitDiff,
    fixes: AtpFixes,
) -> Result<PatchingResult> {
    atp(patching, model, clean, corrupted, metric, fixes)
}

/// Attribution patching with GradDrop (AtP*, Kramár et al. 2024, arXiv:2403.00745, §3.2): the
/// estimate of [`attribution_patching`] recomputed L times, each time with the gradient
/// through layer l's attention and MLP outputs dropped, and combined as
/// `sign(AtP) · Σ_l |AtP_l| / (L − 1)`, which counters cancellation between paths. Costs L + 1
/// backward passes. For the QK fix as well, see [`attribution_patching_with`].
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
    atp(patching, model, clean, corrupted, metric, AtpFixes { qk_fix: false, grad_drop: true })
}

fn atp(
    patching: &ActivationPatching,
    model: &dyn LanguageModel,
    clean: &[i64],
    corrupted: &[i64],
    metric: LogitDiff,
    fixes: AtpFixes,
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

    let qk_fix = fixes.qk_fix && matches!(site, PatchSite::HeadQ | PatchSite::HeadK);
    // The source prompt rides in the first receiver pass as a second batch row: its metric and
    // activations come from the same forward, which reads the weights once for both prompts
    // (GradDrop's further passes run the receiver alone).
    let run = |source: Option<&Tensor>, drop: Option<usize>| {
        receiver_pass(model, receiver, source, &points, &options, metric, drop, qk_fix)
    };
    let mut first = run(Some(source), None)?;
    let (source_metric, source_cache) = first.source.take().ok_or_else(|| {
        Error::invalid_argument("the first attribution patching pass ran without its source row")
    })?;
    let effects = |pass: &Pass| match qk_fix {
        false => linear_effects(&points, &pass.cache, &pass.grads, &source_cache, site),
        true => qk_fixed_effects(model, &points, &pass.cache, &pass.grads, &source_cache, site),
    };
    let receiver_metric = first.metric;
    let plain = effects(&first)?;
    let values = match fixes.grad_drop {
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
                let dropped = effects(&run(None, Some(l))?)?;
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

/// One receiver pass: the metric, the detached receiver activations (of `points`, and with
/// `qk_fix` also every layer's q, k, scores and pattern) and the gradient of the metric at each
/// activation of `points` (at each pattern with `qk_fix`), without the points where the metric
/// does not depend on it; with a source, its metric and activations of `points` too.
struct Pass {
    metric: f64,
    cache: ActivationCache,
    grads: HashMap<HookPoint, Tensor>,
    source: Option<(f64, ActivationCache)>,
}

/// One forward pass with the graph kept and one backward pass for the receiver (batch row 0);
/// with `source`, that prompt runs as batch row 1 of the same forward (no gradient reaches it:
/// the metric reads row 0 only). With `drop`, the gradient does not flow back through that
/// layer's attention and MLP outputs (GradDrop).
#[allow(clippy::too_many_arguments)]
fn receiver_pass(
    model: &dyn LanguageModel,
    receiver: &Tensor,
    source: Option<&Tensor>,
    points: &[HookPoint],
    options: &ForwardOptions,
    metric: LogitDiff,
    drop: Option<usize>,
    qk_fix: bool,
) -> Result<Pass> {
    let ids = match source {
        Some(source) => Tensor::f_cat(&[receiver, source], 0)?,
        None => receiver.shallow_clone(),
    };
    let embeddings = model.embed(&ids)?.f_detach()?.f_set_requires_grad(true)?;
    let mut hooks = Hooks::new();
    if let Some(l) = drop {
        // The forward value is unchanged; only the backward path through layer l is cut.
        hooks.replace(
            HookFilter::points([HookPoint::attn_out(l), HookPoint::mlp_out(l)]),
            |_, t| Ok(t.f_detach()?),
        );
    }
    let layers: Vec<usize> = points.iter().filter_map(|p| p.layer()).collect();
    let grad_points: Vec<HookPoint> = match qk_fix {
        false => points.to_vec(),
        true => layers.iter().map(|&l| HookPoint::new(HookKind::Pattern, l)).collect(),
    };
    hooks.cache(HookFilter::points(grad_points.clone()));
    if qk_fix {
        let extra = layers.iter().flat_map(|&l| {
            [HookKind::Q, HookKind::K, HookKind::AttnScores].map(|k| HookPoint::new(k, l))
        });
        // q and k of every layer: with the QK fix the source's points are among them.
        hooks.cache_detached(HookFilter::points(extra.collect::<Vec<_>>()));
    }
    let out = model.forward_embeddings(&embeddings, options, &mut hooks)?;
    let metrics = metric_values(&out.logits.f_detach()?, metric)?;
    let value =
        metric.of_rows(&out.logits.f_select(1, 0)?.f_narrow(0, 0, 1)?)?.f_sum(Kind::Float)?;
    let mut cache = hooks.take_cache();
    let mut activations = Vec::with_capacity(grad_points.len());
    for p in &grad_points {
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
    let row = |t: &Tensor, r: i64| -> Result<Tensor> { Ok(t.f_narrow(0, r, 1)?) };
    let mut by_point = HashMap::new();
    for (k, &i) in live.iter().enumerate() {
        if let Some(g) = grads.get(k).filter(|g| g.defined()) {
            by_point.insert(grad_points[i], row(g, 0)?.f_to_kind(Kind::Double)?);
        }
    }
    for (p, a) in grad_points.iter().zip(&activations) {
        cache.insert(*p, a.f_detach()?);
    }
    // Split the rows: the receiver's activations, and the source's activations of `points`.
    let mut receiver_cache = ActivationCache::default();
    let mut source_cache = ActivationCache::default();
    for (p, a) in cache {
        if source.is_some() && points.contains(&p) {
            source_cache.insert(p, row(&a, 1)?);
        }
        receiver_cache.insert(p, row(&a, 0)?);
    }
    let metric_of = |r: usize| {
        metrics.get(r).copied().ok_or_else(|| {
            Error::invalid_argument(format!("the forward pass returned no metric for row {r}"))
        })
    };
    let source = match source {
        Some(_) => Some((metric_of(1)?, source_cache)),
        None => None,
    };
    Ok(Pass { metric: metric_of(0)?, cache: receiver_cache, grads: by_point, source })
}

/// Per layer, `(a_source − a_receiver) · ∂M/∂a` summed over each activation's last
/// dimension, as `[pos]`, or `[pos, head]` for per-head sites.
fn linear_effects(
    points: &[HookPoint],
    cache: &ActivationCache,
    grads: &HashMap<HookPoint, Tensor>,
    source_cache: &ActivationCache,
    site: PatchSite,
) -> Result<HashMap<usize, Tensor>> {
    let mut per_layer = HashMap::new();
    for p in points {
        let a = cache.require(p)?;
        let source_a = source_cache.require(p)?;
        let delta = source_a.f_sub(a)?.f_to_kind(Kind::Double)?;
        let g = match grads.get(p) {
            Some(g) => g.shallow_clone(),
            None => delta.f_zeros_like()?,
        };
        // Layouts: [1, pos, d]; z, q, k, v [1, pos, head, d_head]; pattern [1, head, q, k].
        let effect = delta.f_mul(&g)?.f_sum_dim_intlist(-1, false, Kind::Double)?.f_select(0, 0)?;
        let effect = match site {
            PatchSite::HeadPattern => effect.f_transpose(0, 1)?, // [pos, head]
            _ => effect,
        };
        per_layer.insert(p.layer().unwrap_or(0), effect.f_contiguous()?);
    }
    Ok(per_layer)
}

/// The AtP* QK fix per layer: `[pos, head]` effects of patching each query (or key head's
/// key) with the exact softmax, from the receiver's q, k, scores and `∂M/∂pattern`.
fn qk_fixed_effects(
    model: &dyn LanguageModel,
    points: &[HookPoint],
    cache: &ActivationCache,
    grads: &HashMap<HookPoint, Tensor>,
    source_cache: &ActivationCache,
    site: PatchSite,
) -> Result<HashMap<usize, Tensor>> {
    let info = model.info();
    let group = (info.n_heads / info.n_kv_heads.max(1)).max(1) as i64;
    let mut per_layer = HashMap::new();
    for p in points {
        let l = p.layer().unwrap_or(0);
        let get = |k: HookKind| -> Result<Tensor> {
            Ok(cache.require(&HookPoint::new(k, l))?.f_select(0, 0)?.f_to_kind(Kind::Double)?)
        };
        let (q, k, scores) = (get(HookKind::Q)?, get(HookKind::K)?, get(HookKind::AttnScores)?);
        let source = source_cache.require(p)?.f_select(0, 0)?.f_to_kind(Kind::Double)?;
        let pattern_point = HookPoint::new(HookKind::Pattern, l);
        let effect = match grads.get(&pattern_point) {
            None => {
                let n = if site == PatchSite::HeadK { info.n_kv_heads } else { info.n_heads };
                Tensor::f_zeros([q.size()[0], n as i64], (Kind::Double, q.device()))?
            }
            Some(g) => {
                let g = g.f_select(0, 0)?;
                match site {
                    PatchSite::HeadK => qk_fix_keys(&q, &k, &source, &scores, &g, group)?,
                    _ => qk_fix_queries(&q, &k, &source, &scores, &g, group)?,
                }
            }
        };
        per_layer.insert(l, effect.f_contiguous()?);
    }
    Ok(per_layer)
}

/// Entries of the scores that are not masked out (masks fill with the kind's minimum).
fn valid_scores(scores: &Tensor) -> Result<Tensor> {
    Ok(scores.f_gt(-1e4)?)
}

/// `q·kᵀ` per query head, `[head, q_pos, k_pos]`, from `q` `[pos, head, d]` and `k`
/// `[pos, kv_head, d]` (each key head repeated for its `group` query heads).
fn head_dots(q: &Tensor, k: &Tensor, group: i64) -> Result<Tensor> {
    let k = k.f_repeat_interleave_self_int(group, Some(1), None)?;
    Ok(q.f_permute([1, 0, 2])?.f_matmul(&k.f_permute([1, 2, 0])?)?)
}

/// The scale `s` with `scores = s · q·kᵀ` on the unmasked entries, by least squares, checked.
///
/// # Errors
/// [`Error::UnsupportedOperation`] when the scores are not such a product.
fn attention_scale(scores: &Tensor, dots: &Tensor) -> Result<f64> {
    let valid = valid_scores(scores)?.f_to_kind(Kind::Double)?;
    let s = scores.f_mul(&valid)?;
    let d = dots.f_mul(&valid)?;
    let den = d.f_mul(&d)?.f_sum(Kind::Double)?.f_double_value(&[])?;
    if den == 0.0 {
        return Ok(0.0);
    }
    let scale = s.f_mul(&d)?.f_sum(Kind::Double)?.f_double_value(&[])? / den;
    let worst = s.f_sub(&d.f_mul_scalar(scale)?)?.f_abs()?.f_max()?.f_double_value(&[])?;
    let size = s.f_abs()?.f_max()?.f_double_value(&[])?;
    if worst > 1e-3 * (1.0 + size) {
        return Err(Error::UnsupportedOperation {
            model: "this model".into(),
            operation: format!(
                "the AtP* QK fix (attention scores differ from a scaled q·kᵀ by up to {worst:.3e})"
            ),
        });
    }
    Ok(scale)
}

/// `Σ_k (softmax(S + ΔS)[h, t] − softmax(S)[h, t]) · G[h, t]` for new scores `S + ΔS`
/// (`ΔS` zero on masked entries), summed over the last axis.
fn softmax_change(scores: &Tensor, delta: &Tensor, grad: &Tensor) -> Result<Tensor> {
    let valid = valid_scores(scores)?;
    let new = scores.f_add(&delta.f_mul(&valid.f_to_kind(Kind::Double)?)?)?;
    let change = new.f_softmax(-1, Kind::Double)?.f_sub(&scores.f_softmax(-1, Kind::Double)?)?;
    Ok(change.f_mul(grad)?.f_sum_dim_intlist(-1, false, Kind::Double)?)
}

/// QK fix for queries: `[pos, head]`. Patching query t of head h changes row t of that head's
/// scores only, so every unit is one row of `S + s·(q_src − q)·kᵀ`.
fn qk_fix_queries(
    q: &Tensor,
    k: &Tensor,
    q_source: &Tensor,
    scores: &Tensor,
    grad: &Tensor,
    group: i64,
) -> Result<Tensor> {
    let scale = attention_scale(scores, &head_dots(q, k, group)?)?;
    let delta = head_dots(&q_source.f_sub(q)?, k, group)?.f_mul_scalar(scale)?;
    // [head, q_pos] → [pos, head]
    Ok(softmax_change(scores, &delta, grad)?.f_transpose(0, 1)?)
}

/// QK fix for keys: `[pos, kv_head]`. Patching key s of a key head changes column s of every
/// row of its query heads; each key position is its own copy of the scores.
fn qk_fix_keys(
    q: &Tensor,
    k: &Tensor,
    k_source: &Tensor,
    scores: &Tensor,
    grad: &Tensor,
    group: i64,
) -> Result<Tensor> {
    let scale = attention_scale(scores, &head_dots(q, k, group)?)?;
    // [head, t, s]: the change of score (t, s) when key s is patched.
    let delta = head_dots(q, &k_source.f_sub(k)?, group)?.f_mul_scalar(scale)?;
    let n = scores.size()[2];
    let eye = Tensor::f_eye(n, (Kind::Double, scores.device()))?; // [s, s']
    // [s, head, t, s']: copy s changes only column s.
    let delta =
        delta.f_permute([2, 0, 1])?.f_unsqueeze(-1)?.f_mul(&eye.f_unsqueeze(1)?.f_unsqueeze(1)?)?;
    let per_query = softmax_change(&scores.f_unsqueeze(0)?, &delta, &grad.f_unsqueeze(0)?)?;
    let per_head = per_query.f_sum_dim_intlist(-1, false, Kind::Double)?; // [s, head]
    let (pos, heads) = (per_head.size()[0], per_head.size()[1]);
    Ok(per_head.f_view([pos, heads / group, group])?.f_sum_dim_intlist(-1, false, Kind::Double)?)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Random q `[pos, head, d]`, k `[pos, kv, d]` and their causal scores with a scale.
    fn setup(seed: i64, pos: i64, heads: i64, kv: i64, scale: f64) -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(seed);
        let opts = (Kind::Double, tch::Device::Cpu);
        let q = Tensor::randn([pos, heads, 4], opts).f_mul_scalar(2.0).unwrap();
        let k = Tensor::randn([pos, kv, 4], opts);
        let dots = head_dots(&q, &k, heads / kv).unwrap().f_mul_scalar(scale).unwrap();
        let causal = Tensor::ones([pos, pos], opts).triu(1).to_kind(Kind::Bool);
        let scores = dots.masked_fill(&causal, f64::from(f32::MIN));
        (q, k, scores)
    }

    /// `Σ (softmax(S')[h, t] − softmax(S)[h, t]) · G[h, t]` for one row, by hand.
    fn row_change(new_row: &[f64], old_row: &[f64], g: &[f64]) -> f64 {
        let soft = |r: &[f64]| {
            let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = r.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(|x| x / z).collect::<Vec<_>>()
        };
        let (a, b) = (soft(new_row), soft(old_row));
        a.iter().zip(&b).zip(g).map(|((x, y), g)| (x - y) * g).sum()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        Vec::<Vec<f64>>::try_from(t).unwrap()
    }

    #[test]
    fn query_and_key_fixes_match_a_unit_by_unit_softmax() {
        let (pos, heads, kv, scale) = (5, 4, 2, 0.37);
        let (q, k, scores) = setup(1, pos, heads, kv, scale);
        let (q2, k2, _) = setup(2, pos, heads, kv, scale);
        let grad = Tensor::randn([heads, pos, pos], (Kind::Double, tch::Device::Cpu));
        let queries = qk_fix_queries(&q, &k, &q2, &scores, &grad, heads / kv).unwrap();
        let keys = qk_fix_keys(&q, &k, &k2, &scores, &grad, heads / kv).unwrap();
        assert_eq!(queries.size(), [pos, heads]);
        assert_eq!(keys.size(), [pos, kv]);
        let dot = |a: &Tensor, b: &Tensor| a.dot(b).double_value(&[]);
        for h in 0..heads {
            let g = h / (heads / kv);
            let s = rows(&scores.get(h));
            let gr = rows(&grad.get(h));
            for t in 0..pos {
                // Query t of head h from the source.
                let mut new_row = s[t as usize].clone();
                for j in 0..=t {
                    new_row[j as usize] = scale * dot(&q2.get(t).get(h), &k.get(j).get(g));
                }
                let want = row_change(&new_row, &s[t as usize], &gr[t as usize]);
                let got = queries.double_value(&[t, h]);
                assert!((want - got).abs() < 1e-10, "query {t} head {h}: {want} vs {got}");
            }
        }
        for g in 0..kv {
            for j in 0..pos {
                // Key j of key head g from the source, read by every query head of the group.
                let mut want = 0.0;
                for h in g * (heads / kv)..(g + 1) * (heads / kv) {
                    let s = rows(&scores.get(h));
                    let gr = rows(&grad.get(h));
                    for t in j..pos {
                        let mut new_row = s[t as usize].clone();
                        new_row[j as usize] = scale * dot(&q.get(t).get(h), &k2.get(j).get(g));
                        want += row_change(&new_row, &s[t as usize], &gr[t as usize]);
                    }
                }
                let got = keys.double_value(&[j, g]);
                assert!((want - got).abs() < 1e-10, "key {j} group {g}: {want} vs {got}");
            }
        }
    }

    #[test]
    fn the_scale_is_recovered_and_soft_capping_refused() {
        let (q, k, scores) = setup(3, 6, 2, 1, 0.125);
        let dots = head_dots(&q, &k, 2).unwrap();
        assert!((attention_scale(&scores, &dots).unwrap() - 0.125).abs() < 1e-12);
        let capped = scores.f_div_scalar(2.0).unwrap().tanh().f_mul_scalar(2.0).unwrap();
        let capped = capped.masked_fill(&scores.le(-1e30), f64::from(f32::MIN));
        assert!(matches!(attention_scale(&capped, &dots), Err(Error::UnsupportedOperation { .. })));
    }
}
