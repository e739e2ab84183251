//! `verify` reports as text and JSON.

use std::fmt::{self, Write as _};
use std::ops::Range;

use serde_json::{Value, json};

use super::{compact, compact_text, ranges_json, ranges_text, shape, short_ranges_text};
use crate::compare::{Mismatch, Sources, TensorSources, VerifyReport};

/// Mismatches shown in a text report; the JSON has them all.
const SHOWN_MISMATCHES: usize = 20;

impl Sources {
    /// `v3`, `v3|r1` (identical in both), `no parent`, or `v3[0,3] r1[1-2]`.
    pub fn label(&self) -> String {
        match self {
            Sources::Whole(p) => parents_label(p),
            Sources::Experts(runs) => {
                let parts: Vec<String> = runs
                    .iter()
                    .map(|r| {
                        format!(
                            "{}[{}]",
                            parents_label(&r.parents),
                            short_ranges_text(&r.experts)
                        )
                    })
                    .collect();
                parts.join(" ")
            }
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        match self {
            Sources::Whole(p) => json!({"parents": p}),
            Sources::Experts(runs) => json!({"experts": runs.iter().map(|r| json!({
                "parents": r.parents, "experts": ranges_json(&r.experts),
            })).collect::<Vec<_>>()}),
        }
    }
}

impl Mismatch {
    pub(crate) fn to_json(&self) -> Value {
        let mut v = match self {
            Mismatch::MissingTensor { tensor, position }
            | Mismatch::ExtraTensor { tensor, position } => {
                json!({"tensor": tensor, "position": position})
            }
            Mismatch::TensorOrder {
                position,
                expected,
                found,
            } => json!({"position": position, "expected": expected, "found": found}),
            Mismatch::TypeDiffers {
                tensor,
                expected,
                found,
            } => json!({"tensor": tensor, "expected": expected.name(), "found": found.name()}),
            Mismatch::ShapeDiffers {
                tensor,
                expected,
                found,
            } => json!({"tensor": tensor, "expected": expected, "found": found}),
            Mismatch::BytesDiffer {
                tensor,
                experts,
                expected,
                found,
                first_offset,
            } => json!({
                "tensor": tensor, "experts": experts.as_deref().map(ranges_json),
                "expected": expected, "found": found.to_json(),
                "first_difference": first_offset,
            }),
            Mismatch::MissingKey { key, expected } => {
                json!({"key": key, "expected": expected.to_json()})
            }
            Mismatch::ExtraKey { key, found } => json!({"key": key, "found": found.to_json()}),
            Mismatch::KeyDiffers {
                key,
                expected,
                found,
            } => json!({"key": key, "expected": expected.to_json(), "found": found.to_json()}),
        };
        v.as_object_mut()
            .expect("object")
            .insert("kind".into(), json!(self.kind()));
        v
    }
}

fn parents_label(parents: &[String]) -> String {
    if parents.is_empty() {
        "no parent".into()
    } else {
        parents.join("|")
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingTensor { tensor, position } => write!(
                f,
                "{tensor}: the recipe makes it (tensor #{position}), the child lacks it"
            ),
            Mismatch::ExtraTensor { tensor, position } => write!(
                f,
                "{tensor}: in the child (tensor #{position}), the recipe does not make it"
            ),
            Mismatch::TensorOrder {
                position,
                expected,
                found,
            } => write!(
                f,
                "tensor order: #{position} should be {expected}, the child has {found}"
            ),
            Mismatch::TypeDiffers {
                tensor,
                expected,
                found,
            } => write!(f, "{tensor}: type {found}, the recipe makes {expected}"),
            Mismatch::ShapeDiffers {
                tensor,
                expected,
                found,
            } => write!(
                f,
                "{tensor}: shape {}, the recipe makes {}",
                shape(found),
                shape(expected)
            ),
            Mismatch::BytesDiffer {
                tensor,
                experts,
                expected,
                found,
                first_offset,
            } => {
                let experts = experts
                    .as_ref()
                    .map(|e| format!(" experts {}", ranges_text(e)))
                    .unwrap_or_default();
                let at = first_offset
                    .map(|o| format!(" (first difference at byte {o} of the tensor)"))
                    .unwrap_or_default();
                write!(
                    f,
                    "{tensor}{experts}: expected {expected}, found {}{at}",
                    found.label()
                )
            }
            Mismatch::MissingKey { key, expected } => {
                write!(f, "key {key}: missing, the recipe makes {expected}")
            }
            Mismatch::ExtraKey { key, found } => {
                write!(f, "key {key}: {found}, the recipe does not make it")
            }
            Mismatch::KeyDiffers {
                key,
                expected,
                found,
            } => write!(f, "key {key}: {found}, the recipe makes {expected}"),
        }
    }
}

