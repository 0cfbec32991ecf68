//! The parameters of the decoder under canonical (TransformerLens-style) names, and the
//! per-family tables that map them onto the keys of Hugging Face and GGUF checkpoints.
//!
//! A table is data: adding a family that renames nothing new is one more match arm.

use super::config::{DecoderConfig, MlpKind, NormKind, Positions};

/// A parameter of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockParam {
    Ln1W,
    Ln1B,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    OBias,
    QNorm,
    KNorm,
    Ln1PostW,
    Ln2W,
    Ln2B,
    Ln2PostW,
    Gate,
    Up,
    UpBias,
    Down,
    DownBias,
}

/// A parameter of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    Embed,
    PosEmbed,
    FinalNormW,
    FinalNormB,
    Head,
    Block(usize, BlockParam),
}

impl BlockParam {
    /// The name after `blocks.{l}.` (TransformerLens spelling where it has one).
    fn canonical(self) -> &'static str {
        match self {
            BlockParam::Ln1W => "ln1.w",
            BlockParam::Ln1B => "ln1.b",
            BlockParam::Q => "attn.W_Q",
            BlockParam::K => "attn.W_K",
            BlockParam::V => "attn.W_V",
            BlockParam::QBias => "attn.b_Q",
            BlockParam::KBias => "attn.b_K",
            BlockParam::VBias => "attn.b_V",
            BlockParam::O => "attn.W_O",
            BlockParam::OBias => "attn.b_O",
            BlockParam::QNorm => "attn.q_norm.w",
            BlockParam::KNorm => "attn.k_norm.w",
            BlockParam::Ln1PostW => "ln1_post.w",
            BlockParam::Ln2W => "ln2.w",
            BlockParam::Ln2B => "ln2.b",
            BlockParam::Ln2PostW => "ln2_post.w",
            BlockParam::Gate => "mlp.W_gate",
            BlockParam::Up => "mlp.W_in",
            BlockParam::UpBias => "mlp.b_in",
            BlockParam::Down => "mlp.W_out",
            BlockParam::DownBias => "mlp.b_out",
        }
    }
}

impl Param {
    /// The canonical name (`blocks.3.attn.W_Q`, `embed.W_E`, …).
    pub(crate) fn canonical(self) -> String {
        match self {
            Param::Embed => "embed.W_E".into(),
            Param::PosEmbed => "pos_embed.W_pos".into(),
            Param::FinalNormW => "ln_final.w".into(),
            Param::FinalNormB => "ln_final.b".into(),
            Param::Head => "unembed.W_U".into(),
            Param::Block(l, p) => format!("blocks.{l}.{}", p.canonical()),
        }
    }

    /// Whether this is one of the large matrices (token embedding, head, projections), the
    /// weights a streamed model keeps at their source; norms, biases and learned positions
    /// are small and stay resident.
    pub(crate) fn is_matrix(self) -> bool {
        matches!(
            self,
            Param::Embed
                | Param::Head
                | Param::Block(
                    _,
                    BlockParam::Q
                        | BlockParam::K
                        | BlockParam::V
                        | BlockParam::O
                        | BlockParam::Gate
                        | BlockParam::Up
                        | BlockParam::Down
                )
        )
    }
}

