//! One output shard at a time, for jobs that a scheduler runs independently of each other
//! (`batch --job K`, `splice --shard K`). A job writes its shard to a hidden temporary file
//! beside the target, fsyncs it and renames it into place, so each shard file is complete or
//! absent. A shard already at its path that matches the plan is left alone: a job run twice,
//! or an array re-run after a failure, does no work for the shards that are done.
//!
//! Jobs cannot wait for each other, so the single-run rule (a visible first shard heads a
//! complete set) is kept without waiting: the job of the first shard renames it to a hidden
//! staged name (`.NAME.staged`) instead of its path, and whichever job finds every other
//! shard complete after its own rename (the staged first shard included) renames the staged
//! file into place. Each job checks after its own rename, so the job whose rename came last
//! sees all the others, whatever the order. A first shard of another set at the path is
//! removed (with `force`) before anything is written, so it never heads new shards.
//!
//! "Matches the plan" ([`shard_state`]): a regular file of the planned size whose header
//! bytes equal the planned header (all metadata, every tensor info and offset, and for a
//! shard set `splice.set_id`, a hash of the whole plan), and whose data agrees with the
//! parents at both ends of every piece (up to 4 KiB each). The cost is the header plus
//! 8 KiB per piece read from the shard and from the parents: a few MB for a 48 GB shard of
//! DeepSeek. A storage fault in the middle of a piece is not seen; `verify` reads every byte.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::hooks::{Hooks, Step};
use super::outputs::{self, non_regular, parent_dir};
use super::{
    ExecError, ExecOptions, check_space, check_target, create_temp, identity, io_err, publish,
    shard_header, write_shard,
};
use crate::gguf::GgufFile;
use crate::gguf::model::KEY_SET_ID;
use crate::plan::{Plan, Source as PieceSource};
use crate::source::Source;

/// Bytes compared at each end of every piece.
const SPOT_BYTES: u64 = 4096;
/// The suffix of a first shard waiting for the rest of its set.
const STAGED_SUFFIX: &str = ".staged";

/// What is at an output shard's path, compared with the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardState {
    /// Nothing is there.
    Missing,
    /// The planned shard (see the module comment for what is checked).
    Complete,
    /// The first shard of a set, complete, under its hidden staged name: it is renamed into
    /// place when every other shard is complete.
    Staged,
    /// Another file is there.
    Differs {
        /// What differs: `size`, `header`, `bytes of tensor 'T'`, `file type`.
        what: String,
        /// What the plan says.
        expected: String,
        /// What the file has.
        found: String,
    },
}

/// Whether a job wrote its shard or found it done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardOutcome {
    /// The shard was written and renamed into place (the first shard of a set: staged).
    Written,
    /// The shard was already complete; nothing was written.
    Skipped,
}

/// What one shard job did.
#[derive(Debug)]
pub struct ShardRun {
    /// The shard's path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Written or skipped.
    pub outcome: ShardOutcome,
    /// After this job, the whole output is in place: every shard complete and the first one
    /// at its path.
    pub set_complete: bool,
    /// Files this job removed: temporary files of killed jobs of this shard, a staged first
    /// shard of another plan, and (with `force`) a first shard of another set.
    pub removed: Vec<PathBuf>,
    /// The output directory, if this job created it (it did not exist).
    pub created_dir: Option<PathBuf>,
}

/// The hidden name a set's first shard waits under until the set is complete; `None` for an
/// output of one file, which is renamed into place at once.
pub fn staged_path(plan: &Plan) -> Option<PathBuf> {
    if plan.shards.len() < 2 {
        return None;
    }
    let first = &plan.shards[0].path;
    let name = first.file_name()?.to_string_lossy();
    Some(parent_dir(first).join(format!(".{name}{STAGED_SUFFIX}")))
}

/// The state of output shard `i` (0-based). For the first shard of a set: `Complete` when it
/// is at its path, `Staged` when it waits under its staged name, otherwise what is at its path.
pub fn shard_state(plan: &Plan, i: usize) -> Result<ShardState, ExecError> {
    let shard = plan.shards.get(i).ok_or_else(|| no_such_shard(plan, i))?;
    let at_path = file_state(plan, i, &shard.path)?;
    if at_path == ShardState::Complete {
        return Ok(at_path);
    }
    if i == 0
        && let Some(staged) = staged_path(plan)
        && file_state(plan, 0, &staged)? == ShardState::Complete
    {
        return Ok(ShardState::Staged);
    }
    Ok(at_path)
}

