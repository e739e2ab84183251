//! ggml's own quantizers and dequantizers, for mixing (see [`mix`](crate::mix)), value
//! distances and difference maps.
//!
//! ggml is loaded at run time: a `libggml-base` shared library found as [`load`] says
//! (`--ggml PATH`, `GGUF_SPLICE_GGML`, beside llama.cpp's tools on `PATH`, the system library
//! path, PyPI's `libggml-python`), and the few C functions mixing needs are bound from it:
//! `ggml_get_type_traits(type)->to_float`, `ggml_quantize_chunk`,
//! `ggml_quantize_requires_imatrix` and `ggml_validate_row_data`. They are the functions
//! `llama-quantize` calls, so the same floats and importance matrix give the same bytes as
//! the `llama-quantize` of that ggml. Nothing here approximates or re-implements a quantizer.
//! Without a ggml the build still plans, copies and compares bytes; what needs ggml asks
//! [`library`] and gets a [`GgmlError`] saying how to get one.
//!
//! ggml aborts the process on a failed assertion, so every call is guarded here: a type must
//! be one ggml quantizes ([`can_quantize`]), rows must be whole blocks, types that need an
//! importance matrix get one, and the library's type table must equal this crate's for every
//! type used ([`check`]).

mod check;
pub mod load;

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::ggml_type::GgmlType;
pub use load::Found;

/// The two shortest ways to get a ggml, for messages.
pub const HOW_TO_GET: &str = "get one with `pip install libggml-python` (found through python3), or point --ggml PATH (or GGUF_SPLICE_GGML) at the libggml-base shared library of a llama.cpp build or install";

/// Why a call into ggml was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgmlError {
    /// No ggml was found anywhere [`load`] looks.
    #[error(
        "no ggml found (no --ggml or GGUF_SPLICE_GGML, no libggml-base beside llama-quantize/llama-server/llama-cli on PATH, none on the library path, no libggml-python for python3); {HOW_TO_GET}"
    )]
    NotFound,
    /// The library chosen or found could not be loaded.
    #[error("ggml {library}: cannot load it: {reason}; {HOW_TO_GET}")]
    NotLoaded {
        /// The file (or directory) given or found.
        library: PathBuf,
        /// The loader's reason.
        reason: String,
    },
    /// The library loads but lacks one of ggml's functions: it is not a libggml-base.
    #[error("{library} is not a ggml (libggml-base): it has no {symbol}; {HOW_TO_GET}")]
    NotGgml {
        /// The file.
        library: PathBuf,
        /// The missing function.
        symbol: &'static str,
    },
    /// The library's type table disagrees with this crate's: another ggml, or not one.
    #[error(
        "ggml {library}: {ty} {field} is {theirs}, gguf-splice's table says {ours}: use a ggml of llama.cpp b11434's type table (--ggml PATH)"
    )]
    TableMismatch {
        /// The library.
        library: PathBuf,
        /// The type.
        ty: GgmlType,
        /// Which value differs.
        field: &'static str,
        /// This crate's value.
        ours: String,
        /// The library's.
        theirs: String,
    },
    /// The library has no such type (an older ggml, or an ik_llama.cpp type).
    #[error("ggml {library} does not define {ty} (an older ggml, or a type of another program)")]
    TypeUnknown {
        /// The library.
        library: PathBuf,
        /// The type.
        ty: GgmlType,
    },
    /// ggml cannot dequantize this type (it has no `to_float`).
    #[error("ggml cannot dequantize {ty}: it has no to_float for it")]
    CannotDequantize {
        /// The type.
        ty: GgmlType,
    },
    /// ggml cannot quantize to this type (`ggml_quantize_chunk` has no case for it).
    #[error("ggml cannot quantize to {ty}; choose a type such as Q4_K, Q6_K, Q8_0 or IQ4_XS")]
    CannotQuantize {
        /// The type.
        ty: GgmlType,
    },
    /// The type needs an importance matrix and none was given.
    #[error(
        "ggml quantizes {ty} only with an importance matrix; give the rule `imatrix = \"FILE\"`"
    )]
    NeedsImatrix {
        /// The type.
        ty: GgmlType,
    },
    /// A row length that is not a whole number of blocks, or buffers of the wrong size.
    #[error("{what}: expected {expected}, found {found}")]
    BadSize {
        /// What was measured.
        what: &'static str,
        /// What ggml needs.
        expected: u64,
        /// What was given.
        found: u64,
    },
    /// `ggml_validate_row_data` refused the quantized rows (NaN or infinite values or
    /// scales), as `llama-quantize` would.
    #[error(
        "ggml's validation refused the {ty} rows (NaN or infinite values); llama-quantize would refuse them too"
    )]
    Invalid {
        /// The type.
        ty: GgmlType,
    },
}

