//! `verify`'s unit check: a weight and its companions ([`roles::unit`](crate::roles::unit))
//! must have come from one parent, expert by expert. A child with one parent's expert
//! blocks and another's `.scale` matches a parent tensor by tensor, yet computes values that
//! neither parent has; this check names it.

use super::report::{TornUnit, expert_runs};
use super::to_ranges;
use crate::gguf::Model;
use crate::roles::unit::Units;

/// Per child tensor, per slice: the parents (indices into `names`) its bytes match.
type Sets = [Vec<Vec<usize>>];

/// Every weight and companion of `child` whose bytes match parents with nothing in common,
/// slice by slice. Tensors that match no parent at all are not listed here (they are
/// reported as such).
pub(super) fn torn_units(child: &Model, sets: &Sets, names: &[String]) -> Vec<TornUnit> {
    let units = Units::of(child);
    let index: std::collections::HashMap<&str, usize> = child
        .tensors()
        .enumerate()
        .map(|(i, t)| (t.info.name.as_str(), i))
        .collect();
    let mut out = Vec::new();
    for (ci, t) in child.tensors().enumerate() {
        let Some(weight) = units.head(&t.info.name) else {
            continue;
        };
        let Some(&wi) = index.get(weight) else {
            continue;
        };
        let (w, c) = (&sets[wi], &sets[ci]);
        // Slices are compared pairwise; a tensor taken whole (one slice) against each slice
        // of the other.
        let n = w.len().max(c.len());
        if !(w.len() == c.len() || w.len() == 1 || c.len() == 1) {
            continue;
        }
        let at = |s: &Vec<Vec<usize>>, e: usize| if s.len() == 1 { 0 } else { e };
        let torn: Vec<u64> = (0..n)
            .filter(|&e| {
                let (a, b) = (&w[at(w, e)], &c[at(c, e)]);
                !a.is_empty() && !b.is_empty() && !a.iter().any(|p| b.contains(p))
            })
            .map(|e| e as u64)
            .collect();
        let Some(&first) = torn.first() else {
            continue;
        };
        let label = |s: &Vec<Vec<usize>>| {
            expert_runs(s, std::iter::once(at(s, first as usize) as u64), names)
                .into_iter()
                .next()
                .map(|r| r.parents)
                .unwrap_or_default()
        };
        out.push(TornUnit {
            weight: weight.to_string(),
            companion: t.info.name.clone(),
            experts: (n > 1).then(|| to_ranges(torn.clone())),
            weight_from: label(w),
            companion_from: label(c),
        });
    }
    out
}
