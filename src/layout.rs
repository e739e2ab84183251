//! Sizes, padding and alignment: the one place that does arithmetic on numbers read from files.
//!
//! Every function here returns `None` on overflow; callers turn that into an error that names
//! the tensor or file. Nothing else in the crate multiplies or pads header-derived values.

use crate::ggml_type::GgmlType;

/// The alignment ggml uses when a file has no `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;

/// Round `offset` up to a multiple of `alignment` (a power of two).
pub fn pad_to(offset: u64, alignment: u64) -> Option<u64> {
    debug_assert!(alignment.is_power_of_two());
    offset
        .checked_add(alignment - 1)
        .map(|v| v & !(alignment - 1))
}

/// Number of elements of a tensor of these dimensions (1 for a 0-dim scalar, as ggml reads it).
pub fn element_count(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// Bytes of one row (`ne[0]` elements) of a tensor of type `ty`: the row's metadata (ik_llama.cpp
/// row scales) and its blocks. `None` if `ne0` is not a whole number of blocks, on overflow, or
/// for a type without rows (I2_S).
pub fn row_bytes(ty: GgmlType, ne0: u64) -> Option<u64> {
    if ty.tensor_tail_bytes().is_some() || !ne0.is_multiple_of(ty.block_size()) {
        return None;
    }
    (ne0 / ty.block_size())
        .checked_mul(ty.type_size())?
        .checked_add(ty.row_meta_bytes())
}

/// Bytes of a whole tensor: row bytes times every outer dimension (ggml's `ggml_nbytes`). An
/// I2_S tensor is its packed values (4 a byte) and then its scale tail.
pub fn tensor_bytes(ty: GgmlType, dims: &[u64]) -> Option<u64> {
    if let Some(tail) = ty.tensor_tail_bytes() {
        return (element_count(dims)? / 4).checked_add(tail);
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    let outer = element_count(dims.get(1..).unwrap_or(&[]))?;
    row_bytes(ty, ne0)?.checked_mul(outer)
}

/// Bytes of `rows` whole rows of `ne0` elements, taken as a unit of their own (an expert, the
/// gate half of a fused expert). `None` also when `rows` would split a group of interleaved
/// rows (ik_llama.cpp's `_R4`/`_R8` types).
pub fn rows_bytes(ty: GgmlType, ne0: u64, rows: u64) -> Option<u64> {
    if !rows.is_multiple_of(ty.interleaved_rows()) {
        return None;
    }
    row_bytes(ty, ne0)?.checked_mul(rows)
}

/// Bytes of one slice along the outermost dimension (one expert of a stacked `[ne0, ne1,
/// n_expert]` tensor, one row of a 2-D router, one element of a 1-D bias). `None` for a
/// scalar, and where a slice is not a whole number of rows (and row groups) with their row
/// metadata.
pub fn outer_slice_bytes(ty: GgmlType, dims: &[u64]) -> Option<u64> {
    let (&outer, inner) = dims.split_last()?;
    let Some((&ne0, rows)) = inner.split_first() else {
        // A 1-D tensor: each slice is one element; only meaningful for plain, unblocked types.
        let plain = ty.block_size() == 1
            && ty.row_meta_bytes() == 0
            && ty.interleaved_rows() == 1
            && ty.tensor_tail_bytes().is_none();
        return plain.then_some(ty.type_size());
    };
    let bytes = rows_bytes(ty, ne0, element_count(rows)?)?;
    // Guard against a zero outer dimension making every slice look empty.
    (outer > 0).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::Flavour;

    #[test]
    fn pads_up_to_alignment() {
        assert_eq!(pad_to(0, 32), Some(0));
        assert_eq!(pad_to(1, 32), Some(32));
        assert_eq!(pad_to(32, 32), Some(32));
        assert_eq!(pad_to(33, 64), Some(64));
        assert_eq!(pad_to(u64::MAX - 3, 32), None);
    }

    #[test]
    fn tensor_bytes_follow_blocks() {
        // Q4_K: 256 elements in 144 bytes. A [512, 3] tensor is 2 blocks a row, 3 rows.
        assert_eq!(tensor_bytes(GgmlType::Q4_K, &[512, 3]), Some(2 * 144 * 3));
        assert_eq!(tensor_bytes(GgmlType::Q4_K, &[100, 3]), None);
        assert_eq!(tensor_bytes(GgmlType::F32, &[]), Some(4));
        assert_eq!(tensor_bytes(GgmlType::F32, &[u64::MAX, 2]), None);
        assert_eq!(tensor_bytes(GgmlType::F32, &[2, u64::MAX, 2]), None);
    }

    #[test]
    fn outer_slices() {
        // 4 experts of [256, 8] Q3_K: one block (110 bytes) a row, 8 rows each.
        assert_eq!(
            outer_slice_bytes(GgmlType::Q3_K, &[256, 8, 4]),
            Some(110 * 8)
        );
        assert_eq!(outer_slice_bytes(GgmlType::F32, &[16, 4]), Some(64));
        assert_eq!(outer_slice_bytes(GgmlType::F32, &[4]), Some(4));
        assert_eq!(outer_slice_bytes(GgmlType::Q4_K, &[256]), None);
        assert_eq!(outer_slice_bytes(GgmlType::F32, &[]), None);
    }

    #[test]
    fn ik_rows_carry_their_metadata() {
        // IQ4_KS: a 4-byte row scale, then 136 bytes per 256 elements. ik's own build measured
        // 512 rows of 256 at 71 680 bytes (GGUF-NOTES.md; gguf-py's 69 632 lacks the scales).
        let ks = GgmlType::IQ4_KS;
        assert_eq!(row_bytes(ks, 512), Some(4 + 2 * 136));
        assert_eq!(tensor_bytes(ks, &[256, 512]), Some(71_680));
        // One expert of [256, 8, 4] IQ2_KS: 8 rows of (2 + 70) bytes.
        assert_eq!(
            outer_slice_bytes(GgmlType::IQ2_KS, &[256, 8, 4]),
            Some(8 * 72)
        );
        // No row metadata: IQ3_K is plain blocks.
        assert_eq!(tensor_bytes(GgmlType::IQ3_K, &[256, 3]), Some(3 * 110));
        // A 1-D tensor of a type with row metadata has no per-element slice.
        assert_eq!(outer_slice_bytes(ks, &[256]), None);
    }

    #[test]
    fn interleaved_rows_are_cut_in_whole_groups() {
        let r4 = GgmlType::lookup(212, Flavour::Ik).unwrap(); // Q4_K_R4
        assert_eq!(rows_bytes(r4, 256, 8), Some(8 * 144));
        assert_eq!(rows_bytes(r4, 256, 6), None);
        assert_eq!(outer_slice_bytes(r4, &[256, 4, 3]), Some(4 * 144));
        assert_eq!(outer_slice_bytes(r4, &[256, 2, 3]), None);
        // The whole tensor is still rows x row bytes.
        assert_eq!(tensor_bytes(r4, &[256, 2, 3]), Some(6 * 144));
    }

    #[test]
    fn i2s_is_packed_values_and_a_tail() {
        let i2s = GgmlType::lookup(36, Flavour::Ik).unwrap();
        // ik's ggml_nbytes for a [2, 16, 3] I2_S tensor: 96 / 4 + 32.
        assert_eq!(tensor_bytes(i2s, &[2, 16, 3]), Some(56));
        assert_eq!(row_bytes(i2s, 2), None);
        assert_eq!(outer_slice_bytes(i2s, &[2, 16, 3]), None);
    }
}
