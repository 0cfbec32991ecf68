//! Dequantisation of GGML tensor data to `f32`: F32, F16, BF16, the legacy 32-weight blocks
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) and the 256-weight K-quants (Q2_K … Q6_K).
//!
//! Block layouts are llama.cpp's (`ggml-common.h` `block_*`, `ggml-quants.c`
//! `dequantize_row_*`); `d`, `dmin` and `m` are little-endian f16. Legacy blocks of 32 weights:
//! - Q4_0 `d, qs[16]`: `w = d · (q − 8)`; Q4_1 `d, m, qs[16]`: `w = d · q + m`.
//! - Q5_0 `d, qh: u32, qs[16]`: `w = d · (q − 16)`; Q5_1 `d, m, qh, qs[16]`: `w = d · q + m`,
//!   where `q` is the nibble plus `16 ·` bit `j` of `qh`.
//! - Q8_0 `d, qs: [i8; 32]`: `w = d · q`. IQ4_NL `d, qs[16]`: `w = d · K[q]` with the
//!   non-linear codebook [`IQ4_NL_VALUES`].
//!
//! In the nibble formats byte `j` holds weight `j` in its low nibble and weight `j + 16` in its
//! high nibble. K-quant super-blocks of 256 weights carry 8 or 16 sub-block scales (see each
//! kernel). Arithmetic is f32 with the grouping `(d · scale) · q − dmin · min`, exactly as
//! gguf-py 0.19.0's reference `gguf.quants.dequantize` and llama.cpp compute it, so results
//! are bit-identical to gguf-py (measured on every tensor of the Gemma 3 270M Q4_K_M file).
//!
//! Large inputs are split into block-aligned chunks dequantised on scoped threads. No kernel
//! can panic: every block is taken with `chunks_exact`/`split_first_chunk`, and any bytes
//! (NaN, infinite or subnormal scales included) give some output.

use std::num::NonZeroUsize;

use explainability_core::{Error, Result};
use half::{bf16, f16};

use super::types::{
    GGML_BF16, GGML_F16, GGML_F32, GGML_IQ4_NL, GGML_Q2_K, GGML_Q3_K, GGML_Q4_0, GGML_Q4_1,
    GGML_Q4_K, GGML_Q5_0, GGML_Q5_1, GGML_Q5_K, GGML_Q6_K, GGML_Q8_0, ggml_type_name,
};

/// Output values below which one thread does the whole input (spawning costs ~20 µs a thread;
/// 256 Ki values take ~100 µs or more on one core).
const PARALLEL_MIN_ELEMENTS: usize = 1 << 18;

/// Most threads any dequantisation uses.
const MAX_THREADS: usize = 8;

/// IQ4_NL's codebook (`kvalues_iq4nl` in ggml-common.h).
pub(crate) const IQ4_NL_VALUES: [i8; 16] =
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Dequantises a run of whole blocks into as many output values.
type Run = fn(&[u8], &mut [f32]);

/// One supported encoding: block geometry and the kernel for a run of whole blocks.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    pub(crate) block_elements: usize,
    pub(crate) block_bytes: usize,
    run: Run,
}

/// The kernel of a GGML type, `None` for types this module does not decode.
pub(crate) fn kernel(ggml_type: u32) -> Option<Kernel> {
    let (block_elements, block_bytes, run): (usize, usize, Run) = match ggml_type {
        GGML_F32 => (1, 4, f32_run),
        GGML_F16 => (1, 2, f16_run),
        GGML_BF16 => (1, 2, bf16_run),
        GGML_Q8_0 => (32, 34, q8_0_run),
        GGML_Q4_0 => (32, 18, q4_0_run),
        GGML_Q4_1 => (32, 20, q4_1_run),
        GGML_Q5_0 => (32, 22, q5_0_run),
        GGML_Q5_1 => (32, 24, q5_1_run),
        GGML_IQ4_NL => (32, 18, iq4_nl_run),
        GGML_Q2_K => (256, 84, q2_k_run),
        GGML_Q3_K => (256, 110, q3_k_run),
        GGML_Q4_K => (256, 144, q4_k_run),
        GGML_Q5_K => (256, 176, q5_k_run),
        GGML_Q6_K => (256, 210, q6_k_run),
        _ => return None,
    };
    Some(Kernel { block_elements, block_bytes, run })
}

/// Threads a dequantisation uses by default: the CPUs this process may run on (affinity and
/// cgroup limits respected), at most 8.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism()
        .unwrap_or(NonZeroUsize::MIN)
        .min(NonZeroUsize::new(MAX_THREADS).unwrap_or(NonZeroUsize::MIN))
}

