//! Which type table a file's tensor type ids are read with: mainline llama.cpp's or
//! ik_llama.cpp's (see [`crate::ggml_type`] for why the two differ), and the errors that say
//! why when an id does not fit.

use std::path::Path;

use super::GgufError;
use crate::ggml_type::{self, Flavour, GgmlType, IdClass};

/// Why a file was read with the type table it was read with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlavourBasis {
    /// The caller said so (`--flavour`).
    Given,
    /// Tensor `tensor` has type id `id`, which only `flavour`'s program defines: the file can
    /// be for no other.
    Tensor {
        /// The first such tensor.
        tensor: String,
        /// Its type id.
        id: u32,
        /// The only program that defines the id.
        flavour: Flavour,
    },
    /// Every type id in the file means the same to llama.cpp and ik_llama.cpp; it is read as
    /// mainline, and both programs load it.
    Shared,
}

impl std::fmt::Display for FlavourBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlavourBasis::Given => f.write_str("given by --flavour"),
            FlavourBasis::Tensor {
                tensor,
                id,
                flavour,
            } => write!(
                f,
                "tensor '{tensor}' has type id {id}, which only {} defines",
                flavour.program()
            ),
            FlavourBasis::Shared => {
                f.write_str("every type id in it means the same to llama.cpp and ik_llama.cpp")
            }
        }
    }
}

/// Decide the type table for a file whose tensors have these (name, type id) pairs. A file can
/// only be for a program that defines all of its ids, so: the flavour given; else ik if some
/// id only ik_llama.cpp defines; else mainline if some id only llama.cpp defines; else
/// mainline if every id means the same to both; else (an id both define differently, and
/// nothing else to tell) an error that names the first such tensor and both meanings.
///
/// A file with ids of both kinds is read as ik's, and its first mainline-only id is then
/// refused by [`resolve_type`] with that reason: no program loads it.
pub(super) fn decide_flavour<'a>(
    path: &Path,
    ids: impl Iterator<Item = (&'a str, u32)> + Clone,
    given: Option<Flavour>,
) -> Result<(Flavour, FlavourBasis), GgufError> {
    if let Some(f) = given {
        return Ok((f, FlavourBasis::Given));
    }
    let first = |class: IdClass| {
        ids.clone()
            .find(|&(_, id)| ggml_type::classify_id(id) == class)
    };
    for (class, flavour) in [
        (IdClass::IkOnly, Flavour::Ik),
        (IdClass::MainlineOnly, Flavour::Mainline),
    ] {
        if let Some((tensor, id)) = first(class) {
            let basis = FlavourBasis::Tensor {
                tensor: tensor.to_string(),
                id,
                flavour,
            };
            return Ok((flavour, basis));
        }
    }
    match first(IdClass::Contested) {
        Some((tensor, id)) => Err(GgufError::AmbiguousType {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            id,
            mainline: ggml_type::meaning(id, Flavour::Mainline),
            ik: ggml_type::meaning(id, Flavour::Ik),
        }),
        None => Ok((Flavour::Mainline, FlavourBasis::Shared)),
    }
}

