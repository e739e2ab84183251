//! How a tensor is cut into experts. Stacked routed-expert tensors (`[ne0, ne1, n_expert]`,
//! and their 2-D biases), the router (`[n_embd, n_expert]`: row e scores expert e) and the
//! router bias (`[n_expert]`) are cut along their outermost dimension: expert e is the
//! contiguous byte range `[e * S, (e + 1) * S)`. Everything else is one piece.

use super::{Role, classify};
use crate::gguf::TensorInfo;
use crate::layout;

/// The most experts a tensor may be cut into (DeepSeek V3 has 256). It bounds every
/// per-expert table, whose size otherwise comes from a file's header.
pub const MAX_EXPERTS: u64 = 1 << 16;

/// A tensor cut into `count` equal, contiguous expert slices of `slice_bytes` bytes each.
///
/// Only [`expert_cut`] makes one, having checked that `count` is at most [`MAX_EXPERTS`] and
/// that the slices are non-empty, whole blocks and tile the tensor exactly; callers size
/// per-expert tables by `count` and address bytes by `slice_bytes` on the strength of it, so
/// the fields are private.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertCut {
    count: u64,
    slice_bytes: u64,
}

impl ExpertCut {
    /// Number of experts (the outermost dimension), at most [`MAX_EXPERTS`].
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes of one expert's slice; never 0.
    pub fn slice_bytes(&self) -> u64 {
        self.slice_bytes
    }
}

/// Whether tensors of this name are cut by expert at all: routed experts and the router.
/// (Old per-expert Mixtral tensors are routed experts but already one expert each.)
pub fn is_expert_indexed(name: &str) -> bool {
    let c = classify(name);
    match c.role {
        Role::Router => true,
        Role::RoutedExperts => name.contains("_exps."),
        _ => false,
    }
}

/// Whether a tensor is a stacked routed-expert tensor (as opposed to the router).
pub fn is_stacked_experts(name: &str) -> bool {
    classify(name).role == Role::RoutedExperts && name.contains("_exps.")
}

/// How `info` is cut into experts. `Ok(None)`: it is not an expert-indexed tensor.
/// `Err(reason)`: it is one, but this shape cannot be cut (no whole-block slice per expert,
/// or more than [`MAX_EXPERTS`] experts).
pub fn expert_cut(info: &TensorInfo) -> Result<Option<ExpertCut>, String> {
    if !is_expert_indexed(&info.name) {
        return Ok(None);
    }
    let Some(&count) = info.dims.last() else {
        return Err("a scalar has no experts".into());
    };
    if count > MAX_EXPERTS {
        return Err(format!(
            "{count} experts; at most {MAX_EXPERTS} are supported"
        ));
    }
    match layout::outer_slice_bytes(info.ty, &info.dims) {
        Some(b) if b > 0 && count > 0 && b.checked_mul(count) == Some(info.n_bytes) => {
            Ok(Some(ExpertCut {
                count,
                slice_bytes: b,
            }))
        }
        _ => Err(format!(
            "shape {:?} of type {} has no whole-block, non-empty slice per expert",
            info.dims, info.ty
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;

    fn info(name: &str, dims: &[u64], ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            offset: 0,
            n_bytes: layout::tensor_bytes(ty, dims).unwrap(),
        }
    }

    #[test]
    fn stacked_experts_and_router_are_cut_by_expert() {
        let q = GgmlType::Q4_K;
        let t = info("blk.3.ffn_gate_up_exps.weight", &[256, 4, 8], q);
        assert_eq!(
            expert_cut(&t),
            Ok(Some(ExpertCut {
                count: 8,
                slice_bytes: 4 * 144
            }))
        );
        let r = info("blk.3.ffn_gate_inp.weight", &[256, 8], GgmlType::F32);
        assert_eq!(expert_cut(&r).unwrap().unwrap().slice_bytes(), 1024);
        let b = info("blk.3.exp_probs_b.bias", &[8], GgmlType::F32);
        assert_eq!(expert_cut(&b).unwrap().unwrap().slice_bytes(), 4);
        let s = info("blk.3.ffn_up_shexp.weight", &[256, 4], q);
        assert_eq!(expert_cut(&s), Ok(None));
        let m = info("blk.3.ffn_up.2.weight", &[256, 4], q);
        assert_eq!(expert_cut(&m), Ok(None));
    }

    #[test]
    fn refuses_what_cannot_be_cut() {
        // A 1-D router bias of a blocked type has no whole-block element.
        let b = info("blk.3.exp_probs_b.bias", &[256], GgmlType::Q4_K);
        assert!(expert_cut(&b).is_err());
        // Too many experts: bounded before any table is made.
        let mut t = info("blk.3.ffn_up_exps.weight", &[32, 1, 1], GgmlType::F32);
        t.dims = vec![32, 1, MAX_EXPERTS + 1];
        t.n_bytes = 128 * (MAX_EXPERTS + 1);
        assert!(expert_cut(&t).unwrap_err().contains("at most"));
        // A header whose size does not match its shape is not cut.
        let mut t = info("blk.3.ffn_up_exps.weight", &[32, 1, 4], GgmlType::F32);
        t.n_bytes += 1;
        assert!(expert_cut(&t).is_err());
    }
}
