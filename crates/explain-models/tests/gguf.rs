//! The GGUF reader: hand-built files with every metadata type and every supported tensor type
//! (exact dequantised values), every kind of malformed or hostile header (each asserting its
//! error variant), and the real SmolLM2-135M file against gguf-py's reference values.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/gguf_writer.rs"]
mod gguf_writer;

use std::path::{Path, PathBuf};
use std::time::Instant;

use approx::assert_abs_diff_eq;
use explain_models::GgufFile;
use explain_models::gguf::{MetadataValue, ggml_type_name, is_supported_type};
use explainability_core::Error;
use gguf_writer::{GgufWriter, Value, ggml, smollm2_path, ty};
use proptest::prelude::*;
use tch::{Kind, Tensor};

// ----- hand-built blocks with known values ------------------------------------------------

/// Little-endian f16 bit patterns of values exactly representable in f16.
const F16_HALF: u16 = 0x3800; // 0.5
const F16_MINUS_QUARTER: u16 = 0xB400; // -0.25
const F16_TWO: u16 = 0x4000; // 2.0
const F16_MINUS_1_25: u16 = 0xBD00; // -1.25
const F16_SIXTEENTH: u16 = 0x2C00; // 0.0625
const F16_THREE: u16 = 0x4200; // 3.0

fn le16(bits: u16) -> [u8; 2] {
    bits.to_le_bytes()
}

