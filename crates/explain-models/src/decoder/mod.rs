//! The one hooked decoder: a decoder-only transformer whose every variant (norms, positions,
//! attention, MLP, sandwich norms, biases, embedding scale, tied head) comes from a
//! [`DecoderConfig`]. Llama, SmolLM2, Mistral, Qwen2, Qwen3, Llama 3.x, Gemma 3 and GPT-2 are
//! configurations of it (`families.rs`), not copies of it.
//!
//! Every activation site of DESIGN.md fires a hook, with the same names for every family;
//! sandwich-norm families (Gemma 3) also fire `blocks.{l}.ln1_post.hook_normalized` and
//! `blocks.{l}.ln2_post.hook_normalized`, and their `hook_attn_out` / `hook_mlp_out` see the
//! post-normed outputs, i.e. exactly what is added to the residual stream. Attention takes
//! libtorch's fused kernel only when no hook wants the scores or the pattern and no
//! soft-capping applies; otherwise the explicit path computes scores → pattern → z as named
//! steps and the pattern hook sees real probabilities.

mod config;
pub(crate) mod families;
mod names;
mod rope;

use std::collections::HashMap;

use explainability_core::{
    BackwardMemory, BlockwiseForward, Error, ForwardOptions, HookKind, HookPoint, Hooks,
    KeyValueCache, LayerKeyValues, ModelOutput, NormScale, RelevanceRule, Result, SplitMix64,
    check_positions,
};
use tch::{Device, Kind, Tensor};

pub use config::{
    Activation, AttentionConfig, DecoderConfig, Gpt2Config, LayerAttention, LlamaConfig, MlpKind,
    NormKind, Positions, Rope, RopePairing, RopeScaling,
};
pub use families::Family;
pub use names::WeightNames;

use crate::device_map::{ModelFootprint, Placement};
use crate::loader::{LoadOptions, Weights};
use crate::ops::{checked_ids, embedding, min_value};
use crate::weights::{Checkpoint, Weight};
use names::{BlockParam, Param};
use rope::RopeTable;

/// Values of a streamed head dequantised at a time (16 MiB in f32): the logits are computed a
/// slice of vocabulary rows at a time, so a forward pass without gradients never holds the
/// whole dequantised head.
const HEAD_CHUNK_ELEMENTS: i64 = 1 << 22;

/// A projection in torch layout: `w` is `[out, in]`.
#[derive(Debug)]
struct Linear {
    w: Weight,
    b: Option<Tensor>,
}

impl Linear {
    /// `x · wᵀ + b`. A streamed `w` is dequantised here and lives only as long as this
    /// product needs it: until the end of the call without gradients, or until the backward
    /// pass through the product frees its graph (the product saves `w` to pass gradients to
    /// `x`).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.w.tensor()?;
        let y = x.f_matmul(&w.f_tr()?)?;
        Ok(match &self.b {
            Some(b) => y.f_add(b)?,
            None => y,
        })
    }

    fn move_to(&mut self, device: Device) -> Result<()> {
        self.w.move_to(device)?;
        self.b = self.b.as_ref().map(|b| b.f_to_device(device)).transpose()?;
        Ok(())
    }

    fn bytes(&self) -> u64 {
        self.w.bytes() + self.b.as_ref().map_or(0, tensor_bytes)
    }
}

/// A normalisation layer's parameters (`b` only for LayerNorm).
#[derive(Debug)]
struct Norm {
    w: Tensor,
    b: Option<Tensor>,
}

impl Norm {
    fn move_to(&mut self, device: Device) -> Result<()> {
        self.w = self.w.f_to_device(device)?;
        self.b = self.b.as_ref().map(|b| b.f_to_device(device)).transpose()?;
        Ok(())
    }

    fn bytes(&self) -> u64 {
        tensor_bytes(&self.w) + self.b.as_ref().map_or(0, tensor_bytes)
    }
}

/// Bytes of a tensor's elements.
fn tensor_bytes(t: &Tensor) -> u64 {
    t.numel() as u64 * t.kind().elt_size_in_bytes() as u64
}

/// Applies a norm of `kind` over the last dimension of `x`.
fn normalize(x: &Tensor, norm: &Norm, kind: NormKind, eps: f64) -> Result<Tensor> {
    match kind {
        NormKind::LayerNorm => {
            let d = x.size().last().copied().unwrap_or(0);
            Ok(x.f_layer_norm([d], Some(&norm.w), norm.b.as_ref(), eps, false)?)
        }
        NormKind::RmsNorm => {
            let dtype = x.kind();
            let normed = rms_normalize(x, eps)?;
            Ok(norm.w.f_mul(&normed.f_to_kind(dtype)?)?)
        }
        NormKind::RmsNormOffset { offset } => {
            let dtype = x.kind();
            let scale = norm.w.f_to_kind(Kind::Float)?.f_add_scalar(offset)?;
            Ok(rms_normalize(x, eps)?.f_mul(&scale)?.f_to_kind(dtype)?)
        }
    }
}

/// A norm of `kind` whose scale (RMS, or standard deviation for LayerNorm) comes from
/// `reference` (broadcast against `x`), so that the map is affine in `x`: centring
/// (LayerNorm), division by the frozen scale, the weight, then the bias; computed in f32 and
/// returned in `x`'s kind. With `reference = x.detach()` it is the norm whose scale is a
/// constant of the backward pass (the LRP identity rule on norms).
fn normalize_frozen(
    x: &Tensor,
    reference: &Tensor,
    norm: &Norm,
    kind: NormKind,
    eps: f64,
) -> Result<Tensor> {
    // The scale comes from the reference; centring (a linear map) from the input itself.
    let dtype = x.kind();
    let x32 = x.f_to_kind(Kind::Float)?;
    let r32 = reference.f_to_device(x.device())?.f_to_kind(Kind::Float)?;
    let centre =
        |t: &Tensor| -> Result<Tensor> { Ok(t.f_sub(&t.f_mean_dim(-1, true, Kind::Float)?)?) };
    let (x32, r32) = match kind {
        NormKind::LayerNorm => (centre(&x32)?, centre(&r32)?),
        NormKind::RmsNorm | NormKind::RmsNormOffset { .. } => (x32, r32),
    };
    let denom = r32.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?;
    let normed = x32.f_mul(&denom.f_add_scalar(eps)?.f_rsqrt()?)?;
    let weight = norm.w.f_to_kind(Kind::Float)?;
    let out = match kind {
        NormKind::RmsNormOffset { offset } => normed.f_mul(&weight.f_add_scalar(offset)?)?,
        NormKind::RmsNorm | NormKind::LayerNorm => normed.f_mul(&weight)?,
    };
    let out = match &norm.b {
        Some(b) => out.f_add(&b.f_to_kind(Kind::Float)?)?,
        None => out,
    };
    Ok(out.f_to_kind(dtype)?)
}

