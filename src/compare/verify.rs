//! `verify`: which parent each tensor and expert of a child matches byte for byte, through
//! each parent's view of the child's layout; with a recipe, whether the child is exactly what
//! the plan makes: every planned piece checked against the parent it names.

use std::collections::HashMap;
use std::ops::Range;

use super::engine::{FileSet, FirstDiffs, Slicing, Target, compare_targets, slicing};
use super::pieces::{self, PieceCheck, is_direct};
use super::report::{Mismatch, RecipeCheck, Sources, TensorSources, VerifyReport, expert_runs};
use super::{CompareError, CompareOptions, ModelSummary, Shown, is_split_key, to_ranges};
use super::{mixed, units};
use crate::gguf::Model;
use crate::plan::{
    self, KEY_SPLICE_RECIPE, Parent, Plan, PlanError, PlannedTensor, Source, SplitOptions,
};
use crate::recipe::Recipe;
use crate::roles;
use crate::roles::views;

/// Which parent each tensor (and each expert) of `child` matches byte for byte; with a
/// recipe, whether the child is exactly what `plan::build` makes of these parents. A parent
/// that stores routed experts in another layout (fused gate/up) is compared through its view
/// of the child's layout.
pub fn verify(
    child: &Model,
    parents: &[Parent],
    recipe: Option<&Recipe>,
    opts: &CompareOptions,
) -> Result<VerifyReport, CompareError> {
    if parents.is_empty() {
        return Err(PlanError::NoParents.into());
    }
    for (i, p) in parents.iter().enumerate() {
        if parents[..i].iter().any(|q| q.name == p.name) {
            return Err(PlanError::DuplicateParent {
                name: p.name.clone(),
            }
            .into());
        }
    }
    let plan = recipe
        .map(|r| plan::build(parents, r, child.path(), SplitOptions::default()))
        .transpose()?;
    run(child, parents, plan.as_ref(), opts)
}

/// [`verify`] against a plan made by any planner, such as an assembled MoE's
/// ([`assemble`](crate::assemble)): where each tensor and expert came from, and whether the
/// child is exactly what the plan makes. Pieces whose bytes moved (output expert 4 from a
/// parent's expert 0, a dense FFN stacked as one expert) or were made (a router) are checked
/// against the source the plan names.
pub fn verify_plan(
    child: &Model,
    plan: &Plan,
    opts: &CompareOptions,
) -> Result<VerifyReport, CompareError> {
    run(child, plan.parents, Some(plan), opts)
}