fn f32_data(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

const F32_VALUES: [f32; 6] = [0.5, -1.0, 2.25, 1e-3, -0.0, 3.0e5];

/// f16 bit patterns and the values they encode (normal, subnormal, max).
const F16_CASES: [(u16, f32); 6] = [
    (0x3C00, 1.0),
    (0xC100, -2.5),
    (0x3000, 0.125),
    (0x7BFF, 65504.0),
    (0x0400, 6.103_515_6e-5), // 2^-14, smallest normal
    (0x0001, 5.960_464_5e-8), // 2^-24, smallest subnormal
];

/// bf16 bit patterns and their values.
const BF16_CASES: [(u16, f32); 3] = [(0x3F80, 1.0), (0xC060, -3.5), (0x5000, 8_589_934_592.0)];

/// Two Q8_0 blocks: `d = 0.5, q_j = j − 16` and `d = −0.25, q_j = 127 − 8j`.
fn q8_0_blocks() -> (Vec<u8>, Vec<f32>) {
    let mut data = le16(F16_HALF).to_vec();
    let mut expected = Vec::new();
    for j in 0..32i32 {
        data.push((j - 16) as i8 as u8);
        expected.push(0.5 * (j - 16) as f32);
    }
    data.extend(le16(F16_MINUS_QUARTER));
    for j in 0..32i32 {
        data.push((127 - 8 * j) as i8 as u8);
        expected.push(-0.25 * (127 - 8 * j) as f32);
    }
    (data, expected)
}

/// One Q4_0 block, `d = 2`: byte j holds `j` (weight j) and `15 − j` (weight j + 16).
fn q4_0_block() -> (Vec<u8>, Vec<f32>) {
    let mut data = le16(F16_TWO).to_vec();
    data.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
    let mut expected: Vec<f32> = (0..16).map(|j| 2.0 * (j as f32 - 8.0)).collect();
    expected.extend((0..16).map(|j| 2.0 * ((15 - j) as f32 - 8.0)));
    (data, expected)
}

/// Two Q4_1 blocks: `d = 0.5, m = −1.25`, byte j = `j | (3j mod 16) << 4`; then
/// `d = 0.0625, m = 3`, all nibbles 15.
fn q4_1_blocks() -> (Vec<u8>, Vec<f32>) {
    let mut data = le16(F16_HALF).to_vec();
    data.extend(le16(F16_MINUS_1_25));
    data.extend((0u8..16).map(|j| j | (((3 * j) % 16) << 4)));
    let mut expected: Vec<f32> = (0..16).map(|j| 0.5 * j as f32 - 1.25).collect();
    expected.extend((0..16).map(|j| 0.5 * ((3 * j) % 16) as f32 - 1.25));
    data.extend(le16(F16_SIXTEENTH));
    data.extend(le16(F16_THREE));
    data.extend([0xFF; 16]);
    expected.extend([0.0625 * 15.0 + 3.0; 32]);
    (data, expected)
}

/// A file with metadata of every type and one tensor of each supported type.
fn all_types_writer() -> GgufWriter {
    let f16_data = F16_CASES.iter().flat_map(|&(bits, _)| le16(bits)).collect();
    let bf16_data = BF16_CASES.iter().flat_map(|&(bits, _)| le16(bits)).collect();
    GgufWriter::new()
        .kv("general.architecture", Value::string("llama"))
        .kv("llama.block_count", Value::u32(30))
        .kv("t.u8", Value::u8(200))
        .kv("t.i8", Value::i8(-7))
        .kv("t.u16", Value::u16(65_000))
        .kv("t.i16", Value::i16(-30_000))
        .kv("t.i32", Value::i32(-5))
        .kv("t.i32_positive", Value::i32(12))
        .kv("t.f32", Value::f32(1.5))
        .kv("t.bool", Value::bool(true))
        .kv("t.u64", Value::u64(1 << 40))
        .kv("t.u64_small", Value::u64(77))
        .kv("t.i64", Value::i64(-(1 << 40)))
        .kv("t.f64", Value::f64(100_000.0))
        .kv("t.strings", Value::strings(&["a", "", "日本語", "b c"]))
        .kv("t.i32s", Value::i32s(&[1, -2, 3]))
        .kv("t.empty", Value::array(ty::U8, vec![]))
        .kv(
            "t.nested",
            Value::array(
                ty::ARRAY,
                vec![
                    Value::array(ty::U32, vec![Value::u32(1), Value::u32(2)]),
                    Value::array(ty::U32, vec![Value::u32(3)]),
                ],
            ),
        )
        .tensor("f32", &[3, 2], ggml::F32, f32_data(&F32_VALUES))
        .tensor("f16", &[6], ggml::F16, f16_data)
        .tensor("bf16", &[3], ggml::BF16, bf16_data)
        .tensor("q8_0", &[64], ggml::Q8_0, q8_0_blocks().0)
        .tensor("q4_0", &[32], ggml::Q4_0, q4_0_block().0)
        .tensor("q4_1", &[32, 2], ggml::Q4_1, q4_1_blocks().0)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_bytes(bytes: &[u8]) -> Result<GgufFile, Error> {
    let dir = tempfile::tempdir().unwrap();
    GgufFile::open(write(dir.path(), "t.gguf", bytes))
}

fn values(file: &GgufFile, name: &str) -> Vec<f32> {
    let t = file.tensor(name).unwrap();
    assert_eq!(t.kind(), tch::Kind::Float);
    assert_eq!(t.device(), tch::Device::Cpu);
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

// ----- valid files --------------------------------------------------------------------------

#[test]
fn every_supported_tensor_type_dequantises_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(all_types_writer().write(dir.path(), "all.gguf")).unwrap();
    // Every block above holds values exact in f32, so equality is exact.
    assert_eq!(values(&file, "f32"), F32_VALUES);
    assert_eq!(values(&file, "f16"), F16_CASES.map(|(_, v)| v));
    assert_eq!(values(&file, "bf16"), BF16_CASES.map(|(_, v)| v));
    assert_eq!(values(&file, "q8_0"), q8_0_blocks().1);
    assert_eq!(values(&file, "q4_0"), q4_0_block().1);
    assert_eq!(values(&file, "q4_1"), q4_1_blocks().1);
    assert_eq!(file.tensor_f32("q4_1").unwrap(), q4_1_blocks().1);
    // Negative zero survives.
    assert!(values(&file, "f32")[4].is_sign_negative());
}

#[test]
fn tensor_as_crosses_conversion_chunks_exactly() {
    // 36865 rows of 256 Q4_K values: two whole 4 Mi-value conversion chunks and a partial one.
    let rows = 36_865u64;
    let mut data: Vec<u8> = (0..rows as usize * 144).map(|i| (i * 37 + 11) as u8).collect();
    for block in data.chunks_mut(144) {
        block[..4].copy_from_slice(&[0x00, 0x38, 0x00, 0x34]); // d = 0.5, dmin = 0.25
    }
    let dir = tempfile::tempdir().unwrap();
    let path =
        GgufWriter::new().tensor("w", &[256, rows], ggml::Q4_K, data).write(dir.path(), "w.gguf");
    let file = GgufFile::open(path).unwrap();
    let values = Tensor::from_slice(&file.tensor_f32("w").unwrap()).reshape([rows as i64, 256]);
    for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
        let chunked = file.tensor_as("w", kind).unwrap();
        assert_eq!(chunked.size(), [rows as i64, 256]);
        assert!(chunked.equal(&values.to_kind(kind)), "{kind:?}");
    }
}

#[test]
fn shapes_are_reversed_into_torch_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(all_types_writer().write(dir.path(), "all.gguf")).unwrap();
    assert_eq!(file.tensor("f32").unwrap().size(), vec![2, 3]);
    assert_eq!(file.tensor("q4_1").unwrap().size(), vec![2, 32]);
    let info = file.tensor_info("q4_1").unwrap();
    assert_eq!(info.name(), "q4_1");
    assert_eq!(info.dims(), &[32, 2]);
    assert_eq!(info.shape(), vec![2, 32]);
    assert_eq!(info.ggml_type(), 3);
    assert_eq!(info.type_name(), "Q4_1");
    assert_eq!(info.n_elements(), 64);
    assert_eq!(info.offset() % 32, 0);
    assert_eq!(file.tensor_bytes("q4_1").unwrap().len(), 40);
    assert_eq!(file.tensor_names(), ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"]);
    assert_eq!(file.tensor_infos().len(), 6);
    assert!(file.tensor_info("absent").is_none());
    assert!(
        matches!(file.tensor("absent"), Err(Error::MissingWeight { name }) if name == "absent")
    );
}

#[test]
fn metadata_of_every_type_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = GgufFile::open(all_types_writer().write(dir.path(), "all.gguf")).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_start() % 32, 0);
    assert_eq!(file.metadata().len(), 18);
    assert_eq!(file.architecture().unwrap(), "llama");
    let get = |k: &str| file.get(k).unwrap().clone();
    assert_eq!(get("t.u8"), MetadataValue::U8(200));
    assert_eq!(get("t.i8"), MetadataValue::I8(-7));
    assert_eq!(get("t.u16"), MetadataValue::U16(65_000));
    assert_eq!(get("t.i16"), MetadataValue::I16(-30_000));
    assert_eq!(get("t.i32"), MetadataValue::I32(-5));
    assert_eq!(get("t.f32"), MetadataValue::F32(1.5));
    assert_eq!(get("t.bool"), MetadataValue::Bool(true));
    assert_eq!(get("t.u64"), MetadataValue::U64(1 << 40));
    assert_eq!(get("t.i64"), MetadataValue::I64(-(1 << 40)));
    assert_eq!(get("t.f64"), MetadataValue::F64(100_000.0));
    assert_eq!(get("t.empty"), MetadataValue::Array(vec![]));
    assert_eq!(
        get("t.nested"),
        MetadataValue::Array(vec![
            MetadataValue::Array(vec![MetadataValue::U32(1), MetadataValue::U32(2)]),
            MetadataValue::Array(vec![MetadataValue::U32(3)]),
        ])
    );

    // Integer getters accept any integer type whose value fits.
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("t.u8").unwrap(), 200);
    assert_eq!(file.get_u32("t.u16").unwrap(), 65_000);
    assert_eq!(file.get_u32("t.u64_small").unwrap(), 77);
    assert_eq!(file.get_u32("t.i32_positive").unwrap(), 12);
    assert_eq!(file.get_u64("t.u64").unwrap(), 1 << 40);
    assert_eq!(file.get_f32("t.f64").unwrap(), 100_000.0);
    assert_eq!(file.get_f32("t.f32").unwrap(), 1.5);
    assert_eq!(file.get_f32("t.u8").unwrap(), 200.0);
    assert!(file.get_bool("t.bool").unwrap());
    assert_eq!(file.get_string_array("t.strings").unwrap(), ["a", "", "日本語", "b c"]);
    assert_eq!(file.get_i32_array("t.i32s").unwrap(), [1, -2, 3]);
    assert_eq!(file.opt_i64_array("t.i32s").unwrap(), Some(vec![1, -2, 3]));
    assert_eq!(file.opt_f32_array("t.i32s").unwrap(), Some(vec![1.0, -2.0, 3.0]));

    // Absent keys: `opt_*` give None, `get_*` name the key.
    assert_eq!(file.opt_u32("absent").unwrap(), None);
    assert_eq!(file.opt_str("absent").unwrap(), None);
    assert_eq!(file.opt_string_array("absent").unwrap(), None);
    assert!(
        matches!(file.get_u32("absent"), Err(Error::MissingMetadata { key, .. }) if key == "absent")
    );

    // Present with the wrong type, or out of range: MissingMetadata naming the key.
    for key in ["t.i32", "t.u64", "general.architecture", "t.f32"] {
        assert!(
            matches!(file.get_u32(key), Err(Error::MissingMetadata { key: k, .. }) if k == key),
            "{key}"
        );
        assert!(matches!(file.opt_u32(key), Err(Error::MissingMetadata { .. })), "{key}");
    }
    assert!(matches!(file.get_str("t.u8"), Err(Error::MissingMetadata { .. })));
    assert!(matches!(file.get_string_array("t.i32s"), Err(Error::MissingMetadata { .. })));
    assert!(matches!(file.get_i32_array("t.strings"), Err(Error::MissingMetadata { .. })));
    assert!(matches!(file.get_f32("t.strings"), Err(Error::MissingMetadata { .. })));
    assert!(matches!(file.get_bool("t.u8"), Err(Error::MissingMetadata { .. })));
}

