//! The tensors of an assembled MoE, in the base's order, each with the pieces that make it:
//! - routed-expert tensors (and, for MoE parents, router rows and router bias elements) cut
//!   expert by expert from each parent through its [`View`] (so a parent that stores gate and
//!   up fused is read in the base's layout), output expert e from the parent and expert the
//!   layer's list names;
//! - for dense parents, `ffn_{gate,up,down}` of each parent stacked whole as one expert of
//!   `ffn_*_exps`, and a made router placed before the block's first expert tensor;
//! - everything else whole from the base.

use std::sync::Arc;

use super::{AssembleError, Kind};
use crate::gguf::{TensorInfo, TensorLoc};
use crate::layout;
use crate::plan::{LayerExperts, Made, Parent, ParentBytes, Piece, PlannedTensor, Source};
use crate::roles::views::{self, Conversion, View};
use crate::roles::{self, Role, cut, unit};

/// What the tensor planner needs to know.
pub(crate) struct Inputs<'a> {
    pub parents: &'a [Parent],
    pub base: usize,
    pub kind: Kind,
    /// Every MoE layer of the output and its experts.
    pub layers: &'a [LayerExperts],
    /// For dense parents: each layer's router bytes (same order as `layers`) and their origin.
    pub routers: Option<(Vec<Vec<u8>>, String)>,
}

/// Plan every output tensor.
pub(crate) fn plan(inp: &Inputs) -> Result<Vec<PlannedTensor>, AssembleError> {
    let base = &inp.parents[inp.base].model;
    let mut out = Vec::with_capacity(base.tensor_count());
    let mut router_done: Vec<u64> = Vec::new();
    for t in base.tensors() {
        let name = &t.info.name;
        let class = roles::classify(name);
        let layer = class
            .layer
            .and_then(|l| inp.layers.iter().position(|x| x.layer == l));
        match (inp.kind, layer) {
            // A dense FFN weight's per-tensor scales ({1}) become the per-expert scales
            // ({n_expert}) of the stacked tensor, one element per parent.
            (Kind::Dense, Some(li)) if dense_scale(name, t.info).is_some() => {
                out.push(stack_dense(inp, li, t)?);
            }
            (Kind::Dense, Some(li)) if roles::dense_ffn_matrix(name).is_some() => {
                let l = inp.layers[li].layer;
                if !router_done.contains(&l) {
                    router_done.push(l);
                    out.push(made_router(inp, li, t.info)?);
                }
                out.push(stack_dense(inp, li, t)?);
            }
            (Kind::Dense, _) if class.role == Role::DenseFfn => {
                return Err(AssembleError::DenseFfnBias {
                    parent: inp.parents[inp.base].name.clone(),
                    tensor: name.clone(),
                });
            }
            (Kind::Moe, Some(li))
                if cut::is_stacked_experts(name) || class.role == Role::Router =>
            {
                out.push(stack_experts(inp, li, t.info)?);
            }
            (Kind::Moe, _) if class.role == Role::RoutedExperts => {
                return Err(AssembleError::PerExpertLayout {
                    parent: inp.parents[inp.base].name.clone(),
                    tensor: name.clone(),
                });
            }
            _ => out.push(whole(inp.base, t)),
        }
    }
    Ok(out)
}

fn whole(parent: usize, t: TensorLoc) -> PlannedTensor {
    PlannedTensor {
        info: TensorInfo {
            offset: 0,
            ..t.info.clone()
        },
        out_shard: 0,
        pieces: vec![Piece {
            source: Source::Parent(ParentBytes {
                parent,
                shard: t.shard,
                offset: t.file_offset,
                tensor: t.info.name.clone(),
                experts: None,
            }),
            len: t.info.n_bytes,
            experts: None,
            converted: false,
        }],
        conversion: Conversion::Same,
        mix: None,
    }
}

fn overflow(tensor: &str) -> AssembleError {
    AssembleError::Overflow {
        tensor: tensor.to_string(),
    }
}

