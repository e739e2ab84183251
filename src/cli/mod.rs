//! The command line: parses arguments, calls the library, prints, and maps errors to exit
//! codes. No decisions about files or tensors are made here.

mod args;
mod assemble;
mod batch;
mod doctor;
mod fit;
mod help;
mod maps;
mod progress;
mod provenance;
mod reports;
mod splice;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use args::{DiffArgs, FlavourArg, RecipeArgs, SpliceArgs, VerifyArgs};
use gguf_splice::assemble::AssembleError;
use gguf_splice::batch::BatchError;
use gguf_splice::compare::CompareError;
use gguf_splice::execute::ExecError;
use gguf_splice::gguf::GgufError;
use gguf_splice::input::InputError;
use gguf_splice::mix::MixError;
use gguf_splice::plan::{Parent, PlanError};
use gguf_splice::recipe::RecipeError;
use gguf_splice::source::{Http, SourceError};

/// Exit codes, documented in docs/guarantees.md ("Exit codes").
///
/// The rule: a problem with what an input *holds* (a malformed GGUF, a bad recipe, a recipe or
/// chat template that is too large or not UTF-8, parents that do not fit together) exits 3; a
/// failure to *get at* a file or write one (missing, unreadable, not a regular file, output
/// exists, disk full) exits 4, whatever kind of file it is; a command that this build lacks
/// the means for (a mix or `--values` without ggml), however it was asked for, exits 5.
pub(crate) mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// `verify` found a child that does not match; `diff` never uses it.
    pub const MISMATCH: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// Input content: a parent, child, recipe or template is malformed, too large, or does
    /// not fit the others.
    pub const BAD_INPUT: i32 = 3;
    /// I/O: opening, reading or writing a file failed (missing, permissions, not a regular
    /// file, output exists, disk full, ...).
    pub const IO: i32 = 4;
    /// This build lacks what the command needs: ggml's quantizers for a mix rule, its
    /// dequantizers for `diff --values` (build with `--features ggml`). Another build of the
    /// same command line can succeed.
    pub const UNSUPPORTED: i32 = 5;
    /// Interrupted by Ctrl-C; nothing was left at the output path.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Parser)]
