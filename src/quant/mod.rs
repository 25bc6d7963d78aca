//! Weight storage types: GGUF block layouts (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K)
//! and plain F32/F16/BF16. Rows of a weight matrix are stored as whole blocks, exactly
//! as in a GGUF file; GPU kernels read these bytes unchanged.

use crate::error::{Error, Result};

/// How one weight tensor's elements are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl DType {
    /// Every supported type, in GGUF id order.
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::BF16,
    ];

    /// Elements per block (1 for plain float types).
    pub const fn block_elems(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q5_0 | DType::Q8_0 => 32,
            DType::Q4_K | DType::Q5_K | DType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q8_0 => 34,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
        }
    }

    /// The type's id in GGUF's `ggml_type` enumeration.
    pub const fn gguf_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q8_0 => 8,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::BF16 => 30,
        }
    }

    /// The type with GGUF id `id`, if safetyj supports it.
    pub fn from_gguf_id(id: u32) -> Option<DType> {
        DType::ALL.into_iter().find(|t| t.gguf_id() == id)
    }

    /// The GGUF name (`Q4_K`, `F16`, …).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q5_0 => "Q5_0",
            DType::Q8_0 => "Q8_0",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
        }
    }

    /// Bytes of one row of `cols` elements; fails when `cols` is not a whole number
    /// of blocks.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        if !cols.is_multiple_of(self.block_elems()) {
            return Err(Error::Shape {
                op: "weight layout",
                message: format!(
                    "a row of {cols} elements is not a whole number of {}-element {} blocks",
                    self.block_elems(),
                    self.name()
                ),
            });
        }
        Ok(cols / self.block_elems() * self.block_bytes())
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// llama.cpp's `general.file_type` values (`llama_ftype`) and their names: the
/// quantization recipe a whole GGUF file was made with.
const FILE_TYPES: [(u32, &str); 31] = [
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
];

/// The name llama.cpp gives a `general.file_type` value, e.g. 15 → `Q4_K_M` (a file
/// of mostly Q4_K matrices with some Q6_K or fallback types); `None` for values it
/// does not define.
pub fn file_type_name(id: u32) -> Option<&'static str> {
    FILE_TYPES
        .iter()
        .find(|&&(known, _)| known == id)
        .map(|&(_, name)| name)
}

mod dequant;
mod quantize;
mod random;

pub use dequant::{dequantize, dequantize_to_vec};
pub use quantize::quantize;
pub use random::{random_weights, WeightRng};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types_are_named_as_llama_cpp_names_them() {
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
        assert_eq!(file_type_name(3), Some("Q4_1"));
        assert_eq!(file_type_name(32), Some("BF16"));
        // 4 and 5 were Q4_1_SOME_F16 / Q4_2 and are gone from llama.cpp.
        assert_eq!(file_type_name(4), None);
        assert_eq!(file_type_name(1000), None);
    }
}