/// `x / √(mean(x²) + eps)` in f32.
fn rms_normalize(x: &Tensor, eps: f64) -> Result<Tensor> {
    let x32 = x.f_to_kind(Kind::Float)?;
    let variance = x32.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, Kind::Float)?;
    Ok(x32.f_mul(&variance.f_add_scalar(eps)?.f_rsqrt()?)?)
}

fn activate(x: &Tensor, activation: Activation) -> Result<Tensor> {
    Ok(match activation {
        Activation::Silu => x.f_silu()?,
        Activation::GeluTanh => x.f_gelu("tanh")?,
        Activation::Gelu => x.f_gelu("none")?,
    })
}

fn softcap(x: &Tensor, cap: Option<f64>) -> Result<Tensor> {
    Ok(match cap {
        Some(cap) => x.f_div_scalar(cap)?.f_tanh()?.f_mul_scalar(cap)?,
        None => x.shallow_clone(),
    })
}

/// Weights of one block.
#[derive(Debug)]
struct Block {
    ln1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    o: Linear,
    ln1_post: Option<Norm>,
    ln2: Norm,
    gate: Option<Linear>,
    up: Linear,
    down: Linear,
    ln2_post: Option<Norm>,
    /// Where the block's weights live and its forward pass runs.
    device: Device,
}

impl Block {
    fn norms_mut(&mut self) -> impl Iterator<Item = &mut Norm> {
        [Some(&mut self.ln1), Some(&mut self.ln2)]
            .into_iter()
            .chain([
                self.q_norm.as_mut(),
                self.k_norm.as_mut(),
                self.ln1_post.as_mut(),
                self.ln2_post.as_mut(),
            ])
            .flatten()
    }

    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        [
            Some(&mut self.q),
            Some(&mut self.k),
            Some(&mut self.v),
            Some(&mut self.o),
            self.gate.as_mut(),
            Some(&mut self.up),
            Some(&mut self.down),
        ]
        .into_iter()
        .flatten()
    }

    /// Bytes of the block's weights (streamed matrices counted as dequantised).
    fn bytes(&self) -> u64 {
        let norms = [Some(&self.ln1), Some(&self.ln2), self.q_norm.as_ref(), self.k_norm.as_ref()]
            .into_iter()
            .chain([self.ln1_post.as_ref(), self.ln2_post.as_ref()])
            .flatten()
            .map(Norm::bytes)
            .sum::<u64>();
        let linears = [&self.q, &self.k, &self.v, &self.o, &self.up, &self.down]
            .into_iter()
            .chain(self.gate.as_ref())
            .map(Linear::bytes)
            .sum::<u64>();
        norms + linears
    }

    fn move_to(&mut self, device: Device) -> Result<()> {
        for norm in self.norms_mut() {
            norm.move_to(device)?;
        }
        for linear in self.linears_mut() {
            linear.move_to(device)?;
        }
        self.device = device;
        Ok(())
    }
}

/// A decoder-only transformer with hook points, of any supported family.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    embed: Weight,
    pos_embed: Option<Tensor>,
    /// `embedding_scale` as a scalar of the weights' kind (Hugging Face casts it so).
    embed_scale: Option<Tensor>,
    blocks: Vec<Block>,
    final_norm: Norm,
    /// `None` when tied to `embed`.
    lm_head: Option<Weight>,
    /// Rotary frequencies of global layers and, if they differ, of sliding layers.
    rope_global: Option<RopeTable>,
    rope_local: Option<RopeTable>,
    kind: Kind,
    /// Device of the embedding (where inputs go).
    device: Device,
    /// Device of the final norm and the head.
    head_device: Device,
    /// A tied head placed on another device than the embedding: a frozen copy of the
    /// embedding there (resident weights only; a streamed head is dequantised where the
    /// embedding lives and moved).
    tied_head_copy: Option<Tensor>,
}

impl Decoder {
    /// Builds the model from a checkpoint whose keys `names` describes, taking every weight
    /// the configuration implies with its shape.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], and [`Error::MissingWeight`], [`Error::WeightShape`],
    /// [`Error::UnusedWeights`] naming the checkpoint's keys.
    pub fn from_checkpoint(
        config: DecoderConfig,
        ckpt: Checkpoint,
        names: WeightNames,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        Self::build(config, ckpt, names, kind, device, Weights::Resident)
    }

    /// Builds the model from a checkpoint as [`Decoder::from_checkpoint`] does, with the
    /// device, precision and weight storage of `options`. With [`Weights::Streamed`], the
    /// projection matrices, the token embedding and the head of a checkpoint read from a GGUF
    /// file stay there and are dequantised on each use; tensors already in memory stay
    /// resident whatever `options` say.
    ///
    /// # Errors
    /// As [`Decoder::from_checkpoint`].
    pub fn from_checkpoint_with(
        config: DecoderConfig,
        ckpt: Checkpoint,
        names: WeightNames,
        options: &LoadOptions,
    ) -> Result<Self> {
        let kind = options.precision.kind();
        Self::build(config, ckpt, names, kind, options.device, options.weights)
    }

    fn build(
        config: DecoderConfig,
        mut ckpt: Checkpoint,
        names: WeightNames,
        kind: Kind,
        device: Device,
        weights: Weights,
    ) -> Result<Self> {
        config.validate()?;
        if config.tie_embeddings {
            // Some tied checkpoints still carry a copy of the head; it must equal the
            // embedding, so it is dropped rather than reported as unused.
            ckpt.discard(&names.key(Param::Head));
        }
        let mut taken: HashMap<String, Weight> = HashMap::new();
        for (param, shape) in names::parameters(&config) {
            let stream = weights == Weights::Streamed && param.is_matrix();
            let weight = ckpt.take_weight(&names.key(param), &shape, kind, device, stream)?;
            taken.insert(param.canonical(), weight);
        }
        ckpt.finish()?;
        Self::from_weights(config, taken, kind, device)
    }

