//! What belongs together: a weight and its companions are one unit.
//!
//! The rule is on the name's shape, not a list: a tensor `STEM.SUFFIX` (any suffix but
//! `weight`) is a *companion* of `STEM.weight` when the model has that tensor. llama.cpp
//! (build 11434) loads `STEM.bias`, `STEM.scale` (NVFP4's second-level scale: shape `{1}`, or
//! `{n_expert}` for stacked expert tensors, multiplied into the matmul result) and
//! `STEM.input_scale` beside a weight; whatever suffix it adds next follows the same rule.
//! A tensor with a suffix but no `STEM.weight` in the model (`exp_probs_b.bias`) is a unit
//! of its own.
//!
//! A companion has its weight's role, layer and matrix ([`classify`](super::classify) reads
//! the stem), and is cut by expert along its outermost dimension like the weight
//! ([`cut`](super::cut)): a `{n_expert}` scale by element, a `[n, n_expert]` bias by row
//! block. The planner gives a companion exactly the owners of its weight; `verify` checks
//! that the two came from one parent.

use std::collections::HashMap;

use super::split_suffix;
use crate::ggml_type::GgmlType;
use crate::gguf::{Model, TensorLoc};

/// The suffix of the tensor a unit is named after.
pub const WEIGHT_SUFFIX: &str = "weight";

/// The weight a companion would belong to, by its name alone: `blk.0.attn_q.scale` ->
/// `blk.0.attn_q.weight`. `None` for a weight itself and for a name without a suffix.
/// Whether it *is* a companion depends on the model having that weight (see [`Units`]).
pub fn head_name(name: &str) -> Option<String> {
    match suffix(name) {
        Some(s) if s != WEIGHT_SUFFIX => Some(format!(
            "{}.{WEIGHT_SUFFIX}",
            &name[..name.len() - s.len() - 1]
        )),
        _ => None,
    }
}

/// The suffix of a tensor's name (`weight`, `scale`, `input_scale`, `bias`), read after the
/// block prefix: `blk.0.ssm_a` has none (its last word is what it names).
pub fn suffix(name: &str) -> Option<&str> {
    split_suffix(super::split_block(name).1).1
}

/// Whether a companion of this suffix scales its weight's values (the value llama.cpp
/// computes with is the dequantized block value times the scale), so that bytes of the
/// weight mean nothing without it: `.scale` and `.input_scale`.
pub fn is_scale(name: &str) -> bool {
    matches!(suffix(name), Some("scale" | "input_scale"))
}

/// The name of weight `weight`'s companion of `suffix`: `blk.0.attn_q.weight`, `scale` ->
/// `blk.0.attn_q.scale` (the inverse of [`head_name`]). `None` for a name that is no weight.
pub fn companion_name(weight: &str, suffix: &str) -> Option<String> {
    weight
        .strip_suffix(WEIGHT_SUFFIX)
        .and_then(|s| s.strip_suffix('.'))
        .map(|stem| format!("{stem}.{suffix}"))
}

/// Weight `weight`'s `.scale` in `model`, as llama.cpp b11434 applies it to a weight of
/// `slices` experts (1 for a plain weight): F32, one value or one per expert. `Ok(None)`:
/// it has none; `Err(why)`: it has one that cannot be applied so.
pub fn scale_of<'m>(
    model: &'m Model,
    weight: &str,
    slices: u64,
) -> Result<Option<TensorLoc<'m>>, String> {
    let Some(t) = companion_name(weight, "scale").and_then(|n| model.tensor(&n)) else {
        return Ok(None);
    };
    let count = t.info.dims.iter().product::<u64>();
    if t.info.ty != GgmlType::F32 || !(count == 1 || count == slices) {
        return Err(format!(
            "it is {} {:?}, not F32 with one value or one per expert ({slices})",
            t.info.ty, t.info.dims
        ));
    }
    Ok(Some(t))
}

/// The factors a `.scale`'s bytes (F32, little-endian) give each of `slices` experts: one
/// value repeated, or one per expert.
pub fn scale_factors(raw: &[u8], slices: usize) -> Vec<f32> {
    let values: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    match values.as_slice() {
        [one] => vec![*one; slices],
        _ => values,
    }
}

/// The units of one model: which tensors are companions of which weights.
#[derive(Clone, Debug, Default)]
pub struct Units {
    /// Companion name -> its weight's name.
    head: HashMap<String, String>,
    /// Weight name -> its companions, in the model's order.
    companions: HashMap<String, Vec<String>>,
}

impl Units {
    /// The units of `model`: every `STEM.SUFFIX` whose `STEM.weight` the model has.
    pub fn of(model: &Model) -> Units {
        let mut u = Units::default();
        for t in model.tensors() {
            let name = &t.info.name;
            if let Some(head) = head_name(name)
                && model.tensor(&head).is_some()
            {
                u.companions
                    .entry(head.clone())
                    .or_default()
                    .push(name.clone());
                u.head.insert(name.clone(), head);
            }
        }
        u
    }

    /// The weight `name` is a companion of; `None` when it is not a companion.
    pub fn head(&self, name: &str) -> Option<&str> {
        self.head.get(name).map(String::as_str)
    }

