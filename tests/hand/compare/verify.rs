//! `verify` on children spliced from the hand-built pair: a correct chimera passes, single
//! and sharded; flipped bytes, a tensor from the wrong parent, metadata and tensor lists
//! that differ from the plan are caught and named, down to the expert.

use super::*;

#[test]
fn verify_passes_a_correct_chimera_single_and_sharded() {
    // r1's experts in another type: v3's are then not even comparable.
    let s = setup(GgmlType::IQ2_XXS);
    let recipe = chimera_preset();
    let child = s.child("child.gguf", &["--recipe", &recipe]);
    for (recipe, takes) in [(Some(recipe.as_str()), &[][..]), (None, &[][..])] {
        let r = lib_verify(&s, &child, recipe, takes);
        assert!(r.passed(), "{}", gguf_splice::render::verify_text(&r));
        assert_eq!(r.recipe.is_some(), recipe.is_some());
        for t in &r.tensors {
            let want = if is_routed_expert(&t.name) {
                "r1"
            } else {
                "v3"
            };
            assert_eq!(t.sources, whole_from(&t.name, want), "{}", t.name);
            let compared: &[&str] = if want == "r1" { &["r1"] } else { &["v3", "r1"] };
            assert_eq!(t.compared, compared, "{}", t.name);
        }
    }

    let (v3, r1) = (
        format!("v3={}", s.v3.display()),
        format!("r1={}", s.r1.display()),
    );
    let mut args = verify_args(child.to_str().unwrap(), &v3, &r1);
    args.extend(["--recipe", &recipe]);
    let (code, j) = run_json(&args);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["passed"], true);
    assert_eq!(j["recipe"]["mismatches"], json!([]));
    assert_eq!(j["unmatched"], json!([]));
    assert_eq!(
        json_tensor(&j, "blk.1.ffn_gate_exps.weight")["sources"],
        json!({"parents": ["r1"]})
    );
    let (code, text) = run_text(&args);
    assert_eq!(code, 0);
    assert!(
        text.contains("  blk.1-2 ffn_{gate,up,down}_exps.weight: r1\n"),
        "{text}"
    );
    // Only the routed experts have a line of their own.
    let n_other = layout(GgmlType::Q3_K).len() - 6;
    assert!(
        text.contains(&format!("everything else ({n_other} tensors): v3")),
        "{text}"
    );

    // A sharded child of the same recipe is the same child.
    s.child(
        "sharded.gguf",
        &["--recipe", &recipe, "--split-max-tensors", "7"],
    );
    let first = first_shard(s.dir.path(), "sharded");
    let r = lib_verify(&s, &first, Some(&recipe), &[]);
    assert!(r.child.paths.len() > 1);
    assert!(r.passed(), "{}", gguf_splice::render::verify_text(&r));
}

