//! Human and JSON renderings of a model (`inspect`) and of a plan (`splice --dry-run`).
//! Only formatting: every number shown was computed by the container or the planner.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::gguf::{Model, TensorInfo};
use crate::plan::{Plan, PlannedTensor};

/// The tensor groups reports total by.
pub fn tensor_group(name: &str) -> &'static str {
    if name.starts_with("token_embd") {
        "embeddings"
    } else if name.starts_with("output") {
        "output"
    } else if name.contains("_exps") {
        "routed experts"
    } else if name.contains("_shexp") {
        "shared experts"
    } else if name.contains("ffn_gate_inp") || name.contains("exp_probs_b") {
        "router"
    } else if name.contains("_norm.") {
        // All normalisation weights together (attn_norm, ffn_norm, attn_q_a_norm, ...); they
        // are tiny, and keeping them apart keeps the attention and FFN totals about matrices.
        "norms"
    } else if name.contains(".attn_") {
        "attention"
    } else if name.contains(".ffn_") {
        "dense FFN"
    } else {
        "other"
    }
}

/// Bytes in a short human form (binary units, as `ls -h`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// One line of the tensor tables of `inspect` and `--dry-run`.
fn table_row(cells: [&str; 6]) -> String {
    let [name, ty, shape, bytes, shard, offset] = cells;
    format!("  {name:<40} {ty:<8} {shape:<22} {bytes:>12} {shard:>5} {offset:>14}")
}

/// A tensor's row: `shard` is 0-based here and shown 1-based; `offset` is in the file.
fn tensor_row(t: &TensorInfo, shard: usize, offset: u64) -> String {
    table_row([
        &t.name,
        t.ty.name(),
        &shape(&t.dims),
        &t.n_bytes.to_string(),
        &(shard + 1).to_string(),
        &offset.to_string(),
    ])
}

/// `[256, 8, 4]`: dimensions innermost first, as GGUF stores them.
pub fn shape(dims: &[u64]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Hyperparameters worth showing first: `{arch}.*` keys that are plain numbers.
fn hyperparameters(model: &Model) -> Vec<(String, String)> {
    let Some(arch) = model.architecture() else {
        return Vec::new();
    };
    let prefix = format!("{arch}.");
    model
        .first()
        .kvs()
        .iter()
        .filter(|kv| kv.key.starts_with(&prefix))
        .map(|kv| (kv.key.clone(), model.first().value(kv).summary(4)))
        .collect()
}

/// (count, bytes) by a key, in key order.
type Totals = BTreeMap<String, (usize, u64)>;

fn totals<'a>(items: impl Iterator<Item = (String, u64)> + 'a) -> Totals {
    let mut m: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (k, b) in items {
        let e = m.entry(k).or_default();
        e.0 += 1;
        e.1 += b;
    }
    m
}

fn totals_json(m: &BTreeMap<String, (usize, u64)>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, (n, b))| (k.clone(), json!({"tensors": n, "bytes": b})))
            .collect(),
    )
}

fn totals_text(out: &mut String, title: &str, m: &BTreeMap<String, (usize, u64)>) {
    let _ = writeln!(out, "\n{title}:");
    for (k, (n, b)) in m {
        let _ = writeln!(out, "  {k:<16} {n:>6} tensors  {:>12}", human_bytes(*b));
    }
}

/// A model's tensor bytes totalled by type and by group.
fn model_totals(model: &Model) -> (Totals, Totals) {
    let by_type = totals(
        model
            .tensors()
            .map(|t| (t.info.ty.name().to_string(), t.info.n_bytes)),
    );
    let by_group = totals(
        model
            .tensors()
            .map(|t| (tensor_group(&t.info.name).to_string(), t.info.n_bytes)),
    );
    (by_type, by_group)
}

pub fn inspect_json(model: &Model) -> Value {
    let first = model.first();
    let kvs: Vec<Value> = first
        .kvs()
        .iter()
        .map(|kv| {
            json!({"key": kv.key, "type": kv.ty.name(), "value": first.value(kv).to_json(false)})
        })
        .collect();
    let tensors: Vec<Value> = model
        .tensors()
        .map(|t| {
            json!({
                "name": t.info.name, "type": t.info.ty.name(), "shape": t.info.dims,
                "bytes": t.info.n_bytes, "shard": t.shard, "offset": t.file_offset,
                "group": tensor_group(&t.info.name),
            })
        })
        .collect();
    let (by_type, by_group) = model_totals(model);
    json!({
        "files": model.shards().iter().map(|s| json!({
            "path": s.path, "version": s.version, "bytes": s.file_len,
            "alignment": s.alignment, "data_offset": s.data_offset,
        })).collect::<Vec<_>>(),
        "architecture": model.architecture(),
        "hyperparameters": hyperparameters(model).into_iter().collect::<BTreeMap<_, _>>(),
        "metadata": kvs,
        "tensors": tensors,
        "totals_by_type": totals_json(&by_type),
        "totals_by_group": totals_json(&by_group),
        "tensor_bytes": model.data_bytes(),
    })
}

pub fn inspect_text(model: &Model) -> String {
    let mut out = String::new();
    let first = model.first();
    for s in model.shards() {
        let _ = writeln!(
            out,
            "file: {} (GGUF v{}, {}, {} tensors)",
            s.path.display(),
            s.version,
            human_bytes(s.file_len),
            s.tensors().len()
        );
    }
    let _ = writeln!(
        out,
        "architecture: {}",
        model.architecture().unwrap_or("(none)")
    );
    for (k, v) in hyperparameters(model) {
        let _ = writeln!(out, "  {k} = {v}");
    }
    let _ = writeln!(out, "\nmetadata ({} keys):", first.kvs().len());
    for kv in first.kvs() {
        let _ = writeln!(
            out,
            "  {:<40} {:<6} {}",
            kv.key,
            kv.ty.name(),
            first.value(kv).summary(4)
        );
    }
    let _ = writeln!(out, "\ntensors ({}):", model.tensor_count());
    let _ = writeln!(
        out,
        "{}",
        table_row(["name", "type", "shape", "bytes", "shard", "offset"])
    );
    for t in model.tensors() {
        let _ = writeln!(out, "{}", tensor_row(t.info, t.shard, t.file_offset));
    }
    let (by_type, by_group) = model_totals(model);
    totals_text(&mut out, "totals by type", &by_type);
    totals_text(&mut out, "totals by group", &by_group);
    let _ = writeln!(out, "\ntensor data: {}", human_bytes(model.data_bytes()));
    out
}

/// `v3` or `r1[0-127] v3[128-255]` for a planned tensor.
fn sources_text(plan: &Plan, t: &PlannedTensor) -> String {
    let parts: Vec<String> = t
        .pieces
        .iter()
        .map(|p| match &p.slices {
            None => plan.parent_name(p).to_string(),
            Some(s) if s.end - s.start == 1 => format!("{}[{}]", plan.parent_name(p), s.start),
            Some(s) => format!("{}[{}-{}]", plan.parent_name(p), s.start, s.end - 1),
        })
        .collect();
    parts.join(" ")
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
                "bytes": t.info.n_bytes, "shard": t.out_shard,
                "offset": shard.header_len + t.info.offset,
                "sources": t.pieces.iter().map(|p| json!({
                    "parent": plan.parent_name(p), "parent_shard": p.shard,
                    "src_offset": p.src_offset, "bytes": p.len,
                    "experts": p.slices.as_ref().map(|s| [s.start, s.end - 1]),
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