/// The router of a layer of an MoE made from dense parents: F32 `[n_embd, n_expert]`.
fn made_router(inp: &Inputs, li: usize, ffn: &TensorInfo) -> Result<PlannedTensor, AssembleError> {
    let layer = &inp.layers[li];
    let (bytes, origin) = inp.routers.as_ref().expect("dense assemblies make routers");
    let bytes: Arc<[u8]> = Arc::from(bytes[li].as_slice());
    let name = roles::router_name(layer.layer);
    // The rows are as long as the FFN's input: n_embd (ffn_up/ffn_gate ne0, ffn_down ne1).
    let n_embd = match roles::dense_ffn_matrix(&ffn.name) {
        Some(roles::ExpertMatrix::Down) => ffn.dims.get(1).copied(),
        _ => ffn.dims.first().copied(),
    }
    .unwrap_or(0);
    let dims = vec![n_embd, layer.experts.len() as u64];
    let n_bytes = layout::tensor_bytes(crate::ggml_type::GgmlType::F32, &dims)
        .ok_or_else(|| overflow(&name))?;
    if n_bytes != bytes.len() as u64 {
        return Err(AssembleError::RouterSize {
            tensor: name,
            expected: n_bytes,
            found: bytes.len() as u64,
        });
    }
    Ok(PlannedTensor {
        info: TensorInfo {
            name,
            dims,
            ty: crate::ggml_type::GgmlType::F32,
            offset: 0,
            n_bytes,
        },
        out_shard: 0,
        pieces: vec![Piece {
            source: Source::Made(Made {
                bytes,
                origin: format!("router {origin}"),
            }),
            len: n_bytes,
            experts: None,
            converted: false,
        }],
        conversion: Conversion::Same,
        mix: None,
    })
}

/// `ffn_X_exps` of a layer from the dense `ffn_X` of each expert's parent, stacked whole.
/// For a `.scale` or `.input_scale` of shape `{1}` beside a dense FFN weight: its matrix and
/// suffix.
fn dense_scale<'n>(name: &'n str, info: &TensorInfo) -> Option<(roles::ExpertMatrix, &'n str)> {
    let head = unit::head_name(name)?;
    let matrix = roles::dense_ffn_matrix(&head)?;
    (unit::is_scale(name) && info.dims == [1]).then(|| (matrix, unit::suffix(name).unwrap_or("")))
}

fn stack_dense(inp: &Inputs, li: usize, t: TensorLoc) -> Result<PlannedTensor, AssembleError> {
    let layer = &inp.layers[li];
    let scale = dense_scale(&t.info.name, t.info);
    let name = match scale {
        Some((matrix, suffix)) => {
            unit::companion_name(&roles::stacked_experts_name(layer.layer, matrix), suffix)
                .expect("a stacked experts name is a weight's")
        }
        None => roles::stacked_experts_name(
            layer.layer,
            roles::dense_ffn_matrix(&t.info.name).expect("the caller checked"),
        ),
    };
    let mut pieces = Vec::with_capacity(layer.experts.len());
    for (e, src) in layer.experts.iter().enumerate() {
        let p = &inp.parents[src.parent];
        let loc = p
            .model
            .tensor(&t.info.name)
            .ok_or_else(|| AssembleError::TensorMissing {
                parent: p.name.clone(),
                tensor: t.info.name.clone(),
            })?;
        if loc.info.ty != t.info.ty || loc.info.dims != t.info.dims {
            return Err(AssembleError::Incompatible {
                reasons: super::compat::check(inp.parents, inp.base, inp.kind),
            });
        }
        pieces.push(Piece {
            source: Source::Parent(ParentBytes {
                parent: src.parent,
                shard: loc.shard,
                offset: loc.file_offset,
                tensor: t.info.name.clone(),
                experts: None,
            }),
            len: loc.info.n_bytes,
            experts: Some(e as u64..e as u64 + 1),
            converted: false,
        });
    }
    let n = layer.experts.len() as u64;
    let dims = match scale {
        // One scale per expert, as llama.cpp loads `ffn_*_exps.scale`: `{n_expert}`.
        Some(_) => vec![n],
        None => [t.info.dims.as_slice(), &[n]].concat(),
    };
    let n_bytes = t
        .info
        .n_bytes
        .checked_mul(n)
        .ok_or_else(|| overflow(&name))?;
    Ok(PlannedTensor {
        info: TensorInfo {
            name,
            dims,
            ty: t.info.ty,
            offset: 0,
            n_bytes,
        },
        out_shard: 0,
        pieces,
        conversion: Conversion::Same,
        mix: None,
    })
}