#[test]
fn verify_catches_a_flipped_byte_and_names_tensor_and_expert() {
    let s = setup(GgmlType::Q3_K);
    let recipe = chimera_preset();
    let child = s.child("child.gguf", &["--recipe", &recipe]);
    let experts = "blk.2.ffn_down_exps.weight";
    let (at, size) = expert_at(&child, experts, 3);
    flip_byte(&child, at + 5);
    let plain = "blk.0.attn_q_a.weight";
    let (at_plain, _) = expert_at(&child, plain, 0);
    flip_byte(&child, at_plain);

    let r = lib_verify(&s, &child, Some(&recipe), &[]);
    assert!(!r.passed());
    let unmatched: Vec<&str> = r.unmatched().map(|t| t.name.as_str()).collect();
    assert_eq!(unmatched, vec![plain, experts]);
    assert_eq!(
        r.tensor(experts).unwrap().sources,
        Sources::Experts(vec![
            ExpertRun {
                parents: vec!["r1".into()],
                experts: vec![0..3]
            },
            ExpertRun {
                parents: vec![],
                experts: vec![3..4]
            },
        ])
    );
    let m = &r.recipe.as_ref().unwrap().mismatches;
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(
        m[0],
        Mismatch::BytesDiffer {
            tensor: plain.into(),
            experts: None,
            expected: "v3".into(),
            found: Sources::Whole(vec![]),
            first_offset: Some(0),
        }
    );
    assert_eq!(
        m[1],
        Mismatch::BytesDiffer {
            tensor: experts.into(),
            experts: Some(vec![3..4]),
            expected: "r1".into(),
            found: Sources::Experts(vec![ExpertRun {
                parents: vec![],
                experts: vec![3..4]
            }]),
            first_offset: Some(3 * size + 5),
        }
    );

    let (v3, r1) = (
        format!("v3={}", s.v3.display()),
        format!("r1={}", s.r1.display()),
    );
    let mut args = verify_args(child.to_str().unwrap(), &v3, &r1);
    // Without a recipe (so with the one the child records): bytes that match no parent
    // still fail.
    let (code, j) = run_json(&args);
    assert_eq!(code, 1);
    assert_eq!(j["unmatched"], json!([plain, experts]));
    assert_eq!(j["basis"], "using the recipe recorded in the child");
    args.extend(["--recipe", &recipe]);
    let (code, j) = run_json(&args);
    assert_eq!(code, 1);
    let mm = &j["recipe"]["mismatches"][1];
    assert_eq!(mm["kind"], "bytes_differ");
    assert_eq!(mm["tensor"], experts);
    assert_eq!(mm["experts"], json!([[3, 3]]));
    assert_eq!(mm["expected"], "r1");
    assert_eq!(mm["first_difference"], 3 * size + 5);
    let (code, text) = run_text(&args);
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!(
            "{experts} experts 3: expected r1, found no parent[3]"
        )),
        "{text}"
    );
    assert!(text.trim_end().ends_with("verify: MISMATCH"), "{text}");
}

#[test]
fn verify_catches_a_tensor_from_the_wrong_parent() {
    let s = setup(GgmlType::IQ2_XXS);
    let recipe = chimera_preset();
    let child = s.child(
        "child.gguf",
        &[
            "--recipe",
            &recipe,
            "--take",
            r"blk\.0\.attn_q_a=r1",
            "--take",
            r"blk\.1\.ffn_up_exps=v3",
            // Only one expert matrix of the layer: refused unless allowed.
            "--allow-partial-experts",
        ],
    );
    let r = lib_verify(&s, &child, Some(&recipe), &[]);
    assert!(
        r.unmatched().next().is_none(),
        "every byte is some parent's"
    );
    assert!(!r.passed());
    assert_eq!(
        r.recipe.unwrap().mismatches,
        vec![
            Mismatch::BytesDiffer {
                tensor: "blk.0.attn_q_a.weight".into(),
                experts: None,
                expected: "v3".into(),
                found: Sources::Whole(vec!["r1".into()]),
                first_offset: Some(0),
            },
            Mismatch::TypeDiffers {
                tensor: "blk.1.ffn_up_exps.weight".into(),
                expected: GgmlType::IQ2_XXS,
                found: GgmlType::Q3_K,
            },
        ]
    );
    // Verified with the rules it was made with, it passes.
    let takes = [r"blk\.0\.attn_q_a=r1", r"blk\.1\.ffn_up_exps=v3"];
    let r = lib_verify(&s, &child, Some(&recipe), &takes);
    assert!(r.passed(), "{}", gguf_splice::render::verify_text(&r));

    let (v3, r1) = (
        format!("v3={}", s.v3.display()),
        format!("r1={}", s.r1.display()),
    );
    let mut args = verify_args(child.to_str().unwrap(), &v3, &r1);
    args.extend(["--recipe", &recipe]);
    let (code, j) = run_json(&args);
    assert_eq!(code, 1);
    let m = &j["recipe"]["mismatches"];
    assert_eq!(m[0]["tensor"], "blk.0.attn_q_a.weight");
    assert_eq!(m[0]["found"], json!({"parents": ["r1"]}));
    assert_eq!(m[1]["kind"], "type_differs");
    args.extend(["--take", takes[0], "--take", takes[1]]);
    // Without the flag the plan itself is refused: the child's blk.1 experts are chimeras.
    let o = run(&args);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("blk.1: the routed experts"));
    args.push("--allow-partial-experts");
    let (code, j) = run_json(&args);
    assert_eq!(code, 0, "{j}");
}