impl GgmlError {
    /// Whether this says no usable ggml is on the machine (not found, not loadable, not
    /// ggml, or a table that disagrees with ours): a missing capability, not bad input.
    pub fn is_missing_ggml(&self) -> bool {
        matches!(
            self,
            GgmlError::NotFound
                | GgmlError::NotLoaded { .. }
                | GgmlError::NotGgml { .. }
                | GgmlError::TableMismatch { .. }
                | GgmlError::TypeUnknown { .. }
        )
    }
}

/// A loaded, checked ggml.
pub struct Ggml {
    lib: load::Loaded,
    verdicts: check::Verdicts,
}

impl Ggml {
    /// Load the library at `path` (a file or a directory holding one), as `--ggml` does.
    pub fn open(path: &Path) -> Result<Ggml, GgmlError> {
        Ok(Ggml::new(load::find(Some(path))?))
    }

    fn new(lib: load::Loaded) -> Ggml {
        Ggml {
            lib,
            verdicts: check::Verdicts::new(),
        }
    }

    /// The file the loader mapped.
    pub fn path(&self) -> &Path {
        &self.lib.path
    }

    /// The library's file name only (what a child records: never a full path).
    pub fn file_name(&self) -> String {
        self.lib
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// How it was found.
    pub fn found(&self) -> &Found {
        &self.lib.found
    }

    /// `ggml_version()`, where the library exports it.
    pub fn version(&self) -> Option<&str> {
        self.lib.version.as_deref()
    }

    /// `ggml_commit()`, where the library exports it.
    pub fn commit(&self) -> Option<&str> {
        self.lib.commit.as_deref()
    }

    /// What a child records in [`RECORD_KEY`]: `ggml VERSION (commit C) FILE`, the file by
    /// name only.
    pub fn record(&self) -> String {
        format!(
            "ggml {} (commit {}) {}",
            self.version().unwrap_or("unknown"),
            self.commit().unwrap_or("unknown"),
            self.file_name()
        )
    }

    /// Check `ty` against this crate's table (once per type): `to_float`, if any.
    fn checked(&self, ty: GgmlType) -> check::Checked {
        check::check(&self.lib, &self.verdicts, ty)
    }

    /// Check `ty` against this crate's table: an error naming the library, the type and
    /// both values when they differ.
    pub fn check(&self, ty: GgmlType) -> Result<(), GgmlError> {
        self.checked(ty).map(|_| ())
    }
}

/// The key a child records the ggml that made its mixed bytes in.
pub const RECORD_KEY: &str = "splice.ggml";

static CHOSEN: OnceLock<PathBuf> = OnceLock::new();
static LIBRARY: OnceLock<Result<Ggml, GgmlError>> = OnceLock::new();

/// Use the library at `path` (`--ggml`), ahead of every other place. Effective only before
/// the first [`library`] call; returns false after it.
pub fn set_path(path: &Path) -> bool {
    LIBRARY.get().is_none() && CHOSEN.set(path.to_path_buf()).is_ok()
}

/// The ggml of this process: found and loaded on first use (see [`load`]), then the same.
pub fn library() -> Result<&'static Ggml, GgmlError> {
    LIBRARY
        .get_or_init(|| load::find(CHOSEN.get().map(PathBuf::as_path)).map(Ggml::new))
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether a usable ggml was found (it may still refuse a type).
pub fn available() -> bool {
    library().is_ok()
}

/// The types `ggml_quantize_chunk` (llama.cpp 11434) quantizes to; any other aborts there.
const QUANTIZABLE: &[&str] = &[
    "F32", "F16", "BF16", "Q1_0", "Q2_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4", "NVFP4",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0", "TQ2_0", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
    "IQ3_S", "IQ2_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS",
];

/// Types that need an importance matrix whatever ggml's own check says: IQ1_M's quantizer
/// runs without one but gives garbage, and llama-quantize refuses it too.
const NEEDS_IMATRIX: &[&str] = &["IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"];

/// Whether ggml can quantize rows to `ty`. Known without the library.
pub fn can_quantize(ty: GgmlType) -> bool {
    QUANTIZABLE.contains(&ty.name())
}

/// Whether quantizing to `ty` needs an importance matrix: IQ2_XXS, IQ2_XS, IQ1_S, IQ1_M,
/// and whatever `ggml_quantize_requires_imatrix` says.
/// (The library is asked only when one is loaded and knows `ty`.)
pub fn requires_imatrix(ty: GgmlType) -> bool {
    NEEDS_IMATRIX.contains(&ty.name())
        || library().is_ok_and(|g| {
            g.check(ty).is_ok()
                // SAFETY: a pure function of a type id the library knows (checked above).
                && unsafe { (g.lib.fns.quantize_requires_imatrix)(ty.id() as c_int) }
        })
}

/// Whether ggml can dequantize `ty` (F32 is read as it is): false without a library, or
/// when the library refuses the type (then [`dequantize`] says why).
pub fn can_dequantize(ty: GgmlType) -> bool {
    library().is_ok_and(|g| ty == GgmlType::F32 || matches!(g.checked(ty), Ok(Some(_))))
}

fn check_rows(ty: GgmlType, n_per_row: u64, floats: usize, bytes: usize) -> Result<u64, GgmlError> {
    if n_per_row == 0 || !n_per_row.is_multiple_of(ty.block_size()) {
        return Err(GgmlError::BadSize {
            what: "row length (a multiple of the block size)",
            expected: n_per_row
                .next_multiple_of(ty.block_size())
                .max(ty.block_size()),
            found: n_per_row,
        });
    }
    if !(floats as u64).is_multiple_of(n_per_row) {
        return Err(GgmlError::BadSize {
            what: "floats (whole rows)",
            expected: (floats as u64).next_multiple_of(n_per_row),
            found: floats as u64,
        });
    }
    let rows = floats as u64 / n_per_row;
    let want = rows * (n_per_row / ty.block_size()) * ty.type_size();
    if want != bytes as u64 {
        return Err(GgmlError::BadSize {
            what: "bytes of quantized rows",
            expected: want,
            found: bytes as u64,
        });
    }
    Ok(rows)
}

/// Dequantize `src` (whole rows of `ty` of `n_per_row` elements) into `dst` with ggml's
/// `to_float` (F32: the little-endian floats as they are).
pub fn dequantize(
    ty: GgmlType,
    n_per_row: u64,
    src: &[u8],
    dst: &mut [f32],
) -> Result<(), GgmlError> {
    check_rows(ty, n_per_row, dst.len(), src.len())?;
    if ty == GgmlType::F32 {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
            *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        }
        return Ok(());
    }
    let f = library()?
        .checked(ty)?
        .ok_or(GgmlError::CannotDequantize { ty })?;
    // SAFETY: check_rows made sure src holds exactly dst.len() / block_size whole blocks of
    // ty (whose sizes the library reports as ours) and dst has room for dst.len() floats;
    // to_float reads those blocks and writes that many floats, and the buffers do not overlap.
    unsafe { f(src.as_ptr().cast(), dst.as_mut_ptr(), dst.len() as i64) };
    Ok(())
}