    /// Assembles the model from canonically named, already shape-checked weights.
    fn from_weights(
        config: DecoderConfig,
        mut w: HashMap<String, Weight>,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        /// A matrix, resident or streamed.
        fn take_weight(w: &mut HashMap<String, Weight>, param: Param) -> Result<Weight> {
            let name = param.canonical();
            w.remove(&name).ok_or(Error::MissingWeight { name })
        }
        /// A small tensor, held in memory.
        fn take(w: &mut HashMap<String, Weight>, param: Param) -> Result<Tensor> {
            match take_weight(w, param)? {
                Weight::Resident(t) => Ok(t),
                streamed => streamed.tensor(),
            }
        }
        fn take_if(
            w: &mut HashMap<String, Weight>,
            param: Param,
            present: bool,
        ) -> Result<Option<Tensor>> {
            if present { take(w, param).map(Some) } else { Ok(None) }
        }
        let layer_norm = config.norm == NormKind::LayerNorm;
        let a = &config.attention;
        let gated = matches!(config.mlp, MlpKind::Gated(_));
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let w = &mut w;
            let p = |bp: BlockParam| Param::Block(l, bp);
            let norm = |w: &mut HashMap<String, Weight>, bp: BlockParam, present: bool| {
                Ok::<_, Error>(take_if(w, p(bp), present)?.map(|w| Norm { w, b: None }))
            };
            let linear = |w: &mut HashMap<String, Weight>, wp, bp, bias| -> Result<Linear> {
                Ok(Linear { w: take_weight(w, p(wp))?, b: take_if(w, p(bp), bias)? })
            };
            blocks.push(Block {
                ln1: Norm {
                    w: take(w, p(BlockParam::Ln1W))?,
                    b: take_if(w, p(BlockParam::Ln1B), layer_norm)?,
                },
                q: linear(w, BlockParam::Q, BlockParam::QBias, a.qkv_bias)?,
                k: linear(w, BlockParam::K, BlockParam::KBias, a.qkv_bias)?,
                v: linear(w, BlockParam::V, BlockParam::VBias, a.qkv_bias)?,
                q_norm: norm(w, BlockParam::QNorm, a.qk_norm)?,
                k_norm: norm(w, BlockParam::KNorm, a.qk_norm)?,
                o: linear(w, BlockParam::O, BlockParam::OBias, a.o_bias)?,
                ln1_post: norm(w, BlockParam::Ln1PostW, config.sandwich_norms)?,
                ln2: Norm {
                    w: take(w, p(BlockParam::Ln2W))?,
                    b: take_if(w, p(BlockParam::Ln2B), layer_norm)?,
                },
                gate: if gated {
                    Some(Linear { w: take_weight(w, p(BlockParam::Gate))?, b: None })
                } else {
                    None
                },
                up: linear(w, BlockParam::Up, BlockParam::UpBias, config.mlp_bias)?,
                down: linear(w, BlockParam::Down, BlockParam::DownBias, config.mlp_bias)?,
                ln2_post: norm(w, BlockParam::Ln2PostW, config.sandwich_norms)?,
                device,
            });
        }
        let embed = take_weight(&mut w, Param::Embed)?;
        let pos_embed = if config.positions == Positions::Learned {
            Some(take(&mut w, Param::PosEmbed)?)
        } else {
            None
        };
        let final_norm = Norm {
            w: take(&mut w, Param::FinalNormW)?,
            b: if layer_norm { Some(take(&mut w, Param::FinalNormB)?) } else { None },
        };
        let lm_head =
            if config.tie_embeddings { None } else { Some(take_weight(&mut w, Param::Head)?) };
        let embed_scale = match config.embedding_scale {
            Some(s) => Some(Tensor::f_from_slice(&[s])?.f_to_kind(kind)?.f_to_device(device)?),
            None => None,
        };
        let (rope_global, rope_local) = match &config.positions {
            Positions::Learned => (None, None),
            Positions::Rotary { pairing, global, local } => (
                Some(RopeTable::new(global, *pairing, config.attention.d_head, device)?),
                match local {
                    Some(local) => {
                        Some(RopeTable::new(local, *pairing, config.attention.d_head, device)?)
                    }
                    None => None,
                },
            ),
        };
        Ok(Self {
            config,
            embed,
            pos_embed,
            embed_scale,
            blocks,
            final_norm,
            lm_head,
            rope_global,
            rope_local,
            kind,
            device,
            head_device: device,
            tied_head_copy: None,
        })
    }

    /// A seeded random checkpoint of `config` under canonical names (f32, CPU): embeddings
    /// σ = 1, query/key projections σ = 0.15 (patterns far from uniform), learned positions
    /// σ = 0.1, other projections and biases σ = 0.02, norm weights uniform in [0.8, 1.2]
    /// (minus the offset of offset norms), norm biases 0; reproducible across threads.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn random_checkpoint(config: &DecoderConfig, seed: u64) -> Result<Checkpoint> {
        config.validate()?;
        // Private generators, not libtorch's global one, so models built on several threads
        // at once are still reproducible.
        let mut rng = SplitMix64::new(seed);
        let mut norm_rng = SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15);
        let offset = match config.norm {
            NormKind::RmsNormOffset { offset } => offset,
            _ => 0.0,
        };
        let mut ckpt = Checkpoint::new();
        for (param, shape) in names::parameters(config) {
            let n: i64 = shape.iter().product();
            let values: Vec<f32> = match param {
                Param::FinalNormW
                | Param::Block(
                    _,
                    BlockParam::Ln1W
                    | BlockParam::Ln2W
                    | BlockParam::Ln1PostW
                    | BlockParam::Ln2PostW
                    | BlockParam::QNorm
                    | BlockParam::KNorm,
                ) => (0..n).map(|_| (0.8 + 0.4 * norm_rng.uniform() - offset) as f32).collect(),
                Param::FinalNormB | Param::Block(_, BlockParam::Ln1B | BlockParam::Ln2B) => {
                    vec![0.0; n as usize]
                }
                _ => {
                    let std = match param {
                        Param::Embed => 1.0,
                        Param::PosEmbed => 0.1,
                        Param::Block(_, BlockParam::Q | BlockParam::K) => 0.15,
                        _ => 0.02,
                    };
                    (0..n).map(|_| (rng.normal() * std) as f32).collect()
                }
            };
            ckpt.insert(param.canonical(), Tensor::f_from_slice(&values)?.f_reshape(&shape)?);
        }
        Ok(ckpt)
    }

    /// A model with the seeded random weights of [`Decoder::random_checkpoint`], for tests
    /// and benchmarks that need no real checkpoint.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn random(config: DecoderConfig, seed: u64, kind: Kind, device: Device) -> Result<Self> {
        let ckpt = Self::random_checkpoint(&config, seed)?;
        Self::from_checkpoint(config, ckpt, WeightNames::Canonical, kind, device)
    }

    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Floating-point kind of the weights.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Device of the embedding, where inputs go (of every weight unless the model was
    /// placed on several devices, see [`Decoder::place`]).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Where each part of the model is.
    pub fn placement(&self) -> Placement {
        Placement {
            embed: self.device,
            blocks: self.blocks.iter().map(|b| b.device).collect(),
            head: self.head_device,
        }
    }

    /// The bytes of the model's parts, for planning a [`DeviceMap`](crate::DeviceMap) (streamed matrices counted
    /// as dequantised, since that is what a device holds while a block runs), with
    /// `activation_reserve_bytes` to keep free on each device.
    pub fn footprint(&self, activation_reserve_bytes: u64) -> ModelFootprint {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).bytes();
        ModelFootprint {
            embed_bytes: self.embed.bytes() + self.pos_embed.as_ref().map_or(0, tensor_bytes),
            block_bytes: self.blocks.iter().map(Block::bytes).collect(),
            head_bytes: head + self.final_norm.bytes(),
            tied_head: self.lm_head.is_none(),
            activation_reserve_bytes,
        }
    }

    /// Puts the model's parts where `placement` says: the embedding (and learned positions,
    /// rotary tables) on `placement.embed`, each block's weights on its device, the final
    /// norm and the head on `placement.head` (a tied head away from the embedding as a frozen
    /// copy of it there). The forward pass then moves the residual stream at block
    /// boundaries, with masks and rotary tables copied to each device once per forward, and
    /// autograd's backward pass (block-wise or not) follows the same devices back.
    ///
    /// # Errors
    /// [`Error::DeviceMap`] when the placement has another number of blocks;
    /// [`Error::DeviceUnavailable`] for a device this machine does not have (nothing is moved
    /// then); libtorch's copy errors.
    pub fn place(&mut self, placement: &Placement) -> Result<()> {
        if placement.blocks.len() != self.blocks.len() {
            return Err(Error::DeviceMap {
                reason: format!(
                    "the placement has {} blocks for a model of {}",
                    placement.blocks.len(),
                    self.blocks.len()
                ),
            });
        }
        for device in placement.devices() {
            crate::loader::check_device(device)?;
        }
        let embed = placement.embed;
        self.embed.move_to(embed)?;
        self.pos_embed = self.pos_embed.as_ref().map(|t| t.f_to_device(embed)).transpose()?;
        self.embed_scale = self.embed_scale.as_ref().map(|t| t.f_to_device(embed)).transpose()?;
        for rope in [self.rope_global.as_mut(), self.rope_local.as_mut()].into_iter().flatten() {
            rope.move_to(embed)?;
        }
        for (block, &device) in self.blocks.iter_mut().zip(&placement.blocks) {
            block.move_to(device)?;
        }
        self.final_norm.move_to(placement.head)?;
        if let Some(head) = self.lm_head.as_mut() {
            head.move_to(placement.head)?;
        }
        self.tied_head_copy = match (&self.lm_head, self.embed.resident()) {
            (None, Some(table)) if placement.head != embed => {
                Some(table.f_to_device(placement.head)?.f_detach()?)
            }
            _ => None,
        };
        self.device = embed;
        self.head_device = placement.head;
        Ok(())
    }

    /// Embeds ids: token embeddings times the embedding scale (learned positions are added
    /// in [`Decoder::forward`], so gradient methods attribute to tokens and positions stay
    /// in the baseline).
    ///
    /// # Shapes
    /// `[batch, pos]` int64 → `[batch, pos, d_model]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for other ranks, [`Error::EmptyText`],
    /// [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`].
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let e = match self.embed.resident() {
            Some(table) => embedding(table, ids, self.config.max_positions, self.device)?,
            None => {
                // Streamed: dequantise only the rows of the tokens asked for.
                let vocab = self.config.vocab_size as i64;
                let ids = checked_ids(ids, self.config.max_positions, vocab, Device::Cpu)?;
                let flat = Vec::<i64>::try_from(ids.f_flatten(0, -1)?)?;
                let (batch, seq) = (ids.size()[0], ids.size()[1]);
                let d = self.config.d_model as i64;
                self.embed.gather(&flat)?.f_view([batch, seq, d])?
            }
        };
        Ok(match &self.embed_scale {
            Some(scale) => e.f_mul(scale)?,
            None => e,
        })
    }

    /// LM head: final-normalised hidden states to f32 logits (soft-capped when the config
    /// says so).
    ///
    /// # Shapes
    /// `[..., d_model]` → `[..., vocab]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the last dimension is not `d_model`.
    pub fn unembed(&self, hidden: &Tensor) -> Result<Tensor> {
        let size = hidden.size();
        if size.last() != Some(&(self.config.d_model as i64)) {
            return Err(Error::ShapeMismatch {
                what: "hidden".into(),
                expected: format!("[..., {}]", self.config.d_model),
                actual: size,
            });
        }
        let hidden = &hidden.f_to_device(self.head_device)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let to_head = |t: Tensor| -> Result<Tensor> { Ok(t.f_to_device(self.head_device)?) };
        let logits = match (head.resident(), &self.tied_head_copy) {
            (Some(_), Some(copy)) => crate::ops::lm_head(hidden, copy)?,
            (Some(head), None) => crate::ops::lm_head(hidden, head)?,
            // Streamed, differentiated: the product would keep every slice for its backward
            // pass anyway, and one product sums the head's gradient over the vocabulary in the
            // order the resident model does. The dequantised head lives until that backward
            // pass has run.
            (None, _) if hidden.requires_grad() => {
                crate::ops::lm_head(hidden, &to_head(head.tensor()?)?)?
            }
            (None, _) => {
                // Streamed, no gradients: a slice of vocabulary rows at a time, each dropped
                // after its product, so the whole dequantised head is never held.
                let vocab = self.config.vocab_size as i64;
                let rows = (HEAD_CHUNK_ELEMENTS / self.config.d_model as i64).max(1);
                let mut parts = Vec::with_capacity((vocab / rows + 1) as usize);
                let mut start = 0;
                while start < vocab {
                    let end = (start + rows).min(vocab);
                    parts.push(crate::ops::lm_head(hidden, &to_head(head.rows(start..end)?)?)?);
                    start = end;
                }
                Tensor::f_cat(&parts, -1)?
            }
        };
        softcap(&logits, self.config.final_softcap)
    }

    /// Whether the weight matrices are streamed from a GGUF file ([`Weights::Streamed`]).
    pub fn weights(&self) -> Weights {
        if self.embed.is_streamed() { Weights::Streamed } else { Weights::Resident }
    }

    /// How gradients are taken: [`BackwardMemory::Recompute`] for streamed weights (plain
    /// autograd would keep every block's dequantised weights alive until the backward pass,
    /// all of them at once), [`BackwardMemory::Stored`] otherwise.
    pub fn backward_memory(&self) -> BackwardMemory {
        match self.weights() {
            Weights::Streamed => BackwardMemory::Recompute,
            Weights::Resident => BackwardMemory::Stored,
        }
    }

    /// The final normalisation applied to residual-stream states, with statistics from each
    /// state or a scale frozen at a reference (see [`NormScale`]).
    ///
    /// # Shapes
    /// `[..., d_model]` → `[..., d_model]` in the model's kind.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the last dimension is not `d_model`.
    pub fn final_norm(&self, residual: &Tensor, scale: NormScale<'_>) -> Result<Tensor> {
        self.apply_norm(&self.final_norm, self.head_device, residual, scale)
    }

    /// The normalisation whose output fires `point` (see
    /// [`LanguageModel::norm_at`](explainability_core::LanguageModel::norm_at)):
    /// `ln_final.hook_normalized` is [`Decoder::final_norm`];
    /// `blocks.{l}.ln1_post.hook_normalized` / `ln2_post.hook_normalized` are the sandwich
    /// norms after the attention and MLP outputs (`(x / rms) · (offset + w)` in Gemma 3).
    ///
    /// # Shapes
    /// `[..., d_model]` → `[..., d_model]` in the model's kind, on the block's device.
    ///
    /// # Errors
    /// [`Error::UnsupportedOperation`] for a point with no norm in this configuration (a
    /// post-norm of a model without sandwich norms, a point that is not a norm's output),
    /// [`Error::LayerOutOfRange`], [`Error::ShapeMismatch`].
    pub fn norm_at(
        &self,
        point: HookPoint,
        input: &Tensor,
        scale: NormScale<'_>,
    ) -> Result<Tensor> {
        let kind = point.kind();
        if kind == HookKind::LnFinal {
            return self.final_norm(input, scale);
        }
        let unsupported = || Error::UnsupportedOperation {
            model: "decoder".into(),
            operation: format!("a normalisation at {point}"),
        };
        let layer = point.layer().ok_or_else(unsupported)?;
        let block = self
            .blocks
            .get(layer)
            .ok_or(Error::LayerOutOfRange { layer, n_layers: self.blocks.len() })?;
        let norm = match kind {
            HookKind::Ln1Post => block.ln1_post.as_ref(),
            HookKind::Ln2Post => block.ln2_post.as_ref(),
            _ => None,
        }
        .ok_or_else(unsupported)?;
        self.apply_norm(norm, block.device, input, scale)
    }

    /// `norm` (of the configured kind) on `device`, recomputed or frozen at a reference.
    fn apply_norm(
        &self,
        norm: &Norm,
        device: Device,
        input: &Tensor,
        scale: NormScale<'_>,
    ) -> Result<Tensor> {
        let d = self.config.d_model as i64;
        for (what, t) in [("input", Some(input)), ("reference", scale.reference())] {
            if let Some(t) = t
                && t.size().last() != Some(&d)
            {
                return Err(Error::ShapeMismatch {
                    what: what.into(),
                    expected: format!("[..., {d}]"),
                    actual: t.size(),
                });
            }
        }
        let x = input.f_to_device(device)?.f_to_kind(self.kind)?;
        let NormScale::FrozenAt(reference) = scale else {
            return normalize(&x, norm, self.config.norm, self.config.norm_eps);
        };
        normalize_frozen(&x, reference, norm, self.config.norm, self.config.norm_eps)
    }

    /// Runs the blocks from embeddings, firing every hook point.
    ///
    /// # Shapes
    /// `embeddings`: `[batch, pos, d_model]`; logits `[batch, pos, vocab]` (f32).
    ///
    /// # Errors
    /// Shape and length errors, and whatever a hook returns.
    pub fn forward(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        let inputs = self.forward_inputs(embeddings, options)?;
        let past = options.past_key_values.as_ref();
        let mut residual = self.input_stage(embeddings, inputs.first(), hooks)?;
        let mut present = options.return_key_values.then(Vec::new);
        for (layer, block) in self.blocks.iter().enumerate() {
            let kv = KvStep { past: past.and_then(|c| c.layers.get(layer)), present: &mut present };
            let on = inputs.on(block.device);
            residual = self.block_forward(layer, block, residual, on, kv, hooks)?;
        }
        self.output_stage(&residual, options, present, hooks)
    }

    /// The forward pass split into stages for inputs shaped like `embeddings` (see
    /// [`BlockwiseForward`]); running them in order equals [`Decoder::forward`].
    ///
    /// # Errors
    /// Shape and length errors of [`Decoder::forward`].
    pub fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<DecoderStages<'a>> {
        if options.return_key_values {
            // The stages serve recomputed gradients, which never need a cache back.
            return Err(Error::UnsupportedOperation {
                model: "decoder".into(),
                operation: "returning keys and values from a block-wise forward".into(),
            });
        }
        Ok(DecoderStages {
            model: self,
            inputs: self.forward_inputs(embeddings, options)?,
            options,
        })
    }

    /// Checks the embeddings' shape and length and prepares positions, rotary tables and
    /// masks, on every device a block runs on.
    fn forward_inputs(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
    ) -> Result<PlacedInputs> {
        let size = embeddings.size();
        if size.len() != 3 || size[2] != self.config.d_model as i64 {
            return Err(Error::ShapeMismatch {
                what: "embeddings".into(),
                expected: format!("[batch, pos, {}]", self.config.d_model),
                actual: size,
            });
        }
        let (batch, seq) = (size[0], size[1]);
        check_positions(seq, self.config.max_positions)?;
        let past_len = match options.past_key_values.as_ref() {
            Some(cache) => self.check_past(cache, batch)?,
            None => 0,
        };
        check_positions(past_len + seq, self.config.max_positions)?;
        let first = ForwardInputs::new(self, options, batch, seq, past_len)?;
        let mut copies: Vec<(Device, ForwardInputs)> = Vec::new();
        for block in &self.blocks {
            if block.device != self.device && copies.iter().all(|(d, _)| *d != block.device) {
                copies.push((block.device, first.to_device(block.device)?));
            }
        }
        Ok(PlacedInputs { first, copies })
    }

    /// Embeddings → the residual stream entering block 0 (learned positions, `hook_embed`).
    fn input_stage(
        &self,
        embeddings: &Tensor,
        inputs: &ForwardInputs,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        let embeddings = embeddings.f_to_device(self.device)?.f_to_kind(self.kind)?;
        let embeddings = match &self.pos_embed {
            Some(table) => {
                let positions = inputs.positions.f_to_kind(Kind::Int64)?;
                embeddings.f_add(&Tensor::f_embedding(table, &positions, -1, false, false)?)?
            }
            None => embeddings,
        };
        hooks.fire(HookPoint::embed(), embeddings)
    }

    /// The residual stream after the last block → final norm (`hook_ln_final`) and logits;
    /// `present`: the blocks' keys and values when they are to be returned.
    fn output_stage(
        &self,
        residual: &Tensor,
        options: &ForwardOptions,
        present: Option<Vec<LayerKeyValues>>,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        let residual = &residual.f_to_device(self.head_device)?;
        let normalized = self.norm(residual, &self.final_norm, options.relevance)?;
        let final_hidden = hooks.fire(HookPoint::ln_final(), normalized)?;
        let logits = self.unembed(&options.logit_hidden(&final_hidden)?)?;
        let key_values = present.map(|layers| KeyValueCache { layers });
        Ok(ModelOutput { logits, final_hidden, key_values })
    }

    /// Checks a cache against the configuration and the batch; returns its length.
    fn check_past(&self, cache: &KeyValueCache, batch: i64) -> Result<i64> {
        let a = &self.config.attention;
        let past = cache.len() as i64;
        let expected = [batch, a.n_kv_heads as i64, past, a.d_head as i64];
        if cache.layers.len() != self.blocks.len() {
            return Err(Error::invalid_argument(format!(
                "past_key_values has {} layers for a model of {}",
                cache.layers.len(),
                self.blocks.len()
            )));
        }
        for (l, kv) in cache.layers.iter().enumerate() {
            for (what, t) in [("keys", &kv.keys), ("values", &kv.values)] {
                if t.size() != expected {
                    return Err(Error::ShapeMismatch {
                        what: format!("past_key_values layer {l} {what}"),
                        expected: format!("{expected:?} ([batch, kv_heads, past, d_head])"),
                        actual: t.size(),
                    });
                }
            }
        }
        Ok(past)
    }

    /// Applies a norm of the model's kind; in a relevance mode its scale is a constant of the
    /// backward pass (the identity rule on norms).
    fn norm(&self, x: &Tensor, norm: &Norm, relevance: Option<RelevanceRule>) -> Result<Tensor> {
        let (kind, eps) = (self.config.norm, self.config.norm_eps);
        match relevance {
            Some(_) => normalize_frozen(x, &x.f_detach()?, norm, kind, eps),
            None => normalize(x, norm, kind, eps),
        }
    }

    fn block_forward(
        &self,
        layer: usize,
        block: &Block,
        residual: Tensor,
        inputs: &ForwardInputs,
        kv: KvStep<'_>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        let a = &self.config.attention;
        // Activations move to the block's device at its boundary (a no-op on one device).
        let residual = residual.f_to_device(block.device)?;
        let resid_pre = hooks.fire(HookPoint::resid_pre(layer), residual)?;
        let (batch, seq) = (resid_pre.size()[0], resid_pre.size()[1]);
        let (n_heads, n_kv, d_head) = (a.n_heads as i64, a.n_kv_heads as i64, a.d_head as i64);
        let sliding = self.config.is_sliding(layer);

        // ---- attention ----
        let normed = self.norm(&resid_pre, &block.ln1, inputs.relevance)?;
        let q = block.q.forward(&normed)?.f_view([batch, seq, n_heads, d_head])?;
        let k = block.k.forward(&normed)?.f_view([batch, seq, n_kv, d_head])?;
        let v = block.v.forward(&normed)?.f_view([batch, seq, n_kv, d_head])?;
        let (q, k) = match (&block.q_norm, &block.k_norm) {
            (Some(qn), Some(kn)) => {
                (self.norm(&q, qn, inputs.relevance)?, self.norm(&k, kn, inputs.relevance)?)
            }
            _ => (q, k),
        };
        let (q, k) = match inputs.rope(sliding) {
            Some(rope) => (rope.apply(&q)?, rope.apply(&k)?),
            None => (q, k),
        };
        let q = hooks.fire(HookPoint::new(HookKind::Q, layer), q)?;
        let k = hooks.fire(HookPoint::new(HookKind::K, layer), k)?;
        let v = hooks.fire(HookPoint::new(HookKind::V, layer), v)?;

        // [batch, head, pos, d_head]; query head h reads kv head h / (n_heads / n_kv_heads).
        let group = n_heads / n_kv;
        let q = q.f_transpose(1, 2)?;
        let k = k.f_transpose(1, 2)?;
        let v = v.f_transpose(1, 2)?;
        // Relevance mode: the uniform rule on q·kᵀ and A·v (AttnLRP) or a constant pattern
        // (CP-LRP). Softmax needs no change (its Taylor rule is gradient×input), so the fused
        // kernel, whose backward is the exact gradient, carries it as well as the explicit path.
        let (q, k, v) = match inputs.relevance {
            Some(rule) => {
                let [q, k, v] = rule.attention_inputs(&q, &k, &v)?;
                (q, k, v)
            }
            None => (q, k, v),
        };
        // Past keys and values (already rotated) go before this forward's positions.
        let (k, v) = match kv.past {
            Some(past) => (
                Tensor::f_cat(&[&past.keys.f_to_device(k.device())?.f_to_kind(k.kind())?, &k], 2)?,
                Tensor::f_cat(
                    &[&past.values.f_to_device(v.device())?.f_to_kind(v.kind())?, &v],
                    2,
                )?,
            ),
            None => (k, v),
        };
        if let Some(present) = kv.present.as_mut() {
            present.push(LayerKeyValues { keys: k.shallow_clone(), values: v.shallow_clone() });
        }
        let windowed = if sliding { inputs.blocked_sliding.as_ref() } else { None };
        let blocked = windowed.unwrap_or(&inputs.blocked);

        let scores_point = HookPoint::attn_scores(layer);
        let pattern_point = HookPoint::pattern(layer);
        let explicit =
            hooks.wants(&scores_point) || hooks.wants(&pattern_point) || a.softcap.is_some();
        let z = if explicit {
            // Repeating the kv heads measured faster on CPU than grouping queries into one
            // product per kv head (0.41 vs 0.57 ms per layer at 128 tokens).
            let k = k.f_repeat_interleave_self_int(group, 1, None)?;
            let v = v.f_repeat_interleave_self_int(group, 1, None)?;
            let scores = q.f_matmul(&k.f_transpose(-2, -1)?)?.f_mul_scalar(a.scale)?;
            let scores = softcap(&scores, a.softcap)?;
            let scores = scores.f_masked_fill(blocked, min_value(scores.kind()))?;
            let scores = hooks.fire(scores_point, scores)?;
            // Softmax in f32 whatever the model's dtype, as Hugging Face's eager path does.
            let pattern = scores.f_softmax(-1, Kind::Float)?.f_to_kind(self.kind)?;
            let pattern = hooks.fire(pattern_point, pattern)?;
            pattern.f_matmul(&v)?
        } else {
            // libtorch's default scale is 1/√d_head; pass ours only when it differs.
            let scale = (a.scale != (d_head as f64).powf(-0.5)).then_some(a.scale);
            if inputs.padded || windowed.is_some() || inputs.past > 0 {
                let allowed = blocked.f_logical_not()?;
                Tensor::f_scaled_dot_product_attention(
                    &q,
                    &k,
                    &v,
                    Some(&allowed),
                    0.0,
                    false,
                    scale,
                    true,
                )?
            } else {
                Tensor::f_scaled_dot_product_attention::<Tensor>(
                    &q, &k, &v, None, 0.0, true, scale, true,
                )?
            }
        };
        let z = z.f_transpose(1, 2)?.f_contiguous()?; // [batch, pos, head, d_head]
        let z = hooks.fire(HookPoint::z(layer), z)?;
        let attn_out = block.o.forward(&z.f_reshape([batch, seq, n_heads * d_head])?)?;
        let attn_out = match &block.ln1_post {
            Some(norm) => hooks.fire(
                HookPoint::new(HookKind::Ln1Post, layer),
                self.norm(&attn_out, norm, inputs.relevance)?,
            )?,
            None => attn_out,
        };
        let attn_out = hooks.fire(HookPoint::attn_out(layer), attn_out)?;
        let resid_mid = hooks.fire(HookPoint::resid_mid(layer), resid_pre.f_add(&attn_out)?)?;

        // ---- MLP ----
        let normed = self.norm(&resid_mid, &block.ln2, inputs.relevance)?;
        let act_fn = |act| move |x: &Tensor| activate(x, act);
        let post = match (self.config.mlp, &block.gate, inputs.relevance) {
            (MlpKind::Gated(act), Some(gate), None) => {
                activate(&gate.forward(&normed)?, act)?.f_mul(&block.up.forward(&normed)?)?
            }
            (MlpKind::Gated(act), Some(gate), Some(rule)) => rule.gated_product(
                &gate.forward(&normed)?,
                &block.up.forward(&normed)?,
                act_fn(act),
            )?,
            (MlpKind::Plain(act), _, None) | (MlpKind::Gated(act), None, None) => {
                activate(&block.up.forward(&normed)?, act)?
            }
            (MlpKind::Plain(act), _, Some(rule)) | (MlpKind::Gated(act), None, Some(rule)) => {
                rule.activation(&block.up.forward(&normed)?, act_fn(act))?
            }
        };
        let post = hooks.fire(HookPoint::new(HookKind::MlpPost, layer), post)?;
        let mlp_out = block.down.forward(&post)?;
        let mlp_out = match &block.ln2_post {
            Some(norm) => hooks.fire(
                HookPoint::new(HookKind::Ln2Post, layer),
                self.norm(&mlp_out, norm, inputs.relevance)?,
            )?,
            None => mlp_out,
        };
        let mlp_out = hooks.fire(HookPoint::mlp_out(layer), mlp_out)?;
        hooks.fire(HookPoint::resid_post(layer), resid_mid.f_add(&mlp_out)?)
    }

    /// Parameters under canonical TransformerLens-style names (`embed.W_E`,
    /// `blocks.{l}.attn.W_Q` in `[out, in]` layout, `blocks.{l}.ln1_post.w`, …), sharing
    /// storage with the model. Streamed matrices ([`Weights::Streamed`]) are not listed: they
    /// have no storage of their own, only their quantised bytes in the file.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut params = Vec::new();
        if let Some(t) = self.embed.resident() {
            params.push(("embed.W_E".to_owned(), t.shallow_clone()));
        }
        if let Some(pos) = &self.pos_embed {
            params.push(("pos_embed.W_pos".to_owned(), pos.shallow_clone()));
        }
        for (l, b) in self.blocks.iter().enumerate() {
            let mut push = |p: BlockParam, t: &Tensor| {
                params.push((Param::Block(l, p).canonical(), t.shallow_clone()));
            };
            let resident = |linear: &Linear| linear.w.resident().map(Tensor::shallow_clone);
            push(BlockParam::Ln1W, &b.ln1.w);
            if let Some(t) = &b.ln1.b {
                push(BlockParam::Ln1B, t);
            }
            if let Some(t) = resident(&b.q) {
                push(BlockParam::Q, &t);
            }
            if let Some(t) = resident(&b.k) {
                push(BlockParam::K, &t);
            }
            if let Some(t) = resident(&b.v) {
                push(BlockParam::V, &t);
            }
            for (p, t) in [
                (BlockParam::QBias, &b.q.b),
                (BlockParam::KBias, &b.k.b),
                (BlockParam::VBias, &b.v.b),
            ] {
                if let Some(t) = t {
                    push(p, t);
                }
            }
            if let (Some(qn), Some(kn)) = (&b.q_norm, &b.k_norm) {
                push(BlockParam::QNorm, &qn.w);
                push(BlockParam::KNorm, &kn.w);
            }
            if let Some(t) = resident(&b.o) {
                push(BlockParam::O, &t);
            }
            if let Some(t) = &b.o.b {
                push(BlockParam::OBias, t);
            }
            if let Some(n) = &b.ln1_post {
                push(BlockParam::Ln1PostW, &n.w);
            }
            push(BlockParam::Ln2W, &b.ln2.w);
            if let Some(t) = &b.ln2.b {
                push(BlockParam::Ln2B, t);
            }
            if let Some(t) = b.gate.as_ref().and_then(resident) {
                push(BlockParam::Gate, &t);
            }
            if let Some(t) = resident(&b.up) {
                push(BlockParam::Up, &t);
            }
            if let Some(t) = &b.up.b {
                push(BlockParam::UpBias, t);
            }
            if let Some(t) = resident(&b.down) {
                push(BlockParam::Down, &t);
            }
            if let Some(t) = &b.down.b {
                push(BlockParam::DownBias, t);
            }
            if let Some(n) = &b.ln2_post {
                push(BlockParam::Ln2PostW, &n.w);
            }
        }
        params.push(("ln_final.w".to_owned(), self.final_norm.w.shallow_clone()));
        if let Some(b) = &self.final_norm.b {
            params.push(("ln_final.b".to_owned(), b.shallow_clone()));
        }
        if let Some(head) = self.lm_head.as_ref().and_then(Weight::resident) {
            params.push(("unembed.W_U".to_owned(), head.shallow_clone()));
        }
        params
    }
}

