//! Splices of hand-assembled parents: every output tensor is compared with the bytes the
//! test itself generated for the parent the rules name.

use crate::common::*;
use gguf_splice::ggml_type::GgmlType;
use gguf_splice::gguf::{GgufFile, Model};
use gguf_splice::plan::{self, Parent, PlanError, SplitOptions};
use gguf_splice::recipe::Recipe;

mod outputs;

#[test]
fn chimera_takes_routed_experts_from_r1_and_the_rest_from_v3() {
    let s = setup(GgmlType::IQ2_XXS);
    let out = s.dir.path().join("child.gguf");
    let o = s.splice(&[
        "--recipe",
        &repo()
            .join("mappings/deepseek-r1t-chimera.toml")
            .display()
            .to_string(),
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    assert_eq!(child.tensor_count(), layout(GgmlType::Q3_K).len());
    for t in child.tensors() {
        let name = &t.info.name;
        let (pid, ty) = if is_routed_expert(name) {
            (R1, GgmlType::IQ2_XXS)
        } else {
            (V3, GgmlType::Q3_K)
        };
        assert_eq!(
            tensor_bytes(&child, name),
            expected_bytes(pid, ty, name),
            "{name}"
        );
        if is_routed_expert(name) {
            assert_eq!(t.info.ty, GgmlType::IQ2_XXS, "{name} keeps r1's type");
        }
    }
    // Metadata: the base's, with the name, parents and recipe recorded.
    assert_eq!(
        child.get("general.architecture").unwrap().as_str(),
        Some("deepseek2")
    );
    assert_eq!(
        child.get("tokenizer.chat_template").unwrap().as_str(),
        Some("template-1")
    );
    assert_eq!(
        child.get("general.base_model.count").unwrap().as_u64(),
        Some(2)
    );
    assert_eq!(
        child.get("general.base_model.1.name").unwrap().as_str(),
        Some("parent-2")
    );
    let recipe = child
        .get("splice.recipe")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(recipe.contains("role = \"routed_experts\""), "{recipe}");
    // Nothing else was left in the directory (no temporary files).
    let names: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn take_rules_come_before_the_recipe_and_first_match_wins() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("child.gguf");
    let o = s.splice(&[
        "--take",
        r"blk\.1\.=v3",
        "--take",
        r"_exps\.|token_embd=r1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    for t in child.tensors() {
        let name = &t.info.name;
        let from_r1 = !name.starts_with("blk.1.")
            && (is_routed_expert(name) || name.starts_with("token_embd"));
        let pid = if from_r1 { R1 } else { V3 };
        assert_eq!(
            tensor_bytes(&child, name),
            expected_bytes(pid, GgmlType::Q3_K, name),
            "{name}"
        );
    }
}

#[test]
fn expert_level_rules_mix_experts_and_the_router_follows() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("child.gguf");
    let o = s.splice(&[
        "--take",
        r"blk\.2\.ffn_up_exps=r1:experts=1-2:router",
        // One expert matrix alone: a deliberate experiment, allowed by the flag.
        "--allow-partial-experts",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    // Expected: expert e of blk.2.ffn_up_exps from r1 for e in 1..=2, else v3; router rows
    // and bias elements likewise; everything else from v3.
    let mixed = |name: &str, slice_bytes: usize| {
        let v = expected_bytes(V3, GgmlType::Q3_K, name);
        let r = expected_bytes(R1, GgmlType::Q3_K, name);
        let mut want = Vec::new();
        for e in 0..N_EXPERT as usize {
            let src = if (1..=2).contains(&e) { &r } else { &v };
            want.extend_from_slice(&src[e * slice_bytes..(e + 1) * slice_bytes]);
        }
        want
    };
    for t in child.tensors() {
        let name = t.info.name.as_str();
        let want = match name {
            "blk.2.ffn_up_exps.weight" => mixed(name, 2 * 110),
            "blk.2.ffn_gate_inp.weight" => mixed(name, N_EMBD as usize * 4),
            "blk.2.exp_probs_b.bias" => mixed(name, 4),
            _ => expected_bytes(V3, GgmlType::Q3_K, name),
        };
        assert_eq!(tensor_bytes(&child, name), want, "{name}");
    }
}

fn plan_err(s: &Setup, takes: &[&str]) -> PlanError {
    let parents = vec![
        Parent {
            name: "v3".into(),
            model: Model::open(&s.v3).unwrap(),
        },
        Parent {
            name: "r1".into(),
            model: Model::open(&s.r1).unwrap(),
        },
    ];
    let mut recipe = Recipe::default();
    let takes: Vec<String> = takes.iter().map(|t| t.to_string()).collect();
    recipe.prepend_takes(&takes).unwrap();
    match plan::build(
        &parents,
        &recipe,
        &s.dir.path().join("o.gguf"),
        SplitOptions::default(),
    ) {
        Ok(_) => panic!("plan should fail"),
        Err(e) => e,
    }
}

#[test]
fn experts_of_different_types_cannot_be_mixed() {
    let s = setup(GgmlType::IQ2_XXS);
    let e = plan_err(&s, &["_exps=r1:experts=0-1"]);
    assert!(
        matches!(&e, PlanError::ExpertTypeMismatch { first_type, second_type, .. } if first_type == "Q3_K" && second_type == "IQ2_XXS"),
        "{e}"
    );
    assert!(e.to_string().contains("take the whole tensor"));
}

#[test]
fn plan_errors_name_what_is_wrong() {
    let s = setup(GgmlType::Q3_K);
    assert!(matches!(
        plan_err(&s, &["no_such_tensor=r1"]),
        PlanError::RuleMatchedNothing { .. }
    ));
    assert!(matches!(
        plan_err(&s, &["_exps=r9"]),
        PlanError::UnknownParent { .. }
    ));
    assert!(matches!(
        plan_err(&s, &["attn_q_a=r1:experts=0"]),
        PlanError::ExpertsOnPlainTensor { .. }
    ));
    assert!(matches!(
        plan_err(&s, &["_exps=r1:experts=0-9"]),
        PlanError::ExpertsOutOfRange { count: 4, .. }
    ));

    // A parent whose tensor has another shape, one that lacks a tensor, another architecture.
    let mut b = gguf_splice::testkit::GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .kv_u32("deepseek2.block_count", 3)
        .kv_u32("deepseek2.embedding_length", N_EMBD as u32)
        .kv_u32("deepseek2.expert_count", N_EXPERT as u32);
    for (name, dims, ty) in layout(GgmlType::Q3_K) {
        if name == "blk.0.attn_q_a.weight" {
            b = b.tensor(&name, &[N_EMBD, 3], ty, R1);
        } else if name != "output.weight" {
            b = b.tensor(&name, &dims, ty, R1);
        }
    }
    std::fs::write(&s.r1, b.build()).unwrap();
    let e = plan_err(&s, &["attn_q_a=r1"]);
    assert!(
        matches!(&e, PlanError::ShapeMismatch { tensor, .. } if tensor == "blk.0.attn_q_a.weight"),
        "{e}"
    );
    let e = plan_err(&s, &["^output\\.weight=r1"]);
    assert!(
        matches!(&e, PlanError::TensorMissing { tensor, parent, .. } if tensor == "output.weight" && parent == "r1"),
        "{e}"
    );

    let llama = gguf_splice::testkit::GgufBuilder::new().kv_str("general.architecture", "llama");
    std::fs::write(&s.r1, llama.build()).unwrap();
    assert!(matches!(
        plan_err(&s, &["_exps=r1"]),
        PlanError::ArchitectureMismatch { .. }
    ));

    let wider = gguf_splice::testkit::GgufBuilder::new()
        .kv_str("general.architecture", "deepseek2")
        .kv_u32("deepseek2.block_count", 61);
    std::fs::write(&s.r1, wider.build()).unwrap();
    let e = plan_err(&s, &["_exps=r1"]);
    assert!(
        matches!(&e, PlanError::HyperparameterMismatch { key, .. } if key == "deepseek2.block_count"),
        "{e}"
    );
}

#[test]
fn outputs_are_safe() {
    let s = setup(GgmlType::Q3_K);
    let v3 = format!("v3={}", s.v3.display());
    let before = std::fs::read(&s.v3).unwrap();
    // The output may not be an input, even with --force.
    let o = run(&[
        "splice",
        "--parent",
        &v3,
        "-o",
        s.v3.to_str().unwrap(),
        "--force",
    ]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("is the input file"));
    // A hard link to an input is the input too.
    let link = s.dir.path().join("link.gguf");
    std::fs::hard_link(&s.v3, &link).unwrap();
    let o = run(&[
        "splice",
        "--parent",
        &v3,
        "-o",
        link.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        std::fs::read(&s.v3).unwrap(),
        before,
        "the parent is untouched"
    );
    // An existing output needs --force.
    let out = s.dir.path().join("child.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let o = run(&["splice", "--parent", &v3, "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let o = run(&[
        "splice",
        "--parent",
        &v3,
        "-o",
        out.to_str().unwrap(),
        "--force",
        "-q",
    ]);
    assert!(o.status.success());
    // A bad parent is a one-line error with exit code 3, never a panic.
    let bad = write(s.dir.path(), "bad.gguf", b"GGUF\x03\0\0\0garbage");
    let never = s.dir.path().join("never.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("x={}", bad.display()),
        "-o",
        never.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!never.exists());
}

#[test]
fn expert_rules_refuse_tensors_without_whole_expert_slices() {
    // A 1-D router bias stored block-quantized cannot be cut per element; an empty inner
    // dimension would make every expert zero bytes (and a huge expert table). Both are errors.
    let dir = tempfile::tempdir().unwrap();
    let mk = |dims: &[u64], ty: GgmlType| {
        gguf_splice::testkit::GgufBuilder::new()
            .kv_str("general.architecture", "deepseek2")
            .tensor("blk.1.exp_probs_b.bias", dims, ty, 1)
            .build()
    };
    for (dims, ty) in [
        (vec![256u64], GgmlType::Q4_K),
        (vec![0u64, 0, 1 << 40], GgmlType::F32),
    ] {
        let p = write(dir.path(), "p.gguf", &mk(&dims, ty));
        let parents = vec![Parent {
            name: "a".into(),
            model: Model::open(&p).unwrap(),
        }];
        let mut recipe = Recipe::default();
        recipe
            .prepend_takes(&["exp_probs_b=a:experts=0".into()])
            .unwrap();
        let e = plan::build(
            &parents,
            &recipe,
            &dir.path().join("o.gguf"),
            SplitOptions::default(),
        );
        assert!(matches!(e, Err(PlanError::CannotSplit { .. })), "{dims:?}");
    }
}

#[test]
fn router_rows_follow_only_the_experts_a_rule_actually_took() {
    // An earlier whole-tensor rule takes blk.2's experts from v3, so the later expert rule
    // takes experts only in blk.1, and only blk.1's router rows may follow it.
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("child.gguf");
    let o = s.splice(&[
        "--take",
        r"blk\.2\.ffn_(gate|up|down)_exps=v3",
        "--take",
        "_exps=r1:experts=0-1:router",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    let v3 = |n: &str| expected_bytes(V3, GgmlType::Q3_K, n);
    let r1 = |n: &str| expected_bytes(R1, GgmlType::Q3_K, n);
    for name in ["blk.2.ffn_gate_inp.weight", "blk.2.exp_probs_b.bias"] {
        assert_eq!(tensor_bytes(&child, name), v3(name), "{name}");
    }
    for (name, row) in [
        ("blk.1.ffn_gate_inp.weight", N_EMBD as usize * 4),
        ("blk.1.exp_probs_b.bias", 4),
    ] {
        let got = tensor_bytes(&child, name);
        assert_eq!(got[..2 * row], r1(name)[..2 * row], "{name}");
        assert_eq!(got[2 * row..], v3(name)[2 * row..], "{name}");
    }
}

#[test]
fn a_parent_replaced_after_planning_is_refused() {
    use gguf_splice::execute::{ExecError, ExecOptions, execute};
    let s = setup(GgmlType::Q3_K);
    let parents = vec![Parent {
        name: "v3".into(),
        model: Model::open(&s.v3).unwrap(),
    }];
    let out = s.dir.path().join("child.gguf");
    let plan = plan::build(&parents, &Recipe::default(), &out, SplitOptions::default()).unwrap();
    // Same size, other bytes, new inode: what a download finishing under us looks like.
    let other = parent(R1, GgmlType::Q3_K).build();
    std::fs::remove_file(&s.v3).unwrap();
    std::fs::write(&s.v3, &other).unwrap();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let r = execute(
        &plan,
        &ExecOptions {
            force: false,
            cancel: &cancel,
            progress: &|_| {},
        },
    );
    assert!(matches!(r, Err(ExecError::ParentChanged { .. })), "{r:?}");
    assert!(!out.exists());
    // A cancelled run leaves nothing either.
    let parents = vec![Parent {
        name: "v3".into(),
        model: Model::open(&s.v3).unwrap(),
    }];
    let plan = plan::build(&parents, &Recipe::default(), &out, SplitOptions::default()).unwrap();
    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = execute(
        &plan,
        &ExecOptions {
            force: false,
            cancel: &cancel,
            progress: &|_| {},
        },
    );
    assert!(matches!(r, Err(ExecError::Interrupted)), "{r:?}");
    let left: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn metadata_records_each_parents_quant_and_imatrix_and_claims_nothing_false() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("child.gguf");
    let (v3, r1) = (fixture_arg("v3-q3mix.gguf"), fixture_arg("r1-iq2mix.gguf"));
    let o = run(&[
        "splice",
        "--parent",
        &format!("v3={v3}"),
        "--parent",
        &format!("r1={r1}"),
        "--recipe",
        &chimera_preset(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    let (pv3, pr1) = (
        Model::open(std::path::Path::new(&v3)).unwrap(),
        Model::open(std::path::Path::new(&r1)).unwrap(),
    );
    // The parents used different importance matrices: the child keeps neither claim at the
    // top level, and records each parent's.
    assert_ne!(
        pv3.get("quantize.imatrix.file"),
        pr1.get("quantize.imatrix.file")
    );
    assert!(child.get("quantize.imatrix.file").is_none());
    assert!(child.get("quantize.imatrix.dataset").is_none());
    assert_eq!(
        child.get("general.base_model.0.imatrix.file"),
        pv3.get("quantize.imatrix.file")
    );
    assert_eq!(
        child.get("general.base_model.1.imatrix.file"),
        pr1.get("quantize.imatrix.file")
    );

    // Two quants of one model: the base_model names say which quant and file.
    let r1q3 = fixture_arg("r1-q3mix.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("a={r1q3}"),
        "--parent",
        &format!("b={r1}"),
        "--take",
        "_exps=b",
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--force",
    ]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    let name = |i: u32| {
        child
            .get(&format!("general.base_model.{i}.name"))
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(name(0), "Tiny-DeepSeek-R1 (Q3_K_M, r1-q3mix.gguf)");
    assert_eq!(name(1), "Tiny-DeepSeek-R1 (IQ2_XXS, r1-iq2mix.gguf)");
}

#[test]
fn the_chat_template_warning_only_when_the_recipe_leaves_it_to_the_base() {
    let s = setup(GgmlType::Q3_K);
    let out = s.dir.path().join("child.gguf");
    // Everything the dry run says: the plan (with its warnings) on stdout, errors on stderr.
    let said = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", out.to_str().unwrap(), "--dry-run"]);
        let o = s.splice(&all);
        assert_ok(&o);
        stderr(&o) + &String::from_utf8_lossy(&o.stdout)
    };
    // The recipe decides the template: by parent, by setting the key, or by removing it.
    for metadata in [
        "[metadata]\nchat_template = { from = 'r1' }\n",
        "[[metadata.set]]\nkey = 'tokenizer.chat_template'\ntype = 'string'\nvalue = 'mine'\n",
        "[metadata]\nremove = ['tokenizer.chat_template']\n",
    ] {
        let text = format!("[[rules]]\nrole = 'routed_experts'\nfrom = 'r1'\n{metadata}");
        let recipe = write(s.dir.path(), "r.toml", text.as_bytes());
        let all = said(&["--recipe", recipe.to_str().unwrap()]);
        assert!(!all.contains("chat template differs"), "{metadata}: {all}");
    }
    let all = said(&["--take", "_exps=r1"]);
    assert!(all.contains("chat template differs"), "{all}");
}
