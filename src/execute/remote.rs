//! Writing an output shard when some parents are remote: the header and the local pieces
//! are written as in a local splice (local bytes still go file to file through
//! `copy_file_range`), while the remote pieces are fetched by `connections` threads with
//! ranged GETs and written at their offsets (`pwrite`) into the same part file.
//!
//! Memory stays bounded whatever the model: each connection streams through one small
//! buffer, and ranges are cut into jobs of at most [`JOB_BYTES`]. Completed ranges are
//! recorded in the [journal](super::journal) once they are on disk, so `--resume` skips them.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::hooks::{Hooks, Step};
use super::journal::{Resume, subtract};
use super::{COPY_CHUNK, ExecError, ExecOptions, RemoteOptions, io_err, is_write_error};
use crate::plan::{Plan, Source as PieceSource};
use crate::source::{FetchError, Source};

/// The most bytes one job (one ranged GET, one journal record) covers.
pub const JOB_BYTES: u64 = 16 << 20;
/// Completed ranges are made durable and journaled at least this often...
const JOURNAL_EVERY: Duration = Duration::from_secs(1);
/// ...or after this many bytes.
const JOURNAL_BYTES: u64 = 256 << 20;

/// A byte range copied from a parent file to an absolute offset of the output shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Job {
    pub parent: usize,
    pub shard: usize,
    pub src: u64,
    pub dest: u64,
    pub len: u64,
}

impl Job {
    fn dest_range(&self) -> Range<u64> {
        self.dest..self.dest + self.len
    }
}

fn push_merged(list: &mut Vec<Job>, j: Job) {
    if let Some(last) = list.last_mut()
        && (last.parent, last.shard) == (j.parent, j.shard)
        && last.src + last.len == j.src
        && last.dest + last.len == j.dest
    {
        last.len += j.len;
        return;
    }
    list.push(j);
}

/// The local and remote copies of output shard `i`, in output order; pieces contiguous on
/// both sides merged (consecutive tensors of one parent are often one range); remote ones
/// cut into jobs of at most `job_bytes`.
/// Bytes the plan made (an assembled router) are returned apart, with where they go.
pub(super) fn shard_jobs<'p>(
    plan: &'p Plan,
    i: usize,
    is_remote: &dyn Fn(usize, usize) -> bool,
    job_bytes: u64,
) -> ShardJobs<'p> {
    let shard = &plan.shards[i];
    let (mut local, mut remote, mut made) = (Vec::new(), Vec::new(), Vec::new());
    for t in &plan.tensors[shard.tensors.clone()] {
        let mut dest = shard.header_len + t.info.offset;
        for p in &t.pieces {
            let from = match &p.source {
                PieceSource::Parent(from) => from,
                PieceSource::Made(m) => {
                    made.push((dest, &m.bytes[..]));
                    dest += p.len;
                    continue;
                }
                // `execute_with` refuses mixes from remote parents before it gets here.
                PieceSource::Mix(_) => {
                    dest += p.len;
                    continue;
                }
            };
            let j = Job {
                parent: from.parent,
                shard: from.shard,
                src: from.offset,
                dest,
                len: p.len,
            };
            dest += p.len;
            if j.len == 0 {
                continue;
            }
            let list = if is_remote(from.parent, from.shard) {
                &mut remote
            } else {
                &mut local
            };
            push_merged(list, j);
        }
    }
    let mut cut = Vec::with_capacity(remote.len());
    for j in remote {
        let mut at = 0;
        while at < j.len {
            let n = (j.len - at).min(job_bytes.max(1));
            cut.push(Job {
                src: j.src + at,
                dest: j.dest + at,
                len: n,
                ..j
            });
            at += n;
        }
    }
    (local, cut, made)
}

/// The local jobs, the remote jobs, and (offset, bytes) of what the plan made.
pub(super) type ShardJobs<'p> = (Vec<Job>, Vec<Job>, Vec<(u64, &'p [u8])>);

