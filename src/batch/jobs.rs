//! Jobs of a batch: one per output shard of every child, numbered 0..N-1 (children in
//! manifest order, each child's shards in order). Also the checks before writing, running a
//! job or all of them, the status of every shard, and the per-child summary.
//!
//! Before anything is written, every child's output side is checked: directories exist and
//! are writable, no output is an input or a non-regular file. A whole batch also checks what
//! is at every output path (a file that is not the planned shard needs `force`) and the free
//! space per filesystem for the shards still to write. A single job checks its own shard's
//! path and space: the other shards belong to other jobs, which may be running.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use super::{Batch, BatchError};
use crate::execute::{
    self, ExecError, ExecOptions, RemoteOptions, ShardOutcome, ShardRun, ShardState,
};
use crate::plan::{self, Plan};

/// One independent unit of work: one output shard of one child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    /// Its number, 0..N-1 across the batch (what `--job` and array indices take).
    pub index: usize,
    /// The child, an index into the manifest's children.
    pub child: usize,
    /// The shard of that child, 0-based.
    pub shard: usize,
    /// How many shards that child has.
    pub shards: usize,
}

/// Every job of the batch, in order.
pub fn jobs(plans: &[Plan]) -> Vec<Job> {
    let mut out = Vec::new();
    for (child, p) in plans.iter().enumerate() {
        for shard in 0..p.shards.len() {
            out.push(Job {
                index: out.len(),
                child,
                shard,
                shards: p.shards.len(),
            });
        }
    }
    out
}

/// What running jobs reports as it goes, for progress displays.
#[derive(Debug)]
pub enum JobEvent<'a> {
    /// A job starts: `total` tensor bytes to copy if its shard is not already complete.
    Started {
        /// The job.
        job: &'a Job,
        /// Tensor bytes of its shard.
        total: u64,
    },
    /// Tensor bytes copied so far.
    Progress {
        /// The job.
        job: &'a Job,
        /// Bytes copied.
        done: u64,
        /// Tensor bytes of its shard.
        total: u64,
    },
    /// A job finished (written or skipped).
    Finished {
        /// What it did.
        report: &'a JobReport,
    },
}

/// How to run jobs.
pub struct RunOptions<'a> {
    /// Replace files at output paths that are not the planned shards.
    pub force: bool,
    /// Set from a signal handler; checked between chunks.
    pub cancel: &'a AtomicBool,
    /// Called as jobs start, progress and finish.
    pub events: &'a dyn Fn(JobEvent),
}

/// What one job did.
#[derive(Debug)]
pub struct JobReport {
    /// The job.
    pub job: Job,
    /// The writer's account: written or skipped, set complete, files removed.
    pub run: ShardRun,
    /// Tensor bytes of the shard.
    pub total: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// The state of one output shard.
#[derive(Clone, Debug)]
pub struct ShardStatus {
    /// The job that writes it.
    pub job: Job,
    /// Its path.
    pub path: PathBuf,
    /// Complete, staged (a first shard waiting for the rest), missing, or another file.
    pub state: ShardState,
}

/// One row of the summary: a child, the shards a run covered, and their bytes by parent.
#[derive(Clone, Debug)]
pub struct ChildSummary {
    /// `#2 (late/chimera-late.gguf)`.
    pub child: String,
    /// The first shard's path (the file readers open).
    pub output: PathBuf,
    /// The child's shard count.
    pub shard_count: usize,
    /// The shards covered (0-based): all of them for a whole batch or a dry run.
    pub shards: Vec<usize>,
    /// Bytes of the covered shards' files.
    pub bytes: u64,
    /// Tensor bytes of the covered shards by parent, in the child's parent order.
    pub bytes_by_parent: Vec<(String, u64)>,
    /// Jobs that wrote their shard.
    pub written: usize,
    /// Jobs that found their shard complete.
    pub skipped: usize,
    /// Wall time of those jobs, seconds.
    pub seconds: f64,
    /// The whole child is in place (as far as the jobs run saw; `--status` checks).
    pub complete: bool,
}

fn exec_err(batch: &Batch, child: usize) -> impl Fn(ExecError) -> BatchError + '_ {
    move |source| BatchError::Exec {
        manifest: batch.manifest.path.clone(),
        child: batch.children[child].spec.label.clone(),
        source,
    }
}

