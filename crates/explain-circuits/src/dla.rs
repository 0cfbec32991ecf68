//! Direct logit attribution: the final residual stream at one position split into what the
//! embedding, every attention head, every MLP and the biases wrote into it, each projected
//! onto an answer direction through the final norm with its scale frozen (and, in
//! sandwich-norm families, each head first through the post-attention norm with its scale
//! frozen too).

use explainability_core::{
    ActivationCache, Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel,
    NormScale, Result,
};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::metric::{LogitDiff, has_parameter, ids_tensor, parameter, token_strings};

/// What a [`DlaComponent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DlaComponentKind {
    /// `hook_embed`: token embeddings (with learned positions where the model has them).
    Embed,
    /// One head's output `z_h · W_O[:, h]` (through the frozen post-attention norm in
    /// sandwich-norm families).
    Head,
    /// The part of `hook_attn_out` no head accounts for: the output bias `b_O` (through the
    /// frozen post-attention norm in sandwich-norm families), or the whole attention output
    /// where heads cannot be split (no `hook_z` or no resident `W_O`, e.g. streamed weights).
    AttnRest,
    /// `hook_mlp_out`.
    Mlp,
    /// What the final norm adds whatever its input (its bias, for LayerNorm).
    NormBias,
}

/// One component's direct effect on the metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DlaComponent {
    /// What it is.
    pub kind: DlaComponentKind,
    /// Its block, for heads, attention and MLPs.
    pub layer: Option<usize>,
    /// Its head, for heads.
    pub head: Option<usize>,
    /// Label as TransformerLens spells it (`embed`, `L3H5`, `3_attn_bias`, `3_mlp_out`,
    /// `ln_final_bias`).
    pub label: String,
    /// Contribution to `logit(answer) − logit(against)`.
    pub value: f64,
}

/// A direct logit attribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectLogitAttribution {
    /// Input tokens.
    pub tokens: Vec<String>,
    /// The metric explained.
    pub metric: LogitDiff,
    /// The position read.
    pub position: usize,
    /// Every component, in forward order.
    pub components: Vec<DlaComponent>,
    /// `[layer, head]` contributions of the heads (empty when heads are not split).
    pub heads: ndarray::Array2<f64>,
    /// Σ components: the metric as the frozen-scale linearisation sees it.
    pub total: f64,
    /// The metric from the model's logits (equal to `total` up to rounding, unless the
    /// model soft-caps its logits).
    pub metric_value: f64,
}

