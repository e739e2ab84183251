//! The check of a loaded ggml's type table against this crate's, type by type, before a
//! type is used: `blck_size`, `type_size` and `type_name` of `ggml_get_type_traits` must
//! equal [`crate::ggml_type`]'s block size, block bytes and name.
//!
//! The same reads check the layout of `struct ggml_type_traits` as [`super::load`] declares
//! it: `type_name`, `blck_size` and `type_size` read through the struct must equal what
//! `ggml_type_name`, `ggml_blck_size` and `ggml_type_size` return (functions that do not
//! depend on our declaration), `is_quantized` what `ggml_is_quantized` returns, and
//! `to_float` must point into the same library. A library of another layout fails here and
//! its `to_float` is never called.
//!
//! ggml's accessors do not check the id in a release build: an id past the library's
//! `GGML_TYPE_COUNT` would read past its table. So the range is probed first with
//! `ggml_validate_row_data(id, p, 0)`, which does check it (and returns true for a known id
//! with no bytes to validate); ids are only ever appended, so a known id vouches for every
//! smaller one.

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

use super::GgmlError;
use super::load::{Loaded, ToFloat, library_of};
use crate::ggml_type::{GgmlType, Origin};

/// Ids this module keeps a verdict for; mainline ggml is at 42.
pub(super) const MAX_ID: usize = 96;

/// What a checked type gives: its `to_float`, if ggml has one.
pub(super) type Checked = Result<Option<ToFloat>, GgmlError>;

/// Verdicts, one per type id, made on first use.
pub(super) struct Verdicts {
    by_id: [OnceLock<Checked>; MAX_ID],
    /// Ids below this are in the library's table (probed).
    known_below: OnceLock<u32>,
}

impl Verdicts {
    pub(super) fn new() -> Verdicts {
        Verdicts {
            by_id: [const { OnceLock::new() }; MAX_ID],
            known_below: OnceLock::new(),
        }
    }
}

/// What this crate's table says of a type: the values the library must report.
#[derive(Clone, Copy, Debug)]
pub(super) struct Expected {
    pub(super) name: &'static str,
    pub(super) block: u64,
    pub(super) bytes: u64,
}

impl Expected {
    pub(super) fn of(ty: GgmlType) -> Expected {
        Expected {
            name: ty.name(),
            block: ty.block_size(),
            bytes: ty.type_size(),
        }
    }
}

/// Whether `id` is in the library's table.
fn in_range(lib: &Loaded, v: &Verdicts, id: u32) -> bool {
    let below = *v.known_below.get_or_init(|| {
        // The largest id of our table the library knows, plus one. One probe in the usual
        // case (the library is at least as new as our table).
        let mut ids: Vec<u32> = GgmlType::all().map(|t| t.id()).collect();
        ids.sort_unstable();
        let probe = 0u8;
        ids.iter()
            .rev()
            .find(|&&id| {
                // SAFETY: ggml_validate_row_data checks the id's range before anything else;
                // for an id in range and 0 bytes it reads type_size (non-zero for every id
                // of our table, which holds no removed ids) and no data.
                unsafe { (lib.fns.validate_row_data)(id as c_int, (&raw const probe).cast(), 0) }
            })
            .map_or(0, |id| id + 1)
    });
    id < below
}

/// The verdict on `ty` for `lib`, made once.
pub(super) fn check(lib: &Loaded, v: &Verdicts, ty: GgmlType) -> Checked {
    let id = ty.id() as usize;
    if ty.origin() == Origin::Ik || id >= MAX_ID {
        return Err(GgmlError::TypeUnknown {
            library: lib.path.clone(),
            ty,
        });
    }
    v.by_id[id]
        .get_or_init(|| {
            if !in_range(lib, v, ty.id()) {
                return Err(GgmlError::TypeUnknown {
                    library: lib.path.clone(),
                    ty,
                });
            }
            check_traits(lib, ty, Expected::of(ty))
        })
        .clone()
}

/// Compare the library's traits of `ty` (an id in its range) with `want`.
pub(super) fn check_traits(lib: &Loaded, ty: GgmlType, want: Expected) -> Checked {
    let id = ty.id() as c_int;
    let mismatch = |field: &'static str, ours: String, theirs: String| GgmlError::TableMismatch {
        library: lib.path.clone(),
        ty,
        field,
        ours,
        theirs,
    };
    // SAFETY: `id` is in the library's table (checked by the caller); each accessor reads
    // its static, never-freed entry.
    let (t, name_fn, block_fn, size_fn, quantized_fn) = unsafe {
        (
            &*(lib.fns.get_type_traits)(id),
            (lib.fns.type_name)(id),
            (lib.fns.blck_size)(id),
            (lib.fns.type_size)(id),
            (lib.fns.is_quantized)(id),
        )
    };
    if t.type_name != name_fn
        || t.blck_size != block_fn
        || t.type_size != size_fn
        || t.is_quantized != quantized_fn
    {
        return Err(mismatch(
            "struct ggml_type_traits layout",
            "the fields of ggml.h (llama.cpp b11434, ggml 0.20.2)".into(),
            format!(
                "fields that disagree with ggml_type_name/ggml_blck_size/ggml_type_size \
                 (blck_size {} vs {block_fn}, type_size {} vs {size_fn})",
                t.blck_size, t.type_size
            ),
        ));
    }
    let name = if name_fn.is_null() {
        String::new()
    } else {
        // SAFETY: ggml's type names are static NUL-terminated strings.
        unsafe { CStr::from_ptr(name_fn) }
            .to_string_lossy()
            .into_owned()
    };
    if !name.eq_ignore_ascii_case(want.name) {
        return Err(mismatch("type_name", want.name.into(), name));
    }
    if block_fn < 0 || block_fn as u64 != want.block {
        return Err(mismatch(
            "blck_size",
            want.block.to_string(),
            block_fn.to_string(),
        ));
    }
    if size_fn as u64 != want.bytes {
        return Err(mismatch(
            "type_size",
            want.bytes.to_string(),
            size_fn.to_string(),
        ));
    }
    if let Some(f) = t.to_float {
        let home = library_of(lib.fns.get_type_traits as *const c_void).map(|(_, base)| base);
        let there = library_of(f as *const c_void).map(|(_, base)| base);
        if home.is_none() || home != there {
            return Err(mismatch(
                "to_float",
                "a function of this library".into(),
                format!("{:p}", f as *const c_void),
            ));
        }
    }
    Ok(t.to_float)
}
