//! Executes a plan: checks the output side, writes each output shard to a hidden temporary
//! file beside its target, copies the planned byte ranges kernel-side, fsyncs, checks the
//! parents did not change, and publishes the set only when every shard is complete. It
//! decides nothing: what goes where is the plan's.
//!
//! - [`outputs`]: the output directory, existing files, leftovers of interrupted runs;
//! - [`identity`]: parents must stay the files that were planned from;
//! - [`publish`]: the renames into place, in an order that never shows a mixed set, and
//!   their rollback;
//! - [`hooks`]: fault injection for tests.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::gguf::FileIdentity;
use crate::gguf::write::{DataWriter, encode_header};
use crate::mix::{self, MixError};
use crate::plan::{Plan, Source, shard_kvs};

pub mod hooks;
pub mod identity;
mod outputs;
mod publish;

use hooks::{Hooks, Step};
use outputs::{non_regular, parent_dir};

/// Why writing a plan failed. Nothing is left at the output path in any case (see
/// [`ExecError::RollbackFailed`] for the one exception, which says where the files are).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("output {output} is the input file {input}; parents are never written to")]
    OutputIsInput { output: PathBuf, input: PathBuf },
    #[error("{path} exists; pass --force to replace it")]
    OutputExists { path: PathBuf },
    #[error("{path} is a {found}, not a regular file; it is never replaced, even with --force")]
    NotRegularFile { path: PathBuf, found: &'static str },
    #[error("the output directory {dir} does not exist; create it first")]
    OutputDirMissing { dir: PathBuf },
    #[error("cannot create files in the output directory {dir}: {source}")]
    OutputDirNotWritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "not enough free space in {dir}: the output needs {needed} bytes, {available} are available"
    )]
    NotEnoughSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An error of the copy system call that either side may have caused.
    #[error("copying from {from} to {to}: {source}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parent '{parent}' ({path}) changed {when}: {}; nothing was written", identity::describe_change(.expected, .found))]
    ParentChanged {
        parent: String,
        path: PathBuf,
        /// [`identity::SINCE_PLANNING`] or [`identity::WHILE_COPIED`].
        when: &'static str,
        expected: FileIdentity,
        found: FileIdentity,
    },
    #[error("interrupted; no output was written")]
    Interrupted,
    /// Computing a mixed tensor failed (a parent could not be read, ggml refused its rows,
    /// the importance matrix could not be read).
    #[error("{0}")]
    Mix(MixError),
    #[error("{path}: wrote {found} bytes of {what}, the plan says {expected}")]
    SizeMismatch {
        path: PathBuf,
        what: &'static str,
        expected: u64,
        found: u64,
    },
    #[error(
        "{cause}; putting the previous {path} back failed too: {source}; the previous files are kept as {}", .kept.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    RollbackFailed {
        cause: Box<ExecError>,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        /// Backups not renamed back, the first shard's last.
        kept: Vec<PathBuf>,
    },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> ExecError + 'a {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Bytes copied per call, between checks for Ctrl-C and progress updates.
const COPY_CHUNK: u64 = 64 << 20;

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
}

/// Check everything about the output before a byte is copied: the directory exists and is
/// writable; no output is an input (by device and inode, so links count), a directory, a
/// device, a FIFO, a socket or a symbolic link; an existing output needs `force` (unless it
/// is a leftover of an interrupted run); and the free space suffices. `--dry-run` reports
/// the same problems.
pub fn check_outputs(plan: &Plan, force: bool) -> Result<(), ExecError> {
    survey(plan, force).map(|_| ())
}

