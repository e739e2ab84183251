//! Parent identity: every parent file must be the one the plan was made from when it is
//! opened for copying, and still be unchanged after its last byte is copied. A file is
//! compared by device, inode, size, modification time and status-change time (`fstat` of the
//! open file, so a file renamed over the parent's path later does not matter: the copy reads
//! the file that was opened).

use std::fs::File;

use super::{ExecError, io_err};
use crate::gguf::FileIdentity;
use crate::plan::Plan;
use crate::source::Source;

/// When a parent was found changed.
pub const SINCE_PLANNING: &str = "since planning";
/// When a parent was found changed.
pub const WHILE_COPIED: &str = "while it was copied";

/// Open every shard of every parent read-only, checking each local one is still the
/// planned file. A remote shard is the file its header was read from; every response is
/// checked against the identity seen then (see [`crate::source::http`]).
pub(super) fn open_parents(plan: &Plan) -> Result<Vec<Vec<Source>>, ExecError> {
    let mut sources = Vec::with_capacity(plan.parents.len());
    for (p, parent) in plan.parents.iter().enumerate() {
        let mut files = Vec::new();
        for (s, shard) in parent.model.shards().iter().enumerate() {
            if let Some(r) = &shard.remote {
                files.push(Source::Http(std::sync::Arc::clone(r)));
                continue;
            }
            // Not a plain open: a parent swapped for a FIFO since planning must not block.
            let (f, _) = crate::input::open_regular(&shard.path).map_err(|e| match e {
                crate::input::InputError::Io { source, .. } => io_err(&shard.path, "open")(source),
                other => io_err(&shard.path, "open")(std::io::Error::other(other.to_string())),
            })?;
            check(plan, p, s, &f, SINCE_PLANNING)?;
            files.push(Source::Local {
                file: f,
                path: shard.path.clone(),
            });
        }
        sources.push(files);
    }
    Ok(sources)
}

/// Check again, after the copy, that no local parent changed while it was read.
pub(super) fn recheck(plan: &Plan, sources: &[Vec<Source>]) -> Result<(), ExecError> {
    for (p, files) in sources.iter().enumerate() {
        for (s, f) in files.iter().enumerate() {
            if let Some(f) = f.as_local() {
                check(plan, p, s, f, WHILE_COPIED)?;
            }
        }
    }
    Ok(())
}

fn check(
    plan: &Plan,
    parent: usize,
    shard: usize,
    f: &File,
    when: &'static str,
) -> Result<(), ExecError> {
    let p = &plan.parents[parent];
    let sh = &p.model.shards()[shard];
    let now = FileIdentity::of(&f.metadata().map_err(io_err(&sh.path, "stat"))?);
    match sh.identity {
        Some(then) if then != now => Err(ExecError::ParentChanged {
            parent: p.name.clone(),
            path: sh.path.clone(),
            when,
            expected: then,
            found: now,
        }),
        _ => Ok(()),
    }
}

/// What differs between two identities of a file, in words: "size 123 -> 456, modified
/// time changed".
pub fn describe_change(expected: &FileIdentity, found: &FileIdentity) -> String {
    let mut parts = Vec::new();
    if (expected.dev, expected.ino) != (found.dev, found.ino) {
        parts.push(format!(
            "replaced by another file (inode {} -> {})",
            expected.ino, found.ino
        ));
    }
    if expected.len != found.len {
        parts.push(format!("size {} -> {}", expected.len, found.len));
    }
    if expected.mtime != found.mtime {
        parts.push("modified time changed".to_string());
    }
    if expected.ctime != found.ctime && expected.mtime == found.mtime {
        parts.push(
            "status-change time changed (rewritten with its modified time restored, or its permissions, owner or links changed)"
                .to_string(),
        );
    }
    if parts.is_empty() {
        parts.push("its identity changed".to_string());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> FileIdentity {
        FileIdentity {
            dev: 1,
            ino: 2,
            len: 123,
            mtime: (10, 0),
            ctime: (10, 0),
        }
    }

    #[test]
    fn changes_are_said_in_words() {
        let a = id();
        let b = FileIdentity {
            len: 456,
            mtime: (11, 0),
            ctime: (11, 0),
            ..a
        };
        assert_eq!(
            describe_change(&a, &b),
            "size 123 -> 456, modified time changed"
        );
        let c = FileIdentity {
            ctime: (12, 5),
            ..a
        };
        assert!(describe_change(&a, &c).starts_with("status-change time changed"));
        let d = FileIdentity { ino: 3, ..a };
        assert_eq!(
            describe_change(&a, &d),
            "replaced by another file (inode 2 -> 3)"
        );
    }
}
