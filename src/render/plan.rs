//! The plan `splice --dry-run` prints: parents, rules, every tensor and where it comes from.

use std::fmt::Write as _;
use std::ops::Range;

use serde_json::{Value, json};

use super::{
    Totals, human_bytes, plural_count, ranges_text, table_row, tensor_row, totals, totals_json,
    totals_text,
};
use crate::mix::Job;
use crate::plan::{
    AssemblyReport, ExpertSource, MixReport, Piece, Plan, PlannedTensor, RunSource, Source,
};
use crate::roles;
use crate::roles::views::Conversion;

/// `v3` or `r1[0-127] v3[128-255]` for a planned tensor; for an assembled MoE also where
/// each output expert is in its parent: `b[0-3]→4-7` (b's experts 0-3 are output experts
/// 4-7), `a:ffn_up.weight→0` (dense parent a's FFN is output expert 0), and
/// `made:router random:7` for bytes the plan made.
pub(crate) fn sources_text(plan: &Plan, t: &PlannedTensor) -> String {
    let name = |p: usize| plan.parents[p].name.as_str();
    let experts = |r: &Range<u64>| ranges_text(std::slice::from_ref(r));
    let parts: Vec<String> = t
        .sources()
        .into_iter()
        .map(|run| match (&run.from, &run.experts) {
            (RunSource::Made(origin), _) => format!("made:{origin}"),
            (RunSource::Mix, _) => "mix".into(),
            (
                RunSource::Parent {
                    parent,
                    tensor: Some(src),
                    ..
                },
                out,
            ) => {
                let (_, short) = roles::split_block(src);
                match out {
                    Some(o) => format!("{}:{short}→{}", name(*parent), experts(o)),
                    None => format!("{}:{short}", name(*parent)),
                }
            }
            (
                RunSource::Parent {
                    parent,
                    experts: Some(src),
                    ..
                },
                Some(o),
            ) => format!("{}[{}]→{}", name(*parent), experts(src), experts(o)),
            (RunSource::Parent { parent, .. }, None) => name(*parent).to_string(),
            (RunSource::Parent { parent, .. }, Some(o)) => {
                format!("{}[{}]", name(*parent), experts(o))
            }
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

/// One piece: where its bytes are (parent, shard, offset, tensor and experts there; or what
/// made them) and which output experts they make.
fn piece_json(plan: &Plan, p: &Piece) -> Value {
    let inclusive = |r: &Option<Range<u64>>| r.as_ref().map(|s| [s.start, s.end - 1]);
    let mut v = json!({
        "parent": plan.parent_name(p), "bytes": p.len,
        "experts": inclusive(&p.experts), "converted": p.converted,
    });
    let o = v.as_object_mut().expect("object");
    match &p.source {
        Source::Parent(b) => {
            o.insert("parent_shard".into(), json!(b.shard + 1));
            o.insert("src_offset".into(), json!(b.offset));
            o.insert("src_tensor".into(), json!(b.tensor));
            o.insert("src_experts".into(), json!(inclusive(&b.experts)));
        }
        Source::Made(m) => {
            o.insert("made".into(), json!(m.origin));
        }
        Source::Mix(job) => {
            o.insert("mix".into(), job_json(plan, job));
        }
    }
    v
}

/// The plan as JSON: parents, outputs, rules or assembly, every tensor with its pieces, totals,
/// metadata and warnings.
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
                "sources": t.pieces.iter().map(|p| piece_json(plan, p)).collect::<Vec<_>>(),
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
        "assembly": plan.assembly.as_ref().map(|a| assembly_json(plan, a)),
        "tensors": tensors,
        "totals_by_parent": totals_json(&by_parent),
        "totals_by_type": totals_json(&by_type),
        "metadata": plan.kvs.iter().map(|(k, v)| json!({
            "key": k, "type": v.as_ref().ty().name(), "value": v.as_ref().to_json(false),
        })).collect::<Vec<_>>(),
        "warnings": plan.warnings,
        "ggml": ggml_json(plan),
        "output_bytes": plan.output_bytes(),
        "loadable_by": plan.loaders.origin.loaded_by(),
        "flavour_types": plan.loaders.own_types,
    })
}