/// Quantize the rows of `src` (`n_per_row` floats each) to `ty` into `dst` with
/// `ggml_quantize_chunk`, with `imatrix` (`n_per_row` weights, shared by all rows) if
/// given, then check them with `ggml_validate_row_data`, as llama-quantize does.
pub fn quantize(
    ty: GgmlType,
    n_per_row: u64,
    src: &[f32],
    imatrix: Option<&[f32]>,
    dst: &mut [u8],
) -> Result<(), GgmlError> {
    if !can_quantize(ty) {
        return Err(GgmlError::CannotQuantize { ty });
    }
    check_rows(ty, n_per_row, src.len(), dst.len())?;
    match imatrix {
        None if requires_imatrix(ty) => return Err(GgmlError::NeedsImatrix { ty }),
        Some(w) if w.len() as u64 != n_per_row => {
            return Err(GgmlError::BadSize {
                what: "importance matrix weights (one per column)",
                expected: n_per_row,
                found: w.len() as u64,
            });
        }
        _ => {}
    }
    let g = library()?;
    g.checked(ty)?;
    let rows = src.len() as u64 / n_per_row;
    // SAFETY: every precondition ggml asserts was checked: ty is one of
    // ggml_quantize_chunk's cases and the library's sizes of it are ours, n_per_row is a
    // whole number of blocks, src holds rows * n_per_row floats and dst exactly rows
    // quantized rows, imatrix (if any) holds n_per_row floats and is given whenever the type
    // requires one. ggml reads src and imatrix and writes only dst; the quantization tables
    // it may initialise are guarded by its own critical section, so concurrent calls are safe.
    let written = unsafe {
        (g.lib.fns.quantize_chunk)(
            ty.id() as c_int,
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            rows as i64,
            n_per_row as i64,
            imatrix.map_or(std::ptr::null(), |w| w.as_ptr()),
        )
    };
    if written != dst.len() {
        return Err(GgmlError::BadSize {
            what: "bytes ggml_quantize_chunk wrote",
            expected: dst.len() as u64,
            found: written as u64,
        });
    }
    // SAFETY: dst holds dst.len() bytes of ty's blocks, which the function only reads.
    if !unsafe { (g.lib.fns.validate_row_data)(ty.id() as c_int, dst.as_ptr().cast(), dst.len()) } {
        return Err(GgmlError::Invalid { ty });
    }
    Ok(())
}

