//! Mixing weights a `.scale` companion scales (NVFP4's second-level scale, see
//! [`roles::unit`](crate::roles::unit)). llama.cpp b11434 multiplies a weight's matmul result
//! by its `.scale` (`{1}`, or `{n_expert}` beside stacked experts), so the value a parent
//! computes with is `to_float(block) × scale[e]`:
//! - a mix reads each parent's factors here ([`factors`]) and multiplies them into the
//!   dequantized rows before the weight (see [`crate::mix`]), for the job and for the
//!   distances a threshold measures;
//! - the child's `.scale` follows the weight's pieces ([`plan_companion`]): 1.0 (made bytes)
//!   for experts a job computed, whose values already hold the parents' scales; the parent's
//!   element for experts copied or kept from it;
//! - the child's `.input_scale` (loaded but not applied by b11434's graph): the parent's for
//!   experts copied from it; for a computed expert, the parents' common value, and a refusal
//!   ([`PlanError::MixInputScaleDiffers`]) when they differ, since no value is right then.

use std::ops::Range;
use std::sync::Arc;

use super::tensors::{copy_pieces, parent_view};
use super::{Made, Parent, Piece, PlanError, PlannedTensor, Source};
use crate::ggml_type::GgmlType;
use crate::gguf::TensorInfo;
use crate::mix::MixError;
use crate::roles::unit;
use crate::roles::views::View;

/// The origin of the made `.scale` bytes of mixed experts, for reports and `verify`.
pub const MIXED_SCALE: &str = "scale 1.0 of mixed values";

/// Read `name`'s values from `parent` as F32 (checked by the caller).
fn read_f32(parent: &Parent, name: &str) -> Result<Vec<f32>, MixError> {
    let t = parent.model.tensor(name).expect("checked by the caller");
    let shard = &parent.model.shards()[t.shard];
    let read = |e: String| MixError::Read {
        tensor: name.to_string(),
        parent: parent.name.clone(),
        path: shard.path.clone(),
        offset: t.file_offset,
        source: std::io::Error::other(e),
    };
    let mut raw = vec![0u8; t.info.n_bytes as usize];
    shard
        .open_source()
        .map_err(|e| read(e.to_string()))?
        .read_exact_at(&mut raw, t.file_offset)
        .map_err(|e| read(e.to_string()))?;
    Ok(unit::scale_factors(&raw, 1))
}

/// The matrices (experts) of `info`: its rows over the rows of one matrix.
fn matrices(info: &TensorInfo) -> u64 {
    let total: u64 = info.dims.iter().skip(1).product();
    total / info.dims.get(1).copied().unwrap_or(1).max(1)
}

