//! Executes a plan: writes each output shard to a temporary file beside its target, copies the
//! planned byte ranges kernel-side, fsyncs, and renames into place only when every shard is
//! complete. It decides nothing: what goes where is the plan's.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::gguf::FileIdentity;
use crate::gguf::write::{DataWriter, encode_header};
use crate::plan::{Plan, shard_kvs};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("output {output} is the input file {input}; parents are never written to")]
    OutputIsInput { output: PathBuf, input: PathBuf },
    #[error("{path} exists; pass --force to replace it")]
    OutputExists { path: PathBuf },
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
    #[error("{path} changed since its header was read (was {expected}, now {found})")]
    ParentChanged {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("interrupted; no output was written")]
    Interrupted,
    #[error("{path}: wrote {found} bytes of {what}, the plan says {expected}")]
    SizeMismatch {
        path: PathBuf,
        what: &'static str,
        expected: u64,
        found: u64,
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

pub struct ExecOptions<'a> {
    pub force: bool,
    /// Set from a signal handler; checked between chunks.
    pub cancel: &'a AtomicBool,
    /// Called with the number of tensor bytes copied so far.
    pub progress: &'a dyn Fn(u64),
}

/// What a run wrote.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Refuse outputs that are inputs (by device and inode, so links count) and existing outputs
/// without `force`.
pub fn check_outputs(plan: &Plan, force: bool) -> Result<(), ExecError> {
    for shard in &plan.shards {
        let Ok(out_meta) = std::fs::metadata(&shard.path) else {
            continue;
        };
        for parent in plan.parents {
            for input in parent.model.shards() {
                let in_meta =
                    std::fs::metadata(&input.path).map_err(io_err(&input.path, "stat"))?;
                if same_file(&out_meta, &in_meta) {
                    return Err(ExecError::OutputIsInput {
                        output: shard.path.clone(),
                        input: input.path.clone(),
                    });
                }
            }
        }
        if !force {
            return Err(ExecError::OutputExists {
                path: shard.path.clone(),
            });
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
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

pub fn execute(plan: &Plan, opts: &ExecOptions) -> Result<Written, ExecError> {
    check_outputs(plan, opts.force)?;
    let dir = parent_dir(&plan.shards[0].path);
    let needed = plan.output_bytes();
    let available = available_space(dir).map_err(io_err(dir, "statvfs"))?;
    if available < needed {
        return Err(ExecError::NotEnoughSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }

    // Parents are opened read-only, and must still be the files that were planned from.
    let mut sources: Vec<Vec<File>> = Vec::with_capacity(plan.parents.len());
    for parent in plan.parents {
        let mut files = Vec::new();
        for shard in parent.model.shards() {
            let f = File::open(&shard.path).map_err(io_err(&shard.path, "open"))?;
            let now = FileIdentity::of(&f.metadata().map_err(io_err(&shard.path, "stat"))?);
            if let Some(then) = shard.identity
                && then != now
            {
                return Err(ExecError::ParentChanged {
                    path: shard.path.clone(),
                    expected: format!("{then:?}"),
                    found: format!("{now:?}"),
                });
            }
            files.push(f);
        }
        sources.push(files);
    }

    let total = plan.tensors.len();
    let mut done = 0u64;
    let mut temps = Vec::with_capacity(plan.shards.len());
    for (i, shard) in plan.shards.iter().enumerate() {
        let dir = parent_dir(&shard.path);
        let name = shard
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(io_err(dir, "create temporary file"))?;
        let out = temp.as_file();
        let kvs = shard_kvs(&plan.kvs, i, plan.shards.len(), total);
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
        let mut w = DataWriter::new(out, shard.alignment);
        std::io::Write::write_all(&mut &*out, &header).map_err(io_err(temp.path(), "write"))?;
        for t in &plan.tensors[shard.tensors.clone()] {
            debug_assert_eq!(w.position(), t.info.offset);
            for piece in &t.pieces {
                let src = &sources[piece.parent][piece.shard];
                let src_path = &plan.parents[piece.parent].model.shards()[piece.shard].path;
                let mut copied = 0;
                while copied < piece.len {
                    if opts.cancel.load(Ordering::Relaxed) {
                        return Err(ExecError::Interrupted);
                    }
                    let n = (piece.len - copied).min(COPY_CHUNK);
                    w.copy_from(src, piece.src_offset + copied, n)
                        .map_err(|e| ExecError::Io {
                            path: src_path.clone(),
                            op: "copy",
                            source: e,
                        })?;
                    copied += n;
                    done += n;
                    (opts.progress)(done);
                }
            }
            w.end_tensor().map_err(io_err(temp.path(), "write"))?;
        }
        if w.position() != shard.data_len {
            return Err(ExecError::SizeMismatch {
                path: shard.path.clone(),
                what: "tensor data",
                expected: shard.data_len,
                found: w.position(),
            });
        }
        out.sync_all().map_err(io_err(temp.path(), "fsync"))?;
        temps.push(temp);
    }
    if opts.cancel.load(Ordering::Relaxed) {
        return Err(ExecError::Interrupted);
    }

    // Every shard is complete and on disk: now put them in place.
    let mut files = Vec::with_capacity(temps.len());
    for (temp, shard) in temps.into_iter().zip(&plan.shards) {
        if let Err(e) = temp.persist(&shard.path) {
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            return Err(ExecError::Io {
                path: shard.path.clone(),
                op: "rename into place",
                source: e.error,
            });
        }
        files.push(shard.path.clone());
    }
    if let Ok(d) = File::open(dir) {
        // Make the renames durable; a failure here loses nothing already written.
        let _ = d.sync_all();
    }
    Ok(Written {
        files,
        bytes: plan.output_bytes(),
    })
}
