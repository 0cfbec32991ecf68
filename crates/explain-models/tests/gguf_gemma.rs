//! The real Gemma 3 270M Q4_K_M file (`cargo xtask setup` provides it): its Q4_K, Q6_K, Q5_0
//! and Q8_0 tensors against values gguf-py 0.19.0 computed (`gguf.quants.dequantize`), and
//! [`GgufFile::tensor_as`] against `tensor_f32` converted with `to_kind`.
//!
//! The per-tensor bit-exact comparison of every tensor is `tests/gguf_parity.rs` (feature
//! `parity`, run by `cargo xtask parity`); this file stays fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use approx::assert_abs_diff_eq;
use explain_models::{GgufFile, gemma3_gguf_path};
use tch::{Kind, Tensor};

fn gemma() -> GgufFile {
    let path = gemma3_gguf_path();
    assert!(path.is_file(), "{} is missing: run `cargo xtask setup`", path.display());
    GgufFile::open(path).unwrap()
}

/// One tensor as gguf-py 0.19.0 dequantises it.
struct Expected {
    name: &'static str,
    type_name: &'static str,
    /// Torch order.
    shape: [i64; 2],
    /// Absolute offset of the data in the file.
    offset: u64,
    /// `y[0..2]`, printed with 10 significant digits (f32 holds ~7): compared to 1e-9.
    head: Option<[f64; 2]>,
    /// f64 sum of the f32 values, printed to 6 decimals: compared to 1e-6.
    sum: f64,
}

const REFERENCE: [Expected; 4] = [
    Expected {
        name: "blk.0.attn_output.weight",
        type_name: "Q4_K",
        shape: [640, 1024],
        offset: 184_901_824,
        head: Some([-0.015_705_108_6, 0.049_669_265_7]),
        sum: -1.833_076,
    },
    Expected {
        name: "blk.0.ffn_down.weight",
        type_name: "Q6_K",
        shape: [640, 2048],
        offset: 185_896_128,
        head: Some([0.005_211_710_9, 0.021_715_462_2]),
        sum: 6.480_194,
    },
    Expected {
        name: "blk.0.attn_q.weight",
        type_name: "Q5_0",
        shape: [1024, 640],
        offset: 185_270_464,
        head: Some([-0.003_784_179_7, 0.007_568_359_4]),
        sum: -51.693_369,
    },
    Expected {
        name: "token_embd.weight",
        type_name: "Q8_0",
        shape: [262_144, 640],
        offset: 6_527_680,
        head: None,
        sum: -27_668.368_624,
    },
];

#[test]
fn gemma3_tensors_match_gguf_py() {
    let file = gemma();
    assert_eq!(file.data_start(), 6_525_120);
    for expected in &REFERENCE {
        let name = expected.name;
        let info = file.tensor_info(name).unwrap();
        assert_eq!(info.type_name(), expected.type_name, "{name}");
        assert_eq!(info.shape(), expected.shape, "{name}");
        assert_eq!(file.data_start() + info.offset(), expected.offset, "{name}");
        let values = file.tensor_f32(name).unwrap();
        assert_eq!(values.len() as i64, expected.shape[0] * expected.shape[1], "{name}");
        if let Some([y0, y1]) = expected.head {
            assert_abs_diff_eq!(f64::from(values[0]), y0, epsilon = 1e-9);
            assert_abs_diff_eq!(f64::from(values[1]), y1, epsilon = 1e-9);
        }
        let total: f64 = values.iter().map(|&v| f64::from(v)).sum();
        assert_abs_diff_eq!(total, expected.sum, epsilon = 1e-6);
    }
}

#[test]
fn gemma3_holds_the_expected_types_and_all_are_supported() {
    let file = gemma();
    let mut counts = std::collections::BTreeMap::new();
    for info in file.tensor_infos() {
        *counts.entry(info.type_name()).or_insert(0) += 1;
        assert!(explain_models::gguf::is_supported_type(info.ggml_type()), "{}", info.name());
    }
    let expected = [("F32", 109), ("Q4_K", 27), ("Q5_0", 81), ("Q6_K", 9), ("Q8_0", 10)];
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), expected);
}

#[test]
fn tensor_as_equals_the_f32_values_then_to_kind() {
    let file = gemma();
    // Real tensors of three types; tests/gguf.rs crosses chunk boundaries.
    for name in ["blk.0.ffn_down.weight", "blk.0.attn_q.weight", "output_norm.weight"] {
        let info = file.tensor_info(name).unwrap();
        let f32_tensor = Tensor::from_slice(&file.tensor_f32(name).unwrap()).reshape(info.shape());
        assert!(file.tensor(name).unwrap().equal(&f32_tensor), "{name}");
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half, Kind::Double] {
            let direct = file.tensor_as(name, kind).unwrap();
            assert_eq!(direct.kind(), kind, "{name}");
            assert_eq!(direct.size(), f32_tensor.size(), "{name}");
            let expected = f32_tensor.to_kind(kind);
            assert!(direct.equal(&expected), "{name} as {kind:?}");
        }
    }
    assert!(matches!(
        file.tensor_as("output_norm.weight", Kind::Int64),
        Err(explainability_core::Error::UnsupportedDtype { .. })
    ));
}