#[test]
fn version_2_and_custom_alignment_are_read() {
    let mut writer = all_types_writer().kv("general.alignment", Value::u32(64));
    writer.alignment = 64;
    writer.version = 2;
    let file = open_bytes(&writer.build()).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_start() % 64, 0);
    assert_eq!(values(&file, "q4_1"), q4_1_blocks().1);
}

#[test]
fn a_file_without_tensors_opens() {
    let file = open_bytes(&GgufWriter::new().kv("a", Value::u8(1)).build()).unwrap();
    assert!(file.tensor_infos().is_empty());
    assert!(matches!(file.architecture(), Err(Error::MissingMetadata { .. })));
}

#[test]
fn type_table_names_types() {
    assert_eq!(ggml_type_name(2), "Q4_0");
    assert_eq!(ggml_type_name(3), "Q4_1");
    assert_eq!(ggml_type_name(8), "Q8_0");
    assert_eq!(ggml_type_name(10), "Q2_K");
    assert_eq!(ggml_type_name(12), "Q4_K");
    assert_eq!(ggml_type_name(14), "Q6_K");
    assert_eq!(ggml_type_name(30), "BF16");
    assert_eq!(ggml_type_name(1000), "unknown");
    assert!([0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 30].into_iter().all(is_supported_type));
    assert!(![9, 15, 16, 23, 24, 28, 39].into_iter().any(is_supported_type));
}

