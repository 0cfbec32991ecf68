//! GPT-2 (Radford et al. 2019) as a hooked forward pass: learned absolute positions,
//! pre-LayerNorm blocks, fused `c_attn` query/key/value projection, `gelu_new` (tanh
//! approximation), tied LM head.
//!
//! Hugging Face stores GPT-2 projections as `Conv1D` with `[in, out]` weights; they are kept
//! in that layout and applied as `x · W + b`.
//!
//! `hook_embed` fires on token + position embeddings (the input of block 0); [`Gpt2::embed`]
//! returns the token embeddings alone, so gradient methods attribute to token embeddings and
//! positions stay in the baseline.

use std::path::Path;

use explainability_core::{
    Architecture, Error, ForwardOptions, HookKind, HookPoint, Hooks, LanguageModel, ModelInfo,
    ModelOutput, Result, SplitMix64, check_positions,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::hf::{HfConfig, read_safetensors, safetensors_files};
use crate::loader::LoadOptions;
use crate::tokenizer::TextTokenizer;
use crate::weights::Checkpoint;

/// Hyper-parameters of a GPT-2 model.
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

impl Gpt2Config {
    /// Checks internal consistency.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_model", self.d_model),
            ("d_mlp", self.d_mlp),
            ("vocab_size", self.vocab_size),
            ("max_positions", self.max_positions),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid_config(format!("{name} must be positive")));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::invalid_config(format!(
                "d_model ({}) must be a multiple of n_heads ({})",
                self.d_model, self.n_heads
            )));
        }
        Ok(())
    }

    /// Width of one head.
    pub fn d_head(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// Reads a Hugging Face GPT-2 `config.json` (`n_layer`, `n_head`, `n_embd`, …).
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn from_hf(config: &HfConfig) -> Result<Self> {
        let d_model = config.usize("n_embd")?;
        Ok(Self {
            n_layers: config.usize("n_layer")?,
            n_heads: config.usize("n_head")?,
            d_model,
            d_mlp: config.opt_usize("n_inner")?.unwrap_or(4 * d_model),
            vocab_size: config.usize("vocab_size")?,
            max_positions: config.usize("n_positions")?,
            norm_eps: config.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
        })
    }
}

#[derive(Debug)]
struct Conv1D {
    /// `[in, out]`.
    w: Tensor,
    b: Tensor,
}

impl Conv1D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_matmul(&self.w)?.f_add(&self.b)?)
    }
}

#[derive(Debug)]
struct Norm {
    w: Tensor,
    b: Tensor,
}

impl Norm {
    fn forward(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        let d = x.size().last().copied().unwrap_or(0);
        Ok(x.f_layer_norm([d], Some(&self.w), Some(&self.b), eps, false)?)
    }
}

#[derive(Debug)]
struct Gpt2Block {
    ln_1: Norm,
    c_attn: Conv1D,
    c_proj: Conv1D,
    ln_2: Norm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
}

/// A GPT-2 transformer with hook points.
#[derive(Debug)]
pub struct Gpt2 {
    config: Gpt2Config,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Gpt2Block>,
    ln_f: Norm,
    kind: Kind,
    device: Device,
}

