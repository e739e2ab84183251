//! Publishing a complete set of output files: renames from hidden temporary names into place,
//! ordered so that a first shard (`OUT-00001-of-N.gguf`, the file readers open) is only ever
//! visible at the head of a complete set of one run, and rolled back on failure.
//!
//! For a set of more than one file: an existing first shard is moved aside (to a hidden
//! backup name) first, then the other existing files, then the new shards after the first
//! are renamed into place, and the new first shard last. If any step fails, the new files are
//! removed and the backups renamed back, the first shard last; on success the backups are
//! deleted. A single file is renamed over the old one, which is atomic by itself.
//!
//! A kill between the first and last rename leaves shards without a first shard (and the old
//! files under hidden backup names); the next run into the same output removes them.
//!
//! With `keep` (the part files of a remote splice, kept for `--resume`), a failure leaves the
//! new files at their temporary names instead of deleting them: those not yet renamed stay,
//! and those already renamed into place are renamed back.

use std::path::{Path, PathBuf};

use super::ExecError;
use super::hooks::{Hooks, Step};
use super::outputs::{backup_path, non_regular, sync_dir};

/// A complete, fsynced temporary file and the path it is published at.
pub(super) struct Staged {
    pub temp: tempfile::TempPath,
    pub path: PathBuf,
}

/// What has been done so far, to undo it.
#[derive(Default)]
struct Journal {
    /// (path, backup) of old files moved aside, in order.
    aside: Vec<(PathBuf, PathBuf)>,
    /// (path, temporary name) of new files renamed into place, in order.
    placed: Vec<(PathBuf, PathBuf)>,
}

pub(super) fn rename(from: &Path, to: &Path, hooks: &Hooks) -> std::io::Result<()> {
    hooks.step(Step::Rename)?;
    std::fs::rename(from, to)
}

/// Put `staged` (in shard order) into place, replacing existing files only with `force`.
/// On error, the previous files are back at their paths (or, if that fails too, the error
/// says where they are kept), and the new ones are deleted, or with `keep` left at their
/// temporary names.
pub(super) fn publish(
    mut staged: Vec<Staged>,
    dir: &Path,
    force: bool,
    keep: bool,
    hooks: &Hooks,
) -> Result<(), ExecError> {
    let mut journal = Journal::default();
    let result = put_in_place(&mut staged, dir, force, hooks, &mut journal);
    if result.is_err() && keep {
        for s in staged {
            let _ = s.temp.keep();
        }
    }
    match result {
        Ok(()) => {
            sync_dir(dir);
            // The new set is durable: the old files can go. One that cannot be removed is a
            // hidden leftover that the next run removes.
            for (_, backup) in &journal.aside {
                let _ = std::fs::remove_file(backup);
            }
            Ok(())
        }
        Err(e) => Err(roll_back(journal, e, keep, hooks)),
    }
}

/// Rename what `staged` holds into place; each one renamed is taken out of it, so on error
/// it holds those not renamed.
fn put_in_place(
    staged: &mut Vec<Staged>,
    dir: &Path,
    force: bool,
    hooks: &Hooks,
    journal: &mut Journal,
) -> Result<(), ExecError> {
    let many = staged.len() > 1;
    // Checked again here: the output may have appeared since the checks before copying.
    for s in staged.iter() {
        let meta = match std::fs::symlink_metadata(&s.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(super::io_err(&s.path, "stat")(e)),
        };
        if let Some(found) = non_regular(meta.file_type()) {
            return Err(ExecError::NotRegularFile {
                path: s.path.clone(),
                found,
            });
        }
        if !force {
            return Err(ExecError::OutputExists {
                path: s.path.clone(),
            });
        }
        // One file is renamed over the old one in a single atomic step; a set needs the
        // old files out of the way first, the first shard before any other.
        if many {
            let backup = backup_path(&s.path);
            rename(&s.path, &backup, hooks).map_err(|e| ExecError::Io {
                path: s.path.clone(),
                op: "move the previous file aside",
                source: e,
            })?;
            journal.aside.push((s.path.clone(), backup));
            if journal.aside.len() == 1 {
                sync_dir(dir);
            }
        }
    }
    // The first shard last.
    if many {
        staged.rotate_left(1);
    }
    while !staged.is_empty() {
        if many && staged.len() == 1 {
            sync_dir(dir);
        }
        let s = &staged[0];
        rename(&s.temp, &s.path, hooks).map_err(|e| ExecError::Io {
            path: s.path.clone(),
            op: "rename into place",
            source: e,
        })?;
        let s = staged.remove(0);
        // Renamed: nothing is left at the temporary name to delete.
        let temp = s.temp.keep().unwrap_or_default();
        journal.placed.push((s.path, temp));
    }
    Ok(())
}

/// Undo a failed publish: remove the new files, rename the backups back, the first shard
/// last, so no first shard is visible until its whole set is back.
fn roll_back(journal: Journal, cause: ExecError, keep: bool, hooks: &Hooks) -> ExecError {
    for (path, temp) in journal.placed.iter().rev() {
        // Taken away so that no shard of the failed run is left (a backup renamed back
        // replaces it anyway): back to its temporary name when it is kept, else removed.
        if !keep || std::fs::rename(path, temp).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
    let mut pending = journal.aside.iter().rev();
    while let Some((path, backup)) = pending.next() {
        if let Err(source) = rename(backup, path, hooks) {
            // Stop here: restoring the first shard now would head an incomplete set.
            let mut kept = vec![backup.clone()];
            kept.extend(pending.map(|(_, b)| b.clone()));
            return ExecError::RollbackFailed {
                cause: Box::new(cause),
                path: path.clone(),
                source,
                kept,
            };
        }
    }
    cause
}
