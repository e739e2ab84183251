//! Why writing a plan failed: each error names the file, the operation and what was found,
//! and says what was left where (nothing at the output paths, except where it says so).

use std::path::{Path, PathBuf};

use super::identity;
use crate::gguf::FileIdentity;
use crate::mix::MixError;
use crate::source::SourceError;

/// Why writing a plan failed. Nothing is left at the output path in any case (see
/// [`ExecError::RollbackFailed`] for the one exception, which says where the files are).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A shard job (`--shard`, `batch --job`) would read a remote parent; jobs read local
    /// parents only.
    #[error(
        "parent '{parent}' is remote ({url}); shard jobs (--shard, batch --job) read local parents only: download it, or splice the whole child in one run"
    )]
    RemoteShardJob {
        /// The parent's name.
        parent: String,
        /// The URL of its remote file.
        url: String,
    },
    /// A mixed tensor would read a remote parent; mixes read local parents only.
    #[error(
        "tensor '{tensor}' mixes parent '{parent}', which is remote ({url}); mixes read local parents only: download it (or pick that tensor `from` one parent)"
    )]
    RemoteMix {
        /// The mixed tensor's name.
        tensor: String,
        /// The remote parent's name.
        parent: String,
        /// The URL of its file that holds the tensor.
        url: String,
    },
    /// An output path is one of the parents' files (same device and inode, so links count).
    #[error("output {output} is the input file {input}; parents are never written to")]
    OutputIsInput {
        /// The output path as planned.
        output: PathBuf,
        /// The parent file it is.
        input: PathBuf,
    },
    /// An output file exists, and `--force` was not given.
    #[error("{path} exists; pass --force to replace it")]
    OutputExists {
        /// The existing output file.
        path: PathBuf,
    },
    /// Something other than a regular file is at an output path.
    #[error("{path} is a {found}, not a regular file; it is never replaced, even with --force")]
    NotRegularFile {
        /// The output path.
        path: PathBuf,
        /// What is there (`directory`, `symbolic link`, `FIFO`, ...).
        found: &'static str,
    },
    /// An output path ends with `/`: it names a directory, not the file to write.
    #[error(
        "output {path} ends with '/', so it names a directory, not a file; give the file to write (e.g. {}child.gguf)",
        .path.display()
    )]
    OutputNotAFileName {
        /// The output path as given.
        path: PathBuf,
    },
    /// The hidden temporary file of a live run into the same output is in the output
    /// directory.
    #[error(
        "another gguf-splice run (process {pid}) is writing this output: {path} is its file; wait for it to end, or if no such run is going on (the process id was reused), remove that file"
    )]
    OutputBusy {
        /// That run's temporary file.
        path: PathBuf,
        /// The id of the process that made it, from its name.
        pid: i32,
    },
    /// Another run into the same output holds its lock (a local or a remote splice).
    #[error(
        "another gguf-splice run is writing {output} (it holds {lock}); let it finish: two runs into one output would mix their files"
    )]
    OutputLocked {
        /// The output's first shard.
        output: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// No file can be created in the output directory.
    #[error("cannot create files in the output directory {dir}: {source}")]
    OutputDirNotWritable {
        /// The output directory.
        dir: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The filesystem of the output directory has less free space than the output needs.
    #[error(
        "not enough free space in {dir}: the output needs {needed} bytes, {available} are available"
    )]
    NotEnoughSpace {
        /// The output directory.
        dir: PathBuf,
        /// Bytes the output needs (less what kept part files already hold).
        needed: u64,
        /// Bytes free to an unprivileged writer.
        available: u64,
    },
    /// A file operation failed: on the output side, or reading or checking a parent.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file or directory operated on (for an output, the path the user asked
        /// for, not its temporary name).
        path: PathBuf,
        /// The operation (`stat`, `fsync`, `rename into place`, ...).
        op: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// An error of the copy system call that either side may have caused.
    #[error("copying from {from} to {to}: {source}")]
    Copy {
        /// The parent file copied from.
        from: PathBuf,
        /// The output file copied to.
        to: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A parent file is no longer the one the plan was made from (another device, inode,
    /// size or time).
    #[error("parent '{parent}' ({path}) changed {when}: {}; nothing was written", identity::describe_change(.expected, .found))]
    ParentChanged {
        /// The parent's name.
        parent: String,
        /// The file that changed.
        path: PathBuf,
        /// [`identity::SINCE_PLANNING`] or [`identity::WHILE_COPIED`].
        when: &'static str,
        /// Its identity when it was read for the plan.
        expected: FileIdentity,
        /// Its identity now.
        found: FileIdentity,
    },
    /// A file at a shard's path is not that shard of this plan, and `--force` was not given.
    #[error(
        "{path} exists but is not the planned shard ({what}: expected {expected}, found {found}); pass --force to replace it"
    )]
    ShardDiffers {
        /// The existing file.
        path: PathBuf,
        /// What differs (`file type`, `set`, ...).
        what: String,
        /// What the planned shard has.
        expected: String,
        /// What the file has.
        found: String,
    },
    /// A shard job names a shard number the plan does not have.
    #[error("{output} has {count} shards (0 to {last}); there is no shard {shard}", last = .count - 1)]
    NoSuchShard {
        /// The output's first shard.
        output: PathBuf,
        /// The shard asked for (0-based).
        shard: usize,
        /// Shards the plan has.
        count: usize,
    },
    /// The run was cancelled (the cancel flag, set on Ctrl-C) before the output was
    /// published.
    #[error("interrupted; no output was written")]
    Interrupted,
    /// A remote parent could not be read.
    #[error("parent '{parent}': {source}")]
    Remote {
        /// The parent's name.
        parent: String,
        /// The source layer's error, which names the URL and range.
        #[source]
        source: SourceError,
    },
    /// An interrupted remote splice into this output left its state, and `--resume` was not
    /// given.
    #[error(
        "an interrupted run into this output left {bytes} bytes fetched ({journal}); pass --resume to continue it, or delete {} to start over", show_paths(.files)
    )]
    ResumeStateExists {
        /// The journal file it left.
        journal: PathBuf,
        /// Tensor bytes it had fetched.
        bytes: u64,
        /// The journal and the part files, to delete to start over.
        files: Vec<PathBuf>,
    },
    /// `--resume` was given, but the interrupted run's journal is for another plan or other
    /// remote files.
    #[error(
        "cannot resume from {journal}: {what} was {expected}, is now {found}; delete {} to start over", show_paths(.files)
    )]
    ResumeMismatch {
        /// The journal file.
        journal: PathBuf,
        /// What changed (`the plan (parents, recipe or split options)`, `shards`, ...).
        what: String,
        /// Its value in the journal.
        expected: String,
        /// Its value for this run.
        found: String,
        /// The journal and the part files, to delete to start over.
        files: Vec<PathBuf>,
    },
    /// The journal of an interrupted run is damaged: a line's checksum does not match, or
    /// it claims bytes that are not a remote job of this plan. Resuming from it could
    /// publish bytes that were never fetched.
    #[error(
        "cannot resume from {journal}: it is damaged (line {line}: {why}), so what it says was fetched cannot be trusted; delete {} to start over", show_paths(.files)
    )]
    ResumeJournalDamaged {
        /// The journal file.
        journal: PathBuf,
        /// The damaged line, from 1 (0: the file as a whole).
        line: usize,
        /// What is wrong with it.
        why: String,
        /// The journal and the part files, to delete to start over.
        files: Vec<PathBuf>,
    },
    /// `--resume` was given, but a remote parent file has no `ETag` or `Last-Modified`, so
    /// a file changed in place since the bytes were fetched could not be told.
    #[error(
        "cannot resume from {journal}: parent '{parent}' ({url}) is served without an ETag or Last-Modified, so bytes fetched before cannot be told from a changed file's; delete {} to start over", show_paths(.files)
    )]
    ResumeUnverifiable {
        /// The journal file.
        journal: PathBuf,
        /// The parent's name.
        parent: String,
        /// Its remote file (redacted).
        url: String,
        /// The journal and the part files, to delete to start over.
        files: Vec<PathBuf>,
    },
    /// Another run holds the lock on the resume journal of this output.
    #[error("{journal} is locked by another gguf-splice run into the same output; let it finish")]
    ResumeBusy {
        /// The journal file.
        journal: PathBuf,
    },
    /// A remote splice failed after fetching some bytes, which are kept for `--resume`.
    #[error(
        "{cause}; the {bytes} bytes written so far are kept ({journal}): run the same command with --resume to continue"
    )]
    Kept {
        /// Why the run failed.
        cause: Box<ExecError>,
        /// The journal that records the bytes kept.
        journal: PathBuf,
        /// Tensor bytes fetched and written so far, by this run and the runs it resumed.
        bytes: u64,
    },
    /// Computing a mixed tensor failed (a parent could not be read, ggml refused its rows,
    /// the importance matrix could not be read).
    #[error("{0}")]
    Mix(MixError),
    /// A part of an output shard came out at another size than the plan's.
    #[error("{path}: wrote {found} bytes of {what}, the plan says {expected}")]
    SizeMismatch {
        /// The output shard.
        path: PathBuf,
        /// The part: `header` or `tensor data`.
        what: &'static str,
        /// Its size in the plan, in bytes.
        expected: u64,
        /// Bytes written.
        found: u64,
    },
    /// Publishing a shard set failed, and putting back the files it replaced failed too.
    #[error(
        "{cause}; putting the previous {path} back failed too: {source}; the previous files are kept as {}", .kept.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    RollbackFailed {
        /// Why publishing failed.
        cause: Box<ExecError>,
        /// The output file that could not be put back.
        path: PathBuf,
        /// The error of renaming it back.
        #[source]
        source: std::io::Error,
        /// Backups not renamed back, the first shard's last.
        kept: Vec<PathBuf>,
    },
}

pub(super) fn show_paths(paths: &[PathBuf]) -> String {
    let v: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    v.join(" ")
}

pub(super) fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> ExecError + 'a {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl ExecError {
    /// The error itself, or the one a [`ExecError::Kept`] wraps.
    pub fn cause(&self) -> &ExecError {
        match self {
            ExecError::Kept { cause, .. } => cause.cause(),
            e => e,
        }
    }

    /// Whether a parent is no longer the file the plan was made from.
    pub(super) fn parent_changed(&self) -> bool {
        matches!(self, ExecError::ParentChanged { .. })
            || matches!(self, ExecError::Remote { source, .. } if source.is_changed())
    }
}
