//! ik_llama.cpp files, hand-assembled: flavour detection and `--flavour` on every command,
//! splices between ik parents and between an ik and a mainline parent (bytes checked expert
//! by expert, row scales included), and what the plan says about who loads the child.

use crate::common::*;
use gguf_splice::ggml_type::{Flavour, GgmlType};
use gguf_splice::gguf::Model;
use gguf_splice::plan::{self, Parent, PlanError, SplitOptions};
use gguf_splice::recipe::Recipe;

/// Two parents: `v3` with routed experts of `v3_type`, `r1` with `r1_type`.
fn pair(v3_type: GgmlType, r1_type: GgmlType) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let v3 = write(dir.path(), "v3.gguf", &parent(V3, v3_type).build());
    let r1 = write(dir.path(), "r1.gguf", &parent(R1, r1_type).build());
    Setup { dir, v3, r1 }
}

/// A file whose `blk.0.attn_q_a.weight` is Q8_K (id 15): 292 bytes a block to mainline, 296
/// to ik, and no other tensor to tell which.
fn contested_file(dir: &std::path::Path) -> std::path::PathBuf {
    let b = header(V3).tensor_raw("blk.0.attn_q_a.weight", &[256, 2], 15, vec![0; 2 * 296]);
    write(dir, "q8k.gguf", &b.build())
}

