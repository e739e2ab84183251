use super::*;

#[test]
fn index_sets() {
    let s = IndexSet::parse("3-5, 9").unwrap();
    assert!(s.contains(3) && s.contains(5) && s.contains(9));
    assert!(!s.contains(6) && !s.contains(2));
    assert_eq!(s.max(), 9);
    assert!(IndexSet::parse("5-3").is_none());
    assert!(IndexSet::parse("a").is_none());
    assert!(IndexSet::parse("").is_none());
}

#[test]
fn takes_split_at_the_first_name_followed_by_options() {
    let r = parse_take(r"ffn_(up|down)_exps=r1", "t").unwrap();
    assert_eq!(r.pattern.as_ref().unwrap().as_str(), "ffn_(up|down)_exps");
    assert_eq!(r.from, "r1");
    let r = parse_take(r"a=b\.c=v3:experts=0-127:router", "t").unwrap();
    assert_eq!(r.pattern.as_ref().unwrap().as_str(), r"a=b\.c");
    assert_eq!(r.from, "v3");
    assert_eq!(r.experts.unwrap().ranges, vec![0..=127]);
    assert!(r.router);
    assert!(matches!(
        parse_take("no-equals-sign", "t"),
        Err(RecipeError::BadTake { .. })
    ));
    assert!(matches!(
        parse_take("(=r1", "t"),
        Err(RecipeError::BadRegex { .. })
    ));
    // The regex keeps `:` and `=` that are not `=NAME` followed by `:` or the end.
    let r = parse_take(r"(?:gate|up)_exps=x=r1:layers=3-5,7", "t").unwrap();
    assert_eq!(r.pattern.as_ref().unwrap().as_str(), "(?:gate|up)_exps=x");
    assert_eq!(r.layers.unwrap().ranges, vec![3..=5, 7..=7]);
    // `\=` is never a split point.
    let r = parse_take(r"a\=b:c=r1", "t").unwrap();
    assert_eq!(
        (r.pattern.as_ref().unwrap().as_str(), r.from.as_str()),
        (r"a\=b:c", "r1")
    );
    assert!(r.pattern.as_ref().unwrap().is_match("a=b:c"));
    for text in ["no-equals-sign", "=r1", "x=r1 ", "x=r 1"] {
        assert!(
            matches!(parse_take(text, "t"), Err(RecipeError::BadTake { .. })),
            "{text}"
        );
    }
}

#[test]
fn takes_say_what_recipe_rules_say() {
    // `optional` and `role` as in a recipe: a hint naming a recipe field works in --take.
    let r = parse_take(r"blk\.9\.attn=r1:optional", "t").unwrap();
    assert!(r.optional && r.role.is_none());
    assert!(!parse_take("x=r1", "t").unwrap().optional);
    let r = parse_take("=r1:role=routed_experts:layers=3-5", "t").unwrap();
    assert!(r.pattern.is_none());
    assert_eq!(r.role, Some(Role::RoutedExperts));
    assert_eq!(r.from, "r1");
    assert!(r.selects("blk.4.ffn_gate_up_exps.weight"));
    assert!(!r.selects("blk.4.attn_q.weight") && !r.selects("blk.7.ffn_down_exps.weight"));
    let r = parse_take("_exps=r1:role=routed_experts", "t").unwrap();
    assert!(r.pattern.is_some() && r.role.is_some());
}

