//! The configuration of the one hooked decoder: every way the supported families differ,
//! as enums matched in one place (the forward pass), never as flags scattered through it.
//!
//! A family is a constructor of [`DecoderConfig`] (see `families.rs`) plus a table of tensor
//! names; the forward pass exists once.

use explainability_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// How a normalisation layer scales its input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum NormKind {
    /// `w · (x / rms(x))`: normalised in f32 and cast back to the activation dtype before the
    /// weight multiplies (Llama, Mistral, Qwen, SmolLM2; Hugging Face `LlamaRMSNorm`).
    RmsNorm,
    /// `(x / rms(x)) · (offset + w)` entirely in f32, then cast back (Gemma's
    /// `Gemma3RMSNorm`). Hugging Face stores Gemma's weights zero-centred (`offset` 1);
    /// llama.cpp's GGUF converter already added the 1 (`offset` 0).
    RmsNormOffset {
        /// Added to the stored weight.
        offset: f64,
    },
    /// LayerNorm with weight and bias (GPT-2).
    LayerNorm,
}

/// Which elements RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RopePairing {
    /// Element `i` with element `i + d/2` (`rotate_half`; Hugging Face, GPT-NeoX, and
    /// llama.cpp's NEOX mode).
    Neox,
    /// Element `2i` with element `2i + 1` (GPT-J, llama.cpp's normal mode on the permuted
    /// rows of its Llama GGUFs).
    GptJ,
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Plain `1 / θ^(2i/d)`.
    None,
    /// Every frequency divided by `factor` (position interpolation; Gemma 3 4B+ global
    /// layers).
    Linear {
        /// Divisor of every frequency.
        factor: f64,
    },
    /// Llama 3.1's rule: wavelengths above `original_max_positions / low_freq_factor`
    /// divided by `factor`, below `original_max_positions / high_freq_factor` kept, smooth
    /// interpolation between (Hugging Face `_compute_llama3_parameters`).
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelength threshold divisor for the low frequencies.
        low_freq_factor: f64,
        /// Wavelength threshold divisor for the high frequencies.
        high_freq_factor: f64,
        /// Context length of pre-training.
        original_max_positions: f64,
    },
    /// One divisor per frequency, as llama.cpp stores them (`rope_freqs.weight`).
    Factors(Vec<f64>),
}

/// Rotary position embedding of one kind of layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rope {
    /// Base `θ`.
    pub theta: f64,
    /// Frequency rescaling.
    pub scaling: RopeScaling,
}

/// How positions enter the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Positions {
    /// A learned table added to the token embeddings (GPT-2).
    Learned,
    /// Rotary embeddings on queries and keys.
    Rotary {
        /// Pairing of rotated elements.
        pairing: RopePairing,
        /// Global (full-attention) layers.
        global: Rope,
        /// Sliding-window layers, when they differ (Gemma 3: θ 10 000, unscaled);
        /// `None`: as `global`.
        local: Option<Rope>,
    },
}

/// Whether a layer attends to the whole prefix or to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerAttention {
    /// Every earlier position.
    Global,
    /// The last `sliding_window` positions, the query's own included.
    Sliding,
}

/// Attention of every block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionConfig {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`: query head `h`
    /// reads kv head `h / (n_heads / n_kv_heads)`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub d_head: usize,
    /// Biases on the q, k and v projections (Qwen2, GPT-2).
    pub qkv_bias: bool,
    /// Bias on the output projection (GPT-2).
    pub o_bias: bool,
    /// RMSNorm of each query and key head before RoPE (Qwen3, Gemma 3), of the block's norm
    /// kind.
    pub qk_norm: bool,
    /// Multiplier of `q · k` (`1/√d_head` in most families; Gemma 3:
    /// `query_pre_attn_scalar^-½`).
    pub scale: f64,
    /// Soft-capping of the scores, `cap · tanh(s / cap)` (Gemma 2; `None` in Gemma 3).
    pub softcap: Option<f64>,
    /// Window of the sliding layers (keys including the query itself).
    pub sliding_window: Option<usize>,
    /// Per layer: global or sliding. Empty means every layer is global.
    pub layers: Vec<LayerAttention>,
}

/// The activation of an MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// SiLU (Swish).
    Silu,
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU.
    Gelu,
}

/// The MLP of every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlpKind {
    /// `down(act(gate(x)) ⊙ up(x))` (SwiGLU with SiLU; Gemma's GELU-tanh gated MLP).
    Gated(Activation),
    /// `out(act(in(x)))` (GPT-2).
    Plain(Activation),
}

