//! Causal tracing (Meng et al. 2022): corrupt the subject's token embeddings with Gaussian
//! noise, then restore one clean state at a time and see how much of the answer's
//! probability comes back.

use std::collections::BTreeSet;
use std::ops::Range;

use explainability_core::{
    Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel, Result,
    SplitMix64,
};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::metric::{ids_tensor, token_strings};

/// Which states are restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceKind {
    /// The hidden state leaving block l (`blocks.{l}.hook_resid_post`) at one position.
    Hidden,
    /// `hook_mlp_out` of a window of layers around l at one position.
    Mlp,
    /// `hook_attn_out` of a window of layers around l at one position.
    Attention,
}

impl TraceKind {
    fn hook_kind(self) -> HookKind {
        match self {
            TraceKind::Hidden => HookKind::ResidPost,
            TraceKind::Mlp => HookKind::MlpOut,
            TraceKind::Attention => HookKind::AttnOut,
        }
    }
}

/// Causal tracing: Meng et al. 2022, "Locating and Editing Factual Associations in GPT"
/// (arXiv:2202.05262), §2.1.
///
/// The corrupted run adds `N(0, (noise_multiplier · σ)²)` noise to the token embeddings of
/// the subject (σ: the standard deviation of the model's token embeddings, estimated on up to
/// 4096 evenly spaced vocabulary entries; the paper uses 3σ of its subjects' embeddings).
/// Each unit restores the clean state of one position at layer l: the hidden state, or the
/// MLP / attention outputs of the layers `l − window/2 .. l + window/2` (clipped; the paper's
/// window is 10). The indirect effect is `p(answer | restored) − p(answer | corrupted)`,
/// averaged over `samples` noise draws (seeded). Restored runs are batched like
/// [`ActivationPatching`](crate::ActivationPatching); on causal models with a key/value cache
/// a run that restores position p reuses the corrupted run's keys and values of the positions
/// before p (restoring p cannot change them) and computes only positions p.. ([`reuse_prefix`]).
///
/// [`reuse_prefix`]: CausalTracing::reuse_prefix
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalTracing {
    /// States restored.
    pub kind: TraceKind,
    /// Noise scale in units of the embedding standard deviation (paper: 3).
    pub noise_multiplier: f64,
    /// Noise draws averaged (paper: 10).
    pub samples: usize,
    /// Layers restored together for MLP and attention states (paper: 10).
    pub window: usize,
    /// Seed of the noise.
    pub seed: u64,
    /// Restored runs per forward pass.
    pub batch_size: usize,
    /// Reuse the corrupted run's keys and values of the positions before each restored
    /// position (causal models with a key/value cache; default true). The effects equal those
    /// without reuse up to float reassociation; a restored run computes only the positions
    /// from the restored one on.
    #[serde(default = "reuse_by_default")]
    pub reuse_prefix: bool,
}

fn reuse_by_default() -> bool {
    true
}

impl CausalTracing {
    /// The paper's settings for `kind`: 3σ noise, 10 samples, windows of 10 layers.
    pub fn new(kind: TraceKind) -> Self {
        Self {
            kind,
            noise_multiplier: 3.0,
            samples: 10,
            window: 10,
            seed: 0,
            batch_size: 32,
            reuse_prefix: true,
        }
    }
}

/// A causal trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalTrace {
    /// States restored.
    pub kind: TraceKind,
    /// Input tokens.
    pub tokens: Vec<String>,
    /// The corrupted (subject) positions.
    pub subject: Range<usize>,
    /// The answer token.
    pub answer: i64,
    /// Its probability on the clean run.
    pub clean_probability: f64,
    /// Its probability on the corrupted runs (mean over samples).
    pub corrupted_probability: f64,
    /// `[layer, position]` mean probability with the state restored.
    pub restored_probability: ndarray::Array2<f64>,
    /// `[layer, position]` indirect effect: restored − corrupted.
    pub indirect_effect: ndarray::Array2<f64>,
}