/// Parent `parent`'s `.scale` factors of weight `info` (the child's tensor, which `view`
/// reads in the parent) for `experts` (all: `None`), as
/// [`Input::scales`](crate::mix::Input::scales) takes them; `None` when the parent has no
/// `.scale` beside it. A parent that stores the weight fused (`ffn_gate_up_exps`) scales both
/// halves of an expert by its one scale; one that stores the halves separately, each with
/// its own scale, is refused for a fused child. `origin` names the mix rule.
pub(super) fn factors(
    parent: &Parent,
    info: &TensorInfo,
    view: &View,
    experts: &Option<Range<u64>>,
    origin: &str,
) -> Result<Option<Vec<f32>>, PlanError> {
    let mut sources: Vec<&str> = view
        .parts()
        .iter()
        .map(|x| x.source.info.name.as_str())
        .collect();
    sources.dedup();
    let scales: Vec<String> = sources
        .iter()
        .filter_map(|s| unit::companion_name(s, "scale"))
        .filter(|c| parent.model.tensor(c).is_some())
        .collect();
    let name = match (sources.as_slice(), scales.as_slice()) {
        (_, []) => return Ok(None),
        ([_], [one]) => one.clone(),
        (_, [first, ..]) => {
            return Err(PlanError::MixScaleUnusable {
                origin: origin.to_string(),
                tensor: info.name.clone(),
                scale: first.clone(),
                parent: parent.name.clone(),
                found: format!(
                    "it is one of the scales of {} (another layout, whose halves have scales of their own)",
                    sources.join(" and ")
                ),
                matrices: matrices(info),
            });
        }
    };
    let n = matrices(info);
    let source = unit::head_name(&name).expect("a companion's weight");
    if let Err(found) = unit::scale_of(&parent.model, &source, n) {
        return Err(PlanError::MixScaleUnusable {
            origin: origin.to_string(),
            tensor: info.name.clone(),
            scale: name,
            parent: parent.name.clone(),
            found,
            matrices: n,
        });
    }
    let values = read_f32(parent, &name).map_err(|source| PlanError::Measure {
        origin: origin.to_string(),
        source,
    })?;
    // A NaN or infinite scale makes every value of its expert NaN or infinite: no quantizer
    // can write it (NVFP4's would write zeros), so it is refused here, naming the element.
    if let Some((e, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(PlanError::MixScaleUnusable {
            origin: origin.to_string(),
            tensor: info.name.clone(),
            scale: name,
            parent: parent.name.clone(),
            found: format!("its element {e} is {v}, not a finite number"),
            matrices: n,
        });
    }
    Ok(Some(match experts {
        Some(e) if values.len() > 1 => values[e.start as usize..e.end as usize].to_vec(),
        _ => values,
    }))
}

/// Plan companion `info` (`.scale` or `.input_scale`, the base's tensor) of a weight a mix
/// rule owns, from the weight's planned pieces. `origin(p)` names what chose parent `p`;
/// `rule` names the mix rule.
pub(super) fn plan_companion(
    parents: &[Parent],
    base: usize,
    info: &TensorInfo,
    weight: &PlannedTensor,
    origin: &dyn Fn(usize) -> String,
    rule: &str,
) -> Result<PlannedTensor, PlanError> {
    let input_scale = unit::suffix(&info.name) == Some("input_scale");
    let count = info.dims.iter().product::<u64>();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut last: Option<(Option<Range<u64>>, Option<usize>)> = None;
    for wp in &weight.pieces {
        // Part of one expert (a converted layout) gives no piece of its own.
        let key = (wp.experts.clone(), wp.parent());
        if last.as_ref() == Some(&key) {
            continue;
        }
        last = Some(key);
        let experts = wp.experts.clone().filter(|_| count > 1);
        let copy_from = match &wp.source {
            Source::Parent(b) => b.parent,
            Source::Made(_) => unreachable!("a splice makes no weight bytes"),
            Source::Mix(job) if input_scale => {
                let inputs: Vec<usize> = job.inputs.iter().map(|i| i.parent).collect();
                same_input_scale(parents, info, &inputs, &experts, rule)?;
                inputs[0]
            }
            Source::Mix(_) => {
                let n = experts.as_ref().map_or(count, |e| e.end - e.start);
                let one = 1.0f32.to_le_bytes();
                let bytes: Vec<u8> = (0..n).flat_map(|_| one).collect();
                pieces.push(Piece {
                    len: bytes.len() as u64,
                    source: Source::Made(Made {
                        bytes: Arc::from(bytes),
                        origin: MIXED_SCALE.to_string(),
                    }),
                    experts,
                    converted: false,
                });
                continue;
            }
        };
        let view = parent_view(parents, base, info, copy_from, origin)?;
        copy_pieces(copy_from, &view, experts, &mut pieces);
    }
    let n_bytes = info.n_bytes;
    debug_assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), n_bytes);
    Ok(PlannedTensor {
        info: TensorInfo {
            name: info.name.clone(),
            dims: info.dims.clone(),
            ty: info.ty,
            offset: 0,
            n_bytes,
        },
        out_shard: 0,
        pieces,
        conversion: crate::roles::views::Conversion::Same,
        mix: None,
    })
}

/// The mixed parents `inputs` must hold the same `.input_scale` bytes for `experts`.
fn same_input_scale(
    parents: &[Parent],
    info: &TensorInfo,
    inputs: &[usize],
    experts: &Option<Range<u64>>,
    rule: &str,
) -> Result<(), PlanError> {
    let mut values: Vec<(usize, Vec<f32>)> = Vec::new();
    for &p in inputs {
        let t = parents[p].model.tensor(&info.name);
        let v = match t {
            Some(t) if t.info.ty == GgmlType::F32 && t.info.dims == info.dims => {
                read_f32(&parents[p], &info.name).map_err(|source| PlanError::Measure {
                    origin: rule.to_string(),
                    source,
                })?
            }
            // Not comparable as values: refused with what it is.
            _ => Vec::new(),
        };
        values.push((p, v));
    }
    let range = experts.clone().unwrap_or(0..info.dims.iter().product());
    for e in range {
        let at = |v: &Vec<f32>| v.get(e as usize).map(|x| x.to_bits());
        if values
            .iter()
            .all(|(_, v)| at(v).is_some() && at(v) == at(&values[0].1))
        {
            continue;
        }
        let shown: Vec<String> = values
            .iter()
            .map(|(p, v)| {
                let x = v
                    .get(e as usize)
                    .map_or("no F32 value of that shape".to_string(), |x| x.to_string());
                format!("{} {x}", parents[*p].name)
            })
            .collect();
        return Err(PlanError::MixInputScaleDiffers {
            origin: rule.to_string(),
            tensor: info.name.clone(),
            expert: e,
            values: shown.join(", "),
        });
    }
    Ok(())
}