// ----- unsupported and malformed tensors ----------------------------------------------------

#[test]
fn unsupported_tensor_types_are_named() {
    let writer = GgufWriter::new()
        .tensor("blk.0.ffn_up.weight", &[256], ggml::IQ4_XS, vec![0; 136])
        .tensor("mystery", &[8], 99, vec![0; 8])
        .tensor("ok", &[1], ggml::F32, f32_data(&[1.0]));
    let file = open_bytes(&writer.build()).unwrap();
    assert!(matches!(
        file.tensor("blk.0.ffn_up.weight"),
        Err(Error::UnsupportedTensorType { name, ggml_type: 23, type_name })
            if name == "blk.0.ffn_up.weight" && type_name == "IQ4_XS"
    ));
    // The raw bytes of a known layout are still available.
    assert_eq!(file.tensor_bytes("blk.0.ffn_up.weight").unwrap().len(), 136);
    // An id ggml never assigned: the data cannot even be delimited.
    assert!(matches!(
        file.tensor("mystery"),
        Err(Error::UnsupportedTensorType { name, ggml_type: 99, type_name })
            if name == "mystery" && type_name == "unknown"
    ));
    assert!(matches!(file.tensor_bytes("mystery"), Err(Error::UnsupportedTensorType { .. })));
    assert_eq!(values(&file, "ok"), [1.0]);
}

#[test]
fn rows_that_are_not_whole_blocks_are_malformed() {
    let writer = GgufWriter::new().tensor("w", &[16, 2], ggml::Q8_0, vec![0; 34]);
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("\"w\""))
    );
}

