//! The command line as a user meets it: presets by name from anywhere, generated shell
//! completions and man page, the JSON summary of a real splice, and warnings under --quiet.
//! The modules under `tests/hand/cli/` hold the rest, by theme.

mod messages;
mod outputs;
mod rules;

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use gguf_splice::ggml_type::GgmlType;

/// Run the binary in `dir` (not the repository), as an installed binary would be.
fn run_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn presets_work_by_name_away_from_the_repository() {
    let s = setup(GgmlType::IQ2_XXS);
    let (v3, r1) = (
        format!("v3={}", s.v3.display()),
        format!("r1={}", s.r1.display()),
    );
    let args = [
        "splice",
        "--parent",
        &v3,
        "--parent",
        &r1,
        "--recipe",
        "deepseek-r1t-chimera",
        "-o",
        "child.gguf",
        "-q",
    ];
    let o = run_in(s.dir.path(), &args);
    assert_ok(&o);
    let by_name = std::fs::read(s.dir.path().join("child.gguf")).unwrap();
    // The same bytes as with the file from mappings/.
    let o = run_in(
        s.dir.path(),
        &[
            "splice",
            "--parent",
            &v3,
            "--parent",
            &r1,
            "--recipe",
            &chimera_preset(),
            "-o",
            "by-path.gguf",
            "-q",
        ],
    );
    assert_ok(&o);
    assert_eq!(
        by_name,
        std::fs::read(s.dir.path().join("by-path.gguf")).unwrap()
    );

    let o = run_in(s.dir.path(), &["presets"]);
    assert_ok(&o);
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.contains("deepseek-r1t-chimera  ")
            && list.contains("routed experts from R1, everything else from V3-0324"),
        "{list}"
    );
    let o = run_in(s.dir.path(), &["presets", "show", "deepseek-r1t-chimera"]);
    assert_ok(&o);
    let shown = std::fs::read_to_string(repo().join("mappings/deepseek-r1t-chimera.toml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), shown);

    let o = run_in(s.dir.path(), &["presets", "show", "nope"]);
    assert_exit(&o, 2);
    let o = run_in(
        s.dir.path(),
        &[
            "splice",
            "--parent",
            &v3,
            "--recipe",
            "deepseek-r1t-chimer",
            "-o",
            "x.gguf",
        ],
    );
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("no preset of that name (presets: deepseek-r1t-chimera,"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn completions_and_man_page_come_from_the_parser() {
    for (shell, marker) in [
        ("bash", "_gguf__splice()"),
        ("zsh", "#compdef gguf-splice"),
        ("fish", "complete -c gguf-splice"),
    ] {
        let o = run(&["completions", shell]);
        assert_ok(&o);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(
            text.contains("split-max-size"),
            "{shell} lacks splice's options"
        );
    }
    let o = run(&["man"]);
    assert_ok(&o);
    let man = String::from_utf8_lossy(&o.stdout);
    assert!(man.contains(".TH gguf-splice 1"), "{man}");
    assert!(man.contains("splice") && man.contains("verify"));
}

#[test]
fn a_real_splice_reports_json_and_quiet_keeps_warnings() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("child.gguf");
    let o = s.splice(&[
        "--recipe",
        &chimera_preset(),
        "-o",
        out.to_str().unwrap(),
        "--json",
        "--quiet",
    ]);
    assert_ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(j["files"][0]["path"], out.to_str().unwrap());
    assert_eq!(j["files"][0]["bytes"], len);
    assert_eq!(j["bytes"], len);
    let child = gguf_splice::gguf::Model::open(&out).unwrap();
    let from = |pred: fn(&str) -> bool| -> u64 {
        child
            .tensors()
            .filter(|t| pred(&t.info.name))
            .map(|t| t.info.n_bytes)
            .sum()
    };
    assert_eq!(j["tensor_bytes_by_parent"]["r1"], from(is_routed_expert));
    assert_eq!(
        j["tensor_bytes_by_parent"]["v3"],
        from(|n| !is_routed_expert(n))
    );
    assert!(j["seconds"].as_f64().unwrap() >= 0.0);
    // The parents' chat templates differ: a warning, in the JSON and on stderr despite -q.
    let w = j["warnings"].as_array().unwrap();
    assert!(
        w.iter()
            .any(|w| w.as_str().unwrap().contains("chat template differs"))
    );
    assert!(
        stderr(&o).contains("warning: chat template differs"),
        "{}",
        stderr(&o)
    );
}

/// Run the binary with a stdout whose reader has already gone (`... | head -0`): every
/// write to it fails with EPIPE, whatever the timing.
fn run_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(BIN)
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_pipe_ends_the_report_but_not_the_verdict() {
    let s = setup(GgmlType::Q3_K);
    let (v3, r1) = (s.v3.to_str().unwrap(), format!("r1={}", s.r1.display()));
    // v3 checked against r1 alone: its tensors match no parent, so verify exits 1.
    for json in [false, true] {
        let mut args = vec!["verify", v3, "--parent", &r1];
        if json {
            args.push("--json");
        }
        assert_exit(&run(&args), 1);
        let o = run_into_closed_pipe(&args);
        assert_exit(&o, 1);
        assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    }
    // A report that only informs ends quietly with 0.
    let o = run_into_closed_pipe(&["inspect", v3]);
    assert_exit(&o, 0);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn an_output_error_is_not_buried_under_warnings() {
    let s = setup(GgmlType::Q3_K);
    let recipe = chimera_preset();
    // The parents' chat templates differ, so a run that can write warns of it...
    let ok = s.dir.path().join("child.gguf");
    let o = s.splice(&["--recipe", &recipe, "-o", ok.to_str().unwrap()]);
    assert_ok(&o);
    assert!(stderr(&o).contains("warning: chat template differs"));
    // ...but a run that cannot write says only why.
    let through_a_file = ok.join("child.gguf");
    let exists = ok.to_str().unwrap();
    for out in [through_a_file.to_str().unwrap(), exists] {
        let o = s.splice(&["--recipe", &recipe, "-o", out]);
        assert_exit(&o, 4);
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    }
}

#[test]
fn a_closed_stderr_does_not_stop_a_splice_or_change_its_exit_code() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("child.gguf");
    // `splice ... 2>&1 | head -0`: the warnings (the chat templates differ) and the summary
    // go to a stderr nobody reads.
    let run_closed_stderr = |extra: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut args = s.parent_args();
        args.extend(
            ["--recipe", &chimera_preset(), "-o", out.to_str().unwrap()]
                .iter()
                .chain(extra)
                .map(|a| a.to_string()),
        );
        Command::new(BIN)
            .arg("splice")
            .args(&args)
            .stderr(writer)
            .output()
            .unwrap()
    };
    let o = run_closed_stderr(&[]);
    assert_exit(&o, 0);
    assert!(out.exists());
    // An error keeps its exit code (here: the output exists).
    assert_exit(&run_closed_stderr(&[]), 4);
}
