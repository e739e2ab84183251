use super::*;

#[test]
fn removed_and_future_ids_are_unknown_to_mainline() {
    for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, 97, 133, 202, u32::MAX] {
        assert!(GgmlType::from_id(id).is_none(), "id {id}");
    }
}

#[test]
fn mainline_sizes_match_ggml_notes() {
    // (id, block, bytes) straight from the table in shared/GGUF-NOTES.md.
    let expected = [
        (0, 1, 4),
        (1, 1, 2),
        (2, 32, 18),
        (3, 32, 20),
        (6, 32, 22),
        (7, 32, 24),
        (8, 32, 34),
        (9, 32, 36),
        (10, 256, 84),
        (11, 256, 110),
        (12, 256, 144),
        (13, 256, 176),
        (14, 256, 210),
        (15, 256, 292),
        (16, 256, 66),
        (17, 256, 74),
        (18, 256, 98),
        (19, 256, 50),
        (20, 32, 18),
        (21, 256, 110),
        (22, 256, 82),
        (23, 256, 136),
        (24, 1, 1),
        (25, 1, 2),
        (26, 1, 4),
        (27, 1, 8),
        (28, 1, 8),
        (29, 256, 56),
        (30, 1, 2),
        (34, 256, 54),
        (35, 256, 66),
        (39, 32, 17),
        (40, 64, 36),
        (41, 128, 18),
        (42, 64, 18),
    ];
    assert_eq!(GgmlType::all().count(), expected.len());
    for (id, block, bytes) in expected {
        let t = GgmlType::from_id(id).unwrap();
        assert_eq!((t.block_size(), t.type_size()), (block, bytes), "{t}");
        assert_eq!(t.row_meta_bytes(), 0, "{t}");
    }
}

/// ik_llama.cpp's table as its own C prints it: `ik-splice-types` (tests/oracle/ik_types.c
/// linked to ik's ggml, ik-llama-cpp-python 0.1.5): id, name, ggml_blck_size,
/// ggml_type_size, ggml_row_size(t, blck) - ggml_type_size. tests/oracles/ik_llama.rs (our_ik_type_table_is_ik_llamas_own) re-runs the
/// oracle when it is built; this copy pins the numbers on a plain `cargo test`.
pub(crate) const IK_C_TABLE: &[(u32, &str, u64, u64, u64)] = &[
    (0, "F32", 1, 4, 0),
    (1, "F16", 1, 2, 0),
    (2, "Q4_0", 32, 18, 0),
    (3, "Q4_1", 32, 20, 0),
    (6, "Q5_0", 32, 22, 0),
    (7, "Q5_1", 32, 24, 0),
    (8, "Q8_0", 32, 34, 0),
    (9, "Q8_1", 32, 36, 0),
    (10, "Q2_K", 256, 84, 0),
    (11, "Q3_K", 256, 110, 0),
    (12, "Q4_K", 256, 144, 0),
    (13, "Q5_K", 256, 176, 0),
    (14, "Q6_K", 256, 210, 0),
    (15, "Q8_K", 256, 296, 0),
    (16, "IQ2_XXS", 256, 66, 0),
    (17, "IQ2_XS", 256, 74, 0),
    (18, "IQ3_XXS", 256, 98, 0),
    (19, "IQ1_S", 256, 50, 0),
    (20, "IQ4_NL", 32, 18, 0),
    (21, "IQ3_S", 256, 110, 0),
    (22, "IQ2_S", 256, 82, 0),
    (23, "IQ4_XS", 256, 136, 0),
    (24, "I8", 1, 1, 0),
    (25, "I16", 1, 2, 0),
    (26, "I32", 1, 4, 0),
    (27, "I64", 1, 8, 0),
    (28, "F64", 1, 8, 0),
    (29, "IQ1_M", 256, 56, 0),
    (30, "BF16", 1, 2, 0),
    (31, "Q4_0_4X4", 32, 18, 0),
    (32, "Q4_0_4X8", 32, 18, 0),
    (33, "Q4_0_8X8", 32, 18, 0),
    (36, "I2_S", 1, 1, 0),
    (39, "MXFP4", 32, 17, 0),
    (41, "Q1_0_G128", 128, 18, 0),
    (97, "Q8_0_X4", 32, 34, 0),
    (98, "Q8_1_X4", 32, 36, 0),
    (99, "Q8_2_X4", 32, 36, 0),
    (133, "Q6_0", 32, 26, 0),
    (134, "IQ1_BN", 64, 13, 2),
    (135, "IQ2_BN", 64, 16, 4),
    (136, "Q8_K64", 64, 68, 0),
    (137, "IQ2_K", 256, 76, 0),
    (138, "IQ3_K", 256, 110, 0),
    (139, "IQ4_K", 256, 144, 0),
    (140, "IQ5_K", 256, 176, 0),
    (141, "IQ6_K", 256, 212, 0),
    (144, "IQ4_KS", 256, 136, 4),
    (145, "IQ2_KS", 256, 70, 2),
    (146, "IQ4_KSS", 256, 128, 4),
    (147, "Q8_K16", 64, 64, 20),
    (148, "Q8_K32", 256, 296, 0),
    (149, "Q8_KR8", 256, 296, 0),
    (150, "Q8_K128", 128, 140, 0),
    (151, "Q8_KV", 32, 32, 8),
    (152, "IQ5_KS", 256, 168, 4),
    (153, "IQ2_KT", 256, 68, 4),
    (154, "IQ3_KT", 256, 100, 4),
    (155, "IQ4_KT", 256, 128, 4),
    (156, "IQ3_KS", 256, 102, 2),
    (157, "IQ2_KL", 256, 86, 2),
    (158, "IQ1_KT", 256, 56, 4),
    (202, "Q4_0_R8", 32, 18, 0),
    (206, "Q5_0_R4", 32, 22, 0),
    (208, "Q8_0_R8", 32, 34, 0),
    (210, "Q2_K_R4", 256, 84, 0),
    (211, "Q3_K_R4", 256, 110, 0),
    (212, "Q4_K_R4", 256, 144, 0),
    (213, "Q5_K_R4", 256, 176, 0),
    (214, "Q6_K_R4", 256, 210, 0),
    (216, "IQ2_XXS_R4", 256, 66, 0),
    (217, "IQ2_XS_R4", 256, 74, 0),
    (218, "IQ3_XXS_R4", 256, 98, 0),
    (219, "IQ1_S_R4", 32, 6, 2),
    (220, "IQ4_NL_R4", 32, 18, 0),
    (221, "IQ3_S_R4", 256, 110, 0),
    (222, "IQ2_S_R4", 256, 82, 0),
    (223, "IQ4_XS_R8", 256, 136, 0),
    (229, "IQ1_M_R4", 32, 7, 2),
    (230, "BF16_R16", 1, 2, 0),
    (233, "Q6_0_R4", 32, 26, 0),
    (335, "IQ2_BN_R4", 64, 16, 4),
    (337, "IQ2_K_R4", 256, 76, 0),
    (338, "IQ3_K_R4", 256, 110, 0),
    (339, "IQ4_K_R4", 256, 144, 0),
    (340, "IQ5_K_R4", 256, 176, 0),
    (344, "IQ4_KS_R4", 256, 136, 4),
    (352, "IQ5_KS_R4", 256, 168, 4),
    (397, "Q8_K_R16", 256, 258, 0),
    (398, "Q8_KV_R8", 32, 32, 4),
    (399, "Q8_K_R8", 256, 258, 0),
];