/// The parameters a configuration has, in the order `named_parameters` lists them, with
/// their shapes (`[out, in]` for projections).
pub(crate) fn parameters(config: &DecoderConfig) -> Vec<(Param, Vec<i64>)> {
    let a = &config.attention;
    let d = config.d_model as i64;
    let q_out = (a.n_heads * a.d_head) as i64;
    let kv_out = (a.n_kv_heads * a.d_head) as i64;
    let mlp = config.d_mlp as i64;
    let layer_norm = config.norm == NormKind::LayerNorm;
    let mut params = vec![(Param::Embed, vec![config.vocab_size as i64, d])];
    if config.positions == Positions::Learned {
        params.push((Param::PosEmbed, vec![config.max_positions as i64, d]));
    }
    for l in 0..config.n_layers {
        let mut push = |p: BlockParam, shape: Vec<i64>| params.push((Param::Block(l, p), shape));
        push(BlockParam::Ln1W, vec![d]);
        if layer_norm {
            push(BlockParam::Ln1B, vec![d]);
        }
        push(BlockParam::Q, vec![q_out, d]);
        push(BlockParam::K, vec![kv_out, d]);
        push(BlockParam::V, vec![kv_out, d]);
        if a.qkv_bias {
            push(BlockParam::QBias, vec![q_out]);
            push(BlockParam::KBias, vec![kv_out]);
            push(BlockParam::VBias, vec![kv_out]);
        }
        if a.qk_norm {
            push(BlockParam::QNorm, vec![a.d_head as i64]);
            push(BlockParam::KNorm, vec![a.d_head as i64]);
        }
        push(BlockParam::O, vec![d, q_out]);
        if a.o_bias {
            push(BlockParam::OBias, vec![d]);
        }
        if config.sandwich_norms {
            push(BlockParam::Ln1PostW, vec![d]);
        }
        push(BlockParam::Ln2W, vec![d]);
        if layer_norm {
            push(BlockParam::Ln2B, vec![d]);
        }
        if matches!(config.mlp, MlpKind::Gated(_)) {
            push(BlockParam::Gate, vec![mlp, d]);
        }
        push(BlockParam::Up, vec![mlp, d]);
        if config.mlp_bias {
            push(BlockParam::UpBias, vec![mlp]);
        }
        push(BlockParam::Down, vec![d, mlp]);
        if config.mlp_bias {
            push(BlockParam::DownBias, vec![d]);
        }
        if config.sandwich_norms {
            push(BlockParam::Ln2PostW, vec![d]);
        }
    }
    params.push((Param::FinalNormW, vec![d]));
    if layer_norm {
        params.push((Param::FinalNormB, vec![d]));
    }
    if !config.tie_embeddings {
        params.push((Param::Head, vec![config.vocab_size as i64, d]));
    }
    params
}

/// How a family's checkpoints name the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightNames {
    /// The canonical names themselves (random models, checkpoints we write).
    Canonical,
    /// llama.cpp GGUF names (`blk.0.attn_q.weight`), the same for every family.
    Gguf,
    /// Hugging Face Llama layout (`model.layers.0.self_attn.q_proj.weight`): Llama, Mistral,
    /// Qwen2, Qwen3, SmolLM2.
    HfLlama,
    /// Hugging Face Gemma 3 layout: as Llama, with sandwich norms
    /// (`post_attention_layernorm` is the attention's post-norm there, not the MLP's pre-norm).
    HfGemma3,
    /// Hugging Face GPT-2 after its fused `c_attn` was split and its `Conv1D` weights
    /// transposed at load (see `families.rs`), with an optional `transformer.` prefix.
    HfGpt2 {
        /// Whether keys start with `transformer.`.
        prefixed: bool,
    },
}

impl WeightNames {
    /// The checkpoint key of `param`.
    pub(crate) fn key(self, param: Param) -> String {
        match self {
            WeightNames::Canonical => param.canonical(),
            WeightNames::Gguf => gguf_key(param),
            WeightNames::HfLlama => hf_llama_key(param, false),
            WeightNames::HfGemma3 => hf_llama_key(param, true),
            WeightNames::HfGpt2 { prefixed } => {
                let prefix = if prefixed { "transformer." } else { "" };
                format!("{prefix}{}", hf_gpt2_key(param))
            }
        }
    }
}

fn gguf_key(param: Param) -> String {
    let block = |p: BlockParam| -> &'static str {
        match p {
            BlockParam::Ln1W => "attn_norm.weight",
            BlockParam::Ln1B => "attn_norm.bias",
            BlockParam::Q => "attn_q.weight",
            BlockParam::K => "attn_k.weight",
            BlockParam::V => "attn_v.weight",
            BlockParam::QBias => "attn_q.bias",
            BlockParam::KBias => "attn_k.bias",
            BlockParam::VBias => "attn_v.bias",
            BlockParam::O => "attn_output.weight",
            BlockParam::OBias => "attn_output.bias",
            BlockParam::QNorm => "attn_q_norm.weight",
            BlockParam::KNorm => "attn_k_norm.weight",
            BlockParam::Ln1PostW => "post_attention_norm.weight",
            BlockParam::Ln2W => "ffn_norm.weight",
            BlockParam::Ln2B => "ffn_norm.bias",
            BlockParam::Ln2PostW => "post_ffw_norm.weight",
            BlockParam::Gate => "ffn_gate.weight",
            BlockParam::Up => "ffn_up.weight",
            BlockParam::UpBias => "ffn_up.bias",
            BlockParam::Down => "ffn_down.weight",
            BlockParam::DownBias => "ffn_down.bias",
        }
    };
    match param {
        Param::Embed => "token_embd.weight".into(),
        Param::PosEmbed => "position_embd.weight".into(),
        Param::FinalNormW => "output_norm.weight".into(),
        Param::FinalNormB => "output_norm.bias".into(),
        Param::Head => "output.weight".into(),
        Param::Block(l, p) => format!("blk.{l}.{}", block(p)),
    }
}

