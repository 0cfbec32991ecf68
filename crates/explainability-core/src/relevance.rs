//! Layer-wise relevance propagation as a mode of a model's own forward pass.
//!
//! AttnLRP (Achtibat et al. 2024, arXiv:2402.05602) and CP-LRP (Ali et al. 2022,
//! arXiv:2202.07304) in the gradient×input formulation of Arras et al. 2025
//! (arXiv:2502.15886), as LXT 2.1 implements them (`lxt/efficient`): a forward pass whose
//! values are unchanged but whose backward pass is rewritten by detach tricks, so that
//! `input ⊙ ∂F/∂input` is the relevance. No custom autograd function is needed:
//!
//! - ε-rule on linear layers: plain gradient×input (a bias absorbs its share of relevance);
//! - softmax: the Taylor rule of AttnLRP is exactly gradient×input through the softmax
//!   Jacobian, so softmax is left alone;
//! - uniform rule on bilinear products (q·kᵀ, A·v, gate ⊙ up): each factor gets half the
//!   relevance, [`divide_gradient`] (queries and keys by 4: half of q·kᵀ inside the half of
//!   A·v that goes to A; values by 2; the gated product by 2);
//! - identity rule on element-wise non-linearities (SiLU, GELU, GELU-tanh, tanh):
//!   [`identity_rule`], whose local Jacobian is `f(x)/(x + 10⁻¹⁰)`;
//! - norms (RMSNorm, LayerNorm, offset RMSNorm): the scale `1/√(var + ε)` is a constant of the
//!   backward pass ([`RelevanceRule::norm_scale`] detaches it); LayerNorm's mean is not
//!   detached.
//!
//! CP-LRP treats the attention pattern as a constant (queries and keys detached) and, in
//! gated MLPs, the gate as a constant; everything else follows the AttnLRP rules.
//!
//! A model honours [`ForwardOptions::relevance`](crate::ForwardOptions::relevance) by routing
//! these sites through the helpers below; with `None` its forward pass is untouched.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::Result;

/// The stabiliser of the identity rule's ratio `f(x)/(x + ε)`, as in LXT 2.1
/// (`identity_rule_implicit_fn`).
pub const IDENTITY_RULE_EPSILON: f64 = 1e-10;

/// Which relevance propagation rules a forward pass applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RelevanceRule {
    /// AttnLRP: uniform rule on q·kᵀ, A·v and gate ⊙ up, gradient×input through softmax,
    /// identity rule on activations, detached norm scales (arXiv:2402.05602).
    AttnLrp,
    /// CP-LRP: attention patterns and MLP gates are constants; identity rule on the other
    /// activations, detached norm scales (arXiv:2202.07304).
    CpLrp,
}

impl RelevanceRule {
    /// Stable name (`attn_lrp`, `cp_lrp`).
    pub fn name(self) -> &'static str {
        match self {
            RelevanceRule::AttnLrp => "attn_lrp",
            RelevanceRule::CpLrp => "cp_lrp",
        }
    }

    /// Queries, keys and values as the attention product should see them: AttnLRP divides
    /// the gradient of queries and keys by 4 and of values by 2; CP-LRP detaches queries and
    /// keys (the pattern is a constant) and leaves values alone.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn attention_inputs(self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<[Tensor; 3]> {
        Ok(match self {
            RelevanceRule::AttnLrp => {
                [divide_gradient(q, 4.0)?, divide_gradient(k, 4.0)?, divide_gradient(v, 2.0)?]
            }
            RelevanceRule::CpLrp => [q.f_detach()?, k.f_detach()?, v.shallow_clone()],
        })
    }

    /// The gated MLP product `act(gate) ⊙ up`: AttnLRP applies the identity rule to the
    /// activation and halves the product's gradient; CP-LRP detaches the gate.
    ///
    /// # Errors
    /// libtorch errors, and whatever `act` returns.
    pub fn gated_product(
        self,
        gate: &Tensor,
        up: &Tensor,
        act: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        match self {
            RelevanceRule::AttnLrp => divide_gradient(&identity_rule(gate, act)?.f_mul(up)?, 2.0),
            RelevanceRule::CpLrp => Ok(act(&gate.f_detach()?)?.f_mul(up)?),
        }
    }

    /// An element-wise activation outside a gated product: the identity rule under both
    /// variants.
    ///
    /// # Errors
    /// libtorch errors, and whatever `act` returns.
    pub fn activation(self, x: &Tensor, act: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        identity_rule(x, act)
    }

    /// A norm's scale factor (`1/√(var + ε)`) as a constant of the backward pass.
    ///
    /// # Errors
    /// libtorch errors.
    pub fn norm_scale(self, scale: &Tensor) -> Result<Tensor> {
        Ok(scale.f_detach()?)
    }
}

