//! `verify`: which parent each tensor and expert of a child matches byte for byte, through
//! each parent's view of the child's layout; with a recipe, whether the child is exactly what
//! the plan makes: every planned piece checked against the parent it names.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::engine::{FileSet, FirstDiffs, Slicing, Target, compare_targets, slicing};
use super::pieces::{self, PieceCheck, is_direct};
use super::report::{
    Basis, Mismatch, RecipeCheck, Sources, TensorSources, VerifyReport, expert_runs,
};
use super::{CompareError, CompareOptions, ModelSummary, Shown, is_split_key, to_ranges};
use super::{mixed, units};
use crate::gguf::Model;
use crate::plan::record::{ChildRecord, IdentityDifference};
use crate::plan::{self, Parent, Plan, PlannedTensor, Source, SplitOptions};
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
    plan::parents::check(parents)?;
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

/// Verify `child` against `parents` (and `plan`): one comparison of every child tensor with
/// each parent's view of it, the pieces of tensors whose bytes moved or were made checked
/// against their sources, then the sources of each tensor, torn units and the plan's check.
fn run(
    child: &Model,
    parents: &[Parent],
    plan: Option<&Plan>,
    opts: &CompareOptions,
) -> Result<VerifyReport, CompareError> {
    let files = Files::open(child, parents)?;
    let direct = direct_tensors(child, plan);
    let (targets, cands) = targets(child, parents, &files, &direct);
    let results = compare_targets(&targets, &files.set, opts)?;
    let mut found = Found {
        // The sources bytes can match: the parents, then (added by piece checks) made bytes.
        names: parents.iter().map(|p| p.name.clone()).collect(),
        sets: matched_sets(&results, &cands, &targets),
        cands,
        checks: HashMap::new(),
    };
    for (i, pt) in direct {
        found.check_pieces(child, i, pt, targets[i].slicing, &files, opts.chunk_bytes)?;
    }
    let tensors = tensor_sources(child, plan, &targets, &found);
    let torn = units::torn_units(child, &found.sets, &found.names);
    let slicings: Vec<Slicing> = targets.iter().map(|t| t.slicing).collect();
    let recipe = match plan {
        None => None,
        Some(plan) => {
            let inputs = PlanInputs {
                names: &found.names,
                cands: &found.cands,
                slicings: &slicings,
                sets: &found.sets,
                firsts: &results,
                checks: &found.checks,
            };
            Some(check_recipe(child, plan, parents, &inputs, &tensors)?)
        }
    };

    Ok(VerifyReport {
        child: ModelSummary::of(child),
        parents: parents
            .iter()
            .map(|p| (p.name.clone(), p.model.path().to_path_buf()))
            .collect(),
        tensors,
        recipe,
        torn,
        basis: match plan {
            None => Basis::TensorsOnly,
            Some(p) if p.assembly.is_some() => Basis::GivenAssembly,
            Some(_) => Basis::GivenRecipe,
        },
        not_recorded: not_recorded(child, parents),
    })
}

/// The child's and the parents' files, open for comparing.
struct Files {
    set: FileSet,
    /// The child's first file in `set`.
    child: usize,
    /// Each parent's first file in `set`.
    parents: Vec<usize>,
}

impl Files {
    fn open(child: &Model, parents: &[Parent]) -> Result<Files, CompareError> {
        let mut set = FileSet::default();
        let fc = set.add(child)?;
        let fp: Vec<usize> = parents
            .iter()
            .map(|p| set.add(&p.model))
            .collect::<Result<_, _>>()?;
        Ok(Files {
            set,
            child: fc,
            parents: fp,
        })
    }
}

/// The planned tensors checked piece by piece (their bytes moved or were made), by the
/// child's tensor index: those the child has with the planned type and shape.
fn direct_tensors<'p>(child: &Model, plan: Option<&'p Plan>) -> BTreeMap<usize, &'p PlannedTensor> {
    let mut direct = BTreeMap::new();
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
    direct
}