/// Computes direct logit attribution of `metric` on `ids`.
///
/// The final norm's scale is frozen at the real final residual
/// ([`NormScale::FrozenAt`]), which makes the norm affine; each component `c` contributes
/// `(N(c) − N(0)) · (W_U[answer] − W_U[against])` and `N(0)` (the norm's bias) is a component
/// of its own, so the components sum to the metric exactly (logit soft-capping aside). Heads
/// are split through `blocks.{l}.attn.hook_z` and the output projection `blocks.{l}.attn.W_O`:
/// head h writes `o_h = z_h · W_O[:, h]`. In sandwich-norm families (Gemma 3) the attention
/// output passes a norm P before the residual add (`blocks.{l}.ln1_post.hook_normalized`
/// fires); with P's scale frozen at its real input `Σ_h o_h + b_O`
/// ([`LanguageModel::norm_at`]) P is affine too, head h writes `P(o_h) − P(0)` and the heads
/// plus the rest (`P(b_O)`, zero in Gemma) sum to `hook_attn_out` exactly. Without a post-norm
/// P is the identity: one code path. TransformerLens computes the same from
/// `decompose_resid` / `stack_head_results`, `apply_ln_to_stack` and `logit_attrs`;
/// references: Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits";
/// Wang et al. 2022 (arXiv:2211.00593) §3.
///
/// # Errors
/// [`Error::PositionOutOfRange`], [`Error::TokenOutOfRange`], [`Error::MissingWeight`],
/// [`Error::UnsupportedOperation`] for a model without a final norm, and as
/// [`LanguageModel::forward_ids`].
pub fn direct_logit_attribution(
    model: &dyn LanguageModel,
    ids: &[i64],
    metric: LogitDiff,
) -> Result<DirectLogitAttribution> {
    let info = model.info().clone();
    metric.check(info.vocab_size)?;
    let input = ids_tensor(model, ids)?;
    let position = metric.position_in(ids.len())? as i64;
    let n_layers = info.n_layers;
    let _guard = tch::no_grad_guard();
    let mut hooks = Hooks::new();
    let last = HookPoint::resid_post(n_layers.saturating_sub(1));
    hooks.cache_detached(
        HookFilter::points([HookPoint::embed(), last])
            .or(HookFilter::kind(HookKind::AttnOut))
            .or(HookFilter::kind(HookKind::MlpOut))
            .or(HookFilter::kind(HookKind::Z))
            .or(HookFilter::kind(HookKind::Ln1Post)),
    );
    let options = ForwardOptions { logits_from: Some(position as usize), ..Default::default() };
    let output = model.forward_ids(&input, &options, &mut hooks)?;
    let cache = hooks.take_cache();
    // Heads are split where the model fires hook_z and has W_O.
    let split_heads = (0..n_layers).all(|l| {
        cache.get(&HookPoint::z(l)).is_some()
            && has_parameter(model, &format!("blocks.{l}.attn.W_O"))
    });
    let at = |p: &HookPoint| -> Result<Tensor> {
        Ok(cache.require(p)?.f_select(0, 0)?.f_select(0, position)?.f_to_kind(Kind::Float)?)
    };

    // Component vectors [d_model] at the position, in forward order.
    let mut vectors: Vec<Tensor> = Vec::new();
    let mut components: Vec<DlaComponent> = Vec::new();
    let mut push = |kind, layer, head, label: String, v: Tensor| {
        vectors.push(v);
        components.push(DlaComponent { kind, layer, head, label, value: 0.0 });
    };
    push(DlaComponentKind::Embed, None, None, "embed".into(), at(&HookPoint::embed())?);
    let (n_heads, d_head) = (info.n_heads as i64, info.d_head as i64);
    for l in 0..n_layers {
        let attn_out = at(&HookPoint::attn_out(l))?;
        if split_heads {
            let heads = head_outputs(model, &cache, l, position, n_heads, d_head)?; // [head, d_model]
            let rest = attn_out.f_sub(&heads.f_sum_dim_intlist(0, false, Kind::Float)?)?;
            for h in 0..info.n_heads {
                let v = heads.f_get(h as i64)?;
                push(DlaComponentKind::Head, Some(l), Some(h), format!("L{l}H{h}"), v);
            }
            push(DlaComponentKind::AttnRest, Some(l), None, format!("{l}_attn_bias"), rest);
        } else {
            push(DlaComponentKind::AttnRest, Some(l), None, format!("{l}_attn_out"), attn_out);
        }
        push(
            DlaComponentKind::Mlp,
            Some(l),
            None,
            format!("{l}_mlp_out"),
            at(&HookPoint::mlp_out(l))?,
        );
    }
    let reference = at(&last)?;
    let stack = Tensor::f_stack(&vectors, 0)?; // [components, d_model]
    let zero = reference.f_zeros_like()?.f_unsqueeze(0)?;
    let normed = model
        .final_norm(&Tensor::f_cat(&[&stack, &zero], 0)?, NormScale::FrozenAt(&reference))?
        .f_to_kind(Kind::Float)?;
    let n = vectors.len() as i64;
    let bias = normed.f_get(n)?;
    let direction = metric.direction(model)?;
    let linear = normed.f_narrow(0, 0, n)?.f_sub(&bias)?;
    let values: Vec<f64> = Vec::try_from(&linear.f_matmul(&direction)?.f_to_kind(Kind::Double)?)?;
    for (c, v) in components.iter_mut().zip(values) {
        c.value = v;
    }
    let bias_value = bias.f_dot(&direction)?.f_double_value(&[])?;
    if bias.f_abs()?.f_max()?.f_double_value(&[])? > 0.0 || has_parameter(model, "ln_final.b") {
        components.push(DlaComponent {
            kind: DlaComponentKind::NormBias,
            layer: None,
            head: None,
            label: "ln_final_bias".into(),
            value: bias_value,
        });
    }
    let total = components.iter().map(|c| c.value).sum();
    let heads = if split_heads {
        let mut heads = ndarray::Array2::zeros((n_layers, info.n_heads));
        for c in &components {
            if let (DlaComponentKind::Head, Some(l), Some(h)) = (c.kind, c.layer, c.head) {
                heads[(l, h)] = c.value;
            }
        }
        heads
    } else {
        ndarray::Array2::zeros((0, 0))
    };
    let logits = output.logits.f_select(0, 0)?.f_select(0, 0)?.f_unsqueeze(0)?;
    let metric_value = metric.of_rows(&logits)?.f_double_value(&[0])?;
    if !metric_value.is_finite() {
        return Err(Error::NonFinite { what: "metric".into(), alpha: None, hook_point: None });
    }
    Ok(DirectLogitAttribution {
        tokens: token_strings(model, ids),
        metric,
        position: position as usize,
        components,
        heads,
        total,
        metric_value,
    })
}

/// What each head of layer `l` writes into the residual stream at `position`, `[head,
/// d_model]` in f32: `o_h = z_h · W_O[:, h]`, or, where the attention output passes a
/// post-attention norm P before the residual add (the model fires
/// `blocks.{l}.ln1_post.hook_normalized`), `P(o_h) − P(0)` with P's scale frozen at its real
/// input `Σ_h o_h + b_O`, all heads in one call. The heads then sum to `hook_attn_out` minus
/// `P(b_O)` (the bias alone without a post-norm).
fn head_outputs(
    model: &dyn LanguageModel,
    cache: &ActivationCache,
    l: usize,
    position: i64,
    n_heads: i64,
    d_head: i64,
) -> Result<Tensor> {
    let z = cache.require(&HookPoint::z(l))?.f_select(0, 0)?.f_select(0, position)?; // [head, d_head]
    let w_o = parameter(model, &format!("blocks.{l}.attn.W_O"))?
        .f_to_kind(Kind::Float)?
        .f_view([-1, n_heads, d_head])?; // [d_model, head, d_head]
    // o[h] = Σ_e W_O[:, h, e] z[h, e]
    let heads = Tensor::f_einsum(
        "dhe,he->hd",
        &[&w_o, &z.f_to_kind(Kind::Float)?.f_to_device(w_o.device())?],
        None::<&[i64]>,
    )?;
    let post = HookPoint::new(HookKind::Ln1Post, l);
    if cache.get(&post).is_none() {
        return Ok(heads);
    }
    let mut input = heads.f_sum_dim_intlist(0, false, Kind::Float)?;
    let bias = format!("blocks.{l}.attn.b_O");
    if has_parameter(model, &bias) {
        input = input.f_add(
            &parameter(model, &bias)?.f_to_kind(Kind::Float)?.f_to_device(input.device())?,
        )?;
    }
    let zero = input.f_zeros_like()?.f_unsqueeze(0)?;
    let normed = model
        .norm_at(post, &Tensor::f_cat(&[&heads, &zero], 0)?, NormScale::FrozenAt(&input))?
        .f_to_kind(Kind::Float)?;
    Ok(normed.f_narrow(0, 0, n_heads)?.f_sub(&normed.f_get(n_heads)?)?)
}
