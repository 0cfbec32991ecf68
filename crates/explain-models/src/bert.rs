//! BERT-style bidirectional encoders (BERT, MiniLM; arXiv:1810.04805) as a hooked forward
//! pass: learned absolute positions, token-type embeddings, post-LayerNorm blocks, GELU (erf),
//! optional pooler and sequence-classification head.
//!
//! # Hook points
//! - `hook_embed` fires on word + position + token-type embeddings **after** the embedding
//!   LayerNorm, i.e. on the input of block 0 (what the residual stream starts from).
//!   [`Bert::embed`] returns the word embeddings alone, so gradient methods attribute to
//!   word embeddings and a zero baseline keeps positions and token types.
//! - Blocks are post-norm: `hook_resid_mid` is `LayerNorm(resid_pre + attn_out)` and
//!   `hook_resid_post` is `LayerNorm(resid_mid + mlp_out)`, as BERT computes them.
//! - `ln_final.hook_normalized` fires on the last block's output (BERT has no final norm).
//!
//! # Logits
//! With a classification head (`BertForSequenceClassification`), [`ModelOutput::logits`] are
//! the classifier logits `[batch, 1, num_labels]` computed from the pooled `[CLS]` state; a
//! class is then explained by `Target::Token { token: Id(class), position: Some(0), .. }`.
//! A bare encoder has no head: its logits are an empty `[batch, pos, 0]` tensor and
//! [`Bert::unembed`] returns [`Error::NoHead`]; explain it through its hidden states (e.g.
//! sentence similarity of mean-pooled embeddings).
//!
//! Token types are all 0 (single-segment input). Padded keys (mask 0) get exactly zero
//! attention; mean pooling ([`mean_pool`]) ignores padded positions.

use std::path::Path;

use explainability_core::{
    Architecture, BlockwiseForward, Error, ForwardOptions, HookKind, HookPoint, Hooks,
    LanguageModel, ModelInfo, ModelOutput, RelevanceRule, Result, SplitMix64, check_positions,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::hf::{HfConfig, read_safetensors, safetensors_files};
use crate::loader::LoadOptions;
use crate::model::{Network, TokenizedModel};
use crate::tokenizer::TextTokenizer;
use crate::weights::Checkpoint;

/// The operation a BERT encoder refuses when asked for a key/value cache.
pub(crate) const KV_CACHE_OPERATION: &str =
    "key/value cache (each position of a bidirectional encoder depends on later ones)";

/// Hyper-parameters of a BERT encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Number of blocks.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Residual width.
    pub d_model: usize,
    /// MLP hidden width.
    pub d_mlp: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Learned positions (512 for BERT).
    pub max_positions: usize,
    /// Token-type vocabulary (2 for BERT).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub norm_eps: f64,
    /// Classes of a sequence-classification head; `None` for a bare encoder.
    pub num_labels: Option<usize>,
    /// Whether the checkpoint carries a pooler (`[CLS]` dense + tanh).
    pub pooler: bool,
}

impl BertConfig {
    /// Checks internal consistency.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] describing the first problem.
    pub fn validate(&self) -> Result<()> {
        crate::ops::require_positive(&[
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_model", self.d_model),
            ("d_mlp", self.d_mlp),
            ("vocab_size", self.vocab_size),
            ("max_positions", self.max_positions),
            ("type_vocab_size", self.type_vocab_size),
        ])?;
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::invalid_config(format!(
                "d_model ({}) must be a multiple of n_heads ({})",
                self.d_model, self.n_heads
            )));
        }
        if self.num_labels == Some(0) {
            return Err(Error::invalid_config("num_labels must be positive"));
        }
        if self.num_labels.is_some() && !self.pooler {
            return Err(Error::invalid_config("a classification head needs the pooler"));
        }
        Ok(())
    }

    /// Width of one head.
    pub fn d_head(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// Reads the hyper-parameters from a Hugging Face `config.json` (`model_type: bert`).
    /// A classification head is expected when `architectures` names
    /// `BertForSequenceClassification`; its size is `num_labels` or the size of `id2label`.
    ///
    /// # Errors
    /// [`Error::MissingMetadata`].
    pub fn from_hf(config: &HfConfig) -> Result<Self> {
        let classifier =
            config.architectures().iter().any(|a| a.ends_with("ForSequenceClassification"));
        let num_labels = if classifier {
            Some(config.opt_usize("num_labels")?.or(config.map_len("id2label")).unwrap_or(2))
        } else {
            None
        };
        Ok(Self {
            n_layers: config.usize("num_hidden_layers")?,
            n_heads: config.usize("num_attention_heads")?,
            d_model: config.usize("hidden_size")?,
            d_mlp: config.usize("intermediate_size")?,
            vocab_size: config.usize("vocab_size")?,
            max_positions: config.usize("max_position_embeddings")?,
            type_vocab_size: config.opt_usize("type_vocab_size")?.unwrap_or(2),
            norm_eps: config.opt_f64("layer_norm_eps")?.unwrap_or(1e-12),
            num_labels,
            pooler: true,
        })
    }
}

