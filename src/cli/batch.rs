//! `gguf-splice batch`: many children from one manifest, all at once or one shard job at a
//! time (for job arrays). Parses, calls the library's `batch` module, prints.

use std::path::PathBuf;

use clap::{ArgGroup, Args};

use gguf_splice::batch::{self, Batch, BatchError, JobEvent, JobReport, RunOptions};
use gguf_splice::execute::{self, ExecError, ShardOutcome};
use gguf_splice::gguf::GgufError;
use gguf_splice::render;
use gguf_splice::source::SourceError;

use super::progress::{Progress, ProgressMode, Task};
use super::{
    CliError, compare_code, emit, exit, gguf_code, input_code, install_cancel, plan_code,
    print_json, recipe_code, say,
};

/// Environment variables that name the job of an array task, in the order they are read.
pub const JOB_ENV: [&str; 2] = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

#[derive(Args)]
#[command(group(ArgGroup::new("action").args(
    ["dry_run", "list_jobs", "job", "job_from_env", "status", "verify"]
)))]
pub struct BatchArgs {
    /// The manifest (TOML): [parents] and [[children]]; paths in it are relative to it.
    manifest: PathBuf,
    /// Plan every child, check the outputs, print the summary table; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// List the jobs: one per output shard of every child, numbered from 0.
    #[arg(long)]
    list_jobs: bool,
    /// With --list-jobs: print only the number of jobs (for `--array=0-$((N-1))`).
    #[arg(long, requires = "list_jobs")]
    count: bool,
    /// Run job K only (see --list-jobs); skipped if its shard is already complete.
    #[arg(long, value_name = "K")]
    job: Option<usize>,
    /// Run the job an array task names: $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX
    /// (a Kubernetes Indexed Job).
    #[arg(long)]
    job_from_env: bool,
    /// Tell which shards are complete and in place; exit 1 unless all are.
    #[arg(long)]
    status: bool,
    /// Check every finished child against its parents and recipe, byte for byte; exit 1 on
    /// a mismatch.
    #[arg(long)]
    verify: bool,
    /// Print reports as JSON.
    #[arg(long)]
    json: bool,
    /// Replace files at output paths that are not the planned shards.
    #[arg(long)]
    force: bool,
    /// No progress bar and no messages about removed files (warnings are still printed).
    #[arg(long, short)]
    quiet: bool,
    /// Progress on stderr: auto (a bar when stderr is a terminal, else nothing), bar (the
    /// same, with a note when there is no terminal), json (JSON lines, for logs), or none.
    #[arg(long, value_enum, value_name = "MODE", default_value = "auto")]
    progress: ProgressMode,
}

/// The exit code of a batch error, by the rule of [`exit`]: what an input holds 3, getting at
/// a file 4; a job number that does not exist is a bad command line.
pub fn exit_code(e: &BatchError) -> i32 {
    match e {
        BatchError::Input(e) => input_code(e),
        BatchError::Io { .. } | BatchError::NotEnoughSpace { .. } => exit::IO,
        BatchError::NoSuchJob { .. } => exit::USAGE,
        // A URL in the manifest that cannot be read is the manifest's fault.
        BatchError::Parent {
            source: GgufError::Remote(SourceError::BadUrl { .. }),
            ..
        } => exit::BAD_INPUT,
        BatchError::Parent { source, .. } => gguf_code(source),
        BatchError::Recipe { source, .. } => recipe_code(source),
        BatchError::Plan { source, .. } => plan_code(source),
        BatchError::Exec { source, .. } if matches!(source.cause(), ExecError::Interrupted) => {
            exit::INTERRUPTED
        }
        // A remote parent where only local ones can be read (a shard job): as `splice
        // --shard`, change the command line.
        BatchError::Exec { source, .. }
            if matches!(
                source.cause(),
                ExecError::RemoteShardJob { .. } | ExecError::RemoteMix { .. }
            ) =>
        {
            exit::USAGE
        }
        BatchError::Exec { .. } => exit::IO,
        BatchError::Compare { source, .. } => compare_code(source),
        BatchError::Toml { .. }
        | BatchError::UnknownField { .. }
        | BatchError::NoParents { .. }
        | BatchError::NoChildren { .. }
        | BatchError::BadField { .. }
        | BatchError::UnknownParent { .. }
        | BatchError::RecipeNotFound { .. }
        | BatchError::SameOutput { .. } => exit::BAD_INPUT,
    }
}

/// The job an array task names (see [`JOB_ENV`]).
fn job_from_env() -> Result<usize, CliError> {
    for var in JOB_ENV {
        if let Ok(value) = std::env::var(var) {
            return value.trim().parse().map_err(|_| {
                CliError::Usage(format!(
                    "--job-from-env: {var}='{value}' is not a job number"
                ))
            });
        }
    }
    Err(CliError::Usage(format!(
        "--job-from-env: neither {} is set; give --job K",
        JOB_ENV.join(" nor ")
    )))
}

