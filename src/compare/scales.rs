//! The second-level scales of a weight (its `.scale` companion, see
//! [`roles::unit`](crate::roles::unit)) as `diff --values` applies them: llama.cpp b11434
//! multiplies each expert's matmul result by `scale[e]` (`{n_expert}` beside stacked
//! experts) or the whole result by `scale[0]` (`{1}` beside a plain weight), so the value a
//! model computes with is the dequantized block value times that factor. `.input_scale` is
//! loaded but not applied by b11434's graph, so it is not applied here either.

use super::CompareError;
use super::engine::FileSet;
use crate::gguf::Model;
use crate::roles::unit;

/// Where a weight's `.scale` is: file index in the [`FileSet`], absolute offset and count of
/// F32 values.
#[derive(Clone, Copy, Debug)]
pub(super) struct ScaleLoc {
    file: usize,
    offset: u64,
    count: u64,
}

/// Where the `.scale` companion of weight `name` in `model` (whose first file is
/// `first_file`) is ([`unit::scale_of`]): `Ok(None)` when it has none, `Err` when it has one
/// that cannot be applied to `slices` slices.
pub(super) fn locate(
    model: &Model,
    name: &str,
    first_file: usize,
    slices: u64,
) -> Result<Option<ScaleLoc>, String> {
    match unit::scale_of(model, name, slices) {
        Ok(None) => Ok(None),
        Ok(Some(t)) => Ok(Some(ScaleLoc {
            file: first_file + t.shard,
            offset: t.file_offset,
            count: t.info.dims.iter().product(),
        })),
        Err(why) => Err(format!(
            "its scale {}: {why}",
            unit::companion_name(name, "scale").unwrap_or_default()
        )),
    }
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
    Ok(unit::scale_factors(&raw, slices))
}