impl Kernel {
    /// Dequantises `bytes` (whole blocks) into `out` (as many values), on up to `threads`
    /// threads. The caller has checked that the two lengths agree.
    pub(crate) fn run(&self, bytes: &[u8], out: &mut [f32], threads: NonZeroUsize) {
        let threads = threads.get().min(MAX_THREADS);
        let blocks = out.len() / self.block_elements;
        if threads <= 1 || out.len() < PARALLEL_MIN_ELEMENTS {
            (self.run)(bytes, out);
            return;
        }
        let blocks_per_chunk = blocks.div_ceil(threads);
        let in_chunk = blocks_per_chunk * self.block_bytes;
        let out_chunk = blocks_per_chunk * self.block_elements;
        let run = self.run;
        std::thread::scope(|scope| {
            for (input, output) in bytes.chunks(in_chunk).zip(out.chunks_mut(out_chunk)) {
                scope.spawn(move || run(input, output));
            }
        });
    }

    /// Checks that `bytes` holds exactly the blocks of `n_elements` values.
    pub(crate) fn check(&self, bytes: usize, n_elements: usize, tensor_name: &str) -> Result<()> {
        let blocks = n_elements / self.block_elements;
        if n_elements.is_multiple_of(self.block_elements)
            && blocks.checked_mul(self.block_bytes) == Some(bytes)
        {
            return Ok(());
        }
        Err(Error::GgufMalformed {
            reason: format!(
                "tensor {tensor_name:?}: {n_elements} values in blocks of {} ({} bytes each) do \
                 not match its {bytes} bytes of data",
                self.block_elements, self.block_bytes
            ),
        })
    }
}

/// The kernel of `ggml_type`, or [`Error::UnsupportedTensorType`] naming `tensor_name`.
pub(crate) fn kernel_or_unsupported(ggml_type: u32, tensor_name: &str) -> Result<Kernel> {
    kernel(ggml_type).ok_or_else(|| Error::UnsupportedTensorType {
        name: tensor_name.to_owned(),
        ggml_type,
        type_name: ggml_type_name(ggml_type).to_owned(),
    })
}

/// Dequantises `bytes` of GGML type `ggml_type` holding `n_elements` values, on up to
/// `threads` threads; `tensor_name` only names the data in errors.
///
/// # Errors
/// [`Error::UnsupportedTensorType`] for a type this module does not decode;
/// [`Error::GgufMalformed`] when `n_elements` is not a whole number of blocks or `bytes` does
/// not hold exactly that many blocks.
pub(crate) fn dequantize_named(
    ggml_type: u32,
    bytes: &[u8],
    n_elements: usize,
    threads: NonZeroUsize,
    tensor_name: &str,
) -> Result<Vec<f32>> {
    let kernel = kernel_or_unsupported(ggml_type, tensor_name)?;
    kernel.check(bytes.len(), n_elements, tensor_name)?;
    let mut out = vec![0f32; n_elements];
    kernel.run(bytes, &mut out, threads);
    Ok(out)
}

/// Dequantises raw GGML data of type `ggml_type` (a whole number of blocks) into `out`, on up
/// to `threads` threads. `out` must hold exactly the values the blocks encode.
///
/// This is the kernel behind [`GgufFile::tensor`](super::GgufFile::tensor), exposed for
/// benchmarks and for callers with data from elsewhere.
///
/// # Errors
/// [`Error::UnsupportedTensorType`] for a type without a kernel
/// (see [`is_supported_type`](super::is_supported_type)); [`Error::GgufMalformed`] when
/// `bytes` is not a whole number of blocks or `out` has the wrong length.
///
/// # Examples
/// ```
/// use explain_models::gguf::{dequantize_into, default_threads};
/// // One Q8_0 block: d = 0.5 (f16 0x3800), then 32 signed bytes.
/// let mut block = vec![0x00, 0x38];
/// block.extend((0..32).map(|q: i8| (q - 16) as u8));
/// let mut out = [0f32; 32];
/// dequantize_into(8, &block, &mut out, default_threads())?;
/// assert_eq!(out[0], -8.0);
/// # Ok::<(), explainability_core::Error>(())
/// ```
pub fn dequantize_into(
    ggml_type: u32,
    bytes: &[u8],
    out: &mut [f32],
    threads: NonZeroUsize,
) -> Result<()> {
    const NAME: &str = "(raw data)";
    let kernel = kernel_or_unsupported(ggml_type, NAME)?;
    kernel.check(bytes.len(), out.len(), NAME)?;
    kernel.run(bytes, out, threads);
    Ok(())
}

fn half(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

fn f32_run(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        if let &[b0, b1, b2, b3] = b {
            *o = f32::from_le_bytes([b0, b1, b2, b3]);
        }
    }
}

fn f16_run(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        if let &[lo, hi] = b {
            *o = half(lo, hi);
        }
    }
}

fn bf16_run(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        if let &[lo, hi] = b {
            *o = bf16::from_le_bytes([lo, hi]).to_f32();
        }
    }
}

