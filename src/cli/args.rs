//! The arguments commands share: parents, recipe and rules (`splice`, `verify`), and the
//! output options of `splice`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::CliError;
use super::progress::ProgressMode;
use gguf_splice::assemble::spec::{ExpertList, RouterSpec};
use gguf_splice::assemble::{AssembleError, AssembleOptions, Selection};
use gguf_splice::ggml_type::Flavour;
use gguf_splice::gguf::Model;
use gguf_splice::input::InputError;
use gguf_splice::plan::{self, SplitOptions};
use gguf_splice::presets::{self, Preset, RecipeSource};
use gguf_splice::recipe::{Recipe, RecipeError};

/// Parents and the rules that pick from them: shared by `splice` and `verify`.
#[derive(Args)]
pub(crate) struct RecipeArgs {
    /// NAME=PATH: a parent and the name rules call it by; PATH may be any shard, local or
    /// remote (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]). The first parent is the
    /// base unless the recipe names one. `verify` and `splice --like` find the parents a
    /// child records without it.
    #[arg(long = "parent", value_name = "NAME=PATH")]
    pub(crate) parents: Vec<String>,
    /// A recipe: a file, or the name of a built-in preset (`gguf-splice presets` lists them).
    #[arg(long, value_name = "FILE|PRESET")]
    pub(crate) recipe: Option<PathBuf>,
    /// REGEX=NAME[:role=ROLE][:experts=RANGES][:layers=RANGES][:router][:optional]: take
    /// matching tensors from parent NAME (options as the recipe fields of the same names;
    /// with role, REGEX may be empty: `=r1:role=routed_experts`). Comes before the recipe's
    /// rules; the first matching rule wins. The rule is split at the first `=NAME` followed
    /// by `:` or the end; write `\=` for an `=` the regex must keep there.
    #[arg(long = "take", value_name = "RULE")]
    pub(crate) takes: Vec<String>,
    /// Allow the stacked expert matrices of one layer (gate, up, down) to come from
    /// different parents, expert by expert. Refused by default: such experts are chimeras
    /// of two models, usually because a regex missed one layout (`ffn_gate_up_exps`).
    #[arg(long)]
    pub(crate) allow_partial_experts: bool,
    #[command(flatten)]
    pub(crate) flavour: FlavourArg,
}

/// `--flavour`: which program's type table to read models with.
#[derive(Args, Clone, Copy)]
pub(crate) struct FlavourArg {
    /// Read every model as made for this program: `ik` (ik_llama.cpp) or `mainline`
    /// (llama.cpp). Without it, a model is for the only program that defines all its type ids
    /// (a type only ik_llama.cpp defines makes it ik's; one only llama.cpp defines, such as
    /// NVFP4, mainline's), one whose ids mean the same to both is read as mainline's, and one
    /// with an id both define differently (Q8_K, 15) and nothing else to tell is refused.
    #[arg(long, value_name = "ik|mainline")]
    pub(crate) flavour: Option<Flavour>,
}

impl FlavourArg {
    /// Open a model (any shard: a path, an `http(s)://` URL or an `hf://` name) with this
    /// flavour.
    pub(crate) fn open(self, path: &Path) -> Result<Model, CliError> {
        Ok(Model::open_arg(path, super::http(), self.flavour)?)
    }
}

