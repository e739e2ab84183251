//! The output side before anything is written: the directory, what already exists at the
//! output paths, the files an interrupted run left there (which the next run removes), the
//! hidden names of temporary and backup files, and the mode a new file gets.
//!
//! A set that a killed run was replacing is put back first ([`restore_interrupted`]): its
//! files are under hidden backup names while no first shard is visible, and would otherwise
//! be removed as leftovers by a run that may then fail.
//!
//! Hidden names carry the writer's process id (`.NAME.PID.HOST~XXXXXX.partial`,
//! `.NAME.PID.backup`), so a later run removes only those of processes that are gone. A
//! temporary name also carries the writer's host: on a filesystem shared by the nodes of a
//! farm, a process id says nothing about another node, so a temporary file of another host
//! is never removed.

use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{ExecError, io_err};
use crate::gguf::GgufFile;
use crate::gguf::model::{KEY_SET_ID, parse_shard_name};
use crate::plan::Plan;

/// The directory a path is in (`.` for a bare file name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `path` can name a file to create: it has a final name (not `/`, `.` or `..`)
/// and does not end with `/` (which makes the kernel read it as a directory).
pub(super) fn names_a_file(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    path.file_name().is_some() && !bytes.ends_with(b"/") && !bytes.ends_with(b"/.")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The start of the hidden temporary file name for `path` (tempfile adds random characters
/// and the `.partial` suffix).
pub(super) fn temp_prefix(path: &Path) -> String {
    format!(
        ".{}.{}.{}{HOST_MARK}",
        file_name(path),
        std::process::id(),
        host_tag()
    )
}

/// Ends the host part of a temporary file's random field.
const HOST_MARK: char = '~';

/// This host's name as it appears in temporary names: the short host name, letters, digits
/// and `-` only (at most 32 of them), so that it holds no `.` or `~`.
fn host_tag() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length; gethostname writes at most that many
    // bytes and the result is read only up to the first NUL within the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let tag: String = name
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    if tag.is_empty() { "host".into() } else { tag }
}

/// The suffix of temporary files.
pub(super) const TEMP_SUFFIX: &str = ".partial";
const BACKUP_SUFFIX: &str = ".backup";

/// Where the file at `path` is kept while a new one replaces it.
pub(super) fn backup_path(path: &Path) -> PathBuf {
    parent_dir(path).join(format!(
        ".{}.{}{BACKUP_SUFFIX}",
        file_name(path),
        std::process::id()
    ))
}

/// What a directory entry is, in words, when it is not a regular file.
pub(super) fn non_regular(ft: FileType) -> Option<&'static str> {
    Some(if ft.is_file() {
        return None;
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    })
}

/// The nearest directory at or above `dir` that exists, or the error that stops looking:
/// for a missing output directory, where it will be created.
fn existing_ancestor(dir: &Path) -> Result<&Path, ExecError> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            // `.` or `/` missing (a working directory that was removed) ends the walk.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && at != Path::new(".") => {
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    Some(_) => at = Path::new("."),
                    None => return Err(io_err(at, "output directory")(e)),
                }
            }
            Err(e) => return Err(io_err(at, "output directory")(e)),
            Ok(m) if !m.is_dir() => {
                return Err(io_err(at, "output directory")(
                    std::io::Error::from_raw_os_error(libc::ENOTDIR),
                ));
            }
            Ok(_) => return Ok(at),
        }
    }
}

