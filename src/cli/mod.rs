//! The command line: parses arguments, calls the library, prints, and maps errors to exit
//! codes. No decisions about files or tensors are made here.

mod args;
mod help;
mod reports;
mod splice;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use args::{FlavourArg, RecipeArgs, SpliceArgs, VerifyArgs};
use gguf_splice::compare::CompareError;
use gguf_splice::execute::ExecError;
use gguf_splice::gguf::GgufError;
use gguf_splice::input::InputError;
use gguf_splice::plan::{Parent, PlanError};
use gguf_splice::recipe::RecipeError;

/// Exit codes, documented in the README.
///
/// The rule: a problem with what an input *holds* (a malformed GGUF, a bad recipe, a recipe or
/// chat template that is too large or not UTF-8, parents that do not fit together) exits 3; a
/// failure to *get at* a file or write one (missing, unreadable, not a regular file, output
/// exists, disk full) exits 4, whatever kind of file it is.
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's (or shard set's) metadata, tensors and totals.
    Inspect {
        /// Any shard of the model.
        file: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flavour: FlavourArg,
    },
    /// Build a child model from parents by rules.
    Splice(SpliceArgs),
    /// Compare two models tensor by tensor and key by key (reports only: exits 0 either way).
    ///
    /// Compares the quantized bytes, without dequantizing; stacked experts (and router rows)
    /// expert by expert. `split.*` keys are ignored: sharding is not a model difference.
    /// Like `inspect`, it reports: the exit code is 0 whether or not the models differ.
    Diff {
        /// Any shard of the first model.
        a: PathBuf,
        /// Any shard of the second model.
        b: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flavour: FlavourArg,
    },
    /// Tell which parent each tensor and expert of a child matches (exits 1 on a mismatch).
    ///
    /// Compares the child's bytes with each parent's tensor of the same name, type and
    /// shape; stacked experts and router rows expert by expert. With --recipe and/or --take
    /// (read as `splice` reads them), also checks that the child is exactly what they make:
    /// tensor names and order, types, shapes, every byte range, and the metadata
    /// (`splice.recipe` and `split.*` aside). Exits 1 if some bytes match no parent or the
    /// child differs from what the recipe makes, 0 otherwise.
    Verify(VerifyArgs),
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
    /// Print the man page (roff), e.g. `gguf-splice man > gguf-splice.1`.
    Man,
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
    #[error("{0}")]
    Usage(String),
    #[error("writing to standard output: {0}")]
    Stdout(std::io::Error),
}

impl CliError {
    /// The exit code, by the rule in [`exit`]: content 3, I/O 4.
    fn exit_code(&self) -> i32 {
        fn input(e: &InputError) -> i32 {
            if e.is_content() {
                exit::BAD_INPUT
            } else {
                exit::IO
            }
        }
        fn gguf(e: &GgufError) -> i32 {
            match e {
                GgufError::Io { .. } => exit::IO,
                GgufError::Input(e) => input(e),
                _ => exit::BAD_INPUT,
            }
        }
        fn plan(e: &PlanError) -> i32 {
            match e {
                PlanError::ChatTemplateFile(e) => input(e),
                _ => exit::BAD_INPUT,
            }
        }
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Stdout(_) => exit::IO,
            CliError::Gguf(e) | CliError::Compare(CompareError::Gguf(e)) => gguf(e),
            CliError::Recipe(RecipeError::Input(e)) => input(e),
            CliError::Recipe(_) => exit::BAD_INPUT,
            CliError::Plan(e) | CliError::Compare(CompareError::Plan(e)) => plan(e),
            CliError::Exec(ExecError::Interrupted) => exit::INTERRUPTED,
            CliError::Exec(_) => exit::IO,
            CliError::Compare(CompareError::Open { .. } | CompareError::Read { .. }) => exit::IO,
            CliError::Compare(_) => exit::BAD_INPUT,
        }
    }
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect {
            file,
            json,
            flavour,
        } => reports::inspect(&file, json, flavour),
        Command::Splice(args) => splice::splice(args),
        Command::Diff {
            a,
            b,
            json,
            flavour,
        } => reports::diff(&a, &b, json, flavour),
        Command::Verify(args) => reports::verify(args),
        Command::Presets { action } => help::presets(match &action {
            Some(PresetsAction::Show { name }) => Some(name.as_str()),
            None => None,
        }),
        Command::Completions { shell } => help::completions(shell),
        Command::Man => help::man(),
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
    rules
        .parents
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
                model: rules.flavour.open(std::path::Path::new(path))?,
            })
        })
        .collect()
}
