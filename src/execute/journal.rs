//! The resume state of a splice with remote parents, so an interrupted run can continue
//! without fetching again what it already wrote.
//!
//! Beside each output shard `DIR/NAME`, its temporary file has a fixed hidden name,
//! `DIR/.NAME.resume.part` (instead of the `.NAME.PID.XXXXXX.partial` of local splices, which
//! the next run removes); beside the first shard, `DIR/.NAME.resume.journal` records what the
//! parts are for and which byte ranges of them are complete:
//!
//! - line 1, JSON: the plan's set id (a hash of every output byte's source), each shard's
//!   path and size, and each remote parent file's URL (redacted), size, `ETag` and
//!   `Last-Modified`; then a space and its checksum;
//! - then one line per completed job (one ranged GET of the plan, at most
//!   [`JOB_BYTES`](super::remote::JOB_BYTES)), `done SHARD START END CHECK` (byte offsets in
//!   the shard), appended only after the part's data is on disk (`fdatasync`), so a line
//!   never claims bytes a crash could lose. `CHECK` covers the line and the header's
//!   checksum, so a line of another journal does not pass either.
//!
//! Nothing in it is trusted: a torn last line (a crash while appending) is cut off, and any
//! other line whose checksum does not match, or whose range is not exactly one remote job
//! of this plan's shard, makes the journal damaged ([`ExecError::ResumeJournalDamaged`]):
//! resuming from it could publish bytes that were never fetched.
//!
//! The journal is locked (`flock`) while a run uses it, so two runs never write one output.
//! A run finds the state of an earlier one and continues it only with `--resume`, and only
//! if the plan and the remote files are the same, and every remote file has a validator
//! (`ETag` or `Last-Modified`): without one, a file changed in place (same size) cannot be
//! told from the one fetched before. Otherwise it stops and says what to delete. The state
//! is removed once the child is published, and also when a run fails because a parent
//! changed or has no validator (the fetched bytes are then worthless).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

mod format;

use format::{Damage, done_line, header_line, read_journal};

use super::outputs::parent_dir;
use super::{ExecError, io_err};
use crate::plan::Plan;

/// 2: checksums, and one line per whole job.
const VERSION: u64 = 2;
const PART_SUFFIX: &str = ".resume.part";
const JOURNAL_SUFFIX: &str = ".resume.journal";

fn hidden(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}{suffix}"))
}

/// Where the temporary file of output shard `path` is kept between runs.
pub fn part_path(path: &Path) -> PathBuf {
    hidden(path, PART_SUFFIX)
}

/// Where the journal of an output whose first shard is `path` is kept.
pub fn journal_path(path: &Path) -> PathBuf {
    hidden(path, JOURNAL_SUFFIX)
}

/// What the journal's first line says: everything that must be equal for the parts to be
/// continued.
fn describe(plan: &Plan) -> Value {
    let shards: Vec<Value> = plan
        .shards
        .iter()
        .map(|s| json!({"path": s.path.display().to_string(), "len": s.file_len()}))
        .collect();
    let mut sources = Vec::new();
    for p in plan.parents {
        for (i, s) in p.model.shards().iter().enumerate() {
            if let Some(r) = &s.remote {
                let id = r.identity();
                sources.push(json!({
                    "parent": p.name, "shard": i, "url": r.url(), "len": id.len,
                    "etag": id.etag, "last_modified": id.last_modified,
                }));
            }
        }
    }
    json!({"version": VERSION, "set_id": plan.set_id, "shards": shards, "sources": sources})
}

/// The first difference between two journal headers: (what, expected, found).
fn difference(then: &Value, now: &Value) -> Option<(String, String, String)> {
    for key in ["version", "set_id", "shards"] {
        if then[key] != now[key] {
            let what = match key {
                "set_id" => "the plan (parents, recipe or split options)".to_string(),
                k => k.to_string(),
            };
            return Some((what, then[key].to_string(), now[key].to_string()));
        }
    }
    let (a, b) = (&then["sources"], &now["sources"]);
    let (a, b) = (a.as_array(), b.as_array());
    let (Some(a), Some(b)) = (a, b) else {
        return Some(("remote parents".into(), "a list".into(), "none".into()));
    };
    if a.len() != b.len() {
        return Some((
            "remote parent files".into(),
            a.len().to_string(),
            b.len().to_string(),
        ));
    }
    for (x, y) in a.iter().zip(b) {
        for key in ["url", "len", "etag", "last_modified"] {
            if x[key] != y[key] {
                return Some((
                    format!(
                        "{key} of remote parent '{}'",
                        y["parent"].as_str().unwrap_or("")
                    ),
                    x[key].to_string(),
                    y[key].to_string(),
                ));
            }
        }
    }
    None
}