/// The output directory must be a writable directory, or be missing under one: it is then
/// created once every check has passed ([`create_dir`]), as build tools create theirs.
/// Returns the directory that exists and will hold the output (for free space): `dir`, or
/// the ancestor it will be created in.
pub(super) fn check_dir(dir: &Path) -> Result<&Path, ExecError> {
    let existing = existing_ancestor(dir)?;
    use std::os::unix::ffi::OsStrExt;
    let c_dir = std::ffi::CString::new(existing.as_os_str().as_bytes())
        .map_err(|e| io_err(existing, "output directory")(std::io::Error::other(e)))?;
    // SAFETY: c_dir is a valid NUL-terminated string; access only reads it.
    if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(ExecError::OutputDirNotWritable {
            dir: existing.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(existing)
}

/// The output directory of `path` if it does not exist yet (it will be created).
pub fn missing_dir(path: &Path) -> Option<PathBuf> {
    let dir = parent_dir(path);
    matches!(std::fs::metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        .then(|| dir.to_path_buf())
}

/// Create the output directory of `path` (and its missing parents) if it does not exist,
/// with the mode the umask gives (0777 & !umask, as `mkdir -p`). Returns it if this call
/// created it. Called only once every check of the output has passed.
pub(super) fn create_dir(path: &Path) -> Result<Option<PathBuf>, ExecError> {
    let Some(dir) = missing_dir(path) else {
        return Ok(None);
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&dir)
        .map_err(|source| ExecError::OutputDirNotWritable {
            dir: dir.clone(),
            source,
        })?;
    Ok(Some(dir))
}

/// The prefix shard names of this output start with: `DIR/child` for `child.gguf` or
/// `child-00001-of-00003.gguf`, as a file name.
pub(super) fn shard_prefix(plan: &Plan) -> String {
    let name = file_name(&plan.shards[0].path);
    match parse_shard_name(Path::new(&name)) {
        Some((prefix, _, _)) if plan.shards.len() > 1 => prefix,
        _ => name.strip_suffix(".gguf").unwrap_or(&name).to_string(),
    }
}

fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A hidden file of a writer: `.TARGET.PID.HOST~XXXXXX.partial`, `.TARGET.PID.XXXXXX.partial`
/// (no host: written by an earlier version, taken as this host's) or `.TARGET.PID.backup`.
#[derive(Debug, PartialEq, Eq)]
struct Hidden<'a> {
    target: &'a str,
    pid: i32,
    host: Option<&'a str>,
}

impl Hidden<'_> {
    /// Written by a process of this host that is gone: safe to remove.
    fn is_stale(&self) -> bool {
        self.host.is_none_or(|h| h == host_tag()) && !is_alive(self.pid)
    }
}

fn parse_hidden(name: &str) -> Option<Hidden<'_>> {
    let rest = name.strip_prefix('.')?;
    let (body, host) = match rest.strip_suffix(BACKUP_SUFFIX) {
        Some(b) => (b, None),
        None => {
            let (body, random) = rest.strip_suffix(TEMP_SUFFIX)?.rsplit_once('.')?;
            (body, random.split_once(HOST_MARK).map(|(h, _)| h))
        }
    };
    let (target, pid) = body.rsplit_once('.')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Hidden {
        target,
        pid: pid.parse().ok()?,
        host,
    })
}

/// Hidden temporary files of the output at `path` that writers on this host left and that
/// are gone (killed jobs): the next writer of the same output removes them.
pub(super) fn stale_temps(path: &Path) -> Result<Vec<PathBuf>, ExecError> {
    let dir = parent_dir(path);
    let name = file_name(path);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "read directory"))? {
        let entry = entry.map_err(io_err(dir, "read directory"))?;
        let Ok(entry_name) = entry.file_name().into_string() else {
            continue;
        };
        if entry_name.ends_with(TEMP_SUFFIX)
            && parse_hidden(&entry_name).is_some_and(|h| h.target == name && h.is_stale())
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            found.push(dir.join(entry_name));
        }
    }
    found.sort();
    Ok(found)
}

/// Every parent file, by device and inode: as planned from, and as its path is now.
fn input_ids(plan: &Plan) -> Vec<(u64, u64)> {
    plan.parents
        .iter()
        .flat_map(|p| p.model.shards())
        .flat_map(|s| {
            let now = std::fs::metadata(&s.path).ok().map(|m| (m.dev(), m.ino()));
            s.identity.map(|i| (i.dev, i.ino)).into_iter().chain(now)
        })
        .collect()
}

