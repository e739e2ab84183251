//! Where the bytes of a tensor, in the child's layout, are found in a parent that may use
//! another converter layout.
//!
//! - Same name, same shape: the tensor itself.
//! - Routed experts, gate and up fused in the parent (`ffn_gate_up_exps`, `[n_embd, 2*n_ff,
//!   n_expert]`) but separate in the child: expert e of `ffn_gate_exps` is the first half of
//!   expert e of the fused tensor (its `n_ff` gate rows), `ffn_up_exps` the second half.
//! - The reverse: expert e of the child's `ffn_gate_up_exps` is the parent's gate expert e
//!   followed by its up expert e. Exact only when gate and up share one type.
//! - MLA attention (`attn_kv_b` against `attn_k_b` + `attn_v_b`) cannot be converted on
//!   quantized bytes (it is a transpose of quantized rows): reported, never guessed.
//!
//! A [`View`] is a list of [`Part`]s: for every expert e, `bytes` bytes at `child_offset` in
//! the child's expert slice come from the source tensor at `source_offset + e *
//! source_stride`. A tensor that is not cut by expert is one slice.

use super::cut::expert_cut;
use super::{ExpertMatrix, classify};
use crate::ggml_type::GgmlType;
use crate::gguf::{Model, TensorInfo, TensorLoc};
use crate::layout;

/// How a parent's tensor was turned into the child's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// The parent has the tensor as it is.
    Same,
    /// The first (gate) or second (up) half of each expert of the parent's `ffn_gate_up_exps`.
    Unfused,
    /// The parent's `ffn_gate_exps` and `ffn_up_exps`, expert by expert, gate first.
    Fused,
}

/// One run of bytes of every expert slice of the child's tensor, found in a parent tensor.
#[derive(Clone, Copy, Debug)]
pub struct Part<'m> {
    /// The parent's tensor the bytes come from.
    pub source: TensorLoc<'m>,
    /// Where the run starts within the child's expert slice.
    pub child_offset: u64,
    /// Where expert 0's run starts within the source tensor.
    pub source_offset: u64,
    /// Distance between the runs of consecutive experts in the source tensor.
    pub source_stride: u64,
    /// Length of the run.
    pub bytes: u64,
}

/// How to read one tensor of the child's layout out of a parent.
///
/// Only [`view`] makes one, from source shapes it has checked against the child's; its parts
/// tile each slice exactly, which the planner and `verify` rely on when they turn it into
/// file offsets. So the fields are private.
#[derive(Clone, Debug)]
pub struct View<'m> {
    conversion: Conversion,
    ty: GgmlType,
    count: u64,
    slice_bytes: u64,
    parts: Vec<Part<'m>>,
}

impl<'m> View<'m> {
    /// What was converted, if anything.
    pub fn conversion(&self) -> Conversion {
        self.conversion
    }

    /// The type of the bytes (the parent's).
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Slices: experts for a tensor cut by expert, else 1.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes of one slice in the child's layout (the whole tensor when `count` is 1).
    pub fn slice_bytes(&self) -> u64 {
        self.slice_bytes
    }

    /// The runs that make each slice, in child order; they tile the slice exactly.
    pub fn parts(&self) -> &[Part<'m>] {
        &self.parts
    }

    /// Bytes of the whole tensor.
    pub fn n_bytes(&self) -> u64 {
        self.count * self.slice_bytes
    }

    /// The byte runs that make slices `experts`, in child order: `(part, shard, absolute file
    /// offset, len)`, adjacent runs of the same source tensor merged.
    pub fn parts_of(&self, experts: std::ops::Range<u64>) -> Vec<(&Part<'_>, usize, u64, u64)> {
        let mut out: Vec<(&Part, usize, u64, u64)> = Vec::new();
        for e in experts {
            for p in &self.parts {
                let at = p.source.file_offset + p.source_offset + e * p.source_stride;
                match out.last_mut() {
                    Some((q, shard, off, len))
                        if std::ptr::eq(q.source.info, p.source.info)
                            && *shard == p.source.shard
                            && *off + *len == at =>
                    {
                        *len += p.bytes
                    }
                    _ => out.push((p, p.source.shard, at, p.bytes)),
                }
            }
        }
        out
    }
}

/// Why a parent cannot provide a tensor of the child's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// No tensor of that name, and no layout it could be converted from.
    Missing,
    /// A tensor of that name with another shape.
    Shape {
        /// The parent's shape.
        found: Vec<u64>,
    },
    /// The parent stores MLA attention in the other layout (`attn_kv_b` vs `attn_k_b` +
    /// `attn_v_b`), which cannot be converted on quantized bytes.
    MlaLayout {
        /// What the parent has instead.
        found: String,
    },
    /// The parent's separate gate and up experts have different types, so they cannot be
    /// written as one fused tensor.
    GateUpTypes {
        /// Type of the parent's `ffn_gate_exps`.
        gate: GgmlType,
        /// Type of the parent's `ffn_up_exps`.
        up: GgmlType,
    },
    /// The other layout exists but its shape does not fit (not twice / half the rows).
    LayoutShape {
        /// The parent tensor tried.
        source: String,
        /// Its shape.
        found: Vec<u64>,
    },
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Missing => write!(f, "no such tensor"),
            Unavailable::Shape { found } => write!(f, "it has shape {found:?}"),
            Unavailable::MlaLayout { found } => write!(
                f,
                "it stores MLA attention in the other layout ({found}); attn_kv_b and attn_k_b/attn_v_b cannot be converted on quantized bytes: reconvert one parent so both use the same layout, or take these tensors from a parent with the base's layout"
            ),
            Unavailable::GateUpTypes { gate, up } => write!(
                f,
                "its separate gate ({gate}) and up ({up}) experts have different types and cannot be fused into one tensor: take the routed experts whole from a parent with the base's layout, or requantize"
            ),
            Unavailable::LayoutShape { source, found } => {
                write!(f, "its {source} has shape {found:?}, which does not fit")
            }
        }
    }
}