#[test]
fn verify_checks_metadata_and_tensor_lists_against_the_plan() {
    let s = setup(GgmlType::Q3_K);
    let recipe = chimera_preset();
    let child = s.child("child.gguf", &["--recipe", &recipe]);
    // The same tensors by a --take rule alone: only the name the recipe sets differs.
    let r = lib_verify(&s, &child, None, &["_exps=r1"]);
    let m = r.recipe.as_ref().unwrap().mismatches.clone();
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        matches!(&m[0], Mismatch::KeyDiffers { key, found, .. } if key == "general.name" && found.json == "DeepSeek-R1T-Chimera (gguf-splice DIY)"),
        "{m:?}"
    );

    // A child made from v3 alone, with a tensor fewer: the plan's tensor is missing.
    let mut b = parent(V3, GgmlType::Q3_K);
    b = b.kv_u32("general.quantization_version", 2);
    let with_key = write(s.dir.path(), "v3key.gguf", &b.build());
    let r = {
        let child = Model::open(&with_key).unwrap();
        let mut recipe = Recipe::default();
        recipe.prepend_takes(&["_exps=r1".into()]).unwrap();
        compare::verify(
            &child,
            &s.parents(),
            Some(&recipe),
            &CompareOptions::default(),
        )
        .unwrap()
    };
    let kinds: Vec<&str> = r
        .recipe
        .as_ref()
        .unwrap()
        .mismatches
        .iter()
        .map(Mismatch::kind)
        .collect();
    // Expert tensors are v3's, not r1's; general.name and the base_model keys are missing;
    // quantization_version is extra.
    assert_eq!(kinds.iter().filter(|k| **k == "bytes_differ").count(), 6);
    assert!(kinds.contains(&"key_differs"));
    assert!(kinds.contains(&"missing_key"));
    assert!(kinds.contains(&"extra_key"));
    assert!(r.unmatched().next().is_none());

    // Tensor list: a child lacking a tensor and holding another.
    let mut b = GgufBuilder::new().kv_str("general.architecture", "deepseek2");
    for (name, dims, ty) in layout(GgmlType::Q3_K) {
        if name != "output_norm.weight" {
            b = b.tensor_raw(
                &name,
                &dims,
                ty.id(),
                expected_bytes(V3, GgmlType::Q3_K, &name),
            );
        }
    }
    b = b.tensor("extra.weight", &[N_EMBD], GgmlType::F32, 9);
    let odd = write(s.dir.path(), "odd.gguf", &b.build());
    let r = lib_verify(&s, &odd, Some(&recipe), &[]);
    let m = &r.recipe.as_ref().unwrap().mismatches;
    assert!(m.contains(&Mismatch::MissingTensor {
        tensor: "output_norm.weight".into(),
        position: 1
    }));
    assert!(m.contains(&Mismatch::ExtraTensor {
        tensor: "extra.weight".into(),
        position: layout(GgmlType::Q3_K).len() - 1
    }));
    assert_eq!(
        r.unmatched().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["extra.weight"]
    );
}