/// Everything that shapes one decoder-only transformer.
///
/// # Examples
/// ```
/// use explain_models::{DecoderConfig, LlamaConfig};
/// let config: DecoderConfig = LlamaConfig {
///     n_layers: 2, n_heads: 4, n_kv_heads: 2, d_model: 32, d_head: 8, d_mlp: 48,
///     vocab_size: 100, max_positions: 64, rope_theta: 10_000.0, norm_eps: 1e-5,
///     tie_embeddings: true, attention_bias: false,
/// }.into();
/// config.validate()?;
/// # Ok::<(), explainability_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// Number of blocks.
    pub n_layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// MLP hidden width.
    pub d_mlp: usize,
    /// Rows of the embedding matrix.
    pub vocab_size: usize,
    /// Context window.
    pub max_positions: usize,
    /// Normalisation of every norm layer.
    pub norm: NormKind,
    /// Epsilon of every norm layer.
    pub norm_eps: f64,
    /// Norms after the attention and the MLP as well as before (Gemma 3's sandwich).
    pub sandwich_norms: bool,
    /// Positions.
    pub positions: Positions,
    /// Attention.
    pub attention: AttentionConfig,
    /// MLP.
    pub mlp: MlpKind,
    /// Biases on the MLP projections (GPT-2).
    pub mlp_bias: bool,
    /// Multiplier of the token embeddings, cast to the weights' dtype (Gemma: `√d_model`).
    pub embedding_scale: Option<f64>,
    /// Whether the LM head is the token embedding matrix.
    pub tie_embeddings: bool,
    /// Soft-capping of the logits, `cap · tanh(l / cap)`.
    pub final_softcap: Option<f64>,
}

impl DecoderConfig {
    /// Whether layer `layer` attends through a sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        self.attention.sliding_window.is_some()
            && self.attention.layers.get(layer) == Some(&LayerAttention::Sliding)
    }

    /// The RoPE of layer `layer`, `None` with learned positions.
    pub fn rope(&self, layer: usize) -> Option<&Rope> {
        match &self.positions {
            Positions::Learned => None,
            Positions::Rotary { global, local, .. } => {
                Some(if self.is_sliding(layer) { local.as_ref().unwrap_or(global) } else { global })
            }
        }
    }

    /// Checks internal consistency.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] describing the first problem.
    pub fn validate(&self) -> Result<()> {
        let a = &self.attention;
        crate::ops::require_positive(&[
            ("n_layers", self.n_layers),
            ("n_heads", a.n_heads),
            ("n_kv_heads", a.n_kv_heads),
            ("d_model", self.d_model),
            ("d_head", a.d_head),
            ("d_mlp", self.d_mlp),
            ("vocab_size", self.vocab_size),
            ("max_positions", self.max_positions),
        ])?;
        if !a.n_heads.is_multiple_of(a.n_kv_heads) {
            return Err(Error::invalid_config(format!(
                "n_heads ({}) must be a multiple of n_kv_heads ({})",
                a.n_heads, a.n_kv_heads
            )));
        }
        let finite_positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::invalid_config(format!("{name} must be positive and finite, got {v}")))
            }
        };
        if let Positions::Rotary { global, local, .. } = &self.positions {
            if !a.d_head.is_multiple_of(2) {
                return Err(Error::invalid_config(format!(
                    "d_head ({}) must be even for rotary embeddings",
                    a.d_head
                )));
            }
            for rope in std::iter::once(global).chain(local) {
                finite_positive("rope theta", rope.theta)?;
                match &rope.scaling {
                    RopeScaling::None => {}
                    RopeScaling::Linear { factor } => {
                        finite_positive("rope scaling factor", *factor)?
                    }
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor,
                        high_freq_factor,
                        original_max_positions,
                    } => {
                        finite_positive("rope scaling factor", *factor)?;
                        finite_positive("low_freq_factor", *low_freq_factor)?;
                        finite_positive("high_freq_factor", *high_freq_factor)?;
                        finite_positive(
                            "original_max_position_embeddings",
                            *original_max_positions,
                        )?;
                        if high_freq_factor <= low_freq_factor {
                            return Err(Error::invalid_config(format!(
                                "llama3 rope scaling needs high_freq_factor ({high_freq_factor}) \
                                 above low_freq_factor ({low_freq_factor})"
                            )));
                        }
                    }
                    RopeScaling::Factors(factors) => {
                        if factors.len() != a.d_head / 2 {
                            return Err(Error::invalid_config(format!(
                                "{} rope frequency factors for {} frequencies",
                                factors.len(),
                                a.d_head / 2
                            )));
                        }
                        for &f in factors {
                            finite_positive("rope frequency factor", f)?;
                        }
                    }
                }
            }
        }
        finite_positive("attention scale", a.scale)?;
        if let Some(cap) = a.softcap {
            finite_positive("attention softcap", cap)?;
        }
        if let Some(cap) = self.final_softcap {
            finite_positive("final logit softcap", cap)?;
        }
        if let Some(scale) = self.embedding_scale {
            finite_positive("embedding scale", scale)?;
        }
        if a.sliding_window == Some(0) {
            return Err(Error::invalid_config("sliding_window must be positive (got 0)"));
        }
        if !a.layers.is_empty() && a.layers.len() != self.n_layers {
            return Err(Error::invalid_config(format!(
                "{} per-layer attention kinds for {} layers",
                a.layers.len(),
                self.n_layers
            )));
        }
        if a.sliding_window.is_none() && a.layers.contains(&LayerAttention::Sliding) {
            return Err(Error::invalid_config("sliding layers without a sliding_window"));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return Err(Error::invalid_config(format!(
                "norm_eps must be ≥ 0, got {}",
                self.norm_eps
            )));
        }
        if let NormKind::RmsNormOffset { offset } = self.norm
            && !offset.is_finite()
        {
            return Err(Error::invalid_config(format!("norm offset must be finite, got {offset}")));
        }
        if matches!(self.positions, Positions::Learned) && self.norm != NormKind::LayerNorm {
            // Not wrong in itself, but no supported family does it: catch mixed-up configs.
            return Err(Error::invalid_config(
                "learned positions are only supported with LayerNorm (the GPT-2 layout)",
            ));
        }
        Ok(())
    }
}

