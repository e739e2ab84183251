//! `general.file_type`: llama.cpp's `llama_ftype`, the label of a file's quant mix
//! (`15 = Q4_K_M`). Only shown: a spliced child keeps its base's value (see docs/metadata.md).
//! From llama.cpp's `include/llama.h` (build 11434); ids 4-6 and 33-35 were removed.

const NAMES: &[(u64, &str)] = &[
    (0, "ALL_F32"),
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
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
    (39, "NVFP4"),
    (40, "Q1_0"),
    (41, "Q2_0"),
    (1024, "GUESSED"),
];

/// The name of a `general.file_type` value, if llama.cpp defines it.
pub fn name(file_type: u64) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(id, _)| *id == file_type)
        .map(|(_, n)| *n)
}

/// `15 = Q4_K_M`, or the bare number for an unknown value.
pub fn label(file_type: u64) -> String {
    match name(file_type) {
        Some(n) => format!("{file_type} = {n}"),
        None => format!("{file_type} (unknown to llama.cpp 11434)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_h() {
        assert_eq!(label(15), "15 = Q4_K_M");
        assert_eq!(name(12), Some("Q3_K_M"));
        assert_eq!(name(19), Some("IQ2_XXS"));
        assert_eq!(name(33), None, "removed Q4_0_4_4");
        assert!(label(999).starts_with("999 (unknown"));
    }
}
