//! The container against hand-assembled bytes: round trips (fixed and property-based) and a
//! seeded corruption suite in the spirit of ggml's tests/test-gguf.cpp.

use std::path::Path;

use gguf_splice::ggml_type::{Flavour, GgmlType};
use gguf_splice::gguf::write::{DataWriter, encode_header};
use gguf_splice::gguf::{GgufError, GgufFile};
use gguf_splice::testkit::{FieldMap, GgufBuilder};
use proptest::prelude::*;

/// Re-encode a parsed file with the crate's writer, copying each tensor's bytes.
fn rewrite(bytes: &[u8]) -> Vec<u8> {
    rewrite_as(bytes, None)
}

fn rewrite_as(bytes: &[u8], flavour: Option<Flavour>) -> Vec<u8> {
    let f = GgufFile::from_bytes_as(Path::new("in.gguf"), bytes, flavour).unwrap();
    let kvs: Vec<_> = f
        .kvs()
        .iter()
        .map(|kv| (kv.key.as_str(), f.value(kv)))
        .collect();
    let header = encode_header(&kvs, f.tensors(), f.alignment);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gguf");
    let out = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut &out, &header).unwrap();
    let mut w = DataWriter::new(&out, f.alignment);
    for t in f.tensors() {
        let start = f.tensor_file_offset(t) as usize;
        w.write_bytes(&bytes[start..start + t.n_bytes as usize])
            .unwrap();
        w.end_tensor().unwrap();
    }
    drop(out);
    std::fs::read(&path).unwrap()
}

#[test]
fn canonical_files_round_trip_byte_for_byte() {
    let b = crate::common::parent(7, GgmlType::IQ2_XXS)
        .kv_u32("general.alignment", 64)
        .kv_i32_array("tokenizer.ggml.token_type", &[1, 2, 3])
        .kv_f32("deepseek2.rope.freq_base", 10000.0)
        .build();
    assert_eq!(rewrite(&b), b);
}

// --- property-based round trip ---

fn arb_value() -> impl Strategy<Value = (u32, Vec<u8>)> {
    let scalar = (0u32..=12)
        .prop_filter("scalar", |t| *t != 8 && *t != 9)
        .prop_flat_map(|t| {
            let size = match t {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                _ => 8,
            };
            prop::collection::vec(any::<u8>(), size).prop_map(move |mut raw| {
                if t == 7 {
                    raw[0] &= 1;
                }
                (t, raw)
            })
        });
    let string = "[a-z<>|é ]{0,12}".prop_map(|s| {
        let mut raw = (s.len() as u64).to_le_bytes().to_vec();
        raw.extend_from_slice(s.as_bytes());
        (8u32, raw)
    });
    let array = prop::collection::vec("[a-z]{0,6}", 0..5).prop_map(|items| {
        let mut raw = 8u32.to_le_bytes().to_vec();
        raw.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            raw.extend_from_slice(&(s.len() as u64).to_le_bytes());
            raw.extend_from_slice(s.as_bytes());
        }
        (9u32, raw)
    });
    prop_oneof![scalar, string, array]
}

/// A valid file whose types come from one flavour's table (every type of it, ik's with their
/// row metadata, interleaved rows and I2_S's tail included), and that flavour.
fn arb_file() -> impl Strategy<Value = (GgufBuilder, Flavour)> {
    prop::sample::select(vec![Flavour::Mainline, Flavour::Ik]).prop_flat_map(arb_file_of)
}

fn arb_file_of(flavour: Flavour) -> impl Strategy<Value = (GgufBuilder, Flavour)> {
    let kvs = prop::collection::vec(arb_value(), 0..8);
    let types: Vec<GgmlType> = GgmlType::all_of(flavour).collect();
    let tensors = prop::collection::vec(
        (prop::sample::select(types), 1u64..3, 0usize..4, 1u64..4),
        0..6,
    );
    (kvs, tensors, prop::sample::select(vec![8u32, 32, 64, 256])).prop_map(
        move |(kvs, tensors, alignment)| {
            let mut b = GgufBuilder::new();
            if alignment != 32 {
                b = b.kv_u32("general.alignment", alignment);
            }
            for (i, (t, raw)) in kvs.into_iter().enumerate() {
                b = b.kv_raw(&format!("k.{i}"), t, raw);
            }
            for (i, (ty, blocks, n_outer, outer)) in tensors.into_iter().enumerate() {
                let mut dims = vec![blocks * ty.block_size()];
                dims.extend(std::iter::repeat_n(outer, n_outer.min(3)));
                b = b.tensor(&format!("t.{i}"), &dims, ty, i as u8);
            }
            (b, flavour)
        },
    )
}

