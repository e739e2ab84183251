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

mod limits;
mod parents;
mod paths;

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
