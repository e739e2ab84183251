//! `batch`: a manifest of several children against separate `splice` runs, jobs in any
//! order, in parallel and twice, killed jobs (placed by the writer's test hooks, never by
//! timing), bad children, `splice --shard`, and `--progress json`.

// Errors carry the file, expected and found values; built once per failed run.
#![allow(clippy::result_large_err)]

mod inputs;
mod jobs;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;
use gguf_splice::batch::{Batch, BatchError};
use gguf_splice::execute::ExecError;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::plan::PlanError;
use serde_json::Value;

const LATE_TAKE: &str = r"blk\.1\.ffn_(gate|up|down)_exps=v3";

/// Every file under `dir` (hidden ones too), by relative path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Names of the files in `snapshot(dir)`, for messages.
fn names(dir: &Path) -> Vec<String> {
    snapshot(dir).into_keys().collect()
}

/// The manifest of the tests: four children of two parents; v3 is shared by all of them.
/// 1: the R1T preset by name; 2: the same recipe as a file, a --take rule in front, in 3
/// shards; 3: v3 alone in shards of at most 5000 bytes; 4: the parents bound crosswise.
fn manifest(s: &Setup) -> String {
    format!(
        r#"
[parents]
v3 = "{v3}"
r1 = "{r1}"

[[children]]
output = "chimera.gguf"
recipe = "deepseek-r1t-chimera"

[[children]]
output = "late/chimera-late.gguf"
recipe = "{preset}"
take = ['{LATE_TAKE}']
split_max_tensors = 9

[[children]]
output = "v3-only.gguf"
parents = ["v3"]
split_max_size = "5000"

[[children]]
output = "swapped.gguf"
parents = ["v3=r1", "r1=v3"]
take = ['_exps=r1']
"#,
        v3 = s.v3.display(),
        r1 = s.r1.display(),
        preset = chimera_preset(),
    )
}

/// A fresh output directory `name` holding the manifest (outputs are relative to it).
fn farm(s: &Setup, name: &str, text: &str) -> (PathBuf, String) {
    let dir = s.dir.path().join(name);
    std::fs::create_dir_all(dir.join("late")).unwrap();
    let m = dir.join("m.toml");
    std::fs::write(&m, text).unwrap();
    (dir, m.display().to_string())
}

/// `farm` with the tests' manifest, minus the manifest itself in snapshots.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut s = snapshot(dir);
    s.remove("m.toml");
    s
}

fn batch(m: &str, args: &[&str]) -> Output {
    let mut all = vec!["batch", m];
    all.extend_from_slice(args);
    run(&all)
}

/// Run the binary with `env` set, and no array index inherited from a scheduler that may
/// be running the tests themselves.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("binary runs")
}

/// The outputs of the manifest's children made by four separate `splice` runs.
fn reference(s: &Setup) -> BTreeMap<String, Vec<u8>> {
    let dir = s.dir.path().join("ref");
    std::fs::create_dir_all(dir.join("late")).unwrap();
    let out = |n: &str| dir.join(n).display().to_string();
    let preset = chimera_preset();
    assert_ok(&s.splice(&["--recipe", &preset, "-o", &out("chimera.gguf"), "-q"]));
    assert_ok(&s.splice(&[
        "--recipe",
        &preset,
        "--take",
        LATE_TAKE,
        "-o",
        &out("late/chimera-late.gguf"),
        "--split-max-tensors",
        "9",
        "-q",
    ]));
    let v3 = format!("v3={}", s.v3.display());
    assert_ok(&run(&[
        "splice",
        "--parent",
        &v3,
        "-o",
        &out("v3-only.gguf"),
        "--split-max-size",
        "5000",
        "-q",
    ]));
    assert_ok(&run(&[
        "splice",
        "--parent",
        &format!("v3={}", s.r1.display()),
        "--parent",
        &format!("r1={}", s.v3.display()),
        "--take",
        "_exps=r1",
        "-o",
        &out("swapped.gguf"),
        "-q",
    ]));
    snapshot(&dir)
}

