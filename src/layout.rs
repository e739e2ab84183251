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

/// Bytes of one row (`ne[0]` elements) of a tensor of type `ty`; `None` if `ne0` is not a
/// whole number of blocks or on overflow.
pub fn row_bytes(ty: GgmlType, ne0: u64) -> Option<u64> {
    if !ne0.is_multiple_of(ty.block_size()) {
        return None;
    }
    (ne0 / ty.block_size()).checked_mul(ty.type_size())
}

/// Bytes of a whole tensor: row bytes times every outer dimension.
pub fn tensor_bytes(ty: GgmlType, dims: &[u64]) -> Option<u64> {
    let ne0 = dims.first().copied().unwrap_or(1);
    let outer = element_count(dims.get(1..).unwrap_or(&[]))?;
    row_bytes(ty, ne0)?.checked_mul(outer)
}

/// Bytes of one slice along the outermost dimension (one expert of a stacked `[ne0, ne1,
/// n_expert]` tensor, one row of a 2-D router, one element of a 1-D bias). `None` for a scalar.
pub fn outer_slice_bytes(ty: GgmlType, dims: &[u64]) -> Option<u64> {
    let (&outer, inner) = dims.split_last()?;
    if inner.is_empty() {
        // A 1-D tensor: each slice is one element; only meaningful for unblocked types.
        return (ty.block_size() == 1).then_some(ty.type_size());
    }
    let bytes = tensor_bytes(ty, inner)?;
    // Guard against a zero outer dimension making every slice look empty.
    (outer > 0).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