fn hf_llama_key(param: Param, gemma: bool) -> String {
    let block = |p: BlockParam| -> &'static str {
        match p {
            BlockParam::Ln1W => "input_layernorm.weight",
            BlockParam::Ln1B => "input_layernorm.bias",
            BlockParam::Q => "self_attn.q_proj.weight",
            BlockParam::K => "self_attn.k_proj.weight",
            BlockParam::V => "self_attn.v_proj.weight",
            BlockParam::QBias => "self_attn.q_proj.bias",
            BlockParam::KBias => "self_attn.k_proj.bias",
            BlockParam::VBias => "self_attn.v_proj.bias",
            BlockParam::O => "self_attn.o_proj.weight",
            BlockParam::OBias => "self_attn.o_proj.bias",
            BlockParam::QNorm => "self_attn.q_norm.weight",
            BlockParam::KNorm => "self_attn.k_norm.weight",
            BlockParam::Ln1PostW => "post_attention_layernorm.weight",
            BlockParam::Ln2W if gemma => "pre_feedforward_layernorm.weight",
            BlockParam::Ln2W => "post_attention_layernorm.weight",
            BlockParam::Ln2B => "post_attention_layernorm.bias",
            BlockParam::Ln2PostW => "post_feedforward_layernorm.weight",
            BlockParam::Gate => "mlp.gate_proj.weight",
            BlockParam::Up => "mlp.up_proj.weight",
            BlockParam::UpBias => "mlp.up_proj.bias",
            BlockParam::Down => "mlp.down_proj.weight",
            BlockParam::DownBias => "mlp.down_proj.bias",
        }
    };
    match param {
        Param::Embed => "model.embed_tokens.weight".into(),
        Param::PosEmbed => "model.embed_positions.weight".into(),
        Param::FinalNormW => "model.norm.weight".into(),
        Param::FinalNormB => "model.norm.bias".into(),
        Param::Head => "lm_head.weight".into(),
        Param::Block(l, p) => format!("model.layers.{l}.{}", block(p)),
    }
}

/// GPT-2 keys; the split query/key/value parts of `c_attn` carry a `#q`, `#k`, `#v` suffix
/// (made at load, see `families.rs`).
fn hf_gpt2_key(param: Param) -> String {
    let block = |p: BlockParam| -> &'static str {
        match p {
            BlockParam::Ln1W => "ln_1.weight",
            BlockParam::Ln1B => "ln_1.bias",
            BlockParam::Q => "attn.c_attn.weight#q",
            BlockParam::K => "attn.c_attn.weight#k",
            BlockParam::V => "attn.c_attn.weight#v",
            BlockParam::QBias => "attn.c_attn.bias#q",
            BlockParam::KBias => "attn.c_attn.bias#k",
            BlockParam::VBias => "attn.c_attn.bias#v",
            BlockParam::O => "attn.c_proj.weight",
            BlockParam::OBias => "attn.c_proj.bias",
            BlockParam::Ln2W => "ln_2.weight",
            BlockParam::Ln2B => "ln_2.bias",
            BlockParam::Up => "mlp.c_fc.weight",
            BlockParam::UpBias => "mlp.c_fc.bias",
            BlockParam::Down => "mlp.c_proj.weight",
            BlockParam::DownBias => "mlp.c_proj.bias",
            // GPT-2 has none of these; a config asking for them finds no such key.
            BlockParam::QNorm => "attn.q_norm.weight",
            BlockParam::KNorm => "attn.k_norm.weight",
            BlockParam::Ln1PostW => "ln_1_post.weight",
            BlockParam::Ln2PostW => "ln_2_post.weight",
            BlockParam::Gate => "mlp.c_gate.weight",
        }
    };
    match param {
        Param::Embed => "wte.weight".into(),
        Param::PosEmbed => "wpe.weight".into(),
        Param::FinalNormW => "ln_f.weight".into(),
        Param::FinalNormB => "ln_f.bias".into(),
        Param::Head => "lm_head.weight".into(),
        Param::Block(l, p) => format!("h.{l}.{}", block(p)),
    }
}
