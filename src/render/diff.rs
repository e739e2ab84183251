//! `diff` reports as text and JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{compact_text, plural_count, ranges_json, ranges_text, shape};
use crate::compare::{DiffReport, KeyStatus, TensorStatus, ValueDiff};

impl TensorStatus {
    pub(crate) fn label(&self) -> String {
        match self {
            TensorStatus::Identical => "identical".into(),
            TensorStatus::BytesDiffer { experts: None, .. } => "bytes differ".into(),
            TensorStatus::BytesDiffer {
                experts: Some(e), ..
            } => format!(
                "bytes differ in experts {} of {}",
                ranges_text(&e.differ),
                e.count
            ),
            TensorStatus::TypeDiffers {
                a,
                b,
                a_dims,
                b_dims,
            } => {
                let shapes = if a_dims != b_dims {
                    format!(", shape {} vs {}", shape(a_dims), shape(b_dims))
                } else {
                    String::new()
                };
                format!("type {a} vs {b}{shapes}")
            }
            TensorStatus::ShapeDiffers { a, b } => format!("shape {} vs {}", shape(a), shape(b)),
            TensorStatus::OnlyInA => "only in A".into(),
            TensorStatus::OnlyInB => "only in B".into(),
        }
    }
}

/// `diff`'s text report: counts by status, tensors grouped compactly (the identical ones
/// folded into one line), totals by group, differing keys, and the verdict. For people;
/// scripts should read [`diff_json`].
pub fn diff_text(r: &DiffReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {}", r.a.text());
    let _ = writeln!(out, "B: {}", r.b.text());
    let counts: Vec<String> = [
        ("identical", "identical"),
        ("bytes_differ", "differ in bytes"),
        ("type_differs", "differ in type"),
        ("shape_differs", "differ in shape"),
        ("only_in_a", "only in A"),
        ("only_in_b", "only in B"),
    ]
    .iter()
    .filter_map(|(kind, text)| {
        let n = r.count(kind);
        (n > 0).then(|| format!("{n} {text}"))
    })
    .collect();
    let _ = writeln!(
        out,
        "\ntensors: {}",
        if counts.is_empty() {
            "none".into()
        } else {
            counts.join(", ")
        }
    );
    let entries: Vec<(&str, String)> = r
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.status.label()))
        .collect();
    compact_text(&mut out, &entries, |l| l == "identical");

    let _ = writeln!(
        out,
        "\n  {:<16} {:>7} {:>9} {:>6} {:>5} {:>6} {:>7} {:>7}",
        "group", "tensors", "identical", "bytes", "type", "shape", "only A", "only B"
    );
    for g in r.groups() {
        let _ = writeln!(
            out,
            "  {:<16} {:>7} {:>9} {:>6} {:>5} {:>6} {:>7} {:>7}",
            g.group,
            g.tensors,
            g.identical,
            g.bytes_differ,
            g.type_differs,
            g.shape_differs,
            g.only_in_a,
            g.only_in_b
        );
    }

    if r.keys.is_empty() {
        let _ = writeln!(out, "\nmetadata: identical (split.* keys ignored)");
    } else {
        let _ = writeln!(
            out,
            "\nmetadata: {} differ{} (split.* keys ignored)",
            plural_count(r.keys.len(), "key"),
            if r.keys.len() == 1 { "s" } else { "" }
        );
        for k in &r.keys {
            let _ = match &k.status {
                KeyStatus::OnlyInA(v) => writeln!(out, "  {}: only in A: {v}", k.key),
                KeyStatus::OnlyInB(v) => writeln!(out, "  {}: only in B: {v}", k.key),
                KeyStatus::Differs { a, b } => writeln!(out, "  {}: {a} vs {b}", k.key),
            };
            if let Some(d) = &k.detail {
                let _ = writeln!(out, "    {}", detail_text(d));
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        if r.identical() {
            "the models are identical"
        } else {
            "the models differ"
        }
    );
    out
}

/// `diff --json`: every tensor with its status (and first differing byte or experts), every
/// differing key, and totals by group. Scripts depend on its field names: add, never rename.
pub fn diff_json(r: &DiffReport) -> Value {
    let tensors: Vec<Value> = r
        .tensors
        .iter()
        .map(|t| {
            let mut v =
                json!({"name": t.name, "group": t.group.label(), "status": t.status.kind()});
            let o = v.as_object_mut().expect("object");
            match &t.status {
                TensorStatus::BytesDiffer {
                    first_offset,
                    experts,
                } => {
                    o.insert("first_difference".into(), json!(first_offset));
                    if let Some(e) = experts {
                        o.insert(
                            "experts".into(),
                            json!({"count": e.count, "differ": ranges_json(&e.differ)}),
                        );
                    }
                }
                TensorStatus::TypeDiffers {
                    a,
                    b,
                    a_dims,
                    b_dims,
                } => {
                    o.insert("type".into(), json!({"a": a.name(), "b": b.name()}));
                    o.insert("shape".into(), json!({"a": a_dims, "b": b_dims}));
                }
                TensorStatus::ShapeDiffers { a, b } => {
                    o.insert("shape".into(), json!({"a": a, "b": b}));
                }
                _ => {}
            }
            v
        })
        .collect();
    let keys: Vec<Value> = r
        .keys
        .iter()
        .map(|k| {
            let mut v = match &k.status {
                KeyStatus::OnlyInA(v) => {
                    json!({"key": k.key, "status": "only_in_a", "a": v.to_json()})
                }
                KeyStatus::OnlyInB(v) => {
                    json!({"key": k.key, "status": "only_in_b", "b": v.to_json()})
                }
                KeyStatus::Differs { a, b } => {
                    json!({"key": k.key, "status": "differs", "a": a.to_json(), "b": b.to_json()})
                }
            };
            if let Some(d) = &k.detail {
                v["first_difference"] = detail_json(d);
            }
            v
        })
        .collect();
    let groups: Vec<Value> = r
        .groups()
        .iter()
        .map(|g| {
            json!({
                "group": g.group.label(), "tensors": g.tensors, "identical": g.identical,
                "bytes_differ": g.bytes_differ, "type_differs": g.type_differs,
                "shape_differs": g.shape_differs, "only_in_a": g.only_in_a,
                "only_in_b": g.only_in_b,
            })
        })
        .collect();
    let counts: serde_json::Map<String, Value> = [
        "identical",
        "bytes_differ",
        "type_differs",
        "shape_differs",
        "only_in_a",
        "only_in_b",
    ]
    .iter()
    .map(|k| (k.to_string(), json!(r.count(k))))
    .collect();
    json!({
        "a": r.a.to_json(),
        "b": r.b.to_json(),
        "identical": r.identical(),
        "counts": counts,
        "groups": groups,
        "tensors": tensors,
        "metadata": keys,
    })
}

fn detail_text(d: &ValueDiff) -> String {
    match d {
        ValueDiff::Array {
            first,
            a,
            b,
            differing,
            len_a,
            len_b,
        } => {
            let show = |v: &Option<crate::compare::Shown>| {
                v.as_ref()
                    .map_or("(past the end)".to_string(), |v| v.summary.clone())
            };
            let lens = if len_a == len_b {
                format!("{len_a} elements")
            } else {
                format!("{len_a} vs {len_b} elements")
            };
            format!(
                "first difference at [{first}]: {} vs {}; {differing} of {lens} differ",
                show(a),
                show(b)
            )
        }
        ValueDiff::Text { at, a, b } => {
            format!("first difference at byte {at}: ...{a:?}... vs ...{b:?}...")
        }
    }
}

fn detail_json(d: &ValueDiff) -> Value {
    match d {
        ValueDiff::Array {
            first,
            a,
            b,
            differing,
            len_a,
            len_b,
        } => json!({
            "index": first,
            "a": a.as_ref().map(|v| v.json.clone()),
            "b": b.as_ref().map(|v| v.json.clone()),
            "differing": differing, "len_a": len_a, "len_b": len_b,
        }),
        ValueDiff::Text { at, a, b } => json!({"byte": at, "a": a, "b": b}),
    }
}