/// One target per child tensor: its bytes against each parent's view of it, where the
/// parent has it (or a layout it converts from) with the same type and cut; none for a
/// tensor checked piece by piece. Also returns, per child tensor, the parents compared.
fn targets<'m>(
    child: &Model,
    parents: &'m [Parent],
    files: &Files,
    direct: &BTreeMap<usize, &PlannedTensor>,
) -> (Vec<Target<'m>>, Vec<Vec<usize>>) {
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
                vs.push((files.parents[i], v));
            }
        }
        targets.push(Target {
            tensor: t.info.name.clone(),
            slicing: sl,
            child_file: files.child + t.shard,
            child_offset: t.file_offset,
            candidates: vs,
        });
        cands.push(idx);
    }
    (targets, cands)
}

/// Per child tensor, per slice: the parents it matches.
fn matched_sets(
    results: &[FirstDiffs],
    cands: &[Vec<usize>],
    targets: &[Target],
) -> Vec<Vec<Vec<usize>>> {
    results
        .iter()
        .zip(cands)
        .zip(targets)
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
        .collect()
}

/// What the comparison found, by child tensor index.
struct Found {
    /// The sources: the parents, then labels of made bytes.
    names: Vec<String>,
    /// Per child tensor: the sources compared.
    cands: Vec<Vec<usize>>,
    /// Per child tensor, per slice: the sources matched.
    sets: Vec<Vec<Vec<usize>>>,
    /// The piece checks of tensors checked piece by piece.
    checks: HashMap<usize, Vec<PieceCheck>>,
}

impl Found {
    /// Check child tensor `i` piece by piece against `pt`: its sources are what its pieces
    /// matched.
    fn check_pieces(
        &mut self,
        child: &Model,
        i: usize,
        pt: &PlannedTensor,
        sl: Slicing,
        files: &Files,
        chunk: usize,
    ) -> Result<(), CompareError> {
        let c = pieces::check_tensor(
            child,
            pt,
            sl,
            &files.set,
            (files.child, &files.parents),
            &mut self.names,
            chunk,
        )?;
        self.sets[i] = pieces::sets(&c, sl.count);
        let mut compared: Vec<usize> = c.iter().map(|c| c.source).collect();
        compared.sort_unstable();
        compared.dedup();
        self.cands[i] = compared;
        self.checks.insert(i, c);
        Ok(())
    }
}

/// Each child tensor's sources (by expert where they differ), and whether a mix rule makes
/// it: the plan's, or those the recipe the child records selects.
fn tensor_sources(
    child: &Model,
    plan: Option<&Plan>,
    targets: &[Target],
    found: &Found,
) -> Vec<TensorSources> {
    let names = &found.names;
    let recorded = if plan.is_none() {
        mixed::recorded_mix(child)
    } else {
        None
    };
    let is_mixed = |name: &str| match (plan, &recorded) {
        (Some(p), _) => p.tensors.iter().any(|pt| {
            pt.info.name == name && pt.pieces.iter().any(|x| matches!(x.source, Source::Mix(_)))
        }),
        (None, Some(r)) => mixed::mixes(r, name),
        (None, None) => false,
    };
    child
        .tensors()
        .enumerate()
        .map(|(i, t)| {
            let sl = targets[i].slicing;
            let sets = &found.sets[i];
            let sources = if sl.by_expert && sets.iter().any(|s| *s != sets[0]) {
                Sources::Experts(expert_runs(sets, 0..sl.count, names))
            } else {
                Sources::Whole(sets[0].iter().map(|&p| names[p].clone()).collect())
            };
            TensorSources {
                name: t.info.name.clone(),
                ty: t.info.ty,
                dims: t.info.dims.clone(),
                group: roles::role_of(&t.info.name),
                compared: found.cands[i].iter().map(|&p| names[p].clone()).collect(),
                sources,
                mixed: is_mixed(&t.info.name),
            }
        })
        .collect()
}

