//! Mainline ggml's type table (llama.cpp 11434's `ggml/include/ggml.h` and `ggml-common.h`).
//!
//! Sizes follow ggml's C structs, not gguf-py's table, where the two disagree (gguf-py lists
//! Q8_1 as 40 bytes; ggml's struct is 36). No mainline type has per-row metadata.

use super::Layout;

const fn l(name: &'static str, block_size: u64, type_size: u64) -> Option<Layout> {
    Some(Layout::blocks(name, block_size, type_size))
}

/// Indexed by type id. `None` marks an id that mainline ggml does not define (any more).
pub(super) const TABLE: [Option<Layout>; 43] = [
    l("F32", 1, 4),        // 0
    l("F16", 1, 2),        // 1
    l("Q4_0", 32, 18),     // 2
    l("Q4_1", 32, 20),     // 3
    None,                  // 4: Q4_2, removed
    None,                  // 5: Q4_3, removed
    l("Q5_0", 32, 22),     // 6
    l("Q5_1", 32, 24),     // 7
    l("Q8_0", 32, 34),     // 8
    l("Q8_1", 32, 36),     // 9
    l("Q2_K", 256, 84),    // 10
    l("Q3_K", 256, 110),   // 11
    l("Q4_K", 256, 144),   // 12
    l("Q5_K", 256, 176),   // 13
    l("Q6_K", 256, 210),   // 14
    l("Q8_K", 256, 292),   // 15
    l("IQ2_XXS", 256, 66), // 16
    l("IQ2_XS", 256, 74),  // 17
    l("IQ3_XXS", 256, 98), // 18
    l("IQ1_S", 256, 50),   // 19
    l("IQ4_NL", 32, 18),   // 20
    l("IQ3_S", 256, 110),  // 21
    l("IQ2_S", 256, 82),   // 22
    l("IQ4_XS", 256, 136), // 23
    l("I8", 1, 1),         // 24
    l("I16", 1, 2),        // 25
    l("I32", 1, 4),        // 26
    l("I64", 1, 8),        // 27
    l("F64", 1, 8),        // 28
    l("IQ1_M", 256, 56),   // 29
    l("BF16", 1, 2),       // 30
    None,                  // 31: Q4_0_4_4, removed
    None,                  // 32: Q4_0_4_8, removed
    None,                  // 33: Q4_0_8_8, removed
    l("TQ1_0", 256, 54),   // 34
    l("TQ2_0", 256, 66),   // 35
    None,                  // 36: IQ4_NL_4_4, removed
    None,                  // 37: IQ4_NL_4_8, removed
    None,                  // 38: IQ4_NL_8_8, removed
    l("MXFP4", 32, 17),    // 39
    l("NVFP4", 64, 36),    // 40
    l("Q1_0", 128, 18),    // 41
    l("Q2_0", 64, 18),     // 42
];

/// What mainline once called the ids it removed (for messages only).
pub(super) fn removed_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 => "Q4_2",
        5 => "Q4_3",
        31 => "Q4_0_4_4",
        32 => "Q4_0_4_8",
        33 => "Q4_0_8_8",
        36 => "IQ4_NL_4_4",
        37 => "IQ4_NL_4_8",
        38 => "IQ4_NL_8_8",
        _ => return None,
    })
}

pub(super) fn get(id: u32) -> Option<&'static Layout> {
    TABLE.get(id as usize).and_then(Option::as_ref)
}

// Pin a few block layouts against the C structs they mirror, so an edit to the table that
// breaks one fails the build rather than a user's file.
const _: () = {
    const fn bytes(id: usize) -> u64 {
        match &TABLE[id] {
            Some(l) => l.type_size,
            None => 0,
        }
    }
    // block_q8_1: ggml_half2 ds + int8 qs[32] = 4 + 32.
    assert!(bytes(9) == 36);
    // block_q4_K: 2 halves + 12 scale bytes + 128 quant bytes.
    assert!(bytes(12) == 2 * 2 + 12 + 256 / 2);
    // block_iq2_xxs: half d + uint16 qs[256/8].
    assert!(bytes(16) == 2 + 2 * (256 / 8));
    // block_iq4_xs: half d + u16 scales_h + u8 scales_l[256/64] + u8 qs[256/2].
    assert!(bytes(23) == 2 + 2 + 256 / 64 + 256 / 2);
    // block_mxfp4: u8 e + u8 qs[32/2].
    assert!(bytes(39) == 1 + 32 / 2);
};