#[derive(Debug)]
struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_matmul(&self.w.f_tr()?)?.f_add(&self.b)?)
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

    /// LayerNorm, whose standard deviation is a constant of the backward pass in a relevance
    /// mode (the identity rule on norms; the mean is not detached, as in LXT 2.1).
    fn forward_with(
        &self,
        x: &Tensor,
        eps: f64,
        relevance: Option<RelevanceRule>,
    ) -> Result<Tensor> {
        if relevance.is_none() {
            return self.forward(x, eps);
        }
        let centred = x.f_sub(&x.f_mean_dim(-1, true, x.kind())?)?;
        let var = centred.f_detach()?.f_pow_tensor_scalar(2)?.f_mean_dim(-1, true, x.kind())?;
        let scale = var.f_add_scalar(eps)?.f_rsqrt()?;
        Ok(centred.f_mul(&scale)?.f_mul(&self.w)?.f_add(&self.b)?)
    }
}

#[derive(Debug)]
struct BertBlock {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    mlp_norm: Norm,
}

/// A BERT encoder with hook points.
#[derive(Debug)]
pub struct Bert {
    config: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: Norm,
    blocks: Vec<BertBlock>,
    pooler: Option<Linear>,
    classifier: Option<Linear>,
    kind: Kind,
    device: Device,
}

