//! `diff --values` reports as text and JSON.

#![warn(missing_docs)]

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::shape;
use crate::compare::{NotCompared, TensorValues, ValueStatus, ValuesReport};
use crate::distance::Sums;
use crate::roles::Role;

/// A distance or cosine for text: `0`, `1.234e-5`, `0.4123`, `inf`, `NaN`.
pub fn number(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x.abs() < 1e-3 {
        format!("{x:.2e}")
    } else {
        format!("{x:.4}")
    }
}

/// A number for JSON: non-finite values (an all-zero B, NaN in a parent) are `null`.
fn json_number(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

impl NotCompared {
    /// Why, for reports.
    pub fn label(&self) -> String {
        match self {
            NotCompared::OnlyInA => "only in A".into(),
            NotCompared::OnlyInB => "only in B".into(),
            NotCompared::Shape { a, b } => format!("shape {} vs {}", shape(a), shape(b)),
            NotCompared::Type { ty } => format!("ggml cannot dequantize {ty}"),
            NotCompared::Layout(why) => format!("B's layout: {why}"),
        }
    }

    /// The name JSON reports use.
    pub fn kind(&self) -> &'static str {
        match self {
            NotCompared::OnlyInA => "only_in_a",
            NotCompared::OnlyInB => "only_in_b",
            NotCompared::Shape { .. } => "shape_differs",
            NotCompared::Type { .. } => "cannot_dequantize",
            NotCompared::Layout(_) => "layout",
        }
    }
}

/// Minimum, median and maximum of the experts' distances, and the farthest expert.
fn expert_spread(experts: &[Sums]) -> Option<(f64, f64, f64, usize)> {
    let mut d: Vec<(f64, usize)> = experts
        .iter()
        .enumerate()
        .map(|(e, s)| (s.distance(), e))
        .collect();
    if d.is_empty() {
        return None;
    }
    // NaN sorts last, as the largest: it is never "close".
    d.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let (max, far) = d[d.len() - 1];
    Some((d[0].0, d[(d.len() - 1) / 2].0, max, far))
}

fn types(t: &TensorValues) -> String {
    let name = |ty: Option<crate::ggml_type::GgmlType>| ty.map_or("-", |t| t.name());
    if t.a_type == t.b_type {
        name(t.a_type).to_string()
    } else {
        format!("{}/{}", name(t.a_type), name(t.b_type))
    }
}