#[command(
    name = "gguf-splice",
    version,
    about = "Build chimera GGUF models from the tensors and experts of quantized parents, without dequantizing"
)]
struct Cli {
    /// The ggml to mix, measure and draw value maps with: a libggml-base shared library, or
    /// a directory holding one (a llama.cpp build or install). Default: GGUF_SPLICE_GGML,
    /// then beside llama-quantize/llama-server/llama-cli on PATH, the system library path,
    /// python3's libggml-python (`gguf-splice doctor` says which).
    #[arg(long, global = true, value_name = "PATH")]
    ggml: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's (or shard set's) metadata, tensors and totals.
    Inspect {
        /// Any shard of the model, local or remote (https://…, hf://ORG/REPO/PATH/FILE.gguf[@REVISION]).
        file: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flavour: FlavourArg,
        #[command(flatten)]
        provenance: args::InspectArgs,
    },
    /// Build a child model from parents by rules.
    Splice(SpliceArgs),
    /// Build an MoE from the experts of parents: dense models as experts, union, reorder or
    /// prune of MoE parents' experts, on quantized bytes.
    Assemble(args::AssembleArgs),
    /// Compare two models tensor by tensor and key by key (reports only: exits 0 either way).
    ///
    /// Compares the quantized bytes, without dequantizing; stacked experts (and router rows)
    /// expert by expert. `split.*` keys are ignored: sharding is not a model difference.
    /// Like `inspect`, it reports: the exit code is 0 whether or not the models differ.
    /// With --values, compares the dequantized values instead (any quant types): the
    /// relative distance ‖A − B‖ / ‖B‖ and the cosine of every tensor and expert.
    Diff(DiffArgs),
    /// Tell which parent each tensor and expert of a child matches (exits 1 on a mismatch).
    ///
    /// Compares the child's bytes with each parent's tensor of the same name, type and
    /// shape; stacked experts and router rows expert by expert. With --recipe and/or --take
    /// (read as `splice` reads them), or else the recipe or assemble options the child
    /// records, also checks that the child is exactly what they make: tensor names and
    /// order, types, shapes, every byte range, and the metadata (the `splice.*` record and
    /// `split.*` aside). Parents default to those the child records. Exits 1 if some bytes match no parent or the
    /// child differs from what the recipe makes, 0 otherwise.
    Verify(VerifyArgs),
    /// Fill a size budget best from quants of one model, each unit taken whole from one.
    ///
    /// Estimates, for every tensor (with its companions; a layer's routed experts together)
    /// and every parent, the squared error of its dequantized values against a reference
    /// parent, on sampled rows, weighted by an importance matrix if given and by how often
    /// it runs per token; then chooses per unit within the budget (a multiple-choice
    /// knapsack). Writes the child (-o), prints the choice (--dry-run) and/or writes it as a
    /// recipe that `splice` turns into the same bytes (--write-recipe). Needs a ggml (see
    /// `gguf-splice doctor`).
    Fit(Box<fit::FitArgs>),
    /// Make many children from one manifest, or run one shard job of them (job arrays).
    ///
    /// The manifest names parents once (each header is read once) and lists children, each
    /// with a recipe (a file or a preset name), --take-style rules, an output and split
    /// options. Every plan is checked before anything is written. The work is one job per
    /// output shard of every child (--list-jobs); --job K or --job-from-env runs one, so a
    /// Slurm job array or a Kubernetes Indexed Job can spread them over nodes. A job whose
    /// shard is already complete is skipped: re-running a failed array is safe.
    Batch(batch::BatchArgs),
    /// List the built-in recipes (presets), or print one to copy and edit.
    Presets {
        #[command(subcommand)]
        action: Option<PresetsAction>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff), or write them all: `man > gguf-splice.1`, `man splice`,
    /// `man presets-show`, `man share/man/man1/`.
    Man {
        /// A subcommand whose page to print (`splice`, `presets-show`); or a directory to
        /// write every page into (gguf-splice.1, gguf-splice-splice.1, ...): one that
        /// exists, or a path with a `/` (created if missing). Without it, the main page.
        #[arg(value_name = "SUBCOMMAND|DIR")]
        target: Option<std::path::PathBuf>,
    },
    /// Say which ggml mixing, `diff --values` and value maps would use: where it was found,
    /// how, its version and commit, and whether its type table agrees with ours (exits 5
    /// when there is none, or it is refused).
    Doctor,
}

#[derive(Subcommand)]
enum PresetsAction {
    /// Print a preset's TOML.
    Show {
        /// The preset's name.
        name: String,
    },
}

