//! `splice`: plan the child, print the plan (--dry-run) or write it (all of it, or one shard
//! with --shard) with progress on stderr.

use super::args::SpliceArgs;
use super::progress::{Progress, Task};
use super::{CliError, emit, exit, install_cancel, open_parents, print_json};
use gguf_splice::execute::{self, ExecOptions, ShardOutcome, ShardRun, Written};
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
    // Warnings are not progress: --quiet does not hide them.
    for w in &plan.warnings {
        eprintln!("gguf-splice: warning: {w}");
    }

    execute::ignore_file_size_signal();
    let cancel = install_cancel();
    let progress = Progress::new(args.progress, args.quiet);
    let started = std::time::Instant::now();
    if let Some(k) = args.shard {
        return splice_shard(&args, &plan, k, &progress, &cancel, started);
    }
    progress.start(Task {
        job: None,
        child: args.output.display().to_string(),
        message: String::new(),
        shard: None,
        total: plan.tensors.iter().map(|t| t.info.n_bytes).sum(),
    });
    let written = execute::execute(
        &plan,
        &ExecOptions {
            force: args.force,
            cancel: &cancel,
            progress: &|done| progress.update(done),
        },
    )?;
    progress.finish("done");
    let secs = started.elapsed().as_secs_f64();
    for f in &written.removed {
        eprintln!(
            "gguf-splice: removed {}, left by an interrupted run",
            f.display()
        );
    }
    if args.json {
        print_json(&summary_json(&plan, &written, secs))?;
    } else if !args.quiet {
        let names: Vec<String> = written
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        eprintln!(
            "gguf-splice: wrote {} in {} ({:.1} s, {}/s): {}",
            render::human_bytes(written.bytes),
            render::plural_count(written.files.len(), "file"),
            secs,
            render::human_bytes((written.bytes as f64 / secs.max(1e-9)) as u64),
            names.join(", ")
        );
    }
    Ok(exit::OK)
}

/// `splice --shard K`: one shard job of this child (see `batch`).
fn splice_shard(
    args: &SpliceArgs,
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
    for f in &run.removed {
        eprintln!("gguf-splice: removed {}", f.display());
    }
    if args.json {
        print_json(&shard_json(&run, k, count, secs))?;
    } else if !args.quiet {
        eprintln!(
            "gguf-splice: shard {k} of {count}: {} {} ({secs:.1} s); {}",
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
        );
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
    })
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