#[test]
fn verify_shows_expert_level_sources() {
    let s = setup(GgmlType::Q3_K);
    let take = r"blk\.2\.ffn_up_exps=r1:experts=1-2";
    let child = s.child("child.gguf", &["--take", take, "--allow-partial-experts"]);
    let r = lib_verify(&s, &child, None, &[take]);
    assert!(r.passed(), "{}", gguf_splice::render::verify_text(&r));
    let mixed = Sources::Experts(vec![
        ExpertRun {
            parents: vec!["v3".into()],
            experts: vec![0..1, 3..4],
        },
        ExpertRun {
            parents: vec!["r1".into()],
            experts: vec![1..3],
        },
    ]);
    for t in &r.tensors {
        if t.name == "blk.2.ffn_up_exps.weight" {
            assert_eq!(t.sources, mixed);
            assert_eq!(t.sources.expert(2), Some(&["r1".to_string()][..]));
            assert_eq!(t.sources.expert(3), Some(&["v3".to_string()][..]));
        } else {
            assert_eq!(t.sources, whole_from(&t.name, "v3"), "{}", t.name);
        }
    }

    let (v3, r1) = (
        format!("v3={}", s.v3.display()),
        format!("r1={}", s.r1.display()),
    );
    let mut args = verify_args(child.to_str().unwrap(), &v3, &r1);
    args.extend(["--take", take, "--allow-partial-experts"]);
    let (code, j) = run_json(&args);
    assert_eq!(code, 0, "{j}");
    assert_eq!(
        json_tensor(&j, "blk.2.ffn_up_exps.weight")["sources"],
        json!({"experts": [
            {"parents": ["v3"], "experts": [[0, 0], [3, 3]]},
            {"parents": ["r1"], "experts": [[1, 2]]},
        ]})
    );
    let (_, text) = run_text(&args);
    assert!(
        text.contains("  blk.2 ffn_up_exps.weight: v3[0,3] r1[1-2]\n"),
        "{text}"
    );

    // With :router, the router rows and bias elements of those experts follow, and verify
    // sees them per expert too.
    let take = r"blk\.2\.ffn_up_exps=r1:experts=1-2:router";
    let child = s.child("router.gguf", &["--take", take, "--allow-partial-experts"]);
    let r = lib_verify(&s, &child, None, &[take]);
    assert!(r.passed(), "{}", gguf_splice::render::verify_text(&r));
    for name in [
        "blk.2.ffn_gate_inp.weight",
        "blk.2.exp_probs_b.bias",
        "blk.2.ffn_up_exps.weight",
    ] {
        assert_eq!(r.tensor(name).unwrap().sources, mixed, "{name}");
    }
    // Verified against rules that keep the router whole from v3, its rows are wrong.
    let r = lib_verify(&s, &child, None, &[r"blk\.2\.ffn_up_exps=r1:experts=1-2"]);
    let m = &r.recipe.as_ref().unwrap().mismatches;
    let row = N_EMBD * 4;
    assert_eq!(
        m,
        &vec![
            Mismatch::BytesDiffer {
                tensor: "blk.2.ffn_gate_inp.weight".into(),
                experts: Some(vec![1..3]),
                expected: "v3".into(),
                found: Sources::Experts(vec![ExpertRun {
                    parents: vec!["r1".into()],
                    experts: vec![1..3]
                }]),
                first_offset: Some(row),
            },
            Mismatch::BytesDiffer {
                tensor: "blk.2.exp_probs_b.bias".into(),
                experts: Some(vec![1..3]),
                expected: "v3".into(),
                found: Sources::Experts(vec![ExpertRun {
                    parents: vec!["r1".into()],
                    experts: vec![1..3]
                }]),
                first_offset: Some(4),
            },
        ]
    );
}

#[test]
fn verify_without_a_recipe_says_metadata_was_not_checked() {
    let s = setup(GgmlType::Q3_K);
    let child = s.child("child.gguf", &["--recipe", &chimera_preset()]);
    // A child whose vocabulary was changed: without a recipe, given or recorded (its record
    // is renamed away here), only tensors are compared.
    let mut bytes = std::fs::read(&child).unwrap();
    let key = bytes
        .windows(14)
        .position(|w| w == b"splice.options")
        .expect("the record in the header");
    bytes[key + 13] = b'z';
    let pos = bytes
        .windows(9)
        .position(|w| w == b"template-")
        .expect("chat template in the header");
    bytes[pos] = b'T';
    let edited = write(s.dir.path(), "edited.gguf", &bytes);
    let (v3, r1) = (
        format!("v3={}", s.v3.display()),
        format!("r1={}", s.r1.display()),
    );
    let o = run(&verify_args(edited.to_str().unwrap(), &v3, &r1));
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("verify: tensors OK (metadata and tensor order not checked"),
        "{text}"
    );
    let (_, j) = run_json(&verify_args(edited.to_str().unwrap(), &v3, &r1));
    assert_eq!(j["checked"], "tensors only");
    // With the recipe, the edit is found.
    let mut args = verify_args(edited.to_str().unwrap(), &v3, &r1);
    let preset = chimera_preset();
    args.extend(["--recipe", &preset]);
    let o = run(&args);
    assert_exit(&o, 1);
    assert!(String::from_utf8_lossy(&o.stdout).contains("key tokenizer.chat_template"));
}