/// The dimensions of a Llama-family model (Llama, SmolLM2, Mistral, Qwen2): a convenient
/// constructor of [`DecoderConfig`] with RMSNorm, half-split RoPE, SwiGLU, no sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Number of blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Residual width.
    pub d_model: usize,
    /// Head width.
    pub d_head: usize,
    /// MLP hidden width.
    pub d_mlp: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context window.
    pub max_positions: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
    /// Whether the LM head reuses the token embedding matrix.
    pub tie_embeddings: bool,
    /// Whether q/k/v projections carry biases (Qwen2).
    pub attention_bias: bool,
}

impl From<LlamaConfig> for DecoderConfig {
    fn from(c: LlamaConfig) -> Self {
        DecoderConfig {
            n_layers: c.n_layers,
            d_model: c.d_model,
            d_mlp: c.d_mlp,
            vocab_size: c.vocab_size,
            max_positions: c.max_positions,
            norm: NormKind::RmsNorm,
            norm_eps: c.norm_eps,
            sandwich_norms: false,
            positions: Positions::Rotary {
                pairing: RopePairing::Neox,
                global: Rope { theta: c.rope_theta, scaling: RopeScaling::None },
                local: None,
            },
            attention: AttentionConfig {
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                d_head: c.d_head,
                qkv_bias: c.attention_bias,
                o_bias: false,
                qk_norm: false,
                scale: (c.d_head.max(1) as f64).powf(-0.5),
                softcap: None,
                sliding_window: None,
                layers: Vec::new(),
            },
            mlp: MlpKind::Gated(Activation::Silu),
            mlp_bias: false,
            embedding_scale: None,
            tie_embeddings: c.tie_embeddings,
            final_softcap: None,
        }
    }
}

/// The dimensions of a GPT-2 model: a constructor of [`DecoderConfig`] with LayerNorm,
/// learned positions, biases everywhere, plain GELU-tanh MLP and a tied head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Number of blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Residual width.
    pub d_model: usize,
    /// MLP hidden width (`4 · d_model` unless `n_inner` says otherwise).
    pub d_mlp: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Learned positions.
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
}

impl From<Gpt2Config> for DecoderConfig {
    fn from(c: Gpt2Config) -> Self {
        let d_head = if c.n_heads > 0 && c.d_model.is_multiple_of(c.n_heads) {
            c.d_model / c.n_heads
        } else {
            0 // refused by validate
        };
        DecoderConfig {
            n_layers: c.n_layers,
            d_model: c.d_model,
            d_mlp: c.d_mlp,
            vocab_size: c.vocab_size,
            max_positions: c.max_positions,
            norm: NormKind::LayerNorm,
            norm_eps: c.norm_eps,
            sandwich_norms: false,
            positions: Positions::Learned,
            attention: AttentionConfig {
                n_heads: c.n_heads,
                n_kv_heads: c.n_heads,
                d_head,
                qkv_bias: true,
                o_bias: true,
                qk_norm: false,
                scale: (d_head.max(1) as f64).powf(-0.5),
                softcap: None,
                sliding_window: None,
                layers: Vec::new(),
            },
            mlp: MlpKind::Plain(Activation::GeluTanh),
            mlp_bias: true,
            embedding_scale: None,
            tie_embeddings: true,
            final_softcap: None,
        }
    }
}
