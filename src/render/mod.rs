//! Every text and JSON rendering: `inspect`, the `splice --dry-run` plan, `diff` (and
//! `diff --values`), `verify` and the maps of both ([`map`]), `batch` and the summary of a
//! splice. Only formatting: every number shown was computed by the container, the planner,
//! the writer, the comparison or the batch runner.

mod batch;
mod diff;
mod fit;
mod inspect;
pub mod map;
mod plan;
pub mod provenance;
mod values;
mod verify;
mod written;

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::ops::Range;

use serde_json::{Value, json};

use crate::compare::{ModelSummary, Shown, to_ranges};
use crate::gguf::TensorInfo;
use crate::roles;

pub use batch::{
    batch_complete, batch_summary_json, batch_summary_text, batch_verify_json, batch_verify_text,
    jobs_json, jobs_text, status_json, status_text,
};
pub use diff::{diff_json, diff_text};
pub use fit::{fit_json, fit_text};
pub use inspect::{inspect_json, inspect_text};
pub use plan::{plan_json, plan_text};
pub use values::{number, values_json, values_text};
pub use verify::{verify_json, verify_text};
pub use written::{shard_json, written_json, written_text};

/// Expert runs shown per tensor in a text label.
const SHOWN_RANGES: usize = 8;

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
pub(crate) fn table_row(cells: [&str; 6]) -> String {
    let [name, ty, shape, bytes, shard, offset] = cells;
    format!("  {name:<40} {ty:<8} {shape:<22} {bytes:>12} {shard:>5} {offset:>14}")
}

/// A tensor's row: `shard` is 0-based here and shown 1-based; `offset` is in the file.
pub(crate) fn tensor_row(t: &TensorInfo, shard: usize, offset: u64) -> String {
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

/// (count, bytes) by a key, in the order reports list the keys.
pub(crate) type Totals = Vec<(String, (usize, u64))>;

/// Totals by a key, keys in their `Ord` order (type names alphabetically, roles in
/// [`Role::ALL`](roles::Role::ALL) order).
pub(crate) fn totals<K: Ord + ToString>(items: impl Iterator<Item = (K, u64)>) -> Totals {
    let mut m: BTreeMap<K, (usize, u64)> = BTreeMap::new();
    for (k, b) in items {
        let e = m.entry(k).or_default();
        e.0 += 1;
        e.1 += b;
    }
    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

pub(crate) fn totals_json(m: &Totals) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, (n, b))| (k.clone(), json!({"tensors": n, "bytes": b})))
            .collect(),
    )
}

pub(crate) fn totals_text(out: &mut String, title: &str, m: &Totals) {
    let _ = writeln!(out, "\n{title}:");
    for (k, (n, b)) in m {
        let _ = writeln!(
            out,
            "  {k:<16} {n:>6} {:<8} {:>12}",
            plural(*n, "tensor"),
            human_bytes(*b)
        );
    }
}

/// `1 file`, `3 files`.
pub fn plural_count(n: usize, word: &str) -> String {
    format!("{n} {}", plural(n, word))
}

/// `tensor` or `tensors` for `n`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// `0-3,7` for half-open ranges.
pub fn ranges_text(ranges: &[Range<u64>]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|r| {
            if r.end - r.start == 1 {
                r.start.to_string()
            } else {
                format!("{}-{}", r.start, r.end - 1)
            }
        })
        .collect();
    parts.join(",")
}

/// As [`ranges_text`], cut after a few ranges (for one-line labels).
pub(crate) fn short_ranges_text(ranges: &[Range<u64>]) -> String {
    if ranges.len() <= SHOWN_RANGES {
        return ranges_text(ranges);
    }
    format!(
        "{},... {} more",
        ranges_text(&ranges[..SHOWN_RANGES]),
        ranges.len() - SHOWN_RANGES
    )
}

/// Half-open ranges as inclusive `[first, last]` pairs, as `plan_json` shows experts.
pub(crate) fn ranges_json(ranges: &[Range<u64>]) -> Value {
    json!(
        ranges
            .iter()
            .map(|r| [r.start, r.end - 1])
            .collect::<Vec<_>>()
    )
}

/// Several names as one: `ffn_{gate,up,down}_exps.weight`. The shared prefix and suffix are
/// cut at `_` or `.` so the braces hold whole name parts.
pub(crate) fn merge_names(names: &[&str]) -> String {
    if names.len() == 1 {
        return names[0].to_string();
    }
    let common_prefix = names[1..].iter().fold(names[0].len(), |n, s| {
        names[0]
            .bytes()
            .zip(s.bytes())
            .take(n)
            .take_while(|(x, y)| x == y)
            .count()
    });
    let head = &names[0][..common_prefix];
    let prefix_len = head.rfind(['_', '.']).map_or(0, |i| i + 1);
    let rests: Vec<&str> = names.iter().map(|n| &n[prefix_len..]).collect();
    let common_suffix = rests[1..].iter().fold(rests[0].len(), |n, s| {
        rests[0]
            .bytes()
            .rev()
            .zip(s.bytes().rev())
            .take(n)
            .take_while(|(x, y)| x == y)
            .count()
    });
    let tail = &rests[0][rests[0].len() - common_suffix..];
    let suffix_len = tail.find(['_', '.']).map_or(0, |i| tail.len() - i);
    let middles: Vec<&str> = rests.iter().map(|r| &r[..r.len() - suffix_len]).collect();
    if middles.iter().any(|m| m.is_empty()) || !names.iter().all(|n| n.is_ascii()) {
        return names.join(", ");
    }
    format!(
        "{}{{{}}}{}",
        &names[0][..prefix_len],
        middles.join(","),
        &rests[0][rests[0].len() - suffix_len..]
    )
}

