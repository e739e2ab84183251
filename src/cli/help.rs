//! Commands about the tool itself: the built-in presets, shell completions and the man page,
//! the latter two generated from the same clap definitions as the parser.

use clap::CommandFactory;

use std::path::Path;

use super::{Cli, CliError, emit, exit, say};
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

/// Every page: the main one, then one per subcommand at any depth (`presets show` is
/// `gguf-splice-presets-show`), named as the main page's SUBCOMMANDS section refers to them.
fn pages() -> Vec<clap::Command> {
    fn walk(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
        out.push(cmd.clone());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out);
        }
    }
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut out = Vec::new();
    walk(&root, &mut out);
    out
}

/// A page's name without the `gguf-splice-` prefix (`splice`, `presets-show`); empty for
/// the main page.
fn page_name(cmd: &clap::Command) -> String {
    let full = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    full.strip_prefix("gguf-splice")
        .unwrap_or(full)
        .trim_start_matches('-')
        .to_string()
}

/// A page, its source line naming the program and version (a subcommand has none).
fn man_page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("gguf-splice {}", env!("CARGO_PKG_VERSION")))
}

fn render(cmd: clap::Command) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    man_page(cmd).render(&mut out)?;
    Ok(out)
}

/// `man`: the main page on stdout; `man SUBCOMMAND` that subcommand's page; `man DIR` every
/// page, written into DIR (created if missing).
pub(crate) fn man(target: Option<&Path>) -> Result<i32, CliError> {
    let pages = pages();
    let Some(target) = target else {
        let page = render(pages[0].clone()).map_err(CliError::Stdout)?;
        emit(&String::from_utf8_lossy(&page))?;
        return Ok(exit::OK);
    };
    let wanted = target.to_string_lossy();
    let wanted = wanted.strip_prefix("gguf-splice-").unwrap_or(&wanted);
    if let Some(cmd) = pages
        .iter()
        .find(|c| !page_name(c).is_empty() && page_name(c) == wanted.replace(' ', "-"))
    {
        let page = render(cmd.clone()).map_err(CliError::Stdout)?;
        emit(&String::from_utf8_lossy(&page))?;
        return Ok(exit::OK);
    }
    // A word that is no subcommand is a typo more often than a directory to create.
    if !target.is_dir() && !wanted.contains('/') {
        let names: Vec<String> = pages.iter().skip(1).map(page_name).collect();
        return Err(CliError::Usage(format!(
            "man '{wanted}': no such subcommand ({}); to write every page into a directory, give one that exists or a path with a '/' ({wanted}/)",
            names.join(", ")
        )));
    }
    std::fs::create_dir_all(target).map_err(|source| CliError::Write {
        path: target.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for cmd in pages {
        let man = man_page(cmd);
        let path = target.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page).map_err(CliError::Stdout)?;
        std::fs::write(&path, page).map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    say(format_args!(
        "wrote {} man pages into {}: {}",
        written.len(),
        target.display(),
        written
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(exit::OK)
}