/// The checks every job makes for every child before writing (see the module comment).
/// No output may be any parent of the manifest, not only one of its own child's: a child
/// must not overwrite what another child reads.
pub fn check_paths(batch: &Batch, plans: &[Plan]) -> Result<(), BatchError> {
    let mut inputs: Vec<(u64, u64, PathBuf)> = Vec::new();
    for c in &batch.children {
        for shard in c.parents.iter().flat_map(|p| p.model.shards()) {
            if let Ok(m) = std::fs::metadata(&shard.path) {
                inputs.push((m.dev(), m.ino(), shard.path.clone()));
            }
        }
    }
    for (i, p) in plans.iter().enumerate() {
        execute::check_shard_paths(p).map_err(exec_err(batch, i))?;
        let outputs = p.shards.iter().map(|s| s.path.clone());
        for out in outputs.chain(execute::staged_path(p)) {
            // Through symbolic links: a link to a parent is that parent.
            let Ok(m) = std::fs::metadata(&out) else {
                continue;
            };
            if let Some((_, _, input)) = inputs
                .iter()
                .find(|(dev, ino, _)| (*dev, *ino) == (m.dev(), m.ino()))
            {
                return Err(exec_err(batch, i)(ExecError::OutputIsInput {
                    output: out,
                    input: input.clone(),
                }));
            }
        }
    }
    Ok(())
}

/// The checks of a whole batch before anything is written: [`check_paths`], then every
/// output path (a file that is not the planned shard needs `force`), then the free space
/// on each filesystem for the shards not yet complete.
pub fn check_all(batch: &Batch, plans: &[Plan], force: bool) -> Result<(), BatchError> {
    check_paths(batch, plans)?;
    // Bytes still to write, by filesystem (device), with a directory on it.
    let mut needed: BTreeMap<u64, (PathBuf, u64)> = BTreeMap::new();
    for job in jobs(plans) {
        let plan = &plans[job.child];
        let state = execute::shard_state(plan, job.shard).map_err(exec_err(batch, job.child))?;
        let shard = &plan.shards[job.shard];
        match state {
            ShardState::Complete | ShardState::Staged => continue,
            ShardState::Differs {
                what,
                expected,
                found,
            } if !force => {
                return Err(exec_err(batch, job.child)(ExecError::ShardDiffers {
                    path: shard.path.clone(),
                    what,
                    expected,
                    found,
                }));
            }
            _ => {}
        }
        // A directory still to be created will be on its nearest existing ancestor's
        // filesystem (check_paths made sure that one is a writable directory).
        let dir = shard
            .path
            .ancestors()
            .skip(1)
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .find(|d| d.exists())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let dev = std::fs::metadata(&dir)
            .map_err(|source| {
                exec_err(batch, job.child)(ExecError::Io {
                    path: dir.clone(),
                    op: "stat",
                    source,
                })
            })?
            .dev();
        needed.entry(dev).or_insert((dir, 0)).1 += shard.file_len();
    }
    for (dir, bytes) in needed.into_values() {
        let available = execute::available_space(&dir).map_err(|source| BatchError::Io {
            path: dir.clone(),
            source,
        })?;
        if available < bytes {
            return Err(BatchError::NotEnoughSpace {
                manifest: batch.manifest.path.clone(),
                dir,
                needed: bytes,
                available,
            });
        }
    }
    Ok(())
}

