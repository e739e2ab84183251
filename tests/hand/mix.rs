//! Mix rules on the real fixtures, without outside oracles: a weight of 1 copies a parent's
//! bytes, a threshold keeps tensors and experts both parents hold alike, the bytes do not
//! depend on the thread count, `verify` computes mixed tensors again, and plan errors name
//! what to fix. Byte equality with numpy and llama-quantize is in
//! `tests/oracles/mix_oracle.rs`.
//!
//! Most tests need a ggml (GGUF_SPLICE_GGML, which scripts/test.sh points at the shared
//! libggml-base of fixtures/build-llama.sh; without one they are skipped by `have`, or fail
//! under GGUF_SPLICE_REQUIRE_ORACLES=1). The binary run without any ggml shows a mix plan
//! and refuses to write it with the ways to get one; a library that is not ggml is refused.

use std::path::{Path, PathBuf};

use crate::common::*;
use gguf_splice::gguf::Model;
use gguf_splice::plan::{self, Parent, PlanError, Source, SplitOptions};
use gguf_splice::recipe::Recipe;
use serde_json::Value;

mod errors;
mod which_ggml;

fn parent_arg(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

fn write_recipe(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("mix.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `splice --parent ... --recipe R -o OUT -q` plus `extra`.
fn splice(
    parents: &[(&str, &Path)],
    recipe: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    SpliceCmd::new("splice")
        .parents(parents)
        .arg("--recipe")
        .arg(recipe)
        .arg("-o")
        .arg(out)
        .quiet()
        .args(extra)
        .output()
}

/// `splice` args of the 75/25 routed-experts mix of the fixtures, with `extra`.
fn mix_args(recipe: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "splice".into(),
        "--parent".into(),
        parent_arg("v3", &fixture("v3-q3mix.gguf")),
        "--parent".into(),
        parent_arg("r1", &fixture("r1-q3mix.gguf")),
        "--recipe".into(),
        recipe.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "-q".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn v3() -> PathBuf {
    fixture("v3-q3mix.gguf")
}
fn r1() -> PathBuf {
    fixture("r1-q3mix.gguf")
}

fn dry_run_json(parents: &[(&str, &Path)], recipe: &Path) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let o = splice(
        parents,
        recipe,
        &dir.path().join("c.gguf"),
        &["--dry-run", "--json"],
    );
    assert_ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn tensor<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the plan"))
}

const EXPERTS: [&str; 6] = [
    "blk.1.ffn_gate_exps.weight",
    "blk.1.ffn_up_exps.weight",
    "blk.1.ffn_down_exps.weight",
    "blk.2.ffn_gate_exps.weight",
    "blk.2.ffn_up_exps.weight",
    "blk.2.ffn_down_exps.weight",
];

#[test]
fn a_weight_of_one_copies_the_parents_bytes() {
    if !have("a_weight_of_one_copies_the_parents_bytes", &[Oracle::Ggml]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = write_recipe(
        dir.path(),
        "[[rules]]\nrole = 'routed_experts'\nmix = { r1 = 1, v3 = 0 }\n",
    );
    let (v3, r1) = (v3(), r1());
    let plan = dry_run_json(&[("v3", &v3), ("r1", &r1)], &r);
    for n in EXPERTS {
        let t = tensor(&plan, n);
        assert!(
            t["sources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["parent"] == "r1"),
            "{t}"
        );
        assert_eq!(t["mix"]["writes"], 0, "nothing requantized");
    }
    let out = dir.path().join("c.gguf");
    assert_ok(&splice(&[("v3", &v3), ("r1", &r1)], &r, &out, &[]));
    let (c, v, p) = (
        Model::open(&out).unwrap(),
        Model::open(&v3).unwrap(),
        Model::open(&r1).unwrap(),
    );
    for t in c.tensors() {
        let name = &t.info.name;
        let want = if EXPERTS.contains(&name.as_str()) {
            &p
        } else {
            &v
        };
        assert_eq!(tensor_bytes(&c, name), tensor_bytes(want, name), "{name}");
    }
}

/// `a`: v3 with r1's attention. `b`: v3 with experts 0-1 of every routed-expert tensor
/// from r1. Each shares some tensors (or experts) with r1 exactly.
fn half_parents(dir: &Path) -> (PathBuf, PathBuf) {
    let (v3, r1) = (v3(), r1());
    let (a, b) = (dir.join("a.gguf"), dir.join("b.gguf"));
    for (out, take) in [(&a, "attn_=r1"), (&b, "_exps=r1:experts=0-1")] {
        let o = run(&[
            "splice",
            "--parent",
            &parent_arg("v3", &v3),
            "--parent",
            &parent_arg("r1", &r1),
            "--take",
            take,
            "-o",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert_ok(&o);
    }
    (a, b)
}

#[test]
fn the_threshold_keeps_what_both_parents_hold_alike() {
    if !have(
        "the_threshold_keeps_what_both_parents_hold_alike",
        &[Oracle::Ggml],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = half_parents(dir.path());
    let r1 = r1();
    // Whole tensors: a's attention is r1's (distance 0: kept), its experts are not.
    let rec = write_recipe(
        dir.path(),
        "[recipe]\nbase = 'r1'\n[[rules]]\nmatch = 'attn_(q_a|output)\\.|_exps'\nmix = { a = 0.5, r1 = 0.5 }\nthreshold = 0.02\n",
    );
    let plan = dry_run_json(&[("r1", &r1), ("a", &a)], &rec);
    let attn = tensor(&plan, "blk.1.attn_q_a.weight");
    assert_eq!(attn["mix"]["slices"][0]["distance"], 0.0);
    assert_eq!(attn["mix"]["slices"][0]["mixed"], false);
    assert_eq!(attn["sources"][0]["parent"], "r1");
    let exps = tensor(&plan, "blk.1.ffn_up_exps.weight");
    let d = exps["mix"]["slices"][0]["distance"].as_f64().unwrap();
    assert!(d > 1.0, "independent random weights: {d}");
    assert_eq!(exps["mix"]["slices"][0]["mixed"], true);
    assert!(exps["sources"][0]["mix"].is_object());
    let out = dir.path().join("c.gguf");
    assert_ok(&splice(&[("r1", &r1), ("a", &a)], &rec, &out, &[]));
    let (c, p) = (Model::open(&out).unwrap(), Model::open(&r1).unwrap());
    assert_eq!(
        tensor_bytes(&c, "blk.1.attn_q_a.weight"),
        tensor_bytes(&p, "blk.1.attn_q_a.weight")
    );
    assert_ne!(
        tensor_bytes(&c, "blk.1.ffn_up_exps.weight"),
        tensor_bytes(&p, "blk.1.ffn_up_exps.weight")
    );

    // Per expert under an experts rule: b's experts 0-1 are r1's (kept), 2-3 are mixed.
    let rec = write_recipe(
        dir.path(),
        "[recipe]\nbase = 'r1'\n[[rules]]\nrole = 'routed_experts'\nexperts = '0-3'\nmix = { b = 0.25, r1 = 0.75 }\nthreshold = 0.02\n",
    );
    let plan = dry_run_json(&[("r1", &r1), ("b", &b)], &rec);
    let t = tensor(&plan, "blk.2.ffn_down_exps.weight");
    let slices = t["mix"]["slices"].as_array().unwrap();
    let mixed: Vec<bool> = slices
        .iter()
        .map(|s| s["mixed"].as_bool().unwrap())
        .collect();
    assert_eq!(mixed, [false, false, true, true]);
    assert_eq!(slices[0]["distance"], 0.0);
    assert_eq!(t["sources"][0]["parent"], "r1");
    assert_eq!(t["sources"][0]["experts"], serde_json::json!([0, 1]));
    assert_eq!(t["sources"][1]["experts"], serde_json::json!([2, 3]));
    let out = dir.path().join("c2.gguf");
    assert_ok(&splice(&[("r1", &r1), ("b", &b)], &rec, &out, &[]));
    let (c, p) = (Model::open(&out).unwrap(), Model::open(&r1).unwrap());
    let (got, want) = (
        tensor_bytes(&c, "blk.2.ffn_down_exps.weight"),
        tensor_bytes(&p, "blk.2.ffn_down_exps.weight"),
    );
    assert_eq!(expert_slice(&got, 0), expert_slice(&want, 0));
    assert_eq!(expert_slice(&got, 1), expert_slice(&want, 1));
    assert_ne!(expert_slice(&got, 2), expert_slice(&want, 2));
}

fn mix_recipe(dir: &Path) -> PathBuf {
    write_recipe(
        dir,
        "[recipe]\nbase = 'v3'\n[[rules]]\nrole = 'routed_experts'\nmix = { r1 = 0.75, v3 = 0.25 }\ntype = 'Q4_K'\n[[rules]]\nmatch = 'attn_output'\nmix = { v3 = 0.5, r1 = 0.5 }\n",
    )
}

#[test]
fn the_bytes_do_not_depend_on_the_thread_count() {
    if !have(
        "the_bytes_do_not_depend_on_the_thread_count",
        &[Oracle::Ggml],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = mix_recipe(dir.path());
    let (v3, r1) = (v3(), r1());
    let mut outputs = Vec::new();
    for threads in ["1", "3"] {
        let out = dir.path().join(format!("c{threads}.gguf"));
        let mut cmd = std::process::Command::new(BIN);
        cmd.env("RAYON_NUM_THREADS", threads).args([
            "splice",
            "--parent",
            &parent_arg("v3", &v3),
            "--parent",
            &parent_arg("r1", &r1),
            "--recipe",
            rec.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert_ok(&cmd.output().unwrap());
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn verify_computes_mixed_tensors_again() {
    if !have("verify_computes_mixed_tensors_again", &[Oracle::Ggml]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = mix_recipe(dir.path());
    let (v3, r1) = (v3(), r1());
    let out = dir.path().join("c.gguf");
    assert_ok(&splice(&[("v3", &v3), ("r1", &r1)], &rec, &out, &[]));
    let verify = |child: &Path, recipe: bool| {
        let mut args = vec![
            "verify".to_string(),
            child.display().to_string(),
            "--parent".into(),
            parent_arg("v3", &v3),
            "--parent".into(),
            parent_arg("r1", &r1),
            "--json".into(),
        ];
        if recipe {
            args.extend(["--recipe".into(), rec.display().to_string()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&refs);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        (o, v)
    };
    // Without a recipe given, the recorded one computes the mixes again.
    let (o, v) = verify(&out, false);
    assert_exit(&o, 0);
    assert_eq!(v["basis"], "using the recipe recorded in the child");
    assert_eq!(v["recipe"]["mismatches"], serde_json::json!([]));
    assert_eq!(v["unmatched"], serde_json::json!([]));
    assert_eq!(
        v["mixed"].as_array().unwrap().len(),
        9,
        "6 expert tensors, 3 attn_output"
    );
    // Without any recipe (the record renamed away): mixed tensors are expected
    // ("mixed?"), not damage.
    let mut bytes = std::fs::read(&out).unwrap();
    let key = bytes
        .windows(14)
        .position(|w| w == b"splice.options")
        .expect("the record");
    bytes[key + 13] = b'z';
    let unrecorded = dir.path().join("unrecorded.gguf");
    std::fs::write(&unrecorded, &bytes).unwrap();
    let o = run(&[
        "verify",
        unrecorded.to_str().unwrap(),
        "--parent",
        &parent_arg("v3", &v3),
        "--parent",
        &parent_arg("r1", &r1),
    ]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("matches no parent (mixed?)"));
    // With it: computed again, byte for byte.
    let (o, v) = verify(&out, true);
    assert_exit(&o, 0);
    assert_eq!(v["recipe"]["mismatches"], serde_json::json!([]));
    // One flipped bit in a mixed tensor is found, at its byte.
    let c = Model::open(&out).unwrap();
    let t = c.tensor("blk.2.ffn_up_exps.weight").unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    bytes[(t.file_offset + 1000) as usize] ^= 0x10;
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let (o, v) = verify(&bad, true);
    assert_exit(&o, 1);
    let m = &v["recipe"]["mismatches"];
    assert_eq!(m.as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m[0]["kind"], "bytes_differ");
    assert_eq!(m[0]["tensor"], "blk.2.ffn_up_exps.weight");
    assert_eq!(m[0]["first_difference"], 1000);
    assert!(
        m[0]["expected"]
            .as_str()
            .unwrap()
            .starts_with("mix r1 0.75 + v3 0.25")
    );
}

#[test]
fn picked_and_mixed_experts_share_a_tensor() {
    if !have("picked_and_mixed_experts_share_a_tensor", &[Oracle::Ggml]) {
        return;
    }
    // Expert 0 picked from r1 (Q3_K, the mix's type), experts 1-3 mixed.
    let dir = tempfile::tempdir().unwrap();
    let rec = write_recipe(
        dir.path(),
        "[recipe]\nallow_partial_experts = true\n[[rules]]\nmatch = 'blk\\.1\\.ffn_up_exps'\nexperts = '0'\nfrom = 'r1'\n[[rules]]\nmatch = 'blk\\.1\\.ffn_up_exps'\nmix = { r1 = 0.5, v3 = 0.5 }\n",
    );
    let recipe = Recipe::from_file(&rec).unwrap();
    let parents = vec![
        Parent {
            name: "v3".into(),
            model: Model::open(&v3()).unwrap(),
        },
        Parent {
            name: "r1".into(),
            model: Model::open(&r1()).unwrap(),
        },
    ];
    let p = plan::build(
        &parents,
        &recipe,
        &dir.path().join("c.gguf"),
        SplitOptions::default(),
    )
    .unwrap();
    let t = p
        .tensors
        .iter()
        .find(|t| t.info.name == "blk.1.ffn_up_exps.weight")
        .unwrap();
    assert_eq!(t.pieces.len(), 2);
    assert_eq!(t.pieces[0].parent(), Some(1));
    assert_eq!(t.pieces[0].experts, Some(0..1));
    let Source::Mix(job) = &t.pieces[1].source else {
        panic!("experts 1-3 are mixed")
    };
    assert_eq!(
        (job.first_row, job.rows, job.rows_per_matrix),
        (256, 768, 256)
    );
    assert_eq!(
        job.inputs.iter().map(|i| i.weight).collect::<Vec<_>>(),
        [0.5, 0.5]
    );
    assert_eq!(t.pieces[1].experts, Some(1..4));
    assert!(p.warnings.iter().all(|w| !w.contains("sum to")));
}

#[test]
fn the_preset_mixes_routed_experts_three_to_one() {
    if !have(
        "the_preset_mixes_routed_experts_three_to_one",
        &[Oracle::Ggml],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let preset = repo().join("mappings/r1t-mix-75.toml");
    let (v3, r1) = (v3(), r1());
    let plan = dry_run_json(&[("v3", &v3), ("r1", &r1)], &preset);
    for n in EXPERTS {
        let job = &tensor(&plan, n)["sources"][0]["mix"];
        assert_eq!(job["inputs"][0]["parent"], "r1", "{n}");
        assert_eq!(job["inputs"][0]["weight"], 0.75);
        assert_eq!(job["inputs"][1]["parent"], "v3");
        assert_eq!(job["inputs"][1]["weight"], 0.25);
        assert_eq!(job["type"], "Q3_K", "the base's type");
    }
    assert_eq!(
        tensor(&plan, "blk.1.attn_q_a.weight")["sources"][0]["parent"],
        "v3"
    );
    let out = dir.path().join("c.gguf");
    assert_ok(&splice(&[("v3", &v3), ("r1", &r1)], &preset, &out, &[]));
    let c = Model::open(&out).unwrap();
    let rec = c
        .get("splice.recipe")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(rec.contains("mix = { r1 = 0.75, v3 = 0.25 }"), "{rec}");
}