/// One block's share of a KV-cache forward: its past keys and values, and where to put the
/// keys and values it computes when they are to be returned.
struct KvStep<'a> {
    past: Option<&'a LayerKeyValues>,
    present: &'a mut Option<Vec<LayerKeyValues>>,
}

/// [`Decoder::forward`] as separate stages, for inputs of one shape and one set of options.
pub struct DecoderStages<'a> {
    model: &'a Decoder,
    inputs: PlacedInputs,
    options: &'a ForwardOptions,
}

impl std::fmt::Debug for DecoderStages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderStages").field("n_blocks", &self.model.blocks.len()).finish()
    }
}

impl BlockwiseForward for DecoderStages<'_> {
    fn n_blocks(&self) -> usize {
        self.model.blocks.len()
    }

    fn input(&self, embeddings: &Tensor, hooks: &mut Hooks<'_>) -> Result<Tensor> {
        self.model.input_stage(embeddings, self.inputs.first(), hooks)
    }

    fn block(&self, layer: usize, residual: &Tensor, hooks: &mut Hooks<'_>) -> Result<Tensor> {
        let n_layers = self.model.blocks.len();
        let block =
            self.model.blocks.get(layer).ok_or(Error::LayerOutOfRange { layer, n_layers })?;
        let past = self.options.past_key_values.as_ref().and_then(|c| c.layers.get(layer));
        let kv = KvStep { past, present: &mut None };
        let inputs = self.inputs.on(block.device);
        self.model.block_forward(layer, block, residual.shallow_clone(), inputs, kv, hooks)
    }

    fn output(&self, residual: &Tensor, hooks: &mut Hooks<'_>) -> Result<ModelOutput> {
        self.model.output_stage(residual, self.options, None, hooks)
    }
}

