//! Dequantisation of GGML tensor data to `f32`: F32, F16, BF16, Q8_0, Q4_0 and Q4_1.
//!
//! Block layouts (ggml `ggml-common.h`; `d` and `m` are little-endian f16):
//! - Q4_0: `d`, 16 bytes of nibbles for 32 weights; `w = d · (q − 8)`.
//! - Q4_1: `d`, `m`, 16 bytes of nibbles for 32 weights; `w = d · q + m`.
//! - Q8_0: `d`, 32 × i8; `w = d · q`.
//!
//! In the nibble formats byte `j` holds weight `j` in its low nibble and weight `j + 16` in its
//! high nibble. Arithmetic is f32 multiply then add, exactly as gguf-py's reference
//! `dequantize` does it, so results are bit-identical to it.
//!
//! Large tensors are split into block-aligned chunks dequantised on scoped threads.

use explainability_core::{Error, Result};
use half::{bf16, f16};

use super::types::{GGML_BF16, GGML_F16, GGML_F32, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0};

/// Blocks below which one thread does the whole tensor.
const PARALLEL_MIN_BLOCKS: usize = 1 << 16;

/// Dequantises a run of whole blocks into as many output values.
type Run = fn(&[u8], &mut [f32]);

/// One supported encoding: block geometry and the kernel for a run of whole blocks.
struct Kernel {
    block_elements: usize,
    block_bytes: usize,
    run: Run,
}

fn kernel(ggml_type: u32) -> Option<Kernel> {
    let (block_elements, block_bytes, run): (usize, usize, Run) = match ggml_type {
        GGML_F32 => (1, 4, f32_run),
        GGML_F16 => (1, 2, f16_run),
        GGML_BF16 => (1, 2, bf16_run),
        GGML_Q8_0 => (32, 34, q8_0_run),
        GGML_Q4_0 => (32, 18, q4_0_run),
        GGML_Q4_1 => (32, 20, q4_1_run),
        _ => return None,
    };
    Some(Kernel { block_elements, block_bytes, run })
}

/// Dequantises `bytes` of GGML type `ggml_type` holding `n_elements` values.
///
/// Returns `Ok(None)` when the type is not one this module decodes (the caller names the
/// tensor in its error).
///
/// # Errors
/// [`Error::GgufMalformed`] when `n_elements` is not a whole number of blocks or `bytes` does
/// not hold exactly that many blocks.
pub(crate) fn dequantize(
    ggml_type: u32,
    bytes: &[u8],
    n_elements: usize,
    tensor_name: &str,
) -> Result<Option<Vec<f32>>> {
    let Some(kernel) = kernel(ggml_type) else { return Ok(None) };
    let blocks = n_elements / kernel.block_elements;
    if !n_elements.is_multiple_of(kernel.block_elements)
        || blocks.checked_mul(kernel.block_bytes) != Some(bytes.len())
    {
        return Err(Error::GgufMalformed {
            reason: format!(
                "tensor {tensor_name:?}: {n_elements} elements in blocks of {} do not match its \
                 {} bytes of data",
                kernel.block_elements,
                bytes.len()
            ),
        });
    }
    let mut out = vec![0f32; n_elements];
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(8);
    if threads <= 1 || blocks < PARALLEL_MIN_BLOCKS {
        (kernel.run)(bytes, &mut out);
    } else {
        let blocks_per_chunk = blocks.div_ceil(threads);
        let in_chunk = blocks_per_chunk * kernel.block_bytes;
        let out_chunk = blocks_per_chunk * kernel.block_elements;
        std::thread::scope(|scope| {
            for (input, output) in bytes.chunks(in_chunk).zip(out.chunks_mut(out_chunk)) {
                scope.spawn(move || (kernel.run)(input, output));
            }
        });
    }
    Ok(Some(out))
}

fn f32_run(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        if let Ok(b) = <[u8; 4]>::try_from(b) {
            *o = f32::from_le_bytes(b);
        }
    }
}

fn f16_run(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        if let &[lo, hi] = b {
            *o = f16::from_le_bytes([lo, hi]).to_f32();
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
    for (block, o) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1], qs)) = block.split_first_chunk::<2>() else { continue };
        let d = f16::from_le_bytes([d0, d1]).to_f32();
        for (o, &q) in o.iter_mut().zip(qs) {
            *o = d * f32::from(q as i8);
        }
    }
}

fn q4_0_run(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1], qs)) = block.split_first_chunk::<2>() else { continue };
        let d = f16::from_le_bytes([d0, d1]).to_f32();
        let (low, high) = o.split_at_mut(16);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(qs) {
            *lo = d * f32::from((q & 0x0F) as i8 - 8);
            *hi = d * f32::from((q >> 4) as i8 - 8);
        }
    }
}

fn q4_1_run(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(20).zip(out.chunks_exact_mut(32)) {
        let Some((&[d0, d1, m0, m1], qs)) = block.split_first_chunk::<4>() else { continue };
        let d = f16::from_le_bytes([d0, d1]).to_f32();
        let m = f16::from_le_bytes([m0, m1]).to_f32();
        let (low, high) = o.split_at_mut(16);
        for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(qs) {
            *lo = d * f32::from(q & 0x0F) + m;
            *hi = d * f32::from(q >> 4) + m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_low_nibbles_first_then_high() {
        let mut block = Vec::new();
        block.extend(f16_bytes(0.5));
        block.extend(f16_bytes(-1.0));
        block.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
        let out = dequantize(GGML_Q4_1, &block, 32, "t").unwrap().unwrap();
        for j in 0..16 {
            assert_eq!(out[j], 0.5 * j as f32 - 1.0);
            assert_eq!(out[j + 16], 0.5 * (15 - j) as f32 - 1.0);
        }
    }

    #[test]
    fn q4_0_is_offset_by_eight() {
        let mut block = f16_bytes(2.0).to_vec();
        block.extend([0x80u8; 16]); // low nibble 0 → -8, high nibble 8 → 0
        let out = dequantize(GGML_Q4_0, &block, 32, "t").unwrap().unwrap();
        assert!(out[..16].iter().all(|&w| w == -16.0));
        assert!(out[16..].iter().all(|&w| w == 0.0));
    }

    #[test]
    fn parallel_path_matches_single_thread() {
        let blocks = PARALLEL_MIN_BLOCKS + 3;
        let bytes: Vec<u8> = (0..blocks * 34).map(|i| (i * 7 % 251) as u8 & 0x3F).collect();
        let whole = dequantize(GGML_Q8_0, &bytes, blocks * 32, "t").unwrap().unwrap();
        let mut single = vec![0f32; blocks * 32];
        q8_0_run(&bytes, &mut single);
        assert_eq!(whole, single);
    }

    #[test]
    fn wrong_sizes_are_malformed_and_unknown_types_none() {
        assert!(matches!(
            dequantize(GGML_Q8_0, &[0; 33], 32, "t"),
            Err(Error::GgufMalformed { .. })
        ));
        assert!(matches!(
            dequantize(GGML_Q8_0, &[0; 34], 31, "t"),
            Err(Error::GgufMalformed { .. })
        ));
        assert!(matches!(dequantize(12, &[0; 144], 256, "t"), Ok(None)));
    }
}
