//! Activation patching: run one prompt, put one component's activation from the other prompt
//! in its place, and see how much of the metric moves — for every (layer, position[, head])
//! of a site, many patched runs per forward batch.

use std::collections::HashMap;

use explainability_core::{
    Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel, Result,
};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::metric::{LogitDiff, check_pair, check_position, ids_tensor, normalise, token_strings};

/// The activation site patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PatchSite {
    /// `blocks.{l}.hook_resid_pre`, per layer × position.
    ResidPre,
    /// `blocks.{l}.hook_resid_mid`, per layer × position.
    ResidMid,
    /// `blocks.{l}.hook_resid_post`, per layer × position.
    ResidPost,
    /// `blocks.{l}.hook_attn_out`, per layer × position.
    AttnOut,
    /// `blocks.{l}.hook_mlp_out`, per layer × position.
    MlpOut,
    /// One head's output before `W_O`, `blocks.{l}.attn.hook_z[:, pos, head]`, per layer ×
    /// head × position (TransformerLens `get_act_patch_attn_head_out_by_pos`).
    HeadZ,
    /// One head's attention pattern row, `blocks.{l}.attn.hook_pattern[:, head, pos]` (the
    /// query at `pos`), per layer × head × position.
    HeadPattern,
    /// One head's query (after RoPE), `blocks.{l}.attn.hook_q[:, pos, head]`, per layer ×
    /// head × position.
    HeadQ,
    /// One key head's key (after RoPE), `blocks.{l}.attn.hook_k[:, pos, kv_head]`, per layer ×
    /// key head × position; with grouped-query attention a key head serves
    /// `n_heads / n_kv_heads` query heads, and the head axis counts key heads.
    HeadK,
    /// One key/value head's value, `blocks.{l}.attn.hook_v[:, pos, kv_head]`, per layer ×
    /// key/value head × position (TransformerLens `get_act_patch_attn_head_v_by_pos`); the
    /// head axis counts key/value heads, as for [`PatchSite::HeadK`].
    HeadV,
}

impl PatchSite {
    /// Every site.
    pub const ALL: [PatchSite; 10] = [
        PatchSite::ResidPre,
        PatchSite::ResidMid,
        PatchSite::ResidPost,
        PatchSite::AttnOut,
        PatchSite::MlpOut,
        PatchSite::HeadZ,
        PatchSite::HeadPattern,
        PatchSite::HeadQ,
        PatchSite::HeadK,
        PatchSite::HeadV,
    ];

    /// The hook kind patched.
    pub fn hook_kind(self) -> HookKind {
        match self {
            PatchSite::ResidPre => HookKind::ResidPre,
            PatchSite::ResidMid => HookKind::ResidMid,
            PatchSite::ResidPost => HookKind::ResidPost,
            PatchSite::AttnOut => HookKind::AttnOut,
            PatchSite::MlpOut => HookKind::MlpOut,
            PatchSite::HeadZ => HookKind::Z,
            PatchSite::HeadPattern => HookKind::Pattern,
            PatchSite::HeadQ => HookKind::Q,
            PatchSite::HeadK => HookKind::K,
            PatchSite::HeadV => HookKind::V,
        }
    }

    /// The site of a hook kind.
    ///
    /// # Errors
    /// [`Error::UnknownComponent`] for kinds that are not patched per position (`hook_embed`,
    /// `ln_final`, scores, the MLP hidden layer, sandwich post-norms).
    pub fn from_hook_kind(kind: HookKind) -> Result<Self> {
        Self::ALL.into_iter().find(|s| s.hook_kind() == kind).ok_or_else(|| {
            Error::UnknownComponent {
                component: format!("{kind:?}"),
                reason: "activation patching supports resid_pre/mid/post, attn_out, mlp_out, \
                         attn.hook_z, attn.hook_pattern, attn.hook_q, attn.hook_k and attn.hook_v"
                    .into(),
            }
        })
    }

    /// Whether the site has one activation per head.
    pub fn per_head(self) -> bool {
        matches!(
            self,
            PatchSite::HeadZ
                | PatchSite::HeadPattern
                | PatchSite::HeadQ
                | PatchSite::HeadK
                | PatchSite::HeadV
        )
    }

    /// How many heads the head axis has: key/value heads for [`PatchSite::HeadK`] and
    /// [`PatchSite::HeadV`], query heads otherwise.
    pub fn n_heads(self, info: &explainability_core::ModelInfo) -> usize {
        match self {
            PatchSite::HeadK | PatchSite::HeadV => info.n_kv_heads,
            _ => info.n_heads,
        }
    }
}