/// Everything that can go wrong, by layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Compare(#[from] CompareError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Ggml(#[from] gguf_splice::ggml_lib::GgmlError),
    #[error(transparent)]
    Record(#[from] gguf_splice::plan::record::RecordError),
    #[error("{0}")]
    Usage(String),
    #[error("writing to standard output: {0}")]
    Stdout(std::io::Error),
    #[error(transparent)]
    Fit(#[from] gguf_splice::fit::FitError),
    #[error("writing the map {path}: {source}")]
    Map {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The exit code of an input-file error: content 3, I/O 4.
pub(crate) fn input_code(e: &InputError) -> i32 {
    if e.is_content() {
        exit::BAD_INPUT
    } else {
        exit::IO
    }
}

/// The exit code of a container error.
pub(crate) fn gguf_code(e: &GgufError) -> i32 {
    match e {
        // Not a URL that can be read: change the argument.
        GgufError::Remote(SourceError::BadUrl { .. }) => exit::USAGE,
        GgufError::Io { .. } | GgufError::Remote(_) => exit::IO,
        GgufError::Input(e) => input_code(e),
        _ => exit::BAD_INPUT,
    }
}

/// The exit code of a planner error.
pub(crate) fn plan_code(e: &PlanError) -> i32 {
    match e {
        PlanError::ChatTemplateFile(e) => input_code(e),
        PlanError::MixUnavailable { .. } => exit::UNSUPPORTED,
        PlanError::Measure { source, .. } if lacks_ggml(source) => exit::UNSUPPORTED,
        PlanError::Measure { source, .. } if is_read(source) => exit::IO,
        // A remote parent where only local ones can be read: change the command line.
        PlanError::RemoteMix { .. } => exit::USAGE,
        _ => exit::BAD_INPUT,
    }
}

/// The exit code of a recipe error.
pub(crate) fn recipe_code(e: &RecipeError) -> i32 {
    match e {
        RecipeError::Input(e) => input_code(e),
        _ => exit::BAD_INPUT,
    }
}

/// The exit code of a comparison error.
pub(crate) fn compare_code(e: &CompareError) -> i32 {
    match e {
        CompareError::Gguf(e) => gguf_code(e),
        CompareError::Plan(e) => plan_code(e),
        CompareError::Mix(e) if lacks_ggml(e) => exit::UNSUPPORTED,
        // ggml refusing rows, or an unreadable importance matrix: the input's fault.
        CompareError::Mix(e) if !is_read(e) => exit::BAD_INPUT,
        CompareError::Mix(_) => exit::IO,
        // --values with no usable ggml: this machine lacks what the command needs.
        CompareError::ValuesUnavailable(_) => exit::UNSUPPORTED,
        CompareError::Dequantize { source, .. } if source.is_missing_ggml() => exit::UNSUPPORTED,
        CompareError::Open { .. } | CompareError::Read { .. } | CompareError::Remote { .. } => {
            exit::IO
        }
        _ => exit::BAD_INPUT,
    }
}

impl CliError {
    /// The exit code, by the rule in [`exit`]: content 3, I/O 4.
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            // No usable ggml: what the command needs is not on this machine.
            CliError::Ggml(_) => exit::UNSUPPORTED,
            CliError::Source(SourceError::BadUrl { .. }) => exit::USAGE,
            CliError::Source(_) => exit::IO,
            CliError::Stdout(_) | CliError::Map { .. } | CliError::Write { .. } => exit::IO,
            CliError::Fit(e) => fit::exit_code(e),
            CliError::Gguf(e) => gguf_code(e),
            CliError::Recipe(e) => recipe_code(e),
            CliError::Plan(e) => plan_code(e),
            CliError::Exec(e) if matches!(e.cause(), ExecError::Interrupted) => exit::INTERRUPTED,
            // A remote parent where only local ones can be read: change the command line.
            CliError::Exec(e)
                if matches!(
                    e.cause(),
                    ExecError::RemoteShardJob { .. } | ExecError::RemoteMix { .. }
                ) =>
            {
                exit::USAGE
            }
            CliError::Exec(ExecError::Mix(e)) if lacks_ggml(e) => exit::UNSUPPORTED,
            // ggml refusing rows, or an unreadable importance matrix: the input's fault.
            CliError::Exec(ExecError::Mix(e)) if !is_read(e) => exit::BAD_INPUT,
            CliError::Exec(_) => exit::IO,
            CliError::Compare(e) => compare_code(e),
            CliError::Assemble(AssembleError::BadOption { .. }) => exit::USAGE,
            CliError::Assemble(AssembleError::Io { .. }) => exit::IO,
            CliError::Assemble(AssembleError::Input(e)) => input_code(e),
            CliError::Assemble(AssembleError::Plan(e)) => plan_code(e),
            CliError::Assemble(_) => exit::BAD_INPUT,
            CliError::Batch(e) => batch::exit_code(e),
            CliError::Record(_) => exit::BAD_INPUT,
        }
    }
}

/// The HTTP client for remote models (`http(s)://`, `hf://`), from `HF_ENDPOINT` and
/// `HF_TOKEN`; it connects to nothing until a remote file is opened.
pub(crate) fn http() -> &'static std::sync::Arc<Http> {
    static HTTP: std::sync::OnceLock<std::sync::Arc<Http>> = std::sync::OnceLock::new();
    HTTP.get_or_init(|| std::sync::Arc::new(Http::from_env()))
}

