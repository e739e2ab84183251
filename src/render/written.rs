//! The summary of a finished `splice`: the files written, and for remote parents the bytes
//! received from each (and what `--resume` saved).

use serde_json::{Value, json};

use super::{human_bytes, plural_count};
use crate::execute::Written;
use crate::plan::Plan;

/// One line per fact, for stderr.
pub fn written_text(w: &Written, secs: f64) -> String {
    let names: Vec<String> = w.files.iter().map(|f| f.display().to_string()).collect();
    let mut out = match &w.created_dir {
        Some(dir) => format!("created the output directory {}\n", dir.display()),
        None => String::new(),
    };
    out += &format!(
        "wrote {} in {} ({:.1} s, {}/s): {}\n",
        human_bytes(w.bytes),
        plural_count(w.files.len(), "file"),
        secs,
        human_bytes((w.bytes as f64 / secs.max(1e-9)) as u64),
        names.join(", ")
    );
    for f in &w.fetched {
        out.push_str(&format!(
            "fetched {} from parent '{}' ({}/s)\n",
            human_bytes(f.bytes),
            f.parent,
            human_bytes((f.bytes as f64 / secs.max(1e-9)) as u64),
        ));
    }
    if w.resumed > 0 {
        out.push_str(&format!(
            "resumed: {} written by the interrupted run were not fetched again\n",
            human_bytes(w.resumed)
        ));
    }
    out
}

/// What `splice --json` prints after a real run: every file with its size and tensor count,
/// tensor bytes per parent, bytes fetched per remote parent, time, leftovers removed and the
/// plan's warnings (byte counts exact).
pub fn written_json(plan: &Plan, w: &Written, secs: f64) -> Value {
    let mut by_parent: Vec<u64> = vec![0; plan.parents.len()];
    for t in &plan.tensors {
        for p in &t.pieces {
            // Bytes the plan made (an assembled router) belong to no parent.
            if let Some(i) = p.parent() {
                by_parent[i] += p.len;
            }
        }
    }
    json!({
        "files": w.files.iter().zip(&plan.shards).map(|(f, s)| json!({
            "path": f.display().to_string(), "bytes": s.file_len(), "tensors": s.tensors.len(),
        })).collect::<Vec<_>>(),
        "bytes": w.bytes,
        "tensor_bytes_by_parent": plan.parents.iter().zip(&by_parent)
            .map(|(p, b)| (p.name.clone(), json!(b)))
            .collect::<serde_json::Map<_, _>>(),
        "seconds": secs,
        "removed_leftovers": w.removed.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "fetched": w.fetched.iter().map(|f| json!({"parent": f.parent, "bytes": f.bytes})).collect::<Vec<_>>(),
        "resumed_bytes": w.resumed,
        "created_dir": w.created_dir.as_ref().map(|d| d.display().to_string()),
        "warnings": plan.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::Fetched;

    #[test]
    fn summaries_give_bytes_fetched_per_parent() {
        let w = Written {
            files: vec!["c.gguf".into()],
            bytes: 2048,
            removed: vec![],
            fetched: vec![Fetched {
                parent: "r1".into(),
                bytes: 1536,
            }],
            resumed: 512,
            created_dir: Some("out/dir".into()),
        };
        let t = written_text(&w, 1.0);
        assert!(t.contains("fetched 1.50 KiB from parent 'r1'"), "{t}");
        assert!(t.contains("resumed: 512 B"), "{t}");
        assert!(
            t.starts_with("created the output directory out/dir\nwrote 2.00 KiB in 1 file ("),
            "{t}"
        );
    }
}