/// Which run receives the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PatchDirection {
    /// Run the corrupted prompt with one clean activation: which components suffice to
    /// restore the behaviour. Normalised score 1 = fully restored.
    #[default]
    Denoising,
    /// Run the clean prompt with one corrupted activation: which components are necessary.
    /// Normalised score 1 = unaffected, 0 = as broken as the corrupted run.
    Noising,
}

/// One patched activation: a layer, an optional head, and a position (`None`: every
/// position at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PatchUnit {
    /// Block.
    pub layer: usize,
    /// Head, for per-head sites.
    pub head: Option<usize>,
    /// Position, or every position.
    pub position: Option<usize>,
}

/// The axes of a patching grid and its units in row-major order.
pub(crate) struct UnitGrid {
    pub(crate) layers: Vec<usize>,
    pub(crate) heads: Vec<usize>,
    pub(crate) positions: Vec<usize>,
    pub(crate) units: Vec<PatchUnit>,
}

/// Activation patching of one site over layers × (heads ×) positions.
///
/// Scores are normalised as `(M(patched) − M(corrupted)) / (M(clean) − M(corrupted))` for
/// both directions (Wang et al. 2022, arXiv:2211.00593; Heimersheim & Nanda 2024,
/// arXiv:2404.15255), where `M` is a [`LogitDiff`]. Patched runs are batched: `batch_size`
/// copies of the receiving prompt go through one forward pass, each with its own unit
/// patched through a replacing hook, and logits are computed only at the metric's position.
///
/// # Examples
/// ```no_run
/// use explain_circuits::{ActivationPatching, LogitDiff, PatchSite, single_token};
/// use explainability_core::LanguageModel;
/// let model = explain_models::load(explain_models::smollm2_gguf_path())?;
/// let clean = model.encode("The capital of France is", true)?;
/// let corrupted = model.encode("The capital of Italy is", true)?;
/// let metric = LogitDiff::new(single_token(&model, " Paris")?, single_token(&model, " Rome")?);
/// let result = ActivationPatching::new(PatchSite::ResidPre).run(&model, &clean, &corrupted, metric)?;
/// println!("{:.2}", result.scores);
/// # Ok::<(), explainability_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationPatching {
    /// The site.
    pub site: PatchSite,
    /// Which run receives the patch.
    pub direction: PatchDirection,
    /// Layers patched (`None`: all).
    pub layers: Option<Vec<usize>>,
    /// Positions patched one at a time (`None`: all); ignored when `all_positions`.
    pub positions: Option<Vec<usize>>,
    /// Heads patched (`None`: all; per-head sites only).
    pub heads: Option<Vec<usize>>,
    /// Patch every position of a unit at once instead of one position at a time
    /// (TransformerLens's `_all_pos` variants).
    pub all_positions: bool,
    /// Patched runs per forward pass.
    pub batch_size: usize,
}

/// The result of activation (or attribution) patching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchingResult {
    /// The site.
    pub site: PatchSite,
    /// The direction.
    pub direction: PatchDirection,
    /// Input tokens (of the clean prompt).
    pub tokens: Vec<String>,
    /// Layers, in the order of the first axis.
    pub layers: Vec<usize>,
    /// Heads, in the order of the second axis (empty for per-position sites, whose head
    /// axis has length 1).
    pub heads: Vec<usize>,
    /// Positions, in the order of the third axis (empty when every position was patched at
    /// once).
    pub positions: Vec<usize>,
    /// Metric of the clean run.
    pub clean_metric: f64,
    /// Metric of the corrupted run.
    pub corrupted_metric: f64,
    /// Metric of each patched run (or its estimate), `[layer, head, position]`; the head
    /// axis has length 1 for per-position sites and the position axis length 1 with
    /// `all_positions`.
    pub patched: ndarray::Array3<f64>,
    /// `(patched − corrupted) / (clean − corrupted)`, same shape.
    pub scores: ndarray::Array3<f64>,
}

impl PatchingResult {
    /// The scores of a per-position site as `[layer, position]`.
    pub fn layer_position(&self) -> ndarray::Array2<f64> {
        self.scores.index_axis(ndarray::Axis(1), 0).to_owned()
    }
}

impl ActivationPatching {
    /// Denoising patching of `site` over every layer and position (and head), 32 runs per
    /// forward pass.
    pub fn new(site: PatchSite) -> Self {
        Self {
            site,
            direction: PatchDirection::Denoising,
            layers: None,
            positions: None,
            heads: None,
            all_positions: false,
            batch_size: 32,
        }
    }

