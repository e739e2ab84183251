//! The reporting commands: `inspect`, `diff` and `verify`.

use std::io::IsTerminal;
use std::sync::Arc;

use super::args::{FlavourArg, VerifyArgs};
use super::{CliError, emit, exit, open_parents, print_json};
use gguf_splice::compare::{self, CompareOptions};
use gguf_splice::render;

/// A progress bar on a terminal's stderr for the long comparisons; hidden otherwise.
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "comparing {bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("static template"),
        );
        Bar(bar)
    }

    fn options(&self) -> CompareOptions {
        let bar = self.0.clone();
        CompareOptions {
            progress: Some(Arc::new(move |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })),
            ..CompareOptions::default()
        }
    }

    fn done(self) {
        self.0.finish_and_clear();
    }
}

/// `inspect`.
pub(crate) fn inspect(
    file: &std::path::Path,
    json: bool,
    flavour: FlavourArg,
) -> Result<i32, CliError> {
    let model = flavour.open(file)?;
    if json {
        print_json(&render::inspect_json(&model))?;
    } else {
        emit(&render::inspect_text(&model))?;
    }
    Ok(exit::OK)
}

/// `diff`: reports only, exit 0 either way.
pub(crate) fn diff(
    a: &std::path::Path,
    b: &std::path::Path,
    json: bool,
    flavour: FlavourArg,
) -> Result<i32, CliError> {
    let (a, b) = (flavour.open(a)?, flavour.open(b)?);
    let bar = Bar::new();
    let r = compare::diff(&a, &b, &bar.options())?;
    bar.done();
    if json {
        print_json(&render::diff_json(&r))?;
    } else {
        emit(&render::diff_text(&r))?;
    }
    Ok(exit::OK)
}

/// `verify`: exit 1 on a mismatch.
pub(crate) fn verify(args: VerifyArgs) -> Result<i32, CliError> {
    let parents = open_parents(&args.rules)?;
    let child = args.rules.flavour.open(&args.child)?;
    let recipe = args.rules.recipe()?;
    let bar = Bar::new();
    let r = compare::verify(&child, &parents, recipe.as_ref(), &bar.options())?;
    bar.done();
    let code = if r.passed() { exit::OK } else { exit::MISMATCH };
    let shown = if args.json {
        print_json(&render::verify_json(&r))
    } else {
        emit(&render::verify_text(&r))
    };
    match shown {
        // A reader that stopped early (`verify ... | head`) ends the report, not the
        // verdict: a mismatch still exits 1, so `set -o pipefail` scripts see it.
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code),
        Err(e) => Err(e),
        Ok(()) => Ok(code),
    }
}