/// Check the output side of every shard without reading any: the directory exists and is
/// writable, and no shard path is an input or something other than a regular file. What is
/// at the paths is [`shard_state`]'s business.
pub fn check_shard_paths(plan: &Plan) -> Result<(), ExecError> {
    let dir = parent_dir(&plan.shards[0].path);
    outputs::check_dir(dir)?;
    for shard in &plan.shards {
        check_target(plan, &shard.path)?;
    }
    if let Some(staged) = staged_path(plan) {
        check_target(plan, &staged)?;
    }
    Ok(())
}

fn no_such_shard(plan: &Plan, i: usize) -> ExecError {
    ExecError::NoSuchShard {
        output: plan.shards[0].path.clone(),
        shard: i,
        count: plan.shards.len(),
    }
}

fn differs(what: &str, expected: impl ToString, found: impl ToString) -> ShardState {
    ShardState::Differs {
        what: what.to_string(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// The file at `path` compared with output shard `i` of the plan.
fn file_state(plan: &Plan, i: usize, path: &Path) -> Result<ShardState, ExecError> {
    let shard = &plan.shards[i];
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ShardState::Missing),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    if let Some(found) = non_regular(meta.file_type()) {
        return Ok(differs("file type", "a regular file", found));
    }
    if meta.len() != shard.file_len() {
        return Ok(differs(
            "size",
            format!("{} bytes", shard.file_len()),
            format!("{} bytes", meta.len()),
        ));
    }
    let f = File::open(path).map_err(io_err(path, "open"))?;
    let planned = shard_header(plan, i);
    let mut header = vec![0u8; planned.len()];
    f.read_exact_at(&mut header, 0)
        .map_err(io_err(path, "read"))?;
    if header != planned {
        let at = header
            .iter()
            .zip(&planned)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        let found_id = GgufFile::open(path)
            .ok()
            .and_then(|g| g.get(KEY_SET_ID).and_then(|v| v.as_str().map(String::from)));
        return Ok(match found_id {
            Some(id) if plan.shards.len() > 1 && id != plan.set_id => {
                differs("set", &plan.set_id, format!("{id} (another plan)"))
            }
            _ => differs(
                "header",
                "the planned header",
                format!("a header that differs from byte {at}"),
            ),
        });
    }
    spot_check(plan, i, path, &f)
}

/// Compare both ends of every piece of shard `i` with the parent bytes the plan names.
fn spot_check(plan: &Plan, i: usize, path: &Path, f: &File) -> Result<ShardState, ExecError> {
    let shard = &plan.shards[i];
    let mut parents: Vec<Vec<Option<Source>>> = plan
        .parents
        .iter()
        .map(|p| p.model.shards().iter().map(|_| None).collect())
        .collect();
    let mut ours = vec![0u8; SPOT_BYTES as usize];
    let mut theirs = vec![0u8; SPOT_BYTES as usize];
    for t in &plan.tensors[shard.tensors.clone()] {
        let mut at = shard.header_len + t.info.offset;
        for piece in &t.pieces {
            // Mixed bytes have no copy to compare with; `verify` recomputes them.
            if matches!(piece.source, PieceSource::Mix(_)) {
                at += piece.len;
                continue;
            }
            let n = piece.len.min(SPOT_BYTES);
            for off in [0, piece.len - n] {
                let (a, b) = (&mut ours[..n as usize], &mut theirs[..n as usize]);
                f.read_exact_at(a, at + off).map_err(io_err(path, "read"))?;
                let expected = match &piece.source {
                    PieceSource::Made(m) => {
                        b.copy_from_slice(&m.bytes[off as usize..(off + n) as usize]);
                        "the bytes the plan made".to_string()
                    }
                    PieceSource::Mix(_) => unreachable!("skipped above"),
                    PieceSource::Parent(from) => {
                        let file = &plan.parents[from.parent].model.shards()[from.shard];
                        let src = match &mut parents[from.parent][from.shard] {
                            Some(src) => src,
                            slot => slot.insert(file.open_source().map_err(|e| {
                                io_err(&file.path, "open")(std::io::Error::other(e.to_string()))
                            })?),
                        };
                        src.read_exact_at(b, from.offset + off).map_err(|e| {
                            io_err(&file.path, "read")(std::io::Error::other(e.to_string()))
                        })?;
                        format!("those of parent '{}'", plan.parents[from.parent].name)
                    }
                };
                if let Some(d) = a.iter().zip(b.iter()).position(|(x, y)| x != y) {
                    return Ok(differs(
                        &format!("bytes of tensor '{}'", t.info.name),
                        expected,
                        format!("other bytes at offset {}", at + off + d as u64),
                    ));
                }
            }
            at += piece.len;
        }
    }
    Ok(ShardState::Complete)
}

/// Before a job writes into a shard set: a first shard of another set at the path must not
/// head the new shards (removed with `force`, refused otherwise), and a staged first shard
/// of another plan is removed (it is hidden, and named after this output).
fn clear_first(plan: &Plan, force: bool, removed: &mut Vec<PathBuf>) -> Result<(), ExecError> {
    let first = &plan.shards[0].path;
    check_target(plan, first)?;
    if let ShardState::Differs {
        what,
        expected,
        found,
    } = file_state(plan, 0, first)?
    {
        if !force {
            return Err(ExecError::ShardDiffers {
                path: first.clone(),
                what,
                expected,
                found,
            });
        }
        remove(first, removed)?;
    }
    if let Some(staged) = staged_path(plan)
        && matches!(file_state(plan, 0, &staged)?, ShardState::Differs { .. })
    {
        remove(&staged, removed)?;
    }
    Ok(())
}

fn remove(path: &Path, removed: &mut Vec<PathBuf>) -> Result<(), ExecError> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            removed.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "remove")(e)),
    }
}

