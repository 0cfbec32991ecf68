//! The supported decoder families: for each, the constructor of its [`DecoderConfig`] from a
//! Hugging Face `config.json` and from GGUF metadata, its weight-name tables, and the few
//! tensor conversions its files need (GPT-2's fused `c_attn`, llama.cpp's Q/K row
//! permutation).
//!
//! Adding a family: a [`Family`] variant, its names in [`Family::from_hf_model_type`] /
//! [`Family::from_gguf_architecture`], a config constructor here, a name table in
//! `names.rs` if its keys differ, and tests (see docs/models.md).

use explainability_core::{Architecture, Error, Result};
use serde_json::Value;
use tch::Tensor;

use super::config::{
    Activation, DecoderConfig, Gpt2Config, LayerAttention, LlamaConfig, MlpKind, NormKind,
    Positions, Rope, RopePairing, RopeScaling,
};
use super::names::WeightNames;
use crate::gguf::GgufFile;
use crate::hf::HfConfig;
use crate::weights::Checkpoint;

/// Every family [`crate::load`] accepts, for error messages.
pub const SUPPORTED_FAMILIES: &str = "llama (Llama 2/3.x, SmolLM2), mistral, qwen2, qwen3, \
                                      gemma3 (gemma3_text), gpt2 (Hugging Face only), bert \
                                      (Hugging Face only)";

/// RoPE scaling rules the decoder implements.
const SUPPORTED_ROPE_SCALING: &str = "default, linear, llama3";

/// A supported decoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama 2, Llama 3.x, SmolLM2 and other Llama-layout models.
    Llama,
    /// Mistral (Llama layout, optional sliding window).
    Mistral,
    /// Qwen2 / 2.5 (biases on q, k, v).
    Qwen2,
    /// Qwen3 (q/k norms, explicit head width).
    Qwen3,
    /// Gemma 3 text models.
    Gemma3,
    /// GPT-2.
    Gpt2,
}