impl Gpt2 {
    /// Builds the model from a checkpoint with Hugging Face keys, with or without the
    /// `transformer.` prefix of `GPT2LMHeadModel`; a saved `lm_head.weight` (tied) and the
    /// old `attn.bias` / `attn.masked_bias` buffers are dropped.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::MissingWeight`], [`Error::WeightShape`],
    /// [`Error::UnusedWeights`].
    pub fn from_checkpoint(
        config: Gpt2Config,
        mut ckpt: Checkpoint,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        config.validate()?;
        ckpt.ignore_suffix(".attn.bias");
        ckpt.ignore_suffix(".attn.masked_bias");
        let prefix = if ckpt.contains("transformer.wte.weight") { "transformer." } else { "" };
        let d = config.d_model as i64;
        let mlp = config.d_mlp as i64;
        let wte = ckpt.take(
            &format!("{prefix}wte.weight"),
            &[config.vocab_size as i64, d],
            kind,
            device,
        )?;
        ckpt.take_optional("lm_head.weight", &[config.vocab_size as i64, d], kind, device)?;
        let mut take = |key: String, shape: &[i64]| ckpt.take(&key, shape, kind, device);
        let wpe = take(format!("{prefix}wpe.weight"), &[config.max_positions as i64, d])?;
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let p = format!("{prefix}h.{l}.");
            let mut norm = |name: &str| -> Result<Norm> {
                Ok(Norm {
                    w: take(format!("{p}{name}.weight"), &[d])?,
                    b: take(format!("{p}{name}.bias"), &[d])?,
                })
            };
            let ln_1 = norm("ln_1")?;
            let ln_2 = norm("ln_2")?;
            let mut conv = |name: &str, inp: i64, out: i64| -> Result<Conv1D> {
                Ok(Conv1D {
                    w: take(format!("{p}{name}.weight"), &[inp, out])?,
                    b: take(format!("{p}{name}.bias"), &[out])?,
                })
            };
            let c_attn = conv("attn.c_attn", d, 3 * d)?;
            let c_proj = conv("attn.c_proj", d, d)?;
            let c_fc = conv("mlp.c_fc", d, mlp)?;
            let mlp_proj = conv("mlp.c_proj", mlp, d)?;
            blocks.push(Gpt2Block { ln_1, c_attn, c_proj, ln_2, c_fc, mlp_proj });
        }
        let ln_f = Norm {
            w: take(format!("{prefix}ln_f.weight"), &[d])?,
            b: take(format!("{prefix}ln_f.bias"), &[d])?,
        };
        ckpt.finish()?;
        Ok(Self { config, wte, wpe, blocks, ln_f, kind, device })
    }

    /// The seeded random checkpoint of [`Gpt2::random`] (f32, CPU, unprefixed keys).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn random_checkpoint(config: &Gpt2Config, seed: u64) -> Result<Checkpoint> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let d = config.d_model as i64;
        let mlp = config.d_mlp as i64;
        let mut ckpt = Checkpoint::new();
        let mut put = |ckpt: &mut Checkpoint, key: String, shape: &[i64], std: f64| -> Result<()> {
            let n: i64 = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
            ckpt.insert(key, Tensor::f_from_slice(&values)?.f_reshape(shape)?);
            Ok(())
        };
        let norm = |ckpt: &mut Checkpoint, key: String| -> Result<()> {
            ckpt.insert(format!("{key}.weight"), Tensor::f_ones([d], (Kind::Float, Device::Cpu))?);
            ckpt.insert(format!("{key}.bias"), Tensor::f_zeros([d], (Kind::Float, Device::Cpu))?);
            Ok(())
        };
        put(&mut ckpt, "wte.weight".into(), &[config.vocab_size as i64, d], 1.0)?;
        put(&mut ckpt, "wpe.weight".into(), &[config.max_positions as i64, d], 0.1)?;
        for l in 0..config.n_layers {
            let p = format!("h.{l}.");
            norm(&mut ckpt, format!("{p}ln_1"))?;
            norm(&mut ckpt, format!("{p}ln_2"))?;
            for (name, inp, out, std) in [
                ("attn.c_attn", d, 3 * d, 0.15),
                ("attn.c_proj", d, d, 0.05),
                ("mlp.c_fc", d, mlp, 0.1),
                ("mlp.c_proj", mlp, d, 0.05),
            ] {
                put(&mut ckpt, format!("{p}{name}.weight"), &[inp, out], std)?;
                put(&mut ckpt, format!("{p}{name}.bias"), &[out], 0.02)?;
            }
        }
        norm(&mut ckpt, "ln_f".into())?;
        Ok(ckpt)
    }

    /// A model with seeded random weights (token embeddings σ = 1, `c_attn` σ = 0.15, other
    /// projections σ ≤ 0.1, unit LayerNorms), for tests that need no checkpoint.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn random(config: Gpt2Config, seed: u64, kind: Kind, device: Device) -> Result<Self> {
        let ckpt = Self::random_checkpoint(&config, seed)?;
        Self::from_checkpoint(config, ckpt, kind, device)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Floating-point kind of the weights.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Token embeddings of ids (positions are added in [`Gpt2::forward`]).
    ///
    /// # Shapes
    /// `[batch, pos]` → `[batch, pos, d_model]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`].
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let size = ids.size();
        if size.len() != 2 {
            return Err(Error::ShapeMismatch {
                what: "ids".into(),
                expected: "[batch, pos]".into(),
                actual: size,
            });
        }
        check_positions(size[1], self.config.max_positions)?;
        let ids = ids.f_to_kind(Kind::Int64)?.f_to_device(self.device)?;
        let vocab = self.config.vocab_size;
        let (min, max) = (ids.f_min()?.f_int64_value(&[])?, ids.f_max()?.f_int64_value(&[])?);
        if min < 0 {
            return Err(Error::TokenOutOfRange { id: min, vocab_size: vocab });
        }
        if max >= vocab as i64 {
            return Err(Error::TokenOutOfRange { id: max, vocab_size: vocab });
        }
        Ok(Tensor::f_embedding(&self.wte, &ids, -1, false, false)?)
    }

    /// Tied LM head: `hidden · W_Eᵀ` in f32.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`].
    pub fn unembed(&self, hidden: &Tensor) -> Result<Tensor> {
        let size = hidden.size();
        if size.last() != Some(&(self.config.d_model as i64)) {
            return Err(Error::ShapeMismatch {
                what: "hidden".into(),
                expected: format!("[..., {}]", self.config.d_model),
                actual: size,
            });
        }
        crate::ops::lm_head(hidden, &self.wte)
    }

    /// Runs the blocks from token embeddings, firing every hook point.
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
        let size = embeddings.size();
        let d = self.config.d_model as i64;
        if size.len() != 3 || size[2] != d {
            return Err(Error::ShapeMismatch {
                what: "embeddings".into(),
                expected: format!("[batch, pos, {d}]"),
                actual: size,
            });
        }
        let (batch, seq) = (size[0], size[1]);
        check_positions(seq, self.config.max_positions)?;
        let embeddings = embeddings.f_to_device(self.device)?.f_to_kind(self.kind)?;
        let positions = match &options.position_ids {
            Some(p) => {
                if p.size() != [batch, seq] {
                    return Err(Error::ShapeMismatch {
                        what: "position_ids".into(),
                        expected: format!("[{batch}, {seq}]"),
                        actual: p.size(),
                    });
                }
                let (lo, hi) = (p.f_min()?.f_int64_value(&[])?, p.f_max()?.f_int64_value(&[])?);
                if lo < 0 || hi >= self.config.max_positions as i64 {
                    return Err(Error::invalid_argument(format!(
                        "position ids must lie in 0..{}, got {lo}..={hi}",
                        self.config.max_positions
                    )));
                }
                p.f_to_device(self.device)?.f_to_kind(Kind::Int64)?
            }
            None => Tensor::f_arange(seq, (Kind::Int64, self.device))?
                .f_unsqueeze(0)?
                .f_expand([batch, seq], false)?,
        };
        let pos = Tensor::f_embedding(&self.wpe, &positions, -1, false, false)?;
        let blocked = blocked_mask(options, batch, seq, self.device)?;
        let mut residual = hooks.fire(HookPoint::embed(), embeddings.f_add(&pos)?)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            residual = self.block_forward(layer, block, residual, &blocked, hooks)?;
        }
        let normed = self.ln_f.forward(&residual, self.config.norm_eps)?;
        let final_hidden = hooks.fire(HookPoint::ln_final(), normed)?;
        let logits = self.unembed(&options.logit_hidden(&final_hidden)?)?;
        Ok(ModelOutput { logits, final_hidden })
    }

    fn block_forward(
        &self,
        layer: usize,
        block: &Gpt2Block,
        residual: Tensor,
        blocked: &Tensor,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        let eps = self.config.norm_eps;
        let resid_pre = hooks.fire(HookPoint::resid_pre(layer), residual)?;
        let (batch, seq) = (resid_pre.size()[0], resid_pre.size()[1]);
        let (n_heads, d_head) = (self.config.n_heads as i64, self.config.d_head() as i64);
        let d = n_heads * d_head;
        let qkv = block.c_attn.forward(&block.ln_1.forward(&resid_pre, eps)?)?;
        let split = |i: i64| qkv.f_narrow(-1, i * d, d)?.f_view([batch, seq, n_heads, d_head]);
        let q = hooks.fire(HookPoint::new(HookKind::Q, layer), split(0)?)?;
        let k = hooks.fire(HookPoint::new(HookKind::K, layer), split(1)?)?;
        let v = hooks.fire(HookPoint::new(HookKind::V, layer), split(2)?)?;
        let (q, k, v) = (q.f_transpose(1, 2)?, k.f_transpose(1, 2)?, v.f_transpose(1, 2)?);
        let scores =
            q.f_matmul(&k.f_transpose(-2, -1)?)?.f_mul_scalar((d_head as f64).powf(-0.5))?;
        let scores = scores.f_masked_fill(blocked, min_value(scores.kind()))?;
        let scores = hooks.fire(HookPoint::attn_scores(layer), scores)?;
        let pattern = scores.f_softmax(-1, Kind::Float)?.f_to_kind(self.kind)?;
        let pattern = hooks.fire(HookPoint::pattern(layer), pattern)?;
        let z = pattern.f_matmul(&v)?.f_transpose(1, 2)?.f_contiguous()?;
        let z = hooks.fire(HookPoint::z(layer), z)?;
        let attn_out = block.c_proj.forward(&z.f_reshape([batch, seq, d])?)?;
        let attn_out = hooks.fire(HookPoint::attn_out(layer), attn_out)?;
        let resid_mid = hooks.fire(HookPoint::resid_mid(layer), resid_pre.f_add(&attn_out)?)?;
        let post = block.c_fc.forward(&block.ln_2.forward(&resid_mid, eps)?)?.f_gelu("tanh")?;
        let post = hooks.fire(HookPoint::new(HookKind::MlpPost, layer), post)?;
        let mlp_out = hooks.fire(HookPoint::mlp_out(layer), block.mlp_proj.forward(&post)?)?;
        hooks.fire(HookPoint::resid_post(layer), resid_mid.f_add(&mlp_out)?)
    }

    /// Parameters under TransformerLens-style names (Conv1D weights in their `[in, out]`
    /// layout), sharing storage with the model.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut params = vec![
            ("embed.W_E".to_owned(), self.wte.shallow_clone()),
            ("pos_embed.W_pos".to_owned(), self.wpe.shallow_clone()),
        ];
        for (l, b) in self.blocks.iter().enumerate() {
            let mut push = |name: &str, t: &Tensor| {
                params.push((format!("blocks.{l}.{name}"), t.shallow_clone()));
            };
            push("ln1.w", &b.ln_1.w);
            push("ln1.b", &b.ln_1.b);
            push("attn.W_QKV", &b.c_attn.w);
            push("attn.b_QKV", &b.c_attn.b);
            push("attn.W_O", &b.c_proj.w);
            push("attn.b_O", &b.c_proj.b);
            push("ln2.w", &b.ln_2.w);
            push("ln2.b", &b.ln_2.b);
            push("mlp.W_in", &b.c_fc.w);
            push("mlp.b_in", &b.c_fc.b);
            push("mlp.W_out", &b.mlp_proj.w);
            push("mlp.b_out", &b.mlp_proj.b);
        }
        params.push(("ln_final.w".to_owned(), self.ln_f.w.shallow_clone()));
        params.push(("ln_final.b".to_owned(), self.ln_f.b.shallow_clone()));
        params
    }
}

