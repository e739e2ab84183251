//! Executes a plan: checks the output side, writes each output shard to a hidden temporary
//! file beside its target, copies the planned byte ranges kernel-side, fsyncs, checks the
//! parents did not change, and publishes the set only when every shard is complete. It
//! decides nothing: what goes where is the plan's.
//!
//! - `error`: why a write failed, and what was left where;
//! - `outputs`: the output directory, existing files, leftovers of interrupted runs;
//! - `lock`: one lock per output, held by every run that writes it;
//! - [`identity`]: parents must stay the files that were planned from;
//! - `publish`: the renames into place, in an order that never shows a mixed set, and
//!   their rollback;
//! - `remote`: shards with remote pieces, fetched by parallel range requests;
//! - [`journal`]: what `--resume` needs to continue an interrupted remote splice;
//! - `shard`: one shard at a time, for jobs a scheduler runs independently;
//! - [`hooks`]: fault injection for tests.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::gguf::write::{DataWriter, encode_header};
use crate::mix::{self, MixError};
use crate::plan::{Plan, Source as PieceSource, shard_kvs};
use crate::source::Source;

mod error;
pub mod hooks;
pub mod identity;
pub mod journal;
mod lock;
mod outputs;
mod publish;
mod remote;
mod shard;

pub use error::ExecError;
use error::io_err;
use hooks::{Hooks, Step};
pub use outputs::missing_dir;
use outputs::{non_regular, parent_dir};
pub use shard::{
    ShardOutcome, ShardRun, ShardState, check_shard_paths, execute_shard, publish_if_complete,
    shard_state, staged_path,
};

/// Bytes copied per call, between checks for Ctrl-C and progress updates.
const COPY_CHUNK: u64 = 64 << 20;

/// Default number of parallel connections to remote parents.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// How to fetch from remote parents.
pub struct RemoteOptions<'a> {
    /// Parallel range requests (1 to 64).
    pub connections: usize,
    /// Continue an interrupted run from its journal ([`journal`]).
    pub resume: bool,
    /// Called with (remote bytes fetched by this run so far, remote bytes it fetches).
    pub progress: &'a dyn Fn(u64, u64),
}

impl Default for RemoteOptions<'_> {
    fn default() -> Self {
        RemoteOptions {
            connections: DEFAULT_CONNECTIONS,
            resume: false,
            progress: &|_, _| {},
        }
    }
}

/// Bytes received from one remote parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The parent's name.
    pub parent: String,
    /// Bytes received over the network from its files (headers included, retries too).
    pub bytes: u64,
}

/// How to run a plan.
pub struct ExecOptions<'a> {
    /// Replace existing output files (never inputs, and only regular files).
    pub force: bool,
    /// Set from a signal handler; checked between chunks.
    pub cancel: &'a AtomicBool,
    /// Called with the number of tensor bytes copied so far.
    pub progress: &'a dyn Fn(u64),
}

/// What a run wrote.
#[derive(Debug)]
pub struct Written {
    /// The output files, first shard first.
    pub files: Vec<PathBuf>,
    /// Their total size.
    pub bytes: u64,
    /// Files an interrupted earlier run into the same output had left, removed by this run.
    pub removed: Vec<PathBuf>,
    /// Per remote parent, the bytes received (empty when every parent is local).
    pub fetched: Vec<Fetched>,
    /// Tensor bytes an interrupted earlier run had written, not fetched again (`--resume`).
    pub resumed: u64,
    /// The output directory, if this run created it (it did not exist).
    pub created_dir: Option<PathBuf>,
}

/// Check everything about the output before a byte is copied: the directory is writable
/// (or missing under a writable one: it is created once every check has passed); no output is an input (by device and inode, so links count), a directory, a
/// device, a FIFO, a socket or a symbolic link; an existing output needs `force` (unless it
/// is a leftover of an interrupted run); and the free space suffices. `--dry-run` reports
/// the same problems.
pub fn check_outputs(plan: &Plan, force: bool) -> Result<(), ExecError> {
    survey(plan, force).map(|_| ())
}