impl Bert {
    /// Builds the encoder from a checkpoint. Keys may carry a `bert.` prefix (as
    /// `BertForSequenceClassification` saves them) or not (`BertModel`, sentence-transformers).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::MissingWeight`], [`Error::WeightShape`],
    /// [`Error::UnusedWeights`]; [`Error::NoHead`] when the config expects a classifier the
    /// checkpoint lacks.
    pub fn from_checkpoint(
        config: BertConfig,
        mut ckpt: Checkpoint,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        config.validate()?;
        ckpt.ignore_suffix("position_ids");
        let prefix =
            if ckpt.contains("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let d = config.d_model as i64;
        let mlp = config.d_mlp as i64;
        let mut take =
            |key: &str, shape: &[i64]| ckpt.take(&format!("{prefix}{key}"), shape, kind, device);
        let word = take("embeddings.word_embeddings.weight", &[config.vocab_size as i64, d])?;
        let position =
            take("embeddings.position_embeddings.weight", &[config.max_positions as i64, d])?;
        let token_type =
            take("embeddings.token_type_embeddings.weight", &[config.type_vocab_size as i64, d])?;
        let embed_norm = Norm {
            w: take("embeddings.LayerNorm.weight", &[d])?,
            b: take("embeddings.LayerNorm.bias", &[d])?,
        };
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let p = format!("encoder.layer.{l}.");
            let mut lin = |name: &str, out: i64, inp: i64| -> Result<Linear> {
                Ok(Linear {
                    w: take(&format!("{p}{name}.weight"), &[out, inp])?,
                    b: take(&format!("{p}{name}.bias"), &[out])?,
                })
            };
            let q = lin("attention.self.query", d, d)?;
            let k = lin("attention.self.key", d, d)?;
            let v = lin("attention.self.value", d, d)?;
            let o = lin("attention.output.dense", d, d)?;
            let up = lin("intermediate.dense", mlp, d)?;
            let down = lin("output.dense", d, mlp)?;
            let attn_norm = Norm {
                w: take(&format!("{p}attention.output.LayerNorm.weight"), &[d])?,
                b: take(&format!("{p}attention.output.LayerNorm.bias"), &[d])?,
            };
            let mlp_norm = Norm {
                w: take(&format!("{p}output.LayerNorm.weight"), &[d])?,
                b: take(&format!("{p}output.LayerNorm.bias"), &[d])?,
            };
            blocks.push(BertBlock { q, k, v, o, attn_norm, up, down, mlp_norm });
        }
        let pooler = if config.pooler {
            let w =
                ckpt.take_optional(&format!("{prefix}pooler.dense.weight"), &[d, d], kind, device)?;
            let b =
                ckpt.take_optional(&format!("{prefix}pooler.dense.bias"), &[d], kind, device)?;
            match (w, b) {
                (Some(w), Some(b)) => Some(Linear { w, b }),
                _ => None,
            }
        } else {
            None
        };
        let classifier = match config.num_labels {
            Some(n) => {
                let n = n as i64;
                let w = ckpt.take_optional("classifier.weight", &[n, d], kind, device)?;
                let b = ckpt.take_optional("classifier.bias", &[n], kind, device)?;
                match (w, b, &pooler) {
                    (Some(w), Some(b), Some(_)) => Some(Linear { w, b }),
                    _ => {
                        return Err(Error::NoHead {
                            model: "bert".into(),
                            head: "classification".into(),
                        });
                    }
                }
            }
            None => None,
        };
        ckpt.finish()?;
        Ok(Self {
            config,
            word,
            position,
            token_type,
            embed_norm,
            blocks,
            pooler,
            classifier,
            kind,
            device,
        })
    }

