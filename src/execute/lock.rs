//! The output lock: one per output, `DIR/.PREFIX.lock` beside the first shard (`PREFIX` as
//! leftovers are matched: `child` for `child.gguf` and for `child-0000k-of-N.gguf`), held
//! with `flock` by every run that writes the output, local or remote, from before it looks
//! at what is there until its set is published or rolled back. A second run into the same
//! output is refused at once, whatever kind of run either is; and a run that holds the lock
//! knows that the hidden files and headless shards it finds are not another live run's.
//!
//! The kernel drops the lock when its holder dies (`kill -9` included), so a lock file left
//! by a killed run is simply taken. The holder removes the file before releasing it; a run
//! that opened the file just before that finds, once it holds the lock, that its file is no
//! longer the one at the path, and starts over.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;

use super::outputs::{parent_dir, shard_prefix};
use super::{ExecError, io_err};
use crate::plan::Plan;

/// The lock of one output, held until dropped.
#[derive(Debug)]
pub(super) struct OutputLock {
    path: PathBuf,
    // Closed (which releases the lock) after `drop` has removed the path.
    _file: File,
}

/// Where the lock of the plan's output is.
pub(super) fn lock_path(plan: &Plan) -> PathBuf {
    parent_dir(&plan.shards[0].path).join(format!(".{}.lock", shard_prefix(plan)))
}

impl OutputLock {
    /// Take the lock of the plan's output, or fail with [`ExecError::OutputLocked`] if
    /// another run holds it.
    pub(super) fn take(plan: &Plan) -> Result<OutputLock, ExecError> {
        let path = lock_path(plan);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o666)
                .open(&path)
                .map_err(|source| ExecError::OutputDirNotWritable {
                    dir: parent_dir(&path).to_path_buf(),
                    source,
                })?;
            // SAFETY: flock only acts on the descriptor, which `file` keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(ExecError::OutputLocked {
                        output: plan.shards[0].path.clone(),
                        lock: path,
                    });
                }
                return Err(io_err(&path, "lock")(e));
            }
            let held = file.metadata().map_err(io_err(&path, "stat"))?;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => {
                    return Ok(OutputLock { path, _file: file });
                }
                // Removed (or replaced) by the run that held it: not the lock any more.
                _ => continue,
            }
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