/// [`ForwardInputs`] on the embedding's device and on every other device a block runs on.
struct PlacedInputs {
    first: ForwardInputs,
    copies: Vec<(Device, ForwardInputs)>,
}

impl PlacedInputs {
    /// The inputs on the embedding's device.
    fn first(&self) -> &ForwardInputs {
        &self.first
    }

    /// The inputs on `device` (those on the embedding's device when no copy was made there).
    fn on(&self, device: Device) -> &ForwardInputs {
        self.copies.iter().find(|(d, _)| *d == device).map_or(&self.first, |(_, i)| i)
    }
}

/// Per-forward inputs shared by all blocks: positions, rotary tables, blocked-key masks.
struct ForwardInputs {
    /// `[batch, pos]` f32 positions.
    positions: Tensor,
    /// Rotary tables (cos, sin) for global and, if different, sliding layers.
    rope_global: Option<rope::RopeAngles>,
    rope_local: Option<rope::RopeAngles>,
    /// `[batch, 1, pos, pos]` bool, true where a query may not attend to a key.
    blocked: Tensor,
    /// As `blocked`, and keys outside the sliding window; `None` when no window is shorter
    /// than the input (sliding layers then use `blocked`).
    blocked_sliding: Option<Tensor>,
    /// Whether an attention mask was given (otherwise the mask is purely causal).
    padded: bool,
    /// Positions in the past keys and values (0 without a cache).
    past: i64,
    /// The relevance-propagation mode of [`ForwardOptions::relevance`].
    relevance: Option<RelevanceRule>,
}