    /// An encoder with seeded random weights (embeddings σ = 1, projections σ = 0.15 for
    /// query/key and 0.02 otherwise, LayerNorm weights in [0.8, 1.2], biases σ = 0.02), for
    /// tests that need no checkpoint.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn random(config: BertConfig, seed: u64, kind: Kind, device: Device) -> Result<Self> {
        let ckpt = Self::random_checkpoint(&config, seed)?;
        Self::from_checkpoint(config, ckpt, kind, device)
    }

    /// The seeded random checkpoint [`Bert::random`] builds from (f32, CPU, unprefixed keys),
    /// for tests that alter it before loading.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`].
    pub fn random_checkpoint(config: &BertConfig, seed: u64) -> Result<Checkpoint> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let mut ckpt = Checkpoint::new();
        let d = config.d_model as i64;
        let mlp = config.d_mlp as i64;
        let mut normal = |shape: &[i64], std: f64| -> Result<Tensor> {
            let n: i64 = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
            Ok(Tensor::f_from_slice(&values)?.f_reshape(shape)?)
        };
        let mut put = |ckpt: &mut Checkpoint, key: String, shape: &[i64], std: f64| -> Result<()> {
            ckpt.insert(key, normal(shape, std)?);
            Ok(())
        };
        let norm = |ckpt: &mut Checkpoint, key: &str| -> Result<()> {
            ckpt.insert(
                format!("{key}.weight"),
                Tensor::f_full([d], 1.0, (Kind::Float, Device::Cpu))?,
            );
            ckpt.insert(format!("{key}.bias"), Tensor::f_zeros([d], (Kind::Float, Device::Cpu))?);
            Ok(())
        };
        put(
            &mut ckpt,
            "embeddings.word_embeddings.weight".into(),
            &[config.vocab_size as i64, d],
            1.0,
        )?;
        put(
            &mut ckpt,
            "embeddings.position_embeddings.weight".into(),
            &[config.max_positions as i64, d],
            0.1,
        )?;
        put(
            &mut ckpt,
            "embeddings.token_type_embeddings.weight".into(),
            &[config.type_vocab_size as i64, d],
            0.1,
        )?;
        norm(&mut ckpt, "embeddings.LayerNorm")?;
        for l in 0..config.n_layers {
            let p = format!("encoder.layer.{l}.");
            for (name, out, inp, std) in [
                ("attention.self.query", d, d, 0.15),
                ("attention.self.key", d, d, 0.15),
                ("attention.self.value", d, d, 0.1),
                ("attention.output.dense", d, d, 0.1),
                ("intermediate.dense", mlp, d, 0.1),
                ("output.dense", d, mlp, 0.1),
            ] {
                put(&mut ckpt, format!("{p}{name}.weight"), &[out, inp], std)?;
                put(&mut ckpt, format!("{p}{name}.bias"), &[out], 0.02)?;
            }
            norm(&mut ckpt, &format!("{p}attention.output.LayerNorm"))?;
            norm(&mut ckpt, &format!("{p}output.LayerNorm"))?;
        }
        if config.pooler {
            put(&mut ckpt, "pooler.dense.weight".into(), &[d, d], 0.1)?;
            put(&mut ckpt, "pooler.dense.bias".into(), &[d], 0.02)?;
        }
        if let Some(n) = config.num_labels {
            put(&mut ckpt, "classifier.weight".into(), &[n as i64, d], 0.5)?;
            put(&mut ckpt, "classifier.bias".into(), &[n as i64], 0.02)?;
        }
        Ok(ckpt)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &BertConfig {
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

    /// Whether a sequence-classification head is present.
    pub fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }

    /// Word embeddings of ids (positions and token types are added in [`Bert::forward`]).
    ///
    /// # Shapes
    /// `[batch, pos]` int64 → `[batch, pos, d_model]`.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], [`Error::SequenceTooLong`], [`Error::TokenOutOfRange`].
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        crate::ops::embedding(&self.word, ids, self.config.max_positions, self.device)
    }

    /// There is no LM head on an encoder.
    ///
    /// # Errors
    /// Always [`Error::NoHead`].
    pub fn unembed(&self, _hidden: &Tensor) -> Result<Tensor> {
        Err(Error::NoHead { model: "bert".into(), head: "language-model".into() })
    }

    /// Runs the encoder from word embeddings, firing every hook point. A key/value cache
    /// ([`ForwardOptions::past_key_values`], [`ForwardOptions::return_key_values`]) is
    /// refused: every position of a bidirectional encoder depends on every other.
    ///
    /// # Shapes
    /// `embeddings`: `[batch, pos, d_model]`; `final_hidden` the same; logits
    /// `[batch, 1, num_labels]` with a classifier, `[batch, pos, 0]` without.
    ///
    /// # Errors
    /// Shape and length errors ([`Error::SequenceTooLong`] beyond the learned positions), and
    /// whatever a hook returns.
    pub fn forward(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        let inputs = self.forward_inputs(embeddings, options)?;
        let mut residual = self.input_stage(embeddings, &inputs, hooks)?;
        for (layer, block) in self.blocks.iter().enumerate() {
            let blocked = inputs.blocked.as_ref();
            residual =
                self.block_forward(layer, block, residual, blocked, inputs.relevance, hooks)?;
        }
        self.output_stage(&residual, options, hooks)
    }

    /// The forward pass split into stages for inputs shaped like `embeddings` (see
    /// [`BlockwiseForward`]); running them in order equals [`Bert::forward`].
    ///
    /// # Errors
    /// Shape and length errors of [`Bert::forward`].
    pub fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<BertStages<'a>> {
        Ok(BertStages { model: self, inputs: self.forward_inputs(embeddings, options)?, options })
    }

    /// Checks the embeddings and prepares positions and the padding mask.
    fn forward_inputs(&self, embeddings: &Tensor, options: &ForwardOptions) -> Result<BertInputs> {
        let size = embeddings.size();
        let d = self.config.d_model as i64;
        if size.len() != 3 || size[2] != d {
            return Err(Error::ShapeMismatch {
                what: "embeddings".into(),
                expected: format!("[batch, pos, {d}]"),
                actual: size,
            });
        }
        if options.past_key_values.is_some() || options.return_key_values {
            return Err(Error::UnsupportedOperation {
                model: "BERT encoder".into(),
                operation: KV_CACHE_OPERATION.into(),
            });
        }
        let (batch, seq) = (size[0], size[1]);
        check_positions(seq, self.config.max_positions)?;
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
        // [batch, 1, 1, pos] true where the key is padding.
        let blocked = match &options.attention_mask {
            Some(mask) => {
                if mask.size() != [batch, seq] {
                    return Err(Error::ShapeMismatch {
                        what: "attention_mask".into(),
                        expected: format!("[{batch}, {seq}]"),
                        actual: mask.size(),
                    });
                }
                Some(mask.f_to_device(self.device)?.f_eq(0)?.f_view([batch, 1, 1, seq])?)
            }
            None => None,
        };
        Ok(BertInputs { positions, blocked, relevance: options.relevance })
    }

    /// Word embeddings → the residual stream entering block 0 (positions, token type,
    /// embedding norm, `hook_embed`).
    fn input_stage(
        &self,
        embeddings: &Tensor,
        inputs: &BertInputs,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        let embeddings = embeddings.f_to_device(self.device)?.f_to_kind(self.kind)?;
        let positions = &inputs.positions;
        let pos_emb = Tensor::f_embedding(&self.position, positions, -1, false, false)?;
        let type_emb = self.token_type.f_select(0, 0)?;
        let summed = embeddings.f_add(&pos_emb)?.f_add(&type_emb)?;
        let normed =
            self.embed_norm.forward_with(&summed, self.config.norm_eps, inputs.relevance)?;
        hooks.fire(HookPoint::embed(), normed)
    }

    /// The last block's output → `hook_ln_final` and the classifier's logits.
    fn output_stage(
        &self,
        residual: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        let batch = residual.size()[0];
        let final_hidden = hooks.fire(HookPoint::ln_final(), residual.shallow_clone())?;
        let logits = match (&self.classifier, &self.pooler) {
            (Some(classifier), Some(pooler)) => {
                let cls = final_hidden.f_select(1, 0)?;
                let pooled = pooler.forward(&cls)?;
                let pooled = match options.relevance {
                    Some(rule) => rule.activation(&pooled, |x| Ok(x.f_tanh()?))?,
                    None => pooled.f_tanh()?,
                };
                classifier.forward(&pooled)?.f_unsqueeze(1)?.f_to_kind(Kind::Float)?
            }
            _ => {
                let hidden = options.logit_hidden(&final_hidden)?;
                let rows = hidden.size()[1];
                Tensor::f_zeros([batch, rows, 0], (Kind::Float, self.device))?
            }
        };
        Ok(ModelOutput { logits, final_hidden, key_values: None })
    }

    fn block_forward(
        &self,
        layer: usize,
        block: &BertBlock,
        residual: Tensor,
        blocked: Option<&Tensor>,
        relevance: Option<RelevanceRule>,
        hooks: &mut Hooks<'_>,
    ) -> Result<Tensor> {
        let eps = self.config.norm_eps;
        let resid_pre = hooks.fire(HookPoint::resid_pre(layer), residual)?;
        let (batch, seq) = (resid_pre.size()[0], resid_pre.size()[1]);
        let (n_heads, d_head) = (self.config.n_heads as i64, self.config.d_head() as i64);
        let split = |t: Tensor| t.f_view([batch, seq, n_heads, d_head]);
        let q =
            hooks.fire(HookPoint::new(HookKind::Q, layer), split(block.q.forward(&resid_pre)?)?)?;
        let k =
            hooks.fire(HookPoint::new(HookKind::K, layer), split(block.k.forward(&resid_pre)?)?)?;
        let v =
            hooks.fire(HookPoint::new(HookKind::V, layer), split(block.v.forward(&resid_pre)?)?)?;
        let (q, k, v) = (q.f_transpose(1, 2)?, k.f_transpose(1, 2)?, v.f_transpose(1, 2)?);
        let (q, k, v) = match relevance {
            Some(rule) => {
                let [q, k, v] = rule.attention_inputs(&q, &k, &v)?;
                (q, k, v)
            }
            None => (q, k, v),
        };
        let scores =
            q.f_matmul(&k.f_transpose(-2, -1)?)?.f_mul_scalar((d_head as f64).powf(-0.5))?;
        let scores = match blocked {
            Some(b) => scores.f_masked_fill(b, crate::ops::min_value(scores.kind()))?,
            None => scores,
        };
        let scores = hooks.fire(HookPoint::attn_scores(layer), scores)?;
        let pattern = scores.f_softmax(-1, Kind::Float)?.f_to_kind(self.kind)?;
        let pattern = hooks.fire(HookPoint::pattern(layer), pattern)?;
        let z = pattern.f_matmul(&v)?.f_transpose(1, 2)?.f_contiguous()?;
        let z = hooks.fire(HookPoint::z(layer), z)?;
        let attn_out = block.o.forward(&z.f_reshape([batch, seq, n_heads * d_head])?)?;
        let attn_out = hooks.fire(HookPoint::attn_out(layer), attn_out)?;
        let resid_mid =
            block.attn_norm.forward_with(&resid_pre.f_add(&attn_out)?, eps, relevance)?;
        let resid_mid = hooks.fire(HookPoint::resid_mid(layer), resid_mid)?;
        let up = block.up.forward(&resid_mid)?;
        let post = match relevance {
            Some(rule) => rule.activation(&up, |x| Ok(x.f_gelu("none")?))?,
            None => up.f_gelu("none")?,
        };
        let post = hooks.fire(HookPoint::new(HookKind::MlpPost, layer), post)?;
        let mlp_out = hooks.fire(HookPoint::mlp_out(layer), block.down.forward(&post)?)?;
        let resid_post =
            block.mlp_norm.forward_with(&resid_mid.f_add(&mlp_out)?, eps, relevance)?;
        hooks.fire(HookPoint::resid_post(layer), resid_post)
    }

    /// Parameters under TransformerLens-style names, sharing storage with the model.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut params = vec![
            ("embed.W_E".to_owned(), self.word.shallow_clone()),
            ("pos_embed.W_pos".to_owned(), self.position.shallow_clone()),
            ("token_type_embed.W_token_type".to_owned(), self.token_type.shallow_clone()),
            ("embed.ln.w".to_owned(), self.embed_norm.w.shallow_clone()),
            ("embed.ln.b".to_owned(), self.embed_norm.b.shallow_clone()),
        ];
        for (l, b) in self.blocks.iter().enumerate() {
            let mut push = |name: &str, t: &Tensor| {
                params.push((format!("blocks.{l}.{name}"), t.shallow_clone()));
            };
            push("attn.W_Q", &b.q.w);
            push("attn.b_Q", &b.q.b);
            push("attn.W_K", &b.k.w);
            push("attn.b_K", &b.k.b);
            push("attn.W_V", &b.v.w);
            push("attn.b_V", &b.v.b);
            push("attn.W_O", &b.o.w);
            push("attn.b_O", &b.o.b);
            push("ln1.w", &b.attn_norm.w);
            push("ln1.b", &b.attn_norm.b);
            push("mlp.W_in", &b.up.w);
            push("mlp.b_in", &b.up.b);
            push("mlp.W_out", &b.down.w);
            push("mlp.b_out", &b.down.b);
            push("ln2.w", &b.mlp_norm.w);
            push("ln2.b", &b.mlp_norm.b);
        }
        if let Some(p) = &self.pooler {
            params.push(("pooler.W".to_owned(), p.w.shallow_clone()));
            params.push(("pooler.b".to_owned(), p.b.shallow_clone()));
        }
        if let Some(c) = &self.classifier {
            params.push(("classifier.W".to_owned(), c.w.shallow_clone()));
            params.push(("classifier.b".to_owned(), c.b.shallow_clone()));
        }
        params
    }
}

