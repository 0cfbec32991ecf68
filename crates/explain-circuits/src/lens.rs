//! The logit lens (nostalgebraist 2020): every intermediate residual stream read through the
//! model's own final norm and unembedding, as if the remaining blocks were skipped.

use explainability_core::{
    Error, HookFilter, HookKind, HookPoint, Hooks, LanguageModel, NormScale, Result,
};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::metric::{ids_tensor, token_strings};

/// Which token's rank and log-probability each cell of the lens reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LensTarget {
    /// None: only the top tokens and the KL divergence.
    #[default]
    None,
    /// At position t, the input's token t + 1 (nothing at the last position).
    NextTokens,
    /// The same token at every position (e.g. the answer " Paris").
    Token(i64),
}

/// The logit lens: `unembed(final_norm(h))` for the residual stream `h` entering every block
/// and leaving the last one, with the norm's statistics recomputed from each `h`.
///
/// The entries are those of TransformerLens's `accumulated_resid(apply_ln=True)`:
/// `blocks.{l}.hook_resid_pre` for every block `l` (the first is the embedding), then the
/// last block's `hook_resid_post`, whose lens is exactly the model's output. Reference:
/// nostalgebraist, "interpreting GPT: the logit lens" (LessWrong, 2020); Belrose et al. 2023
/// (arXiv:2303.08112) for its failure modes on early layers.
///
/// # Examples
/// ```no_run
/// use explain_circuits::{LensTarget, LogitLens};
/// use explainability_core::LanguageModel;
/// let model = explain_models::load(explain_models::smollm2_gguf_path())?;
/// let ids = model.encode("The capital of France is", true)?;
/// let paris = explain_circuits::single_token(&model, " Paris")?;
/// let lens = LogitLens { top_k: 3, target: LensTarget::Token(paris) }.run(&model, &ids)?;
/// for (label, row) in lens.labels.iter().zip(&lens.cells) {
///     let last = row.last().unwrap();
///     println!("{label:>28} {:?} rank {:?}", last.top[0].token, last.target_rank);
/// }
/// # Ok::<(), explainability_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogitLens {
    /// Top tokens reported per cell.
    pub top_k: usize,
    /// Token whose rank and log-probability are reported.
    pub target: LensTarget,
}

impl Default for LogitLens {
    fn default() -> Self {
        Self { top_k: 5, target: LensTarget::NextTokens }
    }
}

/// One candidate of a lens cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensToken {
    /// Token id.
    pub id: i64,
    /// Token text.
    pub token: String,
    /// Probability under the lens.
    pub probability: f64,
}

/// The lens at one (entry, position).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LensCell {
    /// Most likely tokens, most likely first.
    pub top: Vec<LensToken>,
    /// The target's rank (0 = most likely): the number of tokens with a larger logit.
    pub target_rank: Option<usize>,
    /// The target's log-probability.
    pub target_log_prob: Option<f64>,
    /// `KL(final ‖ lens)` in nats: how far this entry's distribution is from the model's
    /// output at the same position (0 at the last entry).
    pub kl_to_final: f64,
}

/// A logit lens over a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitLensResult {
    /// Input tokens.
    pub tokens: Vec<String>,
    /// The hook point of each entry (`blocks.0.hook_resid_pre`, …, the last
    /// `hook_resid_post`).
    pub labels: Vec<String>,
    /// `cells[entry][position − start]`.
    pub cells: Vec<Vec<LensCell>>,
    /// The position of the first column of `cells` (0 unless the lens ran on a range of
    /// positions, [`LogitLens::run_positions`]).
    #[serde(default)]
    pub start: usize,
}

impl LogitLensResult {
    /// `KL(final ‖ lens)` as an `[entry, position − start]` array.
    pub fn kl_matrix(&self) -> ndarray::Array2<f64> {
        let n_pos = self.cells.first().map_or(0, Vec::len);
        ndarray::Array2::from_shape_fn((self.cells.len(), n_pos), |(e, p)| {
            self.cells[e][p].kl_to_final
        })
    }

    /// The target's rank as an `[entry, position − start]` array (`None` where there is no target).
    pub fn rank_matrix(&self) -> ndarray::Array2<Option<usize>> {
        let n_pos = self.cells.first().map_or(0, Vec::len);
        ndarray::Array2::from_shape_fn((self.cells.len(), n_pos), |(e, p)| {
            self.cells[e][p].target_rank
        })
    }
}

/// The hook points of the lens's entries, in order.
pub fn lens_points(n_layers: usize) -> Vec<HookPoint> {
    let mut points: Vec<HookPoint> = (0..n_layers).map(HookPoint::resid_pre).collect();
    if n_layers > 0 {
        points.push(HookPoint::resid_post(n_layers - 1));
    }
    points
}