/// Write output shard `i` (0-based) of the plan, unless it is already complete; then put the
/// set's first shard into place if this job completed the set. Checks as
/// [`execute`](super::execute) does (directory, inputs, file types, free space for this
/// shard, parents unchanged since planning and while copied); an existing file at the path
/// that is not this shard is replaced only with `force`.
pub fn execute_shard(plan: &Plan, i: usize, opts: &ExecOptions) -> Result<ShardRun, ExecError> {
    // A job writes its shard with plain copies; remote pieces are fetched only by a whole
    // run (execute::remote), which keeps the journal --resume needs.
    for p in plan.parents {
        if let Some(s) = p.model.shards().iter().find(|s| s.remote.is_some()) {
            return Err(ExecError::RemoteShardJob {
                parent: p.name.clone(),
                url: s.path.display().to_string(),
            });
        }
    }
    let shard = plan.shards.get(i).ok_or_else(|| no_such_shard(plan, i))?;
    let hooks = Hooks::from_env();
    let dir = parent_dir(&shard.path);
    outputs::check_dir(dir)?;
    check_target(plan, &shard.path)?;
    // The paths are checked (a batch checked every child's): a missing output directory
    // is created now, before its files are looked at.
    let created_dir = outputs::create_dir(&shard.path)?;
    let mut removed = Vec::new();
    let staged = staged_path(plan);
    if staged.is_some() {
        clear_first(plan, opts.force, &mut removed)?;
    }
    let run = |outcome, set_complete, removed| ShardRun {
        path: shard.path.clone(),
        bytes: shard.file_len(),
        outcome,
        set_complete,
        removed,
        created_dir: created_dir.clone(),
    };
    match shard_state(plan, i)? {
        ShardState::Complete | ShardState::Staged => {
            let done = complete_set(plan, &hooks)?;
            return Ok(run(ShardOutcome::Skipped, done, removed));
        }
        ShardState::Differs {
            what,
            expected,
            found,
        } if !opts.force => {
            return Err(ExecError::ShardDiffers {
                path: shard.path.clone(),
                what,
                expected,
                found,
            });
        }
        _ => {}
    }
    check_space(dir, shard.file_len())?;
    for temp in outputs::stale_temps(&shard.path)? {
        remove(&temp, &mut removed)?;
    }
    let sources = identity::open_parents(plan)?;
    let temp = create_temp(&shard.path)?;
    hooks.step(Step::Shard).map_err(io_err(&temp, "write"))?;
    let mut done = 0;
    write_shard(plan, i, &temp, &sources, &mut done, opts)?;
    if opts.cancel.load(Ordering::Relaxed) {
        return Err(ExecError::Interrupted);
    }
    identity::recheck(plan, &sources)?;
    // The first shard of a set waits under its staged name for the others.
    let target = match (&staged, i) {
        (Some(s), 0) => s.clone(),
        _ => shard.path.clone(),
    };
    publish::rename(&temp, &target, &hooks).map_err(|source| ExecError::Io {
        path: shard.path.clone(),
        op: "rename into place",
        source,
    })?;
    // Renamed: nothing is left at the temporary name to delete.
    let _ = temp.keep();
    publish::sync_dir(dir);
    let done = complete_set(plan, &hooks)?;
    Ok(run(ShardOutcome::Written, done, removed))
}