/// Per-forward inputs shared by all blocks of an encoder.
struct BertInputs {
    /// `[batch, pos]` int64 positions.
    positions: Tensor,
    /// `[batch, 1, 1, pos]`, true where the key is padding; `None` without a mask.
    blocked: Option<Tensor>,
    /// The relevance rule of [`ForwardOptions::relevance`].
    relevance: Option<RelevanceRule>,
}

/// [`Bert::forward`] as separate stages, for inputs of one shape and one set of options.
pub struct BertStages<'a> {
    model: &'a Bert,
    inputs: BertInputs,
    options: &'a ForwardOptions,
}

impl std::fmt::Debug for BertStages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertStages").field("n_blocks", &self.model.blocks.len()).finish()
    }
}

impl BlockwiseForward for BertStages<'_> {
    fn n_blocks(&self) -> usize {
        self.model.blocks.len()
    }

    fn input(&self, embeddings: &Tensor, hooks: &mut Hooks<'_>) -> Result<Tensor> {
        self.model.input_stage(embeddings, &self.inputs, hooks)
    }

    fn block(&self, layer: usize, residual: &Tensor, hooks: &mut Hooks<'_>) -> Result<Tensor> {
        let n_layers = self.model.blocks.len();
        let block =
            self.model.blocks.get(layer).ok_or(Error::LayerOutOfRange { layer, n_layers })?;
        let blocked = self.inputs.blocked.as_ref();
        let (residual, relevance) = (residual.shallow_clone(), self.inputs.relevance);
        self.model.block_forward(layer, block, residual, blocked, relevance, hooks)
    }

    fn output(&self, residual: &Tensor, hooks: &mut Hooks<'_>) -> Result<ModelOutput> {
        self.model.output_stage(residual, self.options, hooks)
    }
}

