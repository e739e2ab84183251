//! The limits a run meets: a file size limit is an error naming the output, and open files
//! do not grow with the shard count.

use super::*;

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
