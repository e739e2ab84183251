//! What the command line says besides errors: progress modes, warnings said once, help
//! texts, man pages and where a map went.

use super::*;

/// A manifest of two children of the same parents (whose chat templates differ).
fn two_children(s: &Setup) -> PathBuf {
    let m = s.dir.path().join("m.toml");
    std::fs::write(
        &m,
        format!(
            "[parents]\nv3 = '{}'\nr1 = '{}'\n\n[[children]]\noutput = 'a.gguf'\n\n\
             [[children]]\noutput = 'b.gguf'\ntake = ['_exps=r1']\n",
            s.v3.display(),
            s.r1.display()
        ),
    )
    .unwrap();
    m
}

#[test]
fn a_warning_about_shared_parents_is_said_once_per_batch() {
    let s = setup(GgmlType::Q3_K);
    let m = two_children(&s);
    let m = m.to_str().unwrap();
    for args in [
        &["--dry-run"][..],
        &["-q"],
        &["--job", "0", "-q", "--force"],
    ] {
        let mut all = vec!["batch", m];
        all.extend_from_slice(args);
        let o = run(&all);
        assert_ok(&o);
        let err = stderr(&o);
        assert_eq!(
            err.matches("chat template differs").count(),
            1,
            "{args:?}: {err}"
        );
        if args[0] == "--job" {
            assert!(
                err.contains("warning: child #1 (a.gguf): chat template"),
                "{err}"
            );
        } else {
            assert!(
                err.contains("warning: children #1 (a.gguf), #2 (b.gguf): chat template"),
                "{err}"
            );
        }
    }
}

#[test]
fn a_dry_run_says_a_warning_once_and_a_bar_without_a_terminal_says_why_it_is_missing() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("c.gguf");
    std::fs::write(&out, b"taken").unwrap();
    let o = s.splice(&["-o", out.to_str().unwrap(), "--dry-run"]);
    assert_ok(&o);
    let both = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(both.matches("writing would fail").count(), 1, "{both}");
    // --json keeps it in the plan's warnings (and on stderr).
    let o = s.splice(&["-o", out.to_str().unwrap(), "--dry-run", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        j["warnings"].to_string().contains("writing would fail"),
        "{j}"
    );

    // The tests' stderr is a pipe, not a terminal.
    let o = s.splice(&["-o", out.to_str().unwrap(), "--force", "--progress", "bar"]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("note: --progress bar draws only on a terminal"),
        "{}",
        stderr(&o)
    );
    let o = s.splice(&["-o", out.to_str().unwrap(), "--force"]);
    assert!(!stderr(&o).contains("note: --progress"), "{}", stderr(&o));
}

#[test]
fn every_option_has_help_and_models_say_they_may_be_remote() {
    // zsh's completion script holds every option's help, per subcommand: `'--json[HELP]'`.
    let o = run(&["completions", "zsh"]);
    assert_ok(&o);
    let zsh = String::from_utf8_lossy(&o.stdout);
    let options: Vec<&str> = zsh
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("'-") || l.starts_with("'*-") || l.starts_with("'(-"))
        .collect();
    assert!(options.len() > 50, "{}", options.len());
    for line in &options {
        assert!(!line.contains("[]"), "an option without help: {line}");
    }
    // Every command that reads models reads remote ones: its help says so, in one wording.
    let models: Vec<&str> = zsh
        .lines()
        .filter(|l| l.contains("--parent=[") || l.contains(" -- Any shard of"))
        .collect();
    assert!(models.len() >= 7, "{models:?}");
    for line in models {
        assert!(
            line.contains("local or remote (https\\://…, hf\\://ORG/REPO/PATH/FILE.gguf"),
            "{line}"
        );
    }
}

#[test]
fn man_prints_one_page_per_subcommand_and_writes_them_all() {
    let o = run(&["man", "splice"]);
    assert_ok(&o);
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(page.contains(".TH gguf-splice-splice 1"), "{page}");
    assert!(page.contains("\\-\\-split\\-max\\-size"), "{page}");
    assert!(page.contains(&format!("\"gguf-splice {}\"", env!("CARGO_PKG_VERSION"))));
    let o = run(&["man", "presets-show"]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains(".TH gguf-splice-presets-show 1"));
    // A word that is no subcommand is a typo, not a directory to create.
    let dir = tempfile::tempdir().unwrap();
    let o = run_in(dir.path(), &["man", "splcie"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("no such subcommand"), "{}", stderr(&o));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());

    // Every page the main page refers to is written.
    let o = run(&["man"]);
    assert_ok(&o);
    let main = String::from_utf8_lossy(&o.stdout).into_owned();
    let out = dir.path().join("share/man/man1");
    let o = run(&["man", &format!("{}/", out.display())]);
    assert_ok(&o);
    let mut refs = 0;
    for word in main.split_whitespace() {
        if let Some(name) = word.strip_suffix("(1)") {
            let file = out.join(format!("{}.1", name.replace("\\-", "-")));
            assert!(file.is_file(), "{} is missing", file.display());
            refs += 1;
        }
    }
    assert!(refs >= 8, "{refs}");
    assert_eq!(
        std::fs::read_to_string(out.join("gguf-splice.1")).unwrap(),
        main
    );
    assert_eq!(
        std::fs::read_to_string(out.join("gguf-splice-splice.1")).unwrap(),
        page
    );
    assert!(stderr(&o).contains("man pages into"), "{}", stderr(&o));
}