/// The text report: one line per tensor, then the summaries by role and by layer.
pub fn values_text(r: &ValuesReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {}", r.a.text());
    let _ = writeln!(out, "B: {}", r.b.text());
    let _ = writeln!(
        out,
        "distance: ‖A − B‖ / ‖B‖ of the dequantized values (0: equal values; about 1.41 for unrelated weights of one scale); cosine: ⟨A, B⟩ / (‖A‖ ‖B‖)"
    );
    let _ = writeln!(
        out,
        "\n  {:<36} {:<14} {:>9} {:>8}  experts: min / median / max distance (farthest)",
        "tensor", "type (A/B)", "distance", "cosine"
    );
    for t in &r.tensors {
        let line = match &t.status {
            ValueStatus::Compared { whole, experts } => {
                let spread = experts
                    .as_deref()
                    .and_then(expert_spread)
                    .map(|(min, med, max, far)| {
                        format!(
                            "  {} / {} / {} (expert {far})",
                            number(min),
                            number(med),
                            number(max)
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{:>9} {:>8}{spread}",
                    number(whole.distance()),
                    number(whole.cosine())
                )
            }
            ValueStatus::NotCompared(n) => format!("not compared: {}", n.label()),
        };
        let _ = writeln!(out, "  {:<36} {:<14} {line}", t.name, types(t));
    }

    let _ = writeln!(
        out,
        "\nby role (each role's tensors together: ‖ΔW‖ / ‖W‖ of their concatenation):"
    );
    let _ = writeln!(
        out,
        "  {:<16} {:>7} {:>9} {:>8}",
        "role", "tensors", "distance", "cosine"
    );
    for (role, p) in r.by_role() {
        let _ = writeln!(
            out,
            "  {:<16} {:>7} {:>9} {:>8}",
            role.label(),
            p.tensors,
            number(p.sums.distance()),
            number(p.sums.cosine())
        );
    }

    let cells = r.by_layer_role();
    let roles: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|role| cells.iter().any(|(_, r, _)| r == role))
        .collect();
    if !roles.is_empty() {
        let _ = writeln!(out, "\nby layer and role (distance):");
        let mut head = format!("  {:<7}", "layer");
        for role in &roles {
            let _ = write!(head, " {:>14}", role.label());
        }
        let _ = writeln!(out, "{}", head.trim_end());
        let mut layers: Vec<Option<u64>> = cells.iter().map(|(l, _, _)| *l).collect();
        layers.dedup();
        for layer in layers {
            let mut line = format!("  {:<7}", layer.map_or("-".to_string(), |l| l.to_string()));
            for role in &roles {
                let cell = cells
                    .iter()
                    .find(|(l, r, _)| *l == layer && r == role)
                    .map_or(String::new(), |(_, _, p)| number(p.sums.distance()));
                let _ = write!(line, " {cell:>14}");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let skipped = r.not_compared().count();
    if skipped > 0 {
        let _ = writeln!(out, "\n{skipped} tensors not compared (listed above)");
    }
    out
}

/// The JSON report: every tensor with its distance and cosine (and each expert's), and the
/// summaries. Non-finite numbers are `null`.
pub fn values_json(r: &ValuesReport) -> Value {
    let tensors: Vec<Value> = r
        .tensors
        .iter()
        .map(|t| {
            let mut v = json!({
                "name": t.name, "role": t.class.role.key(), "layer": t.class.layer,
                "type": {"a": t.a_type.map(|t| t.name()), "b": t.b_type.map(|t| t.name())},
                "shape": t.dims,
            });
            let o = v.as_object_mut().expect("object");
            match &t.status {
                ValueStatus::Compared { whole, experts } => {
                    o.insert("status".into(), json!("compared"));
                    o.insert("distance".into(), json_number(whole.distance()));
                    o.insert("cosine".into(), json_number(whole.cosine()));
                    if let Some(e) = experts {
                        o.insert(
                            "experts".into(),
                            json!({
                                "distance": e.iter().map(|s| json_number(s.distance())).collect::<Vec<_>>(),
                                "cosine": e.iter().map(|s| json_number(s.cosine())).collect::<Vec<_>>(),
                            }),
                        );
                    }
                }
                ValueStatus::NotCompared(n) => {
                    o.insert("status".into(), json!(n.kind()));
                    o.insert("reason".into(), json!(n.label()));
                }
            }
            v
        })
        .collect();
    let pooled = |p: &crate::compare::Pooled| {
        json!({
            "tensors": p.tensors, "distance": json_number(p.sums.distance()),
            "cosine": json_number(p.sums.cosine()),
        })
    };
    let by_role: Vec<Value> = r
        .by_role()
        .iter()
        .map(|(role, p)| {
            let mut v = pooled(p);
            v["role"] = json!(role.key());
            v
        })
        .collect();
    let by_layer: Vec<Value> = r
        .by_layer_role()
        .iter()
        .map(|(layer, role, p)| {
            let mut v = pooled(p);
            v["layer"] = json!(layer);
            v["role"] = json!(role.key());
            v
        })
        .collect();
    json!({
        "a": r.a.to_json(),
        "b": r.b.to_json(),
        "distance": "relative: ‖A − B‖ / ‖B‖ of the dequantized values; null: infinite (B all zeros) or NaN",
        "tensors": tensors,
        "by_role": by_role,
        "by_layer_role": by_layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(0.41234), "0.4123");
        assert_eq!(number(1.234e-5), "1.23e-5");
        assert_eq!(number(f64::INFINITY), "inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(json_number(f64::INFINITY), Value::Null);
    }

    #[test]
    fn spread_names_the_farthest_expert() {
        let e: Vec<Sums> = [0.5f32, 0.1, 0.3]
            .iter()
            .map(|&x| Sums::row(&[1.0 + x], &[1.0]))
            .collect();
        let (min, med, max, far) = expert_spread(&e).unwrap();
        assert!((min - 0.1).abs() < 1e-6 && (med - 0.3).abs() < 1e-6);
        assert!((max - 0.5).abs() < 1e-6 && far == 0);
    }
}