/// Runs `batch` and returns the exit code.
pub fn run(args: BatchArgs) -> Result<i32, CliError> {
    let batch = Batch::from_file(&args.manifest, super::http())?;
    let plans = batch.plan()?;

    if args.list_jobs {
        let jobs = batch::jobs(&plans);
        if args.count {
            emit(&format!("{}\n", jobs.len()))?;
        } else if args.json {
            print_json(&render::jobs_json(&batch, &plans, &jobs))?;
        } else {
            emit(&render::jobs_text(&batch, &plans, &jobs))?;
        }
        return Ok(exit::OK);
    }
    if args.status {
        let status = batch::status(&batch, &plans)?;
        if args.json {
            print_json(&render::status_json(&batch, &status))?;
        } else {
            emit(&render::status_text(&batch, &status))?;
        }
        return Ok(if render::batch_complete(&status) {
            exit::OK
        } else {
            exit::MISMATCH
        });
    }
    if args.verify {
        // Every child gets its verdict: one that cannot be read does not hide the others'.
        let verdicts = batch.verify(&plans);
        for e in verdicts.iter().filter_map(|v| v.as_ref().err()) {
            say(format_args!("error: {e}"));
        }
        if args.json {
            print_json(&render::batch_verify_json(&batch, &verdicts))?;
        } else {
            emit(&render::batch_verify_text(&batch, &verdicts))?;
        }
        // A child that could not be read says why by its error's code; else 1 on a mismatch.
        if let Some(e) = verdicts.iter().find_map(|v| v.as_ref().err()) {
            return Ok(exit_code(e));
        }
        let passed = verdicts.iter().flatten().all(|r| r.passed());
        return Ok(if passed { exit::OK } else { exit::MISMATCH });
    }
    let job = match (args.job, args.job_from_env) {
        (Some(k), _) => Some(k),
        (None, true) => Some(job_from_env()?),
        (None, false) => None,
    };
    // Warnings are not progress: --quiet does not hide them. A job's log says what concerns
    // its own child. Children of the same parents share warnings about them (their chat
    // templates differ): each is said once, with the children it concerns.
    let job_child = job.and_then(|k| batch::jobs(&plans).get(k).map(|j| j.child));
    let mut warnings: Vec<(&str, Vec<&str>)> = Vec::new();
    for (i, (c, p)) in batch.children.iter().zip(&plans).enumerate() {
        if job_child.is_some_and(|j| j != i) {
            continue;
        }
        for w in &p.warnings {
            match warnings.iter_mut().find(|(text, _)| text == w) {
                Some((_, children)) => children.push(&c.spec.label),
                None => warnings.push((w, vec![&c.spec.label])),
            }
        }
    }
    for (w, children) in warnings {
        let which = if children.len() == 1 {
            "child"
        } else {
            "children"
        };
        say(format_args!(
            "warning: {which} {}: {w}",
            children.join(", ")
        ));
    }
    if args.dry_run {
        match batch::check_all(&batch, &plans, args.force) {
            Err(e) => say(format_args!("warning: writing would fail: {e}")),
            Ok(()) => {
                let mut dirs: Vec<_> = plans
                    .iter()
                    .filter_map(|p| execute::missing_dir(&p.shards[0].path))
                    .collect();
                dirs.dedup();
                for dir in dirs {
                    say(format_args!(
                        "would create the output directory {}",
                        dir.display()
                    ));
                }
            }
        }
        let rows = batch::summarize(&batch, &plans, &[]);
        if args.json {
            print_json(&render::batch_summary_json(&rows, true))?;
        } else {
            emit(&render::batch_summary_text(&rows, true))?;
        }
        return Ok(exit::OK);
    }

    execute::ignore_file_size_signal();
    let cancel = install_cancel();
    let progress = Progress::new(args.progress, args.quiet);
    let events = |e: JobEvent| match e {
        JobEvent::Started { job, total } => progress.start(Task {
            job: Some(job.index),
            child: batch.children[job.child].spec.label.clone(),
            message: format!(
                "job {} {} {}/{}",
                job.index,
                batch.children[job.child].spec.label,
                job.shard + 1,
                job.shards
            ),
            shard: Some((job.shard + 1, job.shards)),
            total,
        }),
        JobEvent::Progress { done, total, .. } => progress.update_total(done, total),
        JobEvent::Finished { report } => progress.finish(match report.run.outcome {
            ShardOutcome::Written => "done",
            ShardOutcome::Skipped => "skipped",
        }),
    };
    let opts = RunOptions {
        force: args.force,
        cancel: &cancel,
        events: &events,
    };
    let reports: Vec<JobReport> = match job {
        Some(k) => vec![batch::run_job(&batch, &plans, k, &opts)?],
        None => batch::run_all(&batch, &plans, &opts)?,
    };
    if !args.quiet {
        for dir in reports.iter().filter_map(|r| r.run.created_dir.as_ref()) {
            say(format_args!(
                "created the output directory {}",
                dir.display()
            ));
        }
        for f in reports.iter().flat_map(|r| &r.run.removed) {
            say(format_args!("removed {}", f.display()));
        }
    }
    let rows = batch::summarize(&batch, &plans, &reports);
    if args.json {
        print_json(&render::batch_summary_json(&rows, false))?;
    } else {
        emit(&render::batch_summary_text(&rows, false))?;
    }
    Ok(exit::OK)
}
