//! Mistakes in take rules and recipes are one-line errors that say the fix; a bad magic is
//! shown as text and hex.

use super::*;

#[test]
fn take_rules_name_their_mistakes() {
    let s = setup(GgmlType::Q3_K);
    let take = |t: &str| s.dry_run(&["--take", t]);
    let cmds = vec![
        take("exps=r1:expert=0-1"),
        take("exps=r1:experts=0..2"),
        take("exps=r1:router"),
        take("exps=r1:layers=5-9"),
    ];
    let outs = run_all(&cmds);
    let err = one_line_error(&outs[0], 3);
    assert!(
        err.contains("unknown option 'expert'")
            && err.contains("did you mean 'experts'")
            && err.contains("layers=RANGES"),
        "{err}"
    );
    let err = one_line_error(&outs[1], 3);
    assert!(err.contains("'0..2'"), "{err}");
    let err = one_line_error(&outs[2], 3);
    assert!(err.contains("router") && err.contains("experts"), "{err}");
    assert!(!err.contains("not of the form"), "{err}");
    // Layers past the model are blamed on `layers`, not on the regex.
    let err = one_line_error(&outs[3], 3);
    assert!(
        err.contains("5-9") && err.contains("3 blocks") && !err.contains("takes no tensor"),
        "{err}"
    );

    let parents: Vec<Parent> = [("v3", &s.v3), ("r1", &s.r1)]
        .into_iter()
        .map(|(name, path)| Parent {
            name: name.into(),
            model: Model::open(path).unwrap(),
        })
        .collect();
    let mut recipe = Recipe::default();
    recipe
        .prepend_takes(&["exps=r1:layers=5-9".to_string()])
        .unwrap();
    let e = plan::build(
        &parents,
        &recipe,
        &s.path("o.gguf"),
        SplitOptions::default(),
    );
    assert!(
        matches!(&e, Err(PlanError::LayersBeyondModel { layers, block_count: 3, .. }) if layers == "5-9"),
        "{:?}",
        e.err()
    );

    // Options where the parent should be: the error says how the rule was read.
    let outs = run_all(&[take(":experts=0..2"), take("exps=r1 :experts=0-1")]);
    for (o, regex) in outs.iter().zip([":experts", "exps=r1 :experts"]) {
        let err = one_line_error(o, 3);
        assert!(
            err.contains("no parent named")
                && err.contains(&format!("read as regex '{regex}'"))
                && err.contains("REGEX=PARENT:experts=RANGES"),
            "{err}"
        );
    }

    // `layers` works on the command line as in recipes.
    let o = &run_all(&[take("ffn_(gate|up|down)_exps=r1:layers=2:experts=1")])[0];
    assert!(o.status.success(), "{}", stderr(o));
    let plan = String::from_utf8_lossy(&o.stdout);
    let line = |name: &str| {
        plan.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} in {plan}"))
            .to_string()
    };
    assert!(line("blk.2.ffn_up_exps").contains("r1"), "{plan}");
    assert!(!line("blk.1.ffn_up_exps").contains("r1"), "{plan}");
}

#[test]
fn recipe_mistakes_are_one_line_errors_that_say_the_fix() {
    let s = setup(GgmlType::Q3_K);
    let typo = s.recipe(
        "typo.toml",
        "[recipe]\nparents = ['v3', 'r1']\n\n[[rules]]\nmatch = '_exps'\nfrom = 'r1'\noptinal = true\n",
    );
    let quoted = s.recipe(
        "quoted.toml",
        "[[rules]]\nmatch = \"ffn_up_exps\\.weight\"\nfrom = 'r1'\n",
    );
    let huge_f32 = s.recipe(
        "f32.toml",
        "[[metadata.set]]\nkey = 'x.scale'\ntype = 'f32'\nvalue = 1e300\n",
    );
    let str_type = s.recipe(
        "str.toml",
        "[[metadata.set]]\nkey = 'x.name'\ntype = 'str'\nvalue = 'a'\n",
    );
    let long_regex = s.recipe(
        "long.toml",
        &format!(
            "[[rules]]\nmatch = '({}'\nfrom = 'r1'\n",
            "a".repeat(200_000)
        ),
    );
    let cmds: Vec<Vec<String>> = [&typo, &quoted, &huge_f32, &str_type, &long_regex]
        .iter()
        .map(|r| s.dry_run(&["--recipe", r]))
        .collect();
    let outs = run_all(&cmds);
    let err = one_line_error(&outs[0], 3);
    assert!(
        err.contains(&format!("{typo}:7:"))
            && err.contains("unknown field 'optinal' in [[rules]]")
            && err.contains("did you mean 'optional'"),
        "{err}"
    );
    let err = one_line_error(&outs[1], 3);
    assert!(
        err.contains(&format!("{quoted}:2:")) && err.contains("single quotes"),
        "{err}"
    );
    let err = one_line_error(&outs[2], 3);
    assert!(err.contains("1e300") && err.contains("f32"), "{err}");
    let err = one_line_error(&outs[3], 3);
    assert!(err.contains("'str'") && err.contains("string"), "{err}");
    let err = one_line_error(&outs[4], 3);
    assert!(err.len() < 400 && err.contains('…'), "{err}");
}

#[test]
fn a_bad_magic_is_shown_as_text_and_hex() {
    let s = setup(GgmlType::Q3_K);
    let notes = s
        .file("notes.gguf", b"# gguf notes, not a model\n")
        .display()
        .to_string();
    let o = run(&["inspect", &notes]);
    let err = one_line_error(&o, 3);
    assert!(err.contains("\"# gg\" (23 20 67 67)"), "{err}");
}
