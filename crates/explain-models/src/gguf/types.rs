//! The GGML tensor types: their names and block layouts (elements per block, bytes per block),
//! as llama.cpp's `ggml.h` / gguf-py's `GGML_QUANT_SIZES` define them.
//!
//! The layout of every known type is listed, not only the ones this crate dequantises, so that
//! the data range of any tensor can be checked against the file when it is opened.

/// One row of the type table: id, name, elements per block, bytes per block.
struct TypeRow {
    id: u32,
    name: &'static str,
    /// `(block_elements, block_bytes)`; `None` for ids that were removed from ggml.
    layout: Option<(u64, u64)>,
}

const fn row(id: u32, name: &'static str, elements: u64, bytes: u64) -> TypeRow {
    TypeRow { id, name, layout: Some((elements, bytes)) }
}

const fn removed(id: u32, name: &'static str) -> TypeRow {
    TypeRow { id, name, layout: None }
}

/// Every GGML type id ever assigned (ggml.h `enum ggml_type`).
const TYPES: &[TypeRow] = &[
    row(0, "F32", 1, 4),
    row(1, "F16", 1, 2),
    row(2, "Q4_0", 32, 18),
    row(3, "Q4_1", 32, 20),
    removed(4, "Q4_2 (removed from ggml)"),
    removed(5, "Q4_3 (removed from ggml)"),
    row(6, "Q5_0", 32, 22),
    row(7, "Q5_1", 32, 24),
    row(8, "Q8_0", 32, 34),
    row(9, "Q8_1", 32, 40),
    row(10, "Q2_K", 256, 84),
    row(11, "Q3_K", 256, 110),
    row(12, "Q4_K", 256, 144),
    row(13, "Q5_K", 256, 176),
    row(14, "Q6_K", 256, 210),
    row(15, "Q8_K", 256, 292),
    row(16, "IQ2_XXS", 256, 66),
    row(17, "IQ2_XS", 256, 74),
    row(18, "IQ3_XXS", 256, 98),
    row(19, "IQ1_S", 256, 50),
    row(20, "IQ4_NL", 32, 18),
    row(21, "IQ3_S", 256, 110),
    row(22, "IQ2_S", 256, 82),
    row(23, "IQ4_XS", 256, 136),
    row(24, "I8", 1, 1),
    row(25, "I16", 1, 2),
    row(26, "I32", 1, 4),
    row(27, "I64", 1, 8),
    row(28, "F64", 1, 8),
    row(29, "IQ1_M", 256, 56),
    row(30, "BF16", 1, 2),
    removed(31, "Q4_0_4_4 (removed from ggml)"),
    removed(32, "Q4_0_4_8 (removed from ggml)"),
    removed(33, "Q4_0_8_8 (removed from ggml)"),
    row(34, "TQ1_0", 256, 54),
    row(35, "TQ2_0", 256, 66),
    removed(36, "IQ4_NL_4_4 (removed from ggml)"),
    removed(37, "IQ4_NL_4_8 (removed from ggml)"),
    removed(38, "IQ4_NL_8_8 (removed from ggml)"),
    row(39, "MXFP4", 32, 17),
    row(40, "NVFP4", 64, 36),
    row(41, "Q1_0", 128, 18),
];

/// GGML type id of `F32`.
pub(crate) const GGML_F32: u32 = 0;
/// GGML type id of `F16`.
pub(crate) const GGML_F16: u32 = 1;
/// GGML type id of `Q4_0`.
pub(crate) const GGML_Q4_0: u32 = 2;
/// GGML type id of `Q4_1`.
pub(crate) const GGML_Q4_1: u32 = 3;
/// GGML type id of `Q5_0`.
pub(crate) const GGML_Q5_0: u32 = 6;
/// GGML type id of `Q5_1`.
pub(crate) const GGML_Q5_1: u32 = 7;
/// GGML type id of `Q8_0`.
pub(crate) const GGML_Q8_0: u32 = 8;
/// GGML type id of `Q2_K`.
pub(crate) const GGML_Q2_K: u32 = 10;
/// GGML type id of `Q3_K`.
pub(crate) const GGML_Q3_K: u32 = 11;
/// GGML type id of `Q4_K`.
pub(crate) const GGML_Q4_K: u32 = 12;
/// GGML type id of `Q5_K`.
pub(crate) const GGML_Q5_K: u32 = 13;
/// GGML type id of `Q6_K`.
pub(crate) const GGML_Q6_K: u32 = 14;
/// GGML type id of `IQ4_NL`.
pub(crate) const GGML_IQ4_NL: u32 = 20;
/// GGML type id of `BF16`.
pub(crate) const GGML_BF16: u32 = 30;

fn find(ggml_type: u32) -> Option<&'static TypeRow> {
    TYPES.iter().find(|row| row.id == ggml_type)
}

/// The name of a GGML tensor type id (`3` → `"Q4_1"`, `12` → `"Q4_K"`), or `"unknown"` for an
/// id ggml never assigned.
///
/// # Examples
/// ```
/// assert_eq!(explain_models::gguf::ggml_type_name(8), "Q8_0");
/// assert_eq!(explain_models::gguf::ggml_type_name(999), "unknown");
/// ```
pub fn ggml_type_name(ggml_type: u32) -> &'static str {
    find(ggml_type).map_or("unknown", |row| row.name)
}

/// `(elements per block, bytes per block)` of a GGML type, or `None` for unknown or removed ids.
pub(crate) fn block_layout(ggml_type: u32) -> Option<(u64, u64)> {
    find(ggml_type).and_then(|row| row.layout)
}

/// Whether [`super::GgufFile::tensor`] can dequantise tensors of this type: F32, F16, BF16,
/// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
///
/// # Examples
/// ```
/// assert!(explain_models::gguf::is_supported_type(3)); // Q4_1
/// assert!(explain_models::gguf::is_supported_type(12)); // Q4_K
/// assert!(!explain_models::gguf::is_supported_type(23)); // IQ4_XS
/// ```
pub fn is_supported_type(ggml_type: u32) -> bool {
    super::dequant::kernel(ggml_type).is_some()
}

/// Every supported type id, for tests of the table.
#[cfg(test)]
pub(crate) const SUPPORTED: [u32; 14] = [
    GGML_F32,
    GGML_F16,
    GGML_BF16,
    GGML_Q4_0,
    GGML_Q4_1,
    GGML_Q5_0,
    GGML_Q5_1,
    GGML_Q8_0,
    GGML_IQ4_NL,
    GGML_Q2_K,
    GGML_Q3_K,
    GGML_Q4_K,
    GGML_Q5_K,
    GGML_Q6_K,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sorted() {
        for pair in TYPES.windows(2) {
            assert!(pair[0].id < pair[1].id, "{} then {}", pair[0].name, pair[1].name);
        }
    }

    #[test]
    fn supported_types_have_layouts_equal_to_their_kernels() {
        for id in SUPPORTED {
            let kernel = super::super::dequant::kernel(id).unwrap();
            let layout = (kernel.block_elements as u64, kernel.block_bytes as u64);
            assert_eq!(block_layout(id), Some(layout), "{}", ggml_type_name(id));
        }
        let supported = TYPES.iter().filter(|row| is_supported_type(row.id)).count();
        assert_eq!(supported, SUPPORTED.len());
        assert_eq!(block_layout(GGML_Q4_1), Some((32, 20)));
        assert_eq!(block_layout(4), None);
        assert_eq!(ggml_type_name(12), "Q4_K");
    }
}
