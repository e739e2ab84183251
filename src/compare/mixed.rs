//! `verify` and mixed tensors. With a recipe, every mixed piece the plan makes is computed
//! again (the same ggml calls, see [`crate::mix`]) and compared with the child's bytes.
//! Without one, a tensor that matches no parent is reported as "mixed?" rather than as
//! damage when the recipe the child records (`splice.recipe`) has a mix rule that selects
//! it: such a tensor cannot be checked without its parents' weights and the ggml build.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::report::{Mismatch, Sources};
use super::{CompareError, to_ranges};
use crate::ggml_lib;
use crate::gguf::Model;
use crate::mix::{self, Ctx, Limits};
use crate::plan::{KEY_SPLICE_RECIPE, Parent, Plan, Source};
use crate::recipe::Recipe;

/// The recipe a child records, if it has mix rules.
pub(super) fn recorded_mix(child: &Model) -> Option<Recipe> {
    let text = child.get(KEY_SPLICE_RECIPE)?.as_str()?.to_string();
    let recipe = Recipe::from_toml(&text, Path::new(KEY_SPLICE_RECIPE)).ok()?;
    recipe
        .rules
        .iter()
        .any(|r| r.mix.is_some())
        .then_some(recipe)
}

/// Whether a recipe has a mix rule that selects the tensor `name`.
pub(super) fn mixes(recipe: &Recipe, name: &str) -> bool {
    recipe
        .rules
        .iter()
        .any(|r| r.mix.is_some() && r.selects(name))
}

/// Recompute each mixed piece of `plan` and compare it with the child: a
/// [`Mismatch::BytesDiffer`] for each piece that differs. `found(tensor)` says what the
/// child's bytes of that tensor match instead.
pub(super) fn check(
    child: &Model,
    plan: &Plan,
    parents: &[Parent],
    found: &dyn Fn(&str) -> Sources,
    mismatches: &mut Vec<Mismatch>,
) -> Result<(), CompareError> {
    let open = |path: &PathBuf| {
        File::open(path).map_err(|source| CompareError::Open {
            path: path.clone(),
            source,
        })
    };
    // Recomputing needs a ggml: without one, the one-line refusal naming the mix rule.
    crate::plan::require_ggml(plan)?;
    let mut files = None;
    let names: Vec<String> = parents.iter().map(|p| p.name.clone()).collect();
    // The ggml that made the child's mixed bytes, when it is not the one checking them.
    let other_ggml = child
        .get(ggml_lib::RECORD_KEY)
        .and_then(|v| v.as_str())
        .zip(ggml_lib::library().ok().map(|g| g.record()))
        .filter(|(made, now)| made != now)
        .map(|(made, now)| (made.to_string(), now));
    for pt in &plan.tensors {
        let Some(t) = child.tensor(&pt.info.name) else {
            continue;
        };
        if t.info.ty != pt.info.ty || t.info.dims != pt.info.dims {
            continue; // reported as a type or shape difference
        }
        let mut at = 0u64;
        for piece in &pt.pieces {
            let offset = at;
            at += piece.len;
            let Source::Mix(job) = &piece.source else {
                continue;
            };
            if files.is_none() {
                let f: Vec<Vec<crate::source::Source>> = parents
                    .iter()
                    .map(|p| {
                        p.model
                            .shards()
                            .iter()
                            .map(|s| {
                                s.open_source().map_err(|e| CompareError::Open {
                                    path: s.path.clone(),
                                    source: std::io::Error::other(e.to_string()),
                                })
                            })
                            .collect::<Result<_, _>>()
                    })
                    .collect::<Result<_, _>>()?;
                files = Some(f);
            }
            let ctx = Ctx {
                files: files.as_deref().expect("opened"),
                names: &names,
                imatrices: &plan.imatrices,
                limits: Limits::default(),
            };
            let child_path = &child.shards()[t.shard].path;
            let child_file = open(child_path)?;
            let diff =
                mix::first_difference(job, &ctx, &child_file, child_path, t.file_offset + offset)?;
            if let (Some(d), Some((made_by, checked_with))) = (diff, &other_ggml) {
                mismatches.push(Mismatch::OtherGgml {
                    tensor: pt.info.name.clone(),
                    experts: piece.experts.clone().map(to_ranges),
                    made_by: made_by.clone(),
                    checked_with: checked_with.clone(),
                    first_offset: offset + d,
                });
            } else if let Some(d) = diff {
                mismatches.push(Mismatch::BytesDiffer {
                    tensor: pt.info.name.clone(),
                    experts: piece.experts.clone().map(to_ranges),
                    expected: job.label(&names),
                    found: found(&pt.info.name),
                    first_offset: Some(offset + d),
                });
            }
        }
    }
    Ok(())
}

impl From<mix::MixError> for CompareError {
    fn from(e: mix::MixError) -> Self {
        CompareError::Mix(e)
    }
}
