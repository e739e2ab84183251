//! The arguments commands share: parents, recipe and rules (`splice`, `verify`), and the
//! output options of `splice`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::CliError;
use gguf_splice::ggml_type::Flavour;
use gguf_splice::gguf::Model;
use gguf_splice::input::InputError;
use gguf_splice::presets::Preset;
use gguf_splice::recipe::{Recipe, RecipeError};

/// Parents and the rules that pick from them: shared by `splice` and `verify`.
#[derive(Args)]
pub(crate) struct RecipeArgs {
    /// NAME=PATH: a parent and the name rules call it by; PATH may be any shard. The first
    /// parent is the base unless the recipe names one.
    #[arg(long = "parent", value_name = "NAME=PATH", required = true)]
    pub(crate) parents: Vec<String>,
    /// A recipe: a file, or the name of a built-in preset (`gguf-splice presets` lists them).
    #[arg(long, value_name = "FILE|PRESET")]
    pub(crate) recipe: Option<PathBuf>,
    /// REGEX=NAME[:experts=RANGES][:layers=RANGES][:router]: take matching tensors from
    /// parent NAME (options as the recipe fields of the same names). Comes before the
    /// recipe's rules; the first matching rule wins. The rule is split at the first `=NAME`
    /// followed by `:` or the end; write `\=` for an `=` the regex must keep there.
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
    /// (llama.cpp). Without it, a model with a type only ik_llama.cpp defines is read as ik's,
    /// one whose type ids mean the same to both as mainline's, and one with an id the two read
    /// differently (such as 34-36, 40, 42) is refused.
    #[arg(long, value_name = "ik|mainline")]
    pub(crate) flavour: Option<Flavour>,
}

impl FlavourArg {
    /// Open a model (any shard) with this flavour.
    pub(crate) fn open(self, path: &Path) -> Result<Model, CliError> {
        Ok(Model::open_as(path, self.flavour)?)
    }
}

impl RecipeArgs {
    /// The recipe file (or an empty recipe) with the --take rules in front; `None` when
    /// neither was given.
    pub(crate) fn recipe(&self) -> Result<Option<Recipe>, CliError> {
        if self.recipe.is_none() && self.takes.is_empty() && !self.allow_partial_experts {
            return Ok(None);
        }
        let mut recipe = match &self.recipe {
            Some(path) => load_recipe(path)?,
            None => Recipe::default(),
        };
        recipe.prepend_takes(&self.takes)?;
        recipe.allow_partial_experts |= self.allow_partial_experts;
        Ok(Some(recipe))
    }
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// Any shard of the child.
    pub(crate) child: PathBuf,
    /// The parents, recipe and --take rules the child was made with.
    #[command(flatten)]
    pub(crate) rules: RecipeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
pub(crate) struct SpliceArgs {
    #[command(flatten)]
    pub(crate) rules: RecipeArgs,
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
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) split_max_size: Option<u64>,
    /// Shard the output: at most N tensors per shard.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) split_max_tensors: Option<u64>,
    /// Replace existing output files.
    #[arg(long)]
    pub(crate) force: bool,
    /// No progress bar and no summary (warnings are still printed).
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// `48G`, `500M` (decimal units, as llama-gguf-split), or a plain byte count.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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

/// A recipe file, or a built-in preset by name. A file of that name wins, as a path is
/// what the user typed; a name that is neither says which presets exist.
pub(crate) fn load_recipe(path: &Path) -> Result<Recipe, CliError> {
    // Anything but "not there" (a file, or one that cannot be looked at: permissions, a
    // path through a file) is read, so the error says what stopped it (exit 4).
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return Ok(Recipe::from_file(path)?),
    }
    let name = path.to_string_lossy();
    if let Some(p) = Preset::find(&name) {
        return Ok(p.recipe()?);
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
