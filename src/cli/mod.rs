//! The command line: parses arguments, calls the library, prints, and maps errors to exit
//! codes. No decisions about files or tensors are made here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};

use gguf_splice::compare::{self, CompareError, CompareOptions, ValueOptions};
use gguf_splice::execute::{self, ExecError, ExecOptions};
use gguf_splice::gguf::{GgufError, Model};
use gguf_splice::mix::MixError;
use gguf_splice::plan::{self, Parent, PlanError, SplitOptions};
use gguf_splice::recipe::{Recipe, RecipeError};
use gguf_splice::render::{self, map::Map};

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    /// `verify` found a child that does not match; `diff` never uses it.
    pub const MISMATCH: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// A parent, child or recipe is malformed or does not fit the others.
    pub const BAD_INPUT: i32 = 3;
    /// Reading or writing failed (disk full, permissions, output exists, ...).
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
    },
    /// Build a child model from parents by rules.
    Splice(SpliceArgs),
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
    /// (read as `splice` reads them), also checks that the child is exactly what they make:
    /// tensor names and order, types, shapes, every byte range, and the metadata
    /// (`splice.recipe` and `split.*` aside). Exits 1 if some bytes match no parent or the
    /// child differs from what the recipe makes, 0 otherwise.
    Verify(VerifyArgs),
}

/// Parents and the rules that pick from them: shared by `splice` and `verify`.
#[derive(Args)]
struct RecipeArgs {
    /// NAME=PATH: a parent and the name rules call it by; PATH may be any shard. The first
    /// parent is the base unless the recipe names one.
    #[arg(long = "parent", value_name = "NAME=PATH", required = true)]
    parents: Vec<String>,
    /// A recipe file (see mappings/).
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// REGEX=NAME[:experts=RANGES[:router]]: take matching tensors from parent NAME. Comes
    /// before the recipe's rules; the first matching rule wins.
    #[arg(long = "take", value_name = "RULE")]
    takes: Vec<String>,
    /// Allow the stacked expert matrices of one layer (gate, up, down) to come from
    /// different parents, expert by expert. Refused by default: such experts are chimeras
    /// of two models, usually because a regex missed one layout (`ffn_gate_up_exps`).
    #[arg(long)]
    allow_partial_experts: bool,
}