#[test]
fn matches_ik_c_output() {
    let ours: Vec<_> = GgmlType::all_of(Flavour::Ik)
        .map(|t| {
            (
                t.id(),
                // ik calls mainline's Q1_0 Q1_0_G128; the shared entry carries mainline's name.
                if t.id() == 41 { "Q1_0_G128" } else { t.name() },
                t.block_size(),
                t.type_size(),
                t.row_meta_bytes(),
            )
        })
        .collect();
    assert_eq!(ours, IK_C_TABLE);
}

#[test]
fn ids_are_classified_from_the_real_tables() {
    use IdClass::*;
    for id in [0, 1, 8, 12, 16, 23, 30, 39, 41] {
        assert_eq!(classify_id(id), Shared, "id {id}");
    }
    // Q8_K: 292 bytes in mainline, 296 in ik: the only id both define differently.
    assert_eq!(classify_id(15), Contested);
    for id in [34, 35, 40, 42] {
        assert_eq!(classify_id(id), MainlineOnly, "id {id}");
    }
    // 31-33 (mainline removed them; ik kept them) and 36 (mainline removed it; ik reused it).
    for id in [31, 32, 33, 36, 97, 98, 99, 133, 144, 145, 158, 202, 399] {
        assert_eq!(classify_id(id), IkOnly, "id {id}");
    }
    for id in [4, 5, 37, 38, 43, 96, 100, 142, 143, 159, 400, u32::MAX] {
        assert_eq!(classify_id(id), Unknown, "id {id}");
    }
}

#[test]
fn shared_types_are_equal_whichever_table_read_them() {
    let m = GgmlType::lookup(12, Flavour::Mainline).unwrap();
    let k = GgmlType::lookup(12, Flavour::Ik).unwrap();
    assert_eq!(m, k);
    assert_eq!(m.origin(), Origin::Both);
    let q8k_m = GgmlType::lookup(15, Flavour::Mainline).unwrap();
    let q8k_k = GgmlType::lookup(15, Flavour::Ik).unwrap();
    assert_ne!(q8k_m, q8k_k);
    assert_eq!(
        (q8k_m.origin(), q8k_k.origin()),
        (Origin::Mainline, Origin::Ik)
    );
    assert_eq!(GgmlType::lookup(144, Flavour::Ik), Some(GgmlType::IQ4_KS));
    assert_eq!(GgmlType::lookup(144, Flavour::Mainline), None);
    assert_eq!(GgmlType::lookup(34, Flavour::Ik), None);
}

#[test]
fn meanings_name_both_sides() {
    assert_eq!(
        meaning(34, Flavour::Mainline),
        "TQ1_0 (54 bytes per 256 elements)"
    );
    assert_eq!(meaning(34, Flavour::Ik), "no type");
    assert_eq!(
        meaning(36, Flavour::Mainline),
        "no type (IQ4_NL_4_4 was removed)"
    );
    assert_eq!(
        meaning(144, Flavour::Ik),
        "IQ4_KS (136 bytes per 256 elements, plus 4 bytes a row)"
    );
}

#[test]
fn names_round_trip() {
    for f in [Flavour::Mainline, Flavour::Ik] {
        for t in GgmlType::all_of(f) {
            let back = GgmlType::from_name(t.name()).unwrap();
            // Q8_K is named alike in both tables; the mainline one is found first.
            if t.origin() != Origin::Ik || t.name() != "Q8_K" {
                assert_eq!(back, t);
            }
        }
    }
    assert_eq!(GgmlType::from_name("iq2_xxs"), Some(GgmlType::IQ2_XXS));
    assert_eq!(GgmlType::from_name("iq4_ks"), Some(GgmlType::IQ4_KS));
    assert_eq!(GgmlType::from_name("Q4_2"), None);
    assert_eq!("ik".parse(), Ok(Flavour::Ik));
    assert!("ik-llama".parse::<Flavour>().is_err());
}