#[test]
fn take_options_are_named_when_wrong() {
    let err = |text: &str| parse_take(text, "--take #1").unwrap_err();
    let e = err("exps=r1:expert=0-1");
    assert!(
        matches!(&e, RecipeError::UnknownTakeOption { option, suggestion: Some(s), .. } if option == "expert" && s == "experts"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("experts=RANGES, layers=RANGES, router")
    );
    let e = err("exps=r1:layer=1");
    assert!(
        matches!(&e, RecipeError::UnknownTakeOption { suggestion: Some(s), .. } if s == "layers")
    );
    let e = err("exps=r1:optionl");
    assert!(
        matches!(&e, RecipeError::UnknownTakeOption { suggestion: Some(s), .. } if s == "optional")
    );
    let e = err("exps=r1:bogus");
    assert!(matches!(
        &e,
        RecipeError::UnknownTakeOption {
            suggestion: None,
            ..
        }
    ));
    let e = err("=r1:role=routed_expert");
    assert!(matches!(&e, RecipeError::UnknownRole { role, .. } if role == "routed_expert"));
    let e = err("exps=r1:experts=0..2");
    assert!(matches!(&e, RecipeError::BadRange { what: "experts", text, .. } if text == "0..2"));
    let e = err("exps=r1:layers=x");
    assert!(matches!(&e, RecipeError::BadRange { what: "layers", .. }));
    assert!(matches!(
        err("exps=r1:router"),
        RecipeError::RouterWithoutExperts { .. }
    ));
    assert!(matches!(
        err("exps=r1:router:layers=1"),
        RecipeError::RouterWithoutExperts { .. }
    ));
    for (text, problem) in [
        ("exps=r1:experts", "needs a value"),
        ("exps=r1:experts=1:experts=2", "is given twice"),
        ("exps=r1:experts=1:router:router", "is given twice"),
        ("exps=r1:experts=1:router=yes", "takes no value"),
        ("exps=r1:", "is empty"),
        ("exps=r1:optional:optional", "is given twice"),
        ("exps=r1:optional=yes", "takes no value"),
        ("=r1:role", "needs a value"),
        (
            "=r1:role=routed_experts:role=routed_experts",
            "is given twice",
        ),
    ] {
        let e = err(text);
        assert!(
            matches!(&e, RecipeError::BadTakeOption { problem: p, .. } if p.starts_with(problem)),
            "{text}: {e}"
        );
    }
    let r = parse_take("exps=r1:router:experts=0-3", "t").unwrap();
    assert!(r.router && r.experts.is_some());
    for e in [
        err("exps=r1:expert=0-1"),
        err("x=r1:router"),
        err("x=r1:a:b"),
    ] {
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}

#[test]
fn regex_errors_are_one_short_line() {
    let long = format!("({}", "a".repeat(200_000));
    let e = parse_take(&format!("{long}=r1"), "--take #1").unwrap_err();
    let RecipeError::BadRegex {
        pattern, message, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(pattern, &long, "the variant keeps the whole pattern");
    assert_eq!(message, "unclosed group (at character 1)");
    let shown = e.to_string();
    assert_eq!(shown.lines().count(), 1);
    assert!(shown.len() < 200 && shown.contains(&format!("({}…'", "a".repeat(79))));
    let e = parse_take("ffn_[=r1", "t").unwrap_err().to_string();
    assert_eq!(
        e,
        "t: bad regex 'ffn_[': unclosed character class (at character 5)"
    );
    assert_eq!(short_pattern("a\nb"), "a\\nb");
}

#[test]
fn layers_past_the_model_are_named() {
    let r = parse_take("exps=r1:layers=1-2,5-9,12", "t").unwrap();
    assert_eq!(r.layers_beyond(3).as_deref(), Some("5-9,12"));
    assert_eq!(r.layers_beyond(6).as_deref(), Some("6-9,12"));
    assert_eq!(r.layers_beyond(9).as_deref(), Some("9,12"));
    assert_eq!(r.layers_beyond(13), None);
    assert_eq!(parse_take("exps=r1", "t").unwrap().layers_beyond(0), None);
}

#[test]
fn rules_filter_by_layer() {
    let mut r = parse_take("exps=r1", "t").unwrap();
    r.layers = IndexSet::parse("3-60");
    assert!(r.selects("blk.3.ffn_up_exps.weight"));
    assert!(!r.selects("blk.2.ffn_up_exps.weight"));
    assert!(!r.selects("blk.3.attn_q_a.weight"));
}

#[test]
fn rules_by_role_cover_every_layout() {
    let text = "[[rules]]\nrole = 'routed_experts'\nfrom = 'r1'\nlayers = '1-2'\n";
    let r = Recipe::from_toml(text, Path::new("x")).unwrap();
    let rule = &r.rules[0];
    assert_eq!(rule.role, Some(Role::RoutedExperts));
    for n in [
        "ffn_gate_exps",
        "ffn_up_exps",
        "ffn_down_exps",
        "ffn_gate_up_exps",
    ] {
        assert!(rule.selects(&format!("blk.1.{n}.weight")), "{n}");
    }
    assert!(!rule.selects("blk.0.ffn_up_exps.weight"), "layer filter");
    assert!(!rule.selects("blk.1.ffn_up_shexp.weight"));
    assert!(!rule.selects("blk.1.ffn_gate_inp.weight"));
    assert_eq!(rule.describe(), "role routed_experts layers 1-2");
    // Role and regex together: both must hold.
    let text = "[[rules]]\nrole = 'attention'\nmatch = '_b\\.'\nfrom = 'r1'\n";
    let rule = &Recipe::from_toml(text, Path::new("x")).unwrap().rules[0];
    assert!(rule.selects("blk.1.attn_k_b.weight"));
    assert!(!rule.selects("blk.1.attn_q_a.weight"));
    for bad in [
        "[[rules]]\nrole = 'experts'\nfrom = 'r1'\n",
        "[[rules]]\nfrom = 'r1'\n",
    ] {
        let e = Recipe::from_toml(bad, Path::new("x")).unwrap_err();
        assert!(
            matches!(
                e,
                RecipeError::UnknownRole { .. } | RecipeError::RuleSelectsNothing { .. }
            ),
            "{bad}"
        );
    }
}

#[test]
fn parses_a_recipe_file() {
    let text = r#"
        [recipe]
        parents = ["v3", "r1"]
        base = "v3"
        [[rules]]
        match = 'ffn_(gate|up|down)_exps\.weight$'
        from = "r1"
        layers = "3-60"
        [metadata]
        name = "Chimera"
        chat_template = { from = "r1" }
        remove = ["general.url"]
        [[metadata.set]]
        key = "general.quantized_by"
        type = "string"
        value = "me"
    "#;
    let r = Recipe::from_toml(text, Path::new("m/x.toml")).unwrap();
    assert_eq!(r.base.as_deref(), Some("v3"));
    assert_eq!(r.rules.len(), 1);
    assert_eq!(r.rules[0].origin, "m/x.toml rule #1");
    assert_eq!(
        r.metadata.chat_template,
        Some(ChatTemplate::Parent("r1".into()))
    );
    assert_eq!(r.metadata.set[0].1, OwnedValue::string("me"));

    let bad = Recipe::from_toml("[[rules]]\nmatch='x'\nfrom='a'\nfrmo='b'", Path::new("x"));
    assert!(
        matches!(&bad, Err(RecipeError::UnknownField { field, suggestion: Some(s), line: 4, col: 1, .. }) if field == "frmo" && s == "from")
    );
    for set in [
        "key='k'\ntype='u8'\nvalue=300",
        "key=''\ntype='u8'\nvalue=3",
        "key='split.count'\ntype='u16'\nvalue=3",
        "key='splice.set_id'\ntype='string'\nvalue='x'",
        "key='general.alignment'\ntype='u16'\nvalue=32",
        "key='general.alignment'\ntype='u32'\nvalue=48",
    ] {
        let bad = Recipe::from_toml(&format!("[[metadata.set]]\n{set}"), Path::new("x"));
        assert!(matches!(bad, Err(RecipeError::BadValue { .. })), "{set}");
    }
    let ok = Recipe::from_toml(
        "[[metadata.set]]\nkey='general.alignment'\ntype='u32'\nvalue=64",
        Path::new("x"),
    );
    assert!(ok.is_ok());
    let bad = Recipe::from_toml(
        "[[rules]]\nmatch='x'\nfrom='a'\nrouter=true",
        Path::new("x"),
    );
    assert!(matches!(bad, Err(RecipeError::RouterWithoutExperts { .. })));
    let bad = Recipe::from_toml(
        "[metadata]\nchat_template = { from = 'a', file = 'b' }",
        Path::new("x"),
    );
    assert!(matches!(bad, Err(RecipeError::ChatTemplateSource { .. })));
}

fn toml_err(text: &str) -> RecipeError {
    let e = Recipe::from_toml(text, Path::new("recipe.toml")).unwrap_err();
    assert_eq!(e.to_string().lines().count(), 1, "{e}");
    e
}

#[test]
fn toml_errors_are_one_line_with_the_position_and_the_fix() {
    let text = "[recipe]\nparents = ['v3', 'r1']\n\n[[rules]]\nmatch = '_exps'\nfrom = 'r1'\noptinal = true\n";
    let e = toml_err(text);
    assert!(
        matches!(&e, RecipeError::UnknownField { line: 7, col: 1, field, table: "[[rules]]", suggestion: Some(s), .. } if field == "optinal" && s == "optional"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "recipe.toml:7:1: unknown field 'optinal' in [[rules]] (did you mean 'optional'?)"
    );
    // Each table is named; with nothing close, the valid fields are listed.
    for (text, table) in [
        ("[recipe]\nbsae = 'v3'", "[recipe]"),
        ("[metadata]\nchat_templat = { from = 'a' }", "[metadata]"),
        (
            "[metadata]\nchat_template = { flie = 'a' }",
            "metadata.chat_template",
        ),
        (
            "[[metadata.set]]\nkey='k'\ntype='u8'\nvalue=1\nvalu=2",
            "[[metadata.set]]",
        ),
        ("[rulez]", "the recipe's top level"),
    ] {
        let e = toml_err(text);
        assert!(
            matches!(&e, RecipeError::UnknownField { table: t, suggestion: Some(_), .. } if *t == table),
            "{text}: {e}"
        );
    }
    let e = toml_err("[[rules]]\nmatch = 'x'\nfrom = 'a'\nzzz = 1");
    assert!(
        e.to_string()
            .ends_with("(valid fields: match, role, from, mix, threshold, type, imatrix, layers, experts, router, optional)"),
        "{e}"
    );
    // A regex in double quotes: TOML refuses the backslash; say how to write it.
    let e = toml_err("[[rules]]\nmatch = \"ffn_up_exps\\.weight\"\nfrom = 'r1'");
    assert!(
        matches!(&e, RecipeError::Toml { line: 2, hint, .. } if hint.contains("single quotes")),
        "{e}"
    );
    assert!(e.to_string().contains("'\\.'"), "{e}");
    // User text in a message stays on one line.
    toml_err("[recipe]\n\"bad\\nkey\" = 1");
    toml_err("[[rules]]\nmatch = 'x'\nfrom = 'a'\nlayers = \"1\\n2\"");
    toml_err("[[metadata.set]]\nkey = \"a\\nb\"\ntype = \"x\\ny\"\nvalue = 1");
    // Other syntax errors keep the parser's message, on one line.
    let e = toml_err("[[rules]\nmatch = 'x'");
    assert!(
        matches!(
            &e,
            RecipeError::Toml {
                line: 1,
                hint: "",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn metadata_set_types_and_ranges() {
    let set = |ty: &str, value: &str| {
        Recipe::from_toml(
            &format!("[[metadata.set]]\nkey='k'\ntype='{ty}'\nvalue={value}"),
            Path::new("x"),
        )
    };
    let e = set("str", "'a'").unwrap_err();
    assert!(matches!(&e, RecipeError::UnknownType { found, .. } if found == "str"));
    assert!(
        e.to_string()
            .ends_with("valid types: u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool string")
    );
    assert!(matches!(
        set("array", "1"),
        Err(RecipeError::UnknownType { .. })
    ));
    assert!(matches!(
        set("f32", "1e300"),
        Err(RecipeError::BadValue { .. })
    ));
    assert!(matches!(
        set("f32", "1e-50"),
        Err(RecipeError::BadValue { .. })
    ));
    assert!(set("f64", "1e300").is_ok());
    assert!(set("f32", "inf").is_ok() && set("f32", "nan").is_ok());
}