impl RecipeArgs {
    /// The recipe file (or an empty recipe) with the --take rules in front; `None` when
    /// neither was given.
    fn recipe(&self) -> Result<Option<Recipe>, CliError> {
        if self.recipe.is_none() && self.takes.is_empty() && !self.allow_partial_experts {
            return Ok(None);
        }
        let mut recipe = match &self.recipe {
            Some(path) => Recipe::from_file(path)?,
            None => Recipe::default(),
        };
        recipe.prepend_takes(&self.takes)?;
        recipe.allow_partial_experts |= self.allow_partial_experts;
        Ok(Some(recipe))
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// Any shard of the child.
    child: PathBuf,
    /// The parents, recipe and --take rules the child was made with.
    #[command(flatten)]
    rules: RecipeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Draw where each expert (and each other tensor) came from as a picture: FILE.svg,
    /// FILE.png, or FILE.json (the data behind the picture).
    #[arg(long, value_name = "FILE", value_parser = parse_map_path)]
    map: Option<MapPath>,
    /// Print the same grid in the terminal after the report (colors when stdout is a
    /// terminal and NO_COLOR is unset).
    #[arg(long, conflicts_with = "json")]
    grid: bool,
}

#[derive(Args)]
struct DiffArgs {
    /// Any shard of the first model.
    a: PathBuf,
    /// Any shard of the second model (the reference: distances are relative to its norm,
    /// as a mix threshold is relative to the base's).
    b: PathBuf,
    /// Compare dequantized values (ggml's to_float): per tensor and per expert, the
    /// relative distance ‖A − B‖ / ‖B‖ and the cosine similarity, with summaries by role
    /// and layer. Needs a build with `--features ggml`.
    #[arg(long)]
    values: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Draw the distances as a picture: layers x experts for each expert tensor, layers x
    /// roles for the others. FILE.svg, FILE.png, or FILE.json (the data behind the
    /// picture). Implies --values.
    #[arg(long, value_name = "FILE", value_parser = parse_map_path)]
    map: Option<MapPath>,
    /// Print the same grid in the terminal after the report (colors when stdout is a
    /// terminal and NO_COLOR is unset). Implies --values.
    #[arg(long, conflicts_with = "json")]
    grid: bool,
}

/// Where to draw a map, and in which format (by the file's extension).
#[derive(Clone, Debug)]
struct MapPath {
    path: PathBuf,
    format: MapFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapFormat {
    Svg,
    Png,
    Json,
}

fn parse_map_path(s: &str) -> Result<MapPath, String> {
    let path = PathBuf::from(s);
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let format = match ext.as_deref() {
        Some("svg") => MapFormat::Svg,
        Some("png") => MapFormat::Png,
        Some("json") => MapFormat::Json,
        _ => {
            return Err(format!(
                "'{s}': a map is written as .svg, .png or .json (for the terminal, use --grid)"
            ));
        }
    };
    Ok(MapPath { path, format })
}

#[derive(Args)]
struct SpliceArgs {
    #[command(flatten)]
    rules: RecipeArgs,
    /// Output file (with --split-*, the prefix of the shard names).
    #[arg(short, long)]
    output: PathBuf,
    /// Print the plan and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run, print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    json: bool,
    /// Shard the output: at most this much tensor data per shard (soft limit; M or G, decimal, as llama-gguf-split).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    split_max_size: Option<u64>,
    /// Shard the output: at most N tensors per shard.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    split_max_tensors: Option<u64>,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
    /// No progress bar and no summary.
    #[arg(long, short)]
    quiet: bool,
}

/// `48G`, `500M` (decimal units, as llama-gguf-split), or a plain byte count.
fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'G') => (&s[..s.len() - 1], 1_000_000_000),
        Some(b'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 48G or 500M"))?;
    if n == 0 {
        return Err("size must be positive".into());
    }
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Everything that can go wrong, by layer.
#[derive(Debug, thiserror::Error)]
enum CliError {
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
    #[error("writing the map {path}: {source}")]
    Map {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CliError {
    fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Stdout(_) | CliError::Map { .. } => exit::IO,
            CliError::Gguf(GgufError::Io { .. }) => exit::IO,
            CliError::Recipe(RecipeError::Io { .. }) => exit::IO,
            CliError::Plan(PlanError::Measure { source, .. }) if is_read(source) => exit::IO,
            CliError::Gguf(_) | CliError::Recipe(_) | CliError::Plan(_) => exit::BAD_INPUT,
            CliError::Exec(ExecError::Interrupted) => exit::INTERRUPTED,
            // ggml refusing rows, or an unreadable importance matrix: the input's fault.
            CliError::Exec(ExecError::Mix(e)) if !is_read(e) => exit::BAD_INPUT,
            CliError::Exec(_) => exit::IO,
            CliError::Compare(CompareError::Mix(e)) if !is_read(e) => exit::BAD_INPUT,
            // --values in a build that cannot dequantize: the command line asks too much.
            CliError::Compare(CompareError::ValuesUnavailable) => exit::USAGE,
            CliError::Compare(CompareError::Gguf(GgufError::Io { .. }))
            | CliError::Compare(CompareError::Open { .. })
            | CliError::Compare(CompareError::Mix(_))
            | CliError::Compare(CompareError::Read { .. }) => exit::IO,
            CliError::Compare(_) => exit::BAD_INPUT,
        }
    }
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
    let result = match cli.command {
        Command::Inspect { file, json } => inspect(&file, json),
        Command::Splice(args) => splice(args),
        Command::Diff(args) => diff(args),
        Command::Verify(args) => verify(args),
    };
    match result {
        Ok(code) => code,
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("gguf-splice: error: {e}");
            e.exit_code()
        }
    }
}

/// Writes a report to stdout. A closed pipe (`gguf-splice inspect BIG.gguf | head -1`) is a
/// normal end, as in ripgrep: the error is returned and `main` exits 0 without a message.
fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Stdout)
}

