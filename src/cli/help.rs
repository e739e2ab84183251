//! Commands about the tool itself: the built-in presets, shell completions and the man page,
//! the latter two generated from the same clap definitions as the parser.

use clap::CommandFactory;

use super::{Cli, CliError, emit, exit};
use gguf_splice::presets::{PRESETS, Preset};

/// `presets`: one line each; `presets show NAME`: the whole TOML, to copy and edit.
pub(crate) fn presets(show: Option<&str>) -> Result<i32, CliError> {
    match show {
        None => {
            let width = PRESETS.iter().map(|p| p.name.len()).max().unwrap_or(0);
            let mut out = String::new();
            for p in PRESETS {
                out.push_str(&format!("{:<width$}  {}\n", p.name, p.description()));
            }
            out.push_str(
                "\nuse one with --recipe NAME; `gguf-splice presets show NAME` prints it\n",
            );
            emit(&out)?;
        }
        Some(name) => {
            let p = Preset::find(name).ok_or_else(|| {
                CliError::Usage(format!(
                    "no preset named '{name}' (presets: {})",
                    Preset::names()
                ))
            })?;
            emit(p.text)?;
        }
    }
    Ok(exit::OK)
}

/// `completions SHELL`: a completion script on stdout.
pub(crate) fn completions(shell: clap_complete::Shell) -> Result<i32, CliError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "gguf-splice", &mut out);
    emit(&String::from_utf8_lossy(&out))?;
    Ok(exit::OK)
}

/// `man`: the man page (roff) on stdout.
pub(crate) fn man() -> Result<i32, CliError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(CliError::Stdout)?;
    emit(&String::from_utf8_lossy(&out))?;
    Ok(exit::OK)
}
