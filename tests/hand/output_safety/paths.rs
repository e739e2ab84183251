//! Output paths: what is not a regular file is never replaced, bad paths fail before any byte
//! is copied, a missing directory is created after the checks, modes follow the umask, and
//! only leftovers of this output (not those of a run still going on, nor a parent) are
//! removed.

use super::*;

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