    /// The companions of weight `name` (empty when it has none).
    pub fn companions(&self, name: &str) -> &[String] {
        self.companions.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is a companion of a weight of the model.
    pub fn is_companion(&self, name: &str) -> bool {
        self.head.contains_key(name)
    }

    /// Number of companion tensors.
    pub fn count(&self) -> usize {
        self.head.len()
    }

    /// The name a rule is matched against for `name`: its weight's for a companion (a rule
    /// that takes the weight takes its companions), its own otherwise.
    pub fn selector<'a>(&'a self, name: &'a str) -> &'a str {
        self.head(name).unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;
    use crate::roles::{Role, classify, cut};
    use crate::testkit::GgufBuilder;

    #[test]
    fn head_names_by_shape() {
        assert_eq!(
            head_name("blk.0.attn_q.scale").as_deref(),
            Some("blk.0.attn_q.weight")
        );
        assert_eq!(
            head_name("blk.3.ffn_up_exps.input_scale").as_deref(),
            Some("blk.3.ffn_up_exps.weight")
        );
        // A suffix nobody has invented yet follows the same rule.
        assert_eq!(
            head_name("blk.3.ffn_up_exps.zero_point").as_deref(),
            Some("blk.3.ffn_up_exps.weight")
        );
        assert_eq!(head_name("blk.0.attn_q.weight"), None);
        // Mamba's `ssm_a` and `ssm_d` have no suffix at all.
        assert_eq!(head_name("blk.0.ssm_a"), None);
        assert_eq!(head_name("output.scale").as_deref(), Some("output.weight"));
        assert_eq!(head_name("token_embd"), None);
        // The old per-expert layout's number is not a suffix.
        assert_eq!(head_name("blk.1.ffn_gate.5"), None);
        assert_eq!(
            head_name("blk.1.ffn_gate.5.bias").as_deref(),
            Some("blk.1.ffn_gate.5.weight")
        );
    }

    #[test]
    fn companion_names_are_head_names_inverted() {
        assert_eq!(
            companion_name("blk.0.ffn_up_exps.weight", "scale").as_deref(),
            Some("blk.0.ffn_up_exps.scale")
        );
        assert_eq!(companion_name("blk.0.exp_probs_b.bias", "scale"), None);
        let c = companion_name("output.weight", "input_scale").unwrap();
        assert_eq!(head_name(&c).as_deref(), Some("output.weight"));
        assert_eq!(scale_factors(&2.0f32.to_le_bytes(), 3), vec![2.0; 3]);
        let two: Vec<u8> = [1.0f32, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(scale_factors(&two, 2), vec![1.0, 3.0]);
    }

    #[test]
    fn companions_have_their_weights_role_layer_and_matrix() {
        for (companion, weight) in [
            ("blk.2.attn_q.scale", "blk.2.attn_q.weight"),
            ("blk.2.ffn_gate_exps.scale", "blk.2.ffn_gate_exps.weight"),
            (
                "blk.2.ffn_down_exps.input_scale",
                "blk.2.ffn_down_exps.weight",
            ),
            ("blk.2.ffn_up_exps.bias", "blk.2.ffn_up_exps.weight"),
            ("blk.2.ffn_gate_inp.bias", "blk.2.ffn_gate_inp.weight"),
            ("blk.2.ffn_up_shexp.scale", "blk.2.ffn_up_shexp.weight"),
            ("blk.2.ffn_up.input_scale", "blk.2.ffn_up.weight"),
            ("output.scale", "output.weight"),
        ] {
            assert_eq!(classify(companion), classify(weight), "{companion}");
        }
        assert_eq!(
            classify("blk.2.ffn_up_exps.scale").role,
            Role::RoutedExperts
        );
        assert!(cut::is_expert_indexed("blk.2.ffn_up_exps.scale"));
        assert!(cut::is_expert_indexed("blk.2.ffn_gate_inp.bias"));
        assert!(!cut::is_expert_indexed("blk.2.ffn_up_shexp.scale"));
    }

    #[test]
    fn units_of_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        let f = GgmlType::F32;
        let b = GgufBuilder::new()
            .tensor("blk.0.attn_q.weight", &[32, 2], f, 1)
            .tensor("blk.0.attn_q.scale", &[1], f, 2)
            .tensor("blk.0.ffn_up_exps.weight", &[32, 2, 4], f, 3)
            .tensor("blk.0.ffn_up_exps.scale", &[4], f, 4)
            .tensor("blk.0.ffn_up_exps.input_scale", &[4], f, 5)
            .tensor("blk.0.exp_probs_b.bias", &[4], f, 6);
        std::fs::write(&p, b.build()).unwrap();
        let m = Model::open(&p).unwrap();
        let u = Units::of(&m);
        assert_eq!(u.count(), 3);
        assert_eq!(u.head("blk.0.attn_q.scale"), Some("blk.0.attn_q.weight"));
        assert_eq!(
            u.companions("blk.0.ffn_up_exps.weight"),
            ["blk.0.ffn_up_exps.scale", "blk.0.ffn_up_exps.input_scale"]
        );
        // No exp_probs_b.weight: the bias is a unit of its own.
        assert!(!u.is_companion("blk.0.exp_probs_b.bias"));
        assert_eq!(
            u.selector("blk.0.exp_probs_b.bias"),
            "blk.0.exp_probs_b.bias"
        );
        assert_eq!(u.selector("blk.0.attn_q.scale"), "blk.0.attn_q.weight");
        assert!(u.companions("blk.0.attn_q.scale").is_empty());
    }
}