#[test]
fn k_quant_rows_that_are_not_whole_super_blocks_are_malformed() {
    // Gemma's hidden size 640 is not a multiple of 256: llama.cpp stores such rows as Q5_0;
    // a file that claims Q4_K for them is rejected at open, naming the tensor.
    for (ggml_type, block_bytes) in [(ggml::Q4_K, 144), (ggml::Q6_K, 210)] {
        let writer = GgufWriter::new().tensor(
            "blk.0.attn_q.weight",
            &[640, 1],
            ggml_type,
            vec![0; 3 * block_bytes],
        );
        assert!(matches!(
            open_bytes(&writer.build()),
            Err(Error::GgufMalformed { reason }) if reason.contains("\"blk.0.attn_q.weight\"") && reason.contains("256")
        ));
    }
    let writer = GgufWriter::new().tensor("w", &[48], ggml::Q5_0, vec![0; 44]);
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("\"w\""))
    );
}

#[test]
fn new_type_data_cut_short_is_truncated() {
    for (ggml_type, elements, block_bytes) in [
        (ggml::Q2_K, 256, 84),
        (ggml::Q6_K, 512, 210),
        (ggml::Q5_1, 64, 24),
        (ggml::IQ4_NL, 32, 18),
    ] {
        let data = vec![0u8; elements / if elements >= 256 { 256 } else { 32 } * block_bytes];
        let mut bytes = GgufWriter::new().tensor("w", &[elements as u64], ggml_type, data).build();
        bytes.truncate(bytes.len() - 1);
        assert!(
            matches!(open_bytes(&bytes), Err(Error::GgufTruncated { what, .. }) if what.contains("\"w\"")),
            "{}",
            ggml_type_name(ggml_type)
        );
    }
}

#[test]
fn more_than_four_dims_are_malformed() {
    let writer = GgufWriter::new().tensor("w", &[1, 1, 1, 1, 1], ggml::F32, f32_data(&[1.0]));
    assert!(matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { .. })));
}

#[test]
fn dims_whose_product_overflows_are_implausible() {
    let writer = GgufWriter::new().tensor("w", &[1 << 40, 1 << 40], ggml::F32, vec![]);
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufImplausible { what, .. }) if what.contains("\"w\""))
    );
}

#[test]
fn tensor_data_outside_the_file_is_rejected() {
    // The offset alone lies past the end of the file.
    let mut writer = GgufWriter::new().tensor("w", &[1], ggml::F32, f32_data(&[1.0]));
    writer.tensors[0].offset = Some(1 << 40);
    assert!(matches!(
        open_bytes(&writer.build()),
        Err(Error::GgufImplausible { what, value, .. }) if what.contains("\"w\"") && value == 1 << 40
    ));
    // An offset near u64::MAX must not overflow.
    writer.tensors[0].offset = Some(u64::MAX - 31);
    assert!(matches!(open_bytes(&writer.build()), Err(Error::GgufImplausible { .. })));
    // The offset is inside, the data runs past the end: 100 f32 declared, 1 stored.
    let writer = GgufWriter::new().tensor("w", &[100], ggml::F32, f32_data(&[1.0]));
    assert!(matches!(
        open_bytes(&writer.build()),
        Err(Error::GgufTruncated { what, needed: 400, .. }) if what.contains("\"w\"")
    ));
}

#[test]
fn unaligned_and_overlapping_tensors_are_malformed() {
    let mut writer = GgufWriter::new().tensor("a", &[8], ggml::F32, f32_data(&[1.0; 8])).tensor(
        "b",
        &[8],
        ggml::F32,
        f32_data(&[2.0; 8]),
    );
    writer.tensors[1].offset = Some(4);
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("alignment"))
    );
    writer.tensors[1].offset = Some(0);
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("overlap"))
    );
}

#[test]
fn duplicates_are_malformed() {
    let writer = GgufWriter::new().tensor("a", &[1], ggml::F32, f32_data(&[1.0])).tensor(
        "a",
        &[1],
        ggml::F32,
        f32_data(&[2.0]),
    );
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("duplicate tensor"))
    );
    let writer = GgufWriter::new().kv("k", Value::u8(1)).kv("k", Value::u8(2));
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("duplicate metadata"))
    );
}

// ----- malformed headers --------------------------------------------------------------------

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        GgufFile::open(dir.path().join("absent.gguf")),
        Err(Error::Io { path, .. }) if path.ends_with("absent.gguf")
    ));
}

#[test]
fn wrong_magic_is_reported_with_the_bytes_found() {
    let mut writer = all_types_writer();
    writer.magic = *b"GGML";
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufBadMagic { found, .. }) if &found == b"GGML")
    );
    assert!(matches!(open_bytes(b"{\"json\": true}"), Err(Error::GgufBadMagic { .. })));
}