/// `[batch, 1, pos, pos]` true where a query may not attend to a key: the future, and padded
/// keys; a query row left with no key (padding under left padding) attends to itself.
fn blocked_mask(options: &ForwardOptions, batch: i64, seq: i64, device: Device) -> Result<Tensor> {
    let bool_opts = (Kind::Bool, device);
    let future = Tensor::f_ones([seq, seq], bool_opts)?.f_triu(1)?;
    let mut blocked = future.f_view([1, 1, seq, seq])?.f_expand([batch, 1, seq, seq], false)?;
    if let Some(mask) = &options.attention_mask {
        if mask.size() != [batch, seq] {
            return Err(Error::ShapeMismatch {
                what: "attention_mask".into(),
                expected: format!("[{batch}, {seq}]"),
                actual: mask.size(),
            });
        }
        let padded_key = mask.f_to_device(device)?.f_eq(0)?.f_view([batch, 1, 1, seq])?;
        blocked = blocked.f_logical_or(&padded_key)?;
        let eye = Tensor::f_eye(seq, bool_opts)?.f_view([1, 1, seq, seq])?;
        let row_blocked = blocked.f_all_dim(-1, true)?;
        blocked = blocked.f_logical_and(&row_blocked.f_logical_and(&eye)?.f_logical_not()?)?;
    }
    Ok(blocked.f_contiguous()?)
}

