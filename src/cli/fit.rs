//! `fit`: choose, per unit of the model, the parent that fills a size budget best; print the
//! choice (--dry-run), write it as a recipe (--write-recipe) and/or write the child.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use super::args::{FlavourArg, OutputArgs};
use super::splice::write_plan;
use super::{CliError, emit, exit, open_parent_specs, print_json, say};
use gguf_splice::fit::constraint::Constraint;
use gguf_splice::fit::{self, EstimateOptions, FitError, FitOptions, estimate::DEFAULT_SAMPLE};
use gguf_splice::mix::Imatrix;
use gguf_splice::plan;
use gguf_splice::render;

#[derive(Args)]
pub(crate) struct FitArgs {
    /// NAME=PATH: a quant of the model to choose from; PATH is any shard, local or remote
    /// (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]). All parents are quants of one
    /// model; the first is the base (tensor order, metadata).
    #[arg(long = "parent", value_name = "NAME=PATH", required = true)]
    pub(crate) parents: Vec<String>,
    /// The child's whole size (headers and every shard included): bytes, or 240G / 500M
    /// (decimal, as --split-max-size). The child never exceeds it.
    #[arg(long, value_name = "SIZE", value_parser = plan::parse_size)]
    pub(crate) budget: u64,
    /// Weigh each column's error by this importance matrix (llama-imatrix's, GGUF or .dat).
    #[arg(long, value_name = "FILE")]
    pub(crate) imatrix: Option<PathBuf>,
    /// Measure errors against this parent (default: per unit, the parent with the most bytes
    /// for it).
    #[arg(long, value_name = "NAME")]
    pub(crate) reference: Option<String>,
    /// Percent of each tensor's rows read for the estimate (bands of 8 rows).
    #[arg(long, value_name = "PERCENT", default_value_t = DEFAULT_SAMPLE * 100.0)]
    pub(crate) sample: f64,
    /// Limit the parents units may come from: a recipe's [[rules]] (match, role, layers) whose
    /// `from` may list several parents (`from = ["r1q2", "r1q3"]`); fit chooses among them.
    /// Units no rule selects may come from any parent.
    #[arg(long, value_name = "FILE")]
    pub(crate) recipe: Option<PathBuf>,
    /// Write the choice as an ordinary recipe: `splice --recipe FILE` with the same parents
    /// makes the same bytes as `fit -o`.
    #[arg(long, value_name = "FILE")]
    pub(crate) write_recipe: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) flavour: FlavourArg,
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

/// The exit code of a fit error.
pub(crate) fn exit_code(e: &FitError) -> i32 {
    match e {
        FitError::Plan(e) => super::plan_code(e),
        FitError::Read { .. } | FitError::Imatrix(gguf_splice::mix::ImatrixError::Io { .. }) => {
            exit::IO
        }
        FitError::Recipe(e) => super::recipe_code(e),
        // No usable ggml: this machine lacks what the command needs.
        FitError::Unavailable(_) => exit::UNSUPPORTED,
        FitError::UnknownReference { .. }
        | FitError::ReferenceLacks { .. }
        | FitError::BudgetTooSmall { .. } => exit::USAGE,
        _ => exit::BAD_INPUT,
    }
}

/// Write `text` to `path` through a temporary file beside it, renamed into place.
fn write_atomic(path: &Path, text: &str) -> Result<(), CliError> {
    let err = |source| CliError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

pub(crate) fn run(args: FitArgs) -> Result<i32, CliError> {
    if !(args.sample > 0.0 && args.sample <= 100.0) {
        return Err(CliError::Usage(format!(
            "--sample {}: a percent of rows above 0 and at most 100",
            args.sample
        )));
    }
    let parents = open_parent_specs(&args.parents, args.flavour)?;
    let imatrix = args
        .imatrix
        .as_deref()
        .map(Imatrix::open)
        .transpose()
        .map_err(FitError::from)?;
    let constraint = args
        .recipe
        .as_deref()
        .map(Constraint::from_file)
        .transpose()?;
    let mut fitted = fit::fit(
        &parents,
        &FitOptions {
            budget: args.budget,
            estimate: EstimateOptions {
                reference: args.reference.as_deref(),
                imatrix: imatrix.as_ref(),
                sample: args.sample / 100.0,
                constraint: constraint.as_ref(),
            },
            output: &args.out.output,
            split: args.out.split(),
        },
    )?;
    if let Some(path) = &args.write_recipe {
        write_atomic(path, &fitted.recipe_text)?;
    }
    if args.out.dry_run {
        if args.out.json {
            print_json(&render::fit_json(&fitted))?;
        } else {
            emit(&render::fit_text(&fitted))?;
        }
        return Ok(exit::OK);
    }
    if !args.out.quiet {
        say(format_args!(
            "fit: {} bytes of budget {} (smallest possible {}), estimated error {:.4e}",
            fitted.child_bytes(),
            fitted.budget,
            fitted.minimum,
            fitted.error()
        ));
    }
    write_plan(&mut fitted.plan, &args.out)
}