/// [`check_outputs`], returning the leftovers of interrupted runs that may be removed.
fn survey(plan: &Plan, force: bool) -> Result<Vec<PathBuf>, ExecError> {
    // `-o missing_dir/` has a parent (`.`) that exists, and a temporary file can be made
    // there: only the final rename would fail, after the whole copy.
    for shard in &plan.shards {
        if !outputs::names_a_file(&shard.path) {
            return Err(ExecError::OutputNotAFileName {
                path: shard.path.clone(),
            });
        }
    }
    let dir = parent_dir(&plan.shards[0].path);
    // A directory still to be created holds nothing yet.
    let existing = outputs::check_dir(dir)?;
    let leftovers = if existing == dir {
        outputs::leftovers(plan, dir)?
    } else {
        Vec::new()
    };
    for shard in &plan.shards {
        if !check_target(plan, &shard.path)? {
            continue;
        }
        let is_leftover = leftovers
            .iter()
            .any(|l| l.file_name() == shard.path.file_name());
        if !force && !is_leftover {
            return Err(ExecError::OutputExists {
                path: shard.path.clone(),
            });
        }
    }
    let mut needed = plan.output_bytes();
    // Part files kept for --resume already hold (on disk) the bytes they have.
    for shard in &plan.shards {
        if let Ok(m) = std::fs::symlink_metadata(journal::part_path(&shard.path))
            && m.is_file()
        {
            needed = needed.saturating_sub(m.blocks().saturating_mul(512));
        }
    }
    check_space(existing, needed)?;
    Ok(leftovers)
}