fn min_value(kind: Kind) -> f64 {
    match kind {
        Kind::Half => f64::from(half::f16::MIN),
        Kind::BFloat16 => f64::from(half::bf16::MIN),
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
}

/// GPT-2 with its tokenizer: the [`LanguageModel`] implementation.
#[derive(Debug)]
pub struct Gpt2Model {
    model: Gpt2,
    tokenizer: TextTokenizer,
    info: ModelInfo,
}

impl Gpt2Model {
    /// Assembles a model from parts (tokenizer ids past the embedding are refused at
    /// embedding time).
    pub fn new(model: Gpt2, tokenizer: TextTokenizer, name: String) -> Self {
        let cfg = model.config().clone();
        let info = ModelInfo {
            name,
            architecture: Architecture::Gpt2,
            n_layers: cfg.n_layers,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_heads,
            d_model: cfg.d_model,
            d_head: cfg.d_head(),
            d_mlp: cfg.d_mlp,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
            causal: true,
            special_tokens: tokenizer.special_tokens(),
        };
        Self { model, tokenizer, info }
    }

    /// Loads a Hugging Face GPT-2 folder.
    ///
    /// # Errors
    /// JSON, safetensors and weight errors.
    pub fn from_hf_dir(dir: &Path, options: LoadOptions) -> Result<Self> {
        options.check_device()?;
        let config = HfConfig::read(dir)?;
        let gpt2 = Gpt2Config::from_hf(&config)?;
        let tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
        let ckpt = read_safetensors(&safetensors_files(dir)?)?;
        let model = Gpt2::from_checkpoint(gpt2, ckpt, options.precision.kind(), options.device)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self::new(model, tokenizer, name))
    }

    /// The transformer.
    pub fn transformer(&self) -> &Gpt2 {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
}

impl LanguageModel for Gpt2Model {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn device(&self) -> Device {
        self.model.device()
    }
    fn kind(&self) -> Kind {
        self.model.kind()
    }
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<i64>> {
        let ids = self.tokenizer.encode(text, add_special_tokens)?;
        if ids.is_empty() {
            return Err(Error::EmptyText);
        }
        Ok(ids)
    }
    fn decode(&self, ids: &[i64]) -> Result<String> {
        self.tokenizer.decode(ids, false)
    }
    fn token_strings(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.tokenizer.token_strings(ids)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.model.embed(ids)
    }
    fn forward_embeddings(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        self.model.forward(embeddings, options, hooks)
    }
    fn unembed(&self, final_hidden: &Tensor) -> Result<Tensor> {
        self.model.unembed(final_hidden)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.model.named_parameters()
    }
}