fn q8_0_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1], qs)) = block.split_first_chunk::<2>() else { continue };
        let d = half(d0, d1);
        for (o, &q) in y.iter_mut().zip(qs) {
            *o = d * f32::from(q as i8);
        }
    }
}

fn q4_0_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1], qs)) = block.split_first_chunk::<2>() else { continue };
        let d = half(d0, d1);
        let (low, high) = y.split_at_mut(16);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(qs) {
            *lo = d * f32::from((q & 0x0F) as i8 - 8);
            *hi = d * f32::from((q >> 4) as i8 - 8);
        }
    }
}

fn q4_1_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1, m0, m1], qs)) = block.split_first_chunk::<4>() else { continue };
        let d = half(d0, d1);
        let m = half(m0, m1);
        let (low, high) = y.split_at_mut(16);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(qs) {
            *lo = d * f32::from(q & 0x0F) + m;
            *hi = d * f32::from(q >> 4) + m;
        }
    }
}

/// The 32 five-bit values of a Q5_0/Q5_1 block: nibbles of `qs` plus bit `j` of `qh` as the
/// fifth bit; weight `j` in the low nibble of byte `j`, weight `j + 16` in its high nibble.
fn five_bit(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    let (low, high) = q.split_at_mut(16);
    for (j, ((lo, hi), &byte)) in low.iter_mut().zip(high.iter_mut()).zip(qs).enumerate() {
        // Both shifts are below 32.
        *lo = (byte & 0x0F) | (((qh >> j) & 1) as u8) << 4;
        *hi = (byte >> 4) | (((qh >> (j + 16)) & 1) as u8) << 4;
    }
    q
}

fn q5_0_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(22).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1, h0, h1, h2, h3], qs)) = block.split_first_chunk::<6>() else {
            continue;
        };
        let d = half(d0, d1);
        let q = five_bit(u32::from_le_bytes([h0, h1, h2, h3]), qs);
        for (o, &q) in y.iter_mut().zip(&q) {
            *o = d * f32::from(q as i8 - 16);
        }
    }
}

fn q5_1_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(24).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1, m0, m1, h0, h1, h2, h3], qs)) = block.split_first_chunk::<8>() else {
            continue;
        };
        let d = half(d0, d1);
        let m = half(m0, m1);
        let q = five_bit(u32::from_le_bytes([h0, h1, h2, h3]), qs);
        for (o, &q) in y.iter_mut().zip(&q) {
            *o = d * f32::from(q) + m;
        }
    }
}

fn iq4_nl_run(bytes: &[u8], out: &mut [f32]) {
    let values = IQ4_NL_VALUES.map(f32::from);
    for (block, y) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1], qs)) = block.split_first_chunk::<2>() else { continue };
        let d = half(d0, d1);
        let (low, high) = y.split_at_mut(16);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(qs) {
            // A nibble indexes a 16-entry array: in bounds by construction.
            *lo = d * values[usize::from(q & 0x0F)];
            *hi = d * values[usize::from(q >> 4)];
        }
    }
}

/// Q2_K, 84 bytes: `scales[16], qs[64], d, dmin`. Output `128n + 32j + 16h + l` (n < 2,
/// j < 4, h < 2, l < 16) is bits `2j..2j+2` of `qs[32n + 16h + l]`, scaled by sub-block
/// `s = 8n + 2j + h` (= output / 16): `(d · (scales[s] & 15)) · q − dmin · (scales[s] >> 4)`.
fn q2_k_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(84).zip(out.chunks_exact_mut(256)) {
        let Some((scales, rest)) = block.split_first_chunk::<16>() else { continue };
        let Some((qs, rest)) = rest.split_first_chunk::<64>() else { continue };
        let Some((&[d0, d1, m0, m1], _)) = rest.split_first_chunk::<4>() else { continue };
        let (d, dmin) = (half(d0, d1), half(m0, m1));
        for ((y128, qs32), scales8) in
            y.chunks_exact_mut(128).zip(qs.chunks_exact(32)).zip(scales.chunks_exact(8))
        {
            for (j, (y32, scales2)) in
                y128.chunks_exact_mut(32).zip(scales8.chunks_exact(2)).enumerate()
            {
                let shift = 2 * j;
                for ((y16, &sc), q16) in
                    y32.chunks_exact_mut(16).zip(scales2).zip(qs32.chunks_exact(16))
                {
                    let dl = d * f32::from(sc & 0x0F);
                    let ml = dmin * f32::from(sc >> 4);
                    for (o, &q) in y16.iter_mut().zip(q16) {
                        *o = dl * f32::from((q >> shift) & 3) - ml;
                    }
                }
            }
        }
    }
}