fn run(
    child: &Model,
    parents: &[Parent],
    plan: Option<&Plan>,
    opts: &CompareOptions,
) -> Result<VerifyReport, CompareError> {
    let mut files = FileSet::default();
    let fc = files.add(child)?;
    let fp: Vec<usize> = parents
        .iter()
        .map(|p| files.add(&p.model))
        .collect::<Result<_, _>>()?;
    // The sources bytes can match: the parents, then (added by piece checks) made bytes.
    let mut names: Vec<String> = parents.iter().map(|p| p.name.clone()).collect();

    // Planned tensors checked piece by piece, by the child's tensor index.
    let mut direct: HashMap<usize, &PlannedTensor> = HashMap::new();
    for pt in plan
        .iter()
        .flat_map(|p| p.tensors.iter().filter(|t| is_direct(p, t)))
    {
        if let Some(i) = child.tensors().position(|t| t.info.name == pt.info.name) {
            let t = child.tensor(&pt.info.name).expect("found");
            if t.info.ty == pt.info.ty && t.info.dims == pt.info.dims {
                direct.insert(i, pt);
            }
        }
    }

    // One target per child tensor: its bytes against each parent's view of it, where the
    // parent has it (or a layout it converts from) with the same type and cut.
    let mut targets: Vec<Target> = Vec::with_capacity(child.tensor_count());
    let mut cands: Vec<Vec<usize>> = Vec::with_capacity(child.tensor_count());
    for (ti, t) in child.tensors().enumerate() {
        let sl = slicing(t.info);
        let mut idx = Vec::new();
        let mut vs = Vec::new();
        for (i, p) in parents.iter().enumerate() {
            if direct.contains_key(&ti) {
                break;
            }
            if let Ok(v) = views::view(t.info, &p.model)
                && v.ty() == t.info.ty
                && v.count() == sl.count
                && v.slice_bytes() == sl.bytes
            {
                idx.push(i);
                vs.push((fp[i], v));
            }
        }
        targets.push(Target {
            tensor: t.info.name.clone(),
            slicing: sl,
            child_file: fc + t.shard,
            child_offset: t.file_offset,
            candidates: vs,
        });
        cands.push(idx);
    }

    let results = compare_targets(&targets, &files, opts)?;

    // Per child tensor, per slice: the parents it matches.
    let mut sets: Vec<Vec<Vec<usize>>> = results
        .iter()
        .zip(&cands)
        .zip(&targets)
        .map(|((firsts, idx), t)| {
            (0..t.slicing.count as usize)
                .map(|s| {
                    idx.iter()
                        .zip(firsts)
                        .filter(|(_, f)| f[s].is_none())
                        .map(|(&p, _)| p)
                        .collect()
                })
                .collect()
        })
        .collect();

    // Tensors checked piece by piece: their sources are what their pieces matched.
    let mut checks: HashMap<usize, Vec<PieceCheck>> = HashMap::new();
    let mut direct: Vec<(usize, &PlannedTensor)> = direct.into_iter().collect();
    direct.sort_by_key(|(i, _)| *i);
    for (i, pt) in direct {
        let sl = targets[i].slicing;
        let c = pieces::check_tensor(
            child,
            pt,
            sl,
            &files,
            (fc, &fp),
            &mut names,
            opts.chunk_bytes,
        )?;
        sets[i] = pieces::sets(&c, sl.count);
        let mut compared: Vec<usize> = c.iter().map(|c| c.source).collect();
        compared.sort_unstable();
        compared.dedup();
        cands[i] = compared;
        checks.insert(i, c);
    }

    let tensors: Vec<TensorSources> = child
        .tensors()
        .enumerate()
        .map(|(i, t)| {
            let sl = targets[i].slicing;
            let sets = &sets[i];
            let sources = if sl.by_expert && sets.iter().any(|s| *s != sets[0]) {
                Sources::Experts(expert_runs(sets, 0..sl.count, &names))
            } else {
                Sources::Whole(sets[0].iter().map(|&p| names[p].clone()).collect())
            };
            TensorSources {
                name: t.info.name.clone(),
                ty: t.info.ty,
                dims: t.info.dims.clone(),
                group: roles::role_of(&t.info.name),
                compared: cands[i].iter().map(|&p| names[p].clone()).collect(),
                sources,
                mixed: false,
            }
        })
        .collect();

    // Which tensors a mix rule makes: the plan's, or those the recorded recipe selects.
    let recorded = if plan.is_none() {
        mixed::recorded_mix(child)
    } else {
        None
    };
    let tensors: Vec<TensorSources> = tensors
        .into_iter()
        .map(|mut t| {
            t.mixed = match (&plan, &recorded) {
                (Some(p), _) => p.tensors.iter().any(|pt| {
                    pt.info.name == t.name
                        && pt.pieces.iter().any(|x| matches!(x.source, Source::Mix(_)))
                }),
                (None, Some(r)) => mixed::mixes(r, &t.name),
                (None, None) => false,
            };
            t
        })
        .collect();

    let torn = units::torn_units(child, &sets, &names);
    let slicings: Vec<Slicing> = targets.iter().map(|t| t.slicing).collect();
    let mut recipe = plan.map(|plan| {
        check_plan(
            child,
            plan,
            &PlanInputs {
                names: &names,
                cands: &cands,
                slicings: &slicings,
                sets: &sets,
                firsts: &results,
                checks: &checks,
            },
        )
    });
    if let (Some(plan), Some(check)) = (plan, &mut recipe) {
        let found = |name: &str| {
            tensors
                .iter()
                .find(|t| t.name == name)
                .map_or(Sources::Whole(Vec::new()), |t| t.sources.clone())
        };
        mixed::check(child, plan, parents, &found, &mut check.mismatches)?;
    }

    Ok(VerifyReport {
        child: ModelSummary::of(child),
        parents: parents
            .iter()
            .map(|p| (p.name.clone(), p.model.path().to_path_buf()))
            .collect(),
        tensors,
        recipe,
        torn,
    })
}

/// What `check_plan` needs of the comparison results.
struct PlanInputs<'a> {
    names: &'a [String],
    /// Per child tensor: the parents compared.
    cands: &'a [Vec<usize>],
    slicings: &'a [Slicing],
    /// Per child tensor, per slice: the parents matched.
    sets: &'a [Vec<Vec<usize>>],
    firsts: &'a [FirstDiffs],
    /// By child tensor index: the piece checks of tensors checked piece by piece.
    checks: &'a HashMap<usize, Vec<PieceCheck>>,
}