/// [`check_outputs`], returning the leftovers of interrupted runs that may be removed.
fn survey(plan: &Plan, force: bool) -> Result<Vec<PathBuf>, ExecError> {
    let dir = parent_dir(&plan.shards[0].path);
    outputs::check_dir(dir)?;
    let leftovers = outputs::leftovers(plan, dir)?;
    for shard in &plan.shards {
        let meta = match std::fs::symlink_metadata(&shard.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&shard.path, "stat")(e)),
        };
        // Through symbolic links: a link to a parent is that parent.
        if let Ok(target) = std::fs::metadata(&shard.path) {
            for input in plan.parents.iter().flat_map(|p| p.model.shards()) {
                let in_meta =
                    std::fs::metadata(&input.path).map_err(io_err(&input.path, "stat"))?;
                if target.dev() == in_meta.dev() && target.ino() == in_meta.ino() {
                    return Err(ExecError::OutputIsInput {
                        output: shard.path.clone(),
                        input: input.path.clone(),
                    });
                }
            }
        }
        if let Some(found) = non_regular(meta.file_type()) {
            return Err(ExecError::NotRegularFile {
                path: shard.path.clone(),
                found,
            });
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
    let needed = plan.output_bytes();
    let available = available_space(dir).map_err(io_err(dir, "statvfs"))?;
    if available < needed {
        return Err(ExecError::NotEnoughSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(leftovers)
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
    let mut temps = Vec::with_capacity(plan.shards.len());
    for shard in &plan.shards {
        let dir = parent_dir(&shard.path);
        let temp = tempfile::Builder::new()
            .prefix(&outputs::temp_prefix(&shard.path))
            .suffix(outputs::TEMP_SUFFIX)
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(|source| ExecError::OutputDirNotWritable {
                dir: dir.to_path_buf(),
                source,
            })?;
        if let Ok(old) = std::fs::symlink_metadata(&shard.path)
            && old.is_file()
        {
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
                .map_err(io_err(temp.path(), "chmod"))?;
        }
        temps.push(temp.into_temp_path());
    }
    Ok(temps)
}

/// The parents' open files, and their paths and names for messages.
struct Sources {
    files: Vec<Vec<File>>,
    paths: Vec<Vec<PathBuf>>,
    names: Vec<String>,
}

/// Write output shard `i` into its temporary file `temp` and fsync it.
fn write_shard(
    plan: &Plan,
    i: usize,
    temp: &Path,
    sources: &Sources,
    done: &mut u64,
    opts: &ExecOptions,
) -> Result<(), ExecError> {
    let shard = &plan.shards[i];
    let out = File::options()
        .write(true)
        .open(temp)
        .map_err(io_err(temp, "open"))?;
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
    let header = encode_header(&kv_refs, &infos, shard.alignment);
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
    for t in &plan.tensors[shard.tensors.clone()] {
        debug_assert_eq!(w.position(), t.info.offset);
        for piece in &t.pieces {
            let (parent, src_shard, src_offset) = match &piece.source {
                Source::Copy {
                    parent,
                    shard,
                    src_offset,
                    ..
                } => (*parent, *shard, *src_offset),
                Source::Mix(job) => {
                    let ctx = mix::Ctx {
                        files: &sources.files,
                        paths: &sources.paths,
                        names: &sources.names,
                        imatrices: &plan.imatrices,
                        limits: mix::Limits::default(),
                    };
                    let before = *done;
                    mix::run(
                        job,
                        &ctx,
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
            let src = &sources.files[parent][src_shard];
            let src_path = &sources.paths[parent][src_shard];
            let mut copied = 0;
            while copied < piece.len {
                if opts.cancel.load(Ordering::Relaxed) {
                    return Err(ExecError::Interrupted);
                }
                let n = (piece.len - copied).min(COPY_CHUNK);
                w.copy_from(src, src_offset + copied, n)
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

/// Write the plan's output files. On success every shard is in place; on any error nothing
/// of this run is left at the output paths and files replaced with `force` are back.
pub fn execute(plan: &Plan, opts: &ExecOptions) -> Result<Written, ExecError> {
    let hooks = Hooks::from_env();
    let leftovers = survey(plan, opts.force)?;
    // Parents are opened read-only, and must still be the files that were planned from.
    let sources = Sources {
        files: identity::open_parents(plan)?,
        paths: plan
            .parents
            .iter()
            .map(|p| p.model.shards().iter().map(|s| s.path.clone()).collect())
            .collect(),
        names: plan.parents.iter().map(|p| p.name.clone()).collect(),
    };

    let mut removed = Vec::new();
    for path in leftovers {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "remove a leftover of an interrupted run")(e)),
        }
    }

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
    identity::recheck(plan, &sources.files)?;

    let staged = temps
        .into_iter()
        .zip(&plan.shards)
        .map(|(temp, shard)| publish::Staged {
            temp,
            path: shard.path.clone(),
        })
        .collect();
    publish::publish(staged, parent_dir(&plan.shards[0].path), opts.force, &hooks)?;
    Ok(Written {
        files: plan.shards.iter().map(|s| s.path.clone()).collect(),
        bytes: plan.output_bytes(),
        removed,
    })
}
