//! Hook points: the named activation sites of a transformer forward pass.
//!
//! Names follow TransformerLens (`hook_embed`, `blocks.3.attn.hook_pattern`, …) so that users
//! coming from it find the same sites; [`HookPoint`] round-trips through `Display`/`FromStr`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The kind of an activation site, without its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HookKind {
    /// Token embeddings, `[batch, pos, d_model]`.
    Embed,
    /// Residual stream entering a block, `[batch, pos, d_model]`.
    ResidPre,
    /// Queries after RoPE, `[batch, pos, head, d_head]`.
    Q,
    /// Keys after RoPE (per kv head), `[batch, pos, kv_head, d_head]`.
    K,
    /// Values (per kv head), `[batch, pos, kv_head, d_head]`.
    V,
    /// Attention scores after the mask, before softmax, `[batch, head, q_pos, k_pos]`.
    AttnScores,
    /// Attention probabilities after softmax, `[batch, head, q_pos, k_pos]`.
    Pattern,
    /// Per-head attention output before the output projection, `[batch, pos, head, d_head]`.
    Z,
    /// Attention output after its post-norm, in sandwich-norm families (Gemma 3) only,
    /// `[batch, pos, d_model]`; `hook_attn_out` then sees the same value.
    Ln1Post,
    /// Attention block output after the output projection, `[batch, pos, d_model]`.
    AttnOut,
    /// Residual stream between attention and MLP, `[batch, pos, d_model]`.
    ResidMid,
    /// MLP hidden activation (after the gate/activation), `[batch, pos, d_mlp]`.
    MlpPost,
    /// MLP output after its post-norm, in sandwich-norm families (Gemma 3) only,
    /// `[batch, pos, d_model]`; `hook_mlp_out` then sees the same value.
    Ln2Post,
    /// MLP output, `[batch, pos, d_model]`.
    MlpOut,
    /// Residual stream leaving a block, `[batch, pos, d_model]`.
    ResidPost,
    /// Output of the final normalisation, `[batch, pos, d_model]`.
    LnFinal,
}

impl HookKind {
    /// Every kind, in forward order.
    pub const ALL: [HookKind; 16] = [
        HookKind::Embed,
        HookKind::ResidPre,
        HookKind::Q,
        HookKind::K,
        HookKind::V,
        HookKind::AttnScores,
        HookKind::Pattern,
        HookKind::Z,
        HookKind::Ln1Post,
        HookKind::AttnOut,
        HookKind::ResidMid,
        HookKind::MlpPost,
        HookKind::Ln2Post,
        HookKind::MlpOut,
        HookKind::ResidPost,
        HookKind::LnFinal,
    ];

    /// Whether the kind exists once per block (and so carries a layer index).
    pub fn is_per_layer(self) -> bool {
        !matches!(self, HookKind::Embed | HookKind::LnFinal)
    }

    /// The name after `blocks.{l}.` for per-layer kinds, or the full name otherwise.
    fn suffix(self) -> &'static str {
        match self {
            HookKind::Embed => "hook_embed",
            HookKind::ResidPre => "hook_resid_pre",
            HookKind::Q => "attn.hook_q",
            HookKind::K => "attn.hook_k",
            HookKind::V => "attn.hook_v",
            HookKind::AttnScores => "attn.hook_attn_scores",
            HookKind::Pattern => "attn.hook_pattern",
            HookKind::Z => "attn.hook_z",
            HookKind::Ln1Post => "ln1_post.hook_normalized",
            HookKind::AttnOut => "hook_attn_out",
            HookKind::ResidMid => "hook_resid_mid",
            HookKind::MlpPost => "mlp.hook_post",
            HookKind::Ln2Post => "ln2_post.hook_normalized",
            HookKind::MlpOut => "hook_mlp_out",
            HookKind::ResidPost => "hook_resid_post",
            HookKind::LnFinal => "ln_final.hook_normalized",
        }
    }
}

/// One activation site of the forward pass: a kind and, for per-block kinds, a layer.
///
/// # Examples
/// ```
/// use explainability_core::{HookKind, HookPoint};
/// let p: HookPoint = "blocks.3.attn.hook_pattern".parse().unwrap();
/// assert_eq!(p, HookPoint::pattern(3));
/// assert_eq!(p.kind(), HookKind::Pattern);
/// assert_eq!(p.to_string(), "blocks.3.attn.hook_pattern");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HookPoint {
    kind: HookKind,
    layer: Option<usize>,
}

impl HookPoint {
    /// A per-block hook point at `layer`; for `Embed`/`LnFinal` the layer is ignored.
    pub fn new(kind: HookKind, layer: usize) -> Self {
        Self { kind, layer: kind.is_per_layer().then_some(layer) }
    }
    /// `hook_embed`.
    pub fn embed() -> Self {
        Self { kind: HookKind::Embed, layer: None }
    }
    /// `ln_final.hook_normalized`.
    pub fn ln_final() -> Self {
        Self { kind: HookKind::LnFinal, layer: None }
    }
    /// `blocks.{layer}.hook_resid_pre`.
    pub fn resid_pre(layer: usize) -> Self {
        Self::new(HookKind::ResidPre, layer)
    }
    /// `blocks.{layer}.hook_resid_mid`.
    pub fn resid_mid(layer: usize) -> Self {
        Self::new(HookKind::ResidMid, layer)
    }
    /// `blocks.{layer}.hook_resid_post`.
    pub fn resid_post(layer: usize) -> Self {
        Self::new(HookKind::ResidPost, layer)
    }
    /// `blocks.{layer}.attn.hook_attn_scores`.
    pub fn attn_scores(layer: usize) -> Self {
        Self::new(HookKind::AttnScores, layer)
    }
    /// `blocks.{layer}.attn.hook_pattern`.
    pub fn pattern(layer: usize) -> Self {
        Self::new(HookKind::Pattern, layer)
    }
    /// `blocks.{layer}.attn.hook_z`.
    pub fn z(layer: usize) -> Self {
        Self::new(HookKind::Z, layer)
    }
    /// `blocks.{layer}.hook_attn_out`.
    pub fn attn_out(layer: usize) -> Self {
        Self::new(HookKind::AttnOut, layer)
    }
    /// `blocks.{layer}.hook_mlp_out`.
    pub fn mlp_out(layer: usize) -> Self {
        Self::new(HookKind::MlpOut, layer)
    }