impl Family {
    /// The family of a Hugging Face `model_type`.
    pub fn from_hf_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma3_text" => Family::Gemma3,
            "gpt2" => Family::Gpt2,
            _ => return None,
        })
    }

    /// The family of a GGUF `general.architecture`.
    pub fn from_gguf_architecture(architecture: &str) -> Option<Self> {
        Some(match architecture {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma3" => Family::Gemma3,
            _ => return None,
        })
    }

    /// The architecture reported in [`explainability_core::ModelInfo`].
    pub fn architecture(self) -> Architecture {
        match self {
            Family::Llama => Architecture::Llama,
            Family::Mistral => Architecture::Mistral,
            Family::Qwen2 => Architecture::Qwen2,
            Family::Qwen3 => Architecture::Qwen3,
            Family::Gemma3 => Architecture::Gemma3,
            Family::Gpt2 => Architecture::Gpt2,
        }
    }

    /// The configuration a Hugging Face `config.json` describes.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`] for absent or mistyped fields,
    /// [`Error::UnsupportedRopeScaling`], [`Error::InvalidConfig`].
    pub fn config_from_hf(self, hf: &HfConfig) -> Result<DecoderConfig> {
        let config = match self {
            Family::Gpt2 => {
                let d_model = hf.usize("n_embd")?;
                if let Some(act) = hf.opt_str("activation_function")?
                    && !matches!(act, "gelu_new" | "gelu_pytorch_tanh")
                {
                    return Err(Error::invalid_config(format!(
                        "GPT-2 activation {act:?} is not supported (gelu_new)"
                    )));
                }
                Gpt2Config {
                    n_layers: hf.usize("n_layer")?,
                    n_heads: hf.usize("n_head")?,
                    d_model,
                    d_mlp: hf.opt_usize("n_inner")?.unwrap_or(4 * d_model),
                    vocab_size: hf.usize("vocab_size")?,
                    max_positions: hf.usize("n_positions")?,
                    norm_eps: hf.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
                }
                .into()
            }
            Family::Gemma3 => gemma3_from_hf(hf)?,
            Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => {
                llama_like_from_hf(self, hf)?
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// The configuration GGUF metadata describes (`{arch}.block_count`, …), with llama.cpp's
    /// conventions for what the file does not store (Gemma 3's layer pattern, local RoPE
    /// base and attention scale).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`], [`Error::MissingWeight`] (no `token_embd.weight`),
    /// [`Error::UnsupportedRopeScaling`], [`Error::InvalidConfig`], GGUF errors.
    pub fn config_from_gguf(self, file: &GgufFile) -> Result<DecoderConfig> {
        let arch = file.architecture()?.to_owned();
        let key = |k: &str| format!("{arch}.{k}");
        let n_heads = file.get_u32(&key("attention.head_count"))? as usize;
        let d_model = file.get_u32(&key("embedding_length"))? as usize;
        if n_heads == 0 {
            return Err(Error::invalid_config("attention.head_count must be positive"));
        }
        let n_kv_heads =
            file.opt_u32(&key("attention.head_count_kv"))?.map_or(n_heads, |v| v as usize);
        let d_head = match file.opt_u32(&key("attention.key_length"))? {
            Some(v) => v as usize,
            None => d_model / n_heads,
        };
        let embed_rows = file
            .tensor_info("token_embd.weight")
            .map(|t| t.shape().first().copied().unwrap_or(0))
            .ok_or_else(|| Error::MissingWeight { name: "token_embd.weight".into() })?;
        let vocab_size = match file.opt_u32(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => usize::try_from(embed_rows).unwrap_or(0),
        };
        let n_layers = file.get_u32(&key("block_count"))? as usize;
        let theta = f64::from(file.opt_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0));
        let scaling = match file.opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: f64::from(file.get_f32(&key("rope.scaling.factor"))?),
            },
            Some(other) => {
                return Err(Error::UnsupportedRopeScaling {
                    name: other.to_owned(),
                    supported: "none, linear (and llama.cpp's rope_freqs factors)".into(),
                });
            }
        };
        // llama.cpp writes Llama 3.1's rule as one divisor per frequency.
        let scaling = if file.tensor_info("rope_freqs.weight").is_some() {
            let factors = file.tensor_f32("rope_freqs.weight")?;
            RopeScaling::Factors(factors.into_iter().map(f64::from).collect())
        } else {
            scaling
        };
        let mut config: DecoderConfig = LlamaConfig {
            n_layers,
            n_heads,
            n_kv_heads,
            d_model,
            d_head,
            d_mlp: file.get_u32(&key("feed_forward_length"))? as usize,
            vocab_size,
            max_positions: file.get_u32(&key("context_length"))? as usize,
            rope_theta: theta,
            norm_eps: f64::from(file.get_f32(&key("attention.layer_norm_rms_epsilon"))?),
            tie_embeddings: file.tensor_info("output.weight").is_none(),
            attention_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
        }
        .into();
        config.attention.o_bias = file.tensor_info("blk.0.attn_output.bias").is_some();
        if let Positions::Rotary { global, .. } = &mut config.positions {
            global.scaling = scaling;
        }
        let window = file.opt_u32(&key("attention.sliding_window"))?.map(|w| w as usize);
        match self {
            Family::Llama | Family::Qwen2 => {}
            Family::Mistral => {
                if let Some(window) = window {
                    config.attention.sliding_window = Some(window);
                    config.attention.layers = vec![LayerAttention::Sliding; n_layers];
                }
            }
            Family::Qwen3 => config.attention.qk_norm = true,
            Family::Gemma3 => {
                // llama.cpp `LLM_ARCH_GEMMA3`: norms stored with the +1 already added; no Q/K
                // permutation; SWA on layers with il % 6 < 5; local θ 10 000 unscaled;
                // attention scale 1/√d_head except the 27B (62 layers): 1/√(d_model/n_heads).
                config.norm = NormKind::RmsNormOffset { offset: 0.0 };
                config.sandwich_norms = true;
                config.attention.qk_norm = true;
                config.mlp = MlpKind::Gated(Activation::GeluTanh);
                config.embedding_scale = Some((d_model as f64).sqrt());
                let scale_dim = if n_layers == 62 { d_model / n_heads } else { d_head };
                config.attention.scale = (scale_dim.max(1) as f64).powf(-0.5);
                config.attention.softcap =
                    file.opt_f32(&key("attn_logit_softcapping"))?.map(f64::from);
                config.final_softcap =
                    file.opt_f32(&key("final_logit_softcapping"))?.map(f64::from);
                // Newer llama.cpp disables SWA when the key is missing; 0 is refused by
                // validate (a window of no keys).
                if let Some(window) = window {
                    config.attention.sliding_window = Some(window);
                    config.attention.layers = (0..n_layers)
                        .map(|l| {
                            if l % 6 < 5 { LayerAttention::Sliding } else { LayerAttention::Global }
                        })
                        .collect();
                }
                if let Positions::Rotary { local, .. } = &mut config.positions {
                    *local = Some(Rope { theta: 10_000.0, scaling: RopeScaling::None });
                }
            }
            Family::Gpt2 => {
                return Err(Error::UnsupportedArchitecture {
                    name: format!("{arch} (GGUF)"),
                    supported: SUPPORTED_FAMILIES.into(),
                });
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Adapts a GGUF checkpoint to the decoder: undoes llama.cpp's Q/K row permutation where
    /// its converter applied one (the `llama` and `mistral` architectures: the families it
    /// runs with NEOX RoPE keep Hugging Face's order), and drops the rotary factor table the
    /// config has already read. The permutation runs when a tensor is taken, and its errors
    /// surface there.
    pub(crate) fn prepare_gguf(self, ckpt: &mut Checkpoint, config: &DecoderConfig) {
        ckpt.ignore_suffix("rope_freqs.weight");
        if !matches!(self, Family::Llama | Family::Mistral) {
            return;
        }
        let (n_heads, n_kv) = (config.attention.n_heads, config.attention.n_kv_heads);
        for layer in 0..config.n_layers {
            for (part, heads) in [("attn_q", n_heads), ("attn_k", n_kv)] {
                for suffix in ["weight", "bias"] {
                    ckpt.transform(&format!("blk.{layer}.{part}.{suffix}"), move |t| {
                        unpermute_rope_rows(&t, heads)
                    });
                }
            }
        }
    }

    /// The key names of this family's Hugging Face checkpoints, adapting GPT-2's fused
    /// `Conv1D` weights (`[in, out]`, q/k/v in one tensor) to separate `[out, in]` ones.
    ///
    /// # Errors
    /// [`Error::MissingWeight`] / [`Error::WeightShape`] for a malformed `c_attn`.
    pub(crate) fn prepare_hf(
        self,
        ckpt: &mut Checkpoint,
        config: &DecoderConfig,
    ) -> Result<WeightNames> {
        ckpt.ignore_suffix("rotary_emb.inv_freq");
        Ok(match self {
            Family::Gemma3 => WeightNames::HfGemma3,
            Family::Gpt2 => {
                // Old GPT-2 files carry the causal mask as a buffer.
                ckpt.ignore_suffix(".attn.bias");
                ckpt.ignore_suffix(".attn.masked_bias");
                let prefixed = ckpt.contains("transformer.wte.weight");
                let prefix = if prefixed { "transformer." } else { "" };
                let d = config.d_model as i64;
                for l in 0..config.n_layers {
                    let p = format!("{prefix}h.{l}.");
                    // Conv1D weights are [in, out]: transpose to the [out, in] of Linear.
                    for name in ["attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"] {
                        let key = format!("{p}{name}");
                        if ckpt.contains(&key) {
                            let t = ckpt.take_any(&key, tch::Kind::Float)?;
                            ckpt.insert(key, t.f_tr()?.f_contiguous()?);
                        }
                    }
                    for (suffix, fused) in [("weight", vec![d, 3 * d]), ("bias", vec![3 * d])] {
                        let key = format!("{p}attn.c_attn.{suffix}");
                        let Some(shape) = ckpt.shape(&key) else { continue };
                        if shape != fused {
                            return Err(Error::WeightShape {
                                name: key,
                                expected: fused,
                                actual: shape,
                            });
                        }
                        let t = ckpt.take_any(&key, tch::Kind::Float)?;
                        for (i, part) in ["q", "k", "v"].iter().enumerate() {
                            let slice = t.f_narrow(-1, i as i64 * d, d)?;
                            let slice = if suffix == "weight" { slice.f_tr()? } else { slice };
                            ckpt.insert(format!("{key}#{part}"), slice.f_contiguous()?);
                        }
                    }
                }
                WeightNames::HfGpt2 { prefixed }
            }
            Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => WeightNames::HfLlama,
        })
    }
}

/// The Llama-layout dimensions every `config.json` of the Llama lineage spells the same way,
/// with the family's defaults for what it may leave out.
struct HfDefaults {
    /// `head_dim` when absent (`None`: d_model / n_heads).
    d_head: Option<usize>,
    rope_theta: f64,
    tie_embeddings: bool,
    attention_bias: bool,
    /// The `config.json` key of the activation and the one value supported.
    activation: (&'static str, &'static str),
}

fn llama_dims(family: Family, hf: &HfConfig, defaults: &HfDefaults) -> Result<LlamaConfig> {
    let d_model = hf.usize("hidden_size")?;
    let n_heads = hf.usize("num_attention_heads")?;
    if n_heads == 0 {
        return Err(Error::invalid_config("num_attention_heads must be positive"));
    }
    let (key, supported) = defaults.activation;
    if let Some(act) = hf.opt_str(key)?
        && act != supported
    {
        return Err(Error::invalid_config(format!(
            "{family:?} activation {act:?} is not supported ({supported})"
        )));
    }
    Ok(LlamaConfig {
        n_layers: hf.usize("num_hidden_layers")?,
        n_heads,
        n_kv_heads: hf.opt_usize("num_key_value_heads")?.unwrap_or(n_heads),
        d_model,
        d_head: hf.opt_usize("head_dim")?.or(defaults.d_head).unwrap_or(d_model / n_heads),
        d_mlp: hf.usize("intermediate_size")?,
        vocab_size: hf.usize("vocab_size")?,
        max_positions: hf.usize("max_position_embeddings")?,
        rope_theta: defaults.rope_theta,
        norm_eps: hf.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        tie_embeddings: hf.opt_bool("tie_word_embeddings")?.unwrap_or(defaults.tie_embeddings),
        attention_bias: hf.opt_bool("attention_bias")?.unwrap_or(defaults.attention_bias),
    })
}

/// Llama, Mistral, Qwen2 and Qwen3 from `config.json`.
fn llama_like_from_hf(family: Family, hf: &HfConfig) -> Result<DecoderConfig> {
    let defaults = HfDefaults {
        d_head: None,
        rope_theta: 10_000.0,
        tie_embeddings: false,
        // Qwen2 always has q/k/v biases (its modeling code hard-codes them).
        attention_bias: family == Family::Qwen2,
        activation: ("hidden_act", "silu"),
    };
    let dims = llama_dims(family, hf, &defaults)?;
    let n_layers = dims.n_layers;
    let attention_bias = hf.opt_bool("attention_bias")?;
    let mut config: DecoderConfig = dims.into();
    // Llama, Mistral and Qwen3 put `attention_bias` on the output projection too; Qwen2 not.
    config.attention.o_bias = family != Family::Qwen2 && attention_bias.unwrap_or(false);
    config.mlp_bias = hf.opt_bool("mlp_bias")?.unwrap_or(false);
    config.attention.qk_norm = family == Family::Qwen3;
    let rope = rope_from_hf(hf.get("rope_parameters").or(hf.get("rope_scaling")), hf, 10_000.0)?;
    if let Positions::Rotary { global, .. } = &mut config.positions {
        *global = rope;
    }
    let window = hf.opt_usize("sliding_window")?;
    let uses_window = match family {
        Family::Mistral => window.is_some(),
        Family::Qwen2 | Family::Qwen3 => hf.opt_bool("use_sliding_window")?.unwrap_or(false),
        _ => false,
    };
    if uses_window {
        config.attention.sliding_window = window;
        config.attention.layers = match layer_types(hf, n_layers)? {
            Some(types) => types,
            None => vec![LayerAttention::Sliding; n_layers],
        };
    }
    Ok(config)
}

/// Gemma 3 (text) from `config.json` (transformers 4.5x and 5.x spellings).
fn gemma3_from_hf(hf: &HfConfig) -> Result<DecoderConfig> {
    let defaults = HfDefaults {
        d_head: Some(256),
        rope_theta: 1_000_000.0,
        tie_embeddings: true,
        attention_bias: false,
        activation: ("hidden_activation", "gelu_pytorch_tanh"),
    };
    let dims = llama_dims(Family::Gemma3, hf, &defaults)?;
    let (n_layers, d_model) = (dims.n_layers, dims.d_model);
    let mut config: DecoderConfig = dims.into();
    config.attention.o_bias = config.attention.qkv_bias;
    config.norm = NormKind::RmsNormOffset { offset: 1.0 };
    config.sandwich_norms = true;
    config.attention.qk_norm = true;
    config.mlp = MlpKind::Gated(Activation::GeluTanh);
    config.embedding_scale = Some((d_model as f64).sqrt());
    let scalar = hf.opt_f64("query_pre_attn_scalar")?.unwrap_or(256.0);
    config.attention.scale = scalar.powf(-0.5);
    config.attention.softcap = hf.opt_f64("attn_logit_softcapping")?;
    config.final_softcap = hf.opt_f64("final_logit_softcapping")?;
    config.attention.sliding_window = hf.opt_usize("sliding_window")?;
    let types = match layer_types(hf, n_layers)? {
        Some(types) => types,
        None => {
            let pattern = hf.opt_usize("sliding_window_pattern")?.unwrap_or(6).max(1);
            (0..n_layers)
                .map(|i| {
                    if (i + 1) % pattern != 0 {
                        LayerAttention::Sliding
                    } else {
                        LayerAttention::Global
                    }
                })
                .collect()
        }
    };
    if config.attention.sliding_window.is_some() {
        config.attention.layers = types;
    }
    // transformers 5.x: rope_parameters = {full_attention: {…}, sliding_attention: {…}};
    // 4.5x: rope_theta, rope_local_base_freq and rope_scaling (global layers only).
    let params = hf.get("rope_parameters");
    let (global, local) = match params.and_then(|p| p.get("full_attention")) {
        Some(full) => (
            rope_from_hf(Some(full), hf, 1_000_000.0)?,
            rope_from_json(params.and_then(|p| p.get("sliding_attention")), 10_000.0)?,
        ),
        None => (
            rope_from_hf(hf.get("rope_scaling"), hf, 1_000_000.0)?,
            Rope {
                theta: hf.opt_f64("rope_local_base_freq")?.unwrap_or(10_000.0),
                scaling: RopeScaling::None,
            },
        ),
    };
    config.positions = Positions::Rotary { pairing: RopePairing::Neox, global, local: Some(local) };
    Ok(config)
}

/// `layer_types` (`"full_attention"` / `"sliding_attention"`), if present.
fn layer_types(hf: &HfConfig, n_layers: usize) -> Result<Option<Vec<LayerAttention>>> {
    let Some(types) = hf.get("layer_types") else { return Ok(None) };
    let bad = || Error::MissingMetadata {
        key: "layer_types in config.json".into(),
        expected: format!("{n_layers} of \"full_attention\" / \"sliding_attention\""),
    };
    let list = types.as_array().ok_or_else(bad)?;
    if list.len() != n_layers {
        return Err(bad());
    }
    list.iter()
        .map(|t| match t.as_str() {
            Some("full_attention") => Ok(LayerAttention::Global),
            Some("sliding_attention") => Ok(LayerAttention::Sliding),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A RoPE from a `rope_parameters` / `rope_scaling` object, with θ from it or from the
/// config's top-level `rope_theta`.
fn rope_from_hf(params: Option<&Value>, hf: &HfConfig, default_theta: f64) -> Result<Rope> {
    let theta = hf.opt_f64("rope_theta")?.unwrap_or(default_theta);
    rope_from_json(params, theta)
}

fn rope_from_json(params: Option<&Value>, default_theta: f64) -> Result<Rope> {
    let Some(params) = params.filter(|p| !p.is_null()) else {
        return Ok(Rope { theta: default_theta, scaling: RopeScaling::None });
    };
    let number = |key: &str| params.get(key).and_then(Value::as_f64);
    let required = |key: &str| {
        number(key).ok_or_else(|| Error::MissingMetadata {
            key: format!("rope scaling field {key}"),
            expected: "a number".into(),
        })
    };
    let theta = number("rope_theta").unwrap_or(default_theta);
    let kind = params
        .get("rope_type")
        .or_else(|| params.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: required("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: required("factor")?,
            low_freq_factor: required("low_freq_factor")?,
            high_freq_factor: required("high_freq_factor")?,
            original_max_positions: required("original_max_position_embeddings")?,
        },
        other => {
            return Err(Error::UnsupportedRopeScaling {
                name: other.to_owned(),
                supported: SUPPORTED_ROPE_SCALING.into(),
            });
        }
    };
    Ok(Rope { theta, scaling })
}

/// Undoes llama.cpp's row permutation of attn_q / attn_k weights (Hugging Face's
/// `reverse_permute_weights`): rows grouped per head as (half, pair) go back to (pair, half).
fn unpermute_rope_rows(w: &Tensor, n_head: usize) -> Result<Tensor> {
    let shape = w.size();
    let rows = shape.first().copied().unwrap_or(0);
    let n_head = n_head as i64;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        return Err(Error::invalid_config(format!(
            "attention weight with {rows} rows cannot be split into {n_head} rotary heads"
        )));
    }
    let half = rows / n_head / 2;
    let mut view = vec![n_head, half, 2];
    view.extend_from_slice(&shape[1..]);
    Ok(w.f_reshape(&view)?.f_transpose(1, 2)?.f_contiguous()?.f_reshape(&shape)?)
}