/// The lens's residual states, `[entry, pos, d_model]` (detached), from one forward pass.
///
/// # Errors
/// As [`LanguageModel::forward_ids`].
pub fn lens_residuals(model: &dyn LanguageModel, ids: &[i64]) -> Result<Tensor> {
    let input = ids_tensor(model, ids)?;
    let points = lens_points(model.info().n_layers);
    let _guard = tch::no_grad_guard();
    let mut hooks = Hooks::new();
    let wanted = points.clone();
    hooks.cache_detached(
        HookFilter::kind(HookKind::ResidPre).or(HookFilter::points(wanted.last().copied())),
    );
    let options = explainability_core::ForwardOptions {
        logits_from: Some(ids.len() - 1),
        ..Default::default()
    };
    model.forward_ids(&input, &options, &mut hooks)?;
    let cache = hooks.take_cache();
    let states =
        points.iter().map(|p| Ok(cache.require(p)?.f_select(0, 0)?)).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::f_stack(&states, 0)?)
}

/// Lens logits `[entry, pos, vocab]` (f32): [`lens_residuals`] through the final norm
/// (recomputed statistics) and the unembedding.
///
/// # Errors
/// As [`lens_residuals`], and [`Error::UnsupportedOperation`] for models without a final
/// norm.
pub fn lens_logits(model: &dyn LanguageModel, ids: &[i64]) -> Result<Tensor> {
    let residuals = lens_residuals(model, ids)?;
    let _guard = tch::no_grad_guard();
    let normed = model.final_norm(&residuals, NormScale::Recompute)?;
    model.unembed(&normed)
}

impl LogitLens {
    /// Runs the lens on token ids.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `top_k == 0`, [`Error::TokenOutOfRange`] for a target
    /// outside the vocabulary, and as [`lens_logits`].
    pub fn run(&self, model: &dyn LanguageModel, ids: &[i64]) -> Result<LogitLensResult> {
        self.run_positions(model, ids, 0..ids.len())
    }

    /// Runs the lens on the positions `positions` of `ids` only (the forward pass still sees
    /// every token): the lens's logits grow as entries × positions × vocabulary, so a long
    /// text is read at its last positions.
    ///
    /// # Errors
    /// As [`LogitLens::run`]; [`Error::PositionOutOfRange`] for a range past the input,
    /// [`Error::InvalidArgument`] for an empty range.
    pub fn run_positions(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        positions: std::ops::Range<usize>,
    ) -> Result<LogitLensResult> {
        if positions.is_empty() {
            return Err(Error::invalid_argument(format!(
                "the logit lens needs at least one position, got {positions:?}"
            )));
        }
        crate::metric::check_position(positions.end - 1, ids.len())?;
        if self.top_k == 0 {
            return Err(Error::invalid_argument("top_k must be at least 1"));
        }
        let vocab_size = model.info().vocab_size;
        if let LensTarget::Token(id) = self.target
            && (id < 0 || id as usize >= vocab_size)
        {
            return Err(Error::TokenOutOfRange { id, vocab_size });
        }
        let residuals = lens_residuals(model, ids)?.f_narrow(
            1,
            positions.start as i64,
            positions.len() as i64,
        )?;
        let _guard = tch::no_grad_guard();
        let logits = model.unembed(&model.final_norm(&residuals, NormScale::Recompute)?)?;
        let log_probs = logits.f_to_kind(Kind::Double)?.f_log_softmax(-1, Kind::Double)?;
        let n_entries = log_probs.size()[0];
        let final_lp = log_probs.f_select(0, n_entries - 1)?; // [pos, vocab]
        let final_p = final_lp.f_exp()?;
        let top_k = self.top_k.min(vocab_size) as i64;
        let n_pos = positions.len();
        let mut cells = Vec::with_capacity(n_entries as usize);
        for e in 0..n_entries {
            let lp = log_probs.f_select(0, e)?; // [pos, vocab]
            let kl =
                final_p.f_mul(&final_lp.f_sub(&lp)?)?.f_sum_dim_intlist(-1, false, Kind::Double)?;
            let kl: Vec<f64> = Vec::try_from(&kl)?;
            let (top_lp, top_id) = lp.f_topk(top_k, -1, true, true)?;
            let top_lp: Vec<f64> = Vec::try_from(&top_lp.f_flatten(0, -1)?)?;
            let top_id: Vec<i64> = Vec::try_from(&top_id.f_flatten(0, -1)?)?;
            let names = token_strings(model, &top_id);
            let mut row = Vec::with_capacity(n_pos);
            for p in 0..n_pos {
                let target = match self.target {
                    LensTarget::None => None,
                    LensTarget::NextTokens => ids.get(positions.start + p + 1).copied(),
                    LensTarget::Token(id) => Some(id),
                };
                let (target_rank, target_log_prob) = match target {
                    Some(id) => {
                        let row_lp = lp.f_select(0, p as i64)?;
                        let value = row_lp.f_double_value(&[id])?;
                        let above = row_lp.f_gt(value)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
                        (Some(above as usize), Some(value))
                    }
                    None => None.unzip(),
                };
                let k = top_k as usize;
                let top = (0..k)
                    .map(|i| LensToken {
                        id: top_id[p * k + i],
                        token: names[p * k + i].clone(),
                        probability: top_lp[p * k + i].exp(),
                    })
                    .collect();
                row.push(LensCell {
                    top,
                    target_rank,
                    target_log_prob,
                    kl_to_final: kl[p].max(0.0),
                });
            }
            cells.push(row);
        }
        Ok(LogitLensResult {
            tokens: token_strings(model, ids),
            labels: lens_points(model.info().n_layers).iter().map(ToString::to_string).collect(),
            cells,
            start: positions.start,
        })
    }
}