/// Q3_K's sixteen 6-bit signed scales times `d`. Scale `j = 4g + r` has its low four bits in
/// byte `r + 4·(g % 2)` (low nibble for g < 2, high for g ≥ 2) and its high two bits at bits
/// `2g..2g+2` of byte `8 + r`; the stored value is offset by 32.
fn q3_k_scales(d: f32, scales: &[u8; 12]) -> [f32; 16] {
    let mut dl = [0f32; 16];
    let Some((low, high)) = scales.split_first_chunk::<8>() else { return dl };
    let lows = low.chunks_exact(4).chain(low.chunks_exact(4));
    for (g, (dl4, low4)) in dl.chunks_exact_mut(4).zip(lows).enumerate() {
        let low_shift = if g < 2 { 0 } else { 4 };
        for ((o, &lo), &hi) in dl4.iter_mut().zip(low4).zip(high) {
            let sc = ((lo >> low_shift) & 0x0F) | (((hi >> (2 * g)) & 3) << 4);
            *o = d * f32::from(i16::from(sc) - 32);
        }
    }
    dl
}

/// Q3_K, 110 bytes: `hmask[32], qs[64], scales[12], d`. Output `128n + 32j + 16h + l` is bits
/// `2j..2j+2` of `qs[32n + 16h + l]`, minus 4 unless bit `4n + j` of `hmask[16h + l]` is set,
/// times `d · scale[8n + 2j + h]`.
fn q3_k_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(110).zip(out.chunks_exact_mut(256)) {
        let Some((hmask, rest)) = block.split_first_chunk::<32>() else { continue };
        let Some((qs, rest)) = rest.split_first_chunk::<64>() else { continue };
        let Some((scales, rest)) = rest.split_first_chunk::<12>() else { continue };
        let Some((&[d0, d1], _)) = rest.split_first_chunk::<2>() else { continue };
        let dl = q3_k_scales(half(d0, d1), scales);
        for (n, ((y128, qs32), dl8)) in
            y.chunks_exact_mut(128).zip(qs.chunks_exact(32)).zip(dl.chunks_exact(8)).enumerate()
        {
            for (j, (y32, dl2)) in y128.chunks_exact_mut(32).zip(dl8.chunks_exact(2)).enumerate() {
                let shift = 2 * j;
                let bit = 4 * n + j;
                for ((y16, &scale), (q16, h16)) in y32
                    .chunks_exact_mut(16)
                    .zip(dl2)
                    .zip(qs32.chunks_exact(16).zip(hmask.chunks_exact(16)))
                {
                    for ((o, &q), &h) in y16.iter_mut().zip(q16).zip(h16) {
                        let low = ((q >> shift) & 3) as i8;
                        let minus = if (h >> bit) & 1 == 1 { 0 } else { 4 };
                        *o = scale * f32::from(low - minus);
                    }
                }
            }
        }
    }
}

/// `get_scale_min_k4` for all eight sub-blocks of a Q4_K/Q5_K block: 6-bit scales and mins.
fn scale_min_k4(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3] = *scales;
    let sc = [
        a0 & 63,
        a1 & 63,
        a2 & 63,
        a3 & 63,
        (c0 & 0x0F) | ((a0 >> 6) << 4),
        (c1 & 0x0F) | ((a1 >> 6) << 4),
        (c2 & 0x0F) | ((a2 >> 6) << 4),
        (c3 & 0x0F) | ((a3 >> 6) << 4),
    ];
    let min = [
        b0 & 63,
        b1 & 63,
        b2 & 63,
        b3 & 63,
        (c0 >> 4) | ((b0 >> 6) << 4),
        (c1 >> 4) | ((b1 >> 6) << 4),
        (c2 >> 4) | ((b2 >> 6) << 4),
        (c3 >> 4) | ((b3 >> 6) << 4),
    ];
    (sc, min)
}

/// `(d · scale, dmin · min)` of the eight sub-blocks of a Q4_K/Q5_K block, in pairs: pair `c`
/// serves outputs `64c..64c+32` (low nibbles) and `64c+32..64c+64` (high nibbles).
fn k4_factors(d: f32, dmin: f32, scales: &[u8; 12]) -> [[(f32, f32); 2]; 4] {
    let (sc, min) = scale_min_k4(scales);
    let mut factors = [[(0f32, 0f32); 2]; 4];
    for (f, (&s, &m)) in factors.iter_mut().flatten().zip(sc.iter().zip(&min)) {
        *f = (d * f32::from(s), dmin * f32::from(m));
    }
    factors
}

