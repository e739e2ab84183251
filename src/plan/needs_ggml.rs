//! What a plan that mixes needs of ggml: the record of the ggml that makes its mixed bytes
//! (the child's `splice.ggml`), and the refusal to write one without a ggml. A plan is made
//! without one (so `--dry-run` shows it, its threshold distances saying they need ggml);
//! writing it is refused by [`require_ggml`].

use super::metadata::set_kv;
use super::{Plan, PlanError, PlanValue, PlannedTensor};
use crate::ggml_lib::{self, RECORD_KEY};
use crate::gguf::OwnedValue;

/// The first mix rule's origin among `tensors`, if any tensor is mixed.
fn first_mix(tensors: &[PlannedTensor], origin: &dyn Fn(usize) -> String) -> Option<String> {
    tensors
        .iter()
        .find_map(|t| t.mix.as_ref()?.slices.first().map(|d| origin(d.rule)))
}

/// When some tensor is mixed: record the ggml in `splice.ggml` (version, commit and the
/// library's file name, never its path), or warn that the plan cannot be written.
pub(super) fn record<'p>(
    tensors: &[PlannedTensor],
    origin: &dyn Fn(usize) -> String,
    kvs: &mut Vec<(String, PlanValue<'p>)>,
    warnings: &mut Vec<String>,
) {
    let Some(rule) = first_mix(tensors, origin) else {
        return;
    };
    match ggml_lib::library() {
        Ok(g) => set_kv(
            kvs,
            RECORD_KEY,
            PlanValue::Owned(OwnedValue::string(&g.record())),
        ),
        Err(e) => warnings.push(format!(
            "{rule}: mixing needs ggml, so this plan can be shown but not written: {e}"
        )),
    }
}

/// The ggml a plan's mixed tensors need, if it has any: refused, naming the first mix rule,
/// when there is none. Call it before writing.
pub fn require_ggml(plan: &Plan) -> Result<Option<&'static ggml_lib::Ggml>, PlanError> {
    let origin = |r: usize| {
        plan.rules
            .get(r)
            .map_or_else(|| "a mix rule".to_string(), |r| r.origin.clone())
    };
    let Some(rule) = first_mix(&plan.tensors, &origin) else {
        return Ok(None);
    };
    ggml_lib::library()
        .map(Some)
        .map_err(|source| PlanError::MixUnavailable {
            origin: rule,
            source,
        })
}
