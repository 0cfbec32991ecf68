//! Rotary position embeddings: inverse frequencies with their rescaling rules, and the
//! rotation of queries and keys in either pairing.
//!
//! Frequencies are computed in f32 with the same operations as Hugging Face's
//! `ROPE_INIT_FUNCTIONS` (default, linear, llama3), so that angles agree bit for bit.

use explainability_core::Result;
use tch::{Device, Kind, Tensor};

use super::config::{Rope, RopePairing, RopeScaling};

/// The inverse frequencies of one RoPE, `[d_head / 2]` f32.
#[derive(Debug)]
pub(super) struct RopeTable {
    inv_freq: Tensor,
    pairing: RopePairing,
}

/// cos/sin of one forward's positions, ready to rotate `[batch, pos, head, d_head]`.
pub(super) struct RopeAngles {
    /// `[batch, pos, 1, d_head]` in the model's kind.
    cos: Tensor,
    sin: Tensor,
    pairing: RopePairing,
}

impl RopeTable {
    pub(super) fn new(
        rope: &Rope,
        pairing: RopePairing,
        d_head: usize,
        device: Device,
    ) -> Result<Self> {
        let exponents = Tensor::f_arange_start_step(0, d_head as i64, 2, (Kind::Int64, device))?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(d_head as f64)?;
        let base = Tensor::f_full([1], rope.theta, (Kind::Float, device))?;
        let inv_freq = base.f_pow(&exponents)?.f_reciprocal()?;
        let inv_freq = match &rope.scaling {
            RopeScaling::None => inv_freq,
            RopeScaling::Linear { factor } => inv_freq.f_div_scalar(*factor)?,
            RopeScaling::Factors(factors) => {
                let f: Vec<f32> = factors.iter().map(|&f| f as f32).collect();
                inv_freq.f_div(&Tensor::f_from_slice(&f)?.f_to_device(device)?)?
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_positions,
            } => {
                // Hugging Face `_compute_llama3_parameters`, step by step.
                let low_freq_wavelen = original_max_positions / low_freq_factor;
                let high_freq_wavelen = original_max_positions / high_freq_factor;
                let wavelen = inv_freq.f_reciprocal()?.f_mul_scalar(2.0 * std::f64::consts::PI)?;
                let low = wavelen.f_gt(low_freq_wavelen)?;
                let scaled = inv_freq.f_div_scalar(*factor)?;
                let inv_freq_llama = scaled.f_where_self(&low, &inv_freq)?;
                let smooth = wavelen
                    .f_reciprocal()?
                    .f_mul_scalar(*original_max_positions)?
                    .f_sub_scalar(*low_freq_factor)?
                    .f_div_scalar(high_freq_factor - low_freq_factor)?;
                let smoothed = smooth
                    .f_neg()?
                    .f_add_scalar(1.0)?
                    .f_mul(&inv_freq_llama)?
                    .f_div_scalar(*factor)?
                    .f_add(&smooth.f_mul(&inv_freq_llama)?)?;
                let medium = wavelen
                    .f_lt(high_freq_wavelen)?
                    .f_logical_not()?
                    .f_logical_and(&wavelen.f_gt(low_freq_wavelen)?.f_logical_not()?)?;
                smoothed.f_where_self(&medium, &inv_freq_llama)?
            }
        };
        Ok(Self { inv_freq, pairing })
    }

    /// Angles for `positions` (`[batch, pos]` f32).
    /// Moves the frequencies to `device`.
    pub(super) fn move_to(&mut self, device: Device) -> Result<()> {
        self.inv_freq = self.inv_freq.f_to_device(device)?;
        Ok(())
    }

    pub(super) fn angles(&self, positions: &Tensor, kind: Kind) -> Result<RopeAngles> {
        // freqs[b, t, i] = pos[b, t] · inv_freq[i].
        let freqs = positions.f_unsqueeze(-1)?.f_mul(&self.inv_freq.f_view([1, 1, -1])?)?;
        let emb = match self.pairing {
            // [f0 … f_{d/2−1}, f0 … f_{d/2−1}] as Hugging Face does.
            RopePairing::Neox => Tensor::f_cat(&[&freqs, &freqs], -1)?,
            // [f0, f0, f1, f1, …].
            RopePairing::GptJ => freqs.f_repeat_interleave_self_int(2, -1, None)?,
        };
        Ok(RopeAngles {
            cos: emb.f_cos()?.f_to_kind(kind)?.f_unsqueeze(2)?,
            sin: emb.f_sin()?.f_to_kind(kind)?.f_unsqueeze(2)?,
            pairing: self.pairing,
        })
    }
}

impl RopeAngles {
    /// The same angles on `device`.
    pub(super) fn to_device(&self, device: Device) -> Result<Self> {
        Ok(Self {
            cos: self.cos.f_to_device(device)?,
            sin: self.sin.f_to_device(device)?,
            pairing: self.pairing,
        })
    }

    /// Rotates `x` (`[batch, pos, head, d_head]`).
    pub(super) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        let d = size[3];
        let rotated = match self.pairing {
            RopePairing::Neox => {
                let half = d / 2;
                let x1 = x.f_narrow(3, 0, half)?;
                let x2 = x.f_narrow(3, half, half)?;
                Tensor::f_cat(&[&x2.f_neg()?, &x1], 3)?
            }
            RopePairing::GptJ => {
                let pairs = x.f_reshape([size[0], size[1], size[2], d / 2, 2])?;
                let even = pairs.f_select(4, 0)?;
                let odd = pairs.f_select(4, 1)?;
                Tensor::f_stack(&[&odd.f_neg()?, &even], 4)?.f_reshape(&size)?
            }
        };
        Ok(x.f_mul(&self.cos)?.f_add(&rotated.f_mul(&self.sin)?)?)
    }
}