fn whole(info: &TensorInfo) -> (u64, u64) {
    match expert_cut(info) {
        Ok(Some(c)) => (c.count(), c.slice_bytes()),
        _ => (1, info.n_bytes),
    }
}

/// How to read the child's tensor `want` (name and shape in the child's layout) out of
/// `parent`.
pub fn view<'m>(want: &TensorInfo, parent: &'m Model) -> Result<View<'m>, Unavailable> {
    if let Some(loc) = parent.tensor(&want.name) {
        if loc.info.dims != want.dims {
            return Err(Unavailable::Shape {
                found: loc.info.dims.clone(),
            });
        }
        let (count, slice_bytes) = whole(loc.info);
        return Ok(View {
            conversion: Conversion::Same,
            ty: loc.info.ty,
            count,
            slice_bytes,
            parts: vec![Part {
                source: loc,
                child_offset: 0,
                source_offset: 0,
                source_stride: slice_bytes,
                bytes: slice_bytes,
            }],
        });
    }
    let class = classify(&want.name);
    // Only weights are converted between layouts: a companion of a fused tensor (one scale
    // per expert for gate and up together) has no separate counterpart, nor the reverse.
    let matrix = match super::unit::suffix(&want.name) {
        Some(super::unit::WEIGHT_SUFFIX) => class.matrix,
        _ => None,
    };
    let sibling = |from: &str, to: &str| want.name.replacen(from, to, 1);
    match matrix {
        Some(m @ (ExpertMatrix::Gate | ExpertMatrix::Up)) => {
            let from = if m == ExpertMatrix::Gate {
                "ffn_gate_exps"
            } else {
                "ffn_up_exps"
            };
            let fused_name = sibling(from, "ffn_gate_up_exps");
            let Some(fused) = parent.tensor(&fused_name) else {
                return Err(Unavailable::Missing);
            };
            let d = &fused.info.dims;
            let fits = d.len() == 3
                && want.dims.len() == 3
                && d[0] == want.dims[0]
                && Some(d[1]) == want.dims[1].checked_mul(2)
                && d[2] == want.dims[2];
            // The child's expert is n_ff whole rows of the parent's (row metadata included).
            let half = fits
                .then(|| layout::rows_bytes(fused.info.ty, want.dims[0], want.dims[1]))
                .flatten();
            let (true, Some(half)) = (fits, half) else {
                return Err(Unavailable::LayoutShape {
                    source: fused_name,
                    found: d.clone(),
                });
            };
            Ok(View {
                conversion: Conversion::Unfused,
                ty: fused.info.ty,
                count: d[2],
                slice_bytes: half,
                parts: vec![Part {
                    source: fused,
                    child_offset: 0,
                    source_offset: if m == ExpertMatrix::Gate { 0 } else { half },
                    source_stride: 2 * half,
                    bytes: half,
                }],
            })
        }
        Some(ExpertMatrix::GateUp) => {
            let gate = parent.tensor(&sibling("ffn_gate_up_exps", "ffn_gate_exps"));
            let up = parent.tensor(&sibling("ffn_gate_up_exps", "ffn_up_exps"));
            let (Some(gate), Some(up)) = (gate, up) else {
                return Err(Unavailable::Missing);
            };
            if gate.info.ty != up.info.ty {
                return Err(Unavailable::GateUpTypes {
                    gate: gate.info.ty,
                    up: up.info.ty,
                });
            }
            let w = &want.dims;
            for part in [gate, up] {
                let d = &part.info.dims;
                let fits = d.len() == 3
                    && w.len() == 3
                    && d[0] == w[0]
                    && d[1].checked_mul(2) == Some(w[1])
                    && d[2] == w[2];
                if !fits {
                    return Err(Unavailable::LayoutShape {
                        source: part.info.name.clone(),
                        found: d.clone(),
                    });
                }
            }
            let half = layout::rows_bytes(gate.info.ty, gate.info.dims[0], gate.info.dims[1])
                .ok_or(Unavailable::LayoutShape {
                    source: gate.info.name.clone(),
                    found: gate.info.dims.clone(),
                })?;
            let part = |source, child_offset| Part {
                source,
                child_offset,
                source_offset: 0,
                source_stride: half,
                bytes: half,
            };
            Ok(View {
                conversion: Conversion::Fused,
                ty: gate.info.ty,
                count: w[2],
                slice_bytes: 2 * half,
                parts: vec![part(gate, 0), part(up, half)],
            })
        }
        _ => Err(mla_other_layout(&want.name, parent).unwrap_or(Unavailable::Missing)),
    }
}

/// If `name` is an MLA attention tensor the parent stores in the other layout, say so.
fn mla_other_layout(name: &str, parent: &Model) -> Option<Unavailable> {
    let (layer, rest) = super::split_block(name);
    let layer = layer?;
    let has = |stem: &str| {
        parent
            .tensor(&format!("blk.{layer}.{stem}.weight"))
            .is_some()
    };
    let found = match rest {
        "attn_k_b.weight" | "attn_v_b.weight" if has("attn_kv_b") => "attn_kv_b",
        "attn_kv_b.weight" if has("attn_k_b") || has("attn_v_b") => "attn_k_b + attn_v_b",
        _ => return None,
    };
    Some(Unavailable::MlaLayout {
        found: found.into(),
    })
}