/// Run job `index` alone, as one task of a job array: [`check_paths`] for every child, then
/// its shard (skipped if complete).
pub fn run_job(
    batch: &Batch,
    plans: &[Plan],
    index: usize,
    opts: &RunOptions,
) -> Result<JobReport, BatchError> {
    let all = jobs(plans);
    let job = all.get(index).ok_or_else(|| BatchError::NoSuchJob {
        manifest: batch.manifest.path.clone(),
        job: index,
        count: all.len(),
    })?;
    check_paths(batch, plans)?;
    check_ggml(batch, plans, std::iter::once(job.child))?;
    execute_job(batch, plans, job, opts)
}

/// Run every job in order in this process, after [`check_all`]. Each child's first shard is
/// staged by its first job and put in place by its last, so a visible first shard heads a
/// complete set here too. A child with a remote parent is written by one whole run instead
/// (`run_whole`).
pub fn run_all(
    batch: &Batch,
    plans: &[Plan],
    opts: &RunOptions,
) -> Result<Vec<JobReport>, BatchError> {
    check_all(batch, plans, opts.force)?;
    check_ggml(batch, plans, 0..plans.len())?;
    let all = jobs(plans);
    let mut reports = Vec::with_capacity(all.len());
    for (child, plan) in plans.iter().enumerate() {
        let mine: Vec<&Job> = all.iter().filter(|j| j.child == child).collect();
        if reads_remote(plan) {
            reports.extend(run_whole(batch, plan, &mine, opts)?);
        } else {
            for job in mine {
                reports.push(execute_job(batch, plans, job, opts)?);
            }
        }
    }
    Ok(reports)
}