/// What the threads tell the coordinating thread.
enum Msg {
    /// Bytes `range` of the shard, one whole job, are written. (Part of a job that failed
    /// is not recorded: the journal holds whole jobs only, so each of its lines can be
    /// checked against the plan.)
    Written(Range<u64>),
    /// A thread stopped with this error.
    Failed(ExecError),
}

/// Counters shared with the caller across shards.
#[derive(Default)]
pub(super) struct Counters {
    /// Tensor bytes written (local and remote, this run).
    pub done: AtomicU64,
    /// Remote bytes written this run.
    pub fetched: AtomicU64,
}

/// What a shard's copying threads share.
#[derive(Clone, Copy)]
pub(super) struct Shared<'a> {
    pub plan: &'a Plan<'a>,
    pub sources: &'a [Vec<Source>],
    pub counters: &'a Counters,
}

/// A run's context: the shared part, and what only the coordinating thread uses.
pub(super) struct Ctx<'a> {
    pub shared: Shared<'a>,
    pub opts: &'a ExecOptions<'a>,
    pub remote: &'a RemoteOptions<'a>,
    pub hooks: &'a Hooks,
    /// Tensor bytes an earlier run completed (journal).
    pub resumed: u64,
    /// Remote bytes this run fetches.
    pub to_fetch: u64,
}

impl Ctx<'_> {
    fn report(&self) {
        let c = self.shared.counters;
        (self.opts.progress)(self.resumed + c.done.load(Ordering::Relaxed));
        (self.remote.progress)(c.fetched.load(Ordering::Relaxed), self.to_fetch);
    }
}