/// One line of a compact report: tensors and what is said of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactLine {
    /// `blk.1-2 ffn_{gate,up,down}_exps.weight`, or plain names.
    pub tensors: String,
    /// Tensors the line stands for.
    pub count: usize,
    /// What is said of all of them.
    pub label: String,
}

/// Group (name, label) pairs, given in model order, into lines: first by name without its
/// block number, then names whose block sets and labels agree share a line.
pub fn compact(entries: &[(&str, String)]) -> Vec<CompactLine> {
    // (rest, label) -> blocks, in order of first appearance.
    let mut by_rest: Vec<(&str, &str, Option<Vec<u64>>)> = Vec::new();
    let mut rest_index: HashMap<(bool, &str, &str), usize> = HashMap::new();
    for (name, label) in entries {
        let (block, rest) = roles::split_block(name);
        let key = (block.is_some(), rest, label.as_str());
        match rest_index.get(&key) {
            Some(&i) => {
                if let (Some(b), Some(blocks)) = (block, by_rest[i].2.as_mut()) {
                    blocks.push(b);
                }
            }
            None => {
                rest_index.insert(key, by_rest.len());
                by_rest.push((rest, label.as_str(), block.map(|b| vec![b])));
            }
        }
    }
    // (blocks, label) -> rests and tensor count.
    type Line<'a> = (Option<Vec<u64>>, &'a str, Vec<&'a str>, usize);
    let mut lines: Vec<Line> = Vec::new();
    for (rest, label, blocks) in by_rest {
        let mut blocks = blocks;
        if let Some(b) = blocks.as_mut() {
            b.sort_unstable();
            b.dedup();
        }
        let n = blocks.as_ref().map_or(1, Vec::len);
        match lines
            .iter_mut()
            .find(|(b, l, _, _)| *b == blocks && *l == label)
        {
            Some(line) => {
                line.2.push(rest);
                line.3 += n;
            }
            None => lines.push((blocks, label, vec![rest], n)),
        }
    }
    lines
        .into_iter()
        .map(|(blocks, label, rests, count)| CompactLine {
            tensors: match blocks {
                Some(b) => format!("blk.{} {}", ranges_text(&to_ranges(b)), merge_names(&rests)),
                None => merge_names(&rests),
            },
            count,
            label: label.to_string(),
        })
        .collect()
}

/// Compact lines with the most common label (among those `may_default` allows) folded into
/// one closing "everything else" line.
pub(crate) fn compact_text(
    out: &mut String,
    entries: &[(&str, String)],
    may_default: impl Fn(&str) -> bool,
) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for (_, label) in entries {
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some(c) => c.1 += 1,
            None => counts.push((label, 1)),
        }
    }
    let default = counts
        .iter()
        .filter(|(l, _)| may_default(l))
        .max_by_key(|(_, n)| *n)
        .map(|(l, n)| (l.to_string(), *n));
    let rest: Vec<(&str, String)> = entries
        .iter()
        .filter(|(_, l)| default.as_ref().is_none_or(|(d, _)| l != d))
        .cloned()
        .collect();
    for line in compact(&rest) {
        let _ = writeln!(out, "  {}: {}", line.tensors, line.label);
    }
    if let Some((label, n)) = default {
        let tensors = if n == 1 { "tensor" } else { "tensors" };
        if rest.is_empty() {
            let _ = writeln!(out, "  all {n} {tensors}: {label}");
        } else {
            let _ = writeln!(out, "  everything else ({n} {tensors}): {label}");
        }
    }
}

impl Shown {
    pub(crate) fn to_json(&self) -> Value {
        json!({"type": self.ty.name(), "value": self.json})
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.summary, self.ty)
    }
}

impl ModelSummary {
    pub(crate) fn text(&self) -> String {
        let files = if self.paths.len() == 1 {
            String::new()
        } else {
            format!(" + {} more shards", self.paths.len() - 1)
        };
        format!(
            "{}{files} ({}, {})",
            self.paths[0].display(),
            plural_count(self.tensors, "tensor"),
            plural_count(self.keys, "key")
        )
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({"files": self.paths, "tensors": self.tensors, "keys": self.keys})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(plural_count(1, "tensor"), "1 tensor");
        assert_eq!(plural_count(0, "key"), "0 keys");
        assert_eq!(plural_count(2, "file"), "2 files");
    }
}