/// The ggml a plan's mixed tensors are made with (`null` without mixed tensors): its path,
/// version, commit and the record the child keeps, or why there is none.
fn ggml_json(plan: &Plan) -> Value {
    if plan.tensors.iter().all(|t| t.mix.is_none()) {
        return Value::Null;
    }
    match crate::ggml_lib::library() {
        Ok(g) => json!({
            "path": g.path(), "found_by": g.found().to_string(), "version": g.version(),
            "commit": g.commit(), "record": g.record(),
        }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// `splice --dry-run` (and `assemble --dry-run`): parents, rules and what they matched (or the
/// assembly's experts), every tensor with its output offset and sources, totals, output
/// files and warnings.
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
    match &plan.assembly {
        Some(a) => assembly_text(&mut out, plan, a),
        None => rules_text(&mut out, plan),
    }
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

fn rules_text(out: &mut String, plan: &Plan) {
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
}

/// The experts of one layer as runs: `0-3 <- a[0-3], 4-7 <- b[0-3]`; a dense parent's
/// expert as `0 <- a`.
fn experts_text(plan: &Plan, experts: &[ExpertSource]) -> String {
    // (first output expert, length, parent, first parent expert)
    let mut runs: Vec<(u64, u64, usize, Option<u64>)> = Vec::new();
    for (e, s) in experts.iter().enumerate() {
        if let Some(r) = runs.last_mut()
            && r.2 == s.parent
            && r.0 + r.1 == e as u64
            && matches!((r.3, s.expert), (Some(a), Some(b)) if a + r.1 == b)
        {
            r.1 += 1;
            continue;
        }
        runs.push((e as u64, 1, s.parent, s.expert));
    }
    let span = |a: u64, n: u64| ranges_text(std::slice::from_ref(&(a..a + n)));
    let parts: Vec<String> = runs
        .into_iter()
        .map(|(o, n, p, src)| {
            let name = &plan.parents[p].name;
            match src {
                Some(src) => format!("{} <- {name}[{}]", span(o, n), span(src, n)),
                None => format!("{} <- {name}", span(o, n)),
            }
        })
        .collect();
    parts.join(", ")
}

/// What was assembled: architecture, counts, router, and each layer's experts (layers with
/// the same experts share a line).
fn assembly_text(out: &mut String, plan: &Plan, a: &AssemblyReport) {
    let _ = writeln!(
        out,
        "\nassembly: {}, {} experts per layer, {} used per token; router: {}",
        a.architecture, a.expert_count, a.experts_used, a.router
    );
    let mut lines: Vec<(Vec<u64>, String)> = Vec::new();
    for l in &a.layers {
        let text = experts_text(plan, &l.experts);
        match lines.iter_mut().find(|(_, t)| *t == text) {
            Some(line) => line.0.push(l.layer),
            None => lines.push((vec![l.layer], text)),
        }
    }
    for (layers, text) in lines {
        let blocks = ranges_text(&crate::compare::to_ranges(layers));
        let _ = writeln!(out, "  experts of blk.{blocks}: {text}");
    }
    let _ = writeln!(
        out,
        "  (everything else)            -> {}",
        plan.parents[plan.base].name
    );
}

fn assembly_json(plan: &Plan, a: &AssemblyReport) -> Value {
    json!({
        "architecture": a.architecture,
        "expert_count": a.expert_count,
        "experts_used": a.experts_used,
        "router": a.router,
        "layers": a.layers.iter().map(|l| json!({
            "layer": l.layer,
            "experts": l.experts.iter().map(|e| json!({
                "parent": plan.parents[e.parent].name, "expert": e.expert,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn job_json(plan: &Plan, job: &Job) -> Value {
    json!({
        "type": job.out_type.name(),
        "rows": job.rows, "first_row": job.first_row,
        "imatrix": job.imatrix.as_ref().map(|u| plan.imatrices[u.file].path()),
        "inputs": job.inputs.iter().map(|i| json!({
            "parent": plan.parents[i.parent].name, "weight": i.weight, "type": i.ty.name(),
            "bytes": i.spans.iter().map(|s| s.len).sum::<u64>(), "converted": i.converted,
            "scales": i.scales,
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
    let _ = match crate::ggml_lib::library() {
        Ok(g) => writeln!(out, "  made by {} ({})", g.record(), g.path().display()),
        Err(e) => writeln!(out, "  made by: no ggml: {e}"),
    };
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
                (None, Some(th)) => format!("threshold {th}: distance needs ggml"),
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