fn print_json(v: &serde_json::Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(v).expect("JSON values serialise");
    text.push('\n');
    emit(&text)
}

fn inspect(file: &std::path::Path, json: bool) -> Result<i32, CliError> {
    let model = Model::open(file)?;
    if json {
        print_json(&render::inspect_json(&model))?;
    } else {
        emit(&render::inspect_text(&model))?;
    }
    Ok(exit::OK)
}

fn diff(args: DiffArgs) -> Result<i32, CliError> {
    let (a, b) = (Model::open(&args.a)?, Model::open(&args.b)?);
    if args.values || args.map.is_some() || args.grid {
        let bar = progress_bar(false);
        let progress = |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
        };
        let r = compare::diff_values(&a, &b, &ValueOptions::default(), &progress)?;
        bar.finish_and_clear();
        let map = Map::from_values(&r);
        if let Some(m) = &args.map {
            write_map(m, &map)?;
        }
        if args.json {
            print_json(&render::values_json(&r))?;
        } else {
            emit(&render::values_text(&r))?;
        }
        if args.grid {
            emit(&format!("\n{}", grid(&map)))?;
        }
        return Ok(exit::OK);
    }
    let r = compare::diff(&a, &b, &CompareOptions::default())?;
    if args.json {
        print_json(&render::diff_json(&r))?;
    } else {
        emit(&render::diff_text(&r))?;
    }
    Ok(exit::OK)
}

/// Write a map to its file: to a temporary file beside it, then renamed into place.
fn write_map(to: &MapPath, map: &Map) -> Result<(), CliError> {
    let err = |source| CliError::Map {
        path: to.path.clone(),
        source,
    };
    let bytes = match to.format {
        MapFormat::Svg => render::map::map_svg(map).into_bytes(),
        MapFormat::Png => render::map::map_png(map).map_err(err)?,
        MapFormat::Json => {
            let mut t =
                serde_json::to_string_pretty(&map.to_json()).expect("JSON values serialise");
            t.push('\n');
            t.into_bytes()
        }
    };
    let dir = match to.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".gguf-splice-map")
        // A new file's usual mode (0666 & ~umask), not a temporary file's 0600.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(err)?;
    use std::io::Write;
    tmp.write_all(&bytes).map_err(err)?;
    tmp.persist(&to.path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The terminal grid of a map, sized to the terminal (or `COLUMNS`, else 160 columns).
fn grid(map: &Map) -> String {
    let tty = std::io::stdout().is_terminal();
    let width = terminal_width()
        .filter(|_| tty)
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .unwrap_or(160);
    let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    render::map::map_term(map, &render::map::TermOptions { width, color })
}

/// The width of the terminal on stdout.
fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to
    // one; on failure (not a terminal) it writes nothing and returns -1.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// A progress bar on stderr, hidden when stderr is not a terminal or `quiet`.
fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("static template"),
    );
    bar
}

fn verify(args: VerifyArgs) -> Result<i32, CliError> {
    let parents = open_parents(&args.rules.parents)?;
    let child = Model::open(&args.child)?;
    let recipe = args.rules.recipe()?;
    let r = compare::verify(
        &child,
        &parents,
        recipe.as_ref(),
        &CompareOptions::default(),
    )?;
    let map = Map::from_verify(&r);
    if let Some(m) = &args.map {
        write_map(m, &map)?;
    }
    if args.json {
        print_json(&render::verify_json(&r))?;
    } else {
        emit(&render::verify_text(&r))?;
    }
    if args.grid {
        emit(&format!("\n{}", grid(&map)))?;
    }
    Ok(if r.passed() { exit::OK } else { exit::MISMATCH })
}

