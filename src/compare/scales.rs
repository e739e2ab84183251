//! The second-level scales of a weight (its `.scale` companion, see
//! [`roles::unit`](crate::roles::unit)) as `diff --values` applies them: llama.cpp b11434
//! multiplies each expert's matmul result by `scale[e]` (`{n_expert}` beside stacked
//! experts) or the whole result by `scale[0]` (`{1}` beside a plain weight), so the value a
//! model computes with is the dequantized block value times that factor. `.input_scale` is
//! loaded but not applied by b11434's graph, so it is not applied here either.

use super::CompareError;
use super::engine::FileSet;
use crate::ggml_type::GgmlType;
use crate::gguf::Model;
use crate::roles::unit::Units;

/// Where a weight's `.scale` is: file index in the [`FileSet`], absolute offset and count of
/// F32 values.
#[derive(Clone, Copy, Debug)]
pub(super) struct ScaleLoc {
    file: usize,
    offset: u64,
    count: u64,
}

/// The `.scale` companion of weight `name` in `model` (whose first file is `first_file`):
/// `Ok(None)` when it has none, `Err` when it has one that cannot be applied to `slices`
/// slices (not F32, or neither one value nor one per slice).
pub(super) fn locate(
    model: &Model,
    units: &Units,
    name: &str,
    first_file: usize,
    slices: u64,
) -> Result<Option<ScaleLoc>, String> {
    let Some(scale) = units
        .companions(name)
        .iter()
        .find(|c| c.ends_with(".scale"))
    else {
        return Ok(None);
    };
    let t = model
        .tensor(scale)
        .expect("a companion is a tensor of the model");
    let count = t.info.dims.iter().product::<u64>();
    if t.info.ty != GgmlType::F32 || !(count == 1 || count == slices) {
        return Err(format!(
            "its scale {scale} is {} {:?}, not F32 with one value or one per expert ({slices})",
            t.info.ty, t.info.dims
        ));
    }
    Ok(Some(ScaleLoc {
        file: first_file + t.shard,
        offset: t.file_offset,
        count,
    }))
}

/// Read the factors: one per slice (a single value repeated when the scale has one).
pub(super) fn read(
    files: &FileSet,
    loc: ScaleLoc,
    slices: usize,
    tensor: &str,
) -> Result<Vec<f32>, CompareError> {
    let mut raw = vec![0u8; loc.count as usize * 4];
    files.read(loc.file, loc.offset, &mut raw, tensor)?;
    let values: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(if values.len() == 1 {
        vec![values[0]; slices]
    } else {
        values
    })
}