/// An HTTP client for `Batch::from_file` (these manifests name local parents only).
fn http() -> std::sync::Arc<gguf_splice::source::Http> {
    std::sync::Arc::new(gguf_splice::source::Http::new(Default::default()))
}

fn job_count(m: &str) -> usize {
    let o = batch(m, &["--list-jobs", "--count"]);
    assert_ok(&o);
    String::from_utf8(o.stdout).unwrap().trim().parse().unwrap()
}

fn job(m: &str, k: usize) -> Output {
    batch(m, &["--job", &k.to_string(), "-q"])
}

#[test]
fn a_manifest_gives_the_same_bytes_as_separate_splice_runs() {
    let s = setup(GgmlType::IQ2_XXS);
    let want = reference(&s);
    // One file each for children 1 and 4, three shards for 2, several for 3.
    assert!(want.contains_key("late/chimera-late-00003-of-00003.gguf"));
    let v3_shards = want.keys().filter(|k| k.starts_with("v3-only-")).count();
    assert!(v3_shards > 2, "{:?}", want.keys());
    assert_eq!(want.len(), 5 + v3_shards);

    let (dir, m) = farm(&s, "farm", &manifest(&s));
    let o = batch(&m, &["--json", "-q"]);
    assert_ok(&o);
    assert_eq!(outputs(&dir), want, "{:?}", names(&dir));
    // The summary: each child, its shards and bytes by parent, all written.
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let children = v["children"].as_array().unwrap();
    assert_eq!(children.len(), 4);
    assert_eq!(children[1]["child"], "#2 (late/chimera-late.gguf)");
    assert_eq!(children[1]["shard_count"], 3);
    assert_eq!(children[1]["written"], 3);
    assert_eq!(children[1]["complete"], true);
    let by_parent = &children[0]["bytes_by_parent"];
    assert_eq!(by_parent[0]["parent"], "v3");
    assert_eq!(by_parent[1]["parent"], "r1");
    assert!(by_parent[1]["bytes"].as_u64().unwrap() > 0);
    assert_eq!(children[2]["bytes_by_parent"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["bytes"].as_u64().unwrap(),
        want.values().map(|b| b.len() as u64).sum::<u64>()
    );

    // Run again: every job finds its shard complete, and nothing changes.
    let o = batch(&m, &["--json", "-q"]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for c in v["children"].as_array().unwrap() {
        assert_eq!(c["written"], 0, "{c}");
        assert!(c["skipped"].as_u64().unwrap() >= 1);
    }
    assert_eq!(outputs(&dir), want);
    // Status and verify agree that the batch is complete.
    assert_ok(&batch(&m, &["--status"]));
    let o = batch(&m, &["--verify"]);
    assert_ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches(": verified")
            .count(),
        4
    );
}

#[test]
fn jobs_run_in_any_order_in_parallel_or_twice_give_identical_shards() {
    let s = setup(GgmlType::IQ2_XXS);
    let want = reference(&s);
    let text = manifest(&s);
    let (_, m) = farm(&s, "listing", &text);
    let n = job_count(&m);
    assert_eq!(n, want.len(), "one job per output shard");
    let o = batch(&m, &["--list-jobs", "--json"]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["count"], n);
    let listed: Vec<String> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, j)| {
            assert_eq!(j["job"], i);
            let p = PathBuf::from(j["path"].as_str().unwrap());
            p.strip_prefix(s.dir.path().join("listing"))
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    // In manifest order: children, then shards.
    assert_eq!(listed[0], "chimera.gguf");
    assert_eq!(listed[n - 1], "swapped.gguf");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, want.keys().cloned().collect::<Vec<_>>());

    // Reversed, and a shuffled order.
    let shuffled: Vec<usize> = (0..n).map(|i| (i * 5 + 3) % n).collect();
    assert_eq!(
        n % 5,
        1,
        "5 and n coprime, so the order above is a permutation"
    );
    let reversed: Vec<usize> = (0..n).rev().collect();
    for (name, order) in [("reversed", reversed), ("shuffled", shuffled)] {
        let (dir, m) = farm(&s, name, &text);
        for &k in &order {
            assert_ok(&job(&m, k));
        }
        assert_eq!(outputs(&dir), want, "{name}: {:?}", names(&dir));
    }

    // All at once, each job twice.
    let (dir, m) = farm(&s, "parallel", &text);
    let children: Vec<_> = (0..2 * n)
        .map(|i| {
            Command::new(BIN)
                .args(["batch", &m, "--job", &(i % n).to_string(), "-q"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        assert_ok(&c.wait_with_output().unwrap());
    }
    assert_eq!(outputs(&dir), want, "{:?}", names(&dir));

    // And once more: every job skips, nothing changes.
    for k in 0..n {
        let o = batch(&m, &["--job", &k.to_string(), "--json"]);
        assert_ok(&o);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["children"][0]["skipped"], 1, "job {k}");
    }
    assert_eq!(outputs(&dir), want);
}

#[test]
fn the_first_shard_appears_only_when_its_set_is_complete() {
    let s = setup(GgmlType::IQ2_XXS);
    let want = reference(&s);
    let (dir, m) = farm(&s, "farm", &manifest(&s));
    let first = "late/chimera-late-00001-of-00003.gguf";
    // Jobs 1-3 are the late child's shards 1-3.
    for k in [1, 2] {
        assert_ok(&job(&m, k));
        assert!(!dir.join(first).exists(), "after job {k}");
    }
    let o = batch(&m, &["--status", "--json"]);
    assert_exit(&o, 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["complete"], false);
    let late = &v["children"][1];
    assert_eq!(late["shards"][0]["state"], "staged");
    assert_eq!(late["shards"][1]["state"], "complete");
    assert_eq!(late["shards"][2]["state"], "missing");
    assert_ok(&job(&m, 3));
    assert_eq!(std::fs::read(dir.join(first)).unwrap(), want[first]);
    assert!(
        !names(&dir).iter().any(|n| n.contains("/.")),
        "{:?}",
        names(&dir)
    );
}

#[test]
fn a_killed_job_leaves_no_file_at_its_shard_path_and_a_rerun_completes() {
    let s = setup(GgmlType::IQ2_XXS);
    let want = reference(&s);
    let (dir, m) = farm(&s, "farm", &manifest(&s));
    let second = "late/chimera-late-00002-of-00003.gguf";
    // Job 2 writes the late child's second shard. Killed before its data is written, and
    // killed after it is written and fsynced but before its rename.
    for kill in ["shard:1", "rename:1"] {
        let o = run_env(
            &["batch", &m, "--job", "2", "-q"],
            &[("GGUF_SPLICE_TEST_KILL_AT", kill)],
        );
        assert_eq!(o.status.signal(), Some(9), "{kill}: {}", stderr(&o));
        assert!(!dir.join(second).exists(), "{kill}: {:?}", names(&dir));
        let hidden: Vec<String> = names(&dir)
            .into_iter()
            .filter(|n| n.starts_with("late/.chimera-late-00002-of-00003.gguf."))
            .collect();
        assert_eq!(hidden.len(), 1, "{kill}: {:?}", names(&dir));
        assert!(hidden[0].ends_with(".partial"));
        // The re-run removes the killed job's temporary file and writes the shard.
        let o = batch(&m, &["--job", "2"]);
        assert_ok(&o);
        assert!(stderr(&o).contains("removed"), "{}", stderr(&o));
        assert_eq!(std::fs::read(dir.join(second)).unwrap(), want[second]);
        assert!(!names(&dir).iter().any(|n| n.contains("/.")));
        std::fs::remove_file(dir.join(second)).unwrap();
    }

    // The first shard's job, last of its set, killed between staging its shard and putting
    // it in place: the set stays without a first shard; the re-run puts it in place.
    assert_ok(&job(&m, 2));
    assert_ok(&job(&m, 3));
    let o = run_env(
        &["batch", &m, "--job", "1", "-q"],
        &[("GGUF_SPLICE_TEST_KILL_AT", "rename:2")],
    );
    assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
    let first = "late/chimera-late-00001-of-00003.gguf";
    assert!(!dir.join(first).exists());
    assert!(
        dir.join("late/.chimera-late-00001-of-00003.gguf.staged")
            .exists()
    );
    let o = batch(&m, &["--job", "1", "--json", "-q"]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["children"][0]["skipped"], 1);
    assert_eq!(v["children"][0]["complete"], true);
    assert_eq!(std::fs::read(dir.join(first)).unwrap(), want[first]);
    assert!(!names(&dir).iter().any(|n| n.contains("/.")));

    // The rest of the batch completes it, equal to the separate runs.
    assert_ok(&batch(&m, &["-q"]));
    assert_eq!(outputs(&dir), want);
}

/// The manifest with `child` appended.
fn with_child(s: &Setup, child: &str) -> String {
    format!("{}\n[[children]]\n{child}\n", manifest(s))
}

#[test]
fn a_bad_child_stops_the_batch_before_any_output() {
    let s = setup(GgmlType::IQ2_XXS);
    let cases = [
        (
            "rule",
            "output = 'bad.gguf'\ntake = ['no_such_tensor=r1']",
            3,
        ),
        // A directory that cannot be: a path through the manifest, a regular file (a
        // missing directory is created; see tests/hand/cli/outputs.rs).
        ("dir", "output = 'm.toml/bad.gguf'", 4),
        (
            "same",
            "output = 'late/chimera-late-00002-of-00003.gguf'",
            3,
        ),
        (
            "recipe",
            "output = 'bad.gguf'\nrecipe = 'no-such-recipe'",
            3,
        ),
    ];
    for (name, child, code) in cases {
        let (dir, m) = farm(&s, name, &with_child(&s, child));
        for args in [&["-q"][..], &["--job", "0", "-q"], &["--list-jobs"]] {
            let o = batch(&m, args);
            // Listing jobs needs the plans, but not the output directories.
            if name == "dir" && args == ["--list-jobs"] {
                assert_ok(&o);
                continue;
            }
            assert_exit(&o, code);
            assert!(stderr(&o).contains("#5 ("), "{name}: {}", stderr(&o));
            assert!(
                outputs(&dir).is_empty(),
                "{name} {args:?}: {:?}",
                names(&dir)
            );
        }
    }
    // A child writing over a parent that only another child reads.
    let (dir, m) = farm(
        &s,
        "input",
        &with_child(&s, "output = '../r1.gguf'\nparents = ['v3']"),
    );
    let r1_before = std::fs::read(&s.r1).unwrap();
    for args in [&["-q", "--force"][..], &["--job", "11", "--force", "-q"]] {
        let o = batch(&m, args);
        assert_exit(&o, 4);
        assert!(stderr(&o).contains("is the input file"), "{}", stderr(&o));
    }
    assert!(outputs(&dir).is_empty(), "{:?}", names(&dir));
    assert_eq!(std::fs::read(&s.r1).unwrap(), r1_before);

    // The library says which child and why, by variant.
    let (_, m) = farm(
        &s,
        "lib",
        &with_child(&s, "output = 'bad.gguf'\ntake = ['nothing=r1']"),
    );
    let b = Batch::from_file(Path::new(&m), &http()).unwrap();
    match b.plan() {
        Err(BatchError::Plan {
            child,
            source: PlanError::RuleMatchedNothing { .. },
            ..
        }) => assert_eq!(child, "#5 (bad.gguf)"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("plan should fail"),
    }

    // A file at a child's output that is not its planned shard: nothing is written
    // without --force, and the file is named; with --force the batch replaces it.
    let (dir, m) = farm(&s, "exists", &manifest(&s));
    std::fs::write(dir.join("swapped.gguf"), b"not a shard").unwrap();
    let o = batch(&m, &["-q"]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("swapped.gguf exists but is not the planned shard (size"));
    assert_eq!(names(&dir), ["m.toml", "swapped.gguf"]);
    let b = Batch::from_file(Path::new(&m), &http()).unwrap();
    let plans = b.plan().unwrap();
    assert!(matches!(
        gguf_splice::batch::check_all(&b, &plans, false),
        Err(BatchError::Exec {
            source: ExecError::ShardDiffers { .. },
            ..
        })
    ));
    assert_ok(&batch(&m, &["-q", "--force"]));
    assert_eq!(outputs(&dir), reference(&s));
}