/// Whether every remote file the plan reads has a validator the server sends on every
/// answer; without one, `--resume` cannot tell a file changed in place. The first one
/// without: (parent, URL).
pub(super) fn unvalidated(plan: &Plan) -> Option<(String, String)> {
    for p in plan.parents {
        for s in p.model.shards() {
            if let Some(r) = &s.remote {
                let id = r.identity();
                if id.etag.is_none() && id.last_modified.is_none() {
                    return Some((p.name.clone(), r.url().to_string()));
                }
            }
        }
    }
    None
}

/// The resume state of this run, held (and locked) while it runs.
pub(super) struct Resume {
    journal_path: PathBuf,
    journal: File,
    /// The header's checksum, which each `done` line chains to.
    check: String,
    /// Each output shard's part file.
    pub parts: Vec<PathBuf>,
    /// Per shard: completed byte ranges, sorted and merged.
    pub done: Vec<Vec<Range<u64>>>,
    /// Bytes the journal says an earlier run completed.
    pub resumed: u64,
    /// Bytes this run recorded.
    pub recorded: u64,
}

fn lock(f: &File, journal: &Path) -> Result<(), ExecError> {
    // SAFETY: flock only acts on the descriptor, which `f` keeps open.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(ExecError::ResumeBusy {
                journal: journal.to_path_buf(),
            });
        }
        return Err(io_err(journal, "lock")(e));
    }
    Ok(())
}