impl CausalTracing {
    /// Traces `ids` with the subject at `subject`, for the next-token probability of
    /// `answer` at the last position.
    ///
    /// # Errors
    /// [`Error::PositionOutOfRange`] for a subject past the input, [`Error::InvalidArgument`]
    /// for an empty subject, zero samples, window or batch size, [`Error::TokenOutOfRange`],
    /// and as [`LanguageModel::forward_embeddings`].
    pub fn run(
        &self,
        model: &dyn LanguageModel,
        ids: &[i64],
        subject: Range<usize>,
        answer: i64,
    ) -> Result<CausalTrace> {
        if self.samples == 0 || self.window == 0 || self.batch_size == 0 {
            return Err(Error::invalid_argument(
                "samples, window and batch_size must be at least 1",
            ));
        }
        if subject.is_empty() {
            return Err(Error::invalid_argument(format!("empty subject range {subject:?}")));
        }
        let len = ids.len();
        if subject.end > len {
            return Err(Error::PositionOutOfRange { position: subject.end - 1, len });
        }
        let info = model.info().clone();
        if answer < 0 || answer as usize >= info.vocab_size {
            return Err(Error::TokenOutOfRange { id: answer, vocab_size: info.vocab_size });
        }
        let input = ids_tensor(model, ids)?;
        let _guard = tch::no_grad_guard();
        let options = ForwardOptions { logits_from: Some(len - 1), ..Default::default() };
        let probability = |logits: &Tensor| -> Result<Vec<f64>> {
            let p = logits.f_select(1, 0)?.f_softmax(-1, Kind::Double)?.f_select(-1, answer)?;
            Ok(Vec::try_from(&p)?)
        };

        // Clean run: the states to restore.
        let kind = self.kind.hook_kind();
        let mut hooks = Hooks::new();
        hooks.cache_detached(HookFilter::kind(kind));
        let embeddings = model.embed(&input)?;
        let out = model.forward_embeddings(&embeddings, &options, &mut hooks)?;
        let clean_probability = probability(&out.logits)?[0];
        let clean = hooks.take_cache();

        let sigma = embedding_std(model)? * self.noise_multiplier;
        let (n_layers, d) = (info.n_layers, info.d_model as i64);
        // Before the subject, the corrupted run's states are the clean ones (the model is
        // causal and only the subject is noised): restoring them changes nothing, so those
        // units take the corrupted probability without a forward pass.
        let all_units: Vec<(BTreeSet<usize>, usize)> = (0..n_layers)
            .flat_map(|l| {
                let layers = self.layers_of(l, n_layers);
                (0..len).map(move |p| (layers.clone(), p))
            })
            .collect();
        let run_index: Vec<usize> =
            (0..all_units.len()).filter(|&i| all_units[i].1 >= subject.start).collect();
        let units: Vec<(BTreeSet<usize>, usize)> =
            run_index.iter().map(|&i| all_units[i].clone()).collect();
        // Restored runs in groups that share their first computed position: with prefix
        // reuse, one group per restored position (its runs start there, after the corrupted
        // run's cached keys and values); without, one group from position 0.
        let reuse = self.reuse_prefix && info.causal && model.supports_key_value_cache();
        let groups: Vec<(usize, Vec<usize>)> = match reuse {
            true => (subject.start..len)
                .map(|p| (p, (0..units.len()).filter(|&i| units[i].1 == p).collect()))
                .collect(),
            false => vec![(0, (0..units.len()).collect())],
        };
        let mut restored = vec![0.0; units.len()];
        let mut corrupted_probability = 0.0;
        let mut rng = SplitMix64::new(self.seed);
        let n_subject = subject.len() as i64;
        for _ in 0..self.samples {
            let noise: Vec<f32> =
                (0..n_subject * d).map(|_| (rng.normal() * sigma) as f32).collect();
            let noise = Tensor::f_from_slice(&noise)?
                .f_view([1, n_subject, d])?
                .f_to_device(model.device())?
                .f_to_kind(embeddings.kind())?;
            let noisy = embeddings.f_slice_scatter(
                &embeddings.f_narrow(1, subject.start as i64, n_subject)?.f_add(&noise)?,
                1,
                Some(subject.start as i64),
                Some(subject.end as i64),
                1,
            )?;
            let corrupted_options = ForwardOptions {
                logits_from: Some(len - 1),
                return_key_values: reuse,
                ..Default::default()
            };
            let out = model.forward_embeddings(&noisy, &corrupted_options, &mut Hooks::new())?;
            corrupted_probability += probability(&out.logits)?[0] / self.samples as f64;
            let past = out.key_values;
            for (from, members) in &groups {
                let (from, span) = (*from, (len - from) as i64);
                for chunk in members.chunks(self.batch_size) {
                    let batch = chunk.len() as i64;
                    let rows = noisy
                        .f_narrow(1, from as i64, span)?
                        .f_expand([batch, -1, -1], false)?
                        .f_contiguous()?;
                    let past_key_values = match &past {
                        Some(cache) if from > 0 => {
                            Some(cache.prefix(from)?.repeat_row(0, chunk.len())?)
                        }
                        _ => None,
                    };
                    let run_options = ForwardOptions {
                        logits_from: Some(len - 1 - from),
                        past_key_values,
                        ..Default::default()
                    };
                    let wanted: BTreeSet<usize> =
                        chunk.iter().flat_map(|&i| units[i].0.clone()).collect();
                    let points: Vec<HookPoint> =
                        wanted.iter().map(|&l| HookPoint::new(kind, l)).collect();
                    let mut hooks = Hooks::new();
                    hooks.replace(HookFilter::points(points), |point, activation| {
                        let layer = point.layer().unwrap_or(0);
                        let mut mask = vec![false; chunk.len() * span as usize];
                        for (r, &i) in chunk.iter().enumerate() {
                            let (layers, p) = &units[i];
                            if layers.contains(&layer) {
                                mask[r * span as usize + (p - from)] = true;
                            }
                        }
                        let mask = Tensor::f_from_slice(&mask)?
                            .f_view([batch, span, 1])?
                            .f_to_device(activation.device())?;
                        let source = clean
                            .require(point)?
                            .f_narrow(1, from as i64, span)?
                            .f_to_kind(activation.kind())?;
                        Ok(source.f_where_self(&mask, activation)?)
                    });
                    let out = model.forward_embeddings(&rows, &run_options, &mut hooks)?;
                    for (&i, p) in chunk.iter().zip(probability(&out.logits)?) {
                        restored[i] += p / self.samples as f64;
                    }
                }
            }
        }
        let mut full = vec![corrupted_probability; all_units.len()];
        for (&i, p) in run_index.iter().zip(restored) {
            full[i] = p;
        }
        let restored_probability = ndarray::Array2::from_shape_vec((n_layers, len), full)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        let indirect_effect = restored_probability.mapv(|p| p - corrupted_probability);
        Ok(CausalTrace {
            kind: self.kind,
            tokens: token_strings(model, ids),
            subject,
            answer,
            clean_probability,
            corrupted_probability,
            restored_probability,
            indirect_effect,
        })
    }

