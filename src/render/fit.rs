//! `fit --dry-run`: the choice, unit by unit grouped by layer and role, the totals, and the
//! best next upgrades; and its JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::human_bytes;
use crate::fit::Fitted;

/// A unit's candidate as `parent TYPE`.
fn source(f: &Fitted, unit: usize, cand: usize) -> String {
    let c = &f.estimate.units[unit].candidates[cand];
    format!("{} {}", f.plan.parents[c.parent].name, c.ty.name())
}

/// The order units are listed in: by layer (tensors outside blocks first), then role.
fn order(f: &Fitted) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..f.estimate.units.len()).collect();
    idx.sort_by_key(|&i| {
        let u = &f.estimate.units[i];
        (u.layer, u.role.order())
    });
    idx
}

/// The text of a fit.
pub fn fit_text(f: &Fitted) -> String {
    let mut out = String::new();
    let units = &f.estimate.units;
    let _ = writeln!(
        out,
        "{:<6} {:<15} {:<32} {:<16} {:>12} {:>12}",
        "layer", "role", "unit", "from", "bytes", "est. error"
    );
    for i in order(f) {
        let u = &units[i];
        let c = f.chosen(i);
        let _ = writeln!(
            out,
            "{:<6} {:<15} {:<32} {:<16} {:>12} {:>12.4e}",
            u.layer.map_or("-".to_string(), |l| l.to_string()),
            u.role.key(),
            u.label,
            source(f, i, f.choice[i]),
            c.bytes,
            c.error
        );
    }
    let _ = writeln!(out);
    for (p, parent) in f.plan.parents.iter().enumerate() {
        let (n, b) = units
            .iter()
            .enumerate()
            .filter(|(i, _)| f.chosen(*i).parent == p)
            .fold((0usize, 0u64), |(n, b), (i, _)| {
                (n + 1, b + f.chosen(i).bytes)
            });
        let _ = writeln!(
            out,
            "from {:<12} {:>5} units {:>14} bytes ({})",
            parent.name,
            n,
            b,
            human_bytes(b)
        );
    }
    let _ = writeln!(
        out,
        "child {} bytes ({}) of budget {} ({}); smallest possible child {} bytes",
        f.child_bytes(),
        human_bytes(f.child_bytes()),
        f.budget,
        human_bytes(f.budget),
        f.minimum
    );
    let _ = writeln!(out, "estimated error {:.6e}", f.error());
    let read: Vec<String> = f
        .plan
        .parents
        .iter()
        .zip(&f.estimate.bytes_read)
        .map(|(p, b)| format!("{} {}", p.name, human_bytes(*b)))
        .collect();
    let _ = writeln!(
        out,
        "estimate: {}% of rows sampled; bytes read: {}",
        f.estimate.sample * 100.0,
        read.join(", ")
    );
    if !f.estimate.unweighted.is_empty() {
        let _ = writeln!(
            out,
            "not in the importance matrix (weighed with 1): {}",
            f.estimate.unweighted.join(", ")
        );
    }
    if !f.upgrades.is_empty() {
        let _ = writeln!(out, "\nnext upgrades (most error saved per byte first):");
        for u in &f.upgrades {
            let _ = writeln!(
                out,
                "  {:<32} {} -> {}  +{} bytes ({})  saves {:.4e}",
                units[u.item].label,
                source(f, u.item, f.choice[u.item]),
                source(f, u.item, u.to),
                u.bytes,
                human_bytes(u.bytes),
                u.saves
            );
        }
    }
    out
}

/// The JSON of a fit.
pub fn fit_json(f: &Fitted) -> Value {
    let names = |p: usize| f.plan.parents[p].name.clone();
    let units: Vec<Value> = order(f)
        .into_iter()
        .map(|i| {
            let u = &f.estimate.units[i];
            json!({
                "unit": u.label,
                "layer": u.layer,
                "role": u.role.key(),
                "tensors": u.tensors,
                "runs_per_token": u.runs,
                "reference": names(u.reference),
                "chosen": names(f.chosen(i).parent),
                "candidates": u.candidates.iter().map(|c| json!({
                    "parent": names(c.parent),
                    "type": c.ty.name(),
                    "bytes": c.bytes,
                    "error": c.error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "budget": f.budget,
        "child_bytes": f.child_bytes(),
        "minimum_bytes": f.minimum,
        "error": f.error(),
        "sample": f.estimate.sample,
        "bytes_read": f.plan.parents.iter().zip(&f.estimate.bytes_read)
            .map(|(p, b)| (p.name.clone(), json!(b))).collect::<serde_json::Map<_, _>>(),
        "unweighted": f.estimate.unweighted,
        "units": units,
        "upgrades": f.upgrades.iter().map(|u| json!({
            "unit": f.estimate.units[u.item].label,
            "from": names(f.chosen(u.item).parent),
            "to": names(f.estimate.units[u.item].candidates[u.to].parent),
            "bytes": u.bytes,
            "saves": u.saves,
        })).collect::<Vec<_>>(),
        "recipe": f.recipe_text,
    })
}