impl RecipeArgs {
    /// The recipe file (or an empty recipe) with the --take rules in front; `None` when
    /// neither was given.
    pub(crate) fn recipe(&self) -> Result<Option<Recipe>, CliError> {
        if self.recipe.is_none() && self.takes.is_empty() && !self.allow_partial_experts {
            return Ok(None);
        }
        let source = self.recipe.as_deref().map(recipe_source).transpose()?;
        Ok(Some(presets::load(
            source.as_ref(),
            &self.takes,
            self.allow_partial_experts,
        )?))
    }
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Any shard of the child, local or remote (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]).
    pub(crate) child: PathBuf,
    /// The parents, recipe and --take rules the child was made with (default: those the
    /// child records).
    #[command(flatten)]
    pub(crate) rules: RecipeArgs,
    #[command(flatten)]
    pub(crate) record: RecordArgs,
    /// The child is an MoE made by `assemble` with the --base, --experts, --keep,
    /// --keep-top/--imatrix, --router and --experts-used given here: check it against that
    /// plan (each output expert against the parent expert it came from).
    #[arg(long, conflicts_with_all = ["recipe", "takes", "allow_partial_experts"])]
    pub(crate) assembled: bool,
    #[command(flatten)]
    pub(crate) assembly: AssemblySpec,
    /// Progress on stderr: auto (a bar when stderr is a terminal, else nothing), bar (the
    /// same, with a note when there is no terminal), json (JSON lines, for logs), or none.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub(crate) progress: ProgressMode,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Draw where each expert (and each other tensor) came from as a picture: FILE.svg,
    /// FILE.png, or FILE.json (the data behind the picture).
    #[arg(long, value_name = "FILE", value_parser = super::maps::parse_map_path)]
    pub(crate) map: Option<super::maps::MapPath>,
    /// PNG maps: draw each pixel as N x N (1-4). Default: the largest that keeps the picture
    /// within 2400 pixels wide.
    #[arg(long, value_name = "N", requires = "map", value_parser = super::maps::parse_map_scale)]
    pub(crate) map_scale: Option<u32>,
    /// Print the same grid in the terminal after the report (colors when stdout is a
    /// terminal and NO_COLOR is unset).
    #[arg(long, conflicts_with = "json")]
    pub(crate) grid: bool,
}

/// `diff`: two models, and whether to compare bytes or dequantized values.
#[derive(Args)]
pub(crate) struct DiffArgs {
    /// Any shard of the first model, local or remote (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]).
    pub(crate) a: PathBuf,
    /// Any shard of the second model, local or remote (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]): the reference (distances are relative to its
    /// norm, as a mix threshold is relative to the base's).
    pub(crate) b: PathBuf,
    /// Compare dequantized values (ggml's to_float): per tensor and per expert, the
    /// relative distance ‖A − B‖ / ‖B‖ and the cosine similarity, with summaries by role
    /// and layer. Needs a ggml (`--ggml`; `gguf-splice doctor` says which is found).
    #[arg(long)]
    pub(crate) values: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Draw the distances as a picture: layers x experts for each expert tensor, layers x
    /// roles for the others. FILE.svg, FILE.png, or FILE.json (the data behind the
    /// picture). Implies --values.
    #[arg(long, value_name = "FILE", value_parser = super::maps::parse_map_path)]
    pub(crate) map: Option<super::maps::MapPath>,
    /// PNG maps: draw each pixel as N x N (1-4). Default: the largest that keeps the picture
    /// within 2400 pixels wide.
    #[arg(long, value_name = "N", requires = "map", value_parser = super::maps::parse_map_scale)]
    pub(crate) map_scale: Option<u32>,
    /// Print the same grid in the terminal after the report (colors when stdout is a
    /// terminal and NO_COLOR is unset). Implies --values.
    #[arg(long, conflicts_with = "json")]
    pub(crate) grid: bool,
    #[command(flatten)]
    pub(crate) flavour: FlavourArg,
    /// Progress on stderr: auto (a bar when stderr is a terminal, else nothing), bar (the
    /// same, with a note when there is no terminal), json (JSON lines, for logs), or none.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub(crate) progress: ProgressMode,
}

