//! ik_llama.cpp's type table: ids from its `ggml/include/ggml.h`, sizes from its `ggml.c`
//! `type_traits` (block size, `sizeof(block_*)` from `ggml-common.h`, `row_meta_size`).
//!
//! Every number here was checked against ik's own C: `ik-splice-types` (tests/oracle/ik_types.c,
//! linked to ik's ggml from the PyPI sdist `ik-llama-cpp-python` 0.1.5) prints
//! `ggml_blck_size`, `ggml_type_size`, `ggml_row_size` and `ggml_nbytes` for every type, and
//! `tests/oracles/ik_llama.rs` (`our_ik_type_table_is_ik_llamas_own`) compares them with this table; the unit test `matches_ik_c_output` below
//! pins the same numbers without the oracle. ik's own gguf-py is *not* a source: it sizes
//! IQ4_KS without its 4-byte row scale.

use super::Layout;

const fn l(name: &'static str, block_size: u64, type_size: u64) -> Layout {
    Layout::blocks(name, block_size, type_size)
}

/// (id, layout), by id. Ids 142 and 143 (IQ2_TN, IQ1_TN) are deprecated and gone from ik's
/// table: unknown, like every id not listed.
pub(super) const TABLE: &[(u32, Layout)] = &[
    (0, l("F32", 1, 4)),
    (1, l("F16", 1, 2)),
    (2, l("Q4_0", 32, 18)),
    (3, l("Q4_1", 32, 20)),
    (6, l("Q5_0", 32, 22)),
    (7, l("Q5_1", 32, 24)),
    (8, l("Q8_0", 32, 34)),
    (9, l("Q8_1", 32, 36)),
    (10, l("Q2_K", 256, 84)),
    (11, l("Q3_K", 256, 110)),
    (12, l("Q4_K", 256, 144)),
    (13, l("Q5_K", 256, 176)),
    (14, l("Q6_K", 256, 210)),
    // ik's block_q8_K has a float `sum` that mainline's lacks: 296 bytes, not 292.
    (15, l("Q8_K", 256, 296)),
    (16, l("IQ2_XXS", 256, 66)),
    (17, l("IQ2_XS", 256, 74)),
    (18, l("IQ3_XXS", 256, 98)),
    (19, l("IQ1_S", 256, 50)),
    (20, l("IQ4_NL", 32, 18)),
    (21, l("IQ3_S", 256, 110)),
    (22, l("IQ2_S", 256, 82)),
    (23, l("IQ4_XS", 256, 136)),
    (24, l("I8", 1, 1)),
    (25, l("I16", 1, 2)),
    (26, l("I32", 1, 4)),
    (27, l("I64", 1, 8)),
    (28, l("F64", 1, 8)),
    (29, l("IQ1_M", 256, 56)),
    (30, l("BF16", 1, 2)),
    (31, l("Q4_0_4X4", 32, 18)),
    (32, l("Q4_0_4X8", 32, 18)),
    (33, l("Q4_0_8X8", 32, 18)),
    // BitNet's I2_S: 2-bit values, 4 to a byte, then one 32-byte scale block for the whole
    // tensor (ik's ggml_nbytes: "hack for I2_S", ne / 4 + 32). Never cut into rows.
    (36, Layout::i2s("I2_S", 32)),
    (39, l("MXFP4", 32, 17)),
    (41, l("Q1_0_G128", 128, 18)),
    (97, l("Q8_0_X4", 32, 34)),
    (98, l("Q8_1_X4", 32, 36)),
    (99, l("Q8_2_X4", 32, 36)),
    (133, l("Q6_0", 32, 26)),
    (134, l("IQ1_BN", 64, 13).meta(2)),
    (135, l("IQ2_BN", 64, 16).meta(4)),
    (136, l("Q8_K64", 64, 68)),
    (137, l("IQ2_K", 256, 76)),
    (138, l("IQ3_K", 256, 110)),
    (139, l("IQ4_K", 256, 144)),
    (140, l("IQ5_K", 256, 176)),
    (141, l("IQ6_K", 256, 212)),
    (144, l("IQ4_KS", 256, 136).meta(4)),
    (145, l("IQ2_KS", 256, 70).meta(2)),
    (146, l("IQ4_KSS", 256, 128).meta(4)),
    (147, l("Q8_K16", 64, 64).meta(20)),
    (148, l("Q8_K32", 256, 296)),
    (149, l("Q8_KR8", 256, 296)),
    (150, l("Q8_K128", 128, 140)),
    (151, l("Q8_KV", 32, 32).meta(8)),
    (152, l("IQ5_KS", 256, 168).meta(4)),
    (153, l("IQ2_KT", 256, 68).meta(4)),
    (154, l("IQ3_KT", 256, 100).meta(4)),
    (155, l("IQ4_KT", 256, 128).meta(4)),
    (156, l("IQ3_KS", 256, 102).meta(2)),
    (157, l("IQ2_KL", 256, 86).meta(2)),
    (158, l("IQ1_KT", 256, 56).meta(4)),
    // Row-interleaved types (ik's ggml_packed_rows): rows are stored in groups of 4, 8 or
    // 16, so a slice must hold whole groups. Sizes are still per row.
    (202, l("Q4_0_R8", 32, 18).rows(8)),
    (206, l("Q5_0_R4", 32, 22).rows(4)),
    (208, l("Q8_0_R8", 32, 34).rows(8)),
    (210, l("Q2_K_R4", 256, 84).rows(4)),
    (211, l("Q3_K_R4", 256, 110).rows(4)),
    (212, l("Q4_K_R4", 256, 144).rows(4)),
    (213, l("Q5_K_R4", 256, 176).rows(4)),
    (214, l("Q6_K_R4", 256, 210).rows(4)),
    (216, l("IQ2_XXS_R4", 256, 66).rows(4)),
    (217, l("IQ2_XS_R4", 256, 74).rows(4)),
    (218, l("IQ3_XXS_R4", 256, 98).rows(4)),
    (219, l("IQ1_S_R4", 32, 6).meta(2).rows(4)),
    (220, l("IQ4_NL_R4", 32, 18).rows(4)),
    (221, l("IQ3_S_R4", 256, 110).rows(4)),
    (222, l("IQ2_S_R4", 256, 82).rows(4)),
    (223, l("IQ4_XS_R8", 256, 136).rows(8)),
    (229, l("IQ1_M_R4", 32, 7).meta(2).rows(4)),
    (230, l("BF16_R16", 1, 2).rows(16)),
    (233, l("Q6_0_R4", 32, 26).rows(4)),
    (335, l("IQ2_BN_R4", 64, 16).meta(4).rows(4)),
    (337, l("IQ2_K_R4", 256, 76).rows(4)),
    (338, l("IQ3_K_R4", 256, 110).rows(4)),
    (339, l("IQ4_K_R4", 256, 144).rows(4)),
    (340, l("IQ5_K_R4", 256, 176).rows(4)),
    (344, l("IQ4_KS_R4", 256, 136).meta(4).rows(4)),
    (352, l("IQ5_KS_R4", 256, 168).meta(4).rows(4)),
    (397, l("Q8_K_R16", 256, 258).rows(16)),
    (398, l("Q8_KV_R8", 32, 32).meta(4).rows(8)),
    (399, l("Q8_K_R8", 256, 258).rows(8)),
];

