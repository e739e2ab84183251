//! The ggml tensor type table: which type ids exist and how many bytes a block of each takes.
//!
//! Sizes follow ggml's `ggml-common.h` (the C structs llama.cpp loads with), not gguf-py's
//! table, where the two disagree (gguf-py lists Q8_1 as 40 bytes; ggml's struct is 36).
//! Ids that ggml removed (4, 5, 31-33, 36-38) and ids past 42 are unknown on purpose: forks
//! such as ik_llama.cpp reuse them for other layouts, so guessing a size would corrupt data.

use std::fmt;

/// A ggml tensor type that this build knows the block layout of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType {
    id: u32,
}

/// Block layout of one type: elements per block and bytes per block.
struct Layout {
    name: &'static str,
    block_size: u64,
    type_size: u64,
}

const fn layout(name: &'static str, block_size: u64, type_size: u64) -> Option<Layout> {
    Some(Layout {
        name,
        block_size,
        type_size,
    })
}

/// Indexed by type id. `None` marks an id that ggml does not define (any more).
const TABLE: [Option<Layout>; 43] = [
    layout("F32", 1, 4),        // 0
    layout("F16", 1, 2),        // 1
    layout("Q4_0", 32, 18),     // 2
    layout("Q4_1", 32, 20),     // 3
    None,                       // 4: Q4_2, removed
    None,                       // 5: Q4_3, removed
    layout("Q5_0", 32, 22),     // 6
    layout("Q5_1", 32, 24),     // 7
    layout("Q8_0", 32, 34),     // 8
    layout("Q8_1", 32, 36),     // 9
    layout("Q2_K", 256, 84),    // 10
    layout("Q3_K", 256, 110),   // 11
    layout("Q4_K", 256, 144),   // 12
    layout("Q5_K", 256, 176),   // 13
    layout("Q6_K", 256, 210),   // 14
    layout("Q8_K", 256, 292),   // 15
    layout("IQ2_XXS", 256, 66), // 16
    layout("IQ2_XS", 256, 74),  // 17
    layout("IQ3_XXS", 256, 98), // 18
    layout("IQ1_S", 256, 50),   // 19
    layout("IQ4_NL", 32, 18),   // 20
    layout("IQ3_S", 256, 110),  // 21
    layout("IQ2_S", 256, 82),   // 22
    layout("IQ4_XS", 256, 136), // 23
    layout("I8", 1, 1),         // 24
    layout("I16", 1, 2),        // 25
    layout("I32", 1, 4),        // 26
    layout("I64", 1, 8),        // 27
    layout("F64", 1, 8),        // 28
    layout("IQ1_M", 256, 56),   // 29
    layout("BF16", 1, 2),       // 30
    None,                       // 31: Q4_0_4_4, removed
    None,                       // 32: Q4_0_4_8, removed
    None,                       // 33: Q4_0_8_8, removed
    layout("TQ1_0", 256, 54),   // 34
    layout("TQ2_0", 256, 66),   // 35
    None,                       // 36: IQ4_NL_4_4, removed
    None,                       // 37: IQ4_NL_4_8, removed
    None,                       // 38: IQ4_NL_8_8, removed
    layout("MXFP4", 32, 17),    // 39
    layout("NVFP4", 64, 36),    // 40
    layout("Q1_0", 128, 18),    // 41
    layout("Q2_0", 64, 18),     // 42
];

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

// Only the types the crate itself names (tests, the synthetic benchmark model); any other
// comes from `from_id` or `from_name`, so this list need not grow with the table.
impl GgmlType {
    /// 32-bit float, one element per block.
    pub const F32: GgmlType = GgmlType { id: 0 };
    /// 16-bit IEEE float.
    pub const F16: GgmlType = GgmlType { id: 1 };
    /// 8-bit, 32 elements per block.
    pub const Q8_0: GgmlType = GgmlType { id: 8 };
    /// 3-bit k-quant, 256 elements per block.
    pub const Q3_K: GgmlType = GgmlType { id: 11 };
    /// 4-bit k-quant, 256 elements per block.
    pub const Q4_K: GgmlType = GgmlType { id: 12 };
    /// 2-bit i-quant (2.06 bits per weight), 256 elements per block.
    pub const IQ2_XXS: GgmlType = GgmlType { id: 16 };
    /// bfloat16.
    pub const BF16: GgmlType = GgmlType { id: 30 };

    /// The type with this id, or `None` when ggml defines no such type today.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        match TABLE.get(id as usize) {
            Some(Some(_)) => Some(GgmlType { id }),
            _ => None,
        }
    }

    /// The type with this name as ggml spells it (`Q4_K`, `IQ2_XXS`, `BF16`), case-insensitive.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE.iter().enumerate().find_map(|(id, l)| match l {
            Some(l) if l.name.eq_ignore_ascii_case(name) => Some(GgmlType { id: id as u32 }),
            _ => None,
        })
    }

    /// Every type this build knows, by id.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        (0..TABLE.len() as u32).filter_map(GgmlType::from_id)
    }

    fn layout(self) -> &'static Layout {
        TABLE[self.id as usize]
            .as_ref()
            .expect("GgmlType is only built from ids present in TABLE")
    }

    /// The id GGUF stores in a tensor info.
    pub fn id(self) -> u32 {
        self.id
    }

    /// The name as ggml spells it (`Q4_K`), as reports and [`GgmlType::from_name`] use it.
    pub fn name(self) -> &'static str {
        self.layout().name
    }

    /// Elements per block.
    pub fn block_size(self) -> u64 {
        self.layout().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.layout().type_size
    }

    /// Whether the type is a block-quantized one (as opposed to a plain float or int type).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_and_future_ids_are_unknown() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, 97, 133, 202, u32::MAX] {
            assert!(GgmlType::from_id(id).is_none(), "id {id}");
        }
    }

    #[test]
    fn sizes_match_ggml_notes() {
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
        }
    }

    #[test]
    fn names_round_trip() {
        for t in GgmlType::all() {
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        assert_eq!(GgmlType::from_name("iq2_xxs"), Some(GgmlType::IQ2_XXS));
        assert_eq!(GgmlType::from_name("Q4_2"), None);
    }
}