#[derive(Args)]
pub(crate) struct SpliceArgs {
    #[command(flatten)]
    pub(crate) rules: RecipeArgs,
    #[command(flatten)]
    pub(crate) like: LikeArgs,
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

/// Where and how a plan is written: shared by `splice` and `assemble`.
#[derive(Args)]
pub(crate) struct OutputArgs {
    /// Output file (with --split-*, the prefix of the shard names).
    #[arg(short, long)]
    pub(crate) output: PathBuf,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON on stdout: the plan with --dry-run, else a summary of what was written
    /// (files, bytes per parent, time, warnings).
    #[arg(long)]
    pub(crate) json: bool,
    /// Shard the output: at most this much tensor data per shard (soft limit; M or G, decimal, as llama-gguf-split).
    #[arg(long, value_name = "SIZE", value_parser = plan::parse_size)]
    pub(crate) split_max_size: Option<u64>,
    /// Shard the output: at most N tensors per shard.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) split_max_tensors: Option<u64>,
    /// Replace existing output files.
    #[arg(long)]
    pub(crate) force: bool,
    /// Parallel range requests to remote parents.
    #[arg(long, value_name = "N", default_value_t = gguf_splice::execute::DEFAULT_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    pub(crate) connections: usize,
    /// Continue an interrupted splice from remote parents without fetching again what it
    /// wrote (its state is kept beside the output as .NAME.resume.part and
    /// .NAME.resume.journal).
    #[arg(long)]
    pub(crate) resume: bool,
    /// No progress bar and no summary (warnings are still printed).
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Write only shard K (from 1, as in the file names) of the child, as one job of a farm;
    /// skipped if that shard is already complete. The first shard is put in place only when
    /// every other shard is complete (see `batch`).
    #[arg(long, value_name = "K", conflicts_with = "dry_run", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) shard: Option<u64>,
    /// Progress on stderr: auto (a bar when stderr is a terminal, else nothing), bar (the
    /// same, with a note when there is no terminal), json (JSON lines, for logs), or none.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    pub(crate) progress: ProgressMode,
}

impl OutputArgs {
    /// The sharding the options ask for.
    pub(crate) fn split(&self) -> SplitOptions {
        SplitOptions {
            max_bytes: self.split_max_size,
            max_tensors: self.split_max_tensors.map(|n| n as usize),
        }
    }
}

/// `--recipe`: a recipe file, or else a built-in preset by name ([`RecipeSource::find`]); a
/// name that is neither says which presets exist.
fn recipe_source(path: &Path) -> Result<RecipeSource, CliError> {
    let name = path.to_string_lossy();
    if let Some(source) = RecipeSource::find(path, &name) {
        return Ok(source);
    }
    let missing = format!(
        "no such file, and no preset of that name (presets: {})",
        Preset::names()
    );
    // A path (`dir/r.toml`, `r.toml`) that is not there is a missing input file, exit 4 as
    // for any other; a bare word is a preset name that does not exist, a usage error.
    if name.contains('/') || name.ends_with(".toml") {
        return Err(CliError::Recipe(RecipeError::Input(InputError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, missing),
        })));
    }
    Err(CliError::Usage(format!("--recipe '{name}': {missing}")))
}

/// `assemble`: parents, which experts the MoE has (shared with `verify --assembled`), and
/// where it is written.
#[derive(Args)]
pub(crate) struct AssembleArgs {
    /// NAME=PATH: a parent and the name the options call it by; PATH may be any shard,
    /// local or remote (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]).
    #[arg(long = "parent", value_name = "NAME=PATH", required = true)]
    pub(crate) parents: Vec<String>,
    #[command(flatten)]
    pub(crate) spec: AssemblySpec,
    #[command(flatten)]
    pub(crate) out: OutputArgs,
    #[command(flatten)]
    pub(crate) flavour: FlavourArg,
}

/// Which experts, from where, and how they are routed.
#[derive(Args)]
pub(crate) struct AssemblySpec {
    /// The parent whose embeddings, attention, norms, shared experts, output and metadata the
    /// MoE has (default: the first --parent).
    #[arg(long, value_name = "NAME")]
    base: Option<String>,
    /// The output's experts, in order: 'a:0-63,b:0-63' (union), 'a:4-7,a:0-3' (reorder),
    /// 'a,b,b' (all of a parent's experts; a dense parent has one). Default: every expert of
    /// every parent, parents in the order given.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["keep", "keep_top"])]
    experts: Option<String>,
    /// Prune one MoE parent to these experts: 'a:0-127'.
    #[arg(long, value_name = "LIST", conflicts_with = "keep_top")]
    keep: Option<String>,
    /// Prune one MoE parent to the N most used experts of each layer, by the per-expert
    /// counts of --imatrix (ties to the lower expert; kept experts keep their order).
    #[arg(long, value_name = "N", requires = "imatrix", value_parser = clap::value_parser!(u64).range(1..))]
    keep_top: Option<u64>,
    /// A GGUF importance matrix made by llama-imatrix on the parent, for --keep-top.
    #[arg(long, value_name = "FILE", requires = "keep_top")]
    imatrix: Option<PathBuf>,
    /// For dense parents, the router rows: random:SEED (seeded, reproducible), uniform (all
    /// experts score the same; the default), or a .npy/.safetensors file of gate vectors
    /// (per layer x per expert; see docs/assemble.md).
    #[arg(long, value_name = "random:SEED|uniform|FILE")]
    router: Option<String>,
    /// Experts used per token (expert_used_count). Default: the base's for MoE parents, 2
    /// (or fewer, if fewer experts) for dense ones.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    experts_used: Option<u64>,
    /// Write an MoE with more experts per layer than the programs that would load it accept
    /// (LLAMA_MAX_EXPERTS: 1024 in llama.cpp, 512 in ik_llama.cpp): a warning instead of a
    /// refusal, for a build whose limit was raised.
    #[arg(long)]
    force_expert_count: bool,
}