/// For unit tests: the process's ggml, or None (the test is skipped, loudly) when the
/// machine has none and oracles are not required (`GGUF_SPLICE_REQUIRE_ORACLES=1`).
#[cfg(test)]
pub(crate) fn test_library(test: &str) -> Option<&'static Ggml> {
    match library() {
        Ok(g) => Some(g),
        Err(e) if std::env::var("GGUF_SPLICE_REQUIRE_ORACLES").as_deref() == Ok("1") => {
            panic!("{test}: needs ggml: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: needs ggml: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(name: &str) -> GgmlType {
        GgmlType::from_name(name).unwrap()
    }

    #[test]
    fn quantizable_types_are_known_types() {
        for n in QUANTIZABLE.iter().chain(NEEDS_IMATRIX) {
            assert!(GgmlType::from_name(n).is_some(), "{n}");
        }
        assert!(can_quantize(ty("Q4_K")) && can_quantize(ty("IQ4_XS")));
        assert!(!can_quantize(ty("Q8_K")) && !can_quantize(ty("Q8_1")) && !can_quantize(ty("I32")));
        for n in NEEDS_IMATRIX {
            assert!(requires_imatrix(ty(n)), "{n}");
        }
        assert!(!requires_imatrix(ty("Q4_K")));
    }

    #[test]
    fn sizes_are_checked_before_ggml_is_called() {
        let mut out = vec![0u8; 144];
        let e = quantize(ty("Q4_K"), 100, &[0.0; 100], None, &mut out).unwrap_err();
        assert!(matches!(e, GgmlError::BadSize { .. }), "{e}");
        let e = quantize(ty("Q4_K"), 256, &[0.0; 256], None, &mut out[..100]).unwrap_err();
        assert!(matches!(e, GgmlError::BadSize { .. }), "{e}");
        let e = quantize(ty("Q8_K"), 256, &[0.0; 256], None, &mut out).unwrap_err();
        assert_eq!(e, GgmlError::CannotQuantize { ty: ty("Q8_K") });
        let mut iq = vec![0u8; 66];
        let e = quantize(ty("IQ2_XXS"), 256, &[0.0; 256], None, &mut iq).unwrap_err();
        assert_eq!(e, GgmlError::NeedsImatrix { ty: ty("IQ2_XXS") });
        let e = quantize(ty("IQ2_XXS"), 256, &[0.0; 256], Some(&[1.0; 255]), &mut iq);
        assert!(matches!(e, Err(GgmlError::BadSize { .. })));
    }

    #[test]
    fn f32_reads_as_it_is() {
        let src: Vec<u8> = [1.5f32, -0.0, 3.25]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let mut dst = [0f32; 3];
        dequantize(GgmlType::F32, 3, &src, &mut dst).unwrap();
        assert_eq!(
            dst.map(f32::to_bits),
            [1.5f32, -0.0, 3.25].map(f32::to_bits)
        );
    }

    #[test]
    fn a_table_that_differs_is_refused_naming_the_type_and_both_values() {
        let Some(g) = test_library("a_table_that_differs_is_refused") else {
            return;
        };
        let q4k = ty("Q4_K");
        let mut want = check::Expected::of(q4k);
        assert!(check::check_traits(&g.lib, q4k, want).is_ok());
        want.bytes += 2;
        match check::check_traits(&g.lib, q4k, want) {
            Err(GgmlError::TableMismatch {
                field: "type_size",
                ours,
                theirs,
                ..
            }) => assert_eq!((ours.as_str(), theirs.as_str()), ("146", "144")),
            other => panic!("{other:?}"),
        }
        let mut want = check::Expected::of(q4k);
        want.name = "Q5_K";
        assert!(matches!(
            check::check_traits(&g.lib, q4k, want),
            Err(GgmlError::TableMismatch {
                field: "type_name",
                ..
            })
        ));
        // ik_llama.cpp's types share ids with mainline's: never asked of a mainline ggml.
        assert!(matches!(
            g.check(GgmlType::IQ4_KS),
            Err(GgmlError::TypeUnknown { .. })
        ));
        // Every mainline type of our table passes against the tests' ggml.
        for t in GgmlType::all() {
            g.check(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }

    /// The real library's table, read at the stride of a struct 8 bytes longer than ours:
    /// what our declaration would read from a ggml whose `struct ggml_type_traits` grew a
    /// field. (No such ggml exists to test with: b11434 and 0.20.2 agree.)
    unsafe extern "C" fn longer_struct(id: c_int) -> *const load::TypeTraits {
        let real = test_library("longer_struct")
            .unwrap()
            .lib
            .fns
            .get_type_traits;
        let stride = std::mem::size_of::<load::TypeTraits>() + 8;
        // SAFETY: entry 0 is in the table; for the ids below, id * stride stays inside the
        // 43 entries of ggml's table (a test-only read of static data).
        unsafe { real(0).cast::<u8>().add(id as usize * stride).cast() }
    }

    #[test]
    fn a_traits_struct_of_another_layout_is_refused() {
        let Some(g) = test_library("a_traits_struct_of_another_layout_is_refused") else {
            return;
        };
        let mut lib = load::open(g.path(), Found::Flag).unwrap();
        lib.fns.get_type_traits = longer_struct;
        let q4k = ty("Q4_K");
        match check::check_traits(&lib, q4k, check::Expected::of(q4k)) {
            Err(GgmlError::TableMismatch { field, .. }) => {
                assert_eq!(field, "struct ggml_type_traits layout")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ggml_round_trips_q8_0() {
        if test_library("ggml_round_trips_q8_0").is_none() {
            return;
        }
        // Q8_0 keeps each value within half a step (d = max/127, d stored as f16).
        let src: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 127.0 * 4.0).collect();
        let mut q = vec![0u8; 2 * 34];
        quantize(ty("Q8_0"), 64, &src, None, &mut q).unwrap();
        let mut back = vec![0f32; 64];
        dequantize(ty("Q8_0"), 64, &q, &mut back).unwrap();
        for (a, b) in src.iter().zip(&back) {
            assert!((a - b).abs() < 0.01, "{a} {b}");
        }
        assert!(can_dequantize(ty("IQ2_XXS")) && can_dequantize(ty("Q4_K")));
        assert!(!can_dequantize(ty("Q8_1")));
        let e = dequantize(ty("Q8_1"), 32, &[0u8; 36], &mut [0f32; 32]).unwrap_err();
        assert_eq!(e, GgmlError::CannotDequantize { ty: ty("Q8_1") });
    }

    #[test]
    fn ggml_refuses_non_finite_rows() {
        if test_library("ggml_refuses_non_finite_rows").is_none() {
            return;
        }
        let mut src = vec![0.5f32; 32];
        src[3] = f32::NAN;
        let mut out = vec![0u8; 32 * 4];
        assert_eq!(
            quantize(GgmlType::F32, 32, &src, None, &mut out),
            Err(GgmlError::Invalid { ty: GgmlType::F32 })
        );
        src[3] = f32::INFINITY;
        let mut q = vec![0u8; 34];
        assert_eq!(
            quantize(ty("Q8_0"), 32, &src, None, &mut q),
            Err(GgmlError::Invalid { ty: ty("Q8_0") })
        );
    }
}