impl ForwardInputs {
    /// Inputs of `seq` new positions after `past` cached ones: queries are the new
    /// positions, keys are past and new ones (`total = past + seq`).
    fn new(
        model: &Decoder,
        options: &ForwardOptions,
        batch: i64,
        seq: i64,
        past: i64,
    ) -> Result<Self> {
        let total = past + seq;
        let device = model.device;
        let max = model.config.max_positions as i64;
        let positions = match &options.position_ids {
            Some(p) => {
                if p.size() != [batch, seq] {
                    return Err(Error::ShapeMismatch {
                        what: "position_ids".into(),
                        expected: format!("[{batch}, {seq}]"),
                        actual: p.size(),
                    });
                }
                let max_pos = p.f_max()?.f_int64_value(&[])?;
                let min_pos = p.f_min()?.f_int64_value(&[])?;
                if min_pos < 0 || max_pos >= max {
                    return Err(Error::invalid_argument(format!(
                        "position ids must lie in 0..{max}, got {min_pos}..={max_pos}"
                    )));
                }
                p.f_to_device(device)?.f_to_kind(Kind::Float)?
            }
            None => Tensor::f_arange_start(past, total, (Kind::Float, device))?
                .f_unsqueeze(0)?
                .f_expand([batch, seq], false)?,
        };
        let angles = |table: &Option<RopeTable>| -> Result<Option<rope::RopeAngles>> {
            match table {
                Some(t) => Ok(Some(t.angles(&positions, model.kind)?)),
                None => Ok(None),
            }
        };
        let rope_global = angles(&model.rope_global)?;
        let rope_local = angles(&model.rope_local)?;

        let options_bool = (Kind::Bool, device);
        // Query i sits at position past + i: keys after it are in the future.
        let future = Tensor::f_ones([seq, total], options_bool)?.f_triu(past + 1)?;
        let view = |m: &Tensor| -> Result<Tensor> {
            Ok(m.f_view([1, 1, seq, total])?.f_expand([batch, 1, seq, total], false)?)
        };
        let mut blocked = view(&future)?;
        // Only when a window is shorter than the input does it block anything beyond the
        // causal mask.
        let mut blocked_sliding = match model.config.attention.sliding_window {
            // Keys at distance ≥ window: key ≤ query − window.
            Some(window) if (window as i64) < total => {
                let far =
                    Tensor::f_ones([seq, total], options_bool)?.f_tril(past - window as i64)?;
                Some(view(&future.f_logical_or(&far)?)?)
            }
            _ => None,
        };
        if let Some(mask) = &options.attention_mask {
            if mask.size() != [batch, total] {
                return Err(Error::ShapeMismatch {
                    what: "attention_mask".into(),
                    expected: format!("[{batch}, {total}] (past and new positions)"),
                    actual: mask.size(),
                });
            }
            let padded_key = mask.f_to_device(device)?.f_eq(0)?.f_view([batch, 1, 1, total])?;
            // A query row with every key blocked (a padding query under left padding) would
            // otherwise attend uniformly to padding; let it attend to itself instead so that
            // no real position ever receives attention from or through padding.
            let eye = Tensor::f_ones([seq, total], options_bool)?
                .f_triu(past)?
                .f_tril(past)?
                .f_view([1, 1, seq, total])?;
            let unblock_lonely = |m: Tensor| -> Result<Tensor> {
                let m = m.f_logical_or(&padded_key)?;
                let row_blocked = m.f_all_dim(-1, true)?;
                Ok(m.f_logical_and(&row_blocked.f_logical_and(&eye)?.f_logical_not()?)?)
            };
            blocked = unblock_lonely(blocked)?;
            blocked_sliding = blocked_sliding.map(unblock_lonely).transpose()?;
        }
        Ok(Self {
            positions,
            rope_global,
            rope_local,
            blocked: blocked.f_contiguous()?,
            blocked_sliding: blocked_sliding.map(|b| b.f_contiguous()).transpose()?,
            padded: options.attention_mask.is_some(),
            past,
            relevance: options.relevance,
        })
    }

    /// The same inputs on `device`.
    fn to_device(&self, device: Device) -> Result<Self> {
        let move_angles = |a: &Option<rope::RopeAngles>| a.as_ref().map(|a| a.to_device(device));
        Ok(Self {
            positions: self.positions.f_to_device(device)?,
            rope_global: move_angles(&self.rope_global).transpose()?,
            rope_local: move_angles(&self.rope_local).transpose()?,
            blocked: self.blocked.f_to_device(device)?,
            blocked_sliding: self
                .blocked_sliding
                .as_ref()
                .map(|b| b.f_to_device(device))
                .transpose()?,
            padded: self.padded,
            past: self.past,
            relevance: self.relevance,
        })
    }

    fn rope(&self, sliding: bool) -> Option<&rope::RopeAngles> {
        if sliding {
            self.rope_local.as_ref().or(self.rope_global.as_ref())
        } else {
            self.rope_global.as_ref()
        }
    }
}
