//! The `LanguageModel` trait: what every explainer needs from a model, and nothing more.
//!
//! Attention, gradient, evaluation and comparison code talk to models only through this
//! trait: tokenise, embed ids, run the forward pass from embeddings with hooks, read logits,
//! and know the model's facts ([`ModelInfo`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::blockwise::{BackwardMemory, BlockwiseForward};
use crate::error::{Error, Result};
use crate::hook_point::{HookKind, HookPoint};
use crate::hooks::{ActivationCache, HookFilter, Hooks};

/// Model family of an implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Architecture {
    /// Llama (also SmolLM2 and Mistral, which share its layout).
    Llama,
    /// Qwen2: Llama layout with q/k/v biases.
    Qwen2,
    /// Mistral.
    Mistral,
    /// Qwen3: Llama layout with q/k RMSNorm per head and an explicit head width.
    Qwen3,
    /// Gemma 3 (text): sandwich norms, q/k norms, GELU-tanh gated MLP, local and global
    /// attention layers, scaled embeddings.
    Gemma3,
    /// GPT-2.
    Gpt2,
    /// BERT-style bidirectional encoders.
    Bert,
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Mistral => "mistral",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3",
            Architecture::Gpt2 => "gpt2",
            Architecture::Bert => "bert",
        })
    }
}

/// Ids of the special tokens a model knows, where it has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<i64>,
    /// End of sequence.
    pub eos: Option<i64>,
    /// Padding.
    pub pad: Option<i64>,
    /// Unknown token.
    pub unk: Option<i64>,
}

/// The facts of a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Human-readable name (from the file's metadata or folder name).
    pub name: String,
    /// Model family.
    pub architecture: Architecture,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads per block.
    pub n_heads: usize,
    /// Key/value heads per block (equals `n_heads` without grouped-query attention).
    pub n_kv_heads: usize,
    /// Residual stream width.
    pub d_model: usize,
    /// Width of one attention head.
    pub d_head: usize,
    /// MLP hidden width.
    pub d_mlp: usize,
    /// Vocabulary size (rows of the embedding matrix).
    pub vocab_size: usize,
    /// Longest supported sequence.
    pub max_positions: usize,
    /// Whether attention is causal (decoder) or bidirectional (encoder).
    pub causal: bool,
    /// Special token ids.
    pub special_tokens: SpecialTokens,
}

impl ModelInfo {
    /// The key/value head that query head `head` reads under grouped-query attention.
    pub fn kv_head_of(&self, head: usize) -> usize {
        let group = (self.n_heads / self.n_kv_heads.max(1)).max(1);
        head / group
    }

    /// Checks a layer index.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn check_layer(&self, layer: usize) -> Result<()> {
        if layer < self.n_layers {
            Ok(())
        } else {
            Err(Error::LayerOutOfRange { layer, n_layers: self.n_layers })
        }
    }

    /// Checks a query-head index.
    ///
    /// # Errors
    /// [`Error::HeadOutOfRange`].
    pub fn check_head(&self, head: usize) -> Result<()> {
        if head < self.n_heads {
            Ok(())
        } else {
            Err(Error::HeadOutOfRange { head, n_heads: self.n_heads })
        }
    }
}

/// Options of one forward pass besides the embeddings.
#[derive(Debug, Default)]
pub struct ForwardOptions {
    /// `[batch, pos]`, 1 for real tokens and 0 for padding; `None` means no padding.
    /// Padded keys receive exactly zero attention.
    pub attention_mask: Option<Tensor>,
    /// `[batch, pos]` position ids; `None` means `0..pos` for every row (right padding).
    pub position_ids: Option<Tensor>,
    /// Compute logits only for positions `logits_from..pos` (`None`: every position). The LM
    /// head is the largest matrix of a small model (SmolLM2: 49152 × 576), so a target that
    /// reads one position need not pay for the others; [`ModelOutput::logits`] then has
    /// `pos − logits_from` positions and a [`Target`](crate::Target) reads it through
    /// [`Target::from_position`](crate::Target::from_position).
    pub logits_from: Option<usize>,
    /// Keys and values of earlier positions to continue from (a KV cache): the embeddings
    /// are then the positions after them, positions continue from the cache's length (unless
    /// `position_ids` says otherwise), `attention_mask` covers past and new positions
    /// (`[batch, past + pos]`), and every new query attends to the past keys under the
    /// model's own causal and sliding-window masks. Only models whose
    /// [`LanguageModel::supports_key_value_cache`] is true accept it; others return
    /// [`Error::UnsupportedOperation`].
    pub past_key_values: Option<KeyValueCache>,
    /// Return the keys and values of every layer ([`ModelOutput::key_values`]: the past ones
    /// followed by this forward's), so that a later forward can continue from them.
    pub return_key_values: bool,
    /// Run in a relevance-propagation mode (AttnLRP or CP-LRP): forward values are
    /// unchanged, the backward pass is rewritten so that `input ⊙ gradient` is the LRP
    /// relevance (see [`RelevanceRule`](crate::RelevanceRule)). `None` (default): an ordinary
    /// forward pass. Models that do not support it return
    /// [`Error::UnsupportedOperation`].
    pub relevance: Option<crate::RelevanceRule>,
}