/// Merge sorted-or-not ranges into sorted, disjoint, non-adjacent ones.
pub(super) fn merge(mut r: Vec<Range<u64>>) -> Vec<Range<u64>> {
    r.retain(|x| x.start < x.end);
    r.sort_by_key(|x| x.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(r.len());
    for x in r {
        match out.last_mut() {
            Some(last) if x.start <= last.end => last.end = last.end.max(x.end),
            _ => out.push(x),
        }
    }
    out
}

/// The parts of `want` not covered by `done` (sorted, merged).
pub(super) fn subtract(want: Range<u64>, done: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = want.start;
    for d in done {
        if d.end <= at {
            continue;
        }
        if d.start >= want.end {
            break;
        }
        if d.start > at {
            out.push(at..d.start);
        }
        at = at.max(d.end);
    }
    if at < want.end {
        out.push(at..want.end);
    }
    out
}

impl Resume {
    /// Take up the state an interrupted run left for this output (with `resume`), or start
    /// a new one. Creates (or checks) the part file of every shard at its full size. `jobs`
    /// are, per shard, the byte ranges of its remote jobs: a `done` line must be one of them.
    pub(super) fn open(
        plan: &Plan,
        resume: bool,
        jobs: &[Vec<Range<u64>>],
    ) -> Result<Resume, ExecError> {
        let first = &plan.shards[0].path;
        let journal_path = journal_path(first);
        let header = describe(plan);
        let parts: Vec<PathBuf> = plan.shards.iter().map(|s| part_path(&s.path)).collect();
        let existing = match OpenOptions::new()
            .read(true)
            .append(true)
            .open(&journal_path)
        {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&journal_path, "open")(e)),
        };
        let (journal, check, mut done) = match existing {
            Some(f) => {
                lock(&f, &journal_path)?;
                let mut files = vec![journal_path.clone()];
                files.extend(parts.iter().filter(|p| p.exists()).cloned());
                let read = match read_journal(&f, jobs) {
                    Ok(Ok(r)) => r,
                    Ok(Err(Damage { line, why })) => {
                        return Err(ExecError::ResumeJournalDamaged {
                            journal: journal_path,
                            line,
                            why,
                            files,
                        });
                    }
                    Err(e) => return Err(io_err(&journal_path, "read")(e)),
                };
                // Said first: `--resume`, which the next message would ask for, cannot help.
                if let Some((parent, url)) = unvalidated(plan) {
                    return Err(ExecError::ResumeUnverifiable {
                        journal: journal_path,
                        parent,
                        url,
                        files,
                    });
                }
                if !resume {
                    let bytes = read.done.iter().flatten().map(|r| r.end - r.start).sum();
                    return Err(ExecError::ResumeStateExists {
                        journal: journal_path,
                        bytes,
                        files,
                    });
                }
                if let Some((what, expected, found)) = difference(&read.header, &header) {
                    return Err(ExecError::ResumeMismatch {
                        journal: journal_path,
                        what,
                        expected,
                        found,
                        files,
                    });
                }
                // Appends go after the last complete line, never onto a torn one.
                f.set_len(read.valid_len)
                    .map_err(io_err(&journal_path, "write"))?;
                (f, read.check, read.done)
            }
            None => {
                let f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create_new(true)
                    .mode(0o666)
                    .open(&journal_path)
                    .map_err(|source| ExecError::OutputDirNotWritable {
                        dir: parent_dir(&journal_path).to_path_buf(),
                        source,
                    })?;
                lock(&f, &journal_path)?;
                let (line, check) = header_line(&header);
                (&f).write_all(line.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(io_err(&journal_path, "write"))?;
                (f, check, vec![Vec::new(); plan.shards.len()])
            }
        };
        for (i, shard) in plan.shards.iter().enumerate() {
            let part = &parts[i];
            let len = shard.file_len();
            let usable =
                std::fs::symlink_metadata(part).is_ok_and(|m| m.is_file() && m.len() == len);
            if usable {
                continue;
            }
            // Missing or of another size: this shard starts over.
            done[i].clear();
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o666)
                .open(part)
                .map_err(|source| ExecError::OutputDirNotWritable {
                    dir: parent_dir(part).to_path_buf(),
                    source,
                })?;
            // A file replaced with --force keeps its mode, as in local splices.
            if let Ok(old) = std::fs::symlink_metadata(&shard.path)
                && old.is_file()
            {
                f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
                    .map_err(io_err(part, "chmod"))?;
            }
            f.set_len(len).map_err(io_err(&shard.path, "write"))?;
        }
        let resumed = done.iter().flatten().map(|r| r.end - r.start).sum();
        Ok(Resume {
            journal_path,
            journal,
            check,
            parts,
            done,
            resumed,
            recorded: 0,
        })
    }

    /// The journal's path.
    pub(super) fn journal(&self) -> &Path {
        &self.journal_path
    }

    /// Record that the job `range` of shard `shard`'s part is complete. The caller has
    /// synced the part's data first.
    pub(super) fn record(&mut self, shard: usize, range: Range<u64>) -> Result<(), ExecError> {
        let line = done_line(&self.check, shard, &range);
        (&self.journal)
            .write_all(line.as_bytes())
            .map_err(io_err(&self.journal_path, "write"))?;
        self.recorded += range.end - range.start;
        Ok(())
    }

    /// The run succeeded (the parts are published) or its parts are gone: remove the journal.
    pub(super) fn finish(self) {
        let _ = std::fs::remove_file(&self.journal_path);
    }

    /// The fetched bytes are worthless (a parent changed): remove parts and journal.
    pub(super) fn discard(self) {
        for p in &self.parts {
            let _ = std::fs::remove_file(p);
        }
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_subtract() {
        assert_eq!(merge(vec![5..7, 0..2, 2..3, 6..9, 4..4]), vec![0..3, 5..9]);
        let done = vec![2..4, 6..8];
        assert_eq!(subtract(0..10, &done), vec![0..2, 4..6, 8..10]);
        assert_eq!(subtract(2..4, &done), Vec::<Range<u64>>::new());
        assert_eq!(subtract(3..7, &done), vec![4..6]);
        assert_eq!(subtract(9..12, &done), vec![9..12]);
    }

    #[test]
    fn names_are_hidden_beside_the_target() {
        assert_eq!(
            part_path(Path::new("/d/c-00001-of-00002.gguf")),
            PathBuf::from("/d/.c-00001-of-00002.gguf.resume.part")
        );
        assert_eq!(
            journal_path(Path::new("c.gguf")),
            PathBuf::from("./.c.gguf.resume.journal")
        );
    }

    #[test]
    fn headers_name_their_first_difference() {
        let a = json!({"version": 1, "set_id": "x", "shards": [], "sources": [
            {"parent": "r1", "url": "u", "len": 5, "etag": "\"a\"", "last_modified": null}]});
        let mut b = a.clone();
        assert_eq!(difference(&a, &b), None);
        b["sources"][0]["etag"] = json!("\"b\"");
        let (what, _, found) = difference(&a, &b).unwrap();
        assert_eq!(what, "etag of remote parent 'r1'");
        assert_eq!(found, "\"\\\"b\\\"\"");
        b["set_id"] = json!("y");
        assert!(difference(&a, &b).unwrap().0.starts_with("the plan"));
    }
}