/// What ik once called the ids it dropped (for messages only).
pub(super) fn removed_name(id: u32) -> Option<&'static str> {
    Some(match id {
        142 => "IQ2_TN",
        143 => "IQ1_TN",
        _ => return None,
    })
}

pub(super) fn get(id: u32) -> Option<&'static Layout> {
    TABLE
        .binary_search_by_key(&id, |(i, _)| *i)
        .ok()
        .map(|i| &TABLE[i].1)
}

// Pin block layouts against ik's ggml-common.h structs (ggml_half = 2 bytes, QK_K = 256).
const _: () = {
    const fn find(id: u32) -> &'static Layout {
        let mut i = 0;
        while i < TABLE.len() {
            if TABLE[i].0 == id {
                return &TABLE[i].1;
            }
            i += 1;
        }
        panic!("id not in TABLE")
    }
    const fn bytes(id: u32) -> u64 {
        find(id).type_size
    }
    // Sorted by id, no duplicates: `get` binary-searches.
    let mut i = 1;
    while i < TABLE.len() {
        assert!(TABLE[i - 1].0 < TABLE[i].0);
        i += 1;
    }
    const QK_K: u64 = 256;
    // block_iq4_ks: u8 scales[QK_K/32] + u8 qs[QK_K/2]; the row starts with a float scale.
    assert!(bytes(144) == QK_K / 32 + QK_K / 2 && find(144).row_meta == 4);
    // block_iq2_ks: u16 extra + u8 scales[QK_K/64] + u8 qs[QK_K/4]; a ggml_half row scale.
    assert!(bytes(145) == 2 + QK_K / 64 + QK_K / 4 && find(145).row_meta == 2);
    // block_iq4_kss: u32 qs[QK_K/8].
    assert!(bytes(146) == 4 * (QK_K / 8));
    // block_iq3_k: half d + u16 extra + u16 scales_h + u8 scales_l[QK_K/32] + qs[QK_K/4] + qh[QK_K/8].
    assert!(bytes(138) == 2 + 2 + 2 + QK_K / 32 + QK_K / 4 + QK_K / 8);
    // block_iq5_k: half d + u16 extra + scales_h[QK_K/64] + scales_l[QK_K/32] + qs[QK_K/2] + qh[QK_K/8].
    assert!(bytes(140) == 2 + 2 + QK_K / 64 + QK_K / 32 + QK_K / 2 + QK_K / 8);
    // block_iq6_k: half d + u16 extra + i8 scales[QK_K/16] + qs[QK_K/2] + qh[QK_K/4].
    assert!(bytes(141) == 2 + 2 + QK_K / 16 + QK_K / 2 + QK_K / 4);
    // block_iq2_kt: scales[QK_K/64] + ql[QK_K/4]; a float row scale.
    assert!(bytes(153) == QK_K / 64 + QK_K / 4 && find(153).row_meta == 4);
    // block_q6_0: half d + qh[32/4] + qs[32/2].
    assert!(bytes(133) == 2 + 32 / 4 + 32 / 2);
    // block_q8_K (ik): float d + float sum + i8 qs[QK_K] + i16 bsums[QK_K/16].
    assert!(bytes(15) == 4 + 4 + QK_K + 2 * (QK_K / 16));
    // block_q8_k_r8 / 8 rows: 8 halves + 8*QK_K quants.
    assert!(bytes(399) * 8 == 8 * 2 + 8 * QK_K);
};
