//! What a manifest names, resolved as the filesystem and the network resolve it: outputs
//! that are one file through a linked directory, every child's verdict in `--verify`.

use super::*;

#[test]
fn two_outputs_that_are_one_file_through_a_linked_directory_are_refused_before_writing() {
    let s = setup(GgmlType::IQ2_XXS);
    let dir = s.dir.path().join("linked");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("sub", dir.join("lnk")).unwrap();
    let text = format!(
        "[parents]\nv3 = '{}'\n[[children]]\noutput = 'sub/x.gguf'\n\
         [[children]]\noutput = 'lnk/x.gguf'\n",
        s.v3.display()
    );
    let m = dir.join("m.toml");
    std::fs::write(&m, text).unwrap();
    let m = m.display().to_string();
    for args in [
        &["--dry-run"][..],
        &["-q"],
        &["-q", "--force"],
        &["--job", "1"],
    ] {
        let o = batch(&m, args);
        assert_exit(&o, 3);
        assert!(
            stderr(&o).contains("both write"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert_eq!(names(&dir), ["m.toml"], "{args:?}");
    }
    let b = Batch::from_file(Path::new(&m), &http()).unwrap();
    match b.plan() {
        Err(BatchError::SameOutput {
            first,
            second,
            real,
            ..
        }) => {
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("#1 (sub/x.gguf)", "#2 (lnk/x.gguf)")
            );
            assert_eq!(real, dir.join("sub").canonicalize().unwrap().join("x.gguf"));
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("plan should fail"),
    }
}

#[test]
fn verify_reports_every_child_even_after_a_missing_one() {
    let s = setup(GgmlType::IQ2_XXS);
    let (dir, m) = farm(&s, "farm", &manifest(&s));
    assert_ok(&batch(&m, &["-q"]));
    // Child 1 gone, child 2 without its first shard; 3 and 4 intact.
    std::fs::remove_file(dir.join("chimera.gguf")).unwrap();
    std::fs::remove_file(dir.join("late/chimera-late-00001-of-00003.gguf")).unwrap();
    let o = batch(&m, &["--verify"]);
    assert_exit(&o, 4);
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "#1 (chimera.gguf): not verified (error above)",
            "#2 (late/chimera-late.gguf): not verified (error above)",
            "#3 (v3-only.gguf): verified",
            "#4 (swapped.gguf): verified",
        ],
        "{}",
        stderr(&o)
    );
    let e = stderr(&o);
    assert!(
        e.contains("child #1 (chimera.gguf)") && e.contains("child #2 (late/chimera-late.gguf)"),
        "{e}"
    );
    let o = batch(&m, &["--verify", "--json"]);
    assert_exit(&o, 4);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["child"], "#1 (chimera.gguf)");
    assert!(all[1]["error"].as_str().unwrap().contains("chimera-late"));
    assert!(all[2].get("error").is_none() && all[3].get("error").is_none());
    // The library gives each child its verdict.
    let b = Batch::from_file(Path::new(&m), &http()).unwrap();
    let plans = b.plan().unwrap();
    let verdicts = b.verify(&plans);
    assert!(matches!(verdicts[0], Err(BatchError::Compare { .. })));
    assert!(verdicts[2].as_ref().is_ok_and(|r| r.passed()));
}
