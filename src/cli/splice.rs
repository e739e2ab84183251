//! `splice` (and `assemble`'s writing): plan the child, print the plan (--dry-run) or write it
//! with progress; `--shard K` writes one shard as a farm job.

use super::args::{OutputArgs, SpliceArgs};
use super::progress::{Progress, Task};
use super::{CliError, emit, exit, install_cancel, open_parents, print_json, say};
use gguf_splice::execute::{self, ExecOptions, RemoteOptions, ShardOutcome, ShardRun};
use gguf_splice::plan::{self, Plan};
use gguf_splice::render;

/// `splice`: plan, then (unless --dry-run) write the child.
pub(crate) fn splice(args: SpliceArgs) -> Result<i32, CliError> {
    if let Some(child) = &args.like.like {
        return super::provenance::like(&args, child);
    }
    if args.rules.parents.is_empty() {
        return Err(CliError::Usage(
            "no parents: give --parent NAME=PATH (one per parent), or --like CHILD".into(),
        ));
    }
    let parents = open_parents(&args.rules)?;
    let recipe = args.rules.recipe()?.unwrap_or_default();
    let mut plan = plan::build(&parents, &recipe, &args.out.output, args.out.split())?;
    write_plan(&mut plan, &args.out)
}

/// Print the plan (`--dry-run`) or write it, with progress and a summary: shared by
/// `splice` and `assemble`.
pub(crate) fn write_plan(plan: &mut Plan, args: &OutputArgs) -> Result<i32, CliError> {
    if args.dry_run {
        // Say now what would stop the real run at the output.
        match execute::check_outputs(plan, args.force) {
            // Once: on stderr, and in --json's warnings (not also in the text plan on stdout).
            Err(e) => {
                let w = format!("writing would fail: {e}");
                say(format_args!("warning: {w}"));
                if args.json {
                    plan.warnings.push(w);
                }
            }
            Ok(()) => {
                if let Some(dir) = execute::missing_dir(&args.output) {
                    say(format_args!(
                        "would create the output directory {}",
                        dir.display()
                    ));
                }
            }
        }
        if args.json {
            print_json(&render::plan_json(plan))?;
        } else {
            emit(&render::plan_text(plan))?;
        }
        return Ok(exit::OK);
    }
    // Mixed tensors need a ggml: without one, refused before anything is opened.
    plan::require_ggml(plan)?;
    // An output that cannot be written ends the run before the plan's warnings, which would
    // only bury the error that matters (execute checks again, just before writing). Not for
    // a shard job: its shard may rightly exist already (a job run twice says so and exits 0).
    if args.shard.is_none() {
        execute::check_outputs(plan, args.force)?;
    }
    // Warnings are not progress: --quiet does not hide them.
    for w in &plan.warnings {
        say(format_args!("warning: {w}"));
    }

    execute::ignore_file_size_signal();
    let cancel = install_cancel();
    let progress = Progress::new(args.progress, args.quiet);
    let started = std::time::Instant::now();
    if let Some(k) = args.shard {
        return splice_shard(args, plan, k, &progress, &cancel, started);
    }
    // With remote parents, progress follows the network: bytes fetched, rate, ETA.
    let remote = plan
        .parents
        .iter()
        .any(|p| p.model.shards().iter().any(|s| s.remote.is_some()));
    progress.start(Task {
        job: None,
        child: args.output.display().to_string(),
        message: if remote {
            "fetched".into()
        } else {
            String::new()
        },
        shard: None,
        total: if remote {
            0
        } else {
            plan.tensors.iter().map(|t| t.info.n_bytes).sum()
        },
    });
    let written = execute::execute_with(
        plan,
        &ExecOptions {
            force: args.force,
            cancel: &cancel,
            progress: &|done| {
                if !remote {
                    progress.update(done)
                }
            },
        },
        &RemoteOptions {
            connections: args.connections,
            resume: args.resume,
            progress: &|fetched, to_fetch| progress.update_total(fetched, to_fetch),
        },
    )?;
    progress.finish("done");
    let secs = started.elapsed().as_secs_f64();
    for f in &written.removed {
        say(format_args!(
            "removed {}, left by an interrupted run",
            f.display()
        ));
    }
    if args.json {
        print_json(&render::written_json(plan, &written, secs))?;
    } else if !args.quiet {
        for line in render::written_text(&written, secs).lines() {
            say(format_args!("{line}"));
        }
    }
    Ok(exit::OK)
}

/// `splice --shard K`: one shard job of this child (see `batch`).
fn splice_shard(
    args: &OutputArgs,
    plan: &Plan,
    k: u64,
    progress: &Progress,
    cancel: &std::sync::atomic::AtomicBool,
    started: std::time::Instant,
) -> Result<i32, CliError> {
    let count = plan.shards.len();
    let i = k as usize - 1;
    if i >= count {
        return Err(CliError::Usage(format!(
            "--shard {k}: the child has {}",
            render::plural_count(count, "shard")
        )));
    }
    let shard = &plan.shards[i];
    progress.start(Task {
        job: None,
        child: args.output.display().to_string(),
        message: format!("shard {k}/{count}"),
        shard: Some((k as usize, count)),
        total: plan.tensors[shard.tensors.clone()]
            .iter()
            .map(|t| t.info.n_bytes)
            .sum(),
    });
    execute::check_shard_paths(plan)?;
    let run = execute::execute_shard(
        plan,
        i,
        &ExecOptions {
            force: args.force,
            cancel,
            progress: &|done| progress.update(done),
        },
    )?;
    let written = run.outcome == ShardOutcome::Written;
    progress.finish(if written { "done" } else { "skipped" });
    let secs = started.elapsed().as_secs_f64();
    if let Some(dir) = &run.created_dir {
        say(format_args!(
            "created the output directory {}",
            dir.display()
        ));
    }
    for f in &run.removed {
        say(format_args!("removed {}", f.display()));
    }
    if args.json {
        print_json(&shard_json(&run, k, count, secs))?;
    } else if !args.quiet {
        say(format_args!(
            "shard {k} of {count}: {} {} ({secs:.1} s); {}",
            if written {
                "wrote"
            } else {
                "already complete:"
            },
            run.path.display(),
            if run.set_complete {
                "the child is complete"
            } else {
                "the first shard is put in place when every shard is complete"
            }
        ));
    }
    Ok(exit::OK)
}

/// What `splice --shard K --json` prints.
fn shard_json(run: &ShardRun, k: u64, count: usize, secs: f64) -> serde_json::Value {
    serde_json::json!({
        "shard": k,
        "shards": count,
        "path": run.path,
        "bytes": run.bytes,
        "written": run.outcome == ShardOutcome::Written,
        "set_complete": run.set_complete,
        "seconds": secs,
        "removed": run.removed,
        "created_dir": run.created_dir,
    })
}