/// Whether an output path is taken (`false`: nothing is there). Fails if it is an input (by
/// device and inode, through symbolic links: a link to a parent is that parent) or exists
/// and is not a regular file (a directory, device, FIFO, socket or symbolic link), which is
/// never replaced.
fn check_target(plan: &Plan, path: &Path) -> Result<bool, ExecError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    if let Ok(target) = std::fs::metadata(path) {
        let local = plan.parents.iter().flat_map(|p| p.model.shards());
        for input in local.filter(|s| s.remote.is_none()) {
            let in_meta = std::fs::metadata(&input.path).map_err(io_err(&input.path, "stat"))?;
            if target.dev() == in_meta.dev() && target.ino() == in_meta.ino() {
                return Err(ExecError::OutputIsInput {
                    output: path.to_path_buf(),
                    input: input.path.clone(),
                });
            }
        }
    }
    if let Some(found) = non_regular(meta.file_type()) {
        return Err(ExecError::NotRegularFile {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(true)
}

/// Free space in `dir` must hold `needed` bytes.
fn check_space(dir: &Path, needed: u64) -> Result<(), ExecError> {
    let available = available_space(dir).map_err(io_err(dir, "statvfs"))?;
    if available < needed {
        return Err(ExecError::NotEnoughSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir`.
pub fn available_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and st points to writable memory of
    // the right type; statvfs fills it in completely when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so st is initialised.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms; u64 holds both everywhere.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Make a write past the file-size limit (`ulimit -f`) fail with EFBIG, reported and
/// cleaned up like any other write error, instead of killing the process with SIGXFSZ,
/// which would leave a temporary file and no message. Process-wide; call it once before
/// [`execute`].
pub fn ignore_file_size_signal() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code, so there
    // is nothing that could run at an unsafe moment; SIGXFSZ is sent only for writes past
    // RLIMIT_FSIZE, which then fail with EFBIG instead.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Errors of a write to the output that the copy call reports: the output's, not the
/// parent's (a full disk, the file-size limit, a quota).
fn is_write_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EFBIG | libc::EDQUOT)
    )
}

/// Create the hidden temporary file of every shard up front, so a directory that refuses
/// new files fails the run before any copy. Each is closed again: a shard's file is open
/// only while it is written. A new file gets the mode the umask gives (0666 & !umask, as
/// `cp` and llama.cpp's tools); a replaced file's mode is kept.
fn create_temps(plan: &Plan) -> Result<Vec<tempfile::TempPath>, ExecError> {
    plan.shards.iter().map(|s| create_temp(&s.path)).collect()
}

/// The hidden temporary file of the output at `path` (see [`create_temps`]).
fn create_temp(path: &Path) -> Result<tempfile::TempPath, ExecError> {
    let dir = parent_dir(path);
    let temp = tempfile::Builder::new()
        .prefix(&outputs::temp_prefix(path))
        .suffix(outputs::TEMP_SUFFIX)
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(|source| ExecError::OutputDirNotWritable {
            dir: dir.to_path_buf(),
            source,
        })?;
    if let Ok(old) = std::fs::symlink_metadata(path)
        && old.is_file()
    {
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
            .map_err(io_err(temp.path(), "chmod"))?;
    }
    Ok(temp.into_temp_path())
}

/// The header bytes of output shard `i`, padding included, exactly as written.
fn shard_header(plan: &Plan, i: usize) -> Vec<u8> {
    let shard = &plan.shards[i];
    let kvs = shard_kvs(
        &plan.kvs,
        &plan.set_id,
        i,
        plan.shards.len(),
        plan.tensors.len(),
    );
    let kv_refs: Vec<_> = kvs.iter().map(|(k, v)| (k.as_str(), v.as_ref())).collect();
    let infos: Vec<_> = plan.tensors[shard.tensors.clone()]
        .iter()
        .map(|t| t.info.clone())
        .collect();
    encode_header(&kv_refs, &infos, shard.alignment)
}

/// Write output shard `i` into its temporary file `temp` and fsync it.
fn write_shard(
    plan: &Plan,
    i: usize,
    temp: &Path,
    sources: &[Vec<Source>],
    done: &mut u64,
    opts: &ExecOptions,
) -> Result<(), ExecError> {
    let shard = &plan.shards[i];
    let out = File::options()
        .write(true)
        .open(temp)
        .map_err(io_err(temp, "open"))?;
    let header = shard_header(plan, i);
    if header.len() as u64 != shard.header_len {
        return Err(ExecError::SizeMismatch {
            path: shard.path.clone(),
            what: "header",
            expected: shard.header_len,
            found: header.len() as u64,
        });
    }
    // Errors of writes name the output the user asked for, not its hidden temporary name.
    let write_err = io_err(&shard.path, "write");
    std::io::Write::write_all(&mut &out, &header).map_err(write_err)?;
    let mut w = DataWriter::new(&out, shard.alignment);
    let names: Vec<String> = plan.parents.iter().map(|p| p.name.clone()).collect();
    let mix_ctx = mix::Ctx {
        files: sources,
        names: &names,
        imatrices: &plan.imatrices,
        limits: mix::Limits::default(),
    };
    for t in &plan.tensors[shard.tensors.clone()] {
        debug_assert_eq!(w.position(), t.info.offset);
        for piece in &t.pieces {
            let from = match &piece.source {
                PieceSource::Parent(from) => from,
                PieceSource::Made(m) => {
                    w.write_bytes(&m.bytes)
                        .map_err(io_err(&shard.path, "write"))?;
                    *done += piece.len;
                    (opts.progress)(*done);
                    continue;
                }
                PieceSource::Mix(job) => {
                    let before = *done;
                    mix::run(
                        job,
                        &mix_ctx,
                        opts.cancel,
                        &mut |bytes| w.write_bytes(bytes),
                        &mut |n| (opts.progress)(before + n),
                    )
                    .map_err(|e| match e {
                        MixError::Interrupted => ExecError::Interrupted,
                        MixError::Write { source, .. } => io_err(&shard.path, "write")(source),
                        e => ExecError::Mix(e),
                    })?;
                    *done = before + piece.len;
                    continue;
                }
            };
            let src = sources[from.parent][from.shard]
                .as_local()
                .expect("plans with remote parents are written by execute::remote");
            let src_path = &plan.parents[from.parent].model.shards()[from.shard].path;
            let mut copied = 0;
            while copied < piece.len {
                if opts.cancel.load(Ordering::Relaxed) {
                    return Err(ExecError::Interrupted);
                }
                let n = (piece.len - copied).min(COPY_CHUNK);
                w.copy_from(src, from.offset + copied, n)
                    .map_err(|e| match e.kind() {
                        _ if is_write_error(&e) => io_err(&shard.path, "write")(e),
                        std::io::ErrorKind::UnexpectedEof => io_err(src_path, "read")(e),
                        _ => ExecError::Copy {
                            from: src_path.clone(),
                            to: shard.path.clone(),
                            source: e,
                        },
                    })?;
                copied += n;
                *done += n;
                (opts.progress)(*done);
            }
        }
        w.end_tensor().map_err(io_err(&shard.path, "write"))?;
    }
    if w.position() != shard.data_len {
        return Err(ExecError::SizeMismatch {
            path: shard.path.clone(),
            what: "tensor data",
            expected: shard.data_len,
            found: w.position(),
        });
    }
    out.sync_all().map_err(io_err(&shard.path, "fsync"))
}

/// Mixing reads every row of its inputs several times over (once per measure, once to mix);
/// over HTTP that would be slow and the remote writer has no kernel for it. Refused before
/// anything is written, naming the first mixed tensor with a remote input.
fn refuse_remote_mix(plan: &Plan) -> Result<(), ExecError> {
    for t in &plan.tensors {
        for p in &t.pieces {
            let PieceSource::Mix(job) = &p.source else {
                continue;
            };
            for i in &job.inputs {
                let parent = &plan.parents[i.parent];
                if let Some(s) = parent.model.shards().iter().find(|s| s.remote.is_some()) {
                    return Err(ExecError::RemoteMix {
                        tensor: t.info.name.clone(),
                        parent: parent.name.clone(),
                        url: s.path.display().to_string(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Write the plan's output files. On success every shard is in place; on any error nothing
/// of this run is left at the output paths and files replaced with `force` are back.
pub fn execute(plan: &Plan, opts: &ExecOptions) -> Result<Written, ExecError> {
    execute_with(plan, opts, &RemoteOptions::default())
}

/// [`execute`], with options for remote parents. When some parent is remote, the shards are
/// written into part files kept for `--resume` (see [`journal`]): an error other than a
/// changed parent keeps them and says so ([`ExecError::Kept`]); nothing is ever left at the
/// output paths.
pub fn execute_with(
    plan: &Plan,
    opts: &ExecOptions,
    remote: &RemoteOptions,
) -> Result<Written, ExecError> {
    let hooks = Hooks::from_env();
    refuse_remote_mix(plan)?;
    let dir = parent_dir(&plan.shards[0].path);
    // Held until the set is published or rolled back: no other run, local or remote, writes
    // this output meanwhile, and what this run finds there is no live run's. (Bad output
    // paths and directories are left to `survey` to name.)
    // A directory still to be created is locked once it is made, after the checks.
    let paths_ok = plan.shards.iter().all(|s| outputs::names_a_file(&s.path));
    let lock = if paths_ok && outputs::check_dir(dir).is_ok_and(|existing| existing == dir) {
        // A set that a killed run was replacing is put back before anything is checked
        // or removed: it is the previous child, which `--force` alone may replace.
        let lock = lock::OutputLock::take(plan)?;
        outputs::restore_interrupted(plan, dir)?;
        Some(lock)
    } else {
        None
    };
    let leftovers = survey(plan, opts.force)?;
    // Parents are opened read-only, and must still be the files that were planned from.
    let sources = identity::open_parents(plan)?;
    // Every check has passed: a missing output directory is created now, and locked.
    let created_dir = outputs::create_dir(&plan.shards[0].path)?;
    let _lock = match lock {
        Some(lock) => lock,
        None => lock::OutputLock::take(plan)?,
    };

    let mut removed = Vec::new();
    for path in leftovers {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "remove a leftover of an interrupted run")(e)),
        }
    }

    let is_remote = sources
        .iter()
        .flatten()
        .any(|s| matches!(s, Source::Http(_)));
    let (temps, state, resumed) = if is_remote {
        let (temps, state, resumed) = remote::write_all(plan, &sources, opts, remote, &hooks)?;
        (temps, Some(state), resumed)
    } else {
        let temps = create_temps(plan)?;
        let mut done = 0u64;
        for (i, temp) in temps.iter().enumerate() {
            hooks.step(Step::Shard).map_err(io_err(temp, "write"))?;
            write_shard(plan, i, temp, &sources, &mut done, opts)?;
        }
        if opts.cancel.load(Ordering::Relaxed) {
            return Err(ExecError::Interrupted);
        }
        // A parent rewritten in place while it was read gives a child that matches neither
        // version; it must not be published.
        identity::recheck(plan, &sources)?;
        (temps, None, 0)
    };

    let staged = temps
        .into_iter()
        .zip(&plan.shards)
        .map(|(temp, shard)| publish::Staged {
            temp,
            path: shard.path.clone(),
        })
        .collect();
    let published = publish::publish(staged, dir, opts.force, state.is_some(), &hooks);
    match (state, published) {
        (Some(state), Ok(())) => state.finish(),
        // Not published: the parts are back at their names, and are kept for `--resume`
        // (`--force` if the output appeared meanwhile), unless nothing could resume them.
        (Some(state), Err(e)) => {
            if journal::unvalidated(plan).is_some() {
                state.discard();
                return Err(e);
            }
            return Err(ExecError::Kept {
                cause: Box::new(e),
                journal: state.journal().to_path_buf(),
                bytes: state.resumed + state.recorded,
            });
        }
        (None, published) => published?,
    }
    let mut fetched: Vec<Fetched> = Vec::new();
    for p in plan.parents {
        let remote = p.model.shards().iter().filter_map(|s| s.remote.as_ref());
        let bytes: Option<u64> = remote.map(|r| r.fetched()).reduce(|a, b| a + b);
        if let Some(bytes) = bytes {
            fetched.push(Fetched {
                parent: p.name.clone(),
                bytes,
            });
        }
    }
    Ok(Written {
        files: plan.shards.iter().map(|s| s.path.clone()).collect(),
        bytes: plan.output_bytes(),
        removed,
        fetched,
        resumed,
        created_dir,
    })
}