/// Q4_K, 144 bytes: `d, dmin, scales[12], qs[128]`. Output `64c + l` (l < 32) is the low
/// nibble of `qs[32c + l]` with sub-block `2c`'s factors, output `64c + 32 + l` its high
/// nibble with sub-block `2c + 1`'s: `(d · sc) · q − dmin · m`.
fn q4_k_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
        let Some((&[d0, d1, m0, m1], rest)) = block.split_first_chunk::<4>() else { continue };
        let Some((scales, qs)) = rest.split_first_chunk::<12>() else { continue };
        let factors = k4_factors(half(d0, d1), half(m0, m1), scales);
        for ((y64, q32), [(d_lo, m_lo), (d_hi, m_hi)]) in
            y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).zip(factors)
        {
            let (low, high) = y64.split_at_mut(32);
            for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(q32) {
                *lo = d_lo * f32::from(q & 0x0F) - m_lo;
                *hi = d_hi * f32::from(q >> 4) - m_hi;
            }
        }
    }
}

/// Q5_K, 176 bytes: `d, dmin, scales[12], qh[32], qs[128]`. As Q4_K, with bit `s` of `qh[l]`
/// as the fifth bit of sub-block `s`'s value at position `l`.
fn q5_k_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(176).zip(out.chunks_exact_mut(256)) {
        let Some((&[d0, d1, m0, m1], rest)) = block.split_first_chunk::<4>() else { continue };
        let Some((scales, rest)) = rest.split_first_chunk::<12>() else { continue };
        let Some((qh, qs)) = rest.split_first_chunk::<32>() else { continue };
        let factors = k4_factors(half(d0, d1), half(m0, m1), scales);
        for (c, ((y64, q32), [(d_lo, m_lo), (d_hi, m_hi)])) in
            y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).zip(factors).enumerate()
        {
            let (low, high) = y64.split_at_mut(32);
            for ((lo, hi), (&q, &h)) in low.iter_mut().zip(high.iter_mut()).zip(q32.iter().zip(qh))
            {
                let q_lo = (q & 0x0F) | (((h >> (2 * c)) & 1) << 4);
                let q_hi = (q >> 4) | (((h >> (2 * c + 1)) & 1) << 4);
                *lo = d_lo * f32::from(q_lo) - m_lo;
                *hi = d_hi * f32::from(q_hi) - m_hi;
            }
        }
    }
}

