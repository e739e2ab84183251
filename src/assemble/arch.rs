//! Which MoE architecture a dense one becomes, and the assembled model's metadata. Read from
//! llama.cpp's `src/models/*.cpp` (11434):
//!
//! - `llama` loads Mixtral-style experts when `llama.expert_count` > 0: `ffn_gate_inp`
//!   `[n_embd, n_expert]` and `ffn_{gate,up,down}_exps` of `feed_forward_length` rows; softmax
//!   gating, the chosen experts' weights normalised to sum to 1.
//! - `qwen3` becomes `qwen3moe`: the same attention (with `attn_q_norm`/`attn_k_norm`), every
//!   key renamed from `qwen3.*` to `qwen3moe.*`, and `expert_feed_forward_length` set to the
//!   dense `feed_forward_length` (without it qwen3moe takes `n_ff / n_expert_used`).
//!   qwen3moe also normalises the top-k weights.
//!
//! For MoE parents the architecture stays; `expert_count` becomes the new count.

use super::Kind;
use crate::gguf::{OwnedValue, ValueType};
use crate::plan::{
    KEY_SPLICE_RECIPE, Parent, PlanValue, inherited, made_by, record_parents, set_kv,
};

/// A dense architecture and the MoE architecture it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeArch {
    /// The dense parents' architecture.
    pub dense: &'static str,
    /// The assembled model's.
    pub moe: &'static str,
    /// Whether the MoE architecture reads the expert FFN size from
    /// `expert_feed_forward_length` (else from `feed_forward_length`).
    pub expert_ff_key: bool,
}

/// Every dense architecture an MoE can be assembled from.
pub const DENSE_TO_MOE: &[MoeArch] = &[
    MoeArch {
        dense: "llama",
        moe: "llama",
        expert_ff_key: false,
    },
    MoeArch {
        dense: "qwen3",
        moe: "qwen3moe",
        expert_ff_key: true,
    },
];

/// The MoE architecture dense `arch` becomes.
pub fn moe_of(arch: &str) -> Option<MoeArch> {
    DENSE_TO_MOE.iter().copied().find(|m| m.dense == arch)
}

/// `llama -> llama, qwen3 -> qwen3moe`, for messages.
pub fn supported() -> String {
    let v: Vec<String> = DENSE_TO_MOE
        .iter()
        .map(|m| format!("{} -> {}", m.dense, m.moe))
        .collect();
    v.join(", ")
}

/// What the metadata of the assembled model says beyond the base's key/values.
pub(crate) struct Counts {
    /// Experts per MoE layer.
    pub expert_count: u64,
    /// Experts used per token; `None`: keep the base's.
    pub experts_used: Option<u64>,
}

/// The assembled model's metadata: the base's key/values raw and in order (split keys and
/// its own `general.base_model.*` aside), renamed to the MoE architecture for dense parents,
/// with `expert_count`, `expert_used_count` (and for qwen3moe `expert_feed_forward_length`),
/// `general.name`, the parents as `general.base_model.*`, and `splice.recipe` recording how
/// it was made (`record`).
pub(crate) fn metadata<'p>(
    parents: &'p [Parent],
    base: usize,
    kind: Kind,
    counts: &Counts,
    record: &str,
) -> (String, Vec<(String, PlanValue<'p>)>) {
    let b = &parents[base];
    let arch = b.model.architecture().unwrap_or("").to_string();
    let mut kvs = inherited(b);
    let out_arch = match (kind, moe_of(&arch)) {
        (Kind::Dense, Some(m)) => {
            if m.moe != m.dense {
                let from = format!("{}.", m.dense);
                for (k, _) in kvs.iter_mut() {
                    if let Some(rest) = k.strip_prefix(&from) {
                        *k = format!("{}.{rest}", m.moe);
                    }
                }
                set_kv(
                    &mut kvs,
                    "general.architecture",
                    PlanValue::Owned(OwnedValue::string(m.moe)),
                );
            }
            if m.expert_ff_key
                && let Some(ff) = b.model.get(&format!("{}.feed_forward_length", m.dense))
            {
                set_kv(
                    &mut kvs,
                    &format!("{}.expert_feed_forward_length", m.moe),
                    PlanValue::Parent(ff),
                );
            }
            m.moe.to_string()
        }
        _ => arch,
    };
    set_kv(
        &mut kvs,
        &format!("{out_arch}.expert_count"),
        PlanValue::Owned(OwnedValue::u32(counts.expert_count as u32)),
    );
    if let Some(k) = counts.experts_used {
        set_kv(
            &mut kvs,
            &format!("{out_arch}.expert_used_count"),
            PlanValue::Owned(OwnedValue::u32(k as u32)),
        );
    }
    let names: Vec<&str> = parents.iter().map(|p| p.name.as_str()).collect();
    let base_name = b
        .model
        .get("general.name")
        .and_then(|v| v.as_str())
        .unwrap_or(&b.name);
    set_kv(
        &mut kvs,
        "general.name",
        PlanValue::Owned(OwnedValue::string(&format!(
            "{base_name} (gguf-splice assemble of {})",
            names.join(" + ")
        ))),
    );
    record_parents(&mut kvs, parents);
    let mut text = made_by(parents);
    text.push_str(record);
    set_kv(
        &mut kvs,
        KEY_SPLICE_RECIPE,
        PlanValue::Owned(OwnedValue::string(&text)),
    );
    (out_arch, kvs)
}

/// An integer hyperparameter of the base (`{arch}.{key}`), as a count; an array (per-layer
/// values) gives its largest element.
pub(crate) fn base_count(parent: &Parent, key: &str) -> Option<u64> {
    let arch = parent.model.architecture()?;
    let v = parent.model.get(&format!("{arch}.{key}"))?;
    if v.ty() == ValueType::Array {
        return v.array_items().filter_map(|x| x.as_u64()).max();
    }
    v.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_architectures_and_their_moe() {
        assert_eq!(moe_of("qwen3").unwrap().moe, "qwen3moe");
        assert!(moe_of("qwen3").unwrap().expert_ff_key);
        assert_eq!(moe_of("llama").unwrap().moe, "llama");
        assert_eq!(moe_of("gemma3"), None);
        assert_eq!(supported(), "llama -> llama, qwen3 -> qwen3moe");
    }
}