/// `verify`'s text report: each tensor's sources grouped compactly, the tensors that match
/// no parent, with a recipe the first mismatches (the JSON has them all), then OK or
/// MISMATCH.
pub fn verify_text(r: &VerifyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "child: {}", r.child.text());
    for (name, path) in &r.parents {
        let _ = writeln!(out, "parent {name}: {}", path.display());
    }
    let assembled = r.recipe.as_ref().is_some_and(|c| c.assembled);
    let _ = writeln!(
        out,
        "\nsources (byte for byte; a|b: identical in both{}):",
        if assembled {
            "; expert numbers are the child's, `assemble --dry-run` shows where each came from"
        } else {
            ""
        }
    );
    let entries: Vec<(&str, String)> = r
        .tensors
        .iter()
        .filter(|t| !t.sources.matches_no_parent())
        .map(|t| (t.name.as_str(), t.sources.label()))
        .collect();
    // Only a single, whole-tensor source may be summed up as "everything else".
    compact_text(&mut out, &entries, |l| !l.contains('['));

    let unmatched: Vec<&TensorSources> = r.unmatched().collect();
    if !unmatched.is_empty() {
        let _ = writeln!(out, "\nmatches no parent ({}):", unmatched.len());
        for t in unmatched {
            let why = if t.compared.is_empty() {
                format!("no parent has it as {} {}", t.ty, shape(&t.dims))
            } else {
                format!("compared with {}", t.compared.join(", "))
            };
            let _ = match &t.sources {
                Sources::Whole(_) => writeln!(out, "  {}: matches no parent ({why})", t.name),
                Sources::Experts(runs) => {
                    let none: Vec<Range<u64>> = runs
                        .iter()
                        .filter(|r| r.parents.is_empty())
                        .flat_map(|r| r.experts.iter().cloned())
                        .collect();
                    let mut none = none;
                    none.sort_by_key(|r| r.start);
                    writeln!(
                        out,
                        "  {}: experts {} match no parent ({}; {why})",
                        t.name,
                        ranges_text(&none),
                        t.sources.label()
                    )
                }
            };
        }
    }

    if !r.torn.is_empty() {
        let _ = writeln!(
            out,
            "\nweight and companion from different parents ({}): the child computes values neither parent has:",
            r.torn.len()
        );
        for u in &r.torn {
            let experts = u
                .experts
                .as_ref()
                .map(|e| format!(" experts {}", ranges_text(e)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}{experts}: from {}, but {} from {}",
                u.weight,
                u.weight_from.join("|"),
                u.companion,
                u.companion_from.join("|")
            );
        }
    }

    let mixed: Vec<&TensorSources> = r.mixed().collect();
    if !mixed.is_empty() {
        let how = if r.recipe.is_some() {
            "computed again from the parents by the recipe's mix rules and compared below"
        } else {
            "the recipe the child records (splice.recipe) mixes them; give --recipe to compute them again and compare"
        };
        let _ = writeln!(out, "\nmixed ({}): {how}:", mixed.len());
        for t in mixed {
            let _ = writeln!(
                out,
                "  {}: matches no parent (mixed{})",
                t.name,
                if r.recipe.is_some() { "" } else { "?" }
            );
        }
    }

    match &r.recipe {
        None => {}
        Some(c) if c.mismatches.is_empty() => {
            let (what, makes) = if c.assembled {
                (
                    "assembly",
                    "the assembly makes, every expert from the parent expert it came from",
                )
            } else {
                ("recipe", "the recipe makes")
            };
            let _ = writeln!(
                out,
                "\n{what}: {} tensors and {} keys checked: the child is exactly what {makes} (splice.recipe and split.* keys aside)",
                c.tensors, c.keys
            );
        }
        Some(c) => {
            let _ = writeln!(
                out,
                "\n{}: {} tensors and {} keys checked: {} difference{}:",
                if c.assembled { "assembly" } else { "recipe" },
                c.tensors,
                c.keys,
                c.mismatches.len(),
                if c.mismatches.len() == 1 { "" } else { "s" }
            );
            for m in c.mismatches.iter().take(SHOWN_MISMATCHES) {
                let _ = writeln!(out, "  {m}");
            }
            if c.mismatches.len() > SHOWN_MISMATCHES {
                let _ = writeln!(
                    out,
                    "  ... and {} more (--json lists them all)",
                    c.mismatches.len() - SHOWN_MISMATCHES
                );
            }
        }
    }
    let verdict = match (r.passed(), &r.recipe) {
        (true, Some(_)) => "OK",
        // Without a recipe only the tensors were compared: say so, never a bare OK.
        (true, None) => {
            "tensors OK (metadata and tensor order not checked without --recipe or --take)"
        }
        (false, _) => "MISMATCH",
    };
    let _ = writeln!(out, "\nverify: {verdict}");
    out
}

/// `verify --json`: every tensor's sources and every mismatch, with `passed`.
pub fn verify_json(r: &VerifyReport) -> Value {
    let entries: Vec<(&str, String)> = r
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.sources.label()))
        .collect();
    json!({
        "child": r.child.to_json(),
        "parents": r.parents.iter().map(|(n, p)| json!({"name": n, "path": p})).collect::<Vec<_>>(),
        "tensors": r.tensors.iter().map(|t| json!({
            "name": t.name, "type": t.ty.name(), "shape": t.dims, "group": t.group.label(),
            "compared": t.compared, "sources": t.sources.to_json(),
            "matches_no_parent": t.sources.matches_no_parent(), "mixed": t.mixed,
        })).collect::<Vec<_>>(),
        "summary": compact(&entries).iter().map(|l| json!({
            "tensors": l.tensors, "count": l.count, "sources": l.label,
        })).collect::<Vec<_>>(),
        "unmatched": r.unmatched().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "mixed": r.mixed().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "torn_units": r.torn.iter().map(|u| json!({
            "weight": u.weight, "companion": u.companion,
            "experts": u.experts.as_ref().map(|e| ranges_json(e)),
            "weight_from": u.weight_from, "companion_from": u.companion_from,
        })).collect::<Vec<_>>(),
        "recipe": r.recipe.as_ref().map(|c| json!({
            "assembled": c.assembled, "tensors": c.tensors, "keys": c.keys,
            "mismatches": c.mismatches.iter().map(Mismatch::to_json).collect::<Vec<_>>(),
        })),
        "passed": r.passed(),
        "checked": if r.recipe.is_some() { "tensors and metadata" } else { "tensors only" },
    })
}
