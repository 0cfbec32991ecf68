//! A network with its tokenizer: the one [`LanguageModel`] implementation, shared by the
//! decoder of every family ([`crate::DecoderModel`]) and by BERT encoders
//! ([`crate::BertModel`]).

use explainability_core::{
    BackwardMemory, BlockwiseForward, Error, ForwardOptions, HookKind, HookPoint, Hooks,
    LanguageModel, ModelInfo, ModelOutput, NormScale, Result,
};
use tch::{Device, Kind, Tensor};

use crate::tokenizer::TextTokenizer;

/// What a transformer offers to [`TokenizedModel`]: embedding, the hooked forward pass, the
/// head and its parameters.
pub trait Network: std::fmt::Debug {
    /// Floating-point kind of the weights.
    fn kind(&self) -> Kind;
    /// Device of the weights.
    fn device(&self) -> Device;
    /// `[batch, pos]` ids → `[batch, pos, d_model]` embeddings.
    ///
    /// # Errors
    /// Shape, length and vocabulary errors.
    fn embed(&self, ids: &Tensor) -> Result<Tensor>;
    /// The forward pass from embeddings, firing hook points.
    ///
    /// # Errors
    /// Shape errors and whatever a hook returns.
    fn forward(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput>;
    /// Final hidden states → f32 logits.
    ///
    /// # Errors
    /// [`Error::NoHead`] for a network without one; shape errors.
    fn unembed(&self, hidden: &Tensor) -> Result<Tensor>;
    /// Parameters by canonical name, sharing storage with the network.
    fn named_parameters(&self) -> Vec<(String, Tensor)>;
    /// The final normalisation before the head (see [`LanguageModel::final_norm`]); `None`
    /// for a network without one.
    ///
    /// # Errors
    /// Shape errors.
    fn final_norm(&self, residual: &Tensor, scale: NormScale<'_>) -> Option<Result<Tensor>> {
        let _ = (residual, scale);
        None
    }
    /// The normalisation whose output fires `point` (see [`LanguageModel::norm_at`]); the
    /// default knows the final norm only.
    ///
    /// # Errors
    /// As [`LanguageModel::norm_at`].
    fn norm_at(
        &self,
        point: HookPoint,
        input: &Tensor,
        scale: NormScale<'_>,
    ) -> Option<Result<Tensor>> {
        if point.kind() == HookKind::LnFinal { self.final_norm(input, scale) } else { None }
    }
    /// How gradient methods differentiate the network (see [`LanguageModel::backward_memory`]).
    fn backward_memory(&self) -> BackwardMemory {
        BackwardMemory::Stored
    }
    /// Whether [`Network::forward`] takes and returns keys and values
    /// (see [`LanguageModel::supports_key_value_cache`]).
    fn supports_key_value_cache(&self) -> bool {
        false
    }

    /// The forward pass as separate stages (see [`LanguageModel::blockwise`]); `None` for a
    /// network that cannot run its blocks separately.
    ///
    /// # Errors
    /// Shape and length errors.
    fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<Option<Box<dyn BlockwiseForward + 'a>>> {
        let _ = (embeddings, options);
        Ok(None)
    }
}

/// A network with its tokenizer and facts.
#[derive(Debug)]
pub struct TokenizedModel<N> {
    pub(crate) network: N,
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) info: ModelInfo,
}

impl<N: Network> TokenizedModel<N> {
    /// The network (`Decoder` or `Bert`).
    pub fn transformer(&self) -> &N {
        &self.network
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn check_ids(&self, ids: &[i64]) -> Result<()> {
        let vocab = self.tokenizer.vocab_size();
        match ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            Some(&id) => Err(Error::TokenOutOfRange { id, vocab_size: vocab }),
            None => Ok(()),
        }
    }
}

impl<N: Network> LanguageModel for TokenizedModel<N> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> Device {
        self.network.device()
    }

    fn kind(&self) -> Kind {
        self.network.kind()
    }

    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let ids = self.tokenizer.encode(text, add_special_tokens)?;
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        Ok(ids)
    }

    fn decode(&self, ids: &[i64]) -> Result<String> {
        self.check_ids(ids)?;
        self.tokenizer.decode(ids, false)
    }

    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.check_ids(ids)?;
        self.tokenizer.token_strings(ids)
    }

    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.network.embed(ids)
    }

    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        if (options.past_key_values.is_some() || options.return_key_values)
            && !self.network.supports_key_value_cache()
        {
            return Err(Error::UnsupportedOperation {
                model: self.info.name.clone(),
                operation: crate::bert::KV_CACHE_OPERATION.into(),
            });
        }
        self.network.forward(embeddings, options, hooks)
    }

    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        // Name the model in a missing-head error.
        self.network.unembed(final_hidden).map_err(|e| match e {
            Error::NoHead { head, .. } => Error::NoHead { model: self.info.name.clone(), head },
            other => other,
        })
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.network.named_parameters()
    }

    fn supports_key_value_cache(&self) -> bool {
        self.network.supports_key_value_cache()
    }

    fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<Option<Box<dyn BlockwiseForward + 'a>>> {
        self.network.blockwise(embeddings, options)
    }

    fn backward_memory(&self) -> BackwardMemory {
        self.network.backward_memory()
    }

    fn final_norm(&self, residual: &Tensor, scale: NormScale<'_>) -> Result<Tensor> {
        self.network.final_norm(residual, scale).unwrap_or_else(|| {
            Err(Error::UnsupportedOperation {
                model: self.info.name.clone(),
                operation: "final_norm".into(),
            })
        })
    }

    fn norm_at(&self, point: HookPoint, input: &Tensor, scale: NormScale<'_>) -> Result<Tensor> {
        self.network.norm_at(point, input, scale).unwrap_or_else(|| {
            Err(Error::UnsupportedOperation {
                model: self.info.name.clone(),
                operation: format!("a normalisation at {point}"),
            })
        })
    }
}
