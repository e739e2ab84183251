//! The reporting commands: `inspect`, `diff` (bytes or `--values`) and `verify`, with their maps.

use std::path::Path;
use std::sync::Arc;

use super::args::{DiffArgs, FlavourArg, VerifyArgs};
use super::progress::{Progress, ProgressMode, Task};
use super::{CliError, emit, exit, maps, print_json};
use gguf_splice::compare::{self, CompareOptions, ValueOptions};
use gguf_splice::render::{self, map::Map};

/// Progress of a comparison (`--progress`): a bar on a terminal, JSON lines, or nothing. The
/// total is known only once the comparison has planned its reads.
fn compare_progress(mode: ProgressMode, checked: &Path) -> (Arc<Progress>, CompareOptions) {
    let p = Arc::new(Progress::new(mode, false));
    p.start(Task {
        job: None,
        child: checked.display().to_string(),
        message: "comparing".into(),
        shard: None,
        total: 0,
    });
    let reporter = Arc::clone(&p);
    let opts = CompareOptions {
        progress: Some(Arc::new(move |done, total| {
            reporter.update_total(done, total)
        })),
        ..CompareOptions::default()
    };
    (p, opts)
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

/// `diff`: reports only, exit 0 either way. `--values`, `--map` and `--grid` compare
/// dequantized values instead of bytes.
pub(crate) fn diff(args: DiffArgs) -> Result<i32, CliError> {
    let (ma, mb) = (args.flavour.open(&args.a)?, args.flavour.open(&args.b)?);
    let (p, opts) = compare_progress(args.progress, &args.b);
    if args.values || args.map.is_some() || args.grid {
        let progress = |done: u64, total: u64| p.update_total(done, total);
        let r = compare::diff_values(&ma, &mb, &ValueOptions::default(), &progress)?;
        p.finish("done");
        let map = Map::from_values(&r);
        if let Some(m) = &args.map {
            maps::write_map(m, &map, args.map_scale)?;
        }
        if args.json {
            print_json(&render::values_json(&r))?;
        } else {
            emit(&render::values_text(&r))?;
        }
        if args.grid {
            emit(&format!("\n{}", maps::grid(&map)))?;
        }
        return Ok(exit::OK);
    }
    let r = compare::diff(&ma, &mb, &opts)?;
    p.finish("done");
    if args.json {
        print_json(&render::diff_json(&r))?;
    } else {
        emit(&render::diff_text(&r))?;
    }
    Ok(exit::OK)
}

/// `verify`: exit 1 on a mismatch.
pub(crate) fn verify(args: VerifyArgs) -> Result<i32, CliError> {
    let (p, opts) = compare_progress(args.progress, &args.child);
    let r = super::provenance::verify(&args, &opts)?;
    p.finish("done");
    let code = if r.passed() { exit::OK } else { exit::MISMATCH };
    // A map has a cell per expert: built only when asked for, and refused for a child
    // claiming more experts than a picture can show (a damaged or hostile header).
    let map = if args.map.is_some() || args.grid {
        maps::check_drawable(&r)?;
        Some(Map::from_verify(&r))
    } else {
        None
    };
    if let (Some(m), Some(map)) = (&args.map, &map) {
        maps::write_map(m, map, args.map_scale)?;
    }
    let shown = if args.json {
        print_json(&render::verify_json(&r))
    } else {
        emit(&render::verify_text(&r))
    }
    .and_then(|()| match (&map, args.grid) {
        (Some(map), true) => emit(&format!("\n{}", maps::grid(map))),
        _ => Ok(()),
    });
    match shown {
        // A reader that stopped early (`verify ... | head`) ends the report, not the
        // verdict: a mismatch still exits 1, so `set -o pipefail` scripts see it.
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code),
        Err(e) => Err(e),
        Ok(()) => Ok(code),
    }
}