fn check_plan(child: &Model, plan: &plan::Plan, inp: &PlanInputs) -> RecipeCheck {
    let mut mismatches = Vec::new();

    // Tensor names and order.
    let child_names: Vec<&str> = child.tensors().map(|t| t.info.name.as_str()).collect();
    let plan_names: Vec<&str> = plan.tensors.iter().map(|t| t.info.name.as_str()).collect();
    let child_index: HashMap<&str, usize> = child_names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    let plan_index: HashMap<&str, usize> = plan_names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i))
        .collect();
    for (i, n) in plan_names.iter().enumerate() {
        if !child_index.contains_key(n) {
            mismatches.push(Mismatch::MissingTensor {
                tensor: n.to_string(),
                position: i,
            });
        }
    }
    for (i, n) in child_names.iter().enumerate() {
        if !plan_index.contains_key(n) {
            mismatches.push(Mismatch::ExtraTensor {
                tensor: n.to_string(),
                position: i,
            });
        }
    }
    let common_plan: Vec<&str> = plan_names
        .iter()
        .filter(|n| child_index.contains_key(*n))
        .copied()
        .collect();
    let common_child: Vec<(usize, &str)> = child_names
        .iter()
        .enumerate()
        .filter(|(_, n)| plan_index.contains_key(*n))
        .map(|(i, n)| (i, *n))
        .collect();
    if let Some(((position, found), expected)) = common_child
        .iter()
        .zip(&common_plan)
        .find(|((_, f), e)| f != *e)
    {
        mismatches.push(Mismatch::TensorOrder {
            position: *position,
            expected: expected.to_string(),
            found: found.to_string(),
        });
    }

    // Each planned tensor: type, shape, and each piece's bytes.
    for pt in &plan.tensors {
        let name = pt.info.name.as_str();
        let Some(&ci) = child_index.get(name) else {
            continue;
        };
        let t = child.tensor(name).expect("indexed");
        if t.info.ty != pt.info.ty {
            mismatches.push(Mismatch::TypeDiffers {
                tensor: name.into(),
                expected: pt.info.ty,
                found: t.info.ty,
            });
            continue;
        }
        if t.info.dims != pt.info.dims {
            mismatches.push(Mismatch::ShapeDiffers {
                tensor: name.into(),
                expected: pt.info.dims.clone(),
                found: t.info.dims.clone(),
            });
            continue;
        }
        let sl = inp.slicings[ci];
        let sets = &inp.sets[ci];
        if let Some(checks) = inp.checks.get(&ci) {
            pieces::mismatches(pt, sl, checks, inp.names, &mut mismatches);
            continue;
        }
        // Each piece says which experts it makes (all of them: `None`); a converted piece is
        // part of one expert, checked through the parent's view of the whole expert.
        // Mixed pieces are computed again by `mixed::check`.
        let mut seen: Vec<(usize, Range<u64>)> = Vec::new();
        for piece in &pt.pieces {
            let Some(parent) = piece.parent() else {
                continue;
            };
            let range = piece.experts.clone().unwrap_or(0..sl.count);
            if seen.iter().any(|(p, r)| *p == parent && *r == range) {
                continue;
            }
            seen.push((parent, range.clone()));
            let expected = inp.names[parent].clone();
            let bad: Vec<u64> = range
                .clone()
                .filter(|&s| sets.get(s as usize).is_none_or(|m| !m.contains(&parent)))
                .collect();
            if bad.is_empty() {
                continue;
            }
            let cand = inp.cands[ci].iter().position(|&p| p == parent);
            let first_offset = cand.and_then(|c| {
                range
                    .clone()
                    .filter_map(|s| inp.firsts[ci][c].get(s as usize).copied().flatten())
                    .min()
            });
            let (experts, found) = if sl.by_expert {
                (
                    Some(to_ranges(bad.iter().copied())),
                    Sources::Experts(expert_runs(sets, bad.into_iter(), inp.names)),
                )
            } else {
                (
                    None,
                    Sources::Whole(sets[0].iter().map(|&p| inp.names[p].clone()).collect()),
                )
            };
            mismatches.push(Mismatch::BytesDiffer {
                tensor: name.into(),
                experts,
                expected,
                found,
                first_offset,
            });
        }
    }

    // Metadata, raw type and bytes; the recipe record and split keys aside.
    let first = child.first();
    let skip = |k: &str| k == KEY_SPLICE_RECIPE || is_split_key(k);
    let mut keys = 0;
    for (key, value) in plan.kvs.iter().filter(|(k, _)| !skip(k)) {
        keys += 1;
        let expected = value.as_ref();
        match first.get(key) {
            None => mismatches.push(Mismatch::MissingKey {
                key: key.clone(),
                expected: Shown::of(expected),
            }),
            Some(found) if found != expected => mismatches.push(Mismatch::KeyDiffers {
                key: key.clone(),
                expected: Shown::of(expected),
                found: Shown::of(found),
            }),
            Some(_) => {}
        }
    }
    for kv in first.kvs().iter().filter(|kv| !skip(&kv.key)) {
        if !plan.kvs.iter().any(|(k, _)| *k == kv.key) {
            mismatches.push(Mismatch::ExtraKey {
                key: kv.key.clone(),
                found: Shown::of(first.value(kv)),
            });
        }
    }

    RecipeCheck {
        assembled: plan.assembly.is_some(),
        tensors: plan.tensors.len(),
        keys,
        mismatches,
    }
}
