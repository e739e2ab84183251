//! The plan `splice --dry-run` prints: parents, rules, every tensor and where it comes from.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{
    Totals, human_bytes, plural_count, table_row, tensor_row, totals, totals_json, totals_text,
};
use crate::plan::{Plan, PlannedTensor};
use crate::roles::views::Conversion;

/// `v3` or `r1[0-127] v3[128-255]` for a planned tensor.
fn sources_text(plan: &Plan, t: &PlannedTensor) -> String {
    let name = |p: usize| plan.parents[p].name.as_str();
    let parts: Vec<String> = t
        .sources()
        .into_iter()
        .map(|(p, experts)| match experts {
            None => name(p).to_string(),
            Some(s) if s.end - s.start == 1 => format!("{}[{}]", name(p), s.start),
            Some(s) => format!("{}[{}-{}]", name(p), s.start, s.end - 1),
        })
        .collect();
    let converted = match t.conversion {
        Conversion::Same => "",
        Conversion::Unfused => " (converted: from fused ffn_gate_up_exps)",
        Conversion::Fused => " (converted: fused from ffn_gate_exps + ffn_up_exps)",
    };
    format!("{}{converted}", parts.join(" "))
}

/// A plan's bytes by parent (counting pieces) and by output type (counting tensors).
fn plan_totals(plan: &Plan) -> (Totals, Totals) {
    let by_parent = totals(plan.tensors.iter().flat_map(|t| {
        t.pieces
            .iter()
            .map(|p| (plan.parent_name(p).to_string(), p.len))
    }));
    let by_type = totals(
        plan.tensors
            .iter()
            .map(|t| (t.info.ty.name().to_string(), t.info.n_bytes)),
    );
    (by_parent, by_type)
}

/// `splice --dry-run --json`: the plan in full, every piece with its parent, source offset
/// and experts, so a script can check where each output byte will come from.
pub fn plan_json(plan: &Plan) -> Value {
    let tensors: Vec<Value> = plan
        .tensors
        .iter()
        .map(|t| {
            let shard = &plan.shards[t.out_shard];
            json!({
                "name": t.info.name, "type": t.info.ty.name(), "shape": t.info.dims,
                "bytes": t.info.n_bytes, "shard": t.out_shard + 1,
                "offset": shard.header_len + t.info.offset,
                "sources": t.pieces.iter().map(|p| json!({
                    "parent": plan.parent_name(p), "parent_shard": p.shard + 1,
                    "src_offset": p.src_offset, "bytes": p.len,
                    "experts": p.experts.as_ref().map(|s| [s.start, s.end - 1]),
                    "converted": p.converted,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let (by_parent, by_type) = plan_totals(plan);
    json!({
        "parents": plan.parents.iter().map(|p| json!({
            "name": p.name, "path": p.model.path(), "shards": p.model.shards().len(),
        })).collect::<Vec<_>>(),
        "base": plan.parents[plan.base].name,
        "outputs": plan.shards.iter().map(|s| json!({
            "path": s.path, "tensors": s.tensors.len(), "bytes": s.file_len(),
        })).collect::<Vec<_>>(),
        "rules": plan.rules.iter().map(|r| json!({
            "origin": r.origin, "match": r.pattern, "from": r.from,
            "experts": r.experts, "matched": r.matched,
        })).collect::<Vec<_>>(),
        "tensors": tensors,
        "totals_by_parent": totals_json(&by_parent),
        "totals_by_type": totals_json(&by_type),
        "metadata": plan.kvs.iter().map(|(k, v)| json!({
            "key": k, "type": v.as_ref().ty().name(), "value": v.as_ref().to_json(false),
        })).collect::<Vec<_>>(),
        "warnings": plan.warnings,
        "output_bytes": plan.output_bytes(),
        "loadable_by": plan.loaders.origin.loaded_by(),
        "flavour_types": plan.loaders.own_types,
    })
}

/// `splice --dry-run`: parents, rules and what they matched, every tensor with its output
/// offset and sources, totals, output files and warnings.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    for p in plan.parents {
        let _ = writeln!(
            out,
            "parent {:<6} {} ({} shard{}){}",
            p.name,
            p.model.path().display(),
            p.model.shards().len(),
            if p.model.shards().len() == 1 { "" } else { "s" },
            if p.name == plan.parents[plan.base].name {
                "  [base]"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "\nrules (first match wins):");
    for r in &plan.rules {
        let experts = r
            .experts
            .as_ref()
            .map(|e| format!(" experts {e}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<28} {} -> {}{}: {}",
            r.origin,
            r.pattern,
            r.from,
            experts,
            plural_count(r.matched, "tensor")
        );
    }
    let _ = writeln!(
        out,
        "  (everything else)            -> {}",
        plan.parents[plan.base].name
    );
    let _ = writeln!(out, "\ntensors:");
    let header = table_row(["name", "type", "shape", "bytes", "shard", "offset"]);
    let _ = writeln!(out, "{header}  from");
    for t in &plan.tensors {
        let offset = plan.shards[t.out_shard].header_len + t.info.offset;
        let row = tensor_row(&t.info, t.out_shard, offset);
        let _ = writeln!(out, "{row}  {}", sources_text(plan, t));
    }
    let (by_parent, by_type) = plan_totals(plan);
    totals_text(&mut out, "bytes by parent (pieces)", &by_parent);
    totals_text(&mut out, "bytes by type", &by_type);
    let _ = writeln!(out, "\nloadable by: {}", plan.loaders.describe());
    let _ = writeln!(out, "\noutput:");
    for s in &plan.shards {
        let _ = writeln!(
            out,
            "  {} ({}, {})",
            s.path.display(),
            plural_count(s.tensors.len(), "tensor"),
            human_bytes(s.file_len())
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}