/// A stacked expert tensor, router or router bias of an MoE layer, expert by expert from the
/// parents the layer's list names, each read through its view in the base's layout.
fn stack_experts(
    inp: &Inputs,
    li: usize,
    base_info: &TensorInfo,
) -> Result<PlannedTensor, AssembleError> {
    let layer = &inp.layers[li];
    let name = &base_info.name;
    let mut views: Vec<(usize, View)> = Vec::new();
    for src in &layer.experts {
        if views.iter().any(|(p, _)| *p == src.parent) {
            continue;
        }
        let parent = &inp.parents[src.parent];
        let count = super::compat::expert_count(&parent.model, layer.layer).unwrap_or(0);
        let mut dims = base_info.dims.clone();
        if let Some(last) = dims.last_mut() {
            *last = count;
        }
        let want = TensorInfo {
            dims,
            ..base_info.clone()
        };
        let v = views::view(&want, &parent.model).map_err(|why| AssembleError::Unavailable {
            parent: parent.name.clone(),
            tensor: name.clone(),
            reason: why.to_string(),
        })?;
        views.push((src.parent, v));
    }
    let (first_parent, first) = &views[0];
    for (p, v) in &views[1..] {
        if v.ty() != first.ty() || v.slice_bytes() != first.slice_bytes() {
            return Err(AssembleError::TypesDiffer {
                tensor: name.clone(),
                first: inp.parents[*first_parent].name.clone(),
                first_type: first.ty(),
                second: inp.parents[*p].name.clone(),
                second_type: v.ty(),
            });
        }
    }
    let view_of = |p: usize| &views.iter().find(|(q, _)| *q == p).expect("viewed").1;
    let mut pieces = Vec::new();
    let n = layer.experts.len();
    let mut e = 0usize;
    while e < n {
        let src = &layer.experts[e];
        let start = src.expert.expect("MoE parents name experts");
        let v = view_of(src.parent);
        // A run: consecutive output experts from consecutive experts of one parent (a view
        // that converts a layout is taken one expert at a time).
        let mut end = e + 1;
        while v.conversion() == Conversion::Same
            && end < n
            && layer.experts[end].parent == src.parent
            && layer.experts[end].expert == Some(start + (end - e) as u64)
        {
            end += 1;
        }
        let out = e as u64..end as u64;
        let from = start..start + (end - e) as u64;
        for (part, shard, offset, len) in v.parts_of(from.clone()) {
            pieces.push(Piece {
                source: Source::Parent(ParentBytes {
                    parent: src.parent,
                    shard,
                    offset,
                    tensor: part.source.info.name.clone(),
                    experts: Some(from.clone()),
                }),
                len,
                experts: Some(out.clone()),
                converted: v.conversion() != Conversion::Same,
            });
        }
        e = end;
    }
    let mut dims = base_info.dims.clone();
    if let Some(last) = dims.last_mut() {
        *last = n as u64;
    }
    let n_bytes = first
        .slice_bytes()
        .checked_mul(n as u64)
        .ok_or_else(|| overflow(name))?;
    let conversion = views
        .iter()
        .map(|(_, v)| v.conversion())
        .find(|c| *c != Conversion::Same)
        .unwrap_or(Conversion::Same);
    Ok(PlannedTensor {
        info: TensorInfo {
            name: name.clone(),
            dims,
            ty: first.ty(),
            offset: 0,
            n_bytes,
        },
        out_shard: 0,
        pieces,
        conversion,
        mix: None,
    })
}