    /// The kind of site.
    pub fn kind(&self) -> HookKind {
        self.kind
    }

    /// The block index, `None` for `hook_embed` and `ln_final.hook_normalized`.
    pub fn layer(&self) -> Option<usize> {
        self.layer
    }

    /// Every hook point of a model with `n_layers` blocks, in the order the forward pass
    /// fires them.
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let per_layer: Vec<HookKind> =
            HookKind::ALL.iter().copied().filter(|k| k.is_per_layer()).collect();
        let mut points = Vec::with_capacity(2 + n_layers * per_layer.len());
        points.push(Self::embed());
        for layer in 0..n_layers {
            points.extend(per_layer.iter().map(|&k| Self::new(k, layer)));
        }
        points.push(Self::ln_final());
        points
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(layer) => write!(f, "blocks.{layer}.{}", self.kind.suffix()),
            None => f.write_str(self.kind.suffix()),
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = || Error::UnknownHookPoint { name: name.to_owned() };
        if let Some(rest) = name.strip_prefix("blocks.") {
            let (layer, suffix) = rest.split_once('.').ok_or_else(unknown)?;
            // Reject "+3", "03" and the like so that parsing is the exact inverse of Display.
            if layer.is_empty()
                || !layer.bytes().all(|b| b.is_ascii_digit())
                || (layer.len() > 1 && layer.starts_with('0'))
            {
                return Err(unknown());
            }
            let layer: usize = layer.parse().map_err(|_| unknown())?;
            HookKind::ALL
                .iter()
                .find(|k| k.is_per_layer() && k.suffix() == suffix)
                .map(|&k| HookPoint::new(k, layer))
                .ok_or_else(unknown)
        } else {
            HookKind::ALL
                .iter()
                .find(|k| !k.is_per_layer() && k.suffix() == name)
                .map(|&k| HookPoint { kind: k, layer: None })
                .ok_or_else(unknown)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_match_transformer_lens() {
        assert_eq!(HookPoint::embed().to_string(), "hook_embed");
        assert_eq!(HookPoint::resid_pre(0).to_string(), "blocks.0.hook_resid_pre");
        assert_eq!(HookPoint::new(HookKind::Q, 2).to_string(), "blocks.2.attn.hook_q");
        assert_eq!(HookPoint::new(HookKind::K, 2).to_string(), "blocks.2.attn.hook_k");
        assert_eq!(HookPoint::new(HookKind::V, 2).to_string(), "blocks.2.attn.hook_v");
        assert_eq!(HookPoint::attn_scores(5).to_string(), "blocks.5.attn.hook_attn_scores");
        assert_eq!(HookPoint::pattern(29).to_string(), "blocks.29.attn.hook_pattern");
        assert_eq!(HookPoint::z(1).to_string(), "blocks.1.attn.hook_z");
        assert_eq!(HookPoint::attn_out(1).to_string(), "blocks.1.hook_attn_out");
        assert_eq!(HookPoint::resid_mid(1).to_string(), "blocks.1.hook_resid_mid");
        assert_eq!(HookPoint::new(HookKind::MlpPost, 1).to_string(), "blocks.1.mlp.hook_post");
        assert_eq!(HookPoint::mlp_out(1).to_string(), "blocks.1.hook_mlp_out");
        assert_eq!(HookPoint::resid_post(7).to_string(), "blocks.7.hook_resid_post");
        assert_eq!(HookPoint::ln_final().to_string(), "ln_final.hook_normalized");
        assert_eq!(
            HookPoint::new(HookKind::Ln1Post, 4).to_string(),
            "blocks.4.ln1_post.hook_normalized"
        );
        assert_eq!(
            HookPoint::new(HookKind::Ln2Post, 4).to_string(),
            "blocks.4.ln2_post.hook_normalized"
        );
    }

    #[test]
    fn every_point_round_trips() {
        let all = HookPoint::all(12);
        assert_eq!(all.len(), 2 + 12 * 14);
        for p in all {
            let parsed: HookPoint = p.to_string().parse().unwrap();
            assert_eq!(parsed, p);
        }
    }

    #[test]
    fn bad_names_are_typed_errors() {
        for bad in [
            "",
            "hook_embedx",
            "blocks.x.hook_resid_pre",
            "blocks.1.hook_embed",
            "blocks.01.hook_resid_pre",
            "blocks.+1.hook_resid_pre",
            "blocks..hook_resid_pre",
            "blocks.1",
            "blocks.99999999999999999999999.hook_resid_pre",
            "ln_final.hook_normalized.x",
        ] {
            assert!(
                matches!(bad.parse::<HookPoint>(), Err(Error::UnknownHookPoint { name }) if name == bad),
                "{bad:?} should not parse"
            );
        }
    }

    proptest! {
        #[test]
        fn display_from_str_inverse(layer in 0usize..100_000, k in 0usize..16) {
            let p = HookPoint::new(HookKind::ALL[k], layer);
            prop_assert_eq!(p.to_string().parse::<HookPoint>().unwrap(), p);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,40}") {
            let _ = s.parse::<HookPoint>();
        }
    }
}