/// The child against the plan ([`check_plan`]), its mixed pieces computed again.
fn check_recipe(
    child: &Model,
    plan: &Plan,
    parents: &[Parent],
    inputs: &PlanInputs,
    tensors: &[TensorSources],
) -> Result<RecipeCheck, CompareError> {
    let mut check = check_plan(child, plan, inputs);
    let found = |name: &str| {
        tensors
            .iter()
            .find(|t| t.name == name)
            .map_or(Sources::Whole(Vec::new()), |t| t.sources.clone())
    };
    mixed::check(child, plan, parents, &found, &mut check.mismatches)?;
    Ok(check)
}

/// The given parents whose identity differs from the one the child records for their name.
fn not_recorded(child: &Model, parents: &[Parent]) -> Vec<IdentityDifference> {
    let Ok(record) = ChildRecord::read(child) else {
        return Vec::new();
    };
    parents
        .iter()
        .filter_map(|p| {
            record
                .parents
                .iter()
                .find(|r| r.name == p.name)
                .and_then(|r| r.difference(p))
        })
        .collect()
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

/// The child against the plan: tensor names and order, each planned tensor's type, shape
/// and pieces, and the metadata.
fn check_plan(child: &Model, plan: &plan::Plan, inp: &PlanInputs) -> RecipeCheck {
    let mut mismatches = Vec::new();
    let child_index = check_names(child, plan, &mut mismatches);
    for pt in &plan.tensors {
        if let Some(&ci) = child_index.get(pt.info.name.as_str()) {
            check_planned(child, pt, ci, inp, &mut mismatches);
        }
    }
    let keys = check_keys(child, plan, &mut mismatches);
    RecipeCheck {
        assembled: plan.assembly.is_some(),
        tensors: plan.tensors.len(),
        keys,
        mismatches,
    }
}

/// Tensor names and order: planned tensors the child lacks, tensors it has that the plan
/// does not make, and the first out of order. Returns the child's tensor indexes by name.
fn check_names<'c>(
    child: &'c Model,
    plan: &plan::Plan,
    mismatches: &mut Vec<Mismatch>,
) -> HashMap<&'c str, usize> {
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
    child_index
}

/// One planned tensor that the child has (its index `ci`): type, shape, and each piece's
/// bytes.
fn check_planned(
    child: &Model,
    pt: &PlannedTensor,
    ci: usize,
    inp: &PlanInputs,
    mismatches: &mut Vec<Mismatch>,
) {
    let name = pt.info.name.as_str();
    let t = child.tensor(name).expect("indexed");
    if t.info.ty != pt.info.ty {
        mismatches.push(Mismatch::TypeDiffers {
            tensor: name.into(),
            expected: pt.info.ty,
            found: t.info.ty,
        });
        return;
    }
    if t.info.dims != pt.info.dims {
        mismatches.push(Mismatch::ShapeDiffers {
            tensor: name.into(),
            expected: pt.info.dims.clone(),
            found: t.info.dims.clone(),
        });
        return;
    }
    match inp.checks.get(&ci) {
        Some(checks) => pieces::mismatches(pt, inp.slicings[ci], checks, inp.names, mismatches),
        None => check_piece_sources(pt, ci, inp, mismatches),
    }
}

/// The pieces of a planned tensor compared as a whole with each parent: each piece's
/// experts (all of them: `None`) must match the parent it names. A converted piece is part
/// of one expert, checked through the parent's view of the whole expert. Mixed pieces are
/// computed again by `mixed::check`.
fn check_piece_sources(
    pt: &PlannedTensor,
    ci: usize,
    inp: &PlanInputs,
    mismatches: &mut Vec<Mismatch>,
) {
    let name = pt.info.name.as_str();
    let sl = inp.slicings[ci];
    let sets = &inp.sets[ci];
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

/// Metadata, raw type and bytes; the recipe record and split keys aside. Returns the number
/// of planned keys compared.
fn check_keys(child: &Model, plan: &plan::Plan, mismatches: &mut Vec<Mismatch>) -> usize {
    let first = child.first();
    // The record is not compared (its ggml key names the ggml that made the mixed bytes,
    // which may rightly differ from the one verifying, see `mixed::check`).
    let skip = |k: &str| plan::record::is_record_key(k) || is_split_key(k);
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
    keys
}