/// Q6_K, 210 bytes: `ql[128], qh[64], scales: [i8; 16], d`. Output `128n + 32t + l` (t < 4,
/// l < 32) is the nibble `t / 2` of `ql[64n + 32·(t % 2) + l]` plus bits `2t..2t+2` of
/// `qh[32n + l]` as bits 4-5, minus 32, times `d · scales[(output) / 16]`.
fn q6_k_run(bytes: &[u8], out: &mut [f32]) {
    for (block, y) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
        let Some((ql, rest)) = block.split_first_chunk::<128>() else { continue };
        let Some((qh, rest)) = rest.split_first_chunk::<64>() else { continue };
        let Some((scales, rest)) = rest.split_first_chunk::<16>() else { continue };
        let Some((&[d0, d1], _)) = rest.split_first_chunk::<2>() else { continue };
        let d = half(d0, d1);
        let ds = scales.map(|s| d * f32::from(s as i8));
        for ((y128, ql64), (qh32, ds8)) in y
            .chunks_exact_mut(128)
            .zip(ql.chunks_exact(64))
            .zip(qh.chunks_exact(32).zip(ds.chunks_exact(8)))
        {
            let (ql_a, ql_b) = ql64.split_at(32);
            for (t, (y32, ds2)) in y128.chunks_exact_mut(32).zip(ds8.chunks_exact(2)).enumerate() {
                let low_source = if t % 2 == 0 { ql_a } else { ql_b };
                let low_shift = 4 * (t / 2);
                let high_shift = 2 * t;
                for ((y16, &scale), (l16, h16)) in y32
                    .chunks_exact_mut(16)
                    .zip(ds2)
                    .zip(low_source.chunks_exact(16).zip(qh32.chunks_exact(16)))
                {
                    for ((o, &l), &h) in y16.iter_mut().zip(l16).zip(h16) {
                        let q = ((l >> low_shift) & 0x0F) | (((h >> high_shift) & 3) << 4);
                        *o = scale * f32::from(q as i8 - 32);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one() -> NonZeroUsize {
        NonZeroUsize::MIN
    }

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    fn deq(ggml_type: u32, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
        dequantize_named(ggml_type, bytes, n, default_threads(), "t")
    }

    #[test]
    fn q4_1_low_nibbles_first_then_high() {
        let mut block = Vec::new();
        block.extend(f16_bytes(0.5));
        block.extend(f16_bytes(-1.0));
        block.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
        let out = deq(GGML_Q4_1, &block, 32).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q4_0_is_offset_by_eight() {
        let mut block = f16_bytes(2.0).to_vec();
        block.extend([0x80u8; 16]); // low nibble 0 → -8, high nibble 8 → 0
        let out = deq(GGML_Q4_0, &block, 32).unwrap();
        assert!(out[..16].iter().all(|&w| w == -16.0));
        assert!(out[16..].iter().all(|&w| w == 0.0));
    }

    #[test]
    fn parallel_path_matches_single_thread() {
        for (ggml_type, block_elements, block_bytes) in [(GGML_Q8_0, 32, 34), (GGML_Q4_K, 256, 144)]
        {
            let blocks = PARALLEL_MIN_ELEMENTS / block_elements + 3;
            let bytes: Vec<u8> =
                (0..blocks * block_bytes).map(|i| (i * 7 % 251) as u8 & 0x3F).collect();
            let n = blocks * block_elements;
            let threads = NonZeroUsize::new(4).unwrap();
            let whole = dequantize_named(ggml_type, &bytes, n, threads, "t").unwrap();
            let single = dequantize_named(ggml_type, &bytes, n, one(), "t").unwrap();
            assert_eq!(whole, single);
        }
    }

    #[test]
    fn wrong_sizes_are_malformed_and_unknown_types_unsupported() {
        assert!(matches!(deq(GGML_Q8_0, &[0; 33], 32), Err(Error::GgufMalformed { .. })));
        assert!(matches!(deq(GGML_Q8_0, &[0; 34], 31), Err(Error::GgufMalformed { .. })));
        assert!(matches!(deq(GGML_Q6_K, &[0; 210], 255), Err(Error::GgufMalformed { .. })));
        assert!(matches!(
            deq(16, &[0; 66], 256),
            Err(Error::UnsupportedTensorType { ggml_type: 16, type_name, .. }) if type_name == "IQ2_XXS"
        ));
        let mut out = [0f32; 31];
        assert!(matches!(
            dequantize_into(GGML_Q5_0, &[0; 22], &mut out, one()),
            Err(Error::GgufMalformed { .. })
        ));
    }

    // ----- test vectors (gguf-py 0.19.0) ------------------------------------------------

    /// A type, its block geometry, and where its f16 fields lie: `d`, then `dmin`/`m` if any.
    struct Layout {
        ggml_type: u32,
        elements: usize,
        bytes: usize,
        d: usize,
        min: Option<usize>,
    }

    /// The eight types of the K-quant work, then the three older quantised types.
    const LAYOUTS: [Layout; 11] = [
        Layout { ggml_type: GGML_Q2_K, elements: 256, bytes: 84, d: 80, min: Some(82) },
        Layout { ggml_type: GGML_Q3_K, elements: 256, bytes: 110, d: 108, min: None },
        Layout { ggml_type: GGML_Q4_K, elements: 256, bytes: 144, d: 0, min: Some(2) },
        Layout { ggml_type: GGML_Q5_K, elements: 256, bytes: 176, d: 0, min: Some(2) },
        Layout { ggml_type: GGML_Q6_K, elements: 256, bytes: 210, d: 208, min: None },
        Layout { ggml_type: GGML_Q5_0, elements: 32, bytes: 22, d: 0, min: None },
        Layout { ggml_type: GGML_Q5_1, elements: 32, bytes: 24, d: 0, min: Some(2) },
        Layout { ggml_type: GGML_IQ4_NL, elements: 32, bytes: 18, d: 0, min: None },
        Layout { ggml_type: GGML_Q4_0, elements: 32, bytes: 18, d: 0, min: None },
        Layout { ggml_type: GGML_Q4_1, elements: 32, bytes: 20, d: 0, min: Some(2) },
        Layout { ggml_type: GGML_Q8_0, elements: 32, bytes: 34, d: 0, min: None },
    ];

    /// gguf-py's output for `b[i] = (37i + 11) & 255` with `d = 0.5`, `dmin`/`m = 0.25`:
    /// `y[0..4]`, the last value and the sum (exact binary fractions: compared exactly).
    const VECTORS: [(u32, [f32; 4], f32, f64); 8] = [
        (GGML_Q2_K, [16.5, 0.0, 5.5, 11.0], 2.25, 1029.5),
        (GGML_Q3_K, [40.5, -54.0, 13.5, -27.0], 21.0, 479.0),
        (GGML_Q4_K, [157.75, -12.75, 64.75, 142.25], 24.25, 27220.0),
        (GGML_Q5_K, [405.75, -12.75, 312.75, 142.25], 54.25, 58108.0),
        (GGML_Q6_K, [-715.5, 848.0, 291.5, -265.0], -30.0, 2306.0),
        (GGML_Q5_0, [4.5, -1.0, 1.5, -4.0], 0.5, 7.5),
        (GGML_Q5_1, [9.75, 12.25, 14.75, 9.25], 2.75, 260.5),
        (GGML_IQ4_NL, [-17.5, 12.5, 56.5, -24.5], 0.5, -128.5),
    ];

    fn layout(ggml_type: u32) -> &'static Layout {
        LAYOUTS.iter().find(|l| l.ggml_type == ggml_type).unwrap()
    }

    #[test]
    fn reference_test_vectors_match_gguf_py() {
        for (ggml_type, head, last, sum) in VECTORS {
            let l = layout(ggml_type);
            let mut block: Vec<u8> = (0..l.bytes).map(|i| ((37 * i + 11) & 255) as u8).collect();
            block[l.d..l.d + 2].copy_from_slice(&f16_bytes(0.5));
            if let Some(m) = l.min {
                block[m..m + 2].copy_from_slice(&f16_bytes(0.25));
            }
            let y = deq(ggml_type, &block, l.elements).unwrap();
            let name = ggml_type_name(ggml_type);
            assert_eq!(y[..4], head, "{name}");
            assert_eq!(y[l.elements - 1], last, "{name}");
            assert_eq!(y.iter().map(|&v| f64::from(v)).sum::<f64>(), sum, "{name}");
            // The same through the scalar reference below.
            assert!(same_bits(&y, &reference(ggml_type, &block)), "{name}");
        }
    }

    // ----- a scalar reference of the formulas, index by index ---------------------------

    fn h(b: &[u8], at: usize) -> f32 {
        f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
    }

    /// `get_scale_min_k4` exactly as ggml-quants.c writes it.
    fn gsm(j: usize, s: &[u8]) -> (u8, u8) {
        if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
        }
    }

    /// One block, from the formulas of `docs`' reference brief (ggml's C loops).
    fn reference_block(ggml_type: u32, b: &[u8]) -> Vec<f32> {
        let mut y = vec![f32::NAN; layout(ggml_type).elements];
        match ggml_type {
            GGML_Q2_K => {
                let (scales, qs, d, dmin) = (&b[0..16], &b[16..80], h(b, 80), h(b, 82));
                for n in 0..2 {
                    for j in 0..4 {
                        for hh in 0..2 {
                            for l in 0..16 {
                                let sc = scales[8 * n + 2 * j + hh];
                                let q = (qs[32 * n + 16 * hh + l] >> (2 * j)) & 3;
                                y[128 * n + 32 * j + 16 * hh + l] =
                                    (d * (sc & 15) as f32) * q as f32 - dmin * (sc >> 4) as f32;
                            }
                        }
                    }
                }
            }
            GGML_Q3_K => {
                let (hmask, qs, s, d) = (&b[0..32], &b[32..96], &b[96..108], h(b, 108));
                let sc = |j: usize| -> i32 {
                    let lo = if j < 8 { s[j] & 15 } else { s[j - 8] >> 4 };
                    let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
                    (lo | hi << 4) as i32 - 32
                };
                for n in 0..2 {
                    for j in 0..4 {
                        for hh in 0..2 {
                            for l in 0..16 {
                                let k = 16 * hh + l;
                                let q = ((qs[32 * n + k] >> (2 * j)) & 3) as i32;
                                let m = if (hmask[k] >> (4 * n + j)) & 1 == 1 { 0 } else { 4 };
                                y[128 * n + 32 * j + 16 * hh + l] =
                                    (d * sc(8 * n + 2 * j + hh) as f32) * (q - m) as f32;
                            }
                        }
                    }
                }
            }
            GGML_Q4_K | GGML_Q5_K => {
                let (d, dmin, s) = (h(b, 0), h(b, 2), &b[4..16]);
                let five = ggml_type == GGML_Q5_K;
                let (qh, qs) =
                    if five { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
                for c in 0..4 {
                    let (sc1, m1) = gsm(2 * c, s);
                    let (sc2, m2) = gsm(2 * c + 1, s);
                    for l in 0..32 {
                        let mut q1 = qs[32 * c + l] & 15;
                        let mut q2 = qs[32 * c + l] >> 4;
                        if five {
                            q1 += 16 * ((qh[l] >> (2 * c)) & 1);
                            q2 += 16 * ((qh[l] >> (2 * c + 1)) & 1);
                        }
                        y[64 * c + l] = (d * sc1 as f32) * q1 as f32 - dmin * m1 as f32;
                        y[64 * c + 32 + l] = (d * sc2 as f32) * q2 as f32 - dmin * m2 as f32;
                    }
                }
            }
            GGML_Q6_K => {
                let d = h(b, 208);
                for n in 0..2 {
                    let (ql, qh, sc) = (&b[64 * n..], &b[128 + 32 * n..], &b[192 + 8 * n..]);
                    for l in 0..32 {
                        let i = l / 16;
                        let s = |k: usize| sc[k] as i8 as f32;
                        let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[128 * n + l] = (d * s(i)) * q1 as f32;
                        y[128 * n + 32 + l] = (d * s(i + 2)) * q2 as f32;
                        y[128 * n + 64 + l] = (d * s(i + 4)) * q3 as f32;
                        y[128 * n + 96 + l] = (d * s(i + 6)) * q4 as f32;
                    }
                }
            }
            GGML_Q5_0 | GGML_Q5_1 => {
                let one = ggml_type == GGML_Q5_1;
                let d = h(b, 0);
                let at = if one { 4 } else { 2 };
                let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                let qs = &b[at + 4..];
                for j in 0..16 {
                    let q0 = ((qs[j] & 15) as u32 | ((qh >> j) & 1) << 4) as i32;
                    let q1 = ((qs[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32;
                    if one {
                        let m = h(b, 2);
                        y[j] = d * q0 as f32 + m;
                        y[j + 16] = d * q1 as f32 + m;
                    } else {
                        y[j] = d * (q0 - 16) as f32;
                        y[j + 16] = d * (q1 - 16) as f32;
                    }
                }
            }
            GGML_IQ4_NL => {
                let d = h(b, 0);
                for j in 0..16 {
                    y[j] = d * IQ4_NL_VALUES[(b[2 + j] & 15) as usize] as f32;
                    y[j + 16] = d * IQ4_NL_VALUES[(b[2 + j] >> 4) as usize] as f32;
                }
            }
            GGML_Q4_0 | GGML_Q4_1 => {
                let d = h(b, 0);
                let qs = if ggml_type == GGML_Q4_1 { &b[4..20] } else { &b[2..18] };
                for j in 0..16 {
                    let (lo, hi) = ((qs[j] & 15) as i32, (qs[j] >> 4) as i32);
                    if ggml_type == GGML_Q4_1 {
                        let m = h(b, 2);
                        y[j] = d * lo as f32 + m;
                        y[j + 16] = d * hi as f32 + m;
                    } else {
                        y[j] = d * (lo - 8) as f32;
                        y[j + 16] = d * (hi - 8) as f32;
                    }
                }
            }
            GGML_Q8_0 => {
                let d = h(b, 0);
                for j in 0..32 {
                    y[j] = d * (b[2 + j] as i8) as f32;
                }
            }
            _ => unreachable!(),
        }
        y
    }

    fn reference(ggml_type: u32, bytes: &[u8]) -> Vec<f32> {
        bytes.chunks(layout(ggml_type).bytes).flat_map(|b| reference_block(ggml_type, b)).collect()
    }

    /// Bit-identical, except that any NaN equals any NaN.
    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    /// f16 patterns that stress the arithmetic: ±0, subnormals, largest finite, ±inf, NaNs.
    const SPECIAL_F16: [u16; 10] =
        [0x0000, 0x8000, 0x0001, 0x03FF, 0x8200, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0xFC01];

    /// Random blocks of one of the eleven types, with their f16 fields either random or set
    /// to one of [`SPECIAL_F16`].
    fn blocks() -> impl Strategy<Value = (u32, Vec<u8>)> {
        (0..LAYOUTS.len(), 1usize..4).prop_flat_map(|(t, n)| {
            let l = &LAYOUTS[t];
            let field = prop_oneof![
                Just(None),
                proptest::sample::select(SPECIAL_F16.to_vec()).prop_map(Some)
            ];
            (
                Just(l.ggml_type),
                proptest::collection::vec(any::<u8>(), n * l.bytes),
                proptest::collection::vec((field.clone(), field), n),
            )
                .prop_map(move |(ty, mut bytes, fields)| {
                    let l = layout(ty);
                    for (block, (d, m)) in bytes.chunks_mut(l.bytes).zip(fields) {
                        if let Some(d) = d {
                            block[l.d..l.d + 2].copy_from_slice(&d.to_le_bytes());
                        }
                        if let (Some(at), Some(m)) = (l.min, m) {
                            block[at..at + 2].copy_from_slice(&m.to_le_bytes());
                        }
                    }
                    (ty, bytes)
                })
        })
    }

    proptest! {
        #[test]
        fn kernels_match_the_scalar_reference((ggml_type, bytes) in blocks()) {
            let l = layout(ggml_type);
            let n = bytes.len() / l.bytes * l.elements;
            let y = deq(ggml_type, &bytes, n).unwrap();
            prop_assert_eq!(y.len(), n);
            prop_assert!(same_bits(&y, &reference(ggml_type, &bytes)));
        }

        #[test]
        fn any_bytes_and_length_never_panic(
            t in 0..LAYOUTS.len(),
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            n in 0usize..1200,
        ) {
            let l = &LAYOUTS[t];
            let whole = n % l.elements == 0 && n / l.elements * l.bytes == bytes.len();
            match deq(l.ggml_type, &bytes, n) {
                Ok(y) => prop_assert!(whole && y.len() == n),
                Err(e) => {
                    let malformed = matches!(e, Error::GgufMalformed { .. });
                    prop_assert!(!whole && malformed);
                }
            }
        }
    }
}
