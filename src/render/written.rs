//! The summary of a finished `splice`: the files written, and for remote parents the bytes
//! received from each (and what `--resume` saved).

use serde_json::{Value, json};

use super::human_bytes;
use crate::execute::Written;

/// One line per fact, for stderr.
pub fn written_text(w: &Written, secs: f64) -> String {
    let names: Vec<String> = w.files.iter().map(|f| f.display().to_string()).collect();
    let mut out = format!(
        "wrote {} in {} file{} ({:.1} s, {}/s): {}\n",
        human_bytes(w.bytes),
        w.files.len(),
        if w.files.len() == 1 { "" } else { "s" },
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

/// The same as JSON (byte counts exact).
pub fn written_json(w: &Written, secs: f64) -> Value {
    json!({
        "files": w.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "bytes": w.bytes,
        "seconds": secs,
        "removed_leftovers": w.removed.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "fetched": w.fetched.iter().map(|f| json!({"parent": f.parent, "bytes": f.bytes})).collect::<Vec<_>>(),
        "resumed_bytes": w.resumed,
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
        };
        let t = written_text(&w, 1.0);
        assert!(t.contains("fetched 1.50 KiB from parent 'r1'"), "{t}");
        assert!(t.contains("resumed: 512 B"), "{t}");
        let j = written_json(&w, 1.0);
        assert_eq!(j["fetched"][0]["bytes"], 1536);
        assert_eq!(j["resumed_bytes"], 512);
    }
}
