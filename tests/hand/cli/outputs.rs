//! Missing output directories are created, after every check, by `splice`, `assemble` and
//! `batch` (as build tools create theirs); `--dry-run` says it would create them.

use super::*;

#[test]
fn splice_creates_a_missing_output_directory_and_says_so() {
    let s = setup(GgmlType::Q3_K);
    let dir = s.dir.path().join("out").join("late");
    let out = dir.join("child.gguf");
    let o = s.splice(&[
        "--recipe",
        &chimera_preset(),
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains(&format!(
            "would create the output directory {}",
            dir.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("writing would fail"), "{}", stderr(&o));
    assert!(!dir.exists(), "--dry-run creates nothing");

    let o = s.splice(&["--recipe", &chimera_preset(), "-o", out.to_str().unwrap()]);
    assert_ok(&o);
    assert!(out.is_file());
    assert!(
        stderr(&o).contains(&format!("created the output directory {}", dir.display())),
        "{}",
        stderr(&o)
    );
    // --json says it too.
    let out2 = s.dir.path().join("json").join("child.gguf");
    let o = s.splice(&[
        "--recipe",
        &chimera_preset(),
        "-o",
        out2.to_str().unwrap(),
        "--json",
    ]);
    assert_ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["created_dir"], out2.parent().unwrap().to_str().unwrap());
}

#[test]
fn assemble_creates_a_missing_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let a = format!(
        "a={}",
        repo().join("fixtures/llama-ft-a-q4km.gguf").display()
    );
    let b = format!(
        "b={}",
        repo().join("fixtures/llama-ft-b-q4km.gguf").display()
    );
    let out = dir.path().join("moe").join("m.gguf");
    let o = run(&[
        "assemble",
        "--parent",
        &a,
        "--parent",
        &b,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    assert!(out.is_file());
    assert!(
        stderr(&o).contains("created the output directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_readme_batch_example_runs_as_written() {
    // The README's manifest: child #2 writes into `late/`, which nobody created.
    let s = setup(GgmlType::Q3_K);
    let farm = s.dir.path().join("farm");
    std::fs::create_dir(&farm).unwrap();
    let m = farm.join("farm.toml");
    std::fs::write(
        &m,
        format!(
            r#"[parents]
v3 = "{v3}"
r1 = "{r1}"

[[children]]
output = "chimera.gguf"
recipe = "deepseek-r1t-chimera"

[[children]]
output = "late/chimera-late.gguf"
recipe = "deepseek-r1t-chimera"
take = ['blk\.1\.ffn_(gate|up|down)_exps=v3']
split_max_tensors = 40
"#,
            v3 = s.v3.display(),
            r1 = s.r1.display()
        ),
    )
    .unwrap();
    let m = m.to_str().unwrap();
    let late = farm.join("late");
    let o = run(&["batch", m, "--dry-run"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains(&format!(
            "would create the output directory {}",
            late.display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!late.exists());
    // Job 0 is child #1's, but every job checks every child: the missing `late` is fine.
    let o = run(&["batch", m, "--job", "0", "-q"]);
    assert_ok(&o);
    assert!(farm.join("chimera.gguf").is_file());
    assert!(!late.exists(), "job 0 writes nothing of child #2");
    let o = run(&["batch", m]);
    assert_ok(&o);
    assert!(first_shard(&late, "chimera-late").is_file());
    assert!(
        stderr(&o).contains(&format!("created the output directory {}", late.display())),
        "{}",
        stderr(&o)
    );
    assert_ok(&run(&["batch", m, "--status"]));
}