/// Put back the shard set a killed run was replacing. Publishing a set moves the old shards
/// aside (`.NAME.PID.backup`, the first shard first) and renames the new first shard into
/// place last, and a rollback renames the first shard back last: so while a backup of a
/// first shard exists and no first shard is at its name, the old set is complete only under
/// the backup names. A later run renames them back (the first shard last, over any shard of
/// the killed run), instead of removing them as leftovers and perhaps failing afterwards:
/// the previous child is never lost. Backups of processes that are alive, of another host,
/// of other names, or given as parents are left alone; backups whose first shard is in place
/// (the new set was published) are leftovers ([`leftovers`]). Returns the paths restored.
pub(super) fn restore_interrupted(plan: &Plan, dir: &Path) -> Result<Vec<PathBuf>, ExecError> {
    let prefix = shard_prefix(plan);
    let inputs = input_ids(plan);
    // Per process that made them: (shard number, target name, backup path).
    let mut by_pid: std::collections::BTreeMap<i32, Vec<(u64, String, PathBuf)>> =
        Default::default();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "read directory"))? {
        let entry = entry.map_err(io_err(dir, "read directory"))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let hidden = name.ends_with(BACKUP_SUFFIX).then(|| parse_hidden(&name));
        let Some(hidden) = hidden.flatten() else {
            continue;
        };
        let Some((p, no, _)) = parse_shard_name(Path::new(hidden.target)) else {
            continue;
        };
        let backup = dir.join(&name);
        let is_file_not_input = std::fs::symlink_metadata(&backup)
            .is_ok_and(|m| m.is_file() && !inputs.contains(&(m.dev(), m.ino())));
        if p == prefix && hidden.is_stale() && is_file_not_input {
            let target = hidden.target.to_string();
            by_pid
                .entry(hidden.pid)
                .or_default()
                .push((no, target, backup));
        }
    }
    let mut restored = Vec::new();
    for (_, mut files) in by_pid {
        let Some((_, first, _)) = files.iter().find(|(no, _, _)| *no == 1) else {
            continue;
        };
        if std::fs::symlink_metadata(dir.join(first)).is_ok() {
            continue;
        }
        // The first shard last, so that no first shard heads a set that is not all back.
        files.sort_by_key(|(no, _, _)| (*no == 1, *no));
        for (no, target, backup) in files {
            let path = dir.join(target);
            if no == 1 {
                super::publish::sync_dir(dir);
            }
            std::fs::rename(&backup, &path).map_err(|source| ExecError::Io {
                path: backup.clone(),
                op: "put back a file an interrupted run had moved aside",
                source,
            })?;
            restored.push(path);
        }
        super::publish::sync_dir(dir);
    }
    Ok(restored)
}