/// A mixing error that says this build has no ggml (exit code UNSUPPORTED).
fn lacks_ggml(e: &MixError) -> bool {
    matches!(e, MixError::Ggml { source, .. } if source.is_missing_ggml())
}

/// A mixing error that is a failed read or write (exit code IO), not bad input.
fn is_read(e: &MixError) -> bool {
    matches!(
        e,
        MixError::Read { .. } | MixError::ReadChild { .. } | MixError::Write { .. }
    )
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Some(path) = &cli.ggml {
        gguf_splice::ggml_lib::set_path(path);
    }
    let result = match cli.command {
        Command::Inspect {
            file,
            json,
            flavour,
            provenance,
        } if provenance.provenance => provenance::inspect(&file, json, flavour, &provenance),
        Command::Inspect {
            file,
            json,
            flavour,
            ..
        } => reports::inspect(&file, json, flavour),
        Command::Splice(args) => splice::splice(args),
        Command::Assemble(args) => assemble::run(args),
        Command::Diff(args) => reports::diff(args),
        Command::Verify(args) => reports::verify(args),
        Command::Fit(args) => fit::run(*args),
        Command::Batch(args) => batch::run(args),
        Command::Presets { action } => help::presets(match &action {
            Some(PresetsAction::Show { name }) => Some(name.as_str()),
            None => None,
        }),
        Command::Completions { shell } => help::completions(shell),
        Command::Man { target } => help::man(target.as_deref()),
        Command::Doctor => doctor::doctor(),
    };
    match result {
        Ok(code) => code,
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            say(format_args!("error: {e}"));
            e.exit_code()
        }
    }
}

/// Writes `gguf-splice: MSG` on a line of stderr. A stderr nobody reads any more
/// (`splice ... 2>&1 | head -1`) loses the message, but never ends the run: `eprintln!`
/// would panic there (exit 101), before the child was written or after it was published.
pub(crate) fn say(msg: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "gguf-splice: {msg}");
}

/// Writes a report to stdout. A closed pipe (`gguf-splice inspect BIG.gguf | head -1`) is a
/// normal end, as in ripgrep: the error is returned and `main` exits 0 without a message.
pub(crate) fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Stdout)
}

pub(crate) fn print_json(v: &serde_json::Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    text.push('\n');
    emit(&text)
}

pub(crate) fn open_parents(rules: &RecipeArgs) -> Result<Vec<Parent>, CliError> {
    open_parent_specs(&rules.parents, rules.flavour)
}

/// Open `NAME=PATH` parents, each with `flavour`.
pub(crate) fn open_parent_specs(
    specs: &[String],
    flavour: FlavourArg,
) -> Result<Vec<Parent>, CliError> {
    specs
        .iter()
        .map(|spec| {
            let (name, path) = spec
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--parent '{spec}': expected NAME=PATH")))?;
            if name.is_empty() {
                return Err(CliError::Usage(format!("--parent '{spec}': empty name")));
            }
            if path.is_empty() {
                return Err(CliError::Usage(format!(
                    "--parent '{spec}': empty path; expected NAME=PATH"
                )));
            }
            Ok(Parent {
                name: name.to_string(),
                model: flavour.open(std::path::Path::new(path))?,
            })
        })
        .collect()
}

/// A flag that Ctrl-C sets; the writer checks it between chunks and cleans up. If a handler
/// cannot be installed, Ctrl-C still kills the process; temporary files are then left under
/// hidden names, never at an output path.
pub(crate) fn install_cancel() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let cancel = std::sync::Arc::new(AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&cancel);
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    cancel
}
