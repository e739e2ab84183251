//! The plan `splice --dry-run` prints: parents, rules, every tensor and where it comes from.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Totals, human_bytes, table_row, tensor_row, totals, totals_json, totals_text};
use crate::mix::Job;
use crate::plan::{Maker, MixReport, Plan, PlannedTensor, Source};
use crate::roles::views::Conversion;

/// `v3`, `mix` or `r1[0-127] v3[128-255]` for a planned tensor.
fn sources_text(plan: &Plan, t: &PlannedTensor) -> String {
    let name = |m: Maker| match m {
        Maker::Parent(p) => plan.parents[p].name.as_str(),
        Maker::Mix => "mix",
    };
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
                "sources": t.pieces.iter().map(|p| {
                    let experts = p.experts.as_ref().map(|s| [s.start, s.end - 1]);
                    match &p.source {
                        Source::Copy { parent, shard, src_offset, converted } => json!({
                            "parent": plan.parents[*parent].name, "parent_shard": shard + 1,
                            "src_offset": src_offset, "bytes": p.len,
                            "experts": experts, "converted": converted,
                        }),
                        Source::Mix(job) => json!({
                            "mix": job_json(plan, job), "bytes": p.len, "experts": experts,
                        }),
                    }
                }).collect::<Vec<_>>(),
                "mix": t.mix.as_ref().map(|m| mix_json(plan, t, m)),
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
            "key": k, "type": v.as_ref().ty.name(), "value": v.as_ref().to_json(false),
        })).collect::<Vec<_>>(),
        "warnings": plan.warnings,
        "output_bytes": plan.output_bytes(),
    })
}

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
            "  {:<28} /{}/ -> {}{}: {} tensors",
            r.origin, r.pattern, r.from, experts, r.matched
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
    mixed_text(&mut out, plan);
    let (by_parent, by_type) = plan_totals(plan);
    totals_text(&mut out, "bytes by parent (pieces)", &by_parent);
    totals_text(&mut out, "bytes by type", &by_type);
    let _ = writeln!(out, "\noutput:");
    for s in &plan.shards {
        let _ = writeln!(
            out,
            "  {} ({} tensors, {})",
            s.path.display(),
            s.tensors.len(),
            human_bytes(s.file_len())
        );
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

fn job_json(plan: &Plan, job: &Job) -> Value {
    json!({
        "type": job.out_type.name(),
        "rows": job.rows, "first_row": job.first_row,
        "imatrix": job.imatrix.as_ref().map(|u| plan.imatrices[u.file].path()),
        "inputs": job.inputs.iter().map(|i| json!({
            "parent": plan.parents[i.parent].name, "weight": i.weight, "type": i.ty.name(),
            "bytes": i.spans.iter().map(|s| s.len).sum::<u64>(), "converted": i.converted,
        })).collect::<Vec<_>>(),
    })
}

/// Bytes each parent's rows take in a tensor's mix jobs, in first-read order, and the
/// bytes the jobs write.
fn mix_bytes(plan: &Plan, t: &PlannedTensor) -> (Vec<(String, u64)>, u64) {
    let mut reads: Vec<(String, u64)> = Vec::new();
    let mut writes = 0;
    for p in &t.pieces {
        let Source::Mix(job) = &p.source else {
            continue;
        };
        writes += p.len;
        for i in &job.inputs {
            let name = &plan.parents[i.parent].name;
            let n: u64 = i.spans.iter().map(|s| s.len).sum();
            match reads.iter_mut().find(|(q, _)| q == name) {
                Some((_, b)) => *b += n,
                None => reads.push((name.clone(), n)),
            }
        }
    }
    (reads, writes)
}

fn mix_json(plan: &Plan, t: &PlannedTensor, m: &MixReport) -> Value {
    let (reads, writes) = mix_bytes(plan, t);
    json!({
        "type": m.out_type.name(),
        "imatrix": m.imatrix,
        "slices": m.slices.iter().map(|d| json!({
            "experts": d.experts.as_ref().map(|s| [s.start, s.end - 1]),
            "rule": plan.rules[d.rule].origin, "mix": plan.rules[d.rule].from,
            "distance": d.distance.map(|x| if x.is_finite() { json!(x) } else { json!(x.to_string()) }),
            "threshold": d.threshold, "mixed": d.mixed,
        })).collect::<Vec<_>>(),
        "reads": reads.iter().map(|(p, b)| json!({"parent": p, "bytes": b})).collect::<Vec<_>>(),
        "writes": writes,
    })
}

/// The section of the text plan on mixed tensors: per tensor the output type and imatrix,
/// each slice's rule and threshold decision, and the bytes read and written.
fn mixed_text(out: &mut String, plan: &Plan) {
    let mixed: Vec<(&PlannedTensor, &MixReport)> = plan
        .tensors
        .iter()
        .filter_map(|t| t.mix.as_ref().map(|m| (t, m)))
        .collect();
    if mixed.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nmixed tensors ({}):", mixed.len());
    for (t, m) in mixed {
        let imatrix = m
            .imatrix
            .as_ref()
            .map(|i| format!(", imatrix {i}"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {} -> {}{imatrix}", t.info.name, m.out_type);
        for d in &m.slices {
            let what = d
                .experts
                .as_ref()
                .map(|e| match e.end - e.start {
                    1 => format!("expert {}", e.start),
                    _ => format!("experts {}-{}", e.start, e.end - 1),
                })
                .unwrap_or_else(|| "whole tensor".into());
            let decision = match (d.distance, d.threshold) {
                (Some(x), Some(th)) if d.mixed => format!("distance {x:.6} >= {th}: mixed"),
                (Some(x), Some(th)) => format!(
                    "distance {x:.6} < {th}: kept from {}{}",
                    plan.parents[plan.base].name,
                    if m.base_type == m.out_type {
                        String::new()
                    } else {
                        format!(
                            " (its values, requantized from {} to {})",
                            m.base_type, m.out_type
                        )
                    }
                ),
                _ => "mixed".into(),
            };
            let _ = writeln!(
                out,
                "    {what}: {} ({}): {decision}",
                plan.rules[d.rule].from, plan.rules[d.rule].origin
            );
        }
        let (reads, writes) = mix_bytes(plan, t);
        if writes > 0 {
            let reads: Vec<String> = reads
                .iter()
                .map(|(p, b)| format!("{} of {p}", human_bytes(*b)))
                .collect();
            let _ = writeln!(
                out,
                "    reads {}; writes {} requantized",
                reads.join(", "),
                human_bytes(writes)
            );
        }
    }
}