/// Files an interrupted run into this output left in `dir`, which the next run removes
/// without `--force`:
/// - hidden temporary and backup files of this output's names, whose process is gone;
/// - shards `PREFIX-NNNNN-of-MMMMM.gguf` of this output's prefix, written by gguf-splice
///   (they carry `splice.set_id`), of a set whose first shard is missing: the part of a set
///   a killed run left while it published or unpublished it, which no reader can open.
///
/// Never an input, a file of another name, or a set that has its first shard. A hidden file
/// of this output's names whose process is alive (another run writing the same output) is
/// [`ExecError::OutputBusy`].
pub(super) fn leftovers(plan: &Plan, dir: &Path) -> Result<Vec<PathBuf>, ExecError> {
    let prefix = shard_prefix(plan);
    let out_names: Vec<String> = plan.shards.iter().map(|s| file_name(&s.path)).collect();
    let ours = |target: &str| {
        out_names.iter().any(|n| n == target)
            || parse_shard_name(Path::new(target)).is_some_and(|(p, _, _)| p == prefix)
    };
    let inputs = input_ids(plan);
    let is_input = |m: &Metadata| inputs.contains(&(m.dev(), m.ino()));
    let mut found = Vec::new();
    // (count, no, name) of shards of this prefix.
    let mut shards: Vec<(u64, u64, String)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir, "read directory"))? {
        let entry = entry.map_err(io_err(dir, "read directory"))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(hidden) = parse_hidden(&name) {
            // A hidden file may be given as a parent (a backup, to recover from): inputs
            // are never removed.
            let is_file_not_input =
                std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_file() && !is_input(&m));
            if !ours(hidden.target) || !is_file_not_input {
                continue;
            }
            if hidden.is_stale() {
                found.push(dir.join(&name));
            } else if hidden.host.is_none_or(|h| h == host_tag())
                && hidden.pid != std::process::id() as i32
            {
                // A run into the same output is going on. Its shards may be visible without
                // their first shard while it publishes them: they are not leftovers, and
                // whatever this run did would mix its files with that run's.
                return Err(ExecError::OutputBusy {
                    path: dir.join(&name),
                    pid: hidden.pid,
                });
            }
        } else if let Some((p, no, count)) = parse_shard_name(Path::new(&name))
            && p == prefix
        {
            shards.push((count, no, name));
        }
    }
    for (count, _, name) in &shards {
        if shards.iter().any(|(c, no, _)| c == count && *no == 1) {
            continue;
        }
        let path = dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file()
            && !is_input(&meta)
            && GgufFile::open(&path).is_ok_and(|f| f.get(KEY_SET_ID).is_some())
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden<'a>(target: &'a str, pid: i32, host: Option<&'a str>) -> Option<Hidden<'a>> {
        Some(Hidden { target, pid, host })
    }

    #[test]
    fn output_paths_must_name_a_file() {
        for ok in ["c.gguf", "dir/c.gguf", "/abs/c", "./c.gguf"] {
            assert!(names_a_file(Path::new(ok)), "{ok}");
        }
        for bad in ["missing_dir/", "c.gguf/", "dir/.", ".", "..", "/", "dir/.."] {
            assert!(!names_a_file(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn hidden_names_parse() {
        assert_eq!(
            parse_hidden(".c-00001-of-00002.gguf.123.aB3xYz.partial"),
            hidden("c-00001-of-00002.gguf", 123, None)
        );
        assert_eq!(
            parse_hidden(".c.gguf.123.node-7~aB3xYz.partial"),
            hidden("c.gguf", 123, Some("node-7"))
        );
        assert_eq!(
            parse_hidden(".c.gguf.77.backup"),
            hidden("c.gguf", 77, None)
        );
        assert_eq!(parse_hidden(".c.gguf.x7.backup"), None);
        assert_eq!(parse_hidden("c.gguf.7.backup"), None);
        assert_eq!(parse_hidden(".c.gguf.aB3xYz.partial"), None);
    }

    #[test]
    fn temporary_names_carry_this_host_and_parse_back() {
        let prefix = temp_prefix(Path::new("out/c.gguf"));
        let name = format!("{prefix}aB3xYz{TEMP_SUFFIX}");
        let h = parse_hidden(&name).unwrap();
        assert_eq!(h.target, "c.gguf");
        assert_eq!(h.pid, std::process::id() as i32);
        assert_eq!(h.host, Some(host_tag().as_str()));
        assert!(!h.is_stale(), "this process is alive");
        // A process id of another host says nothing about this one: never stale here.
        let other = Hidden {
            host: Some("elsewhere-node"),
            pid: i32::MAX,
            ..h
        };
        assert!(!other.is_stale());
        let gone = Hidden {
            pid: i32::MAX,
            ..parse_hidden(&name).unwrap()
        };
        assert!(gone.is_stale());
    }
}
