//! `splice`: plan the child, print the plan (--dry-run) or write it with a progress bar.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::args::{OutputArgs, SpliceArgs};
use super::{CliError, emit, exit, open_parents, print_json};
use gguf_splice::execute::{self, ExecOptions, RemoteOptions};
use gguf_splice::plan::{self, Plan};
use gguf_splice::render;

/// `splice`: plan, then (unless --dry-run) write the child.
pub(crate) fn splice(args: SpliceArgs) -> Result<i32, CliError> {
    let parents = open_parents(&args.rules)?;
    let recipe = args.rules.recipe()?.unwrap_or_default();
    let plan = plan::build(&parents, &recipe, &args.out.output, args.out.split())?;
    write_plan(&plan, &args.out)
}

/// Print the plan (`--dry-run`) or write it, with a progress bar and a summary: shared by
/// `splice` and `assemble`.
pub(crate) fn write_plan(plan: &Plan, args: &OutputArgs) -> Result<i32, CliError> {
    if args.dry_run {
        // Say now what would stop the real run at the output.
        if let Err(e) = execute::check_outputs(plan, args.force) {
            eprintln!("gguf-splice: warning: writing would fail: {e}");
        }
        if args.json {
            print_json(&render::plan_json(plan))?;
        } else {
            emit(&render::plan_text(plan))?;
        }
        return Ok(exit::OK);
    }
    // Warnings are not progress: --quiet does not hide them.
    for w in &plan.warnings {
        eprintln!("gguf-splice: warning: {w}");
    }

    execute::ignore_file_size_signal();
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = Arc::clone(&cancel);
        // If a handler cannot be installed, Ctrl-C still kills us; the temporary file is
        // then left under a hidden name, never at the output path.
        let _ = ctrlc::set_handler(move || cancel.store(true, Ordering::Relaxed));
    }
    let remote = plan
        .parents
        .iter()
        .any(|p| p.model.shards().iter().any(|s| s.remote.is_some()));
    let total: u64 = plan.tensors.iter().map(|t| t.info.n_bytes).sum();
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        // With remote parents the bar follows the network: bytes fetched, rate, ETA.
        let bar = indicatif::ProgressBar::new(if remote { 0 } else { total });
        let template = if remote {
            "{bar:40} {bytes}/{total_bytes} fetched {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
        };
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("static template"));
        bar
    };
    let started = std::time::Instant::now();
    let progress = |done: u64| {
        if !remote {
            bar.set_position(done)
        }
    };
    let net_progress = |fetched: u64, to_fetch: u64| {
        bar.set_length(to_fetch);
        bar.set_position(fetched);
    };
    let written = execute::execute_with(
        plan,
        &ExecOptions {
            force: args.force,
            cancel: &cancel,
            progress: &progress,
        },
        &RemoteOptions {
            connections: args.connections,
            resume: args.resume,
            progress: &net_progress,
        },
    )?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    for f in &written.removed {
        eprintln!(
            "gguf-splice: removed {}, left by an interrupted run",
            f.display()
        );
    }
    if args.json {
        print_json(&render::written_json(plan, &written, secs))?;
    } else if !args.quiet {
        for line in render::written_text(&written, secs).lines() {
            eprintln!("gguf-splice: {line}");
        }
    }
    Ok(exit::OK)
}
