//! Rules and parents as a user writes them: one grammar for `--take` and recipe rules, so
//! every hint works where the rule was written; names given in the wrong case.

use super::*;

#[test]
fn take_hints_work_in_take() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("c.gguf");
    let out = out.to_str().unwrap();
    // A rule that matches nothing: the hint names the --take spelling...
    let o = s.splice(&["--take", r"blk\.99\.attn=r1", "-o", out, "--dry-run"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("`:optional` in --take"),
        "{}",
        stderr(&o)
    );
    // ...which is accepted.
    let o = s.splice(&[
        "--take",
        r"blk\.99\.attn=r1:optional",
        "-o",
        out,
        "--dry-run",
    ]);
    assert_ok(&o);
    // Experts torn apart: the hint names a rule by role, in --take too...
    let o = s.splice(&["--take", "ffn_(gate|up)_exps=r1", "-o", out, "--dry-run"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("--take '=PARENT:role=routed_experts'"),
        "{}",
        stderr(&o)
    );
    // ...which takes every routed expert matrix from r1.
    let o = s.splice(&["--take", "=r1:role=routed_experts", "-o", out, "-q"]);
    assert_ok(&o);
    let child = gguf_splice::gguf::Model::open(std::path::Path::new(out)).unwrap();
    let mut experts = 0;
    for t in child.tensors().filter(|t| is_routed_expert(&t.info.name)) {
        assert_eq!(
            tensor_bytes(&child, &t.info.name),
            expected_bytes(R1, GgmlType::Q3_K, &t.info.name),
            "{}",
            t.info.name
        );
        experts += 1;
    }
    assert!(experts > 0);
    // An empty regex needs a role.
    assert_exit(&s.splice(&["--take", "=r1", "-o", out, "--dry-run"]), 3);
}

#[test]
fn a_manifest_typo_reads_as_a_recipe_typo() {
    let s = setup(GgmlType::Q3_K);
    let m = s.dir.path().join("m.toml");
    std::fs::write(
        &m,
        format!(
            "[parents]\nv3 = '{}'\n\n[[children]]\noutput = 'c.gguf'\nrecipie = 'x'\n",
            s.v3.display()
        ),
    )
    .unwrap();
    let o = run(&["batch", m.to_str().unwrap(), "--dry-run"]);
    assert_exit(&o, 3);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}:6:1: unknown field 'recipie' in [[children]] (did you mean 'recipe'?)",
            m.display()
        )),
        "{err}"
    );
    // The same typo in a recipe: the same words.
    let r = s.dir.path().join("r.toml");
    std::fs::write(&r, "[[rules]]\nmatch = 'x'\nfrom = 'v3'\nfrom_ = 1\n").unwrap();
    let o = s.splice(&["--recipe", r.to_str().unwrap(), "-o", "c.gguf", "--dry-run"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains(":4:1: unknown field 'from_' in [[rules]] (did you mean 'from'?)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_parent_name_in_the_wrong_case_is_named() {
    let s = setup(GgmlType::Q3_K);
    let o = run(&[
        "splice",
        "--parent",
        &format!("V3={}", s.v3.display()),
        "--parent",
        &format!("r1={}", s.r1.display()),
        "--recipe",
        "deepseek-r1t-chimera",
        "-o",
        "c.gguf",
        "--dry-run",
    ]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains("parent named 'v3' (you gave 'V3': names are case-sensitive)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_url_with_one_slash_is_named_not_read_as_a_path() {
    let s = setup(GgmlType::Q3_K);
    for (typed, meant) in [
        ("hf:/org/repo/x.gguf", "hf://org/repo/x.gguf"),
        ("https:/host/x.gguf", "https://host/x.gguf"),
    ] {
        let o = run(&["inspect", typed]);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains(&format!("did you mean '{meant}'")),
            "{}",
            stderr(&o)
        );
        let o = run(&[
            "splice",
            "--parent",
            &format!("v3={}", s.v3.display()),
            "--parent",
            &format!("r1={typed}"),
            "-o",
            "c.gguf",
        ]);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains(meant), "{}", stderr(&o));
    }
}