/// The type `id` means in `flavour`'s table, or an error that says why the file is read with
/// that table and what the id would mean in the other.
pub(super) fn resolve_type(
    path: &Path,
    tensor: &str,
    id: u32,
    flavour: Flavour,
    basis: &FlavourBasis,
) -> Result<GgmlType, GgufError> {
    if let Some(ty) = GgmlType::lookup(id, flavour) {
        return Ok(ty);
    }
    let other = match flavour {
        Flavour::Mainline => Flavour::Ik,
        Flavour::Ik => Flavour::Mainline,
    };
    if GgmlType::lookup(id, other).is_none() {
        return Err(GgufError::UnknownType {
            path: path.to_path_buf(),
            tensor: tensor.into(),
            id,
        });
    }
    Err(GgufError::NotInFlavour {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        id,
        flavour,
        basis: basis.to_string(),
        other: other.program(),
        other_meaning: ggml_type::meaning(id, other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use crate::testkit::GgufBuilder;

    fn path() -> &'static Path {
        Path::new("t.gguf")
    }

    /// Shared ids only (Q4_K, F32, Q3_K).
    fn sample() -> GgufBuilder {
        GgufBuilder::new()
            .tensor("token_embd.weight", &[256, 4], GgmlType::Q4_K, 0)
            .tensor("output_norm.weight", &[7], GgmlType::F32, 0)
            .tensor("blk.0.ffn_up_exps.weight", &[256, 2, 4], GgmlType::Q3_K, 0)
    }

    fn parse_err(bytes: &[u8]) -> GgufError {
        GgufFile::from_bytes(path(), bytes).expect_err("file should be refused")
    }

    /// A file with a TQ1_0 (id 34, mainline only) tensor and optionally an IQ4_KS (144) one.
    fn tq1(with_ik: bool) -> Vec<u8> {
        let mut b = GgufBuilder::new().tensor_raw("blk.0.attn_q.weight", &[256], 34, vec![0; 54]);
        if with_ik {
            b = b.tensor(
                "blk.0.ffn_up_exps.weight",
                &[256, 2, 2],
                GgmlType::IQ4_KS,
                0,
            );
        }
        b.build()
    }

    /// A file whose only non-shared id is Q8_K (15): 292 bytes a block to mainline, 296 to ik.
    fn q8k() -> Vec<u8> {
        sample()
            .tensor_raw("blk.0.attn_q.weight", &[256], 15, vec![0; 296])
            .build()
    }

    #[test]
    fn flavour_is_detected_from_ik_only_ids() {
        let b = sample()
            .tensor(
                "blk.1.ffn_down_exps.weight",
                &[256, 2, 4],
                GgmlType::IQ2_KS,
                0,
            )
            .build();
        let f = GgufFile::from_bytes(path(), &b).unwrap();
        assert_eq!(f.flavour, Flavour::Ik);
        assert_eq!(
            f.flavour_basis,
            FlavourBasis::Tensor {
                tensor: "blk.1.ffn_down_exps.weight".into(),
                id: 145,
                flavour: Flavour::Ik,
            }
        );
        // Row scales are part of the size: 8 rows of 2 + 70 bytes.
        assert_eq!(
            f.tensor("blk.1.ffn_down_exps.weight").unwrap().n_bytes,
            8 * 72
        );
        // Shared ids only: read as mainline, which both programs agree with.
        let f = GgufFile::from_bytes(path(), &sample().build()).unwrap();
        assert_eq!(
            (f.flavour, f.flavour_basis),
            (Flavour::Mainline, FlavourBasis::Shared)
        );
        // Given: used as given.
        let f = GgufFile::from_bytes_as(path(), &sample().build(), Some(Flavour::Ik)).unwrap();
        assert_eq!(
            (f.flavour, f.flavour_basis),
            (Flavour::Ik, FlavourBasis::Given)
        );
        // Ids mainline removed and ik kept (31-33) or reused (36) are ik's too.
        let b = sample()
            .tensor_raw("blk.0.attn_q.weight", &[32], 31, vec![0; 18])
            .build();
        let f = GgufFile::from_bytes(path(), &b).unwrap();
        assert_eq!(f.flavour, Flavour::Ik);
        assert_eq!(
            f.tensor("blk.0.attn_q.weight").unwrap().ty.name(),
            "Q4_0_4X4"
        );
    }

    #[test]
    fn ids_only_mainline_defines_make_a_mainline_file() {
        // (id, name, elements, bytes): one block of each.
        for (id, name, n, bytes) in [
            (34, "TQ1_0", 256, 54),
            (35, "TQ2_0", 256, 66),
            (40, "NVFP4", 64, 36),
            (42, "Q2_0", 64, 18),
        ] {
            let b = sample()
                .tensor_raw("blk.0.attn_q.weight", &[n], id, vec![0; bytes])
                .build();
            let f = GgufFile::from_bytes(path(), &b).unwrap();
            assert_eq!(
                (f.flavour, f.flavour_basis.clone()),
                (
                    Flavour::Mainline,
                    FlavourBasis::Tensor {
                        tensor: "blk.0.attn_q.weight".into(),
                        id,
                        flavour: Flavour::Mainline,
                    }
                ),
                "{name}"
            );
            let t = f.tensor("blk.0.attn_q.weight").unwrap();
            assert_eq!((t.ty.name(), t.n_bytes), (name, bytes as u64));
        }
    }

    #[test]
    fn an_id_both_define_differently_needs_a_flavour() {
        let e = parse_err(&q8k());
        assert!(
            matches!(&e, GgufError::AmbiguousType { id: 15, tensor, mainline, ik, .. }
                if tensor == "blk.0.attn_q.weight"
                    && mainline == "Q8_K (292 bytes per 256 elements)"
                    && ik == "Q8_K (296 bytes per 256 elements)"),
            "{e}"
        );
        assert!(e.to_string().contains("--flavour"), "{e}");
        for (given, bytes) in [(Flavour::Mainline, 292), (Flavour::Ik, 296)] {
            let f = GgufFile::from_bytes_as(path(), &q8k(), Some(given)).unwrap();
            assert_eq!(f.tensor("blk.0.attn_q.weight").unwrap().n_bytes, bytes);
        }
        // Another tensor's id tells: Q8_K is then read with that program's table.
        let b = GgufBuilder::new()
            .tensor_raw("a", &[256], 15, vec![0; 292])
            .tensor_raw("b", &[256], 40, vec![0; 4 * 36])
            .build();
        let f = GgufFile::from_bytes(path(), &b).unwrap();
        assert_eq!(f.flavour, Flavour::Mainline);
        assert_eq!(f.tensor("a").unwrap().n_bytes, 292);
    }

    #[test]
    fn ids_of_both_programs_own_are_refused() {
        // Read as ik (given, or shown by an IQ4_KS tensor), 34 is no type: said with the reason.
        let e = GgufFile::from_bytes_as(path(), &tq1(false), Some(Flavour::Ik)).unwrap_err();
        assert!(
            matches!(
                e,
                GgufError::NotInFlavour {
                    id: 34,
                    flavour: Flavour::Ik,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_err(&tq1(true));
        assert!(
            matches!(
                &e,
                GgufError::NotInFlavour { id: 34, flavour: Flavour::Ik, basis, other_meaning, .. }
                    if basis.contains("only ik_llama.cpp defines") && other_meaning.starts_with("TQ1_0")
            ),
            "{e}"
        );
    }
}