proptest! {
    #[test]
    fn any_valid_file_round_trips((b, flavour) in arb_file()) {
        let (bytes, map) = b.build_with_map();
        let f = GgufFile::from_bytes_as(Path::new("p.gguf"), &bytes, Some(flavour)).unwrap();
        prop_assert_eq!(f.data_offset, map.data_offset as u64);
        prop_assert_eq!(f.tensors().len(), map.tensor_type_at.len());
        prop_assert_eq!(rewrite_as(&bytes, Some(flavour)), bytes.clone());
        // Detection either reads the file as the given table does, or asks for a flavour.
        match GgufFile::from_bytes(Path::new("p.gguf"), &bytes) {
            Ok(d) => prop_assert_eq!(d.tensors(), f.tensors()),
            Err(e) => prop_assert!(matches!(e, GgufError::AmbiguousType { id: 15, .. }), "{}", e),
        }
    }

    #[test]
    fn random_damage_never_panics((b, _) in arb_file(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut bytes = b.build();
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let keep = cut.index(bytes.len() + 1);
            let _ = GgufFile::from_bytes(Path::new("p.gguf"), &bytes);
            let _ = GgufFile::from_bytes(Path::new("p.gguf"), &bytes[..keep]);
        }
    }
}

// --- seeded corruption suite ---

/// A small deterministic generator (xorshift64*), so every failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_file(rng: &mut Rng) -> GgufBuilder {
    let mut b = GgufBuilder::new().kv_str("general.architecture", "deepseek2");
    for i in 0..2 + rng.below(3) {
        b = b.kv_u32(&format!("deepseek2.k{i}"), rng.below(1000) as u32);
    }
    // ik_llama.cpp's types too: IQ4_KS and IQ2_KS rows start with a row scale.
    let types = [
        GgmlType::F32,
        GgmlType::Q4_K,
        GgmlType::Q3_K,
        GgmlType::IQ2_XXS,
        GgmlType::Q8_0,
        GgmlType::IQ4_KS,
        GgmlType::IQ2_KS,
        GgmlType::IQ3_K,
    ];
    for i in 0..2 + rng.below(4) {
        let ty = types[rng.below(types.len() as u64) as usize];
        let dims = [ty.block_size() * (1 + rng.below(2)), 1 + rng.below(3)];
        b = b.tensor(&format!("blk.{i}.w"), &dims, ty, 0);
    }
    b
}

/// The refusals a tensor gets when its type changes to one of another size: the next
/// tensor's offset, the file's end, or the block size no longer fits.
fn wrong_size(e: &GgufError) -> bool {
    matches!(
        e,
        GgufError::BadOffset { .. }
            | GgufError::DataPastEnd { .. }
            | GgufError::NotBlockMultiple { .. }
    )
}

fn put(bytes: &mut [u8], at: usize, v: &[u8]) {
    bytes[at..at + v.len()].copy_from_slice(v);
}

/// One deliberate defect and the verdict it must get.
type Corruption = (
    &'static str,
    fn(&mut Vec<u8>, &FieldMap),
    fn(&GgufError) -> bool,
);

