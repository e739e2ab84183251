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
//! type used ([`Ggml::check`]).

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
mod tests;
