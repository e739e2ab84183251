//! ggml's own quantizers and dequantizers, for mixing (see [`mix`](crate::mix)).
//!
//! With the cargo feature `ggml`, `build.rs` links `libggml-base.a` from a llama.cpp build
//! (the one `fixtures/build-llama.sh` caches, or `GGUF_SPLICE_GGML_DIR`), and this module
//! binds the few C functions mixing needs: `ggml_get_type_traits(type)->to_float`,
//! `ggml_quantize_chunk`, `ggml_quantize_requires_imatrix` and `ggml_validate_row_data`.
//! They are the functions `llama-quantize` calls, so the same floats and importance matrix
//! give the same bytes. Nothing here approximates or re-implements a quantizer.
//!
//! Without the feature the same functions exist and return [`GgmlError::Unavailable`], and
//! [`AVAILABLE`] is false: the default build stays free of C code.
//!
//! ggml aborts the process on a failed assertion, so every call is guarded here: a type must
//! be one ggml quantizes ([`can_quantize`]), rows must be whole blocks, types that need an
//! importance matrix get one, and the library's block sizes must equal this crate's table.

use crate::ggml_type::GgmlType;

/// Whether this build links ggml (cargo feature `ggml`).
pub const AVAILABLE: bool = cfg!(feature = "ggml");

/// How to get a build that can mix, for messages.
pub const HOW_TO_ENABLE: &str = "this gguf-splice was built without ggml's quantizers; build it with `cargo build --release --features ggml` (it links libggml-base from the llama.cpp that `bash fixtures/build-llama.sh` builds, or from GGUF_SPLICE_GGML_DIR)";

