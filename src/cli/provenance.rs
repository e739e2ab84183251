//! The child's record on the command line: `verify CHILD` with what the child records (its
//! recipe or assemble options, and its parents: fetched again when remote, found by file
//! name in `--parents-dir` when local), unless the command line says otherwise.

use std::path::{Path, PathBuf};

use clap::Args;

use super::args::{FlavourArg, SpliceArgs, VerifyArgs};
use super::{CliError, emit, exit, print_json};
use gguf_splice::assemble::{self, AssembleOptions};
use gguf_splice::compare::{self, Basis, CompareError, CompareOptions, VerifyReport};
use gguf_splice::gguf::Model;
use gguf_splice::plan::record::{ChildRecord, Made, ParentRecord};
use gguf_splice::plan::{self, Parent, Plan, PlanError, SplitOptions};
use gguf_splice::render::provenance::{Sources, provenance_json, provenance_text};

/// Where parents the child records are found when not given with `--parent`.
#[derive(Args)]
pub(crate) struct RecordArgs {
    /// A directory holding the child's local parents under the file names it records
    /// (`inspect CHILD --provenance` lists them); `--parent NAME=PATH` still wins.
    #[arg(long, value_name = "DIR")]
    pub(crate) parents_dir: Option<PathBuf>,
}

/// The parents to check or re-make `child` with: the given ones, then those the record
/// names, from `--parents-dir` or their recorded URL, in the recorded order (the first is
/// the default base). Without a record, the given parents as given.
pub(crate) fn parents(
    specs: &[String],
    flavour: FlavourArg,
    dir: Option<&Path>,
    record: &ChildRecord,
) -> Result<Vec<Parent>, CliError> {
    let given = super::open_parent_specs(specs, flavour)?;
    if record.parents.is_empty() {
        if given.is_empty() {
            return Err(CliError::Usage(
                "the child records no parents: give them with --parent NAME=PATH".into(),
            ));
        }
        return Ok(given);
    }
    let mut given: Vec<Option<Parent>> = given.into_iter().map(Some).collect();
    let mut out = Vec::new();
    let mut missing: Vec<&ParentRecord> = Vec::new();
    for r in &record.parents {
        if let Some(p) = given
            .iter_mut()
            .find(|p| p.as_ref().is_some_and(|p| p.name == r.name))
        {
            out.extend(p.take());
            continue;
        }
        let local = dir
            .map(|d| d.join(r.first_file()))
            .filter(|p| !r.first_file().is_empty() && p.exists());
        let at = match (local, r.fetch_url()) {
            (Some(p), _) => p,
            (None, Some(url)) => PathBuf::from(url),
            (None, None) => {
                missing.push(r);
                continue;
            }
        };
        out.push(Parent {
            name: r.name.clone(),
            model: flavour.open(&at)?,
        });
    }
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|r| format!("{} ({})", r.name, r.first_file()))
            .collect();
        let example = missing
            .iter()
            .map(|r| format!("--parent {}=PATH", r.name))
            .collect::<Vec<_>>()
            .join(" ");
        let looked = dir.map_or(String::new(), |d| format!(" (not in {})", d.display()));
        return Err(CliError::Usage(format!(
            "the child was made from local parents not given: {}{looked}; give {example}, or --parents-dir DIR holding them under those names",
            list.join(", ")
        )));
    }
    // Parents the record does not name come last.
    out.extend(given.into_iter().flatten());
    Ok(out)
}

/// `verify`: against the recipe or assemble options given, else those the child records;
/// the report says which.
pub(crate) fn verify(args: &VerifyArgs, opts: &CompareOptions) -> Result<VerifyReport, CliError> {
    let child = args.rules.flavour.open(&args.child)?;
    let record = ChildRecord::read(&child)?;
    let parents = parents(
        &args.rules.parents,
        args.rules.flavour,
        args.record.parents_dir.as_deref(),
        &record,
    )?;
    if args.assembled {
        let options = args.assembly.options()?;
        return assembled(&child, &parents, &options, opts, Basis::GivenAssembly);
    }
    if let Some(option) = args.assembly.given() {
        return Err(CliError::Usage(format!(
            "{option} describes an assembled child: add --assembled"
        )));
    }
    if let Some(recipe) = args.rules.recipe()? {
        return Ok(compare::verify(&child, &parents, Some(&recipe), opts)?);
    }
    match record.options.as_ref().map(|o| (o, &o.made)) {
        Some((o, Made::Splice { .. })) => {
            let recipe = o.recipe().expect("a splice's record")?;
            match compare::verify(&child, &parents, Some(&recipe), opts) {
                Ok(mut r) => {
                    r.basis = Basis::RecordedRecipe;
                    Ok(r)
                }
                // A mix this build (or these remote parents) cannot compute again: the
                // sources can still be checked, as before the record.
                Err(CompareError::Plan(
                    e @ (PlanError::MixUnavailable { .. } | PlanError::RemoteMix { .. }),
                )) => {
                    super::say(format_args!(
                        "warning: the recorded recipe cannot be checked here ({e}); checking where each tensor came from only"
                    ));
                    Ok(compare::verify(&child, &parents, None, opts)?)
                }
                Err(e) => Err(e.into()),
            }
        }
        Some((_, Made::Assemble(a))) => {
            let options = AssembleOptions::from_record(a, None, None)?;
            assembled(&child, &parents, &options, opts, Basis::RecordedAssembly)
        }
        None => Ok(compare::verify(&child, &parents, None, opts)?),
    }
}

