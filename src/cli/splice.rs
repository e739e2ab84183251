//! `splice`: plan the child, print the plan (--dry-run) or write it with a progress bar.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::args::SpliceArgs;
use super::{CliError, emit, exit, open_parents, print_json, say};
use gguf_splice::execute::{self, ExecOptions, Written};
use gguf_splice::plan::{self, Plan, SplitOptions};
use gguf_splice::render;

/// `splice`: plan, then (unless --dry-run) write the child.
pub(crate) fn splice(args: SpliceArgs) -> Result<i32, CliError> {
    let parents = open_parents(&args.rules)?;
    let recipe = args.rules.recipe()?.unwrap_or_default();
    let split = SplitOptions {
        max_bytes: args.split_max_size,
        max_tensors: args.split_max_tensors.map(|n| n as usize),
    };
    let mut plan = plan::build(&parents, &recipe, &args.output, split)?;
    if args.dry_run {
        // Say now what would stop the real run at the output: on stderr, and with the
        // plan's other warnings (so in --json too).
        if let Err(e) = execute::check_outputs(&plan, args.force) {
            let w = format!("writing would fail: {e}");
            say(format_args!("warning: {w}"));
            plan.warnings.push(w);
        }
        if args.json {
            print_json(&render::plan_json(&plan))?;
        } else {
            emit(&render::plan_text(&plan))?;
        }
        return Ok(exit::OK);
    }
    // An output that cannot be written ends the run before the plan's warnings, which would
    // only bury the error that matters (execute checks again, just before writing).
    execute::check_outputs(&plan, args.force)?;
    // Warnings are not progress: --quiet does not hide them.
    for w in &plan.warnings {
        say(format_args!("warning: {w}"));
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
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("static template"),
        );
        bar
    };
    let started = std::time::Instant::now();
    let progress = |done: u64| bar.set_position(done);
    let written = execute::execute(
        &plan,
        &ExecOptions {
            force: args.force,
            cancel: &cancel,
            progress: &progress,
        },
    )?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    for f in &written.removed {
        say(format_args!(
            "removed {}, left by an interrupted run",
            f.display()
        ));
    }
    if args.json {
        print_json(&summary_json(&plan, &written, secs))?;
    } else if !args.quiet {
        let names: Vec<String> = written
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        say(format_args!(
            "wrote {} in {} ({:.1} s, {}/s): {}",
            render::human_bytes(written.bytes),
            render::plural_count(written.files.len(), "file"),
            secs,
            render::human_bytes((written.bytes as f64 / secs.max(1e-9)) as u64),
            names.join(", ")
        ));
    }
    Ok(exit::OK)
}

/// What `splice --json` prints after a real run.
fn summary_json(plan: &Plan, written: &Written, secs: f64) -> serde_json::Value {
    let mut by_parent: Vec<u64> = vec![0; plan.parents.len()];
    for t in &plan.tensors {
        for p in &t.pieces {
            by_parent[p.parent] += p.len;
        }
    }
    serde_json::json!({
        "files": written.files.iter().zip(&plan.shards).map(|(f, s)| serde_json::json!({
            "path": f, "bytes": s.file_len(), "tensors": s.tensors.len(),
        })).collect::<Vec<_>>(),
        "bytes": written.bytes,
        "tensor_bytes_by_parent": plan.parents.iter().zip(&by_parent)
            .map(|(p, b)| (p.name.clone(), serde_json::json!(b)))
            .collect::<serde_json::Map<_, _>>(),
        "seconds": secs,
        "removed_leftovers": written.removed,
        "warnings": plan.warnings,
    })
}
