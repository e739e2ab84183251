//! Which ggml a mix runs with: none (a mix plan is shown, writing it and a batch that mixes
//! are refused with the ways to get one), a library that is not ggml (refused naming it),
//! and the ggml beside llama-quantize on PATH (found).

use super::*;

#[test]
fn without_ggml_a_mix_plan_is_shown_and_writing_it_is_refused_with_the_ways_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let r = write_recipe(
        dir.path(),
        "[[rules]]\nrole = 'routed_experts'\nmix = { r1 = 0.75, v3 = 0.25 }\nthreshold = 0.02\n",
    );
    let out = dir.path().join("c.gguf");
    let args = mix_args(&r, &out, &["--dry-run", "--json"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run_without_ggml(&refs);
    assert_ok(&o);
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        plan["ggml"]["error"]
            .as_str()
            .unwrap()
            .contains("no ggml found")
    );
    let slices = &tensor(&plan, "blk.1.ffn_up_exps.weight")["mix"]["slices"];
    assert_eq!(slices[0]["distance"], Value::Null);
    assert_eq!(slices[0]["threshold"], 0.02);
    let args = mix_args(&r, &out, &["--dry-run"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run_without_ggml(&refs);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("distance needs ggml"), "{text}");

    let args = mix_args(&r, &out, &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run_without_ggml(&refs);
    // A missing capability: exit 5, as for --values (README "Exit codes").
    assert_exit(&o, 5);
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("rule #1: a mix rule needs ggml")
            && e.contains("pip install libggml-python")
            && e.contains("--ggml PATH"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn a_library_that_is_not_ggml_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = write_recipe(
        dir.path(),
        "[[rules]]\nrole = 'routed_experts'\nmix = { r1 = 0.75, v3 = 0.25 }\n",
    );
    let out = dir.path().join("c.gguf");
    // Another shared library: libz, which every Debian has.
    let libz = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("libz.so.1");
    let mut args = mix_args(&r, &out, &[]);
    args.extend(["--ggml".into(), libz.display().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run_without_ggml(&refs);
    assert_exit(&o, 5);
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("libz.so") && e.contains("is not a ggml") && e.contains("ggml_get_type_traits"),
        "{e}"
    );
    assert!(!out.exists());
    // The same through the environment, and `doctor`.
    let o = std::process::Command::new(BIN)
        .arg("doctor")
        .env("GGUF_SPLICE_GGML", &libz)
        .output()
        .unwrap();
    // Exit 5: this machine lacks what the command needs.
    assert_exit(&o, 5);
    assert!(stderr(&o).contains("is not a ggml"), "{}", stderr(&o));
}

#[test]
fn the_ggml_beside_llama_quantize_on_path_is_found() {
    if !have(
        "the_ggml_beside_llama_quantize_on_path_is_found",
        &[Oracle::Ggml],
    ) {
        return;
    }
    // A llama.cpp install tree: bin/llama-quantize and lib/libggml-base.so.
    let lib = gguf_splice::ggml_lib::library()
        .unwrap()
        .path()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let (bin, libdir) = (dir.path().join("bin"), dir.path().join("lib"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&libdir).unwrap();
    std::fs::write(bin.join("llama-quantize"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(&lib, libdir.join("libggml-base.so")).unwrap();
    let o = std::process::Command::new(BIN)
        .arg("doctor")
        .env_remove("GGUF_SPLICE_GGML")
        .env_remove("LD_LIBRARY_PATH")
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "found by  beside {} on PATH",
            bin.join("llama-quantize").display()
        )) && text.contains("agree with gguf-splice's table"),
        "{text}"
    );
}

#[test]
fn without_ggml_a_batch_that_mixes_is_refused_before_any_job_writes() {
    // A whole run and a job of a job array: both refused up front (exit 5), nothing written,
    // as `splice` refuses; listing the jobs needs no ggml.
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("farm.toml");
    std::fs::write(
        &manifest,
        format!(
            "[parents]\nv3 = \"{}\"\nr1 = \"{}\"\n\n[[children]]\noutput = \"mixed.gguf\"\nrecipe = \"r1t-mix-75\"\nsplit_max_tensors = 40\n",
            fixture("v3-q3mix.gguf").display(),
            fixture("r1-q3mix.gguf").display()
        ),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    assert_ok(&run_without_ggml(&["batch", m, "--list-jobs"]));
    for extra in [&[][..], &["--job", "1"]] {
        let mut args = vec!["batch", m];
        args.extend_from_slice(extra);
        let o = run_without_ggml(&args);
        assert_exit(&o, 5);
        let e = stderr(&o);
        assert!(e.contains("pip install libggml-python"), "{e}");
        let written: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains("mixed"))
            .collect();
        assert!(written.is_empty(), "{written:?}");
    }
}

#[test]
fn a_ggml_path_that_is_a_fifo_is_refused_at_once() {
    // dlopen of a FIFO blocks until a writer comes: the path must be a regular file. The
    // wait below is only a guard that turns a hang into a failure.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("libggml-base.so");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path and creates a file; no memory is shared.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gguf-splice"))
        .arg("--ggml")
        .arg(&fifo)
        .arg("doctor")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..400 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("gguf-splice --ggml FIFO hung");
    };
    assert_eq!(status.code(), Some(5));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("not a regular file"), "{err}");
}