const CORRUPTIONS: &[Corruption] = &[
    (
        "bad magic",
        |b, _| b[1] = b'X',
        |e| matches!(e, GgufError::BadMagic { .. }),
    ),
    (
        "version 1",
        |b, _| put(b, 4, &1u32.to_le_bytes()),
        |e| matches!(e, GgufError::UnsupportedVersion { .. }),
    ),
    (
        "huge tensor count",
        |b, _| put(b, 8, &(u64::MAX / 3).to_le_bytes()),
        |e| matches!(e, GgufError::CountTooLarge { .. }),
    ),
    (
        "huge kv count",
        |b, _| put(b, 16, &(1u64 << 60).to_le_bytes()),
        |e| matches!(e, GgufError::CountTooLarge { .. }),
    ),
    (
        "key length past end",
        |b, m| put(b, m.kv_key_len_at[0], &(1u64 << 40).to_le_bytes()),
        |e| matches!(e, GgufError::StringPastEnd { .. }),
    ),
    (
        "empty key",
        |b, m| {
            // Turn "deepseek2.k0" into an empty key followed by garbage that is never reached.
            put(b, m.kv_key_len_at[1], &0u64.to_le_bytes());
        },
        |e| matches!(e, GgufError::EmptyKey { .. }),
    ),
    (
        "duplicate key",
        |b, m| {
            // "deepseek2.k0" and "deepseek2.k1" differ in their last byte.
            let (first, second) = (m.kv_key_len_at[1] + 8, m.kv_key_len_at[2] + 8);
            b[second + 11] = b[first + 11];
        },
        |e| matches!(e, GgufError::DuplicateKey { .. }),
    ),
    (
        "unknown value type",
        |b, m| put(b, m.kv_type_at[0], &77u32.to_le_bytes()),
        |e| matches!(e, GgufError::UnknownValueType { found: 77, .. }),
    ),
    (
        "duplicate tensor name",
        |b, m| {
            let (a, c) = (m.tensor_name_len_at[0] + 8, m.tensor_name_len_at[1] + 8);
            // "blk.0.w" and "blk.1.w" differ in one byte.
            b[c + 4] = b[a + 4];
        },
        |e| matches!(e, GgufError::DuplicateTensor { .. }),
    ),
    (
        "five dims",
        |b, m| put(b, m.tensor_n_dims_at[0], &5u32.to_le_bytes()),
        |e| matches!(e, GgufError::TooManyDims { found: 5, .. }),
    ),
    (
        "unknown ggml type",
        |b, m| put(b, m.tensor_type_at[0], &37u32.to_le_bytes()),
        |e| matches!(e, GgufError::UnknownType { id: 37, .. }),
    ),
    (
        // Q8_K, 292 bytes a block to mainline and 296 to ik_llama.cpp: refused as ambiguous
        // unless an ik-only type (some seeds have one) tells the flavour; then it is ik's
        // Q8_K, whose size no seed's tensor 0 has.
        "contested type id",
        |b, m| put(b, m.tensor_type_at[0], &15u32.to_le_bytes()),
        |e| matches!(e, GgufError::AmbiguousType { id: 15, .. }) || wrong_size(e),
    ),
    (
        // TQ1_0 to mainline, nothing to ik_llama.cpp: a file with an ik-only type (some seeds
        // have one) is for no program; in the others, tensor 0 is a mainline TQ1_0 of the
        // wrong size.
        "type ids of both programs",
        |b, m| put(b, m.tensor_type_at[0], &34u32.to_le_bytes()),
        |e| matches!(e, GgufError::NotInFlavour { id: 34, .. }) || wrong_size(e),
    ),
    (
        "ne0 not a block multiple",
        |b, m| {
            // Every type in the suite but F32 has blocks of 32 or 256; 1 fits none of them.
            // (Q4_K is shared by both tables, whatever the file's flavour.)
            put(b, m.tensor_dims_at[0], &1u64.to_le_bytes());
            put(b, m.tensor_type_at[0], &12u32.to_le_bytes());
        },
        |e| matches!(e, GgufError::NotBlockMultiple { .. }),
    ),
    (
        "size overflow",
        |b, m| put(b, m.tensor_dims_at[0] + 8, &(1u64 << 62).to_le_bytes()),
        |e| matches!(e, GgufError::SizeOverflow { .. }),
    ),
    (
        "offset gap",
        |b, m| {
            let at = m.tensor_offset_at[1];
            let v = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            put(b, at, &(v + 32).to_le_bytes());
        },
        |e| matches!(e, GgufError::BadOffset { .. }),
    ),
    (
        "data truncated",
        |b, _| {
            let n = b.len() - 40;
            b.truncate(n);
        },
        |e| matches!(e, GgufError::DataPastEnd { .. }),
    ),
    (
        "header truncated",
        |b, m| b.truncate(m.tensor_offset_at[0] + 3),
        |e| matches!(e, GgufError::Truncated { .. }),
    ),
];