impl AssemblySpec {
    /// The library's options.
    pub(crate) fn options(&self) -> Result<AssembleOptions, CliError> {
        let list = |option: &'static str, text: &str| {
            ExpertList::parse(text).map_err(|reason| AssembleError::BadOption {
                option,
                text: text.to_string(),
                reason,
            })
        };
        let selection = match (&self.experts, &self.keep, self.keep_top, &self.imatrix) {
            (Some(e), _, _, _) => Selection::List(list("--experts", e)?),
            (_, Some(k), _, _) => Selection::Keep(list("--keep", k)?),
            (_, _, Some(n), Some(imatrix)) => Selection::Top {
                n,
                imatrix: imatrix.clone(),
            },
            _ => Selection::All,
        };
        let router = self
            .router
            .as_deref()
            .map(|r| {
                RouterSpec::parse(r).map_err(|reason| AssembleError::BadOption {
                    option: "--router",
                    text: r.to_string(),
                    reason,
                })
            })
            .transpose()?;
        Ok(AssembleOptions {
            base: self.base.clone(),
            selection,
            router,
            experts_used: self.experts_used,
            force_expert_count: self.force_expert_count,
        })
    }

    /// The first assembly option given, if any (for `verify` without `--assembled`).
    pub(crate) fn given(&self) -> Option<&'static str> {
        [
            (self.base.is_some(), "--base"),
            (self.experts.is_some(), "--experts"),
            (self.keep.is_some(), "--keep"),
            (self.keep_top.is_some(), "--keep-top"),
            (self.router.is_some(), "--router"),
            (self.experts_used.is_some(), "--experts-used"),
            (self.force_expert_count, "--force-expert-count"),
        ]
        .into_iter()
        .find(|(given, _)| *given)
        .map(|(_, name)| name)
    }
}

/// Where parents the child records are found when not given with `--parent`.
#[derive(Args)]
pub(crate) struct RecordArgs {
    /// A directory holding the child's local parents under the file names it records
    /// (`inspect CHILD --provenance` lists them); `--parent NAME=PATH` still wins.
    #[arg(long, value_name = "DIR")]
    pub(crate) parents_dir: Option<PathBuf>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe_args(recipe: &Path) -> RecipeArgs {
        RecipeArgs {
            parents: Vec::new(),
            recipe: Some(recipe.to_path_buf()),
            takes: Vec::new(),
            allow_partial_experts: false,
            flavour: FlavourArg { flavour: None },
        }
    }

    #[test]
    fn a_recipe_file_that_is_there_but_unreadable_is_an_error_not_a_preset() {
        let dir = tempfile::tempdir().unwrap();
        // Each named like a preset: a directory, and a link to itself (ELOOP, not NotFound).
        let folder = dir.path().join("deepseek-r1t-chimera");
        std::fs::create_dir(&folder).unwrap();
        let looped = dir.path().join("r1t-mix-75.toml");
        std::os::unix::fs::symlink("r1t-mix-75.toml", &looped).unwrap();
        for path in [folder, looped] {
            match recipe_args(&path).recipe() {
                Err(CliError::Recipe(e @ RecipeError::Input(_))) => {
                    assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}")
                }
                Err(e) => panic!("{}: {e}", path.display()),
                Ok(_) => panic!("{}: read as a recipe", path.display()),
            }
        }
    }

    #[test]
    fn a_missing_path_is_a_missing_file_and_a_missing_name_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            recipe_args(&dir.path().join("mine.toml")).recipe(),
            Err(CliError::Recipe(RecipeError::Input(InputError::Io { .. })))
        ));
        assert!(matches!(
            recipe_args(Path::new("no-such-preset")).recipe(),
            Err(CliError::Usage(_))
        ));
        let r = recipe_args(Path::new("deepseek-r1t-chimera")).recipe();
        assert!(matches!(r, Ok(Some(r)) if !r.rules.is_empty()));
    }
}
