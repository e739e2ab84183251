//! Output safety of `splice`: what is at the output path after a failure, a kill, or a bad
//! output path, and the limits a run meets (file size, open files, umask). Failures and
//! kills are placed at chosen steps by the writer's test hooks (`GGUF_SPLICE_TEST_FAIL_AT`,
//! `GGUF_SPLICE_TEST_KILL_AT`), never by timing.

// Errors carry the file, expected and found values; built once per failed run.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use crate::common::*;
use gguf_splice::execute::{self, ExecError, ExecOptions, identity};
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::{GgufFile, Model};
use gguf_splice::plan::{self, Parent, SplitOptions};
use gguf_splice::recipe::Recipe;
use gguf_splice::testkit::GgufBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_gguf-splice");

fn run_env(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

/// Run the binary under a shell that first runs `setup` (`ulimit -f 100`, `umask 077`).
fn run_sh(setup: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("{setup}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .output()
        .expect("bash runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// File contents, shown by length and hash when an assertion fails.
#[derive(Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.0.hash(&mut h);
        write!(f, "{} bytes, hash {:016x}", self.0.len(), h.finish())
    }
}

/// Every file in `dir` (not in subdirectories), by name, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Bytes> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                Bytes(std::fs::read(e.path()).unwrap()),
            )
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Two parents in `dir`, and an empty `out/` for outputs.
struct Outputs {
    dir: tempfile::TempDir,
    v3: String,
    r1: String,
    out: PathBuf,
}

fn outputs() -> Outputs {
    let Setup { dir, v3, r1 } = setup(GgmlType::Q3_K);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    Outputs {
        v3: format!("v3={}", v3.display()),
        r1: format!("r1={}", r1.display()),
        dir,
        out,
    }
}

/// 25 tensors in shards of 9: three shards.
const SPLIT: [&str; 2] = ["--split-max-tensors", "9"];

impl Outputs {
    /// Args of the "old" child: v3 alone, in three shards at `out/child`.
    fn old_args(&self) -> Vec<String> {
        let out = self.out.join("child.gguf");
        [
            "splice",
            "--parent",
            &self.v3,
            "-o",
            out.to_str().unwrap(),
            "-q",
        ]
        .into_iter()
        .chain(SPLIT)
        .map(String::from)
        .collect()
    }

    /// Args of the "new" child into `dir`: r1's routed experts, same shard names.
    fn new_args(&self, dir: &Path, force: bool) -> Vec<String> {
        let out = dir.join("child.gguf");
        let mut a: Vec<String> = [
            "splice",
            "--parent",
            &self.v3,
            "--parent",
            &self.r1,
            "--take",
            "_exps=r1",
            "-o",
            out.to_str().unwrap(),
            "-q",
        ]
        .into_iter()
        .chain(SPLIT)
        .map(String::from)
        .collect();
        if force {
            a.push("--force".into());
        }
        a
    }

    /// The old child at `out/`, and the new one built in `ref/` to compare with.
    fn old_and_new(&self) -> (BTreeMap<String, Bytes>, BTreeMap<String, Bytes>) {
        let o = run(&strs(&self.old_args()));
        assert!(o.status.success(), "{}", stderr(&o));
        let reference = self.dir.path().join("ref");
        std::fs::create_dir(&reference).unwrap();
        let o = run(&strs(&self.new_args(&reference, false)));
        assert!(o.status.success(), "{}", stderr(&o));
        let (old, new) = (snapshot(&self.out), snapshot(&reference));
        assert_eq!(old.len(), 3);
        assert_eq!(
            old.keys().collect::<Vec<_>>(),
            new.keys().collect::<Vec<_>>()
        );
        assert_ne!(old, new);
        // Every shard names its set, and the sets differ.
        let ids = |dir: &Path| -> Vec<String> {
            (1..=3)
                .map(|n| {
                    let f = GgufFile::open(&dir.join(format!("child-0000{n}-of-00003.gguf")));
                    let f = f.unwrap();
                    f.get("splice.set_id")
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let (a, b) = (ids(&self.out), ids(&reference));
        assert!(a.iter().all(|i| *i == a[0]) && b.iter().all(|i| *i == b[0]));
        assert_ne!(a[0], b[0]);
        (old, new)
    }

    /// Put exactly `files` into `out/`.
    fn reset_out(&self, files: &BTreeMap<String, Bytes>) {
        std::fs::remove_dir_all(&self.out).unwrap();
        std::fs::create_dir(&self.out).unwrap();
        for (n, b) in files {
            std::fs::write(self.out.join(n), &b.0).unwrap();
        }
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_failed_replacement_leaves_the_previous_set_intact() {
    let s = outputs();
    let (old, new) = s.old_and_new();
    // Fail each rename of the replacement in turn, until a run has none left to fail.
    let mut failed = 0;
    for k in 1.. {
        let o = run_env(
            &strs(&s.new_args(&s.out, true)),
            &[("GGUF_SPLICE_TEST_FAIL_AT", format!("rename:{k}"))],
        );
        if o.status.success() {
            break;
        }
        failed += 1;
        assert_eq!(o.status.code(), Some(4), "rename {k}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("Operation not permitted"),
            "{}",
            stderr(&o)
        );
        // Byte for byte the old set, and nothing else (no hidden temporary or backup file).
        assert_eq!(snapshot(&s.out), old, "after a failure at rename {k}");
        assert_eq!(names(&s.out).len(), 3, "{:?}", names(&s.out));
        assert!(k < 20, "the run never succeeds");
    }
    // Three old shards moved aside, three new ones placed.
    assert_eq!(failed, 6);
    assert_eq!(snapshot(&s.out), new);
}

#[test]
fn a_failed_rollback_keeps_the_previous_files_and_says_where() {
    let s = outputs();
    let (old, new) = s.old_and_new();
    // Renames: 1-3 move the old shards aside (first shard first), 4 and 5 place new shards
    // 2 and 3; 5 fails; rollback renames 6, 7, 8 restore shards 3, 2, 1; 7 fails too.
    let o = run_env(
        &strs(&s.new_args(&s.out, true)),
        &[("GGUF_SPLICE_TEST_FAIL_AT", "rename:5,rename:7".into())],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    let left = snapshot(&s.out);
    // Shard 3 is back; shards 2 and 1 are kept under the hidden names the message gives;
    // no first shard is visible, so no reader sees an incomplete set.
    let first = "child-00001-of-00003.gguf";
    assert!(!left.contains_key(first), "{:?}", left.keys());
    assert_eq!(
        left["child-00003-of-00003.gguf"],
        old["child-00003-of-00003.gguf"]
    );
    for shard in [first, "child-00002-of-00003.gguf"] {
        let (backup, bytes) = left
            .iter()
            .find(|(n, _)| n.starts_with(&format!(".{shard}.")) && n.ends_with(".backup"))
            .unwrap_or_else(|| panic!("no backup of {shard}: {:?}", left.keys()));
        assert_eq!(bytes, &old[shard]);
        assert!(err.contains(backup.as_str()), "{err}");
    }
    // The next run puts the previous set back first: without --force it does not replace
    // it; with --force it does.
    let o = run(&strs(&s.new_args(&s.out, false)));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(snapshot(&s.out), old);
    let o = run(&strs(&s.new_args(&s.out, true)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(snapshot(&s.out), new);
}

#[test]
fn a_kill_during_publishing_never_shows_a_mixed_set() {
    let s = outputs();
    let (old, new) = s.old_and_new();
    let first = "child-00001-of-00003.gguf";
    let mut kills = 0;
    for k in 1.. {
        s.reset_out(&old);
        let o = run_env(
            &strs(&s.new_args(&s.out, true)),
            &[("GGUF_SPLICE_TEST_KILL_AT", format!("rename:{k}"))],
        );
        if o.status.success() {
            break;
        }
        kills += 1;
        assert_eq!(o.status.signal(), Some(9), "rename {k}: {}", stderr(&o));
        let visible: BTreeMap<String, Bytes> = snapshot(&s.out)
            .into_iter()
            .filter(|(n, _)| !n.starts_with('.'))
            .collect();
        if visible.contains_key(first) {
            // A visible first shard heads a complete set of one run.
            assert!(visible == old || visible == new, "mixed set after kill {k}");
            Model::open(&s.out.join(first)).unwrap();
        } else {
            // No first shard: the old set is under hidden backup names (issue 19). The next
            // run puts it back before anything else, so one that then fails (here, with
            // --force, before its first shard's data) leaves the old set, byte for byte...
            let o = run_env(
                &strs(&s.new_args(&s.out, true)),
                &[("GGUF_SPLICE_TEST_FAIL_AT", "shard:1".into())],
            );
            assert_eq!(o.status.code(), Some(4), "after kill {k}: {}", stderr(&o));
            assert_eq!(snapshot(&s.out), old, "after kill {k} and a failed run");
            // ...and one without --force does not replace it.
            let o = run(&strs(&s.new_args(&s.out, false)));
            assert_eq!(o.status.code(), Some(4), "after kill {k}: {}", stderr(&o));
            assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
            assert_eq!(
                snapshot(&s.out),
                old,
                "after kill {k} and a run without --force"
            );
        }
        let o = run(&strs(&s.new_args(&s.out, true)));
        assert!(o.status.success(), "after kill {k}: {}", stderr(&o));
        assert_eq!(snapshot(&s.out), new, "after kill {k} and a new run");
        assert!(k < 20, "the run never succeeds");
    }
    assert_eq!(kills, 6);
}

#[test]
fn a_kill_while_copying_leaves_hidden_files_that_the_next_run_removes() {
    let s = outputs();
    let o = run_env(
        &strs(&s.new_args(&s.out, false)),
        &[("GGUF_SPLICE_TEST_KILL_AT", "shard:2".into())],
    );
    assert_eq!(o.status.signal(), Some(9));
    let mut left = names(&s.out);
    // The output's lock file stays, unlocked: the kernel released the lock with the process.
    assert_eq!(left.pop().as_deref(), Some(".child.lock"), "{left:?}");
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left.iter()
            .all(|n| n.starts_with(".child-") && n.ends_with(".partial")),
        "{left:?}"
    );
    let o = run(&strs(&s.new_args(&s.out, false)));
    assert!(o.status.success(), "{}", stderr(&o));
    let left = names(&s.out);
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.iter().all(|n| n.starts_with("child-")), "{left:?}");
}

#[test]
fn only_leftovers_of_this_output_are_removed() {
    let s = outputs();
    let (_, new) = s.old_and_new();
    // A headless shard of the output's prefix that gguf-splice did not write (no set id),
    // a shard of another prefix, and the second shard of our own set, headless: only the
    // last is a leftover.
    s.reset_out(&BTreeMap::new());
    let foreign = s.out.join("child-00002-of-00005.gguf");
    std::fs::write(&foreign, parent(1, GgmlType::Q3_K).build()).unwrap();
    let other = s.out.join("childx-00002-of-00003.gguf");
    std::fs::write(&other, &new["child-00002-of-00003.gguf"].0).unwrap();
    let ours = s.out.join("child-00002-of-00003.gguf");
    std::fs::write(&ours, &new["child-00002-of-00003.gguf"].0).unwrap();
    let o = run(&strs(&s.new_args(&s.out, false)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(foreign.exists() && other.exists());
    assert_eq!(
        Bytes(std::fs::read(&ours).unwrap()),
        new["child-00002-of-00003.gguf"]
    );
    // A file that is not a GGUF at a shard path of the new set is not a leftover.
    s.reset_out(&BTreeMap::new());
    std::fs::write(&ours, b"keep me").unwrap();
    let o = run(&strs(&s.new_args(&s.out, false)));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"));
    assert_eq!(std::fs::read(&ours).unwrap(), b"keep me");
}

fn parents_of(paths: &[(&str, &Path)]) -> Vec<Parent> {
    paths
        .iter()
        .map(|(n, p)| Parent {
            name: n.to_string(),
            model: Model::open(p).unwrap(),
        })
        .collect()
}

/// Run the plan of `v3` alone into `out` with a progress callback.
fn execute_with(
    parents: &[Parent],
    out: &Path,
    force: bool,
    progress: &dyn Fn(u64),
) -> Result<execute::Written, ExecError> {
    let plan = plan::build(parents, &Recipe::default(), out, SplitOptions::default()).unwrap();
    let cancel = AtomicBool::new(false);
    execute::execute(
        &plan,
        &ExecOptions {
            force,
            cancel: &cancel,
            progress,
        },
    )
}

#[test]
fn a_parent_rewritten_while_it_is_copied_is_refused() {
    let s = outputs();
    let v3 = s.dir.path().join("v3.gguf");
    let parents = parents_of(&[("v3", &v3)]);
    let out = s.out.join("child.gguf");
    let data_at = parents[0].model.tensors().next().unwrap().file_offset;

    // Rewritten in place, same size, after the first tensor was copied; its modified time
    // set to another value, as any write makes it.
    let rewritten = std::cell::Cell::new(false);
    let rewrite = |_: u64| {
        if !rewritten.replace(true) {
            let f = std::fs::OpenOptions::new().write(true).open(&v3).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"changed!", data_at + 64).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
                .unwrap();
        }
    };
    let r = execute_with(&parents, &out, false, &rewrite);
    match &r {
        Err(ExecError::ParentChanged {
            parent,
            when,
            expected,
            found,
            ..
        }) => {
            assert_eq!(parent, "v3");
            assert_eq!(*when, identity::WHILE_COPIED);
            assert_eq!(expected.len, found.len);
            assert_ne!(expected.mtime, found.mtime);
        }
        r => panic!("{r:?}"),
    }
    assert!(names(&s.out).is_empty(), "{:?}", names(&s.out));

    // Grown: the message says what changed, in words.
    let parents = parents_of(&[("v3", &v3)]);
    let len = std::fs::metadata(&v3).unwrap().len();
    let grown = std::cell::Cell::new(false);
    let grow = |_: u64| {
        if !grown.replace(true) {
            let f = std::fs::OpenOptions::new().append(true).open(&v3).unwrap();
            std::io::Write::write_all(&mut &f, &[0; 32]).unwrap();
        }
    };
    let e = execute_with(&parents, &out, false, &grow).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "parent 'v3' ({}) changed while it was copied",
            v3.display()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("size {len} -> {}", len + 32)),
        "{msg}"
    );
    assert!(!msg.contains("FileIdentity"), "{msg}");
    assert!(names(&s.out).is_empty());
}

#[test]
fn a_parent_replaced_before_the_copy_is_named_in_words() {
    let s = outputs();
    let v3 = s.dir.path().join("v3.gguf");
    let parents = parents_of(&[("v3", &v3)]);
    // Same bytes in a new file renamed over it: a new inode.
    let copy = s.dir.path().join("v3.new");
    std::fs::copy(&v3, &copy).unwrap();
    std::fs::rename(&copy, &v3).unwrap();
    let e = execute_with(&parents, &s.out.join("c.gguf"), false, &|_| {}).unwrap_err();
    assert!(
        matches!(&e, ExecError::ParentChanged { when, expected, found, .. }
            if *when == identity::SINCE_PLANNING && expected.ino != found.ino),
        "{e:?}"
    );
    assert!(e.to_string().contains("replaced by another file"), "{e}");
}

#[test]
fn outputs_that_are_not_regular_files_are_never_replaced() {
    let s = outputs();
    let fifo = s.out.join("fifo.gguf");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let dir = s.out.join("dir.gguf");
    std::fs::create_dir(&dir).unwrap();
    let target = s.out.join("target.gguf");
    std::fs::write(&target, b"a regular file").unwrap();
    let link = s.out.join("link.gguf");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut cases = vec![
        (fifo.clone(), "FIFO"),
        (dir.clone(), "directory"),
        (link.clone(), "symbolic link"),
    ];
    // A character device like /dev/null, where the system lets us make one.
    let null = s.out.join("null");
    let c = std::ffi::CString::new(null.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0 {
        cases.push((null.clone(), "character device"));
    }
    let parents = parents_of(&[("v3", &s.dir.path().join("v3.gguf"))]);
    for (path, kind) in &cases {
        for force in [false, true] {
            let o = run(&[
                "splice",
                "--parent",
                &s.v3,
                "-o",
                path.to_str().unwrap(),
                if force { "--force" } else { "-q" },
            ]);
            assert_eq!(o.status.code(), Some(4), "{kind}: {}", stderr(&o));
            let plan =
                plan::build(&parents, &Recipe::default(), path, SplitOptions::default()).unwrap();
            let e = execute::check_outputs(&plan, force).unwrap_err();
            assert!(
                matches!(&e, ExecError::NotRegularFile { found, .. } if found == kind),
                "{kind}: {e:?}"
            );
        }
    }
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(dir.is_dir());
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"a regular file");
    if cases.len() == 4 {
        assert!(
            std::fs::symlink_metadata(&null)
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }
    // A FIFO at the path of the second shard stops a sharded run before anything is written.
    let o = run(&[
        "splice",
        "--parent",
        &s.v3,
        "-o",
        s.out.join("fifo.gguf").to_str().unwrap(),
        "--split-max-tensors",
        "9",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let second = s.out.join("fifo-00002-of-00003.gguf");
    std::fs::remove_file(&second).unwrap();
    let c = std::ffi::CString::new(second.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let before = snapshot(&s.out);
    let o = run(&[
        "splice",
        "--parent",
        &s.v3,
        "-o",
        s.out.join("fifo.gguf").to_str().unwrap(),
        "--split-max-tensors",
        "9",
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));
    assert_eq!(snapshot(&s.out), before);
    assert!(
        std::fs::symlink_metadata(&second)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// A parent with one 256 KiB F32 tensor.
fn big_parent(dir: &Path) -> PathBuf {
    let b = GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .tensor("token_embd.weight", &[256, 256], GgmlType::F32, 1);
    write(dir, "big.gguf", &b.build())
}

#[test]
fn the_file_size_limit_is_an_error_naming_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let big = big_parent(dir.path());
    let out = dir.path().join("child.gguf");
    let o = run_sh(
        "ulimit -f 100",
        &[
            "splice",
            "--parent",
            &format!("p={}", big.display()),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    // Not killed by SIGXFSZ: an I/O error, on the output, cleaned up.
    assert_eq!(o.status.code(), Some(4), "{:?} {}", o.status, stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}: write: File too large", out.display())),
        "{err}"
    );
    assert!(
        !err.contains("big.gguf"),
        "the parent is not to blame: {err}"
    );
    assert_eq!(names(dir.path()), ["big.gguf"]);
}

#[test]
fn open_files_do_not_grow_with_the_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = GgufBuilder::new().kv_str("general.architecture", "deepseek2");
    for i in 0..100 {
        b = b.tensor(&format!("t{i}.weight"), &[8], GgmlType::F32, 1);
    }
    let p = write(dir.path(), "p.gguf", &b.build());
    let out = dir.path().join("child.gguf");
    let o = run_sh(
        "ulimit -n 40",
        &[
            "splice",
            "--parent",
            &format!("p={}", p.display()),
            "-o",
            out.to_str().unwrap(),
            "--split-max-tensors",
            "1",
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let child = Model::open(&dir.path().join("child-00001-of-00100.gguf")).unwrap();
    assert_eq!(child.shards().len(), 100);
    assert_eq!(names(dir.path()).len(), 101);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn new_outputs_get_the_umask_mode_and_replaced_ones_keep_theirs() {
    let s = outputs();
    let single = s.out.join("single.gguf");
    let args = |out: &Path, extra: &[&str]| -> Vec<String> {
        [
            "splice",
            "--parent",
            &s.v3,
            "-o",
            out.to_str().unwrap(),
            "-q",
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
    };
    let o = run_sh("umask 022", &strs(&args(&single, &[])));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&single), 0o644);
    let private = s.out.join("private.gguf");
    let o = run_sh("umask 077", &strs(&args(&private, &[])));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&private), 0o600);
    let sharded = s.out.join("sharded.gguf");
    let o = run_sh("umask 022", &strs(&args(&sharded, &SPLIT)));
    assert!(o.status.success(), "{}", stderr(&o));
    for n in 1..=3 {
        assert_eq!(
            mode(&s.out.join(format!("sharded-0000{n}-of-00003.gguf"))),
            0o644
        );
    }
    // Replaced with --force: the old file's mode stays.
    std::fs::set_permissions(&single, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(&single, b"old").unwrap();
    let o = run_sh("umask 022", &strs(&args(&single, &["--force"])));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&single), 0o640);
    assert_ne!(std::fs::read(&single).unwrap(), b"old");
}

#[test]
fn bad_output_paths_fail_before_any_byte_is_copied() {
    let s = outputs();
    let parents = parents_of(&[("v3", &s.dir.path().join("v3.gguf"))]);
    let copied = std::cell::Cell::new(0u64);
    let progress = |n: u64| copied.set(n);

    // A directory that cannot be: a path through a regular file.
    let file = s.out.join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("sub").join("x.gguf");
    let e = execute_with(&parents, &out, false, &progress).unwrap_err();
    assert!(
        matches!(&e, ExecError::Io { path, source, .. }
            if source.raw_os_error() == Some(libc::ENOTDIR) && path.starts_with(&file)),
        "{e:?}"
    );
    let plan = plan::build(&parents, &Recipe::default(), &out, SplitOptions::default()).unwrap();
    assert!(matches!(
        execute::check_outputs(&plan, true),
        Err(ExecError::Io { .. })
    ));
    std::fs::remove_file(&file).unwrap();

    let dir = s.out.join("existing");
    std::fs::create_dir(&dir).unwrap();
    let e = execute_with(&parents, &dir, true, &progress).unwrap_err();
    assert!(matches!(&e, ExecError::NotRegularFile { .. }), "{e:?}");
    assert_eq!(copied.get(), 0, "nothing was copied");
    assert_eq!(names(&s.out), ["existing"]);

    // The command line: exit 4 naming the path; --dry-run warns of the same.
    std::fs::write(&file, b"x").unwrap();
    let o = run(&["splice", "--parent", &s.v3, "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    let err = stderr(&o);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let o = run(&[
        "splice",
        "--parent",
        &s.v3,
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("warning: writing would fail"),
        "{}",
        stderr(&o)
    );
    // With --json, the warning is in the plan's warnings too.
    let o = run(&[
        "splice",
        "--parent",
        &s.v3,
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let warnings = plan["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("writing would fail")),
        "{warnings:?}"
    );
}

#[test]
fn a_missing_output_directory_is_created_after_the_checks() {
    let s = outputs();
    let parents = parents_of(&[("v3", &s.dir.path().join("v3.gguf"))]);
    let progress = |_: u64| {};
    let missing = s.out.join("a").join("b");
    let out = missing.join("x.gguf");
    // Checking creates nothing.
    let plan = plan::build(&parents, &Recipe::default(), &out, SplitOptions::default()).unwrap();
    execute::check_outputs(&plan, false).unwrap();
    assert!(names(&s.out).is_empty());
    let w = execute_with(&parents, &out, false, &progress).unwrap();
    assert_eq!(w.created_dir.as_deref(), Some(missing.as_path()));
    assert!(out.is_file());
    // The mode `mkdir -p` gives.
    let mode = std::fs::metadata(&missing).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o700, 0o700, "{mode:o}");
    // Written again (with --force): the directory exists, nothing is created.
    let w = execute_with(&parents, &out, true, &progress).unwrap();
    assert_eq!(w.created_dir, None);
}

#[test]
fn an_output_path_ending_in_a_slash_fails_before_any_byte_is_copied() {
    let s = outputs();
    let parents = parents_of(&[("v3", &s.dir.path().join("v3.gguf"))]);
    let copied = std::cell::Cell::new(0u64);
    let progress = |n: u64| copied.set(n);
    // The directory the path is in exists, so only the final rename could tell.
    for name in ["missing_dir/", "child.gguf/"] {
        let out = PathBuf::from(format!("{}/{name}", s.out.display()));
        let e = execute_with(&parents, &out, false, &progress).unwrap_err();
        assert!(
            matches!(&e, ExecError::OutputNotAFileName { path } if *path == out),
            "{e:?}"
        );
        assert_eq!(copied.get(), 0, "nothing was copied");
        assert!(names(&s.out).is_empty(), "{:?}", names(&s.out));

        let o = run(&["splice", "--parent", &s.v3, "-o", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(stderr(&o).contains("ends with '/'"), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(names(&s.out).is_empty(), "{:?}", names(&s.out));
    }
}

#[test]
fn shards_of_a_run_still_going_on_are_not_leftovers() {
    let s = outputs();
    let (old, new) = s.old_and_new();
    // Another run into the same output is publishing: its shards 2 and 3 are in place, its
    // first shard is still under its hidden temporary name, and its process is alive (this
    // test's process stands in for it).
    let mut publishing: BTreeMap<String, Bytes> = new.clone();
    let first = publishing.remove("child-00001-of-00003.gguf").unwrap();
    publishing.insert(
        format!(
            ".child-00001-of-00003.gguf.{}.abcdef.partial",
            std::process::id()
        ),
        first,
    );
    for force in [false, true] {
        s.reset_out(&publishing);
        // A run of the old recipe would remove the other run's shards as leftovers (or move
        // them aside), and that run's first shard would then head a mixed set.
        let mut args = s.old_args();
        if force {
            args.push("--force".into());
        }
        let o = run(&strs(&args));
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("another gguf-splice run")
                && err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        assert_eq!(snapshot(&s.out), publishing, "--force {force}");
    }
    // Once that run is over (its hidden file gone or its process dead), the run goes ahead.
    s.reset_out(&publishing);
    let dead = s
        .out
        .join(".child-00001-of-00003.gguf.2147483646.abcdef.partial");
    std::fs::rename(
        s.out.join(format!(
            ".child-00001-of-00003.gguf.{}.abcdef.partial",
            std::process::id()
        )),
        &dead,
    )
    .unwrap();
    let o = run(&strs(&s.old_args()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(snapshot(&s.out), old);
}

#[test]
fn a_leftover_given_as_a_parent_is_never_removed() {
    let s = outputs();
    // The hidden files a killed run leaves (a temporary file, the backup of a replaced
    // file), of a process that is gone: leftovers of `out/child.gguf`, unless they are
    // inputs, as when a user recovers from a backup by splicing from it.
    let v3 = std::fs::read(s.dir.path().join("v3.gguf")).unwrap();
    let r1 = std::fs::read(s.dir.path().join("r1.gguf")).unwrap();
    let backup = s.out.join(".child.gguf.2147483646.backup");
    let partial = s.out.join(".child.gguf.2147483645.aBcDeF.partial");
    std::fs::write(&backup, &v3).unwrap();
    std::fs::write(&partial, &r1).unwrap();
    let out = s.out.join("child.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("v3={}", backup.display()),
        "--parent",
        &format!("r1={}", partial.display()),
        "--take",
        "_exps=r1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("removed"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&backup).unwrap(), v3);
    assert_eq!(std::fs::read(&partial).unwrap(), r1);
    // Not inputs, the same files are removed.
    std::fs::remove_file(&out).unwrap();
    let o = run(&["splice", "--parent", &s.v3, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!backup.exists() && !partial.exists());
}