impl ForwardOptions {
    /// The positions of `final_hidden` (`[batch, pos, d_model]`) whose logits are wanted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `logits_from` is not below `pos`.
    pub fn logit_hidden(&self, final_hidden: &Tensor) -> Result<Tensor> {
        let Some(from) = self.logits_from else {
            return Ok(final_hidden.shallow_clone());
        };
        let seq = final_hidden.size().get(1).copied().unwrap_or(0);
        if from as i64 >= seq {
            return Err(Error::invalid_argument(format!(
                "logits_from {from} must be below the {seq} positions of the input"
            )));
        }
        Ok(final_hidden.f_narrow(1, from as i64, seq - from as i64)?)
    }
}

/// Where [`LanguageModel::final_norm`] takes its normalisation statistics from.
#[derive(Debug, Clone, Copy)]
pub enum NormScale<'a> {
    /// From each residual state itself: exactly the model's final norm (a logit lens).
    Recompute,
    /// The scale (RMS, or standard deviation for LayerNorm) from `reference`
    /// (`[..., d_model]`, broadcast against the residual), so that the map is affine in the
    /// residual: centring (LayerNorm), division by the frozen scale, the weight, then the
    /// bias. Applied to `reference` itself it equals [`NormScale::Recompute`]; applied to a
    /// sum of components it is the sum of their images minus (n − 1) images of zero (direct
    /// logit attribution).
    FrozenAt(&'a Tensor),
}

impl NormScale<'_> {
    /// The reference of [`NormScale::FrozenAt`].
    pub fn reference(&self) -> Option<&Tensor> {
        match self {
            NormScale::Recompute => None,
            NormScale::FrozenAt(r) => Some(r),
        }
    }
}

/// What a forward pass returns.
#[derive(Debug)]
pub struct ModelOutput {
    /// `[batch, pos, vocab]` next-token logits (f32 whatever the model's dtype); only the
    /// positions from [`ForwardOptions::logits_from`] on when that is set.
    pub logits: Tensor,
    /// `[batch, pos, d_model]` output of the final normalisation.
    pub final_hidden: Tensor,
    /// Keys and values of every layer, past and new positions, when
    /// [`ForwardOptions::return_key_values`] asked for them.
    pub key_values: Option<KeyValueCache>,
}

/// Keys and values of one layer, as attention reads them: after the key projection, key
/// norm and rotary embedding, before grouped-query heads are repeated.
///
/// # Shapes
/// `keys`, `values`: `[batch, n_kv_heads, pos, d_head]`.
#[derive(Debug)]
pub struct LayerKeyValues {
    /// Keys.
    pub keys: Tensor,
    /// Values.
    pub values: Tensor,
}

/// Per-layer keys and values of a prefix (a KV cache), so that inputs sharing the prefix
/// run only their own positions ([`ForwardOptions::past_key_values`]).
#[derive(Debug)]
pub struct KeyValueCache {
    /// One entry per block, first block first.
    pub layers: Vec<LayerKeyValues>,
}

