//! Whether parents can be spliced: one architecture, the same structural hyperparameters;
//! warnings when the tokenizer or chat template differs.

use super::{KEY_CHAT_TEMPLATE, Parent, PlanError};
use crate::gguf::ValueRef;

/// Keys whose values decide tensor shapes; parents that differ in them are different models.
pub const STRUCTURAL_KEYS: &[&str] = &[
    "block_count",
    "embedding_length",
    "feed_forward_length",
    "expert_feed_forward_length",
    "expert_shared_feed_forward_length",
    "expert_count",
    "expert_shared_count",
    "leading_dense_block_count",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.key_length_mla",
    "attention.value_length_mla",
    "attention.q_lora_rank",
    "attention.kv_lora_rank",
    "rope.dimension_count",
    "vocab_size",
];

/// Whether two parents agree on a hyperparameter: both lack it, or both hold it, equal as
/// integers whatever their widths (a u32 and a u64 of one value agree) or else equal.
pub(crate) fn same_value(a: Option<ValueRef>, b: Option<ValueRef>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => match (x.as_u64(), y.as_u64()) {
            (Some(m), Some(n)) => m == n,
            _ => x == y,
        },
        _ => false,
    }
}

/// A hyperparameter's value for an error message ("no such key" when absent).
pub(crate) fn show_value(v: Option<ValueRef>) -> String {
    v.map_or("no such key".into(), |v| v.summary(4))
}

/// `template_set`: the recipe chooses the chat template itself, so differing templates are
/// not worth a warning.
pub(super) fn check_compatible(
    parents: &[Parent],
    base: usize,
    template_set: bool,
    warnings: &mut Vec<String>,
) -> Result<(), PlanError> {
    let b = &parents[base];
    let base_arch = b.model.architecture().unwrap_or("").to_string();
    for p in parents.iter().filter(|p| p.name != b.name) {
        let arch = p.model.architecture().unwrap_or("").to_string();
        if arch != base_arch {
            return Err(PlanError::ArchitectureMismatch {
                base: b.name.clone(),
                base_path: b.model.path().to_path_buf(),
                base_arch,
                parent: p.name.clone(),
                path: p.model.path().to_path_buf(),
                arch,
            });
        }
        for suffix in STRUCTURAL_KEYS {
            let key = format!("{base_arch}.{suffix}");
            let (bv, pv) = (b.model.get(&key), p.model.get(&key));
            if !same_value(bv, pv) {
                return Err(PlanError::HyperparameterMismatch {
                    key,
                    base: b.name.clone(),
                    base_value: show_value(bv),
                    parent: p.name.clone(),
                    value: show_value(pv),
                });
            }
        }
        let differing: Vec<&str> = b
            .model
            .first()
            .kvs()
            .iter()
            .filter(|kv| kv.key.starts_with("tokenizer.ggml."))
            .filter(|kv| p.model.get(&kv.key) != Some(b.model.first().value(kv)))
            .map(|kv| kv.key.as_str())
            .collect();
        if !differing.is_empty() {
            warnings.push(format!(
                "tokenizer differs between '{}' and '{}': {}",
                b.name,
                p.name,
                differing.join(", ")
            ));
        }
        // Only worth saying when the recipe leaves the template to the metadata parent.
        if !template_set && b.model.get(KEY_CHAT_TEMPLATE) != p.model.get(KEY_CHAT_TEMPLATE) {
            warnings.push(format!(
                "chat template differs between '{}' and '{}'; the child keeps the metadata parent's unless the recipe says otherwise",
                b.name, p.name
            ));
        }
    }
    Ok(())
}
