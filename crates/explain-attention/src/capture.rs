//! Capturing attention probabilities through the pattern hook points of the model's own
//! forward pass — never through a separate code path that could drift from it.

use explainability_core::{
    Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel, Result,
    check_positions,
};
use ndarray::{Array2, Array3, Axis};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Every layer's attention probabilities for one input, per query head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionCapture {
    /// Input token ids.
    pub token_ids: Vec<i64>,
    /// A readable string per token.
    pub tokens: Vec<String>,
    /// Whether the model is causal (row `i` has `i + 1` valid keys) or bidirectional.
    pub causal: bool,
    /// One `[head, query, key]` array per layer (f32 probabilities).
    pub patterns: Vec<Array3<f32>>,
}

impl AttentionCapture {
    /// Runs `text` through `model` and captures every layer's pattern.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::SequenceTooLong`], model errors.
    pub fn from_text(model: &dyn LanguageModel, text: &str) -> Result<Self> {
        let ids = model.encode(text, true)?;
        Self::from_ids(model, &ids)
    }

    /// Runs token ids through `model` and captures every layer's pattern.
    ///
    /// # Errors
    /// [`Error::EmptyText`], [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`].
    pub fn from_ids(model: &dyn LanguageModel, ids: &[i64]) -> Result<Self> {
        Ok(Self::from_ids_with_logits(model, ids)?.0)
    }

    /// [`AttentionCapture::from_ids`] that also returns the forward pass's logits
    /// (`[1, pos, vocab]`), so that a caller needing the prediction too runs one pass.
    ///
    /// Each layer's pattern leaves libtorch's memory as it is copied out, so the peak holds
    /// the patterns once plus one layer, not twice.
    ///
    /// # Errors
    /// As [`AttentionCapture::from_ids`].
    pub fn from_ids_with_logits(model: &dyn LanguageModel, ids: &[i64]) -> Result<(Self, Tensor)> {
        let info = model.info();
        check_positions(ids.len() as i64, info.max_positions)?;
        let tokens = model.token_strings(ids)?;
        let input = Tensor::from_slice(ids).unsqueeze(0).to_device(model.device());
        let _guard = tch::no_grad_guard();
        let mut hooks = Hooks::new();
        hooks.cache_detached(HookFilter::kind(HookKind::Pattern));
        let output = model.forward_ids(&input, &ForwardOptions::default(), &mut hooks)?;
        let mut cache = hooks.take_cache();
        let mut patterns = Vec::with_capacity(info.n_layers);
        for layer in 0..info.n_layers {
            let pattern = cache.remove(&HookPoint::pattern(layer)).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "the model fired no {} hook: it cannot be explained through attention",
                    HookPoint::pattern(layer)
                ))
            })?;
            patterns.push(tensor_to_array3(&pattern.f_select(0, 0)?)?);
        }
        let capture = Self { token_ids: ids.to_vec(), tokens, causal: info.causal, patterns };
        Ok((capture, output.logits))
    }

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.patterns.len()
    }

    /// Number of query heads per layer.
    pub fn n_heads(&self) -> usize {
        self.patterns.first().map_or(0, |p| p.shape()[0])
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether there are no tokens (never true for a capture from a model).
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// The `[query, key]` pattern of one head.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`], [`Error::HeadOutOfRange`].
    pub fn head(&self, layer: usize, head: usize) -> Result<Array2<f32>> {
        let layer_pattern = self
            .patterns
            .get(layer)
            .ok_or(Error::LayerOutOfRange { layer, n_layers: self.n_layers() })?;
        if head >= self.n_heads() {
            return Err(Error::HeadOutOfRange { head, n_heads: self.n_heads() });
        }
        Ok(layer_pattern.index_axis(Axis(0), head).to_owned())
    }

    /// The head-averaged `[query, key]` pattern of each layer, in f64.
    pub fn head_means(&self) -> Vec<Array2<f64>> {
        self.patterns
            .iter()
            .map(|p| {
                let n = p.shape()[0].max(1) as f64;
                // Summed head by head into one f64 matrix (no f64 copy of every head).
                let (_, q, k) = p.dim();
                let mut sum = Array2::<f64>::zeros((q, k));
                for head in p.axis_iter(Axis(0)) {
                    ndarray::Zip::from(&mut sum).and(&head).for_each(|s, &v| *s += f64::from(v));
                }
                sum / n
            })
            .collect()
    }
}

/// Converts a `[a, b, c]` tensor to an f32 array.
pub(crate) fn tensor_to_array3(t: &Tensor) -> Result<Array3<f32>> {
    let size = t.size();
    if size.len() != 3 {
        return Err(Error::ShapeMismatch {
            what: "pattern".into(),
            expected: "[head, query, key]".into(),
            actual: size,
        });
    }
    let values: Vec<f32> =
        Vec::try_from(t.f_to_kind(Kind::Float)?.f_contiguous()?.f_flatten(0, -1)?)?;
    let shape = (size[0] as usize, size[1] as usize, size[2] as usize);
    Array3::from_shape_vec(shape, values)
        .map_err(|e| Error::invalid_argument(format!("pattern to array: {e}")))
}