#[test]
fn unsupported_versions_are_reported() {
    for version in [0, 1, 4, 0x0300_0000] {
        let mut writer = all_types_writer();
        writer.version = version;
        assert!(
            matches!(open_bytes(&writer.build()), Err(Error::GgufUnsupportedVersion { version: v }) if v == version),
            "{version}"
        );
    }
}

#[test]
fn every_truncation_fails_with_a_gguf_error() {
    let (bytes, layout) = all_types_writer().build_with_layout();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    for cut in 0..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let result = GgufFile::open(&path);
        match cut {
            // Inside the fixed header (magic, version, counts).
            0..24 => assert!(matches!(result, Err(Error::GgufTruncated { .. })), "cut {cut}"),
            // Inside metadata or tensor infos: either a read runs out of bytes, or a count can
            // no longer fit in what is left.
            _ if cut < layout.infos_end => assert!(
                matches!(result, Err(Error::GgufTruncated { .. } | Error::GgufImplausible { .. })),
                "cut {cut}: {result:?}"
            ),
            // In the padding or the data: a tensor's data runs past the end.
            _ => assert!(
                matches!(&result, Err(Error::GgufTruncated { what, .. }) if what.starts_with("data of tensor")),
                "cut {cut}: {result:?}"
            ),
        }
    }
    // A few cuts named explicitly, for the record.
    assert_eq!(layout.header_end, 24);
    assert!(layout.metadata_end > layout.header_end && layout.infos_end > layout.metadata_end);
    assert!(GgufFile::open(write(dir.path(), "whole.gguf", &bytes)).is_ok());
}

#[test]
fn absurd_counts_fail_fast() {
    let absurd = u64::MAX / 2;
    let start = Instant::now();

    let mut writer = all_types_writer();
    writer.tensor_count = Some(absurd);
    assert!(matches!(
        open_bytes(&writer.build()),
        Err(Error::GgufImplausible { what, value, .. }) if what == "tensor_count" && value == absurd
    ));

    let mut writer = all_types_writer();
    writer.kv_count = Some(absurd);
    assert!(matches!(
        open_bytes(&writer.build()),
        Err(Error::GgufImplausible { what, value, .. }) if what == "kv_count" && value == absurd
    ));

    // A key whose length field is absurd: patch the first key's u64 length.
    let (mut bytes, layout) = all_types_writer().build_with_layout();
    bytes[layout.header_end..layout.header_end + 8].copy_from_slice(&absurd.to_le_bytes());
    assert!(matches!(
        open_bytes(&bytes),
        Err(Error::GgufImplausible { what, value, .. }) if what.contains("key") && value == absurd
    ));

    // A string value whose length is absurd.
    let mut bytes = absurd.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"abc");
    let writer = GgufWriter::new().kv("s", Value { ty: ty::STRING, bytes });
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufImplausible { value, .. }) if value == absurd)
    );

    // Arrays whose length is absurd, or whose length times element size overflows u64.
    for (element_type, count) in [(ty::U8, absurd), (ty::U64, u64::MAX / 4), (ty::STRING, absurd)] {
        let mut bytes = element_type.to_le_bytes().to_vec();
        bytes.extend_from_slice(&count.to_le_bytes());
        let writer = GgufWriter::new().kv("arr", Value { ty: ty::ARRAY, bytes });
        assert!(
            matches!(open_bytes(&writer.build()), Err(Error::GgufImplausible { what, value, .. })
                if what.contains("arr") && value == count),
            "{element_type} × {count}"
        );
    }

    // A count the file could hold in principle, but not from where it is read.
    let mut bytes = ty::U32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&20u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 12]);
    let writer = GgufWriter::new()
        .kv("pad", Value::string(&"x".repeat(200)))
        .kv("arr", Value { ty: ty::ARRAY, bytes });
    assert!(matches!(
        open_bytes(&writer.build()),
        Err(Error::GgufTruncated { what, needed: 80, .. }) if what.contains("arr")
    ));

    // None of this took long: nothing was allocated for the absurd counts.
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}