/// Mean of `hidden` over real positions (mask 1), as sentence-transformers pools
/// all-MiniLM-L6-v2 (which then L2-normalises; cosine similarity does not need that step).
///
/// # Shapes
/// `hidden`: `[batch, pos, d]`, `mask`: `[batch, pos]` (`None`: every position) → `[batch, d]`.
///
/// # Errors
/// [`Error::ShapeMismatch`].
pub fn mean_pool(hidden: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let size = hidden.size();
    if size.len() != 3 {
        return Err(Error::ShapeMismatch {
            what: "hidden".into(),
            expected: "[batch, pos, d]".into(),
            actual: size,
        });
    }
    match mask {
        None => Ok(hidden.f_mean_dim(1, false, hidden.kind())?),
        Some(mask) => {
            if mask.size() != size[..2] {
                return Err(Error::ShapeMismatch {
                    what: "attention_mask".into(),
                    expected: format!("[{}, {}]", size[0], size[1]),
                    actual: mask.size(),
                });
            }
            let m = mask.f_to_device(hidden.device())?.f_to_kind(hidden.kind())?.f_unsqueeze(-1)?;
            let summed = hidden.f_mul(&m)?.f_sum_dim_intlist(1, false, hidden.kind())?;
            let count = m.f_sum_dim_intlist(1, false, hidden.kind())?.f_clamp_min(1e-9)?;
            Ok(summed.f_div(&count)?)
        }
    }
}

