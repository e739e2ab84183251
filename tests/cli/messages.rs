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