#[test]
fn more_metadata_elements_than_the_budget_are_refused() {
    // 2^23 + 1 one-byte elements: plausible for the file size, but each would cost 32 bytes.
    let count = (1u64 << 23) + 1;
    let mut bytes = ty::U8.to_le_bytes().to_vec();
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.resize(bytes.len() + count as usize, 0);
    let writer = GgufWriter::new().kv("big", Value { ty: ty::ARRAY, bytes });
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("\"big\""))
    );
}

#[test]
fn more_entries_than_any_real_file_are_refused() {
    // Counts that fit the file size (the file is padded with zeros to hold them) but exceed
    // the reader's cap of 2^20 entries, which no real file comes near.
    let count = (1u64 << 20) + 1;
    for (tensors, kvs) in [(Some(count), None), (None, Some(count))] {
        let mut writer = GgufWriter::new();
        writer.tensor_count = tensors;
        writer.kv_count = kvs;
        let mut bytes = writer.build();
        bytes.resize(24 + 24 * count as usize, 0);
        assert!(
            matches!(open_bytes(&bytes), Err(Error::GgufMalformed { reason }) if reason.contains("more than")),
            "{tensors:?} {kvs:?}"
        );
    }
}

#[test]
fn structural_errors_are_malformed() {
    // Unknown value type.
    let writer = GgufWriter::new().kv("k", Value { ty: 13, bytes: vec![0; 8] });
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("value type 13"))
    );
    // Unknown array element type.
    let mut bytes = 42u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.push(0);
    let writer = GgufWriter::new().kv("k", Value { ty: ty::ARRAY, bytes });
    assert!(matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { .. })));
    // Key that is not UTF-8.
    let mut writer = GgufWriter::new();
    writer.kv.push((vec![0xFF, 0xFE], Value::u8(1)));
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("UTF-8"))
    );
    // Arrays nested deeper than any real file.
    let mut value = Value::u8(1);
    for _ in 0..12 {
        value = Value::array(value.ty, vec![value]);
    }
    let writer = GgufWriter::new().kv("deep", value);
    assert!(
        matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("deeper"))
    );
    // Alignment that is not a power of two.
    for alignment in [Value::u32(0), Value::u32(3), Value::string("32")] {
        let writer = all_types_writer().kv("general.alignment", alignment);
        assert!(
            matches!(open_bytes(&writer.build()), Err(Error::GgufMalformed { reason }) if reason.contains("alignment"))
        );
    }
}