/// Put a set's staged first shard into place if every other shard is complete. Returns
/// whether the whole output is in place. Any job may call it; if two do at once, one
/// renames and the other finds the first shard in place.
pub fn publish_if_complete(plan: &Plan) -> Result<bool, ExecError> {
    complete_set(plan, &Hooks::from_env())
}

fn complete_set(plan: &Plan, hooks: &Hooks) -> Result<bool, ExecError> {
    let first = &plan.shards[0].path;
    let Some(staged) = staged_path(plan) else {
        return Ok(file_state(plan, 0, first)? == ShardState::Complete);
    };
    if file_state(plan, 0, first)? == ShardState::Complete {
        // A staged copy left by a job that ran twice: the set is in place without it.
        let _ = std::fs::remove_file(&staged);
        return Ok(true);
    }
    if std::fs::symlink_metadata(&staged).is_err() {
        return Ok(false);
    }
    // Sizes first, so that jobs finding most shards still missing stop at a stat.
    for s in &plan.shards[1..] {
        match std::fs::symlink_metadata(&s.path) {
            Ok(m) if m.is_file() && m.len() == s.file_len() => {}
            _ => return Ok(false),
        }
    }
    for k in 1..plan.shards.len() {
        if file_state(plan, k, &plan.shards[k].path)? != ShardState::Complete {
            return Ok(false);
        }
    }
    match file_state(plan, 0, &staged)? {
        ShardState::Complete => {}
        ShardState::Missing => return Ok(false),
        _ => {
            let _ = std::fs::remove_file(&staged);
            return Ok(false);
        }
    }
    // Something else at the first shard's path is left for a job run with `force`.
    if std::fs::symlink_metadata(first).is_ok() {
        return Ok(false);
    }
    match publish::rename(&staged, first, hooks) {
        Ok(()) => {
            publish::sync_dir(parent_dir(first));
            Ok(true)
        }
        // Another job renamed it first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(file_state(plan, 0, first)? == ShardState::Complete)
        }
        Err(source) => Err(ExecError::Io {
            path: first.clone(),
            op: "rename the staged first shard into place",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::ggml_type::GgmlType;
    use crate::gguf::Model;
    use crate::plan::{self, Parent, SplitOptions};
    use crate::recipe::Recipe;
    use crate::testkit::GgufBuilder;

    /// A parent of six 4 KiB+ tensors (so pieces are longer than the spot checks) in `dir`.
    fn parent(dir: &Path, id: u8) -> Vec<Parent> {
        let mut b = GgufBuilder::new().kv_str("general.architecture", "deepseek2");
        for t in 0..6 {
            b = b.tensor(&format!("t{t}.weight"), &[1536], GgmlType::F32, id);
        }
        let path = dir.join(format!("p{id}.gguf"));
        std::fs::write(&path, b.build()).unwrap();
        vec![Parent {
            name: "p".into(),
            model: Model::open(&path).unwrap(),
        }]
    }

    /// The plan of `out`, in shards of `max_tensors` (0: one file).
    fn plan<'p>(parents: &'p [Parent], out: &Path, max_tensors: usize) -> Plan<'p> {
        let split = SplitOptions {
            max_bytes: None,
            max_tensors: (max_tensors > 0).then_some(max_tensors),
        };
        plan::build(parents, &Recipe::default(), out, split).unwrap()
    }

    fn run(plan: &Plan, i: usize, force: bool) -> Result<ShardRun, ExecError> {
        let cancel = AtomicBool::new(false);
        execute_shard(
            plan,
            i,
            &ExecOptions {
                force,
                cancel: &cancel,
                progress: &|_| {},
            },
        )
    }

    #[test]
    fn the_first_shard_waits_staged_until_the_set_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let parents = parent(dir.path(), 1);
        let p = plan(&parents, &dir.path().join("c.gguf"), 2);
        assert_eq!(p.shards.len(), 3);
        let staged = staged_path(&p).unwrap();
        assert!(
            staged
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with('.')
        );

        let r = run(&p, 0, false).unwrap();
        assert_eq!((r.outcome, r.set_complete), (ShardOutcome::Written, false));
        assert!(!p.shards[0].path.exists() && staged.exists());
        assert_eq!(shard_state(&p, 0).unwrap(), ShardState::Staged);
        assert_eq!(shard_state(&p, 2).unwrap(), ShardState::Missing);
        let r = run(&p, 2, false).unwrap();
        assert!(!r.set_complete);
        // The job that completes the set puts the first shard in place.
        let r = run(&p, 1, false).unwrap();
        assert!(r.set_complete);
        assert!(p.shards[0].path.exists() && !staged.exists());
        for i in 0..3 {
            assert_eq!(shard_state(&p, i).unwrap(), ShardState::Complete);
            let r = run(&p, i, false).unwrap();
            assert_eq!((r.outcome, r.set_complete), (ShardOutcome::Skipped, true));
        }
        Model::open(&p.shards[1].path).unwrap();
    }

    #[test]
    fn a_file_that_is_not_the_planned_shard_is_named_and_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let parents = parent(dir.path(), 1);
        let out = dir.path().join("c.gguf");
        let p = plan(&parents, &out, 0);
        assert_eq!(p.shards.len(), 1);
        assert!(staged_path(&p).is_none());
        run(&p, 0, false).unwrap();
        let good = std::fs::read(&out).unwrap();
        let state = |bytes: &[u8]| {
            std::fs::write(&out, bytes).unwrap();
            shard_state(&p, 0).unwrap()
        };
        let what = |s: ShardState| match s {
            ShardState::Differs { what, .. } => what,
            s => panic!("{s:?}"),
        };
        assert_eq!(what(state(&good[..good.len() - 1])), "size");
        let mut bad = good.clone();
        bad[20] ^= 1;
        assert_eq!(what(state(&bad)), "header");
        // A byte at the start of a tensor's data, and one at its end.
        let data = p.shards[0].header_len as usize;
        for at in [data, data + 1536 * 4 - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            assert_eq!(what(state(&bad)), "bytes of tensor 't0.weight'");
        }
        let e = run(&p, 0, false).unwrap_err();
        assert!(
            matches!(&e, ExecError::ShardDiffers { path, what, .. } if *path == out && what == "bytes of tensor 't0.weight'"),
            "{e:?}"
        );
        assert!(e.to_string().contains("--force"), "{e}");
        let r = run(&p, 0, true).unwrap();
        assert_eq!(r.outcome, ShardOutcome::Written);
        assert_eq!(std::fs::read(&out).unwrap(), good);
        assert!(matches!(
            run(&p, 1, false),
            Err(ExecError::NoSuchShard {
                shard: 1,
                count: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_first_shard_of_another_set_never_heads_new_shards() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (parent(dir.path(), 1), parent(dir.path(), 2));
        let out = dir.path().join("c.gguf");
        let old_plan = plan(&old, &out, 2);
        for i in 0..3 {
            run(&old_plan, i, false).unwrap();
        }
        let p = plan(&new, &out, 2);
        // Without force, no job of the new plan writes next to the old first shard.
        let e = run(&p, 1, false).unwrap_err();
        assert!(
            matches!(&e, ExecError::ShardDiffers { path, what, .. } if *path == p.shards[0].path && what == "set"),
            "{e:?}"
        );
        // With force, the old first shard goes before the new shard is written.
        let r = run(&p, 1, true).unwrap();
        assert_eq!(r.removed, vec![p.shards[0].path.clone()]);
        assert!(!p.shards[0].path.exists());
        run(&p, 2, true).unwrap();
        let r = run(&p, 0, true).unwrap();
        assert!(r.set_complete);
        assert_eq!(
            Model::open(&p.shards[0].path).unwrap().get(KEY_SET_ID),
            Model::open(&p.shards[2].path).unwrap().get(KEY_SET_ID)
        );
    }
}