    /// The layers restored by the unit at layer `l`.
    fn layers_of(&self, l: usize, n_layers: usize) -> BTreeSet<usize> {
        match self.kind {
            TraceKind::Hidden => BTreeSet::from([l]),
            TraceKind::Mlp | TraceKind::Attention => {
                let half = self.window / 2;
                let start = l.saturating_sub(half);
                let end = (l + self.window - half).min(n_layers);
                (start..end).collect()
            }
        }
    }
}

/// Standard deviation of the model's token embeddings over up to 4096 evenly spaced ids.
fn embedding_std(model: &dyn LanguageModel) -> Result<f64> {
    let vocab = model.info().vocab_size as i64;
    let step = (vocab / 4096).max(1);
    let ids = Tensor::f_arange_start_step(0, vocab, step, (Kind::Int64, model.device()))?;
    let e = model.embed(&ids.f_unsqueeze(0)?)?.f_to_kind(Kind::Double)?;
    Ok(e.f_std(true)?.f_double_value(&[])?)
}

/// Meng et al.'s token groups (Figure 2 and §2.2 of arXiv:2202.05262), in their order.
pub const TOKEN_GROUPS: [&str; 6] = [
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
];

impl CausalTrace {
    /// The positions of each of [`TOKEN_GROUPS`]: the subject's first token, its interior,
    /// its last token (the same as the first for a one-token subject), the first token after
    /// it, the further tokens, and the last token. The last token belongs only to the last
    /// group, so a subsequent token that is also the last token counts as the last token.
    pub fn token_groups(&self) -> [Vec<usize>; 6] {
        let (s, e) = (self.subject.start, self.subject.end);
        let last = self.tokens.len().saturating_sub(1);
        let keep = |v: Vec<usize>| -> Vec<usize> { v.into_iter().filter(|&p| p != last).collect() };
        [
            keep(vec![s]),
            keep((s + 1..e.saturating_sub(1)).collect()),
            keep(vec![e.saturating_sub(1)]),
            keep(if e < last { vec![e] } else { Vec::new() }),
            keep((e + 1..last).collect()),
            vec![last],
        ]
    }

    /// The indirect effect averaged over the positions of each of [`TOKEN_GROUPS`],
    /// `[group, layer]`; NaN for a group without positions (a one-token subject has no middle).
    pub fn by_token_group(&self) -> ndarray::Array2<f64> {
        let n_layers = self.indirect_effect.nrows();
        let groups = self.token_groups();
        ndarray::Array2::from_shape_fn((6, n_layers), |(g, l)| {
            let ps = &groups[g];
            if ps.is_empty() {
                f64::NAN
            } else {
                ps.iter().map(|&p| self.indirect_effect[(l, p)]).sum::<f64>() / ps.len() as f64
            }
        })
    }
}

/// The mean of [`CausalTrace::by_token_group`] over traces, each cell over the traces that
/// have that group (NaN where none has it), and how many traces each group counted.
pub fn average_by_token_group(traces: &[CausalTrace]) -> (ndarray::Array2<f64>, [usize; 6]) {
    let n_layers = traces.first().map_or(0, |t| t.indirect_effect.nrows());
    let mut sum = ndarray::Array2::<f64>::zeros((6, n_layers));
    let mut counts = [0usize; 6];
    for t in traces.iter().filter(|t| t.indirect_effect.nrows() == n_layers) {
        let g = t.by_token_group();
        for (i, count) in counts.iter_mut().enumerate() {
            if !g[(i, 0)].is_nan() {
                *count += 1;
                let mut row = sum.row_mut(i);
                row += &g.row(i);
            }
        }
    }
    for (i, &count) in counts.iter().enumerate() {
        let mut row = sum.row_mut(i);
        row.mapv_inplace(|v| if count == 0 { f64::NAN } else { v / count as f64 });
    }
    (sum, counts)
}