/// Write output shard `i` into its part file, skipping the ranges the journal has.
pub(super) fn write_shard(ctx: &Ctx, i: usize, state: &mut Resume) -> Result<(), ExecError> {
    let sh = ctx.shared;
    let plan = sh.plan;
    let shard = &plan.shards[i];
    let part = state.parts[i].clone();
    let out = OpenOptions::new()
        .write(true)
        .open(&part)
        .map_err(io_err(&part, "open"))?;
    let header = super::shard_header(plan, i);
    if header.len() as u64 != shard.header_len {
        return Err(ExecError::SizeMismatch {
            path: shard.path.clone(),
            what: "header",
            expected: shard.header_len,
            found: header.len() as u64,
        });
    }
    out.write_all_at(&header, 0)
        .map_err(io_err(&shard.path, "write"))?;

    let is_remote = |p: usize, s: usize| matches!(sh.sources[p][s], Source::Http(_));
    let (local, remote, made) = shard_jobs(plan, i, &is_remote, JOB_BYTES);
    for (dest, bytes) in made {
        out.write_all_at(bytes, dest)
            .map_err(io_err(&shard.path, "write"))?;
    }
    let todo: Vec<Job> = remote
        .iter()
        .flat_map(|j| {
            subtract(j.dest_range(), &state.done[i])
                .into_iter()
                .map(|r| Job {
                    src: j.src + (r.start - j.dest),
                    dest: r.start,
                    len: r.end - r.start,
                    ..j.clone()
                })
        })
        .collect();

    let abort = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<Msg>();
    let cancel = ctx.opts.cancel;
    let stop = || cancel.load(Ordering::Relaxed) || abort.load(Ordering::Relaxed);
    let mut first_error: Option<ExecError> = None;
    std::thread::scope(|s| -> Result<(), ExecError> {
        {
            let tx = tx.clone();
            let (local, part, stop) = (&local, &part, &stop);
            s.spawn(move || {
                if let Err(e) = copy_local(sh, i, part, local, stop) {
                    let _ = tx.send(Msg::Failed(e));
                }
            });
        }
        let workers = ctx.remote.connections.clamp(1, 64).min(todo.len().max(1));
        for _ in 0..workers {
            let tx = tx.clone();
            let (todo, next, out, stop) = (&todo, &next, &out, &stop);
            s.spawn(move || fetch_jobs(sh, i, todo, next, out, stop, &tx));
        }
        drop(tx);
        // Coordinate: progress, journal, first error.
        let mut pending: Vec<Range<u64>> = Vec::new();
        let mut pending_bytes = 0u64;
        let mut last_flush = Instant::now();
        loop {
            let msg = rx.recv_timeout(Duration::from_millis(100));
            let finished = matches!(msg, Err(mpsc::RecvTimeoutError::Disconnected));
            match msg {
                Ok(Msg::Written(r)) => {
                    pending_bytes += r.end - r.start;
                    pending.push(r);
                }
                Ok(Msg::Failed(e)) => {
                    abort.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
                Err(_) => {}
            }
            ctx.report();
            let due = pending_bytes >= JOURNAL_BYTES || last_flush.elapsed() >= JOURNAL_EVERY;
            if !pending.is_empty() && (due || finished) {
                if let Err(e) = flush(ctx, &out, &shard.path, i, state, &mut pending) {
                    abort.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                pending_bytes = 0;
                last_flush = Instant::now();
            }
            if finished {
                return Ok(());
            }
        }
    })?;
    if let Some(e) = first_error {
        return Err(e);
    }
    if ctx.opts.cancel.load(Ordering::Relaxed) {
        return Err(ExecError::Interrupted);
    }
    out.sync_all().map_err(io_err(&shard.path, "fsync"))
}

/// Make the written ranges durable, then record them in the journal: a line never claims
/// bytes a crash could lose.
fn flush(
    ctx: &Ctx,
    out: &File,
    path: &Path,
    i: usize,
    state: &mut Resume,
    pending: &mut Vec<Range<u64>>,
) -> Result<(), ExecError> {
    out.sync_data().map_err(io_err(path, "fsync"))?;
    for r in pending.drain(..) {
        state.record(i, r)?;
        ctx.hooks
            .step(Step::Journal)
            .map_err(io_err(state.journal(), "write"))?;
    }
    Ok(())
}

/// Copy the local pieces, kernel-side, through a handle of the part file of their own (the
/// remote threads write by position and never move it).
fn copy_local(
    ctx: Shared,
    i: usize,
    part: &Path,
    jobs: &[Job],
    stop: &dyn Fn() -> bool,
) -> Result<(), ExecError> {
    let shard = &ctx.plan.shards[i];
    let mut out = OpenOptions::new()
        .write(true)
        .open(part)
        .map_err(io_err(part, "open"))?;
    for j in jobs {
        let src_path = &ctx.plan.parents[j.parent].model.shards()[j.shard].path;
        let src: &File = ctx.sources[j.parent][j.shard]
            .as_local()
            .expect("local jobs come from local sources");
        let mut copied = 0;
        while copied < j.len {
            if stop() {
                return Err(ExecError::Interrupted);
            }
            let n = (j.len - copied).min(COPY_CHUNK);
            let mut reader = src;
            let r = reader
                .seek(SeekFrom::Start(j.src + copied))
                .and_then(|_| out.seek(SeekFrom::Start(j.dest + copied)))
                .and_then(|_| std::io::copy(&mut std::io::Read::take(reader, n), &mut out));
            match r {
                Ok(got) if got == n => {}
                Ok(got) => {
                    return Err(io_err(src_path, "read")(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "expected {n} bytes at offset {}, the file ended after {got}",
                            j.src + copied
                        ),
                    )));
                }
                Err(e) if is_write_error(&e) => return Err(io_err(&shard.path, "write")(e)),
                Err(e) => {
                    return Err(ExecError::Copy {
                        from: src_path.clone(),
                        to: shard.path.clone(),
                        source: e,
                    });
                }
            }
            copied += n;
            ctx.counters.done.fetch_add(n, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// One connection's thread: take the next job until none is left or the run stops.
fn fetch_jobs(
    ctx: Shared,
    i: usize,
    todo: &[Job],
    next: &AtomicUsize,
    out: &File,
    stop: &dyn Fn() -> bool,
    tx: &mpsc::Sender<Msg>,
) {
    let shard = &ctx.plan.shards[i];
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= todo.len() || stop() {
            return;
        }
        let j = &todo[k];
        let Source::Http(h) = &ctx.sources[j.parent][j.shard] else {
            unreachable!("remote jobs come from remote sources");
        };
        let mut written = 0u64;
        let r = h.fetch(
            j.src..j.src + j.len,
            &mut |b| {
                out.write_all_at(b, j.dest + written)?;
                written += b.len() as u64;
                ctx.counters
                    .done
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                ctx.counters
                    .fetched
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(())
            },
            stop,
        );
        if r.is_ok() {
            let _ = tx.send(Msg::Written(j.dest..j.dest + j.len));
        }
        let e = match r {
            Ok(()) => continue,
            Err(FetchError::Cancelled) => return,
            Err(FetchError::Sink(e)) => io_err(&shard.path, "write")(e),
            Err(FetchError::Source(source)) => ExecError::Remote {
                parent: ctx.plan.parents[j.parent].name.clone(),
                source,
            },
        };
        let _ = tx.send(Msg::Failed(e));
        return;
    }
}

/// Write every shard of a plan with remote parents into its part file; on success the
/// parts, as temporary files to publish, the state whose journal to remove after
/// publishing, and the bytes an earlier run had done.
pub(super) fn write_all(
    plan: &Plan,
    sources: &[Vec<Source>],
    opts: &ExecOptions,
    remote: &RemoteOptions,
    hooks: &Hooks,
) -> Result<(Vec<tempfile::TempPath>, Resume, u64), ExecError> {
    let is_remote = |p: usize, s: usize| matches!(sources[p][s], Source::Http(_));
    let jobs: Vec<Vec<Range<u64>>> = (0..plan.shards.len())
        .map(|i| {
            let mut r: Vec<Range<u64>> = shard_jobs(plan, i, &is_remote, JOB_BYTES)
                .1
                .iter()
                .map(Job::dest_range)
                .collect();
            r.sort_by_key(|r| r.start);
            r
        })
        .collect();
    let mut state = Resume::open(plan, remote.resume, &jobs)?;
    let counters = Counters::default();
    let resumed = state.resumed;
    let to_fetch: u64 = (0..plan.shards.len())
        .flat_map(|i| shard_jobs(plan, i, &is_remote, u64::MAX).1)
        .map(|j| j.len)
        .sum::<u64>()
        .saturating_sub(resumed);
    let ctx = Ctx {
        shared: Shared {
            plan,
            sources,
            counters: &counters,
        },
        opts,
        remote,
        hooks,
        resumed,
        to_fetch,
    };
    let mut result = Ok(());
    for i in 0..plan.shards.len() {
        result = hooks
            .step(Step::Shard)
            .map_err(io_err(&state.parts[i], "write"))
            .and_then(|()| write_shard(&ctx, i, &mut state));
        if result.is_err() {
            break;
        }
    }
    let result = result.and_then(|()| {
        if opts.cancel.load(Ordering::Relaxed) {
            return Err(ExecError::Interrupted);
        }
        super::identity::recheck(plan, sources)
    });
    match result {
        Ok(()) => {
            let mut temps = Vec::with_capacity(state.parts.len());
            for p in &state.parts {
                temps.push(tempfile::TempPath::try_from_path(p).map_err(io_err(p, "open"))?);
            }
            Ok((temps, state, resumed))
        }
        Err(e) => {
            let bytes = resumed + state.recorded;
            // Bytes of a parent that changed, or that could not be told from a changed
            // file's (no validator), are worthless; with none, there is nothing to continue
            // from.
            if e.parent_changed() || bytes == 0 || super::journal::unvalidated(plan).is_some() {
                state.discard();
                return Err(e);
            }
            let journal = state.journal().to_path_buf();
            Err(ExecError::Kept {
                cause: Box::new(e),
                journal,
                bytes,
            })
        }
    }
}