/// `x` in the forward pass, `∂/∂x = 1/factor` in the backward pass (LXT's
/// `divide_gradient`). The forward value is exactly `x`: `x_d + (x − x_d)/factor` with
/// `x_d = x.detach()` adds an exact zero.
///
/// # Errors
/// libtorch errors.
pub fn divide_gradient(x: &Tensor, factor: f64) -> Result<Tensor> {
    let detached = x.f_detach()?;
    Ok(x.f_sub(&detached)?.f_div_scalar(factor)?.f_add(&detached)?)
}

/// `f(x)` in the forward pass whose local Jacobian is the diagonal `f(x)/(x + 10⁻¹⁰)`
/// ([`IDENTITY_RULE_EPSILON`]), so that relevance passes through an element-wise
/// non-linearity unchanged (the identity rule, Eq. 9 of arXiv:2402.05602). The forward value
/// is exactly `f(x)`.
///
/// # Errors
/// libtorch errors, and whatever `f` returns.
pub fn identity_rule(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let detached = x.f_detach()?;
    let fx = f(&detached)?;
    let ratio = fx.f_div(&detached.f_add_scalar(IDENTITY_RULE_EPSILON)?)?;
    Ok(x.f_sub(&detached)?.f_mul(&ratio)?.f_add(&fx)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn grad_of(y: &Tensor, x: &Tensor) -> Tensor {
        Tensor::run_backward(&[y.sum(Kind::Float)], &[x], false, false).remove(0)
    }

    #[test]
    fn divide_gradient_keeps_value_and_scales_gradient() {
        let x = Tensor::from_slice(&[1.5f32, -2.25, 3.0]).set_requires_grad(true);
        let y = divide_gradient(&x, 4.0).unwrap();
        assert!(y.equal(&x.detach()));
        let g = grad_of(&y.square(), &x);
        // d(x²)/dx / 4 = x / 2.
        assert!(g.allclose(&x.detach().divide_scalar(2.0), 0.0, 1e-7, false));
    }

    #[test]
    fn identity_rule_keeps_value_and_passes_relevance() {
        let x = Tensor::from_slice(&[1.5f32, -2.25, 0.5]).set_requires_grad(true);
        let y = identity_rule(&x, |t| Ok(t.f_silu()?)).unwrap();
        assert!(y.equal(&x.detach().silu()));
        let g = grad_of(&y, &x);
        // Relevance x · ∂y/∂x equals the output y: nothing is created or lost.
        let relevance = g.f_mul(&x.detach()).unwrap();
        assert!(relevance.allclose(&x.detach().silu(), 1e-6, 1e-7, false));
    }

    #[test]
    fn cp_lrp_detaches_queries_keys_and_gate() {
        let q = Tensor::ones([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let [qd, _, v] = RelevanceRule::CpLrp.attention_inputs(&q, &q, &q).unwrap();
        assert!(!qd.requires_grad());
        assert!(v.requires_grad());
        let p = RelevanceRule::CpLrp.gated_product(&q, &q, |t| Ok(t.f_silu()?)).unwrap();
        let g = grad_of(&p, &q);
        // Only the `up` factor carries gradient: silu(1) per element.
        assert!(g.allclose(&q.detach().silu(), 1e-6, 1e-7, false));
        assert_eq!(RelevanceRule::AttnLrp.name(), "attn_lrp");
    }
}