#[test]
fn files_with_types_only_mainline_defines_are_read_by_default() {
    let dir = tempfile::tempdir().unwrap();
    // (id, type, elements in one block, bytes a block)
    for (id, name, block, bytes) in [
        (40u32, "NVFP4", 64u64, 36usize),
        (34, "TQ1_0", 256, 54),
        (35, "TQ2_0", 256, 66),
    ] {
        let b = header(V3)
            .tensor("token_embd.weight", &[256, 4], GgmlType::Q4_K, V3)
            .tensor_raw(
                "blk.0.attn_q_a.weight",
                &[block * 4, 2],
                id,
                vec![7; 8 * bytes],
            );
        let path = write(dir.path(), &format!("{name}.gguf"), &b.build());
        let o = run(&["inspect", "--json", path.to_str().unwrap()]);
        assert_ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["flavour"], "mainline", "{name}");
        assert_eq!(v["loadable_by"], "llama.cpp only", "{name}");
        let t = v["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "blk.0.attn_q_a.weight")
            .unwrap();
        assert_eq!(
            (
                t["type"].as_str(),
                t["type_id"].as_u64(),
                t["bytes"].as_u64()
            ),
            (Some(name), Some(id as u64), Some(8 * bytes as u64)),
        );
        let o = run(&["inspect", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains(&format!(
                "flavour: mainline (tensor 'blk.0.attn_q_a.weight' has type id {id}, which only llama.cpp defines)"
            )),
            "{text}"
        );
    }
}

#[test]
fn real_ik_files_are_still_detected_as_ik() {
    for (f, want) in [
        ("qwen3moe-a-ik.gguf", Flavour::Ik),
        ("qwen3moe-b-ik.gguf", Flavour::Ik),
        ("qwen3moe-a-mainline.gguf", Flavour::Mainline),
    ] {
        let m = Model::open(&repo().join("fixtures").join(f)).unwrap();
        assert_eq!(m.flavour(), want, "{f}");
    }
}

#[test]
fn inspect_tells_the_flavour_and_the_row_scaled_sizes() {
    let s = pair(GgmlType::IQ4_KS, GgmlType::IQ2_KS);
    let o = run(&["inspect", s.v3.to_str().unwrap()]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("flavour: ik (tensor 'blk.1.ffn_gate_exps.weight' has type id 144, which only ik_llama.cpp defines); loadable by ik_llama.cpp only"),
        "{text}"
    );
    let o = run(&["inspect", "--json", s.r1.to_str().unwrap()]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["flavour"], "ik");
    assert_eq!(v["loadable_by"], "ik_llama.cpp only");
    let t = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.1.ffn_down_exps.weight")
        .unwrap();
    // [256, 2, 4] IQ2_KS: 8 rows of a 2-byte row scale and one 70-byte block.
    assert_eq!(
        (t["type"].as_str(), t["bytes"].as_u64()),
        (Some("IQ2_KS"), Some(8 * 72))
    );
    // A mainline file whose ids both programs read alike.
    let m = pair(GgmlType::Q3_K, GgmlType::Q3_K);
    let o = run(&["inspect", "--json", m.v3.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["flavour"], "mainline");
    assert_eq!(v["loadable_by"], "llama.cpp and ik_llama.cpp");
}

#[test]
fn an_ambiguous_id_without_a_flavour_is_refused_on_every_command() {
    let s = pair(GgmlType::Q3_K, GgmlType::Q3_K);
    let q8k = contested_file(s.dir.path());
    let q8k = q8k.to_str().unwrap();
    let (v3, out) = (s.v3.to_str().unwrap(), s.dir.path().join("c.gguf"));
    let parent = format!("a={q8k}");
    let commands: Vec<Vec<&str>> = vec![
        vec!["inspect", q8k],
        vec!["diff", q8k, v3],
        vec![
            "splice",
            "--parent",
            &parent,
            "-o",
            out.to_str().unwrap(),
            "--dry-run",
        ],
        vec!["verify", q8k, "--parent", &parent],
    ];
    for args in commands {
        let o = run(&args);
        assert_exit(&o, 3);
        let e = stderr(&o);
        for part in [
            "blk.0.attn_q_a.weight",
            "type id 15",
            "Q8_K (292 bytes per 256 elements) to llama.cpp",
            "Q8_K (296 bytes per 256 elements) to ik_llama.cpp",
            "--flavour mainline or --flavour ik",
        ] {
            assert!(e.contains(part), "{args:?}: {part}: {e}");
        }
        // The fix works.
        let mut fixed = args.clone();
        fixed.extend(["--flavour", "ik"]);
        let o = run(&fixed);
        assert!(o.status.code() == Some(0), "{fixed:?}: {}", stderr(&o));
    }
    // An id only mainline defines, read as ik, is no type at all: said, with the reason the
    // file is read as ik.
    let b = header(V3).tensor_raw("blk.0.attn_q_a.weight", &[256, 2], 34, vec![0; 2 * 54]);
    let tq1 = write(s.dir.path(), "tq1.gguf", &b.build());
    let o = run(&["inspect", tq1.to_str().unwrap(), "--flavour", "ik"]);
    assert_exit(&o, 3);
    assert!(
        stderr(&o).contains(
            "is no ik_llama.cpp type (the file is read as ik_llama.cpp because given by --flavour)"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn chimera_of_ik_parents_keeps_every_row_scale() {
    let s = pair(GgmlType::IQ3_K, GgmlType::IQ4_KS);
    let out = s.dir.path().join("child.gguf");
    let o = s.splice(&[
        "--recipe",
        &chimera_preset(),
        "-o",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    assert_eq!(child.flavour(), Flavour::Ik);
    for t in child.tensors() {
        let name = &t.info.name;
        let (pid, ty) = if is_routed_expert(name) {
            (R1, GgmlType::IQ4_KS)
        } else {
            (V3, GgmlType::IQ3_K)
        };
        assert_eq!(
            tensor_bytes(&child, name),
            expected_bytes(pid, ty, name),
            "{name}"
        );
    }
    let o = s.run(
        "verify",
        Some(out.to_str().unwrap()),
        &["--recipe", &chimera_preset()],
    );
    assert_ok(&o);
}

#[test]
fn expert_rules_cut_ik_tensors_with_their_row_scales() {
    // Experts 1-2 from r1 (IQ4_KS), the rest of v3 (IQ4_KS too: experts of one tensor share a
    // type). One expert is 2 rows of (4 + 136) bytes.
    let s = pair(GgmlType::IQ4_KS, GgmlType::IQ4_KS);
    let out = s.dir.path().join("child.gguf");
    let take = r"ffn_(gate|up|down)_exps=r1:experts=1-2:router";
    let o = s.splice(&["--take", take, "-o", out.to_str().unwrap(), "--quiet"]);
    assert_ok(&o);
    let child = Model::open(&out).unwrap();
    let name = "blk.2.ffn_down_exps.weight";
    let got = tensor_bytes(&child, name);
    assert_eq!(got.len() as u64, N_EXPERT * 2 * (4 + 136));
    let v3 = expected_bytes(V3, GgmlType::IQ4_KS, name);
    let r1 = expected_bytes(R1, GgmlType::IQ4_KS, name);
    for e in 0..N_EXPERT {
        let want = if (1..=2).contains(&e) { &r1 } else { &v3 };
        assert_eq!(expert_slice(&got, e), expert_slice(want, e), "expert {e}");
    }
    let o = s.run("verify", Some(out.to_str().unwrap()), &["--take", take]);
    assert_ok(&o);
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("r1[1-2]"), "{report}");
    // diff cuts ik tensors by expert the same way.
    let o = run(&[
        "diff",
        "--json",
        s.v3.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap();
    assert_eq!(
        t["experts"],
        serde_json::json!({"count": 4, "differ": [[1, 2]]})
    );
}

#[test]
fn an_ik_and_a_mainline_parent_make_an_ik_child_and_the_plan_says_so() {
    // v3: mainline quant (Q3_K experts); r1: ik quant (IQ2_KS experts).
    let s = pair(GgmlType::Q3_K, GgmlType::IQ2_KS);
    let out = s.dir.path().join("child.gguf");
    let recipe = chimera_preset();
    let o = s.splice(&[
        "--recipe",
        &recipe,
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("loadable by: ik_llama.cpp only (IQ2_KS)"),
        "{text}"
    );
    assert!(
        text.contains("warning: the child has types only ik_llama.cpp defines (IQ2_KS)"),
        "{text}"
    );
    let o = s.splice(&[
        "--recipe",
        &recipe,
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["loadable_by"], "ik_llama.cpp only");
    assert_eq!(v["flavour_types"], serde_json::json!(["IQ2_KS"]));
    // Written: the warning is on stderr, and the child reads back as ik.
    let o = s.splice(&["--recipe", &recipe, "-o", out.to_str().unwrap()]);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("only ik_llama.cpp loads it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(Model::open(&out).unwrap().flavour(), Flavour::Ik);
    // The reverse recipe keeps only mainline types: both programs load that child.
    let rev = repo().join("mappings/deepseek-r1t-chimera-reverse.toml");
    let o = s.splice(&[
        "--recipe",
        rev.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("loadable by: llama.cpp and ik_llama.cpp"));
}

#[test]
fn a_child_with_types_of_both_programs_own_is_refused() {
    // r1 (read as ik) has IQ4_KS experts; v3 (read as mainline) a TQ1_0 attention tensor.
    let dir = tempfile::tempdir().unwrap();
    let v3 = header(V3)
        .tensor_raw("blk.0.attn_q_a.weight", &[256, 2], 34, vec![0; 2 * 54])
        .tensor(
            "blk.1.ffn_up_exps.weight",
            &[256, 2, N_EXPERT],
            GgmlType::Q3_K,
            V3,
        );
    let r1 = header(R1)
        .tensor("blk.0.attn_q_a.weight", &[256, 2], GgmlType::Q4_K, R1)
        .tensor(
            "blk.1.ffn_up_exps.weight",
            &[256, 2, N_EXPERT],
            GgmlType::IQ4_KS,
            R1,
        );
    let parents = vec![
        Parent {
            name: "v3".into(),
            model: Model::open_as(
                &write(dir.path(), "v3.gguf", &v3.build()),
                Some(Flavour::Mainline),
            )
            .unwrap(),
        },
        Parent {
            name: "r1".into(),
            model: Model::open(&write(dir.path(), "r1.gguf", &r1.build())).unwrap(),
        },
    ];
    let mut recipe = Recipe::default();
    recipe.prepend_takes(&["_exps=r1".to_string()]).unwrap();
    let e = plan::build(
        &parents,
        &recipe,
        &dir.path().join("c.gguf"),
        SplitOptions::default(),
    )
    .err()
    .expect("refused");
    assert!(
        matches!(&e, PlanError::FlavoursMixed { ik_type, mainline_type, .. } if ik_type == "IQ4_KS" && mainline_type == "TQ1_0"),
        "{e}"
    );
}
