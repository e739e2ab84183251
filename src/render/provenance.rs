//! `inspect CHILD --provenance`: the child's lineage on one screen: who made it, its parents
//! and their identities, the recipe or assemble options, where each tensor and expert came
//! from (the plan the record makes of the parents, when they are at hand), and the
//! `general.base_model.*` list.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::compact_text;
use super::plan::sources_text;
use crate::gguf::Model;
use crate::plan::Plan;
use crate::plan::record::{ChildRecord, Made, ParentRecord};

/// Where the sources come from: the plan of the recorded parents, or why there is none.
pub enum Sources<'a, 'p> {
    /// The plan the record makes of the parents.
    Plan(&'a Plan<'p>),
    /// Why no plan could be made (parents not at hand, a file recorded by name only, ...).
    Unavailable(String),
}

/// `general.base_model.{i}.*` of `child`: (index, name, organization, repo URL).
fn base_models(child: &Model) -> Vec<(u64, Vec<(String, String)>)> {
    let count = child
        .get("general.base_model.count")
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
        .min(1024);
    (0..count)
        .map(|i| {
            let fields = ["name", "organization", "repo_url", "version"]
                .into_iter()
                .filter_map(|f| {
                    let v = child.get(&format!("general.base_model.{i}.{f}"))?;
                    Some((f.to_string(), v.as_str()?.to_string()))
                })
                .collect();
            (i, fields)
        })
        .collect()
}

fn parent_line(p: &ParentRecord) -> String {
    let shards = match p.shards.len() {
        1 => String::new(),
        n => format!(" ({n} shards)"),
    };
    let size: u64 = p.shards.iter().map(|s| s.size).sum();
    let mut line = format!(
        "{}: {}{shards}, {} bytes, header sha256 {}",
        p.name,
        p.first_file(),
        size,
        p.shards.first().map_or("", |s| s.header_sha256.as_str())
    );
    if let Some(s) = p.shards.first()
        && let Some(url) = &s.url
    {
        let _ = write!(line, "\n    {url}");
        if let Some(c) = &s.commit {
            let _ = write!(line, " (commit {c})");
        }
    }
    line
}

fn made_text(out: &mut String, r: &ChildRecord) {
    let Some(o) = &r.options else {
        let _ = writeln!(out, "\nno recipe recorded (a child made before the record)");
        return;
    };
    match &o.made {
        Made::Splice {
            recipe,
            takes,
            allow_partial_experts,
        } => {
            let _ = writeln!(out, "\nrecipe:");
            for t in takes {
                let _ = writeln!(out, "  --take '{t}'");
            }
            if *allow_partial_experts {
                let _ = writeln!(out, "  --allow-partial-experts");
            }
            for l in recipe.lines() {
                let _ = writeln!(out, "  | {l}");
            }
        }
        Made::Assemble(a) => {
            let _ = writeln!(out, "\nassemble options:");
            let opts = serde_json::to_value(a).expect("serialises");
            for (k, v) in opts.as_object().into_iter().flatten() {
                let v = v.as_str().map_or(v.to_string(), str::to_string);
                let _ = writeln!(out, "  --{} {v}", k.replace('_', "-"));
            }
        }
    }
    if let Some(n) = o.split_max_size {
        let _ = writeln!(out, "  split: at most {n} bytes per shard");
    }
    if let Some(n) = o.split_max_tensors {
        let _ = writeln!(out, "  split: at most {n} tensors per shard");
    }
}

/// The lineage as text.
pub fn provenance_text(child: &Model, r: &ChildRecord, sources: &Sources) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "child: {}", child.path().display());
    match &r.version {
        Some(v) => {
            let _ = writeln!(out, "made by gguf-splice {v}");
        }
        None => {
            let _ = writeln!(
                out,
                "no splice.version: not made by gguf-splice, or before it kept a record"
            );
        }
    }
    if !r.parents.is_empty() {
        let _ = writeln!(out, "\nparents:");
        for p in &r.parents {
            let _ = writeln!(out, "  {}", parent_line(p));
        }
    }
    made_text(&mut out, r);
    match sources {
        Sources::Plan(plan) => {
            let _ = writeln!(out, "\nsources (what the record makes of these parents):");
            let entries: Vec<(&str, String)> = plan
                .tensors
                .iter()
                .map(|t| (t.info.name.as_str(), sources_text(plan, t)))
                .collect();
            compact_text(&mut out, &entries, |l| !l.contains('['));
        }
        Sources::Unavailable(why) => {
            let _ = writeln!(out, "\nsources: not shown: {why}");
        }
    }
    let bases = base_models(child);
    if !bases.is_empty() {
        let _ = writeln!(out, "\nbase models (general.base_model.*):");
        for (i, fields) in bases {
            let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "  {i}: {}", text.join(", "));
        }
    }
    out
}

/// The lineage as JSON.
pub fn provenance_json(child: &Model, r: &ChildRecord, sources: &Sources) -> Value {
    json!({
        "child": child.path(),
        "version": r.version,
        "parents": serde_json::to_value(&r.parents).expect("serialises"),
        "options": r.options.as_ref().map(|o| serde_json::to_value(o).expect("serialises")),
        "sources": match sources {
            Sources::Plan(plan) => json!(plan.tensors.iter().map(|t| json!({
                "name": t.info.name, "sources": sources_text(plan, t),
            })).collect::<Vec<_>>()),
            Sources::Unavailable(_) => Value::Null,
        },
        "sources_unavailable": match sources {
            Sources::Unavailable(why) => Some(why.as_str()),
            Sources::Plan(_) => None,
        },
        "base_models": base_models(child).into_iter().map(|(i, f)| {
            let mut o = serde_json::Map::new();
            o.insert("index".into(), json!(i));
            for (k, v) in f {
                o.insert(k, json!(v));
            }
            Value::Object(o)
        }).collect::<Vec<_>>(),
    })
}