fn open_parents(specs: &[String]) -> Result<Vec<Parent>, CliError> {
    specs
        .iter()
        .map(|spec| {
            let (name, path) = spec
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--parent '{spec}': expected NAME=PATH")))?;
            if name.is_empty() {
                return Err(CliError::Usage(format!("--parent '{spec}': empty name")));
            }
            Ok(Parent {
                name: name.to_string(),
                model: Model::open(std::path::Path::new(path))?,
            })
        })
        .collect()
}

fn splice(args: SpliceArgs) -> Result<i32, CliError> {
    let parents = open_parents(&args.rules.parents)?;
    let recipe = args.rules.recipe()?.unwrap_or_default();
    let split = SplitOptions {
        max_bytes: args.split_max_size,
        max_tensors: args.split_max_tensors.map(|n| n as usize),
    };
    let plan = plan::build(&parents, &recipe, &args.output, split)?;
    if args.dry_run {
        // Say now what would stop the real run at the output.
        if let Err(e) = execute::check_outputs(&plan, args.force) {
            eprintln!("gguf-splice: warning: writing would fail: {e}");
        }
        if args.json {
            print_json(&render::plan_json(&plan))?;
        } else {
            emit(&render::plan_text(&plan))?;
        }
        return Ok(exit::OK);
    }
    if !args.quiet {
        for w in &plan.warnings {
            eprintln!("gguf-splice: warning: {w}");
        }
    }

    execute::ignore_file_size_signal();
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // If a handler cannot be installed, Ctrl-C still kills us; the temporary file is
        // then left under a hidden name, never at the output path.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let total: u64 = plan.tensors.iter().map(|t| t.info.n_bytes).sum();
    let bar = progress_bar(args.quiet);
    bar.set_length(total);
    let started = std::time::Instant::now();
    // Tensors are written in plan order: the bytes done say which tensor is being written.
    let ends: Vec<u64> = plan
        .tensors
        .iter()
        .scan(0u64, |acc, t| {
            *acc += t.info.n_bytes;
            Some(*acc)
        })
        .collect();
    let shown = std::cell::Cell::new(usize::MAX);
    let progress = |done: u64| {
        bar.set_position(done);
        if ends.is_empty() {
            return;
        }
        let i = ends.partition_point(|&e| e <= done).min(ends.len() - 1);
        if shown.replace(i) != i {
            let t = &plan.tensors[i];
            let mixing = if t.mix.is_some() { " (mixing)" } else { "" };
            bar.set_message(format!(
                "tensor {}/{} {}{mixing}",
                i + 1,
                ends.len(),
                t.info.name
            ));
        }
    };
    let written = execute::execute(
        &plan,
        &ExecOptions {
            force: args.force,
            cancel: &cancel,
            progress: &progress,
        },
    )?;
    bar.finish_and_clear();
    if !args.quiet {
        for f in &written.removed {
            eprintln!(
                "gguf-splice: removed {}, left by an interrupted run",
                f.display()
            );
        }
        let secs = started.elapsed().as_secs_f64();
        let names: Vec<String> = written
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        eprintln!(
            "gguf-splice: wrote {} in {} file{} ({:.1} s, {}/s): {}",
            render::human_bytes(written.bytes),
            written.files.len(),
            if written.files.len() == 1 { "" } else { "s" },
            secs,
            render::human_bytes((written.bytes as f64 / secs.max(1e-9)) as u64),
            names.join(", ")
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_decimal_like_gguf_split() {
        assert_eq!(parse_size("48G"), Ok(48_000_000_000));
        assert_eq!(parse_size("500M"), Ok(500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0G").is_err());
        assert!(parse_size("12T").is_err());
    }
}