/// A child that mixes needs a ggml to be written: refused before any job writes, as `splice`
/// refuses it (planning, `--dry-run` and `--list-jobs` need none).
fn check_ggml(
    batch: &Batch,
    plans: &[Plan],
    children: impl Iterator<Item = usize>,
) -> Result<(), BatchError> {
    for i in children {
        plan::require_ggml(&plans[i]).map_err(|source| BatchError::Plan {
            manifest: batch.manifest.path.clone(),
            child: batch.children[i].spec.label.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Whether a child reads a remote parent. Shard jobs cannot fetch one (they write with
/// plain copies and keep no journal for `--resume`), so such a child is one whole run.
fn reads_remote(plan: &Plan) -> bool {
    plan.parents
        .iter()
        .any(|p| p.model.shards().iter().any(|s| s.remote.is_some()))
}

/// Write a child with a remote parent as `splice` writes one ([`execute::execute_with`]:
/// ranges fetched in parallel, the set published at once), or skip it when every shard is
/// already complete. Reported as its jobs, so summaries and events stay one per shard.
fn run_whole(
    batch: &Batch,
    plan: &Plan,
    jobs: &[&Job],
    opts: &RunOptions,
) -> Result<Vec<JobReport>, BatchError> {
    let err = exec_err(batch, jobs[0].child);
    let mut complete = true;
    for i in 0..plan.shards.len() {
        complete &= matches!(
            execute::shard_state(plan, i).map_err(&err)?,
            ShardState::Complete
        );
    }
    let first = jobs[0];
    let total = plan.tensors.iter().map(|t| t.info.n_bytes).sum();
    (opts.events)(JobEvent::Started { job: first, total });
    let started = Instant::now();
    let (outcome, mut removed, mut created_dir) = if complete {
        (ShardOutcome::Skipped, Vec::new(), None)
    } else {
        let fetched = |done, total| {
            (opts.events)(JobEvent::Progress {
                job: first,
                done,
                total,
            })
        };
        let written = execute::execute_with(
            plan,
            &ExecOptions {
                force: opts.force,
                cancel: opts.cancel,
                // Progress follows the network: bytes fetched of bytes to fetch.
                progress: &|_| {},
            },
            &RemoteOptions {
                connections: execute::DEFAULT_CONNECTIONS,
                resume: false,
                progress: &fetched,
            },
        )
        .map_err(&err)?;
        (ShardOutcome::Written, written.removed, written.created_dir)
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut out = Vec::with_capacity(jobs.len());
    for (k, job) in jobs.iter().enumerate() {
        let total = tensor_bytes(plan, job.shard);
        if k > 0 {
            (opts.events)(JobEvent::Started { job, total });
        }
        let shard = &plan.shards[job.shard];
        let report = JobReport {
            job: **job,
            run: ShardRun {
                path: shard.path.clone(),
                bytes: shard.file_len(),
                outcome,
                set_complete: true,
                removed: std::mem::take(&mut removed),
                created_dir: created_dir.take(),
            },
            total,
            // The whole run's time, once.
            seconds: if k == 0 { seconds } else { 0.0 },
        };
        (opts.events)(JobEvent::Finished { report: &report });
        out.push(report);
    }
    Ok(out)
}

fn tensor_bytes(plan: &Plan, shard: usize) -> u64 {
    plan.tensors[plan.shards[shard].tensors.clone()]
        .iter()
        .map(|t| t.info.n_bytes)
        .sum()
}

fn execute_job(
    batch: &Batch,
    plans: &[Plan],
    job: &Job,
    opts: &RunOptions,
) -> Result<JobReport, BatchError> {
    let plan = &plans[job.child];
    let total = tensor_bytes(plan, job.shard);
    (opts.events)(JobEvent::Started { job, total });
    let started = Instant::now();
    let progress = |done| (opts.events)(JobEvent::Progress { job, done, total });
    let run = execute::execute_shard(
        plan,
        job.shard,
        &ExecOptions {
            force: opts.force,
            cancel: opts.cancel,
            progress: &progress,
        },
    )
    .map_err(exec_err(batch, job.child))?;
    let report = JobReport {
        job: *job,
        run,
        total,
        seconds: started.elapsed().as_secs_f64(),
    };
    (opts.events)(JobEvent::Finished { report: &report });
    Ok(report)
}

/// The state of every output shard, job by job.
pub fn status(batch: &Batch, plans: &[Plan]) -> Result<Vec<ShardStatus>, BatchError> {
    jobs(plans)
        .into_iter()
        .map(|job| {
            let plan = &plans[job.child];
            Ok(ShardStatus {
                path: plan.shards[job.shard].path.clone(),
                state: execute::shard_state(plan, job.shard).map_err(exec_err(batch, job.child))?,
                job,
            })
        })
        .collect()
}

/// One row per child that `reports` cover (every child, with all its shards, when
/// `reports` is empty: the dry run's table).
pub fn summarize(batch: &Batch, plans: &[Plan], reports: &[JobReport]) -> Vec<ChildSummary> {
    let mut rows = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let mine: Vec<&JobReport> = reports.iter().filter(|r| r.job.child == i).collect();
        if !reports.is_empty() && mine.is_empty() {
            continue;
        }
        let shards: Vec<usize> = if reports.is_empty() {
            (0..plan.shards.len()).collect()
        } else {
            mine.iter().map(|r| r.job.shard).collect()
        };
        let mut by_parent: Vec<(String, u64)> =
            plan.parents.iter().map(|p| (p.name.clone(), 0)).collect();
        for &s in &shards {
            for t in &plan.tensors[plan.shards[s].tensors.clone()] {
                for piece in &t.pieces {
                    if let Some(p) = piece.parent() {
                        by_parent[p].1 += piece.len;
                    }
                }
            }
        }
        let count = |o| mine.iter().filter(|r| r.run.outcome == o).count();
        rows.push(ChildSummary {
            child: batch.children[i].spec.label.clone(),
            output: plan.shards[0].path.clone(),
            shard_count: plan.shards.len(),
            bytes: shards.iter().map(|&s| plan.shards[s].file_len()).sum(),
            shards,
            bytes_by_parent: by_parent,
            written: count(ShardOutcome::Written),
            skipped: count(ShardOutcome::Skipped),
            seconds: mine.iter().map(|r| r.seconds).sum(),
            complete: mine.iter().any(|r| r.run.set_complete),
        });
    }
    rows
}