/// A BERT encoder with its WordPiece tokenizer.
pub type BertModel = TokenizedModel<Bert>;

impl BertModel {
    /// Assembles a model from parts.
    pub fn new(model: Bert, tokenizer: TextTokenizer, name: String) -> Self {
        let cfg = model.config().clone();
        let info = ModelInfo {
            name,
            architecture: Architecture::Bert,
            n_layers: cfg.n_layers,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_heads,
            d_model: cfg.d_model,
            d_head: cfg.d_head(),
            d_mlp: cfg.d_mlp,
            vocab_size: cfg.vocab_size,
            max_positions: cfg.max_positions,
            causal: false,
            special_tokens: tokenizer.special_tokens(),
        };
        Self { network: model, tokenizer, info }
    }

    /// Loads a Hugging Face BERT folder (`BertModel` or `BertForSequenceClassification`).
    ///
    /// # Errors
    /// JSON, safetensors and weight errors; [`Error::NoHead`] for a classification config
    /// without classifier weights.
    pub fn from_hf_dir(dir: &Path, options: LoadOptions) -> Result<Self> {
        options.check_device()?;
        options.check_resident(dir)?;
        let config = HfConfig::read(dir)?;
        let bert_config = BertConfig::from_hf(&config)?;
        let tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
        let ckpt = read_safetensors(&safetensors_files(dir)?)?;
        let mut model =
            Bert::from_checkpoint(bert_config, ckpt, options.precision.kind(), options.device);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Err(Error::NoHead { head, .. }) = model {
            model = Err(Error::NoHead { model: name.clone(), head });
        }
        Ok(Self::new(model?, tokenizer, name))
    }