    /// The same with another direction.
    pub fn with_direction(self, direction: PatchDirection) -> Self {
        Self { direction, ..self }
    }

    /// The units, in result order, with the axes.
    pub(crate) fn units(&self, model: &dyn LanguageModel, len: usize) -> Result<UnitGrid> {
        let info = model.info();
        let layers = self.layers.clone().unwrap_or_else(|| (0..info.n_layers).collect());
        for &l in &layers {
            info.check_layer(l)?;
        }
        let heads = if self.site.per_head() {
            let n_heads = self.site.n_heads(info);
            let heads = self.heads.clone().unwrap_or_else(|| (0..n_heads).collect());
            for &h in &heads {
                if h >= n_heads {
                    return Err(Error::HeadOutOfRange { head: h, n_heads });
                }
            }
            heads
        } else {
            if self.heads.is_some() {
                return Err(Error::UnknownComponent {
                    component: format!("heads of {:?}", self.site),
                    reason: "the site has one activation per position, not per head".into(),
                });
            }
            Vec::new()
        };
        let positions = if self.all_positions {
            Vec::new()
        } else {
            let positions = self.positions.clone().unwrap_or_else(|| (0..len).collect());
            for &p in &positions {
                check_position(p, len)?;
            }
            positions
        };
        let head_axis: Vec<Option<usize>> =
            if heads.is_empty() { vec![None] } else { heads.iter().map(|&h| Some(h)).collect() };
        let pos_axis: Vec<Option<usize>> = if self.all_positions {
            vec![None]
        } else {
            positions.iter().map(|&p| Some(p)).collect()
        };
        let mut units = Vec::with_capacity(layers.len() * head_axis.len() * pos_axis.len());
        for &layer in &layers {
            for &head in &head_axis {
                for &position in &pos_axis {
                    units.push(PatchUnit { layer, head, position });
                }
            }
        }
        Ok(UnitGrid { layers, heads, positions, units })
    }

    /// Patches `site` between `clean` and `corrupted` token ids.
    ///
    /// # Errors
    /// [`Error::PromptLengthMismatch`], [`Error::LayerOutOfRange`],
    /// [`Error::HeadOutOfRange`], [`Error::PositionOutOfRange`], [`Error::UnknownComponent`]
    /// (heads of a per-position site, or a site the model never fires),
    /// [`Error::InvalidArgument`] for `batch_size == 0`, [`Error::TokenOutOfRange`], and as
    /// [`LanguageModel::forward_ids`].
    pub fn run(
        &self,
        model: &dyn LanguageModel,
        clean: &[i64],
        corrupted: &[i64],
        metric: LogitDiff,
    ) -> Result<PatchingResult> {
        if self.batch_size == 0 {
            return Err(Error::invalid_argument("batch_size must be at least 1"));
        }
        let len = check_pair(clean, corrupted)?;
        metric.check(model.info().vocab_size)?;
        let position = metric.position_in(len)?;
        let UnitGrid { layers, heads, positions, units } = self.units(model, len)?;
        let clean_ids = ids_tensor(model, clean)?;
        let corrupted_ids = ids_tensor(model, corrupted)?;
        let _guard = tch::no_grad_guard();
        let kind = self.site.hook_kind();
        let (clean_metric, clean_cache) = cached_run(model, &clean_ids, metric, position, kind)?;
        let (corrupted_metric, corrupted_cache) =
            cached_run(model, &corrupted_ids, metric, position, kind)?;
        let (receiver, sources) = match self.direction {
            PatchDirection::Denoising => (&corrupted_ids, &clean_cache),
            PatchDirection::Noising => (&clean_ids, &corrupted_cache),
        };
        for &l in &layers {
            if !sources.contains_key(&l) {
                return Err(Error::UnknownComponent {
                    component: HookPoint::new(kind, l).to_string(),
                    reason: "the model does not fire this hook point".into(),
                });
            }
        }
        let mut patched = Vec::with_capacity(units.len());
        for chunk in units.chunks(self.batch_size) {
            patched.extend(patched_batch(
                model, receiver, sources, self.site, chunk, metric, position,
            )?);
        }
        let shape = (layers.len(), heads.len().max(1), positions.len().max(1));
        let patched = ndarray::Array3::from_shape_vec(shape, patched)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        let scores = patched.mapv(|v| normalise(v, clean_metric, corrupted_metric));
        Ok(PatchingResult {
            site: self.site,
            direction: self.direction,
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
}

/// Runs `ids` once, returning the metric and the activations of `kind` by layer (detached,
/// batch row 0 kept as a batch of one).
fn cached_run(
    model: &dyn LanguageModel,
    ids: &Tensor,
    metric: LogitDiff,
    position: usize,
    kind: HookKind,
) -> Result<(f64, HashMap<usize, Tensor>)> {
    let mut hooks = Hooks::new();
    hooks.cache_detached(HookFilter::kind(kind));
    let options = ForwardOptions { logits_from: Some(position), ..Default::default() };
    let output = model.forward_ids(ids, &options, &mut hooks)?;
    let value = metric_values(&output.logits, metric)?;
    let cache =
        hooks.take_cache().into_iter().filter_map(|(p, t)| p.layer().map(|l| (l, t))).collect();
    Ok((value[0], cache))
}

/// The metric of every row of `logits` (`[batch, 1, vocab]`, read at the metric position).
pub(crate) fn metric_values(logits: &Tensor, metric: LogitDiff) -> Result<Vec<f64>> {
    let rows = logits.f_select(1, 0)?.f_to_kind(Kind::Double)?;
    let values: Vec<f64> = Vec::try_from(&metric.of_rows(&rows)?)?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what: "metric".into(), alpha: None, hook_point: None });
    }
    Ok(values)
}