/// Why a call into ggml was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgmlError {
    /// The build does not link ggml.
    #[error("{HOW_TO_ENABLE}")]
    Unavailable,
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
    /// The linked library disagrees with this crate's block table: another ggml version.
    #[error(
        "the linked ggml says {ty} has blocks of {found_block} elements in {found_bytes} bytes; gguf-splice's table says {block} in {bytes}: rebuild against the llama.cpp of fixtures/build-llama.sh"
    )]
    LayoutMismatch {
        /// The type.
        ty: GgmlType,
        /// Our block size.
        block: u64,
        /// Our block bytes.
        bytes: u64,
        /// The library's block size.
        found_block: u64,
        /// The library's block bytes.
        found_bytes: u64,
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
pub fn requires_imatrix(ty: GgmlType) -> bool {
    NEEDS_IMATRIX.contains(&ty.name()) || imp::requires_imatrix(ty)
}

/// Whether ggml can dequantize `ty` (F32 is read as it is). False without the library.
pub fn can_dequantize(ty: GgmlType) -> bool {
    AVAILABLE && (ty == GgmlType::F32 || imp::has_to_float(ty))
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
    imp::dequantize(ty, src, dst)
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
    imp::quantize(ty, n_per_row, src, imatrix, dst)
}

#[cfg(feature = "ggml")]
mod imp {
    //! The bindings. Signatures from ggml/include/ggml.h of llama.cpp 11434; `build.rs`
    //! checks the struct layout against that header.

    use std::ffi::{c_char, c_int, c_void};

    use super::GgmlError;
    use crate::ggml_type::GgmlType;

    type ToFloat = unsafe extern "C" fn(x: *const c_void, y: *mut f32, k: i64);
    type FromFloat = unsafe extern "C" fn(x: *const f32, y: *mut c_void, k: i64);

    /// `struct ggml_type_traits`, field for field.
    #[repr(C)]
    struct TypeTraits {
        type_name: *const c_char,
        blck_size: i64,
        blck_size_interleave: i64,
        type_size: usize,
        is_quantized: bool,
        to_float: Option<ToFloat>,
        from_float_ref: Option<FromFloat>,
    }

    // The declarations copy ggml.h (llama.cpp 11434): `enum ggml_type` is passed as a C int,
    // `bool` is C's `_Bool`. Calling any of them is unsafe; each call below says why it holds.
    unsafe extern "C" {
        fn ggml_get_type_traits(ty: c_int) -> *const TypeTraits;
        fn ggml_quantize_requires_imatrix(ty: c_int) -> bool;
        fn ggml_quantize_chunk(
            ty: c_int,
            src: *const f32,
            dst: *mut c_void,
            start: i64,
            nrows: i64,
            n_per_row: i64,
            imatrix: *const f32,
        ) -> usize;
        fn ggml_validate_row_data(ty: c_int, data: *const c_void, nbytes: usize) -> bool;
    }

    /// The library's traits of `ty`, checked against our block table.
    fn traits(ty: GgmlType) -> Result<&'static TypeTraits, GgmlError> {
        // SAFETY: every id GgmlType holds is below GGML_TYPE_COUNT of this ggml (the table
        // and the header agree, checked by build.rs and the sizes below); for such an id
        // ggml_get_type_traits returns a pointer into its static, never-freed table.
        let t = unsafe { &*ggml_get_type_traits(ty.id() as c_int) };
        if t.blck_size as u64 != ty.block_size() || t.type_size as u64 != ty.type_size() {
            return Err(GgmlError::LayoutMismatch {
                ty,
                block: ty.block_size(),
                bytes: ty.type_size(),
                found_block: t.blck_size as u64,
                found_bytes: t.type_size as u64,
            });
        }
        Ok(t)
    }

    pub(super) fn has_to_float(ty: GgmlType) -> bool {
        traits(ty).is_ok_and(|t| t.to_float.is_some())
    }

    pub(super) fn requires_imatrix(ty: GgmlType) -> bool {
        // SAFETY: a pure function of the type id; any id is accepted.
        unsafe { ggml_quantize_requires_imatrix(ty.id() as c_int) }
    }

    pub(super) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), GgmlError> {
        let f = traits(ty)?
            .to_float
            .ok_or(GgmlError::CannotDequantize { ty })?;
        // SAFETY: the caller checked that src holds exactly dst.len() / block_size whole
        // blocks of ty and dst has room for dst.len() floats; to_float reads those blocks
        // and writes that many floats, and the two buffers do not overlap.
        unsafe { f(src.as_ptr().cast(), dst.as_mut_ptr(), dst.len() as i64) };
        Ok(())
    }

    pub(super) fn quantize(
        ty: GgmlType,
        n_per_row: u64,
        src: &[f32],
        imatrix: Option<&[f32]>,
        dst: &mut [u8],
    ) -> Result<(), GgmlError> {
        traits(ty)?;
        let rows = src.len() as u64 / n_per_row;
        // SAFETY: the caller checked every precondition ggml asserts: ty is one of
        // ggml_quantize_chunk's cases, n_per_row is a whole number of blocks, src holds
        // rows * n_per_row floats and dst exactly rows quantized rows, imatrix (if any)
        // holds n_per_row floats and is given whenever the type requires one. ggml reads
        // src and imatrix and writes only dst; the quantization tables it may initialise
        // are guarded by its own critical section, so concurrent calls are safe.
        let written = unsafe {
            ggml_quantize_chunk(
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
        if !unsafe { ggml_validate_row_data(ty.id() as c_int, dst.as_ptr().cast(), dst.len()) } {
            return Err(GgmlError::Invalid { ty });
        }
        Ok(())
    }
}

#[cfg(not(feature = "ggml"))]
mod imp {
    //! Without the library every call is refused.

    use super::GgmlError;
    use crate::ggml_type::GgmlType;

    pub(super) fn has_to_float(_: GgmlType) -> bool {
        false
    }

    pub(super) fn requires_imatrix(_: GgmlType) -> bool {
        false
    }

    pub(super) fn dequantize(_: GgmlType, _: &[u8], _: &mut [f32]) -> Result<(), GgmlError> {
        Err(GgmlError::Unavailable)
    }

    pub(super) fn quantize(
        _: GgmlType,
        _: u64,
        _: &[f32],
        _: Option<&[f32]>,
        _: &mut [u8],
    ) -> Result<(), GgmlError> {
        Err(GgmlError::Unavailable)
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

    #[cfg(feature = "ggml")]
    #[test]
    fn ggml_round_trips_q8_0() {
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

    #[cfg(feature = "ggml")]
    #[test]
    fn ggml_refuses_non_finite_rows() {
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