#[test]
fn seeded_corruptions_get_their_verdicts() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (clean, map) = random_file(&mut rng).build_with_map();
        assert!(
            GgufFile::from_bytes(Path::new("ok.gguf"), &clean).is_ok(),
            "seed {seed}"
        );
        for (name, corrupt, verdict) in CORRUPTIONS {
            let mut bytes = clean.clone();
            corrupt(&mut bytes, &map);
            match GgufFile::from_bytes(Path::new("bad.gguf"), &bytes) {
                Ok(_) => panic!("seed {seed}: '{name}' was accepted"),
                Err(e) => assert!(verdict(&e), "seed {seed}: '{name}' got {e:?}"),
            }
        }
    }
}

// --- ik_llama.cpp sizes: rows carry metadata ---

/// An ik file: an IQ4_KS [256, 8, 2] tensor written with `first_bytes` bytes of data and,
/// unless `last`, an F32 tensor after it. 16 rows: the right size and the wrong ones below
/// are all multiples of the alignment, so padding cannot hide a difference.
fn ik_file(first_bytes: usize, last: bool) -> Vec<u8> {
    let mut b = GgufBuilder::new().tensor_raw(
        "blk.1.ffn_down_exps.weight",
        &[256, 8, 2],
        GgmlType::IQ4_KS.id(),
        vec![7; first_bytes],
    );
    if !last {
        b = b.tensor("blk.1.ffn_norm.weight", &[64], GgmlType::F32, 0);
    }
    b.build()
}

#[test]
fn ik_row_metadata_is_part_of_every_size() {
    // 16 rows of (4-byte row scale + 136 bytes).
    let right = 16 * (4 + 136);
    let f = GgufFile::from_bytes(Path::new("ik.gguf"), &ik_file(right, false)).unwrap();
    assert_eq!(f.tensors()[0].n_bytes, right as u64);
    assert_eq!(rewrite(&ik_file(right, false)), ik_file(right, false));
}

#[test]
fn ik_tensors_sized_without_their_row_metadata_are_refused() {
    // gguf-py's old mistake: IQ4_KS written as 136 bytes a block and no row scale. The next
    // tensor then starts where ggml would not look for it...
    let e = GgufFile::from_bytes(Path::new("ik.gguf"), &ik_file(16 * 136, false)).unwrap_err();
    assert!(
        matches!(&e, GgufError::BadOffset { tensor, .. } if tensor == "blk.1.ffn_norm.weight"),
        "{e}"
    );
    // ... or a 2-byte row scale for IQ4_KS's 4 (another type's size).
    let e =
        GgufFile::from_bytes(Path::new("ik.gguf"), &ik_file(16 * (2 + 136), false)).unwrap_err();
    assert!(matches!(e, GgufError::BadOffset { .. }), "{e}");
    // ... and as the last tensor, its data ends past the end of the file.
    let e = GgufFile::from_bytes(Path::new("ik.gguf"), &ik_file(16 * 136, true)).unwrap_err();
    assert!(
        matches!(&e, GgufError::DataPastEnd { tensor, .. } if tensor == "blk.1.ffn_down_exps.weight"),
        "{e}"
    );
}

#[test]
fn truncated_ik_tensors_are_refused() {
    let whole = ik_file(16 * (4 + 136), true);
    // Cut inside the last row's blocks, and inside its row scale.
    for cut in [1, 136, 137, 139] {
        let e =
            GgufFile::from_bytes(Path::new("ik.gguf"), &whole[..whole.len() - cut]).unwrap_err();
        assert!(
            matches!(&e, GgufError::DataPastEnd { tensor, .. } if tensor == "blk.1.ffn_down_exps.weight"),
            "cut {cut}: {e}"
        );
    }
}