    /// Sentence embeddings of texts as sentence-transformers computes them for
    /// all-MiniLM-L6-v2: `[CLS] … [SEP]`, right padding, mean pooling over real tokens, L2
    /// normalisation.
    ///
    /// # Shapes
    /// → `[texts, d_model]`, f32.
    ///
    /// # Errors
    /// Tokenizer and forward errors.
    pub fn sentence_embeddings(&self, texts: &[&str]) -> Result<Tensor> {
        let (ids, mask) = self.batch(texts)?;
        let _guard = tch::no_grad_guard();
        let options =
            ForwardOptions { attention_mask: Some(mask.shallow_clone()), ..Default::default() };
        let out = self.forward_ids(&ids, &options, &mut Hooks::new())?;
        let pooled = mean_pool(&out.final_hidden.f_to_kind(Kind::Float)?, Some(&mask))?;
        let norm = pooled.f_norm_scalaropt_dim(2.0, [-1], true)?.f_clamp_min(1e-12)?;
        Ok(pooled.f_div(&norm)?)
    }

    /// Right-padded `[texts, pos]` ids (pad id or 0) and the matching attention mask.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no texts; tokenizer errors; [`Error::SequenceTooLong`].
    pub fn batch(&self, texts: &[&str]) -> Result<(Tensor, Tensor)> {
        if texts.is_empty() {
            return Err(Error::invalid_argument("at least one text is needed"));
        }
        let encoded = texts.iter().map(|t| self.encode(t, true)).collect::<Result<Vec<_>>>()?;
        let len = encoded.iter().map(Vec::len).max().unwrap_or(0);
        check_positions(len as i64, self.info.max_positions)?;
        let pad = self.info.special_tokens.pad.unwrap_or(0);
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for e in &encoded {
            for i in 0..len {
                ids.push(e.get(i).copied().unwrap_or(pad));
                mask.push(i64::from(i < e.len()));
            }
        }
        let shape = [texts.len() as i64, len as i64];
        Ok((
            Tensor::f_from_slice(&ids)?.f_reshape(shape)?.f_to_device(self.device())?,
            Tensor::f_from_slice(&mask)?.f_reshape(shape)?.f_to_device(self.device())?,
        ))
    }
}

impl Network for Bert {
    fn kind(&self) -> Kind {
        Bert::kind(self)
    }
    fn device(&self) -> Device {
        Bert::device(self)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Bert::embed(self, ids)
    }
    fn forward(
        &self,
        embeddings: &Tensor,
        options: &ForwardOptions,
        hooks: &mut Hooks<'_>,
    ) -> Result<ModelOutput> {
        Bert::forward(self, embeddings, options, hooks)
    }
    fn unembed(&self, hidden: &Tensor) -> Result<Tensor> {
        Bert::unembed(self, hidden)
    }
    fn blockwise<'a>(
        &'a self,
        embeddings: &Tensor,
        options: &'a ForwardOptions,
    ) -> Result<Option<Box<dyn BlockwiseForward + 'a>>> {
        Ok(Some(Box::new(Bert::blockwise(self, embeddings, options)?)))
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Bert::named_parameters(self)
    }
}