fn assembled(
    child: &Model,
    parents: &[Parent],
    options: &AssembleOptions,
    opts: &CompareOptions,
    basis: Basis,
) -> Result<VerifyReport, CliError> {
    let plan = assemble::plan(parents, options, child.path(), SplitOptions::default())?;
    let mut r = compare::verify_plan(child, &plan, opts)?;
    r.basis = basis;
    Ok(r)
}

/// `inspect --provenance` and the parents it may plan with.
#[derive(Args)]
pub(crate) struct InspectArgs {
    /// Show the child's lineage: its parents and their identities, its recipe or assemble
    /// options, where each tensor and expert came from (planned from the record, with the
    /// parents found as `verify` finds them: headers only), and general.base_model.*.
    #[arg(long)]
    pub(crate) provenance: bool,
    /// NAME=PATH: a parent to plan with instead of the recorded one (with --provenance); PATH
    /// is any shard, local or remote (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]).
    #[arg(long = "parent", value_name = "NAME=PATH", requires = "provenance")]
    pub(crate) parents: Vec<String>,
    /// A directory holding the child's local parents under their recorded file names
    /// (with --provenance).
    #[arg(long, value_name = "DIR", requires = "provenance")]
    pub(crate) parents_dir: Option<PathBuf>,
}

/// `inspect CHILD --provenance`. Parents that cannot be found leave the sources out, with
/// the reason: the record is worth showing without them.
pub(crate) fn inspect(
    file: &Path,
    json: bool,
    flavour: FlavourArg,
    args: &InspectArgs,
) -> Result<i32, CliError> {
    let child = flavour.open(file)?;
    let record = ChildRecord::read(&child)?;
    let found = if record.options.is_none() {
        Err("the child records no recipe or options".to_string())
    } else {
        parents(&args.parents, flavour, args.parents_dir.as_deref(), &record)
            .map_err(|e| e.to_string())
    };
    match found {
        Ok(ps) => {
            // The plan borrows the parents: render while both live.
            let plan = replan(&ps, &record, child.path(), None);
            let sources = match &plan {
                Ok(p) => Sources::Plan(p),
                Err(e) => Sources::Unavailable(e.to_string()),
            };
            show(&child, &record, &sources, json)?;
        }
        Err(why) => show(&child, &record, &Sources::Unavailable(why), json)?,
    }
    Ok(exit::OK)
}

fn show(
    child: &Model,
    record: &ChildRecord,
    sources: &Sources,
    json: bool,
) -> Result<(), CliError> {
    if json {
        print_json(&provenance_json(child, record, sources))
    } else {
        emit(&provenance_text(child, record, sources))
    }
}

/// The plan the record makes of `parents`, written to `output` (for `inspect`, the child's
/// own path stands in: nothing is written), split as `split` says or else as recorded.
pub(crate) fn replan<'p>(
    parents: &'p [Parent],
    record: &ChildRecord,
    output: &Path,
    split: Option<SplitOptions>,
) -> Result<Plan<'p>, CliError> {
    let Some(o) = &record.options else {
        return Err(CliError::Usage(
            "the child records no recipe or options (made before the record)".into(),
        ));
    };
    let split = split.unwrap_or(o.split());
    match &o.made {
        Made::Splice { .. } => {
            let recipe = o.recipe().expect("a splice's record")?;
            Ok(plan::build(parents, &recipe, output, split)?)
        }
        Made::Assemble(a) => {
            let options = AssembleOptions::from_record(a, None, None)?;
            Ok(assemble::plan(parents, &options, output, split)?)
        }
    }
}

/// `splice --like CHILD`: the options that make a child again from its record.
#[derive(Args)]
pub(crate) struct LikeArgs {
    /// Make a child as CHILD was made, from its record: its recipe (or assemble options)
    /// and split, with its parents (found as `verify` finds them) or those given with
    /// --parent NAME=PATH; --split-max-size/--split-max-tensors override the split.
    #[arg(long, value_name = "CHILD", conflicts_with_all = ["recipe", "takes", "allow_partial_experts"])]
    pub(crate) like: Option<PathBuf>,
    /// With --like: a directory holding the parents under their recorded file names.
    #[arg(long, value_name = "DIR", requires = "like")]
    pub(crate) parents_dir: Option<PathBuf>,
}

/// `splice --like CHILD -o NEW`.
pub(crate) fn like(args: &SpliceArgs, child: &Path) -> Result<i32, CliError> {
    let flavour = args.rules.flavour;
    let model = flavour.open(child)?;
    let record = ChildRecord::read(&model)?;
    let parents = parents(
        &args.rules.parents,
        flavour,
        args.like.parents_dir.as_deref(),
        &record,
    )?;
    let split = args.out.split();
    let split = split.is_split().then_some(split);
    let mut plan = replan(&parents, &record, &args.out.output, split)?;
    super::splice::write_plan(&mut plan, &args.out)
}