impl KeyValueCache {
    /// Cached positions (0 for a cache without layers).
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.keys.size().get(2).copied()).unwrap_or(0) as usize
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of the batch.
    pub fn batch(&self) -> usize {
        self.layers.first().and_then(|l| l.keys.size().first().copied()).unwrap_or(0) as usize
    }

    /// A cache sharing storage with this one.
    pub fn shallow_clone(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| LayerKeyValues {
                keys: l.keys.shallow_clone(),
                values: l.values.shallow_clone(),
            })
            .collect();
        Self { layers }
    }

    /// The first `len` positions (a view, no copy).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `len` exceeds the cached positions.
    pub fn prefix(&self, len: usize) -> Result<Self> {
        if len > self.len() {
            return Err(Error::invalid_argument(format!(
                "a prefix of {len} positions was asked of a cache of {}",
                self.len()
            )));
        }
        self.map(|t| Ok(t.f_narrow(2, 0, len as i64)?))
    }

    /// Row `row` repeated `times` times (a broadcast view, no copy): one prefix shared by a
    /// batch of continuations.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `row` outside the batch or `times == 0`.
    pub fn repeat_row(&self, row: usize, times: usize) -> Result<Self> {
        if row >= self.batch() || times == 0 {
            return Err(Error::invalid_argument(format!(
                "cannot repeat row {row} of a cache of {} rows {times} times",
                self.batch()
            )));
        }
        self.map(|t| {
            let r = t.f_narrow(0, row as i64, 1)?;
            let mut size = r.size();
            size[0] = times as i64;
            Ok(r.f_expand(&size, false)?)
        })
    }

    fn map(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| Ok(LayerKeyValues { keys: f(&l.keys)?, values: f(&l.values)? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

/// One candidate next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenPrediction {
    /// Token id.
    pub id: i64,
    /// Token text as the tokenizer decodes it alone.
    pub token: String,
    /// Softmax probability.
    pub probability: f64,
    /// Raw logit.
    pub logit: f64,
}

/// A transformer language model with hook points.
///
/// Implementations validate their inputs (empty sequences, sequences beyond the context
/// window, ids outside the vocabulary) and return typed errors.
pub trait LanguageModel {
    /// The model's facts.
    fn info(&self) -> &ModelInfo;

    /// Device the weights live on.
    fn device(&self) -> Device;

    /// Floating-point kind of the weights (activations follow it; logits are f32).
    fn kind(&self) -> Kind;

    /// Token ids of `text`.
    ///
    /// # Errors
    /// [`Error::EmptyText`] when the text yields no tokens; tokenizer failures.
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>>;

    /// Text of `ids`.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for unknown ids.
    fn decode(&self, ids: &[i64]) -> Result<String>;

    /// A readable string per token (each id decoded alone).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for unknown ids.
    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>>;

    /// Embeds ids.
    ///
    /// # Shapes
    /// `ids`: `[batch, pos]` (int64) → `[batch, pos, d_model]` in the model's kind.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`], [`Error::ShapeMismatch`].
    fn embed(&self, ids: &Tensor) -> Result<Tensor>;

    /// Runs the blocks from embeddings, firing every hook point (starting with `hook_embed`
    /// on `embeddings` themselves). Gradients flow to `embeddings` when they require grad.
    ///
    /// # Shapes
    /// `embeddings`: `[batch, pos, d_model]`.
    ///
    /// # Errors
    /// [`Error::EmptyText`] for zero positions, [`Error::SequenceTooLong`], shape errors,
    /// and whatever a hook returns.
    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput>;

    /// Maps final-normalised hidden states to logits (the LM head; useful for a logit lens).
    ///
    /// # Shapes
    /// `[..., d_model]` → `[..., vocab]`, f32.
    ///
    /// # Errors
    /// Shape errors.
    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor>;

    /// Applies the final normalisation (the one between the last block and
    /// [`LanguageModel::unembed`]) to residual-stream states, so that
    /// `unembed(final_norm(resid_post of the last block, Recompute))` are the model's logits.
    ///
    /// # Shapes
    /// `[..., d_model]` → `[..., d_model]`.
    ///
    /// # Errors
    /// [`Error::UnsupportedOperation`] for models without a final norm (the default), shape
    /// errors.
    fn final_norm(&self, residual: &Tensor, scale: NormScale<'_>) -> Result<Tensor> {
        let _ = (residual, scale);
        Err(Error::UnsupportedOperation {
            model: self.info().name.clone(),
            operation: "final_norm".into(),
        })
    }

    /// Applies the normalisation whose output fires `point`, with its statistics from each
    /// state or its scale frozen at a reference ([`NormScale`]): `ln_final.hook_normalized`
    /// is [`LanguageModel::final_norm`]; `blocks.{l}.ln1_post.hook_normalized` and
    /// `blocks.{l}.ln2_post.hook_normalized` are the norms sandwich-norm families (Gemma 3)
    /// apply to the attention and MLP outputs before the residual add. Frozen, a post-norm is
    /// affine in its input, so direct logit attribution can split the heads behind it.
    ///
    /// # Shapes
    /// `[..., d_model]` → `[..., d_model]`.
    ///
    /// # Errors
    /// [`Error::UnsupportedOperation`] for a point the model has no norm at (the default for
    /// every point but `ln_final.hook_normalized`), [`Error::LayerOutOfRange`], shape errors.
    fn norm_at(&self, point: HookPoint, input: &Tensor, scale: NormScale<'_>) -> Result<Tensor> {
        if point.kind() == HookKind::LnFinal {
            return self.final_norm(input, scale);
        }
        Err(Error::UnsupportedOperation {
            model: self.info().name.clone(),
            operation: format!("a normalisation at {point}"),
        })
    }

    /// The forward pass from embeddings split into stages (input, each block, output), for
    /// inputs shaped like `embeddings` and these options; `None` (the default) for a model
    /// that cannot run its blocks separately. Used by [`crate::gradients`] under
    /// [`BackwardMemory::Recompute`].
    ///
    /// # Errors
    /// As [`LanguageModel::forward_embeddings`] for the shape and options.
    fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<Option<Box<dyn BlockwiseForward + 'a>>> {
        let _ = (embeddings, options);
        Ok(None)
    }

    /// How gradient methods differentiate this model ([`BackwardMemory::Stored`] unless the
    /// model was set up otherwise, e.g. through [`crate::RecomputedBackward`]).
    fn backward_memory(&self) -> BackwardMemory {
        BackwardMemory::Stored
    }

    /// Named parameter tensors sharing storage with the model, under TransformerLens-style
    /// names (`embed.W_E`, `blocks.{l}.attn.W_Q`, `blocks.{l}.mlp.W_out`, `ln_final.w`, …;
    /// the `blocks.{l}.` prefix identifies the layer). Writing into them in place (under
    /// `no_grad`) changes the model, which is how parameter-randomisation checks work.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;

    /// Whether the forward pass accepts [`ForwardOptions::past_key_values`] and
    /// [`ForwardOptions::return_key_values`] (causal decoders; not bidirectional encoders,
    /// whose earlier positions depend on later ones). Callers that reuse a prefix fall back
    /// to full recomputation when this is false.
    fn supports_key_value_cache(&self) -> bool {
        false
    }

    /// Runs the model on ids.
    ///
    /// # Shapes
    /// `ids`: `[batch, pos]` → logits `[batch, pos, vocab]`.
    ///
    /// # Errors
    /// As [`LanguageModel::embed`] and [`LanguageModel::forward_embeddings`].
    fn forward_ids(
        &self,
        ids: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        self.check_ids_shape(ids)?;
        let embeddings = self.embed(ids)?;
        self.forward_embeddings(&embeddings, options, hooks)
    }

    /// Checks that `ids` is a non-empty `[batch, pos]` tensor that fits the context window.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::EmptyText`], [`Error::SequenceTooLong`].
    fn check_ids_shape(&self, ids: &Tensor) -> Result<()> {
        let size = ids.size();
        if size.len() != 2 {
            return Err(Error::ShapeMismatch {
                what: "ids".into(),
                expected: "[batch, pos]".into(),
                actual: size,
            });
        }
        check_positions(size[1], self.info().max_positions)
    }

    /// Ids of `text` as a `[1, pos]` tensor on the model's device.
    ///
    /// # Errors
    /// As [`LanguageModel::encode`], plus [`Error::SequenceTooLong`].
    fn ids_tensor(&self, text: &str) -> Result<Tensor> {
        let ids = self.encode(text, true)?;
        check_positions(ids.len() as i64, self.info().max_positions)?;
        Ok(Tensor::from_slice(&ids).unsqueeze(0).to_device(self.device()))
    }

    /// Runs `text` and returns the output together with the activations `filter` selects
    /// (detached).
    ///
    /// # Errors
    /// As [`LanguageModel::forward_ids`].
    fn run_with_cache(
        &self,
        text: &str,
        filter: HookFilter,
    ) -> Result<(ModelOutput, ActivationCache)> {
        let ids = self.ids_tensor(text)?;
        let _guard = tch::no_grad_guard();
        let mut hooks = Hooks::new();
        hooks.cache_detached(filter);
        let output = self.forward_ids(&ids, &ForwardOptions::default(), &mut hooks)?;
        Ok((output, hooks.take_cache()))
    }

    /// The `k` most likely next tokens after `text`, most likely first.
    ///
    /// # Errors
    /// As [`LanguageModel::forward_ids`]; [`Error::InvalidArgument`] for `k == 0`.
    fn top_next_tokens(&self, text: &str, k: usize) -> Result<Vec<TokenPrediction>> {
        if k == 0 {
            return Err(Error::invalid_argument("k must be at least 1"));
        }
        let ids = self.ids_tensor(text)?;
        let _guard = tch::no_grad_guard();
        let output = self.forward_ids(&ids, &ForwardOptions::default(), &mut Hooks::new())?;
        top_predictions(self, &output.logits, k)
    }
}

/// The `k` most likely next tokens after the last position of `logits` (`[1, pos, vocab]`),
/// most likely first: what [`LanguageModel::top_next_tokens`] reads from a forward pass, for
/// callers that ran one already.
///
/// # Errors
/// [`Error::InvalidArgument`] for `k == 0`; libtorch errors for logits of another shape.
pub fn top_predictions<M: LanguageModel + ?Sized>(
    model: &M,
    logits: &Tensor,
    k: usize,
) -> Result<Vec<TokenPrediction>> {
    if k == 0 {
        return Err(Error::invalid_argument("k must be at least 1"));
    }
    let last = logits.f_select(0, 0)?.f_select(0, -1)?.f_to_kind(Kind::Double)?;
    let probs = last.f_softmax(-1, Kind::Double)?;
    let k = k.min(model.info().vocab_size);
    let (top_p, top_i) = probs.f_topk(k as i64, -1, true, true)?;
    let ids: Vec<i64> = Vec::<i64>::try_from(&top_i)?;
    let p: Vec<f64> = Vec::<f64>::try_from(&top_p)?;
    let tokens = model.token_strings(&ids)?;
    let mut predictions = Vec::with_capacity(k);
    for ((id, probability), token) in ids.into_iter().zip(p).zip(tokens) {
        let logit = last.f_double_value(&[id])?;
        predictions.push(TokenPrediction { id, token, probability, logit });
    }
    Ok(predictions)
}

/// Checks a sequence length against a context window.
///
/// # Errors
/// [`Error::EmptyText`] for zero, [`Error::SequenceTooLong`] beyond `max`.
pub fn check_positions(len: i64, max: usize) -> Result<()> {
    if len <= 0 {
        return Err(Error::EmptyText);
    }
    let len = len as usize;
    if len > max {
        return Err(Error::SequenceTooLong { len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ModelInfo {
        ModelInfo {
            name: "t".into(),
            architecture: Architecture::Llama,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            d_model: 576,
            d_head: 64,
            d_mlp: 1536,
            vocab_size: 49152,
            max_positions: 8192,
            causal: true,
            special_tokens: SpecialTokens::default(),
        }
    }

    #[test]
    fn grouped_query_head_mapping() {
        let info = info();
        let kv: Vec<usize> = (0..9).map(|h| info.kv_head_of(h)).collect();
        assert_eq!(kv, vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn index_checks() {
        let info = info();
        assert!(info.check_layer(29).is_ok());
        assert!(matches!(
            info.check_layer(30),
            Err(Error::LayerOutOfRange { layer: 30, n_layers: 30 })
        ));
        assert!(matches!(info.check_head(9), Err(Error::HeadOutOfRange { head: 9, n_heads: 9 })));
        assert!(matches!(check_positions(0, 10), Err(Error::EmptyText)));
        assert!(matches!(
            check_positions(11, 10),
            Err(Error::SequenceTooLong { len: 11, max: 10 })
        ));
        assert!(check_positions(10, 10).is_ok());
    }

    #[test]
    fn info_serialises() {
        let json = serde_json::to_string(&info()).unwrap();
        let back: ModelInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, info());
        assert!(json.contains("\"architecture\":\"Llama\""));
    }
}