/// A boolean mask selecting, per batch row, the entries of `unit` in an activation of
/// `site`'s layout, shaped to broadcast over the last dimension.
fn unit_mask(site: PatchSite, units: &[PatchUnit], layer: usize, shape: &[i64]) -> Result<Tensor> {
    // Layouts: per-position [b, pos, d]; z, q, k, v [b, pos, head, d_head]; pattern
    // [b, head, q, k].
    let (pos_dim, head_dim, dims): (usize, Option<usize>, Vec<i64>) = match site {
        PatchSite::HeadZ | PatchSite::HeadQ | PatchSite::HeadK | PatchSite::HeadV => {
            (1, Some(2), vec![shape[0], shape[1], shape[2], 1])
        }
        PatchSite::HeadPattern => (2, Some(1), vec![shape[0], shape[1], shape[2], 1]),
        _ => (1, None, vec![shape[0], shape[1], 1]),
    };
    let strides: Vec<usize> =
        (0..dims.len()).map(|i| dims[i + 1..].iter().product::<i64>() as usize).collect();
    let total: usize = dims.iter().product::<i64>() as usize;
    let mut mask = vec![false; total];
    for (row, unit) in units.iter().enumerate() {
        if unit.layer != layer {
            continue;
        }
        let positions: Vec<usize> = match unit.position {
            Some(p) => vec![p],
            None => (0..dims[pos_dim] as usize).collect(),
        };
        for p in positions {
            let base = row * strides[0] + p * strides[pos_dim];
            match (head_dim, unit.head) {
                (Some(hd), Some(h)) => mask[base + h * strides[hd]] = true,
                _ => mask[base] = true,
            }
        }
    }
    Ok(Tensor::f_from_slice(&mask)?.f_view(dims.as_slice())?)
}

/// One forward pass of `units.len()` copies of `receiver`, row i with `units[i]` patched from
/// `sources`; the metric of each row.
fn patched_batch(
    model: &dyn LanguageModel,
    receiver: &Tensor,
    sources: &HashMap<usize, Tensor>,
    site: PatchSite,
    units: &[PatchUnit],
    metric: LogitDiff,
    position: usize,
) -> Result<Vec<f64>> {
    let batch = units.len() as i64;
    let ids = receiver.f_expand([batch, -1], false)?.f_contiguous()?;
    let layers: std::collections::BTreeSet<usize> = units.iter().map(|u| u.layer).collect();
    let points: Vec<HookPoint> =
        layers.iter().map(|&l| HookPoint::new(site.hook_kind(), l)).collect();
    let device = model.device();
    let mut hooks = Hooks::new();
    hooks.replace(HookFilter::points(points), |point, activation| {
        let layer = point.layer().unwrap_or(0);
        let source = sources.get(&layer).ok_or_else(|| Error::UnknownComponent {
            component: point.to_string(),
            reason: "no source activation was captured".into(),
        })?;
        let mask = unit_mask(site, units, layer, &activation.size())?.f_to_device(device)?;
        let source = source.f_to_kind(activation.kind())?;
        Ok(source.f_where_self(&mask, activation)?)
    });
    let options = ForwardOptions { logits_from: Some(position), ..Default::default() };
    let output = model.forward_ids(&ids, &options, &mut hooks)?;
    metric_values(&output.logits, metric)
}
