//! One output tensor: the owner of each expert (see [`owners`](super::owners)), then, for
//! each owning parent, where its bytes are in that parent ([`views`]), possibly in another
//! converter layout; then the byte pieces that make the tensor, in output order.

use std::ops::Range;

use super::owners::Owners;
use super::{Parent, ParentBytes, Piece, PlanError, PlannedTensor, Source};
use crate::ggml_type::GgmlType;
use crate::gguf::TensorInfo;
use crate::roles::views::{self, Conversion, Unavailable, View};

/// Parent `p`'s view of the child's tensor `base_info`, or the error that names why it has
/// none. `origin` names what asked for the parent (the rule), for messages.
pub(super) fn parent_view<'p>(
    parents: &'p [Parent],
    base: usize,
    base_info: &TensorInfo,
    p: usize,
    origin: &dyn Fn(usize) -> String,
) -> Result<View<'p>, PlanError> {
    let name = &base_info.name;
    let parent = &parents[p];
    views::view(base_info, &parent.model).map_err(|why| match why {
        Unavailable::Missing => PlanError::TensorMissing {
            origin: origin(p),
            tensor: name.clone(),
            parent: parent.name.clone(),
            path: parent.model.path().to_path_buf(),
            hint: String::new(),
        },
        Unavailable::Shape { found } => PlanError::ShapeMismatch {
            tensor: name.clone(),
            base: parents[base].name.clone(),
            base_shape: base_info.dims.clone(),
            parent: parent.name.clone(),
            shape: found,
            hint: String::new(),
        },
        why => PlanError::LayoutNotConvertible {
            origin: origin(p),
            tensor: name.clone(),
            parent: parent.name.clone(),
            path: parent.model.path().to_path_buf(),
            reason: why.to_string(),
        },
    })
}

/// The pieces that copy `experts` of `view` (parent `parent`): one whole-tensor piece for
/// an unconverted tensor taken whole (`experts` `None`), else pieces per run of experts
/// (per expert when converted), each saying its experts.
pub(super) fn copy_pieces(
    parent: usize,
    view: &View,
    experts: Option<Range<u64>>,
    pieces: &mut Vec<Piece>,
) {
    let converted = view.conversion() != Conversion::Same;
    let mut push = |experts: Range<u64>| {
        for (part, shard, offset, len) in view.parts_of(experts.clone()) {
            pieces.push(Piece {
                source: Source::Parent(ParentBytes {
                    parent,
                    shard,
                    offset,
                    tensor: part.source.info.name.clone(),
                    experts: Some(experts.clone()),
                }),
                len,
                experts: Some(experts.clone()),
                converted,
            });
        }
    };
    match experts {
        None if !converted => {
            // One piece for the whole tensor, however it is cut.
            let src = view.parts()[0].source;
            pieces.push(Piece {
                source: Source::Parent(ParentBytes {
                    parent,
                    shard: src.shard,
                    offset: src.file_offset,
                    tensor: src.info.name.clone(),
                    experts: None,
                }),
                len: view.n_bytes(),
                experts: None,
                converted: false,
            });
        }
        // Converted: pieces per expert part, each saying its expert.
        None => (0..view.count()).for_each(|e| push(e..e + 1)),
        Some(r) if !converted => push(r),
        Some(r) => r.for_each(|e| push(e..e + 1)),
    }
}

/// Plan the tensor `base_info` (the base's name and shape) from `owners`. `origin` names
/// what asked for the parents (the rule), for messages.
pub(super) fn plan_tensor(
    parents: &[Parent],
    base: usize,
    base_info: &TensorInfo,
    owners: &Owners,
    origin: &dyn Fn(usize) -> String,
) -> Result<PlannedTensor, PlanError> {
    let name = &base_info.name;
    let contributors = owners.parents();
    let mut found: Vec<(usize, View)> = Vec::with_capacity(contributors.len());
    for &p in &contributors {
        found.push((p, parent_view(parents, base, base_info, p, origin)?));
    }

    let ty: GgmlType = found[0].1.ty();
    for (p, v) in &found[1..] {
        if v.ty() != ty {
            return Err(PlanError::ExpertTypeMismatch {
                tensor: name.clone(),
                first: parents[found[0].0].name.clone(),
                first_type: ty.to_string(),
                second: parents[*p].name.clone(),
                second_type: v.ty().to_string(),
            });
        }
    }
    let view_of = |p: usize| &found.iter().find(|(q, _)| *q == p).expect("owner").1;
    let conversion = found
        .iter()
        .map(|(_, v)| v.conversion())
        .find(|c| *c != Conversion::Same)
        .unwrap_or(Conversion::Same);

    let mut pieces: Vec<Piece> = Vec::new();
    match owners {
        Owners::Whole(p) => copy_pieces(*p, view_of(*p), None, &mut pieces),
        Owners::Experts(per_expert) => {
            let mut e = 0usize;
            while e < per_expert.len() {
                let p = per_expert[e];
                let run_end = (e..per_expert.len())
                    .find(|&i| per_expert[i] != p)
                    .unwrap_or(per_expert.len());
                copy_pieces(p, view_of(p), Some(e as u64..run_end as u64), &mut pieces);
                e = run_end;
            }
        }
    }
    let n_bytes = found[0].1.n_bytes();
    debug_assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), n_bytes);
    Ok(PlannedTensor {
        info: TensorInfo {
            name: name.clone(),
            dims: base_info.dims.clone(),
            ty,
            offset: 0,
            n_bytes,
        },
        out_shard: 0,
        pieces,
        conversion,
        mix: None,
    })
}
