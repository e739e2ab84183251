//! One output tensor: the owner of each expert (see [`owners`](super::owners)), then, for
//! each owning parent, where its bytes are in that parent ([`views`]), possibly in another
//! converter layout; then the byte pieces that make the tensor, in output order.

use super::owners::Owners;
use super::{Parent, Piece, PlanError, PlannedTensor};
use crate::ggml_type::GgmlType;
use crate::gguf::TensorInfo;
use crate::roles::views::{self, Conversion, Unavailable, View};

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
        let parent = &parents[p];
        let v = views::view(base_info, &parent.model).map_err(|why| match why {
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
        })?;
        found.push((p, v));
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
    let mut push = |parent: usize, view: &View, experts: std::ops::Range<u64>, cut: bool| {
        let converted = view.conversion() != Conversion::Same;
        for (shard, src_offset, len) in view.ranges(experts.clone()) {
            pieces.push(Piece {
                parent,
                shard,
                src_offset,
                len,
                experts: cut.then(|| experts.clone()),
                converted,
            });
        }
    };
    match owners {
        Owners::Whole(p) if view_of(*p).conversion() == Conversion::Same => {
            // One piece for the whole tensor, however it is cut.
            let v = view_of(*p);
            let src = v.parts()[0].source;
            pieces.push(Piece {
                parent: *p,
                shard: src.shard,
                src_offset: src.file_offset,
                len: v.n_bytes(),
                experts: None,
                converted: false,
            });
        }
        Owners::Whole(p) => {
            // Converted: pieces per expert part, each saying its expert.
            let v = view_of(*p);
            for e in 0..v.count() {
                push(*p, v, e..e + 1, true);
            }
        }
        Owners::Experts(per_expert) => {
            let mut e = 0usize;
            while e < per_expert.len() {
                let p = per_expert[e];
                let run_end = (e..per_expert.len())
                    .find(|&i| per_expert[i] != p)
                    .unwrap_or(per_expert.len());
                let v = view_of(p);
                if v.conversion() == Conversion::Same {
                    push(p, v, e as u64..run_end as u64, true);
                } else {
                    for x in e..run_end {
                        push(p, v, x as u64..x as u64 + 1, true);
                    }
                }
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
    })
}