#[test]
fn empty_and_tiny_files_are_truncated() {
    for bytes in [&b""[..], b"G", b"GGUF", b"GGUF\x03\x00\x00\x00"] {
        assert!(matches!(open_bytes(bytes), Err(Error::GgufTruncated { .. })), "{bytes:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Corrupting or cutting a valid file anywhere gives errors, never a panic or a huge
    /// allocation; whatever still opens loads its tensors or reports why not.
    #[test]
    fn corrupted_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = all_types_writer().build();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if do_cut {
            let len = cut.index(bytes.len());
            bytes.truncate(len);
        }
        if let Ok(file) = open_bytes(&bytes) {
            for name in file.tensor_names() {
                let _ = file.tensor(&name);
            }
            let _ = file.get_string_array("t.strings");
        }
    }
}

// ----- the real SmolLM2-135M-Instruct Q4_1 file ---------------------------------------------

#[test]
fn smollm2_metadata_and_tensor_infos() {
    let file = GgufFile::open(smollm2_path()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.architecture().unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(file.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(file.get_u32("llama.context_length").unwrap(), 8192);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_abs_diff_eq!(
        file.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5,
        epsilon = 1e-12
    );
    assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(file.get_string_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(file.get_string_array("tokenizer.ggml.merges").unwrap().len(), 48900);
    assert_eq!(file.get_i32_array("tokenizer.ggml.token_type").unwrap().len(), 49152);
    assert_eq!(file.metadata().len(), 33);
    // gguf-py's GGUFReader puts the data section at this offset.
    assert_eq!(file.data_start(), 1_785_664);

    assert_eq!(file.tensor_infos().len(), 272);
    let embed = file.tensor_info("token_embd.weight").unwrap();
    assert_eq!(embed.dims(), &[576, 49152]);
    assert_eq!(embed.shape(), vec![49152, 576]);
    assert_eq!(embed.type_name(), "Q8_0");
    assert_eq!(embed.offset(), 0);
    assert_eq!(file.tensor_info("blk.0.ffn_down.weight").unwrap().type_name(), "Q4_1");
    assert_eq!(file.tensor_info("blk.0.ffn_down.weight").unwrap().shape(), vec![576, 1536]);
    assert_eq!(file.tensor_info("blk.0.attn_norm.weight").unwrap().type_name(), "F32");
    let mut counts = std::collections::BTreeMap::new();
    for info in file.tensor_infos() {
        *counts.entry(info.type_name()).or_insert(0) += 1;
    }
    assert_eq!(counts, [("F32", 61), ("Q4_1", 210), ("Q8_0", 1)].into_iter().collect());
}

/// Reference values of one SmolLM2 tensor, from gguf-py's `gguf.quants.dequantize`.
struct Reference {
    name: &'static str,
    shape: &'static [i64],
    /// `(flat index in torch order, value)`; the values print as the shortest decimal that
    /// round-trips to the f32.
    points: [(usize, f32); 9],
    /// Sum of the whole tensor in f64.
    sum: f64,
}

/// Both implementations compute `d·q (+ m)` in f32, so the values agree to the bit (checked
/// when these were written); the stated tolerance of 1e-6 is the contract, not the observed
/// error. The sums differ by summation order only (pairwise in numpy, sequential here) and
/// are compared to 1e-6 absolute: a checksum over every element.
const SMOLLM2_REFERENCE: [Reference; 4] = [
    Reference {
        name: "token_embd.weight",
        shape: &[49152, 576],
        points: [
            (0, -0.106544495),
            (1, 0.032978058),
            (15, 0.02029419),
            (16, -0.007610321),
            (31, -0.20040512),
            (32, -0.093486786),
            (12345, 0.03100586),
            (14_155_776, -0.03168106),
            (28_311_551, -0.04170227),
        ],
        sum: -15_353.044_494_152_07,
    },
    Reference {
        name: "blk.0.attn_norm.weight",
        shape: &[576],
        points: [
            (0, 0.013977051),
            (1, 0.023803711),
            (15, -0.035888672),
            (16, -0.015625),
            (31, -0.020141602),
            (32, 0.030395508),
            (249, 0.05810547),
            (288, 0.020019531),
            (575, -0.038330078),
        ],
        sum: 0.612_943_649_291_992_2,
    },
    Reference {
        name: "blk.0.ffn_down.weight",
        shape: &[576, 1536],
        points: [
            (0, -0.33081055),
            (1, 0.34606934),
            (15, 0.4814453),
            (16, -0.6015625),
            (31, -0.060058594),
            (32, 0.041625977),
            (12345, -0.022888184),
            (442_368, 0.054229736),
            (884_735, -0.18136597),
        ],
        sum: 150.635_772_705_078_12,
    },
    Reference {
        name: "blk.29.attn_q.weight",
        shape: &[576, 576],
        points: [
            (0, 0.2619629),
            (1, -0.06567383),
            (15, 0.05718994),
            (16, -0.1885376),
            (31, -0.1885376),
            (32, 0.09680176),
            (12345, -0.16052246),
            (165_888, -0.064453125),
            (331_775, 0.018127441),
        ],
        sum: 191.086_124_420_166_02,
    },
];

#[test]
fn smollm2_tensors_match_gguf_py() {
    let file = GgufFile::open(smollm2_path()).unwrap();
    for reference in &SMOLLM2_REFERENCE {
        let name = reference.name;
        let tensor = file.tensor(name).unwrap();
        assert_eq!(tensor.size(), reference.shape, "{name}");
        let flat = file.tensor_f32(name).unwrap();
        for &(index, value) in &reference.points {
            assert_abs_diff_eq!(flat[index], value, epsilon = 1e-6);
        }
        let total: f64 = flat.iter().map(|&v| f64::from(v)).sum();
        assert_abs_diff_eq!(total, reference.sum, epsilon = 1e-6);
    }
}

#[test]
fn smollm2_every_tensor_loads() {
    let file = GgufFile::open(smollm2_path()).unwrap();
    let start = Instant::now();
    let mut elements = 0i64;
    for info in file.tensor_infos() {
        let tensor = file.tensor(info.name()).unwrap();
        assert_eq!(tensor.size(), info.shape(), "{}", info.name());
        elements += tensor.numel() as i64;
    }
    eprintln!(
        "loaded {} tensors ({elements} values) in {:?}",
        file.tensor_infos().len(),
        start.elapsed()
    );
    assert_eq!(elements, 134_515_008);
}
